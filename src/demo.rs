//! `geossl demo`: the method working, end to end, on the built-in world.
//! Generates the dataset, clusters its locations, pretrains the four
//! variants with the same budget and seed, and evaluates each (linear
//! probe, per-location probe, kNN) beside the paper's baselines: a randomly
//! initialised encoder, geo-location learning (the encoder trained only to
//! classify the geo clusters) and supervised training on the labels, both
//! with the same number of epochs over the same images. Each variant gets
//! an HTML report (`pretrain-*/report.html`) and `report.html` compares
//! them.

pub mod multispectral;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::geo_classes::{write_geo_classes, GeoClassOptions};
use crate::data::summary::{CheckOptions, Summary};
use crate::data::synth::{self, SynthConfig};
use crate::data::Manifest;
use crate::eval::classification::ClassificationReport;
use crate::eval::encoder::Encoder;
use crate::eval::finetune::{train_classifier, FinetuneConfig, TrainView};
use crate::eval::knn::{knn_eval_encoder, KnnConfig};
use crate::eval::probe::{linear_probe_to, ProbeConfig};
use crate::eval::task::{Target, Task};
use crate::train::config::{
    DataConfig, MocoSettings, ModelConfig, MonitorConfig, OptimizerConfig, RunConfig,
};
use crate::train::{Method, PretrainConfig, RunDir, RunOptions};

/// The demo's budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoBudget {
    pub locations: usize,
    pub geo_clusters: usize,
    pub epochs: usize,
    pub width: i64,
    pub image_size: u32,
    pub batch_size: usize,
}

impl DemoBudget {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                locations: 400,
                geo_clusters: 20,
                epochs: 12,
                width: 8,
                image_size: 32,
                batch_size: 32,
            }
        } else {
            Self {
                locations: 1000,
                geo_clusters: 50,
                epochs: 20,
                width: 8,
                image_size: 32,
                batch_size: 32,
            }
        }
    }
}

/// One line of the demo table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoRow {
    pub method: String,
    pub probe_top1: f64,
    pub probe_macro_f1: f64,
    pub probe_per_location_top1: f64,
    pub knn_top1: f64,
    /// Training wall time (pretraining or classifier training), seconds.
    pub train_seconds: f64,
    /// Whether the probe columns come from the network's own classifier
    /// (the supervised baseline) rather than a linear probe.
    pub end_to_end: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoResult {
    pub seed: u64,
    pub budget: DemoBudget,
    pub rows: Vec<DemoRow>,
    pub total_seconds: f64,
}

/// The pretraining settings of the demo: the paper's method at a size that
/// learns on 2 CPU cores (ResNet-18 of `width` with the small-input stem).
pub fn pretrain_config(
    budget: &DemoBudget,
    manifest: &Path,
    method: Method,
    seed: u64,
) -> PretrainConfig {
    PretrainConfig {
        manifest: manifest.to_path_buf(),
        method,
        model: ModelConfig {
            arch: crate::model::Arch::Resnet18,
            width: budget.width,
            small_input: true,
            ..Default::default()
        },
        optimizer: OptimizerConfig {
            epochs: budget.epochs,
            batch_size: budget.batch_size,
            lr: 0.24,
            ..Default::default()
        },
        moco: MocoSettings {
            // Well below the training images, so the queue never holds a
            // query's own key from the previous epoch as a negative.
            moco_k: 256,
            moco_m: 0.99,
            moco_t: 0.2,
            bn_groups: 2,
            ..Default::default()
        },
        data: DataConfig {
            image_size: budget.image_size,
            crop_min_scale: 0.8,
            ..Default::default()
        },
        run: RunConfig {
            seed,
            device: "cpu".into(),
            checkpoint_every: budget.epochs,
            ..Default::default()
        },
        monitor: MonitorConfig {
            // kNN top-1 on the val split every other epoch, for the curves.
            knn_every: 2,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        // The demo owns its folders; a rerun starts them afresh.
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("{}: cannot clear the previous demo run", dir.display()))?;
    }
    Ok(())
}

fn probe_config(seed: u64) -> ProbeConfig {
    ProbeConfig {
        // The synthetic images are square, so Resize + RandomCrop is the
        // centre crop: caching the features is the protocol, exactly.
        cache_features: true,
        // One learning rate for encoders whose features differ in scale by
        // orders of magnitude (a random initialisation's in particular).
        standardize: true,
        seed,
        ..Default::default()
    }
}

/// Linear probe and kNN of one encoder.
fn evaluate_encoder(
    name: &str,
    encoder: &Encoder,
    task: &Task,
    seed: u64,
    train_seconds: f64,
    out: &Path,
) -> anyhow::Result<DemoRow> {
    let folder = RunDir::new(out);
    let probe = linear_probe_to(
        encoder,
        task,
        &probe_config(seed),
        true,
        &folder.probe_json(),
    )?;
    let knn = knn_of(encoder, task)?;
    knn.write_json(&folder.knn_json())?;
    Ok(row(name, &probe.report, &knn, train_seconds, false))
}

fn knn_of(encoder: &Encoder, task: &Task) -> anyhow::Result<ClassificationReport> {
    knn_eval_encoder(encoder, task, None, 256, &KnnConfig::default(), true)
}

fn row(
    name: &str,
    probe: &ClassificationReport,
    knn: &ClassificationReport,
    train_seconds: f64,
    end_to_end: bool,
) -> DemoRow {
    DemoRow {
        method: name.to_string(),
        probe_top1: probe.top1,
        probe_macro_f1: probe.macro_f1,
        probe_per_location_top1: probe.per_location.top1,
        knn_top1: knn.top1,
        train_seconds,
        end_to_end,
    }
}

/// Runs the whole demo under `out` and returns its table.
pub fn run(out: &Path, quick: bool, seed: u64) -> anyhow::Result<DemoResult> {
    let started = Instant::now();
    let budget = DemoBudget::new(quick);
    let data = out.join("data");
    println!(
        "== 1/5 synth: {} places of the built-in world -> {}",
        budget.locations,
        data.display()
    );
    let t = Instant::now();
    let m = synth::generate(
        &data,
        &SynthConfig {
            locations: budget.locations,
            max_views: 8,
            size: 64,
            seed,
            jpeg_quality: 90,
        },
    )?;
    println!(
        "wrote {} images in {:.1} s",
        m.records.len(),
        t.elapsed().as_secs_f64()
    );
    let manifest = data.join("manifest.csv");
    println!("\n== 2/5 index --check {}", manifest.display());
    let (mut m, summary) = Summary::check_file(&manifest, &CheckOptions::default())?;
    println!("{summary}");
    anyhow::ensure!(
        summary.missing_files == 0,
        "{}: files are missing",
        manifest.display()
    );
    let clustered = data.join("manifest_geo.csv");
    println!(
        "\n== 3/5 cluster k={} -> {}",
        budget.geo_clusters,
        clustered.display()
    );
    let options = GeoClassOptions {
        k: budget.geo_clusters,
        seed,
        weighted: true,
    };
    let centroids = crate::geo::locations::centroids_path(&clustered);
    let g = write_geo_classes(&mut m, &options, &clustered, &centroids)?;
    println!("{} locations in {} clusters", g.locations, g.k);

    let task = Task::new(
        Arc::new(Manifest::read(&clustered)?),
        Target::Label,
        "train",
        "val",
        None,
    )?;
    let mut rows = Vec::new();
    let mut run_dirs = Vec::new();
    let methods = [
        Method::Moco,
        Method::MocoTp,
        Method::MocoGeo,
        Method::MocoTpGeo,
    ];
    for (i, method) in methods.iter().enumerate() {
        let config = pretrain_config(&budget, &clustered, *method, seed);
        let name = method.name();
        let run_dir = out.join(format!("pretrain-{name}"));
        fresh_dir(&run_dir)?;
        println!(
            "\n== 4/5 pretrain {name} ({}/4): ResNet-18 (width {}, small-input stem), {} px, {} epochs, batch {}, queue {}, T {} -> {}",
            i + 1,
            budget.width,
            budget.image_size,
            budget.epochs,
            budget.batch_size,
            config.moco.moco_k,
            config.moco.moco_t,
            run_dir.display()
        );
        let t = Instant::now();
        let monitor: &crate::train::BuildMonitor = &crate::eval::knn::KnnMonitor::build;
        crate::train::pretrain(&config, &run_dir, &RunOptions::default(), Some(monitor))?;
        let seconds = t.elapsed().as_secs_f64();
        let encoder = Encoder::load(&run_dir, Device::Cpu)?;
        rows.push(evaluate_encoder(
            name, &encoder, &task, seed, seconds, &run_dir,
        )?);
        print_row(rows.last().expect("just pushed"));
        let report = RunDir::new(&run_dir).report_html();
        crate::report::write_run_report(
            &run_dir,
            &crate::report::ReportOptions::default(),
            &report,
        )?;
        println!("report: {}", report.display());
        run_dirs.push(run_dir);
    }

    println!("\n== 5/5 baselines: random init, geo-location learning, supervised");
    let base = pretrain_config(&budget, &clustered, Method::Moco, seed);
    let random_dir = out.join("random-init");
    fresh_dir(&random_dir)?;
    std::fs::create_dir_all(&random_dir)?;
    tch::manual_seed(seed as i64);
    // The baselines read the images as the pretrained runs do.
    let input = crate::train::pretrain::resolve_input(&base, &task.manifest)?;
    let random = Encoder::random(
        base.resnet(&input),
        input.clone(),
        budget.image_size,
        Device::Cpu,
    );
    rows.push(evaluate_encoder(
        "random init",
        &random,
        &task,
        seed,
        0.0,
        &random_dir,
    )?);
    print_row(rows.last().expect("just pushed"));

    // The baselines train with the pretraining's budget, optimiser and crops.
    let scratch = FinetuneConfig {
        lr: base.schedule().base_lr,
        epochs: budget.epochs,
        cosine: true,
        batch_size: budget.batch_size,
        weight_decay: base.optimizer.weight_decay,
        view: TrainView::ResizedCropFlip,
        crop_min_scale: base.data.crop_min_scale,
        seed,
        ..Default::default()
    };
    let geo_task = Task::new(
        task.manifest.clone(),
        Target::GeoCluster,
        "train",
        "val",
        None,
    )?;
    let geo_dir = out.join("geo-location-learning");
    fresh_dir(&geo_dir)?;
    let t = Instant::now();
    tch::manual_seed(seed as i64);
    let mut geo = Encoder::random(
        base.resnet(&input),
        input.clone(),
        budget.image_size,
        Device::Cpu,
    );
    train_classifier(&mut geo, &geo_task, &scratch, &geo_dir, true)?;
    let seconds = t.elapsed().as_secs_f64();
    geo.source = format!("{} (classifier on geo_cluster)", geo_dir.display());
    rows.push(evaluate_encoder(
        "geo-location learning",
        &geo,
        &task,
        seed,
        seconds,
        &geo_dir,
    )?);
    print_row(rows.last().expect("just pushed"));

    let sup_dir = out.join("supervised");
    fresh_dir(&sup_dir)?;
    let t = Instant::now();
    tch::manual_seed(seed as i64);
    let mut sup = Encoder::random(
        base.resnet(&input),
        input.clone(),
        budget.image_size,
        Device::Cpu,
    );
    let report = train_classifier(&mut sup, &task, &scratch, &sup_dir, true)?;
    let seconds = t.elapsed().as_secs_f64();
    let knn = knn_of(&sup, &task)?;
    knn.write_json(&RunDir::new(&sup_dir).knn_json())?;
    rows.push(row("supervised", &report, &knn, seconds, true));
    print_row(rows.last().expect("just pushed"));

    let result = DemoResult {
        seed,
        budget,
        rows,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    crate::formats::atomic_write::write_string(
        &out.join("demo.json"),
        &serde_json::to_string_pretty(&result)?,
    )?;
    let table = markdown_table(&result);
    crate::formats::atomic_write::write_string(&out.join("demo.md"), &table)?;
    let test_set = format!(
        "{} test images of split {} ({} locations), {} classes; trained on split {} ({} images)",
        task.test.rows.len(),
        task.test_split,
        task.per_location_count(),
        task.classes.len(),
        task.train_split,
        task.train.rows.len()
    );
    let comparison = out.join("report.html");
    let results = crate::report::ExtraTable {
        title: "Results".into(),
        headers: TABLE_HEADERS.map(String::from).to_vec(),
        rows: result.rows.iter().map(table_cells).collect(),
        caption: format!(
            "Seed {seed}; {test_set}. Baselines: random init, geo-location learning and supervised training, with the pretraining's epochs and images."
        ),
    };
    crate::report::write_comparison_report(&run_dirs, &comparison, Some(&results))?;
    println!("\n{test_set}\n");
    println!("{table}");
    println!(
        "total {:.0} s; tables in {} and {}; reports: {} and report.html in each pretrain-* folder",
        result.total_seconds,
        out.join("demo.md").display(),
        out.join("demo.json").display(),
        comparison.display()
    );
    Ok(result)
}

fn print_row(r: &DemoRow) {
    println!(
        "{}: probe top-1 {:.1}%, macro F1 {:.3}, per-location top-1 {:.1}%, kNN top-1 {:.1}% ({:.0} s)",
        r.method,
        100.0 * r.probe_top1,
        r.probe_macro_f1,
        100.0 * r.probe_per_location_top1,
        100.0 * r.knn_top1,
        r.train_seconds
    );
}

/// The columns of the demo table.
pub const TABLE_HEADERS: [&str; 6] = [
    "method",
    "probe top-1",
    "macro F1",
    "per-location top-1",
    "kNN top-1",
    "train time",
];

/// One row of the demo table as text, in the order of [`TABLE_HEADERS`].
pub fn table_cells(r: &DemoRow) -> Vec<String> {
    vec![
        format!(
            "{}{}",
            r.method,
            if r.end_to_end {
                " (own classifier)"
            } else {
                ""
            }
        ),
        format!("{:.1}%", 100.0 * r.probe_top1),
        format!("{:.3}", r.probe_macro_f1),
        format!("{:.1}%", 100.0 * r.probe_per_location_top1),
        format!("{:.1}%", 100.0 * r.knn_top1),
        format!("{:.0} s", r.train_seconds),
    ]
}

/// The demo table in Markdown.
pub fn markdown_table(result: &DemoResult) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        TABLE_HEADERS.join(" | "),
        "---|".repeat(TABLE_HEADERS.len())
    );
    for r in &result.rows {
        s.push_str(&format!("| {} |\n", table_cells(r).join(" | ")));
    }
    s
}
