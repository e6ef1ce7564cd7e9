//! `geossl report`: a pretraining run as one self-contained HTML page
//! (inline SVG and images, no script, no network), and several runs side by
//! side on a comparison page.
//!
//! A run report says first how the run was made (each launch's command
//! line, device, ranks and wall time from `run.json`, the images skipped,
//! the checkpoint each evaluation read), then shows the configuration, the
//! training curves (InfoNCE and
//! geo cross-entropy per step and per epoch, pretext accuracies, lr, kNN
//! top-1, throughput) from `metrics.jsonl`, the probe, kNN and fine-tuning
//! results with a confusion matrix when `probe.json`/`knn.json` or
//! classifier folders (`geossl finetune --out RUN/NAME`) are there, the data
//! (locations on a world map coloured by geo cluster with the centroids,
//! views per location, time spans) from the run's manifest, and the first
//! query/key pairs the run's loader draws: what temporal positives look
//! like. Charts are drawn by [`plot`] and [`world`], assembled by [`html`].

pub mod html;
pub mod plot;
pub mod samples;
pub mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::bands::InputSpec;
use crate::data::{LocationIndex, Manifest};
use crate::formats::classification_report::ClassificationReport;
use crate::geo::LatLon;
use crate::train::launches::{Launch, RunRecord};
use crate::train::metrics::{read_rows, MetricsRow};
use crate::train::{PretrainConfig, RunDir};
use html::{escape, figure, note, section, table};
use plot::{bar_chart, line_chart, line_chart_with_references, Reference, Series, PALETTE};
use world::{Centroid, MapPoint};

/// What `geossl report` may be told beyond the run folder.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The manifest to show instead of the one in `config.toml`.
    pub manifest: Option<PathBuf>,
    /// Query/key pairs to show.
    pub pairs: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            manifest: None,
            pairs: 8,
        }
    }
}

/// What a pretraining run folder holds that the report shows.
pub struct Run {
    pub dir: PathBuf,
    pub name: String,
    pub config: PretrainConfig,
    /// `config.toml` as key/value text, for the configuration table.
    pub config_table: Vec<(String, String)>,
    pub rows: Vec<MetricsRow>,
    pub probe: Option<ClassificationReport>,
    pub knn: Option<ClassificationReport>,
    /// Classifiers fine-tuned into the run folder (`geossl finetune --out
    /// RUN/NAME`): folder name and test report.
    pub finetuned: Vec<(String, ClassificationReport)>,
    /// Each pretraining invocation (`run.json`; empty for runs written
    /// before it), or why it could not be read.
    pub launches: Result<Vec<Launch>, String>,
    /// Images pretraining replaced as unreadable (`bad_images.csv`).
    pub bad_images: usize,
    /// Geo classes of the newest checkpoint's geo head (runs with one).
    pub geo_classes: Option<i64>,
    /// The input (bands, radiometry, normalisation) the newest checkpoint
    /// records; `None` before the first checkpoint.
    pub checkpoint_input: Option<InputSpec>,
}

/// The test reports of the classifier folders directly in `run_dir`, by
/// folder name.
fn finetuned(run_dir: &Path) -> anyhow::Result<Vec<(String, ClassificationReport)>> {
    let Ok(classifiers) = RunDir::new(run_dir).classifier_dirs() else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for classifier in classifiers {
        if let Some(report) = read_report(&classifier.report_json())? {
            let name = classifier.path().file_name().unwrap_or_default();
            found.push((name.to_string_lossy().into_owned(), report));
        }
    }
    Ok(found)
}

/// Rows of `bad_images.csv` (0 when there is none).
fn bad_image_count(path: &Path) -> anyhow::Result<usize> {
    if !path.exists() {
        return Ok(0);
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(reader.records().count())
}

/// The report at `path`, or None when there is no file there.
fn read_report(path: &Path) -> anyhow::Result<Option<ClassificationReport>> {
    match ClassificationReport::read(path) {
        Ok(report) => Ok(Some(report)),
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Run {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let folder = RunDir::new(dir);
        let config_path = folder.config_toml();
        anyhow::ensure!(
            config_path.exists(),
            "{}: not a pretraining run folder (no config.toml)",
            dir.display()
        );
        // Its manifest found from any working directory.
        let config = PretrainConfig::from_run_dir(dir)?;
        let text = std::fs::read_to_string(&config_path)?;
        let parsed: toml::Table = text
            .parse()
            .with_context(|| format!("{}: not TOML", config_path.display()))?;
        let config_table = parsed
            .iter()
            .map(|(k, v)| {
                let shown = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), shown)
            })
            .collect();
        let name = std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
        let latest = match crate::train::checkpoint::latest(dir)? {
            Some(latest) => Some(crate::train::checkpoint::read_state(&latest)?),
            None => None,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            name,
            config,
            config_table,
            rows: read_rows(dir)?,
            probe: read_report(&folder.probe_json())?,
            knn: read_report(&folder.knn_json())?,
            finetuned: finetuned(dir)?,
            launches: RunRecord::read(dir)
                .map(|r| r.launches)
                .map_err(|e| format!("{e:#}")),
            bad_images: bad_image_count(&folder.bad_images_csv())?,
            geo_classes: latest.as_ref().and_then(|s| s.geo_classes),
            checkpoint_input: latest.map(|s| s.input),
        })
    }

    /// Every evaluation found, named: probe, kNN, fine-tuned classifiers.
    fn evaluations(&self) -> Vec<(String, &ClassificationReport)> {
        let named = [("linear probe", &self.probe), ("kNN", &self.knn)];
        let own = named
            .into_iter()
            .filter_map(|(n, r)| Some((n.to_string(), r.as_ref()?)));
        let tuned = self
            .finetuned
            .iter()
            .map(|(dir, r)| (format!("fine-tuned ({dir})"), r));
        own.chain(tuned).collect()
    }

    /// The geo head's chance level, ln K: the cross-entropy of a uniform
    /// guess over the run's K geo classes.
    fn geo_chance(&self) -> Option<Reference> {
        let k = self.geo_classes.filter(|&k| k > 1)?;
        Some(geo_chance(k))
    }

    fn epochs(&self) -> impl Iterator<Item = &MetricsRow> {
        self.rows.iter().filter(|r| r.kind == "epoch")
    }

    fn steps(&self) -> impl Iterator<Item = &MetricsRow> {
        self.rows.iter().filter(|r| r.kind == "step")
    }

    fn last_epoch(&self) -> Option<&MetricsRow> {
        self.epochs().last()
    }

    /// One line: method, network, progress.
    fn headline(&self) -> String {
        let c = &self.config;
        format!(
            "{} · {} (width {}) at {} px · {} of {} epochs, {} steps · batch {} · seed {}",
            c.method.name(),
            c.model.arch.name(),
            c.model.width,
            c.data.image_size,
            self.last_epoch().map_or(0, |r| r.epoch),
            c.optimizer.epochs,
            self.rows.iter().map(|r| r.step).max().unwrap_or(0),
            c.optimizer.batch_size,
            c.run.seed
        )
    }
}

fn series(name: &str, color: usize, faint: bool, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        points,
        color: PALETTE[color % PALETTE.len()],
        faint,
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// The dashed chance line of geo CE curves over `k` classes.
fn geo_chance(k: i64) -> Reference {
    let y = (k as f64).ln();
    Reference {
        name: format!("geo CE at chance: ln {k} = {y:.3} ({k} geo classes)"),
        y,
    }
}

/// The training-curve charts of one run.
fn curves(run: &Run) -> anyhow::Result<String> {
    if run.rows.is_empty() {
        return Ok(note(&format!(
            "{}: no metrics yet (metrics.jsonl is empty or missing).",
            run.dir.display()
        )));
    }
    let step_points = |f: fn(&MetricsRow) -> Option<f64>| -> Vec<(f64, f64)> {
        run.steps()
            .filter_map(|r| Some((r.step as f64, f(r)?)))
            .collect()
    };
    let epoch_points_at_step = |f: fn(&MetricsRow) -> Option<f64>| -> Vec<(f64, f64)> {
        run.epochs()
            .filter_map(|r| Some((r.step as f64, f(r)?)))
            .collect()
    };
    let epoch_points = |f: fn(&MetricsRow) -> Option<f64>| -> Vec<(f64, f64)> {
        run.epochs()
            .filter_map(|r| Some((r.epoch as f64, f(r)?)))
            .collect()
    };
    let mut out = String::from("<div class=\"grid\">\n");
    let mut loss = vec![
        series(
            "InfoNCE (step)",
            0,
            true,
            step_points(|r| Some(r.moco_loss)),
        ),
        series(
            "InfoNCE (epoch mean)",
            0,
            false,
            epoch_points_at_step(|r| Some(r.moco_loss)),
        ),
    ];
    if run.config.method.geo() {
        loss.push(series(
            "geo CE (step)",
            1,
            true,
            step_points(|r| r.geo_loss),
        ));
        loss.push(series(
            "geo CE (epoch mean)",
            1,
            false,
            epoch_points_at_step(|r| r.geo_loss),
        ));
    }
    let chance: Vec<Reference> = run.geo_chance().into_iter().collect();
    out += &figure(
        "loss",
        "Losses: InfoNCE of the query against its key and the queue, and the geo head's cross-entropy over the geo clusters (faint: every step; bold: epoch means; dashed: the geo CE of a uniform guess, ln K).",
        &line_chart_with_references("Losses", "step", "loss", &loss, None, &chance)?,
    );
    let mut accuracy = vec![series(
        "instance discrimination",
        0,
        false,
        epoch_points(|r| Some(r.moco_acc)),
    )];
    if run.config.method.geo() {
        accuracy.push(series("geo cluster", 1, false, epoch_points(|r| r.geo_acc)));
    }
    out += &figure(
        "pretext-accuracy",
        "Pretext-task accuracy per epoch: how often the key is the most similar of the key and the queue, and how often the geo head names the right cluster.",
        &line_chart("Pretext accuracy", "epoch", "accuracy", &accuracy, Some((0.0, 1.0)))?,
    );
    out += &figure(
        "lr",
        "Learning rate at every step.",
        &line_chart(
            "Learning rate",
            "step",
            "lr",
            &[series("", 2, false, step_points(|r| Some(r.lr)))],
            None,
        )?,
    );
    let knn = epoch_points(|r| r.knn_top1);
    if knn.is_empty() {
        out += &note(&format!(
            "No kNN monitor in this run: pretrain with {} N to follow kNN top-1 over epochs.",
            crate::settings::name("knn_every")
        ));
    } else {
        out += &figure(
            "knn",
            &format!(
                "kNN top-1 of the query encoder during training ({} neighbours, T {}, train split {}, test split {}).",
                run.config.monitor.knn_k, run.config.monitor.knn_t, run.config.monitor.knn_train_split, run.config.monitor.knn_test_split
            ),
            &line_chart("kNN top-1", "epoch", "top-1", &[series("", 3, false, knn)], Some((0.0, 1.0)))?,
        );
    }
    out += &figure(
        "throughput",
        "Training throughput per epoch (pairs per second, data loading included).",
        &line_chart(
            "Throughput",
            "epoch",
            "pairs/s",
            &[series("", 5, false, epoch_points(|r| Some(r.pairs_per_s)))],
            None,
        )?,
    );
    Ok(out + "</div>\n")
}

/// Probe and kNN results: a summary table, per-class figures and the
/// probe's confusion matrix.
fn evaluation(run: &Run) -> anyhow::Result<String> {
    let reports = run.evaluations();
    if reports.is_empty() {
        return Ok(note(&format!(
            "No evaluation yet: `geossl probe --checkpoint {0}` and `geossl knn --checkpoint {0}` write probe.json and knn.json here.",
            run.dir.display()
        )));
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|(name, r)| {
            vec![
                name.to_string(),
                pct(r.top1),
                r.top5.map_or("-".into(), pct),
                format!("{:.4}", r.macro_f1),
                pct(r.per_location.top1),
                format!(
                    "{} images, {} locations, split {}{}",
                    r.test_images,
                    r.per_location.locations,
                    r.test_split,
                    match r.skipped.len() {
                        0 => String::new(),
                        n => format!("; {n} unreadable row(s) left out (listed in its JSON)"),
                    }
                ),
                r.protocol.clone(),
                r.encoder.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "evaluation",
            "top-1",
            "top-5",
            "macro F1",
            "per-location top-1",
            "test set",
            "protocol",
            "checkpoint evaluated",
        ],
        &rows,
    );
    for (name, r) in &reports {
        if let Some(text) = stale_evaluation(run, name, r) {
            out += &note(&text);
        }
    }
    let (name, main) = (reports[0].0.as_str(), reports[0].1);
    let class_rows: Vec<Vec<String>> = main
        .per_class
        .iter()
        .map(|c| {
            vec![
                c.class.clone(),
                c.images.to_string(),
                pct(c.accuracy),
                format!("{:.4}", c.f1),
            ]
        })
        .collect();
    out += &format!("<h3>Per class ({})</h3>\n", escape(name));
    out += &table(&["class", "test images", "accuracy", "F1"], &class_rows);
    if main.confusion.is_empty() {
        out += &note("This report predates confusion matrices; rerun the evaluation to get one.");
    } else {
        let classes: Vec<String> = main.per_class.iter().map(|c| c.class.clone()).collect();
        out += &figure(
            "confusion",
            &format!("Confusion matrix of the {name} on the test split: rows are true classes, columns predictions; shading is the share of the row."),
            &plot::confusion_matrix(&format!("Confusion matrix ({name})"), &classes, &main.confusion)?,
        );
    }
    Ok(out)
}

/// The epoch of the checkpoint an evaluation read, from its `encoder`
/// (`.../checkpoints/epoch-0003 (MocoTpGeo, epoch 3)`), when it names one.
fn evaluated_epoch(encoder: &str) -> Option<usize> {
    crate::train::encoder_source::checkpoint_of_description(encoder).map(|(_, epoch)| epoch)
}

/// A warning when an evaluation read an older checkpoint than the run's
/// last epoch (its figures are not the final model's).
fn stale_evaluation(run: &Run, name: &str, report: &ClassificationReport) -> Option<String> {
    let evaluated = evaluated_epoch(&report.encoder)?;
    let last = run.last_epoch()?.epoch;
    (evaluated < last).then(|| {
        format!(
            "The {name} evaluated the checkpoint of epoch {evaluated}, but the run has trained to epoch {last} since: rerun it on the newest checkpoint."
        )
    })
}

/// `arg` as a POSIX shell reads it back: bare when plain, else in single
/// quotes.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Seconds as `2 h 05 min`, `3 min 07 s` or `12.4 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let whole = s.round() as u64;
    match whole {
        0..=59 => format!("{s:.1} s"),
        60..=3599 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60),
    }
}

/// An RFC 3339 time as `2026-11-30 17:05:26 UTC` (as written if it does
/// not parse).
fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_string(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        },
    )
}

/// How the run was made: each launch (command line, device, ranks, start,
/// end, wall time, epochs), the wall time in all, and the images left out.
fn provenance(run: &Run) -> String {
    let epoch_seconds: f64 = run.epochs().filter_map(|r| r.seconds).sum();
    let mut out = match &run.launches {
        Err(e) => note(&format!("The run record could not be read: {e}")),
        Ok(launches) if launches.is_empty() => note(&format!(
            "{} has no run.json (the run predates it): its command lines, device and launch times were not recorded.",
            run.dir.display()
        )),
        Ok(launches) => launch_table(launches),
    };
    out += &format!(
        "<p class=\"facts\">Training time of the epochs (their durations in metrics.jsonl, kNN monitor included): <b>{}</b> over {} epoch(s).</p>\n",
        duration(epoch_seconds),
        run.epochs().count()
    );
    let mut skipped = vec![format!(
        "pretraining replaced {} unreadable image(s) by other samples{}",
        run.bad_images,
        if run.bad_images > 0 {
            " (listed in bad_images.csv)"
        } else {
            ""
        }
    )];
    for (name, r) in run.evaluations() {
        skipped.push(format!(
            "{name} left out {} unreadable row(s){}",
            r.skipped.len(),
            if r.skipped.is_empty() {
                ""
            } else {
                " (listed in its JSON)"
            }
        ));
    }
    out + &format!(
        "<p class=\"facts\" id=\"skipped-images\">Images skipped: {}.</p>\n",
        escape(&skipped.join("; "))
    )
}

/// One row per launch, and the wall time of all of them.
fn launch_table(launches: &[Launch]) -> String {
    let rows: Vec<Vec<String>> = launches
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let ranks = match (l.world_size, l.launcher.as_str()) {
                (1, _) => "1".to_string(),
                (n, "") => n.to_string(),
                (n, by) => format!("{n} ({by})"),
            };
            vec![
                (i + 1).to_string(),
                command_line(l),
                l.device.clone(),
                ranks,
                when(&l.started),
                when(&l.updated),
                l.seconds().map_or("-".into(), duration),
                format!("{} → {}", l.start_epoch, l.end_epoch),
                format!("{} → {}", l.start_step, l.end_step),
                l.outcome.clone().unwrap_or_else(|| {
                    "no end recorded (running, or killed): last checkpoint at the end time".into()
                }),
                l.version.clone(),
            ]
        })
        .collect();
    let total: f64 = launches.iter().filter_map(Launch::seconds).sum();
    format!(
        "<p class=\"facts\">Wall time of pretraining: <b>{}</b> in {} launch(es), on {}.</p>\n",
        duration(total),
        launches.len(),
        escape(&devices(launches))
    ) + "<div class=\"launches\">"
        + &table(
            &[
                "launch",
                "command line",
                "device",
                "ranks",
                "started",
                "ended",
                "wall time",
                "epochs",
                "steps",
                "outcome",
                "geossl",
            ],
            &rows,
        )
        + "</div>\n"
}

/// A launch's command line as a shell would run it again: `cd DIR && ...`
/// when its working directory is known.
fn command_line(launch: &Launch) -> String {
    let words: Vec<String> = launch.command_line.iter().map(|a| shell_quote(a)).collect();
    match launch.working_dir.as_str() {
        "" => words.join(" "),
        dir => format!("cd {} && {}", shell_quote(dir), words.join(" ")),
    }
}

/// The devices the launches trained on, each once (`cpu`, `cuda:0 x 4`).
fn devices(launches: &[Launch]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for l in launches {
        let d = match l.world_size {
            1 => l.device.clone(),
            n => format!("{} x {n} ranks", l.device),
        };
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen.join(", ")
}

/// Each location once: its position (the spherical mean of its views'),
/// geo cluster, number of views and time span in years (2+ dated views).
struct LocationFacts {
    position: Option<LatLon>,
    cluster: Option<u32>,
    views: usize,
    span_years: Option<f64>,
}

fn location_facts(manifest: &Manifest) -> Vec<LocationFacts> {
    let index = LocationIndex::build(manifest);
    index
        .locations
        .iter()
        .map(|loc| {
            let records = || loc.views.iter().map(|&r| &manifest.records[r]);
            LocationFacts {
                position: LatLon::spherical_mean(records().filter_map(|r| r.position)),
                cluster: records().find_map(|r| r.geo_cluster),
                views: loc.views.len(),
                span_years: loc.time_span_years(manifest),
            }
        })
        .collect()
}

/// Centroids from `geossl cluster`'s `<manifest>.clusters.json`, or else the
/// spherical means of each cluster's locations.
fn centroids(manifest_path: &Path, facts: &[LocationFacts]) -> Vec<Centroid> {
    let path = crate::geo::locations::centroids_path(manifest_path);
    if let Ok(clustering) = crate::geo::locations::GeoClustering::read(&path) {
        return clustering
            .clusters
            .iter()
            .map(|c| Centroid {
                id: c.id,
                lat: c.lat,
                lon: c.lon,
            })
            .collect();
    }
    let mut members: BTreeMap<u32, Vec<LatLon>> = BTreeMap::new();
    for f in facts {
        if let (Some(c), Some(p)) = (f.cluster, f.position) {
            members.entry(c).or_default().push(p);
        }
    }
    members
        .into_iter()
        .filter_map(|(id, points)| {
            let m = LatLon::spherical_mean(points)?;
            Some(Centroid {
                id,
                lat: m.lat,
                lon: m.lon,
            })
        })
        .collect()
}

/// Bars of how many locations have 1, 2, ... views (21+ together).
fn views_histogram(facts: &[LocationFacts]) -> Vec<(String, f64)> {
    let top = facts.iter().map(|f| f.views).max().unwrap_or(1).min(21);
    let mut counts = vec![0.0; top];
    for f in facts {
        counts[f.views.min(21) - 1] += 1.0;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            (
                if i == 20 {
                    "21+".to_string()
                } else {
                    (i + 1).to_string()
                },
                n,
            )
        })
        .collect()
}

/// Bars of time spans in years, in bins of a width that gives at most ~16.
fn span_histogram(spans: &[f64]) -> Vec<(String, f64)> {
    let max = spans.iter().copied().fold(0.0f64, f64::max);
    let width = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|w| max / w < 16.0)
        .unwrap_or(20.0);
    let bins = ((max / width).floor() as usize + 1).max(1);
    let mut counts = vec![0.0; bins];
    for &s in spans {
        counts[((s / width).floor() as usize).min(bins - 1)] += 1.0;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("{}-{}", i as f64 * width, (i + 1) as f64 * width),
                n,
            )
        })
        .collect()
}

/// Locations drawn on the map at most.
const MAX_MAP_POINTS: usize = 20_000;

/// The data section: map, histograms, and the pairs the loader draws.
fn data_sections(run: &Run, options: &ReportOptions) -> anyhow::Result<String> {
    let manifest_path = options
        .manifest
        .clone()
        .unwrap_or_else(|| run.config.manifest.clone());
    let manifest = match Manifest::read(&manifest_path) {
        Ok(m) => m,
        Err(e) => {
            let text = format!(
                "The run's manifest could not be read ({e}); the map, the data histograms and the sample pairs need it: pass --manifest."
            );
            tracing::warn!("{text}");
            return Ok(section("data", "Data", &note(&text)));
        }
    };
    let facts = location_facts(&manifest);
    let points: Vec<MapPoint> = facts
        .iter()
        .filter_map(|f| {
            let p = f.position?;
            Some(MapPoint {
                lat: p.lat,
                lon: p.lon,
                cluster: f.cluster,
            })
        })
        .collect();
    let centroids = centroids(&manifest_path, &facts);
    // A page stays light with fMoW's ~80k places: every n-th is drawn.
    let stride = points.len().div_ceil(MAX_MAP_POINTS).max(1);
    let shown: Vec<MapPoint> = points.iter().step_by(stride).copied().collect();
    let mut body = format!(
        "<p>{} images of {} locations from <code>{}</code>{}.</p>\n",
        manifest.records.len(),
        facts.len(),
        escape(&manifest_path.display().to_string()),
        if centroids.is_empty() {
            String::new()
        } else {
            format!(", {} geo clusters", centroids.len())
        }
    );
    if points.is_empty() {
        body += &note("No row of the manifest has lat/lon: nothing to put on the map.");
    } else {
        body += &figure(
            "map",
            &format!(
                "{} located places{} coloured by geo cluster; crosses in black rings mark the {} cluster centroids (equirectangular; land: Natural Earth 1:110m).",
                points.len(),
                if stride > 1 {
                    format!(" (every {stride}th drawn: {})", shown.len())
                } else {
                    String::new()
                },
                centroids.len()
            ),
            &world::world_map("Locations and geo clusters", &shown, &centroids)?,
        );
    }
    body += "<div class=\"grid\">\n";
    body += &figure(
        "views-per-location",
        "How many views (images over time) each location has; temporal positives need 2 or more.",
        &bar_chart(
            "Views per location",
            "views",
            "locations",
            &views_histogram(&facts),
            PALETTE[0],
        )?,
    );
    let spans: Vec<f64> = facts.iter().filter_map(|f| f.span_years).collect();
    if spans.is_empty() {
        body += &note("No location has two dated views: no time spans to show.");
    } else {
        body += &figure(
            "time-span",
            &format!("Years between the first and the last view of each of the {} locations with 2+ dated views.", spans.len()),
            &bar_chart("Time span per location", "years", "locations", &span_histogram(&spans), PALETTE[2])?,
        );
    }
    body += "</div>\n";
    let mut out = section("data", "Data", &body);

    if options.pairs > 0 {
        let drawn = run_input(run, &manifest).and_then(|input| {
            let drawn = samples::augmented_pairs(&run.config, &input, manifest, options.pairs)?;
            Ok((samples::Composite::of(&input), drawn))
        });
        let body = match drawn {
            Ok((composite, drawn)) => {
                pairs_grid(run, &composite, &drawn.pairs) + &replaced_note(&drawn.replaced)
            }
            Err(e) => {
                let text = format!("The sample pairs could not be drawn: {e:#}");
                tracing::warn!("{text}");
                note(&text)
            }
        };
        out += &section("pairs", "What the network sees", &body);
    }
    Ok(out)
}

/// What the drawing of the sample pairs replaced (empty when nothing).
fn replaced_note(replaced: &[crate::data::loader::BadImage]) -> String {
    if replaced.is_empty() {
        return String::new();
    }
    let mut paths: Vec<&str> = replaced.iter().map(|b| b.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    note(&format!(
        "{} unreadable image(s) were replaced by other samples, as the run's {} skip does: {}",
        paths.len(),
        crate::settings::name("on_bad_image"),
        paths.join(", ")
    ))
}

/// The run's input (bands, radiometry, normalisation): its latest
/// checkpoint's; a run without one yet resolves its config's `--bands` and
/// `--radiometry` against `manifest` as pretraining does.
fn run_input(run: &Run, manifest: &Manifest) -> anyhow::Result<InputSpec> {
    match &run.checkpoint_input {
        Some(input) => Ok(input.clone()),
        None => crate::train::pretrain::resolve_input(&run.config, manifest),
    }
}

fn pairs_grid(run: &Run, composite: &samples::Composite, pairs: &[samples::SamplePair]) -> String {
    let colours = if composite.false_colour {
        format!(" False-colour composites ({}).", composite.label)
    } else if composite.label == "R = red, G = green, B = blue" {
        String::new()
    } else {
        format!(" RGB composites ({}).", composite.label)
    };
    let mut s = format!(
        "<p>The first {} query/key pairs of epoch 1, drawn by this run's own loader and aug+ augmentation (seed {}). {}{}</p>\n<div class=\"pairs\">\n",
        pairs.len(),
        run.config.run.seed,
        if run.config.method.temporal() {
            "With temporal positives the key is another view of the same place, taken at another time."
        } else {
            "Without temporal positives both views are cut from the same image."
        },
        escape(&colours)
    );
    for p in pairs {
        let when = |t: &Option<String>| {
            t.as_deref()
                .map_or("undated".to_string(), |t| t.chars().take(10).collect())
        };
        s += &format!(
            "<div class=\"pair\"><img src=\"{}\" alt=\"query\"> <img src=\"{}\" alt=\"key\"><div class=\"caption\">{}<br><span class=\"when\">query {} · key {}</span>{}</div></div>\n",
            p.query_png,
            p.key_png,
            escape(&p.location),
            escape(&when(&p.query_time)),
            escape(&when(&p.key_time)),
            if p.same_image { " (same image)" } else { "" }
        );
    }
    s + "</div>\n"
}

/// The HTML report of one run.
pub fn run_report(run_dir: &Path, options: &ReportOptions) -> anyhow::Result<String> {
    let run = Run::load(run_dir)?;
    let mut body = section("provenance", "How this run was made", &provenance(&run));
    body += &section("curves", "Training", &curves(&run)?);
    body += &section("evaluation", "Evaluation", &evaluation(&run)?);
    body += &data_sections(&run, options)?;
    let config_rows: Vec<Vec<String>> = run
        .config_table
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    body += &section(
        "config",
        "Configuration",
        &format!(
            "<div class=\"config\">{}</div>",
            table(&["setting", "value"], &config_rows)
        ),
    );
    Ok(html::page(
        &format!("geossl run: {}", run.name),
        &run.headline(),
        &body,
    ))
}

/// Writes [`run_report`] of `run_dir` to `out` (atomically); returns its
/// size in bytes.
pub fn write_run_report(
    run_dir: &Path,
    options: &ReportOptions,
    out: &Path,
) -> anyhow::Result<usize> {
    let page = run_report(run_dir, options)?;
    crate::formats::atomic_write::write_string(out, &page)?;
    Ok(page.len())
}

/// A table that a caller adds to a comparison page (the demo's results).
pub struct ExtraTable {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub caption: String,
}

/// `to` as a link from a page in `from_dir`: relative when below it.
fn link(from_dir: &Path, to: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from_dir), abs(to));
    match to.strip_prefix(&from) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => format!("file://{}", to.display()),
    }
}

/// One overlaid per-epoch chart of the comparison page.
struct EpochCurve {
    id: &'static str,
    title: &'static str,
    caption: &'static str,
    value: fn(&MetricsRow) -> Option<f64>,
    range: Option<(f64, f64)>,
    /// Draw the geo CE chance level, ln K, of each K among the runs.
    geo_chance: bool,
}

const COMPARED_CURVES: [EpochCurve; 5] = [
    EpochCurve {
        id: "infonce",
        title: "InfoNCE per epoch",
        caption: "InfoNCE (epoch mean).",
        value: |e| Some(e.moco_loss),
        range: None,
        geo_chance: false,
    },
    EpochCurve {
        id: "geo-ce",
        title: "Geo CE per epoch",
        caption: "Geo cross-entropy (epoch mean), runs with the geo head.",
        value: |e| e.geo_loss,
        range: None,
        geo_chance: true,
    },
    EpochCurve {
        id: "knn",
        title: "kNN top-1 per epoch",
        caption: "kNN top-1 of the query encoder during training (runs with --knn-every).",
        value: |e| e.knn_top1,
        range: Some((0.0, 1.0)),
        geo_chance: false,
    },
    EpochCurve {
        id: "moco-acc",
        title: "Instance discrimination accuracy",
        caption:
            "Pretext accuracy (epoch mean): the key is the most similar of the key and the queue.",
        value: |e| Some(e.moco_acc),
        range: Some((0.0, 1.0)),
        geo_chance: false,
    },
    EpochCurve {
        id: "lr",
        title: "Learning rate",
        caption: "Learning rate at the end of each epoch.",
        value: |e| Some(e.lr),
        range: None,
        geo_chance: false,
    },
];

/// Several runs side by side: results, overlaid epoch curves, and links to
/// each run's own report (`report.html` in its folder, when written).
pub fn comparison_report(
    run_dirs: &[PathBuf],
    out: &Path,
    extra: Option<&ExtraTable>,
) -> anyhow::Result<String> {
    anyhow::ensure!(!run_dirs.is_empty(), "no runs to compare");
    let runs = run_dirs
        .iter()
        .map(|d| Run::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let page_dir = out.parent().unwrap_or(Path::new("."));
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_string(), f);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let last = r.last_epoch();
            let last_knn = r.epochs().filter_map(|e| e.knn_top1).last();
            vec![
                r.name.clone(),
                r.config.method.name().to_string(),
                last.map_or(0, |e| e.epoch).to_string(),
                opt(last.map(|e| e.moco_loss), |v| format!("{v:.4}")),
                opt(last.and_then(|e| e.geo_loss), |v| format!("{v:.4}")),
                opt(last_knn, pct),
                opt(r.probe.as_ref().map(|p| p.top1), pct),
                opt(r.probe.as_ref().map(|p| p.macro_f1), |v| format!("{v:.4}")),
                opt(r.probe.as_ref().map(|p| p.per_location.top1), pct),
                opt(r.knn.as_ref().map(|p| p.top1), pct),
            ]
        })
        .collect();
    let mut body = String::new();
    if let Some(extra) = extra {
        let headers: Vec<&str> = extra.headers.iter().map(String::as_str).collect();
        body += &section(
            "results",
            &extra.title,
            &format!(
                "{}<p class=\"subtitle\">{}</p>\n",
                table(&headers, &extra.rows),
                escape(&extra.caption)
            ),
        );
    }
    let mut runs_body = table(
        &[
            "run",
            "method",
            "epochs",
            "InfoNCE (last epoch)",
            "geo CE (last epoch)",
            "kNN top-1 (monitor)",
            "probe top-1",
            "probe macro F1",
            "per-location top-1",
            "kNN top-1",
        ],
        &rows,
    );
    runs_body += "<ul>\n";
    for r in &runs {
        let report = RunDir::new(&r.dir).report_html();
        if report.exists() {
            runs_body += &format!(
                "<li><a href=\"{}\">{}</a>: {}</li>\n",
                escape(&link(page_dir, &report)),
                escape(&r.name),
                escape(&r.headline())
            );
        } else {
            runs_body += &format!(
                "<li>{}: {} (no report.html yet)</li>\n",
                escape(&r.name),
                escape(&r.headline())
            );
        }
    }
    runs_body += "</ul>\n";
    body += &section("runs", "Runs", &runs_body);

    let overlay = |f: fn(&MetricsRow) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| {
                series(
                    &r.name,
                    i,
                    false,
                    r.epochs()
                        .filter_map(|e| Some((e.epoch as f64, f(e)?)))
                        .collect(),
                )
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let mut ks: Vec<i64> = runs.iter().filter_map(|r| r.geo_classes).collect();
    ks.sort_unstable();
    ks.dedup();
    let mut charts = String::from("<div class=\"grid\">\n");
    for curve in COMPARED_CURVES {
        let s = overlay(curve.value);
        if s.is_empty() {
            continue;
        }
        let chance: Vec<Reference> = match curve.geo_chance {
            true => ks.iter().map(|&k| geo_chance(k)).collect(),
            false => Vec::new(),
        };
        charts += &figure(
            curve.id,
            curve.caption,
            &line_chart_with_references(curve.title, "epoch", "", &s, curve.range, &chance)?,
        );
    }
    let probes: Vec<(String, f64)> = runs
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.probe.as_ref()?.top1)))
        .collect();
    if !probes.is_empty() {
        charts += &figure(
            "probe-top1",
            "Linear-probe top-1 on the test split, per run.",
            &bar_chart("Linear probe top-1", "run", "top-1", &probes, PALETTE[0])?,
        );
    }
    charts += "</div>\n";
    body += &section("curves", "Training curves", &charts);
    Ok(html::page(
        &format!("geossl: {} runs compared", runs.len()),
        &runs
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" · "),
        &body,
    ))
}

/// Writes [`comparison_report`] to `out` (atomically); returns its size in
/// bytes.
pub fn write_comparison_report(
    run_dirs: &[PathBuf],
    out: &Path,
    extra: Option<&ExtraTable>,
) -> anyhow::Result<usize> {
    let page = comparison_report(run_dirs, out, extra)?;
    crate::formats::atomic_write::write_string(out, &page)?;
    Ok(page.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_read_as_written() {
        assert_eq!(shell_quote("--out"), "--out");
        assert_eq!(shell_quote("my run"), "'my run'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(187.0), "3 min 07 s");
        assert_eq!(duration(7500.0), "2 h 05 min");
        assert_eq!(
            evaluated_epoch("/r/checkpoints/epoch-0012 (MocoTpGeo, epoch 12)"),
            Some(12)
        );
        assert_eq!(evaluated_epoch("imported.pth"), None);
        assert_eq!(when("2026-11-30T17:05:26.120Z"), "2026-11-30 17:05:26 UTC");
        let k4 = geo_chance(4);
        assert!((k4.y - 1.386_294).abs() < 1e-6);
        assert!(k4.name.contains("ln 4 = 1.386"), "{}", k4.name);
    }

    #[test]
    fn histograms_count_every_location() {
        let facts: Vec<LocationFacts> = [1usize, 1, 2, 5, 30]
            .iter()
            .map(|&views| LocationFacts {
                position: None,
                cluster: None,
                views,
                span_years: None,
            })
            .collect();
        let bars = views_histogram(&facts);
        assert_eq!(bars.len(), 21);
        assert_eq!((bars[0].0.as_str(), bars[0].1), ("1", 2.0));
        assert_eq!(bars[4].1, 1.0);
        assert_eq!((bars[20].0.as_str(), bars[20].1), ("21+", 1.0));
        assert_eq!(bars.iter().map(|b| b.1).sum::<f64>(), 5.0);

        let spans = span_histogram(&[0.1, 0.3, 2.9, 3.0]);
        assert_eq!(spans.len(), 13);
        assert_eq!(spans[0], ("0-0.25".to_string(), 1.0));
        assert_eq!(spans.iter().map(|b| b.1).sum::<f64>(), 4.0);
        assert_eq!(spans.last().unwrap().1, 1.0, "3.0 falls in the last bin");
    }
}
