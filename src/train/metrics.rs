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
        let jsonl_path = run_dir.join("metrics.jsonl");
        let csv_path = run_dir.join("metrics.csv");
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
            tensorboard: EventWriter::create(&crate::formats::tensorboard::log_dir(
                run_dir, "pretrain",
            ))?,
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
    let path = run_dir.join("metrics.jsonl");
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
