//! Run metrics: one JSON object per line in `RUN_DIR/metrics.jsonl`
//! (`"kind": "step"` every step, `"kind": "epoch"` at each epoch's end), the
//! epoch rows again in `RUN_DIR/metrics.csv` for spreadsheets, and all of
//! them as TensorBoard scalars in `RUN_DIR/tb/pretrain/`. On resume the two
//! text files are cut back to the checkpoint and the event file is rebuilt
//! from what remains, so a crash never leaves duplicated or orphaned points.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::run_dir::RunDir;
use crate::formats::tensorboard::EventWriter;

/// One row of the log: a step (`kind = "step"`) or an epoch's means
/// (`kind = "epoch"`, with its duration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsRow {
    pub kind: String,
    pub epoch: usize,
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    pub moco_loss: f64,
    pub moco_acc: f64,
    pub geo_loss: Option<f64>,
    pub geo_acc: Option<f64>,
    pub pairs_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// kNN top-1 of the query encoder (epoch rows, with `--knn-every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
    /// When the row was logged, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

impl MetricsRow {
    /// The row as TensorBoard scalars and their step: step rows at the
    /// global step (`step/...`), epoch rows at the epoch (`epoch/...`).
    pub fn tensorboard_scalars(&self) -> (i64, Vec<(&'static str, f64)>) {
        let epoch = self.kind == "epoch";
        let pick = |step_tag: &'static str, epoch_tag: &'static str| {
            if epoch {
                epoch_tag
            } else {
                step_tag
            }
        };
        let mut values = vec![
            (pick("step/loss", "epoch/loss"), self.loss),
            (pick("step/infonce", "epoch/infonce"), self.moco_loss),
            (pick("step/moco_acc", "epoch/moco_acc"), self.moco_acc),
            (pick("step/lr", "epoch/lr"), self.lr),
            (
                pick("step/pairs_per_s", "epoch/pairs_per_s"),
                self.pairs_per_s,
            ),
        ];
        if let Some(v) = self.geo_loss {
            values.push((pick("step/geo_ce", "epoch/geo_ce"), v));
        }
        if let Some(v) = self.geo_acc {
            values.push((pick("step/geo_acc", "epoch/geo_acc"), v));
        }
        if let Some(v) = self.knn_top1 {
            values.push(("epoch/knn_top1", v));
        }
        let step = if epoch {
            self.epoch as i64
        } else {
            self.step as i64
        };
        (step, values)
    }
}

/// Running sums of an epoch's step metrics, for the epoch row's means; a
/// mid-epoch checkpoint stores them (`epoch_sums` in `state.json`) so that a
/// resumed epoch's row is exact. A metric added to [`MetricsRow`] is summed
/// here, in [`EpochMeter::add`].
///
/// Stored as named fields; the positional `[loss, moco_loss, moco_acc,
/// geo_loss, geo_acc]` array of older checkpoints still loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "EpochMeterForm")]
pub struct EpochMeter {
    /// Total loss (alpha InfoNCE + beta geo cross-entropy).
    pub loss: f64,
    /// InfoNCE.
    pub moco_loss: f64,
    /// MoCo top-1 accuracy of the positive key.
    pub moco_acc: f64,
    /// Geo cross-entropy (0 per step without the geo task).
    pub geo_loss: f64,
    /// Geo top-1 accuracy (0 per step without the geo task).
    pub geo_acc: f64,
}

impl EpochMeter {
    /// Adds a step row's metrics.
    pub fn add(&mut self, row: &MetricsRow) {
        self.loss += row.loss;
        self.moco_loss += row.moco_loss;
        self.moco_acc += row.moco_acc;
        self.geo_loss += row.geo_loss.unwrap_or(0.0);
        self.geo_acc += row.geo_acc.unwrap_or(0.0);
    }

    /// The means over an epoch of `batches` steps.
    pub fn mean(&self, batches: usize) -> EpochMeter {
        let n = batches as f64;
        EpochMeter {
            loss: self.loss / n,
            moco_loss: self.moco_loss / n,
            moco_acc: self.moco_acc / n,
            geo_loss: self.geo_loss / n,
            geo_acc: self.geo_acc / n,
        }
    }
}

/// The stored forms of [`EpochMeter`]: named (this geossl), or the
/// positional array of older checkpoints.
#[derive(Deserialize)]
#[serde(untagged)]
enum EpochMeterForm {
    // Each sum defaults to 0, so that a checkpoint written before a metric
    // was added still loads (its epoch's row then lacks that sum's steps).
    Named {
        #[serde(default)]
        loss: f64,
        #[serde(default)]
        moco_loss: f64,
        #[serde(default)]
        moco_acc: f64,
        #[serde(default)]
        geo_loss: f64,
        #[serde(default)]
        geo_acc: f64,
    },
    Positional([f64; 5]),
}

impl From<EpochMeterForm> for EpochMeter {
    fn from(form: EpochMeterForm) -> Self {
        match form {
            EpochMeterForm::Named {
                loss,
                moco_loss,
                moco_acc,
                geo_loss,
                geo_acc,
            }
            | EpochMeterForm::Positional([loss, moco_loss, moco_acc, geo_loss, geo_acc]) => Self {
                loss,
                moco_loss,
                moco_acc,
                geo_loss,
                geo_acc,
            },
        }
    }
}

pub struct MetricsLog {
    jsonl: File,
    csv: File,
    jsonl_path: PathBuf,
    tensorboard: EventWriter,
    tensorboard_flushed: Instant,
}

/// How often step points reach a running TensorBoard within an epoch.
const TENSORBOARD_FLUSH_EVERY: Duration = Duration::from_secs(10);

const CSV_HEADER: &str =
    "epoch,step,lr,loss,moco_loss,moco_acc,geo_loss,geo_acc,pairs_per_s,seconds,knn_top1";

impl MetricsLog {
    /// Opens the logs of `run_dir`, keeping only what happened up to
    /// `keep_until_step` (0 for a fresh run).
    pub fn open(run_dir: &Path, keep_until_step: u64) -> anyhow::Result<Self> {
        let jsonl_path = RunDir::new(run_dir).metrics_jsonl();
        let csv_path = RunDir::new(run_dir).metrics_csv();
        // The kept rows, parsed in the same pass (a line torn by a crash is
        // dropped), feed the rebuilt TensorBoard file below.
        let mut kept = Vec::new();
        truncate_lines(&jsonl_path, |line| {
            match serde_json::from_str::<MetricsRow>(line) {
                Ok(row) if keep_until_step > 0 && row.step <= keep_until_step => {
                    kept.push(row);
                    true
                }
                _ => false,
            }
        })?;
        truncate_lines(&csv_path, |l| {
            keep_until_step > 0
                && (l == CSV_HEADER
                    || l.split(',')
                        .nth(1)
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|s| s <= keep_until_step))
        })?;
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("{}: cannot open", p.display()))
        };
        let mut csv = open(&csv_path)?;
        if csv.metadata()?.len() == 0 {
            writeln!(csv, "{CSV_HEADER}")?;
        }
        let mut log = Self {
            jsonl: open(&jsonl_path)?,
            csv,
            jsonl_path,
            tensorboard: EventWriter::create(&RunDir::new(run_dir).tensorboard("pretrain"))?,
            tensorboard_flushed: Instant::now(),
        };
        for row in &kept {
            log.write_tensorboard(row)?;
        }
        log.tensorboard.flush()?;
        Ok(log)
    }

    fn write_tensorboard(&mut self, m: &MetricsRow) -> anyhow::Result<()> {
        let (step, values) = m.tensorboard_scalars();
        let time = m.time.unwrap_or_else(crate::formats::tensorboard::now);
        self.tensorboard.scalars(step, time, &values)
    }

    pub fn step(&mut self, m: &MetricsRow) -> anyhow::Result<()> {
        writeln!(self.jsonl, "{}", serde_json::to_string(m)?)
            .with_context(|| format!("{}: write failed", self.jsonl_path.display()))?;
        self.write_tensorboard(m)?;
        if self.tensorboard_flushed.elapsed() >= TENSORBOARD_FLUSH_EVERY {
            self.tensorboard.flush()?;
            self.tensorboard_flushed = Instant::now();
        }
        Ok(())
    }

    /// Makes every row written so far durable (before a checkpoint that
    /// covers them).
    pub fn sync(&mut self) -> anyhow::Result<()> {
        self.jsonl
            .sync_data()
            .with_context(|| format!("{}: fsync failed", self.jsonl_path.display()))?;
        self.csv.sync_data()?;
        Ok(())
    }

    pub fn epoch(&mut self, m: &MetricsRow) -> anyhow::Result<()> {
        writeln!(self.jsonl, "{}", serde_json::to_string(m)?)?;
        self.write_tensorboard(m)?;
        self.tensorboard.flush()?;
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        writeln!(
            self.csv,
            "{},{},{},{},{},{},{},{},{},{},{}",
            m.epoch,
            m.step,
            m.lr,
            m.loss,
            m.moco_loss,
            m.moco_acc,
            opt(m.geo_loss),
            opt(m.geo_acc),
            m.pairs_per_s,
            m.seconds.unwrap_or_default(),
            opt(m.knn_top1)
        )?;
        self.jsonl.sync_data()?;
        self.csv.sync_data()?;
        Ok(())
    }
}

/// Rewrites `path` keeping only the lines `keep` accepts (atomically).
fn truncate_lines(path: &Path, mut keep: impl FnMut(&str) -> bool) -> anyhow::Result<()> {
    let Ok(f) = File::open(path) else {
        return Ok(());
    };
    let lines: Vec<String> = BufReader::new(f).lines().collect::<Result<_, _>>()?;
    let kept: Vec<&String> = lines.iter().filter(|l| keep(l)).collect();
    if kept.len() == lines.len() {
        return Ok(());
    }
    let mut text = kept
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::formats::atomic_write::write_string(path, &text)
}

/// Reads every row of a run's `metrics.jsonl` (none when there is no file
/// yet), naming the line of any that does not parse.
pub fn read_rows(run_dir: &Path) -> anyhow::Result<Vec<MetricsRow>> {
    let path = RunDir::new(run_dir).metrics_jsonl();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a metrics row", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_row(loss: f64, geo: Option<f64>) -> MetricsRow {
        MetricsRow {
            kind: "step".into(),
            epoch: 1,
            step: 1,
            lr: 0.1,
            loss,
            moco_loss: loss / 2.0,
            moco_acc: 0.25,
            geo_loss: geo,
            geo_acc: geo.map(|g| g / 10.0),
            pairs_per_s: 1.0,
            seconds: None,
            knn_top1: None,
            time: None,
        }
    }

    #[test]
    fn the_meter_sums_by_name_and_means_over_batches() {
        let mut m = EpochMeter::default();
        m.add(&step_row(2.0, Some(1.0)));
        m.add(&step_row(4.0, Some(3.0)));
        m.add(&step_row(6.0, None));
        let mean = m.mean(4);
        assert_eq!(
            mean,
            EpochMeter {
                loss: 3.0,
                moco_loss: 1.5,
                moco_acc: 0.1875,
                geo_loss: 1.0,
                geo_acc: 0.1,
            }
        );
    }

    #[test]
    fn the_meter_loads_the_old_array_and_round_trips_named() {
        let old: EpochMeter = serde_json::from_str("[1.5, 0.5, 0.25, 1.0, 0.125]").unwrap();
        assert_eq!(
            (
                old.loss,
                old.moco_loss,
                old.moco_acc,
                old.geo_loss,
                old.geo_acc
            ),
            (1.5, 0.5, 0.25, 1.0, 0.125)
        );
        let text = serde_json::to_string(&old).unwrap();
        assert!(text.contains("\"moco_acc\":0.25"), "{text}");
        // Sums that need every bit of an f64 come back identical.
        let exact = EpochMeter {
            loss: 0.1 + 0.2,
            moco_loss: std::f64::consts::PI / 3.0,
            ..old
        };
        let back: EpochMeter =
            serde_json::from_str(&serde_json::to_string(&exact).unwrap()).unwrap();
        assert_eq!(back, exact);
        assert!(serde_json::from_str::<EpochMeter>("[1.0, 2.0]").is_err());
        // A checkpoint written before a sum existed loads it as 0.
        let before_a_new_sum: EpochMeter = serde_json::from_str(r#"{"loss": 2.0}"#).unwrap();
        let expected = EpochMeter {
            loss: 2.0,
            ..Default::default()
        };
        assert_eq!(before_a_new_sum, expected);
    }
}
