//! `probe`, `finetune`, `knn` and `embed`: the evaluation commands.

use std::path::PathBuf;

use clap::Args;

use crate::data::Manifest;
use crate::train::RunDir;

/// What is evaluated, on which data.
#[derive(Args, Debug)]
pub struct EvalData {
    /// A pretraining run folder (its latest checkpoint), a checkpoint folder, a classifier folder from `finetune`, or a backbone file (.pth, .pth.tar, .pt or .safetensors: a torchvision, timm or torchgeo ResNet state dict, read at --image-size, default 224).
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
    #[arg(long, value_parser = super::choice::<crate::eval::Target>(), default_value = "label")]
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
    #[arg(long, value_parser = super::choice::<crate::data::loader::BadImagePolicy>(), default_value = "skip")]
    pub on_bad_image: crate::data::loader::BadImagePolicy,
    #[command(flatten)]
    pub read: ImageReading,
}

/// Where and how the images are read.
#[derive(Args, Debug, Clone)]
pub struct ImageReading {
    /// Read the images from this pack (`geossl pack`) instead of the manifest's files.
    #[arg(long, value_name = "DIR")]
    pub packed: Option<PathBuf>,
    /// JPEG decoding: auto (DCT-domain downscaling to the smallest scale that keeps the crop at least the input size, only the crop's blocks) or full (every pixel).
    #[arg(long, value_parser = super::choice::<crate::data::decode::DecodeScale>(), default_value = "auto")]
    pub decode_scale: crate::data::decode::DecodeScale,
}

impl ImageReading {
    /// The source of `manifest`'s images ([`crate::data::source::ImageSource::open`]).
    pub fn source(&self, manifest: &Manifest) -> anyhow::Result<crate::data::source::ImageSource> {
        crate::data::source::ImageSource::open(self.packed.as_deref(), manifest)
    }

    pub fn decode(&self) -> crate::data::decode::DecodeOptions {
        crate::data::decode::DecodeOptions {
            scale: self.decode_scale,
            ..Default::default()
        }
    }
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
        task.source = self.read.source(&task.manifest)?;
        task.decode = self.read.decode();
        Ok(task)
    }

    /// `--out`, or the report `in_folder` names in the checkpoint folder;
    /// for a backbone file `NAME.pth`, `NAME.<its file name>` beside it
    /// (`NAME.probe.json`), since a file has no folder of its own.
    fn report_path(&self, out: &Option<PathBuf>, in_folder: fn(&RunDir) -> PathBuf) -> PathBuf {
        if let Some(out) = out {
            return out.clone();
        }
        let in_run = in_folder(&RunDir::new(&self.checkpoint));
        let stem = crate::train::encoder_source::backbone_stem(&self.checkpoint)
            .filter(|_| self.checkpoint.is_file());
        match (stem, in_run.file_name()) {
            (Some(stem), Some(name)) => self
                .checkpoint
                .with_file_name(format!("{stem}.{}", name.to_string_lossy())),
            _ => in_run,
        }
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
    /// Report JSON [default: probe.json in the checkpoint folder; NAME.probe.json beside a backbone file NAME.pth].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `--init` is `--checkpoint` under the name that says what it is here:
/// where the weights start (e.g. torchvision's supervised ImageNet
/// `resnet50` file, the paper's ImageNet-init baseline). One of the two.
#[derive(Args, Debug)]
#[command(mut_arg("checkpoint", |a| a
    .visible_alias("init")
    .value_name("CHECKPOINT|FILE")
    .help("Where the weights start: a pretraining run folder (its latest checkpoint), a checkpoint folder, a classifier folder from `finetune`, or a backbone file (.pth, .pth.tar, .pt or .safetensors: a torchvision, timm or torchgeo ResNet state dict, read at --image-size, default 224; --init FILE says it)")))]
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
    #[arg(long, value_parser = super::choice::<crate::eval::finetune::TrainView>(), default_value = "random-crop")]
    pub view: crate::eval::finetune::TrainView,
    /// With --from-scratch: bands read as input channels (rgb, all, 4,3,2 or B04,B03,B02) [default: --checkpoint's].
    #[arg(long, value_name = "BANDS")]
    pub bands: Option<crate::data::bands::BandSelection>,
    /// With --from-scratch: stored values to [0, 1] (auto, stretch[:P], scale:D[,D...] or stats) [default: --checkpoint's].
    #[arg(long, value_name = "R")]
    pub radiometry: Option<crate::data::bands::Radiometry>,
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
    /// Report JSON [default: knn.json in the checkpoint folder; NAME.knn.json beside a backbone file NAME.pth].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A pretraining run folder (its latest checkpoint), a checkpoint folder, a classifier folder from `finetune`, or a torchvision/timm backbone file (.pth, .safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The rows to embed (a manifest CSV).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output .npy (float32, rows x features; the rows go to the .csv beside it), or .parquet with --format parquet.
    #[arg(long)]
    pub out: PathBuf,
    /// The output's layout.
    #[arg(long, value_parser = super::choice::<crate::eval::embed::EmbedFormat>(), default_value = "npy")]
    pub format: crate::eval::embed::EmbedFormat,
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
    #[arg(long, value_parser = super::choice::<crate::data::loader::BadImagePolicy>(), default_value = "skip")]
    pub on_bad_image: crate::data::loader::BadImagePolicy,
    #[command(flatten)]
    pub read: ImageReading,
}

pub(super) fn probe_cmd(a: &ProbeArgs) -> anyhow::Result<()> {
    let encoder = crate::eval::Encoder::load(&a.data.checkpoint, a.data.device()?)?;
    say_input(&encoder);
    let task = a.data.task(None)?;
    task.source
        .warn_if_smaller(a.data.image_size.unwrap_or(encoder.image_size));
    task.source.check_input(&encoder.input)?;
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
    let path = a.data.report_path(&a.out, RunDir::probe_json);
    // The linear layer's N(0, 0.01) initialisation draws from libtorch's
    // generator: seeded, a probe is reproducible.
    tch::manual_seed(a.data.seed as i64);
    let outcome = crate::eval::probe::linear_probe_to(&encoder, &task, &config, false, &path)?;
    println!(
        "{}
wrote {}",
        outcome.report,
        path.display()
    );
    Ok(())
}

pub(super) fn finetune_cmd(a: &FinetuneArgs) -> anyhow::Result<()> {
    let device = a.data.device()?;
    let mut encoder = crate::eval::Encoder::load(&a.data.checkpoint, device)?;
    if a.from_scratch {
        let input = scratch_input(a, &encoder.input)?;
        encoder = crate::eval::Encoder::random(
            encoder.backbone.config,
            input,
            encoder.image_size,
            device,
        );
    } else {
        anyhow::ensure!(
            a.bands.is_none() && a.radiometry.is_none(),
            "--bands and --radiometry apply to --from-scratch only: a pretrained encoder reads its images as it was trained ({})",
            crate::train::config::input_note(&encoder.input)
                .unwrap_or_else(|| "RGB".to_string())
        );
    }
    say_input(&encoder);
    let task = a.data.task(None)?;
    task.source
        .warn_if_smaller(a.data.image_size.unwrap_or(encoder.image_size));
    task.source.check_input(&encoder.input)?;
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

/// The input of a from-scratch classifier: `--bands` / `--radiometry`
/// resolved against the manifest (and its band statistics), each taking
/// the checkpoint's when not given; the checkpoint's input when neither is.
fn scratch_input(
    a: &FinetuneArgs,
    checkpoint: &crate::data::bands::InputSpec,
) -> anyhow::Result<crate::data::bands::InputSpec> {
    if a.bands.is_none() && a.radiometry.is_none() {
        return Ok(checkpoint.clone());
    }
    let bands = a
        .bands
        .clone()
        .unwrap_or_else(|| checkpoint.selection.clone());
    let radiometry = a
        .radiometry
        .clone()
        .unwrap_or_else(|| checkpoint.radiometry.clone());
    if let Some(dir) = &a.data.read.packed {
        // The pack's input (its values are that input's; the files need
        // not be here).
        return crate::data::pack::packed_input(dir, &bands, &radiometry);
    }
    let manifest = Manifest::read(&a.data.manifest)?;
    let stats = crate::data::bands::BandStats::load_for(&a.data.manifest)?;
    crate::data::bands::InputSpec::resolve(bands, radiometry, &manifest, stats.as_ref())
}

/// Says which bands and radiometry an evaluation reads, when not RGB.
fn say_input(encoder: &crate::eval::Encoder) {
    if let Some(note) = encoder.input_note() {
        println!("{note}");
    }
}

pub(super) fn knn_cmd(a: &KnnArgs) -> anyhow::Result<()> {
    let encoder = crate::eval::Encoder::load(&a.data.checkpoint, a.data.device()?)?;
    say_input(&encoder);
    let task = a.data.task(None)?;
    task.source
        .warn_if_smaller(a.data.image_size.unwrap_or(encoder.image_size));
    task.source.check_input(&encoder.input)?;
    let config = crate::eval::knn::KnnConfig {
        k: a.k,
        temperature: a.t,
    };
    let report = crate::eval::knn::knn_eval_encoder(
        &encoder,
        &task,
        a.data.image_size,
        a.data.batch_size,
        &config,
        false,
    )?;
    let path = a.data.report_path(&a.out, RunDir::knn_json);
    report.write_json(&path)?;
    println!(
        "{report}
wrote {}",
        path.display()
    );
    Ok(())
}

pub(super) fn embed_cmd(a: &EmbedArgs) -> anyhow::Result<()> {
    let device = crate::model::parse_device(&a.device)
        .map_err(anyhow::Error::msg)?
        .resolve()?;
    let encoder = crate::eval::Encoder::load(&a.checkpoint, device)?;
    say_input(&encoder);
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
        source: a.read.source(&manifest)?,
        decode: a.read.decode(),
        format: a.format,
    };
    config.source.check_input(&encoder.input)?;
    config.source.warn_if_smaller(config.image_size);
    let done = crate::eval::embed::embed(&encoder, &manifest, rows, &config, &a.out)?;
    match &done.csv {
        Some(csv) => println!(
            "wrote {} x {} features to {} and their rows to {}",
            done.rows,
            done.dim,
            done.embeddings.display(),
            csv.display()
        ),
        None => println!(
            "wrote {} rows with their {}-d features (column {}) to {}",
            done.rows,
            done.dim,
            crate::eval::embed::EMBEDDING_COLUMN,
            done.embeddings.display()
        ),
    }
    if let Some(list) = &done.skipped_csv {
        println!(
            "left out {} unreadable row(s) of {} (from {}), listed in {}",
            done.skipped.len(),
            if done.csv.is_some() {
                "both files"
            } else {
                "the table"
            },
            manifest.source.display(),
            list.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};

    fn finetune(args: &[&str]) -> Result<std::path::PathBuf, clap::Error> {
        let base = ["geossl", "finetune", "--manifest", "m.csv", "--out", "o"];
        let cli = Cli::try_parse_from(base.iter().chain(args))?;
        match cli.command {
            Command::Finetune(a) => Ok(a.data.checkpoint),
            _ => unreachable!("parsed as finetune"),
        }
    }

    #[test]
    fn finetune_takes_its_start_as_init_or_checkpoint_but_not_both() {
        assert_eq!(
            finetune(&["--init", "r50.pth"]).unwrap(),
            std::path::Path::new("r50.pth")
        );
        assert_eq!(
            finetune(&["--checkpoint", "run"]).unwrap(),
            std::path::Path::new("run")
        );
        let both = finetune(&["--init", "a.pth", "--checkpoint", "run"]).unwrap_err();
        assert_eq!(both.exit_code(), 2, "a usage error");
        assert!(both.to_string().contains("--checkpoint"), "{both}");
        let none = finetune(&[]).unwrap_err().to_string();
        assert!(none.contains("--checkpoint"), "{none}");
        // Only finetune has the alias: a probe's source is no start.
        let probe = ["geossl", "probe", "--init", "a.pth", "--manifest", "m.csv"];
        assert!(Cli::try_parse_from(probe).is_err());
    }

    #[test]
    fn reports_of_a_backbone_file_default_to_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resnet50.pth.tar");
        std::fs::write(&file, b"").unwrap();
        let cli = Cli::try_parse_from([
            "geossl",
            "probe",
            "--checkpoint",
            file.to_str().unwrap(),
            "--manifest",
            "m.csv",
        ])
        .unwrap();
        let Command::Probe(a) = cli.command else {
            unreachable!("parsed as probe")
        };
        let path = a.data.report_path(&None, crate::train::RunDir::probe_json);
        assert_eq!(path, dir.path().join("resnet50.probe.json"));
        let knn = a.data.report_path(&None, crate::train::RunDir::knn_json);
        assert_eq!(knn, dir.path().join("resnet50.knn.json"));
        let run = dir.path().join("run");
        let in_run = super::EvalData {
            checkpoint: run.clone(),
            ..a.data
        };
        assert_eq!(
            in_run.report_path(&None, crate::train::RunDir::probe_json),
            run.join("probe.json")
        );
    }
}
