//! `pretrain`: flags over the run config.

use std::path::PathBuf;

use clap::Args;

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
    #[arg(long, value_parser = super::choice::<crate::train::Method>())]
    pub method: Option<crate::train::Method>,
    /// Rows to train on: train, val, test or all. [default: train]
    #[arg(long)]
    pub split: Option<String>,
    /// [default: resnet50]
    #[arg(long, value_parser = super::choice::<crate::model::Arch>())]
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
    #[arg(long, value_parser = super::choice::<crate::data::loader::SampleBy>())]
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
    #[arg(long, value_parser = super::choice::<crate::data::loader::BadImagePolicy>())]
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

pub(super) fn pretrain_cmd(a: &PretrainArgs) -> anyhow::Result<()> {
    let config = a.resolve()?;
    let options = crate::train::RunOptions {
        resume: a.resume,
        stop_after: a.stop_after,
        quiet: false,
    };
    let monitor: &crate::train::BuildMonitor = &crate::eval::knn::KnnMonitor::build;
    let outcome = crate::train::pretrain(&config, &a.out, &options, Some(monitor))?;
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
