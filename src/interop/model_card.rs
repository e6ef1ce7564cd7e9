//! The model card (`README.md`) of a hub export: Hugging Face's YAML front
//! matter (`library_name: timm`, `pipeline_tag`, tags, `license` from
//! `--license` or left to fill in) and a body in the order of timm's
//! `generate_readme` (details, usage, results, citation).
//!
//! Every figure comes from the run: the checkpoint's `state.json` and
//! config (method, epochs, steps, batch, the input), the manifest
//! (training images and places, when it can still be read), `metrics.jsonl`
//! (wall time: the epoch rows' `seconds`), and the evaluation reports found
//! (`probe.json`, `knn.json`, the `report.json` of classifier folders).
//! What is missing is said to be missing, never filled in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::bands::InputSpec;
use crate::data::Manifest;
use crate::formats::classification_report::ClassificationReport;
use crate::model::resnet::ResNetConfig;
use crate::train::checkpoint::TrainState;
use crate::train::config::Method;
use crate::train::encoder_source::read_classifier_info;
use crate::train::{CheckpointDir, ClassifierDir, RunDir};

/// The paper the method comes from.
pub const PAPER: &str = "Geography-Aware Self-Supervised Learning";

/// Its BibTeX entry (ICCV 2021, arXiv 2011.09980).
pub const CITATION: &str = "@inproceedings{ayush2021geography,
  title     = {Geography-Aware Self-Supervised Learning},
  author    = {Ayush, Kumar and Uzkent, Burak and Meng, Chenlin and Tanmay, Kumar and Burke, Marshall and Lobell, David and Ermon, Stefano},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2021},
  eprint    = {2011.09980},
  archivePrefix = {arXiv}
}";

/// The method's name in the paper's tables.
pub fn paper_name(method: Method) -> &'static str {
    match method {
        Method::Moco => "MoCo-v2",
        Method::MocoTp => "MoCo-v2+TP",
        Method::MocoGeo => "MoCo-v2+Geo",
        Method::MocoTpGeo => "MoCo-v2+TP+Geo",
    }
}

/// One evaluation report found for the run.
#[derive(Debug)]
pub struct Evaluation {
    /// What it measures: `linear probe`, `kNN`, `fine-tuned`.
    pub kind: String,
    /// The file it was read from.
    pub source: PathBuf,
    pub report: ClassificationReport,
    /// The epoch of the checkpoint it evaluated (from the report's
    /// `encoder` or the classifier's `init`: `PATH (Method, epoch N)`).
    pub epoch: Option<usize>,
}

/// What the card says about a run, gathered from its files.
#[derive(Debug)]
pub struct RunFacts {
    pub method: Method,
    /// Epochs completed (the checkpoint's) and configured.
    pub epochs: (usize, usize),
    pub steps: u64,
    pub batch_size: usize,
    pub world_size: usize,
    pub lr: f64,
    pub moco_k: i64,
    pub moco_t: f64,
    pub geo_classes: Option<i64>,
    pub manifest: String,
    pub split: String,
    /// Training images: the checkpoint's row count, else counted in the manifest.
    pub images: Option<usize>,
    /// Distinct `location_id` among the training rows (manifest readable).
    pub places: Option<usize>,
    /// Sum of `seconds` over the epoch rows of `metrics.jsonl`, and their count.
    pub wall: Option<(f64, usize)>,
    pub image_size: u32,
    pub input: InputSpec,
    pub checkpoint: String,
    pub evaluations: Vec<Evaluation>,
    /// The file `geossl import` made this run from (`state.json`'s
    /// `imported_from`): the training details above are then geossl's
    /// defaults, not facts, and the card leaves them out.
    pub imported_from: Option<String>,
    /// The backbone file the run started from (`pretrain --init`).
    pub init: Option<String>,
    /// Total wall time of the run's launches (`run.json`), seconds.
    pub launches_wall: Option<(f64, usize)>,
}

impl RunFacts {
    /// Reads what the card needs; `meta` is the export's metadata (its
    /// `manifest` resolved against the run folder). `finetune` adds
    /// classifier folders outside the run folder.
    pub fn gather(
        dir: &CheckpointDir,
        state: &TrainState,
        meta: &BTreeMap<String, String>,
        finetune: &[PathBuf],
    ) -> anyhow::Result<Self> {
        let c = &state.config;
        let manifest = meta.get("manifest").cloned().unwrap_or_default();
        let rows = training_rows(Path::new(&manifest), &c.split);
        let run = dir.run_dir();
        let init = c.model.init.as_os_str();
        let evaluations = evaluations(dir, run.as_ref(), finetune)?;
        for e in &evaluations {
            if let Some(note) = stale_note(e, state.epoch) {
                eprintln!("warning: {}: {note}", e.source.display());
            }
        }
        Ok(Self {
            method: c.method,
            epochs: (state.epoch, c.optimizer.epochs),
            steps: state.step,
            batch_size: c.optimizer.batch_size,
            world_size: state.world_size,
            lr: c.optimizer.lr,
            moco_k: c.moco.moco_k,
            moco_t: c.moco.moco_t,
            geo_classes: state.geo_classes,
            split: c.split.clone(),
            images: state.rows.or(rows.as_ref().map(|m| m.records.len())),
            places: rows.as_ref().and_then(places),
            wall: run.as_ref().and_then(|r| wall_time(r, state.epoch)),
            image_size: c.data.image_size,
            input: state.input.clone(),
            checkpoint: dir.path().display().to_string(),
            evaluations,
            manifest,
            imported_from: state.imported_from.clone(),
            init: (!init.is_empty()).then(|| init.to_string_lossy().into_owned()),
            launches_wall: run.as_ref().and_then(launches_wall),
        })
    }

    /// A backbone-file import: an epoch-0 MoCo run with `imported_from`
    /// (`backbone::import` writes that; the file says nothing of a method).
    pub fn method_unknown(&self) -> bool {
        self.imported_from.is_some() && self.method == Method::Moco && self.epochs.0 == 0
    }
}

/// The manifest's training rows, when it can still be read.
fn training_rows(manifest: &Path, split: &str) -> Option<Manifest> {
    let m = Manifest::read(manifest).ok()?;
    crate::train::pretrain::training_rows(m, split).ok()
}

/// Distinct places, when every row names its place.
fn places(m: &Manifest) -> Option<usize> {
    let ids: Option<BTreeSet<&str>> = m.records.iter().map(|r| r.location_id.as_deref()).collect();
    ids.map(|s| s.len())
}

/// The training time of the epochs up to `epochs`: the last epoch row of
/// each (a resumed run may repeat one), summed.
fn wall_time(run: &RunDir, epochs: usize) -> Option<(f64, usize)> {
    let rows = crate::train::metrics::read_rows(run.path()).ok()?;
    let per_epoch: BTreeMap<usize, f64> = rows
        .iter()
        .filter(|r| r.kind == "epoch" && r.epoch <= epochs)
        .filter_map(|r| Some((r.epoch, r.seconds?)))
        .collect();
    (!per_epoch.is_empty()).then(|| (per_epoch.values().sum(), per_epoch.len()))
}

/// The total wall time of `run.json`'s launches and their count.
fn launches_wall(run: &RunDir) -> Option<(f64, usize)> {
    let record = crate::train::launches::RunRecord::read(run.path()).ok()?;
    let secs: Vec<f64> = record.launches.iter().filter_map(|l| l.seconds()).collect();
    (!secs.is_empty()).then(|| (secs.iter().sum(), secs.len()))
}

/// Says so when `e` evaluated another checkpoint than the exported one.
pub fn stale_note(e: &Evaluation, exported: usize) -> Option<String> {
    let epoch = e.epoch?;
    (epoch != exported).then(|| {
        format!("evaluated the checkpoint of epoch {epoch}; the exported checkpoint is epoch {exported}")
    })
}

/// The canonical run folder of a checkpoint folder (its path as given
/// when it cannot be resolved).
fn run_of(checkpoint: &Path) -> PathBuf {
    let p = checkpoint
        .canonicalize()
        .unwrap_or_else(|_| checkpoint.to_path_buf());
    CheckpointDir::new(&p)
        .run_dir()
        .map_or(p, |r| r.path().to_path_buf())
}

/// `probe.json` and `knn.json` of the run folder, then the classifier
/// folders in it (sorted by name) and those of `--finetune`: only those
/// fine-tuned from a checkpoint of this run (their `classifier.json`
/// `init`). A `--finetune` folder that started elsewhere is an error; one
/// inside the run folder is skipped with a line on stderr.
fn evaluations(
    dir: &CheckpointDir,
    run: Option<&RunDir>,
    finetune: &[PathBuf],
) -> anyhow::Result<Vec<Evaluation>> {
    let mut found = Vec::new();
    let mut classifiers = Vec::new();
    if let Some(run) = run {
        for (kind, path) in [("linear probe", run.probe_json()), ("kNN", run.knn_json())] {
            if path.is_file() {
                let report = ClassificationReport::read(&path)?;
                found.push(Evaluation {
                    kind: kind.to_string(),
                    epoch: crate::train::encoder_source::checkpoint_of_description(&report.encoder)
                        .map(|(_, e)| e),
                    source: path,
                    report,
                });
            }
        }
        let inside = run
            .classifier_dirs()
            .with_context(|| format!("{}: cannot list", run.path().display()))?;
        classifiers.extend(inside.iter().map(|c| c.path().to_path_buf()));
    }
    classifiers.extend(finetune.iter().cloned());
    let this_run = run_of(dir.path());
    for path in classifiers {
        let named = finetune.contains(&path);
        let cdir = ClassifierDir::new(&path);
        let info = read_classifier_info(&cdir)?;
        let from = crate::train::encoder_source::checkpoint_of_description(&info.init)
            .filter(|(c, _)| run_of(c) == this_run);
        let Some((_, epoch)) = from else {
            anyhow::ensure!(
                !named,
                "{}: fine-tuned from {} (classifier.json init), not from this run ({}); \
                 --finetune names fine-tunes of the exported run",
                path.display(),
                info.init,
                this_run.display()
            );
            eprintln!(
                "{}: skipped, fine-tuned from {}, not from this run",
                path.display(),
                info.init
            );
            continue;
        };
        let report_path = cdir.report_json();
        if !report_path.is_file() {
            anyhow::ensure!(
                !named,
                "{}: no report.json (--finetune names a finished geossl finetune folder)",
                path.display()
            );
            continue;
        }
        found.push(Evaluation {
            kind: format!("fine-tuned ({})", plural(info.epochs, "epoch", "epochs")),
            report: ClassificationReport::read(&report_path)?,
            source: report_path,
            epoch: Some(epoch),
        });
    }
    Ok(found)
}

/// `1 epoch`, `2 epochs`, `2 launches`: `n` with the singular or the plural.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The card: front matter, then the sections (see the module doc). An
/// imported run's card says where the weights came from and states no
/// training details (its config holds geossl's defaults, not the file's).
pub fn render(facts: &RunFacts, resnet: &ResNetConfig, license: Option<&str>) -> String {
    let mut s = front_matter(facts, license);
    let arch = resnet.arch.name();
    let feat = resnet.feature_dim();
    if let Some(file) = &facts.imported_from {
        let _ = writeln!(s, "# {arch} imported from `{file}` (geossl)\n");
        let method = if facts.method_unknown() {
            "The method it was trained with is unknown (a plain backbone file).".to_string()
        } else {
            format!(
                "Its layout is that of a {} checkpoint (a MoCo/GASSL file).",
                paper_name(facts.method)
            )
        };
        let _ = writeln!(
            s,
            "A {arch} backbone (torchvision/timm layout, no classifier: {feat} pooled features) \
             imported from `{file}` by geossl import. {method} Training details (data, \
             budget, MoCo settings) are not recorded in the file.\n"
        );
    } else {
        let name = paper_name(facts.method);
        let start = facts.init.as_ref().map_or("from scratch".to_string(), |f| {
            format!("initialised from `{f}` (pretrain --init)")
        });
        let _ = writeln!(s, "# {arch} pretrained with {name} (geossl)\n");
        let _ = writeln!(
            s,
            "A {arch} backbone (torchvision/timm layout, no classifier: {feat} pooled features) \
             pretrained by geossl with {name}, {start}, the method of Ayush et al., \
             *{PAPER}*, ICCV 2021 ({}).\n",
            method_text(facts.method)
        );
    }
    s.push_str(&details(facts, resnet));
    if facts.imported_from.is_none() {
        s.push_str(&training(facts));
    }
    s.push_str(&results(facts));
    s.push_str(&usage(facts, resnet));
    let _ = writeln!(s, "## Citation\n\n```bibtex\n{CITATION}\n```");
    s
}

fn method_text(method: Method) -> &'static str {
    match method {
        Method::Moco => "MoCo-v2 contrastive learning: two augmentations of one image are a positive pair",
        Method::MocoTp => "MoCo-v2 with temporal positives: two images of the same place taken at different times are a positive pair",
        Method::MocoGeo => "MoCo-v2 with a geo-location pretext task: a head on the features predicts the image's location cluster",
        Method::MocoTpGeo => "MoCo-v2 with temporal positives (two images of the same place taken at different times are a positive pair) and a geo-location pretext task (a head predicts the image's location cluster)",
    }
}

fn front_matter(facts: &RunFacts, license: Option<&str>) -> String {
    let mut s = String::from("---\n");
    match license {
        Some(l) => {
            let _ = writeln!(s, "license: {l}");
        }
        None => s.push_str(
            "# license: fill in (an SPDX id such as apache-2.0 or cc-by-4.0, or geossl export \
             --license); the weights may inherit the training data's terms\n",
        ),
    }
    s.push_str("library_name: timm\npipeline_tag: image-feature-extraction\ntags:\n");
    for tag in [
        "image-feature-extraction",
        "timm",
        "geossl",
        "self-supervised-learning",
    ] {
        let _ = writeln!(s, "- {tag}");
    }
    if !facts.method_unknown() {
        let _ = writeln!(s, "- {}", facts.method.name());
    }
    s.push_str("- remote-sensing\n- satellite-imagery\n---\n\n");
    s
}

fn details(facts: &RunFacts, resnet: &ResNetConfig) -> String {
    let i = &facts.input;
    let mut s = String::from("## Model details\n\n");
    let _ = writeln!(s, "- **Architecture:** {} (width 64, 7x7 stem), {} input channels, {}-d average-pooled features", resnet.arch.name(), i.channels(), resnet.feature_dim());
    let _ = writeln!(
        s,
        "- **Bands:** {} (band numbers {:?}, radiometry `{}`)",
        i.band_names.join(", "),
        i.bands,
        i.radiometry
    );
    let _ = writeln!(
        s,
        "- **Normalisation:** mean {:?}, std {:?} per channel; the input is `{}`",
        i.mean,
        i.std,
        i.transform_formula()
    );
    let _ = writeln!(s, "- **Image size:** {} px (evaluation view: resize the short side to {0}, bilinear, centre crop {0})", facts.image_size);
    let _ = writeln!(s, "- **Checkpoint:** `{}`\n", facts.checkpoint);
    s
}

fn training(facts: &RunFacts) -> String {
    let mut s = String::from("## Training\n\n");
    let _ = writeln!(
        s,
        "- **Data:** manifest `{}`, split `{}`",
        facts.manifest, facts.split
    );
    let count = |v: Option<usize>| v.map_or("not recorded".to_string(), |n| n.to_string());
    let _ = writeln!(
        s,
        "- **Images:** {}; **places:** {}",
        count(facts.images),
        count(facts.places)
    );
    if let Some(k) = facts.geo_classes {
        let _ = writeln!(
            s,
            "- **Geo-location classes:** {k} (clusters of the training places)"
        );
    }
    let (done, planned) = facts.epochs;
    let lr = facts.lr * facts.batch_size as f64 / 256.0;
    let _ = writeln!(
        s,
        "- **Budget:** {done} of {}, {} steps, batch size {} on {} process(es), \
         lr {} x {}/256 = {lr} (geossl scales the lr by batch/256)",
        plural(planned, "epoch", "epochs"),
        facts.steps,
        facts.batch_size,
        facts.world_size,
        facts.lr,
        facts.batch_size
    );
    let _ = writeln!(
        s,
        "- **MoCo:** queue {} keys, temperature {}",
        facts.moco_k, facts.moco_t
    );
    let wall = facts.wall.map_or(
        "not recorded (no epoch durations in metrics.jsonl)".to_string(),
        |(secs, n)| {
            format!(
                "{secs:.1} s, the sum of the durations of {} in metrics.jsonl",
                plural(n, "epoch", "epochs")
            )
        },
    );
    let _ = writeln!(s, "- **Training time:** {wall}");
    if let Some((secs, n)) = facts.launches_wall {
        let _ = writeln!(
            s,
            "- **Wall time:** {secs:.1} s over {} (run.json: start to last checkpoint or end, \
             data loading and checkpoints included)",
            plural(n, "launch", "launches")
        );
    }
    s.push('\n');
    s
}

fn results(facts: &RunFacts) -> String {
    let mut s = String::from("## Evaluation results\n\n");
    if facts.evaluations.is_empty() {
        s.push_str("No evaluation report was found in the run folder (probe.json, knn.json, finetune folders).\n\n");
        return s;
    }
    s.push_str("| evaluation | checkpoint | test split | images | classes | top-1 | top-5 | macro F1 | evaluated encoder | report |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let exported = facts.epochs.0;
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    for e in &facts.evaluations {
        let r = &e.report;
        let checkpoint = match (e.epoch, stale_note(e, exported)) {
            (Some(n), None) => format!("epoch {n}"),
            (Some(n), Some(_)) => format!("epoch {n}; the exported checkpoint is epoch {exported}"),
            (None, _) => "not recorded".to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {checkpoint} | {} | {} | {} | {} | {} | {} | `{}` | `{}` |",
            e.kind,
            r.test_split,
            r.test_images,
            r.classes,
            pct(r.top1),
            r.top5.map_or("-".to_string(), pct),
            pct(r.macro_f1),
            r.encoder,
            e.source.display()
        );
    }
    s.push('\n');
    for e in &facts.evaluations {
        let _ = writeln!(s, "- {}: {}", e.kind, e.report.protocol);
    }
    s.push('\n');
    s
}

fn usage(facts: &RunFacts, resnet: &ResNetConfig) -> String {
    let arch = resnet.arch.name();
    let c = facts.input.channels();
    let chans = if c == 3 {
        String::new()
    } else {
        format!(", in_chans={c}")
    };
    let conv1 = if c == 3 {
        String::new()
    } else {
        format!("model.conv1 = torch.nn.Conv2d({c}, 64, 7, 2, 3, bias=False)\n")
    };
    format!(
        "## How to use\n\n\
         timm (`num_classes=0`: the file holds no `fc`; with timm's default 1000 classes the \
         strict load fails on the missing `fc.weight`):\n\n\
         ```python\nimport timm\n\
         model = timm.create_model(\"{arch}\", pretrained=True, num_classes=0{chans},\n    \
         pretrained_cfg_overlay=dict(file=\"model.safetensors\"))\n\
         # or from this folder or its hub repository, with config.json:\n\
         # timm.create_model(\"local-dir:PATH\", pretrained=True) / (\"hf-hub:USER/REPO\", pretrained=True)\n\
         features = model.eval()(x)  # [N, {feat}]\n```\n\n\
         torchvision (every tensor but `fc` loads):\n\n\
         ```python\nimport safetensors.torch, torch, torchvision\n\
         model = torchvision.models.{arch}()\n{conv1}\
         missing, unexpected = model.load_state_dict(safetensors.torch.load_file(\"model.safetensors\"), strict=False)\n\
         assert set(missing) == {{\"fc.weight\", \"fc.bias\"}} and not unexpected\n\
         model.fc = torch.nn.Identity()\n\
         features = model.eval()(x)  # [N, {feat}]\n```\n\n\
         `x` is normalised as above: `(u - mean) / std` per channel.\n\n",
        feat = resnet.feature_dim()
    )
}
