//! The `geossl` command line: argument parsing and dispatch, nothing more.
//! Each command lives in the library module of its concept.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::data::fmow::{self, FmowOptions};
use crate::data::import_csv;
use crate::data::summary::{CheckOptions, FileCheck, Summary};
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
    /// Linear probe of a frozen encoder (the paper's protocol); prints and writes a report.
    Probe(ProbeArgs),
    /// Train a whole classifier: fine-tune an encoder, or train from scratch (baselines).
    Finetune(FinetuneArgs),
    /// Weighted kNN classification on the encoder's normalised features.
    Knn(KnnArgs),
    /// Write the encoder's pooled feature of every row to .npy, with the rows as CSV beside it.
    Embed(EmbedArgs),
    /// Write an encoder as safetensors with torchvision's names (loads into torchvision.models.resnet*).
    Export(ExportArgs),
    /// Import a PyTorch MoCo/GASSL checkpoint (torch.save zip) as a geossl run; no pickle code is executed.
    Import(ImportArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The method on the built-in dataset: synth, cluster, pretrain the four variants, evaluate them beside the baselines.
    Demo(DemoArgs),
    /// A run as one self-contained HTML page (curves, evaluation, world map of the geo clusters, sample pairs); several runs: a comparison page.
    Report(ReportArgs),
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
    /// Validate this manifest and print its summary; exits non-zero on any
    /// problem (missing or, with --decode, undecodable files; locations
    /// spread over more than --max-spread-km).
    #[arg(long, value_name = "MANIFEST")]
    pub check: Option<PathBuf>,
    /// With --check: print the summary as JSON.
    #[arg(long, requires = "check")]
    pub json: bool,
    /// With --check: decode every image (and crop), in parallel, and list each one that fails.
    #[arg(long, requires = "check", conflicts_with = "no_files")]
    pub decode: bool,
    /// With --check: leave the image files alone (data on remote storage).
    #[arg(long, requires = "check")]
    pub no_files: bool,
    /// With --check: views of one location farther apart than this (great-circle km) are a problem.
    #[arg(long, requires = "check", value_name = "KM",
          default_value_t = crate::data::summary::DEFAULT_MAX_LOCATION_SPREAD_KM)]
    pub max_spread_km: f64,
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
        /// Leave out the rows with problems (each listed) instead of stopping.
        #[arg(long)]
        skip_errors: bool,
        /// Without --split: put this fraction of the LOCATIONS in val, the rest in train (all views of a place in one split).
        #[arg(long, conflicts_with = "split", value_name = "F")]
        val_fraction: Option<f64>,
        /// Seed of --val-fraction's draw (same input and seed, same split).
        #[arg(long, requires = "val_fraction", default_value_t = 0)]
        seed: u64,
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
    /// Leave the rows of locations without lat/lon out of the output (counted) instead of stopping.
    #[arg(long)]
    pub drop_unpositioned: bool,
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
    /// Continue from RUN_DIR/checkpoints/latest with the run's settings (flags may change only epochs, device, threads, monitoring, checkpointing and the manifest's location; others are refused). Without a checkpoint yet (a new folder, or a run killed before its first checkpoint) start from the beginning, so that a scheduler can re-run the same command line.
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
    /// bf16 autocast of the forward passes. [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub amp: Option<bool>,
    /// Channels-last (NHWC) layout for the convolutions. [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub channels_last: Option<bool>,
    /// Unreadable images: replace them by other samples and list them in RUN/bad_images.csv (skip), or stop (fail). [default: skip]
    #[arg(long, value_enum)]
    pub on_bad_image: Option<crate::data::loader::BadImagePolicy>,
    /// With skip: stop once more than this fraction of the manifest's images is unreadable. [default: 0.01]
    #[arg(long)]
    pub max_bad_fraction: Option<f64>,
    /// Batches prepared ahead by the loader. [default: 4]
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Checkpoint every N epochs (and at the end). [default: 10]
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Also checkpoint mid-epoch every N steps, so that a SIGKILL loses at most N steps; 0: never. Only the newest mid-epoch checkpoint is kept. [default: 0]
    #[arg(long, value_name = "N")]
    pub checkpoint_every_steps: Option<u64>,
    /// Also checkpoint mid-epoch once M minutes have passed since the last checkpoint; 0: never. [default: 30]
    #[arg(long, value_name = "M")]
    pub checkpoint_every_minutes: Option<f64>,
    /// kNN top-1 of the query encoder on the manifest's labels every N epochs, into the metrics; 0: never. [default: 0]
    #[arg(long, value_name = "N")]
    pub knn_every: Option<usize>,
    /// Neighbours of --knn-every. [default: 20]
    #[arg(long)]
    pub knn_k: Option<usize>,
    /// Temperature of --knn-every. [default: 0.07]
    #[arg(long)]
    pub knn_t: Option<f64>,
    /// Split whose features form the kNN bank. [default: train]
    #[arg(long)]
    pub knn_train_split: Option<String>,
    /// Split the kNN classifies. [default: val]
    #[arg(long)]
    pub knn_test_split: Option<String>,
}

impl PretrainArgs {
    /// Defaults, then --config (or, on --resume, the run's saved config), then flags.
    pub fn resolve(&self) -> anyhow::Result<crate::train::PretrainConfig> {
        use crate::train::PretrainConfig;
        let saved = self.out.join("config.toml");
        let mut c = match &self.config {
            Some(path) => PretrainConfig::from_toml_file(path)?,
            None if self.resume && saved.is_file() => PretrainConfig::from_run_dir(&self.out)?,
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
            amp,
            channels_last,
            prefetch,
            on_bad_image,
            max_bad_fraction,
            checkpoint_every,
            checkpoint_every_steps,
            checkpoint_every_minutes,
            knn_every,
            knn_k,
            knn_t,
            knn_train_split,
            knn_test_split
        );
        anyhow::ensure!(
            !c.manifest.as_os_str().is_empty(),
            "no manifest: pass --manifest (or set manifest in --config)"
        );
        Ok(c)
    }
}

/// What is evaluated, on which data.
#[derive(Args, Debug)]
pub struct EvalData {
    /// A pretraining run folder (its latest checkpoint), a checkpoint folder, or a classifier folder from `finetune`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Manifest with a label column (or geo_cluster, with --target geo-cluster) and splits.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Rows the classifier learns from (train, val, test or all).
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// Rows it is tested on.
    #[arg(long, default_value = "val")]
    pub test_split: String,
    /// Column holding the classes.
    #[arg(long, value_enum, default_value = "label")]
    pub target: crate::eval::Target,
    /// Input side [default: the size the encoder was trained at].
    #[arg(long)]
    pub image_size: Option<u32>,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Unreadable images: leave their rows out of training and of every figure, listed in the report (skip), or stop (fail).
    #[arg(long, value_enum, default_value = "skip")]
    pub on_bad_image: crate::data::loader::BadImagePolicy,
}

impl EvalData {
    fn device(&self) -> anyhow::Result<tch::Device> {
        crate::model::parse_device(&self.device)
            .map_err(anyhow::Error::msg)?
            .resolve()
    }

    fn task(&self, classes: Option<Vec<String>>) -> anyhow::Result<crate::eval::Task> {
        let mut task = crate::eval::Task::load(
            &self.manifest,
            self.target,
            &self.train_split,
            &self.test_split,
            classes,
        )?;
        task.on_bad_image = self.on_bad_image;
        Ok(task)
    }

    /// `--out`, or `<name>.json` in the checkpoint folder.
    fn report_path(&self, out: &Option<PathBuf>, name: &str) -> PathBuf {
        out.clone()
            .unwrap_or_else(|| self.checkpoint.join(format!("{name}.json")))
    }
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub data: EvalData,
    /// Learning rate (the paper: 1; the MoCo code: 30).
    #[arg(long, default_value_t = 1.0)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Epochs at which lr is multiplied by 0.1.
    #[arg(long, value_delimiter = ',', default_value = "60,80")]
    pub schedule: Vec<usize>,
    /// Extract the features once (centre crop) and train on them every epoch: much faster; exact for square images.
    #[arg(long)]
    pub cache_features: bool,
    /// Standardise each feature with the training set's mean and std first (MAE's BN without affine).
    #[arg(long)]
    pub standardize: bool,
    /// Report JSON [default: probe.json in the checkpoint folder].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub data: EvalData,
    /// Start from a random initialisation (supervised or geo-location-learning baseline) with --checkpoint's architecture.
    #[arg(long)]
    pub from_scratch: bool,
    #[arg(long, default_value_t = 0.001)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Epochs at which lr is multiplied by 0.1 (unless --cos).
    #[arg(long, value_delimiter = ',', default_value = "60,80")]
    pub schedule: Vec<usize>,
    /// Cosine learning-rate decay instead of steps.
    #[arg(long)]
    pub cos: bool,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Training view.
    #[arg(long, value_enum, default_value = "random-crop")]
    pub view: crate::eval::finetune::TrainView,
    /// Output classifier folder: classifier.safetensors (torchvision names), classifier.json, report.json.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct KnnArgs {
    #[command(flatten)]
    pub data: EvalData,
    /// Neighbours that vote.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Temperature of the vote weights exp(similarity / t).
    #[arg(long, default_value_t = 0.07)]
    pub t: f64,
    /// Report JSON [default: knn.json in the checkpoint folder].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A pretraining run folder (its latest checkpoint), a checkpoint folder, or a classifier folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// What to export from a pretraining checkpoint.
    #[arg(long, value_enum, default_value = "backbone")]
    pub part: crate::interop::export::Part,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The checkpoint, e.g. moco_v2_200ep.pth.tar.
    #[arg(long)]
    pub pth: PathBuf,
    /// New run folder that receives checkpoints/epoch-NNNN and config.toml.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output .npy (float32, rows x features); the rows go to the .csv beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Only the rows of this split (train, val, test) [default: every row].
    #[arg(long)]
    pub split: Option<String>,
    /// Input side [default: the size the encoder was trained at].
    #[arg(long)]
    pub image_size: Option<u32>,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Unreadable images: leave their rows out of the .npy and the .csv alike, listed in NAME.skipped.csv (skip), or stop (fail).
    #[arg(long, value_enum, default_value = "skip")]
    pub on_bad_image: crate::data::loader::BadImagePolicy,
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
    /// One full pretraining step (MoCo-v2 + TP + Geo) on random inputs, as
    /// ../shared/bench/torch_reference.py times PyTorch's.
    Step(crate::bench::step::StepBenchConfig),
    /// The input pipeline: decode + two aug+ views + collation of every image
    /// of a manifest, as ../shared/bench/torch_data_reference.py.
    Data(crate::bench::data::DataBenchConfig),
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the dataset and outputs go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// A smaller budget that finishes in a few minutes on 2 CPU cores.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A pretraining run folder; with several, a page comparing them.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output HTML file [default: report.html in the run folder; required for several runs].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Manifest to show instead of the one named in the run's config.toml (e.g. after moving the data).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Query/key pairs to show (0: none).
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
}

pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // tracing-subscriber colours by default, even into a pipe or file.
        .with_ansi(colour_stderr())
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

/// Colour codes on stderr: only on a terminal, and not when `NO_COLOR` is
/// set (<https://no-color.org>).
fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Synth(a) => synth_cmd(&a),
        Command::Index(a) => index_cmd(a),
        Command::Cluster(a) => cluster_cmd(&a),
        Command::Pretrain(a) => pretrain_cmd(&a),
        Command::Probe(a) => probe_cmd(&a),
        Command::Finetune(a) => finetune_cmd(&a),
        Command::Knn(a) => knn_cmd(&a),
        Command::Embed(a) => embed_cmd(&a),
        Command::Export(a) => export_cmd(&a),
        Command::Import(a) => import_cmd(&a),
        Command::Bench(b) => bench_cmd(b),
        Command::Demo(a) => demo_cmd(&a),
        Command::Report(a) => report_cmd(&a),
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

/// Prints a manifest's summary; fails on any problem it finds.
fn check_manifest(path: &Path, json: bool, options: &CheckOptions) -> anyhow::Result<Summary> {
    let m = Manifest::read(path)?;
    let s = Summary::check(&m, options);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{s}");
    }
    if !s.problems.is_empty() {
        anyhow::bail!("{}: {}", path.display(), s.problems.join("; "));
    }
    Ok(s)
}

fn index_cmd(a: IndexArgs) -> anyhow::Result<()> {
    match (a.check, a.source) {
        (Some(path), None) => {
            anyhow::ensure!(
                a.max_spread_km.is_finite() && a.max_spread_km >= 0.0,
                "--max-spread-km must be a non-negative number of kilometres (got {})",
                a.max_spread_km
            );
            let options = CheckOptions {
                files: if a.no_files {
                    FileCheck::None
                } else if a.decode {
                    FileCheck::Decode
                } else {
                    FileCheck::Exists
                },
                max_location_spread_km: a.max_spread_km,
                ..CheckOptions::default()
            };
            check_manifest(&path, a.json, &options).map(|_| ())
        }
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
            let (m, report) = fmow::import(&root, &dir, &options)?;
            for e in &report.skipped {
                eprintln!("skipped: {e}");
            }
            // Boxes outside their image and images without metadata point at
            // damaged metadata: list them (the first few), not only count.
            print_some("box outside its image", &report.boxes_outside);
            let orphans: Vec<String> = report
                .images_without_metadata
                .iter()
                .map(|p| format!("{}: no metadata JSON beside it", p.display()))
                .collect();
            print_some("image without metadata", &orphans);
            m.write(&out)?;
            println!("{} metadata files; {}", report.files, report.left_out());
            println!(
                "wrote {} rows to {}{}",
                m.records.len(),
                out.display(),
                skipped_note(report.skipped.len())
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
                skip_errors,
                val_fraction,
                seed,
            }),
        ) => {
            let split = split
                .map(|s| s.parse::<Split>().map_err(anyhow::Error::msg))
                .transpose()?;
            let images = images
                .canonicalize()
                .with_context(|| format!("{}: cannot open image folder", images.display()))?;
            let dir = parent_dir(&out);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            let options = import_csv::CsvImportOptions {
                split,
                skip_errors,
                manifest_dir: dir,
            };
            let (mut m, skipped) = if format == "fmow" {
                let (m, report) =
                    import_csv::import_fmow_csv(&file, &images, &path_template, &options)?;
                println!(
                    "{} rows; {} without a position (empty polygon; kept); {} rows left out",
                    report.rows, report.rows_without_position, report.skipped_rows
                );
                (m, report.skipped)
            } else {
                let (m, report) = import_csv::import_geoimagenet(&file, &images, &options)?;
                println!(
                    "{} images; {} without a metadata row and {} with empty lat/lon (both kept without position); {} left out with their metadata row; {} metadata rows without an image",
                    report.images,
                    report.images_without_metadata,
                    report.images_without_position,
                    report.images_skipped,
                    report.metadata_without_image
                );
                (m, report.skipped)
            };
            for e in &skipped {
                eprintln!("skipped: {e}");
            }
            if let Some(f) = val_fraction {
                let c = import_csv::assign_splits_by_location(&mut m, f, seed)?;
                println!(
                    "split by location (seed {seed}): {} locations in train, {} in val",
                    c.train_locations, c.val_locations
                );
            }
            m.write(&out)?;
            println!("wrote {} rows to {}", m.records.len(), out.display());
            if m.records.iter().any(|r| r.position.is_none()) {
                println!(
                    "note: rows without a position stop `geossl cluster`; its --drop-unpositioned leaves them out"
                );
            }
            Ok(())
        }
        (None, None) => anyhow::bail!(
            "say what to index: --check MANIFEST, or a source (fmow, csv); see geossl index --help"
        ),
        (Some(_), Some(_)) => unreachable!("clap rejects --check together with a source"),
    }
}

/// Prints the first 10 of `items` (one a line, `what: item`) and how many more.
fn print_some(what: &str, items: &[String]) {
    const SHOWN: usize = 10;
    for i in items.iter().take(SHOWN) {
        println!("{what}: {i}");
    }
    if items.len() > SHOWN {
        println!("... and {} more of: {what}", items.len() - SHOWN);
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
    let unpositioned = crate::geo::locations::unpositioned_locations(&m);
    if !unpositioned.is_empty() {
        if !a.drop_unpositioned {
            let shown: Vec<&str> = unpositioned.iter().take(5).map(String::as_str).collect();
            anyhow::bail!(
                "{}: {} locations have no lat/lon (e.g. {}); geo clustering needs a position for every location: add them, or pass --drop-unpositioned to leave their rows out of --out",
                a.manifest.display(),
                unpositioned.len(),
                shown.join(", ")
            );
        }
        let dropped = crate::geo::locations::drop_unpositioned(&mut m);
        println!(
            "left out {} rows of {} locations without lat/lon",
            dropped,
            unpositioned.len()
        );
        anyhow::ensure!(
            !m.records.is_empty(),
            "{}: no row has a position",
            a.manifest.display()
        );
    }
    let g = assign_geo_clusters(&mut m, a.k, a.seed, !a.unweighted)?;
    m.rebase(&parent_dir(&a.out))?;
    m.write(&a.out)?;
    let centroids = a
        .centroids
        .clone()
        .unwrap_or_else(|| crate::geo::locations::centroids_path(&a.out));
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
        "{} epochs, {} steps done{}; last checkpoint {}",
        outcome.epochs_done,
        outcome.steps_done,
        if outcome.already_finished {
            " (already finished before this invocation)"
        } else {
            ""
        },
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
            let pts = crate::bench::kmeans::geo_points(points, seed);
            if let Some(p) = dump_points {
                crate::bench::kmeans::write_npy(&p, &pts)?;
                println!("wrote {} points to {}", pts.len(), p.display());
            }
            let mut runs = Vec::new();
            for _ in 0..repeat.max(1) {
                runs.push(crate::bench::kmeans::time_kmeans(&pts, k, seed)?);
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
        BenchCommand::Step(config) => {
            let t = crate::bench::step::run(&config)?;
            let c = &config;
            println!(
                "BENCH step arch={} batch={} size={} queue={} device={} amp={} channels_last={} threads={} loss={:.4} median_ms={:.1} min_ms={:.1} pairs_per_s={:.1} peak_rss_mib={:.0}",
                c.arch.name(),
                c.batch,
                c.size,
                c.queue,
                c.device,
                u8::from(c.amp),
                u8::from(c.channels_last),
                tch::get_num_threads(),
                t.last_loss,
                t.median_ms,
                t.min_ms,
                c.batch as f64 * 1e3 / t.median_ms,
                t.peak_rss_mib.unwrap_or(f64::NAN)
            );
            Ok(())
        }
        BenchCommand::Data(config) => {
            let t = crate::bench::data::run(&config)?;
            let c = &config;
            for b in &t.bad {
                tracing::warn!("skipped unreadable image: {}", b.error);
            }
            println!(
                "BENCH data threads={} size={} pre={} batch={} images={} bad_images={} seconds={:.2} pairs_per_s={:.1} pairs_per_s_per_thread={:.1}",
                rayon::current_num_threads(),
                c.size,
                t.pre,
                c.batch,
                t.pairs,
                t.bad.len(),
                t.seconds,
                t.pairs_per_s,
                t.pairs_per_s / rayon::current_num_threads() as f64
            );
            Ok(())
        }
    }
}

fn demo_cmd(a: &DemoArgs) -> anyhow::Result<()> {
    crate::eval::demo::run(&a.out, a.quick, a.seed).map(|_| ())
}

fn report_cmd(a: &ReportArgs) -> anyhow::Result<()> {
    let (page, out) = match a.runs.as_slice() {
        [run] => {
            let options = crate::report::ReportOptions {
                manifest: a.manifest.clone(),
                pairs: a.pairs,
            };
            let out = a.out.clone().unwrap_or_else(|| run.join("report.html"));
            (crate::report::run_report(run, &options)?, out)
        }
        runs => {
            let Some(out) = a.out.clone() else {
                anyhow::bail!("comparing {} runs needs --out FILE.html", runs.len());
            };
            (crate::report::comparison_report(runs, &out, None)?, out)
        }
    };
    crate::atomic_write::write_string(&out, &page)?;
    println!("wrote {} ({} KB)", out.display(), page.len() / 1024);
    Ok(())
}

fn probe_cmd(a: &ProbeArgs) -> anyhow::Result<()> {
    let encoder = crate::eval::Encoder::load(&a.data.checkpoint, a.data.device()?)?;
    let task = a.data.task(None)?;
    let config = crate::eval::probe::ProbeConfig {
        lr: a.lr,
        epochs: a.epochs,
        milestones: a.schedule.clone(),
        batch_size: a.data.batch_size,
        image_size: a.data.image_size,
        cache_features: a.cache_features,
        standardize: a.standardize,
        seed: a.data.seed,
        ..Default::default()
    };
    let path = a.data.report_path(&a.out, "probe");
    // TensorBoard scalars beside the report: RUN_DIR/tb/probe.
    let tb =
        crate::tensorboard::log_dir(path.parent().unwrap_or(std::path::Path::new(".")), "probe");
    // The linear layer's N(0, 0.01) initialisation draws from libtorch's
    // generator: seeded, a probe is reproducible.
    tch::manual_seed(a.data.seed as i64);
    let outcome = crate::eval::probe::linear_probe(&encoder, &task, &config, false, Some(&tb))?;
    outcome.report.write_json(&path)?;
    println!(
        "{}
wrote {}",
        outcome.report,
        path.display()
    );
    Ok(())
}

fn finetune_cmd(a: &FinetuneArgs) -> anyhow::Result<()> {
    let device = a.data.device()?;
    let mut encoder = crate::eval::Encoder::load(&a.data.checkpoint, device)?;
    if a.from_scratch {
        encoder = crate::eval::Encoder::random(encoder.backbone.config, encoder.image_size, device);
    }
    let task = a.data.task(None)?;
    let config = crate::eval::finetune::FinetuneConfig {
        lr: a.lr,
        epochs: a.epochs,
        cosine: a.cos,
        milestones: a.schedule.clone(),
        batch_size: a.data.batch_size,
        weight_decay: a.weight_decay,
        view: a.view,
        image_size: a.data.image_size,
        seed: a.data.seed,
        ..Default::default()
    };
    let report =
        crate::eval::finetune::train_classifier(&mut encoder, &task, &config, &a.out, false)?;
    println!(
        "{report}
wrote {}",
        a.out.display()
    );
    Ok(())
}

fn knn_cmd(a: &KnnArgs) -> anyhow::Result<()> {
    let encoder = crate::eval::Encoder::load(&a.data.checkpoint, a.data.device()?)?;
    let task = a.data.task(None)?;
    let config = crate::eval::knn::KnnConfig {
        k: a.k,
        temperature: a.t,
    };
    let size = a.data.image_size.unwrap_or(encoder.image_size);
    let mut report = crate::eval::knn::knn_eval(
        &encoder.backbone,
        encoder.vs.device(),
        &task,
        size,
        a.data.batch_size,
        &config,
        false,
    )?;
    report.encoder = encoder.source.clone();
    let path = a.data.report_path(&a.out, "knn");
    report.write_json(&path)?;
    println!(
        "{report}
wrote {}",
        path.display()
    );
    Ok(())
}

fn export_cmd(a: &ExportArgs) -> anyhow::Result<()> {
    let done = crate::interop::export::export(&a.checkpoint, &a.out, a.part)?;
    println!(
        "wrote {} tensors to {} ({})",
        done.tensors,
        a.out.display(),
        done.metadata
            .iter()
            .filter(|(k, _)| ["part", "method", "arch", "epochs"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn import_cmd(a: &ImportArgs) -> anyhow::Result<()> {
    let done = crate::interop::import::import_moco(&a.pth, &a.out)?;
    println!(
        "imported {} tensors ({}, epoch {}, geo head: {}) into {}{}",
        done.tensors,
        done.arch.name(),
        done.epoch,
        done.geo_classes
            .map_or("none".to_string(), |k| format!("{k} classes")),
        done.checkpoint.display(),
        ignored_note(&done.ignored)
    );
    Ok(())
}

/// BN step counters are expected to be dropped; anything else is named.
fn ignored_note(ignored: &[String]) -> String {
    let (counters, other): (Vec<&String>, Vec<&String>) = ignored
        .iter()
        .partition(|n| n.ends_with("num_batches_tracked"));
    let mut note = String::new();
    if !counters.is_empty() {
        note.push_str(&format!(
            "; dropped {} BN num_batches_tracked counters",
            counters.len()
        ));
    }
    if !other.is_empty() {
        let names: Vec<&str> = other.iter().map(|s| s.as_str()).collect();
        note.push_str(&format!("; ignored {}", names.join(", ")));
    }
    note
}

fn embed_cmd(a: &EmbedArgs) -> anyhow::Result<()> {
    let device = crate::model::parse_device(&a.device)
        .map_err(anyhow::Error::msg)?
        .resolve()?;
    let encoder = crate::eval::Encoder::load(&a.checkpoint, device)?;
    let manifest = Manifest::read(&a.manifest)?;
    let rows = a
        .split
        .as_deref()
        .map(|s| crate::eval::task::split_rows(&manifest, s))
        .transpose()?;
    let config = crate::eval::embed::EmbedConfig {
        image_size: a.image_size.unwrap_or(encoder.image_size),
        batch: a.batch_size,
        on_bad_image: a.on_bad_image,
        quiet: false,
    };
    let done = crate::eval::embed::embed(&encoder, &manifest, rows, &config, &a.out)?;
    println!(
        "wrote {} x {} features to {} and their rows to {}",
        done.rows,
        done.dim,
        done.npy.display(),
        done.csv.display()
    );
    if let Some(list) = &done.skipped_csv {
        println!(
            "left out {} unreadable row(s) of {} (from both files), listed in {}",
            done.skipped.len(),
            manifest.source.display(),
            list.display()
        );
    }
    Ok(())
}

fn info_cmd() -> anyhow::Result<()> {
    println!("geossl {}", env!("CARGO_PKG_VERSION"));
    let cuda_library = match crate::model::torch_ext::load_cuda() {
        Ok(Some(lib)) => lib.display().to_string(),
        Ok(None) => "none (a CPU-only libtorch)".to_string(),
        Err(e) => format!("failed to load: {e}"),
    };
    println!("libtorch CUDA lib  {cuda_library}");
    println!("libtorch threads   {}", tch::get_num_threads());
    println!("CUDA devices       {}", tch::Cuda::device_count());
    println!("cuDNN available    {}", tch::Cuda::cudnn_is_available());
    println!("rayon threads      {}", rayon::current_num_threads());
    Ok(())
}
