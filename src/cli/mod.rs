//! The `geossl` command line: argument parsing and dispatch, nothing more.
//! Each command lives in the library module of its concept.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::data::fmow::{self, FmowOptions};
use crate::data::import_csv;
use crate::data::summary::Summary;
use crate::data::synth::{self, SynthConfig};
use crate::data::{Manifest, Split};
use crate::geo::locations::assign_geo_clusters;

#[derive(Parser, Debug)]
#[command(
    name = "geossl",
    version,
    about = "Geography-aware self-supervised learning on satellite imagery"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate the built-in synthetic geo-temporal dataset (images + manifest.csv).
    Synth(SynthArgs),
    /// Validate and summarise a manifest (--check), or build one from fMoW or CSV metadata.
    Index(IndexArgs),
    /// k-means the manifest's locations on the sphere and write a `geo_cluster` column.
    Cluster(ClusterArgs),
    /// Pretrain an encoder: MoCo-v2, +TP (temporal positives), +Geo (geo-location head), +TP+Geo.
    Pretrain(Box<PretrainArgs>),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The whole pipeline on the built-in dataset: synth, index --check, cluster, pretrain.
    Demo(DemoArgs),
    /// Show the libtorch build, threads and visible CUDA devices.
    Info,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (created); receives images/ and manifest.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of places.
    #[arg(long, default_value_t = 1000)]
    pub locations: usize,
    /// Most views (images over time) of one place.
    #[arg(long, default_value_t = 8)]
    pub max_views: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image format: jpg (quality 90, like fMoW's JPEGs) or png.
    #[arg(long, default_value = "jpg", value_parser = ["jpg", "png"])]
    pub format: String,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IndexArgs {
    /// Validate this manifest and print its summary (no pixels are loaded).
    #[arg(long, value_name = "MANIFEST")]
    pub check: Option<PathBuf>,
    /// With --check: print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub source: Option<IndexSource>,
}

#[derive(Subcommand, Debug)]
pub enum IndexSource {
    /// Scan an fMoW tree ({train,val,test,seq}/<category>/<category>_<loc>/..._rgb.{jpg,json}).
    Fmow {
        /// fMoW root folder.
        root: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Read the _msrgb files instead of _rgb.
        #[arg(long)]
        msrgb: bool,
        /// Keep boxes labelled false_detection.
        #[arg(long)]
        keep_false_detection: bool,
        /// Import what can be read and list the files that cannot.
        #[arg(long)]
        skip_errors: bool,
    },
    /// Import CSV metadata: derived fMoW tables or GeoImageNet.
    Csv {
        /// fmow: columns category, location_id, image_id, timestamp, polygon;
        /// geoimagenet: id, lat, lon, ... with images in <class>/<id>.jpg.
        #[arg(long, value_parser = ["fmow", "geoimagenet"])]
        format: String,
        /// The metadata CSV.
        file: PathBuf,
        /// Folder the images are under.
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Split to record for every row (train, val or test).
        #[arg(long)]
        split: Option<String>,
        /// fmow: where an image lies below --images; placeholders are column names.
        #[arg(long, default_value = import_csv::FMOW_PATH_TEMPLATE)]
        path_template: String,
    },
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    /// Number of geo clusters (the paper uses 100).
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output manifest (may be the input).
    #[arg(long)]
    pub out: PathBuf,
    /// Centroids JSON (default: next to --out, `<stem>.clusters.json`).
    #[arg(long)]
    pub centroids: Option<PathBuf>,
    /// Weight every location alike instead of by its number of images.
    #[arg(long)]
    pub unweighted: bool,
}

/// Flags override `--config`, which overrides the defaults (the paper's).
/// A flag given twice takes its last value, so scripts can append overrides.
#[derive(Args, Debug, Default)]
#[command(args_override_self = true)]
pub struct PretrainArgs {
    /// Manifest with the images (and, for the *-geo methods, a geo_cluster column).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Run folder: config.toml, metrics.jsonl/.csv, checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file with any of the run's settings (keys as in RUN_DIR/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from RUN_DIR/checkpoints/latest.
    #[arg(long)]
    pub resume: bool,
    /// Stop this invocation after N epochs (continue later with --resume).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// [default: moco-tp-geo]
    #[arg(long, value_enum)]
    pub method: Option<crate::train::Method>,
    /// Rows to train on: train, val, test or all. [default: train]
    #[arg(long)]
    pub split: Option<String>,
    /// [default: resnet50]
    #[arg(long, value_enum)]
    pub arch: Option<crate::model::Arch>,
    /// Channels of the first ResNet stage. [default: 64]
    #[arg(long)]
    pub width: Option<i64>,
    /// 3x3 stride-1 stem without max-pool, for small images. [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub small_input: Option<bool>,
    /// [default: 200]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// [default: 256]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate for batch 256, scaled linearly with the batch. [default: 0.03]
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum. [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay, on all parameters as the paper. [default: 0.0001]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Cosine learning-rate decay (else step decay at --schedule). [default: true]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cos: Option<bool>,
    /// Evaluate the cosine every step instead of every epoch. [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cos_per_step: Option<bool>,
    /// Step-decay milestones (epochs), comma separated. [default: 120,160]
    #[arg(long, value_delimiter = ',')]
    pub schedule: Option<Vec<usize>>,
    /// Linear warm-up epochs. [default: 0]
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Projection dimension. [default: 128]
    #[arg(long)]
    pub moco_dim: Option<i64>,
    /// Queue size; a multiple of the batch size. [default: 65536]
    #[arg(long)]
    pub moco_k: Option<i64>,
    /// Key encoder momentum. [default: 0.999]
    #[arg(long)]
    pub moco_m: Option<f64>,
    /// Softmax temperature (0.02 published; 0.07 code default; 0.2 MoCo-v2). [default: 0.02]
    #[arg(long)]
    pub moco_t: Option<f64>,
    /// Shuffle-BN groups (1 disables). [default: 4]
    #[arg(long)]
    pub bn_groups: Option<i64>,
    /// Weight of the InfoNCE loss. [default: 1]
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Weight of the geo loss. [default: 1]
    #[arg(long)]
    pub beta: Option<f64>,
    /// Crop size fed to the network. [default: 224]
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Resize + CenterCrop side before the random crop; 0: twice --image-size. [default: 0]
    #[arg(long)]
    pub pre_size: Option<u32>,
    /// Smallest RandomResizedCrop area (aug+: 0.2; the temporal code: 0.08). [default: 0.2]
    #[arg(long)]
    pub crop_min_scale: Option<f64>,
    /// Iterate over images (as the paper) or locations. [default: image]
    #[arg(long, value_enum)]
    pub sample_by: Option<crate::data::loader::SampleBy>,
    /// [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N. [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch CPU threads; 0 keeps libtorch's default. [default: 0]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Batches prepared ahead by the loader. [default: 4]
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Checkpoint every N epochs (and at the end). [default: 10]
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

impl PretrainArgs {
    /// Defaults, then --config (or, on --resume, the run's saved config), then flags.
    pub fn resolve(&self) -> anyhow::Result<crate::train::PretrainConfig> {
        use crate::train::PretrainConfig;
        let saved = self.out.join("config.toml");
        let mut c = match &self.config {
            Some(path) => PretrainConfig::from_toml_file(path)?,
            None if self.resume && saved.is_file() => PretrainConfig::from_toml_file(&saved)?,
            None => PretrainConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        set!(
            manifest,
            method,
            split,
            arch,
            width,
            small_input,
            epochs,
            batch_size,
            lr,
            momentum,
            weight_decay,
            cos,
            cos_per_step,
            schedule,
            warmup_epochs,
            moco_dim,
            moco_k,
            moco_m,
            moco_t,
            bn_groups,
            alpha,
            beta,
            image_size,
            pre_size,
            crop_min_scale,
            sample_by,
            seed,
            device,
            threads,
            prefetch,
            checkpoint_every
        );
        anyhow::ensure!(
            !c.manifest.as_os_str().is_empty(),
            "no manifest: pass --manifest (or set manifest in --config)"
        );
        Ok(c)
    }
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// k-means on geo-tag-like points (seeding + Lloyd).
    Kmeans {
        #[arg(long, default_value_t = 1_000_000)]
        points: usize,
        #[arg(long, default_value_t = 100)]
        k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Timed repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Also write the points as float64 .npy, e.g. for bench/kmeans_sklearn.py.
        #[arg(long)]
        dump_points: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the dataset and outputs go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// A smaller dataset that finishes in seconds.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Synth(a) => synth_cmd(&a),
        Command::Index(a) => index_cmd(a),
        Command::Cluster(a) => cluster_cmd(&a),
        Command::Pretrain(a) => pretrain_cmd(&a),
        Command::Bench(b) => bench_cmd(b),
        Command::Demo(a) => demo_cmd(&a),
        Command::Info => info_cmd(),
    }
}

fn synth_cmd(a: &SynthArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        locations: a.locations,
        max_views: a.max_views,
        size: a.size,
        seed: a.seed,
        jpeg_quality: if a.format == "png" { 0 } else { 90 },
    };
    let t0 = std::time::Instant::now();
    let m = synth::generate(&a.out, &config)?;
    println!(
        "wrote {} images of {} locations to {} in {:.1} s",
        m.records.len(),
        a.locations,
        m.source.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints a manifest's summary; fails when files are missing.
fn check_manifest(path: &Path, json: bool) -> anyhow::Result<Summary> {
    let m = Manifest::read(path)?;
    let s = Summary::of(&m, true);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{s}");
    }
    if s.missing_files > 0 {
        anyhow::bail!(
            "{}: {} image files are missing",
            path.display(),
            s.missing_files
        );
    }
    Ok(s)
}

fn index_cmd(a: IndexArgs) -> anyhow::Result<()> {
    match (a.check, a.source) {
        (Some(path), None) => check_manifest(&path, a.json).map(|_| ()),
        (
            None,
            Some(IndexSource::Fmow {
                root,
                out,
                msrgb,
                keep_false_detection,
                skip_errors,
            }),
        ) => {
            let options = FmowOptions {
                msrgb,
                keep_false_detection,
                skip_errors,
            };
            let dir = parent_dir(&out);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            let (m, errors) = fmow::import(&root, &dir, &options)?;
            for e in &errors {
                eprintln!("skipped: {e}");
            }
            m.write(&out)?;
            println!(
                "wrote {} rows to {}{}",
                m.records.len(),
                out.display(),
                skipped_note(errors.len())
            );
            Ok(())
        }
        (
            None,
            Some(IndexSource::Csv {
                format,
                file,
                images,
                out,
                split,
                path_template,
            }),
        ) => {
            let split = split
                .map(|s| s.parse::<Split>().map_err(anyhow::Error::msg))
                .transpose()?;
            let images = images
                .canonicalize()
                .with_context(|| format!("{}: cannot open image folder", images.display()))?;
            let m = if format == "fmow" {
                import_csv::import_fmow_csv(&file, &images, &path_template, split)?
            } else {
                let (m, report) = import_csv::import_geoimagenet(&file, &images, split)?;
                println!(
                    "{} images; {} without a metadata row (kept without position); {} metadata rows without an image",
                    report.images, report.images_without_metadata, report.metadata_without_image
                );
                m
            };
            m.write(&out)?;
            println!("wrote {} rows to {}", m.records.len(), out.display());
            Ok(())
        }
        (None, None) => anyhow::bail!(
            "say what to index: --check MANIFEST, or a source (fmow, csv); see geossl index --help"
        ),
        (Some(_), Some(_)) => unreachable!("clap rejects --check together with a source"),
    }
}

fn skipped_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} metadata files skipped, listed above)")
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn cluster_cmd(a: &ClusterArgs) -> anyhow::Result<()> {
    let mut m = Manifest::read(&a.manifest)?;
    let g = assign_geo_clusters(&mut m, a.k, a.seed, !a.unweighted)?;
    m.rebase(&parent_dir(&a.out))?;
    m.write(&a.out)?;
    let centroids = a.centroids.clone().unwrap_or_else(|| {
        let stem = a
            .out
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        parent_dir(&a.out).join(format!("{stem}.clusters.json"))
    });
    crate::atomic_write::write_string(&centroids, &serde_json::to_string_pretty(&g)?)?;
    let sizes: Vec<usize> = g.clusters.iter().map(|c| c.locations).collect();
    println!(
        "{} locations in {} clusters ({} Lloyd iterations{}; locations per cluster {}..{}); wrote {} and {}",
        g.locations,
        g.k,
        g.iterations,
        if g.converged { ", converged" } else { ", NOT converged" },
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
        a.out.display(),
        centroids.display()
    );
    Ok(())
}

fn pretrain_cmd(a: &PretrainArgs) -> anyhow::Result<()> {
    let config = a.resolve()?;
    let options = crate::train::RunOptions {
        resume: a.resume,
        stop_after: a.stop_after,
        quiet: false,
    };
    let outcome = crate::train::pretrain(&config, &a.out, &options)?;
    println!(
        "{} epochs, {} steps done; last checkpoint {}",
        outcome.epochs_done,
        outcome.steps_done,
        outcome
            .last_checkpoint
            .map_or("none".to_string(), |p| p.display().to_string())
    );
    Ok(())
}

fn bench_cmd(b: BenchCommand) -> anyhow::Result<()> {
    match b {
        BenchCommand::Kmeans {
            points,
            k,
            seed,
            repeat,
            dump_points,
        } => {
            let pts = crate::bench::geo_points(points, seed);
            if let Some(p) = dump_points {
                crate::bench::write_npy(&p, &pts)?;
                println!("wrote {} points to {}", pts.len(), p.display());
            }
            let mut runs = Vec::new();
            for _ in 0..repeat.max(1) {
                runs.push(crate::bench::time_kmeans(&pts, k, seed)?);
            }
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let median = &runs[runs.len() / 2];
            println!(
                "BENCH kmeans points={points} k={k} threads={} repeats={} median_s={:.3} min_s={:.3} iterations={} inertia={:.3}",
                rayon::current_num_threads(),
                runs.len(),
                median.seconds,
                runs[0].seconds,
                median.iterations,
                median.inertia
            );
            Ok(())
        }
    }
}

fn demo_cmd(a: &DemoArgs) -> anyhow::Result<()> {
    // Small budgets that show learning on 2 CPU cores; the paper's settings
    // (ResNet-50, 224 px, 200 epochs) are `geossl pretrain`'s defaults.
    let (locations, k, epochs, width) = if a.quick {
        (400, 20, 12, 8)
    } else {
        (2000, 100, 40, 16)
    };
    let data = a.out.join("data");
    println!(
        "== 1/4 synth: {locations} places of the built-in world -> {}",
        data.display()
    );
    synth_cmd(&SynthArgs {
        out: data.clone(),
        locations,
        max_views: 8,
        size: 64,
        seed: a.seed,
        format: "jpg".into(),
    })?;
    let manifest = data.join("manifest.csv");
    println!("\n== 2/4 index --check {}", manifest.display());
    check_manifest(&manifest, false)?;
    let clustered = data.join("manifest_geo.csv");
    println!("\n== 3/4 cluster k={k} -> {}", clustered.display());
    cluster_cmd(&ClusterArgs {
        manifest,
        k,
        seed: a.seed,
        out: clustered.clone(),
        centroids: None,
        unweighted: false,
    })?;

    let run = a.out.join("pretrain-moco-tp-geo");
    if run.exists() {
        // The demo owns this folder; a rerun starts it afresh.
        std::fs::remove_dir_all(&run)
            .with_context(|| format!("{}: cannot clear the previous demo run", run.display()))?;
    }
    let config = crate::train::PretrainConfig {
        manifest: clustered,
        method: crate::train::Method::MocoTpGeo,
        arch: crate::model::Arch::Resnet18,
        width,
        small_input: true,
        image_size: 32,
        epochs,
        batch_size: 32,
        lr: 0.24,
        // Well below the ~1,000 training images, so the queue never holds a
        // query's own key from the previous epoch as a negative.
        moco_k: 256,
        moco_m: 0.99,
        moco_t: 0.2,
        bn_groups: 2,
        crop_min_scale: 0.8,
        seed: a.seed,
        device: "cpu".into(),
        checkpoint_every: epochs,
        ..Default::default()
    };
    println!(
        "\n== 4/4 pretrain moco-tp-geo: ResNet-18 (width {width}, small-input stem), 32 px, {epochs} epochs, batch 32, queue 256, T 0.2 -> {}",
        run.display()
    );
    let options = crate::train::RunOptions {
        resume: false,
        stop_after: None,
        quiet: false,
    };
    let outcome = crate::train::pretrain(&config, &run, &options)?;
    let log = crate::train::metrics::read_epochs(&run)?;
    if let (Some(first), Some(last)) = (log.first(), log.last()) {
        println!(
            "InfoNCE {:.3} -> {:.3}, geo loss {:.3} -> {:.3}, geo accuracy {:.3} -> {:.3} (epoch 1 -> {}); checkpoint {}",
            first.moco_loss,
            last.moco_loss,
            first.geo_loss.unwrap_or(f64::NAN),
            last.geo_loss.unwrap_or(f64::NAN),
            first.geo_acc.unwrap_or(f64::NAN),
            last.geo_acc.unwrap_or(f64::NAN),
            last.epoch,
            outcome.last_checkpoint.map_or("none".into(), |p| p.display().to_string())
        );
    }
    Ok(())
}

fn info_cmd() -> anyhow::Result<()> {
    println!("geossl {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads   {}", tch::get_num_threads());
    println!("CUDA devices       {}", tch::Cuda::device_count());
    println!("cuDNN available    {}", tch::Cuda::cudnn_is_available());
    println!("rayon threads      {}", rayon::current_num_threads());
    Ok(())
}
