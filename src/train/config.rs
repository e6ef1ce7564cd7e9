//! The pretraining configuration: every hyperparameter, with the paper's
//! defaults. It is read from a TOML file (`--config run.toml`, any subset of
//! keys), overridden by command-line flags, and saved resolved as
//! `RUN_DIR/config.toml`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::data::augment::AugConfig;
use crate::data::decode::DecodeLimits;
use crate::data::loader::{BadImagePolicy, LoaderConfig, PairMode, SampleBy};
use crate::model::{Arch, MocoConfig, ResNetConfig};

use super::schedule::LrSchedule;

/// The four variants of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MoCo-v2: two augmentations of one image.
    Moco,
    /// MoCo-v2 + temporal positives.
    MocoTp,
    /// MoCo-v2 + geo-location head.
    MocoGeo,
    /// MoCo-v2 + temporal positives + geo-location head.
    MocoTpGeo,
}

impl Method {
    pub fn temporal(self) -> bool {
        matches!(self, Method::MocoTp | Method::MocoTpGeo)
    }
    pub fn geo(self) -> bool {
        matches!(self, Method::MocoGeo | Method::MocoTpGeo)
    }
    /// The name on the command line (`moco-tp-geo`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Moco => "moco",
            Method::MocoTp => "moco-tp",
            Method::MocoGeo => "moco-geo",
            Method::MocoTpGeo => "moco-tp-geo",
        }
    }
}

impl crate::settings::Choice for Method {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            Method::Moco,
            "moco",
            "MoCo-v2: two augmentations of one image",
        ),
        (Method::MocoTp, "moco-tp", "MoCo-v2 + temporal positives"),
        (Method::MocoGeo, "moco-geo", "MoCo-v2 + geo-location head"),
        (
            Method::MocoTpGeo,
            "moco-tp-geo",
            "MoCo-v2 + temporal positives + geo-location head",
        ),
    ];
}
crate::settings::choice_by_name!(Method);

/// The settings a resumed run may change (config keys; the flag is the key
/// with dashes): where and how fast it runs (device, threads, layout,
/// prefetch), how long (epochs: the cosine then decays over the new count,
/// as MoCo's `--resume` with a new `--epochs`), what it monitors, how it
/// treats unreadable images and how often it saves, and where the manifest
/// lies (data moved; its training rows are checked separately). Every other
/// key defines the run (model, objective, optimiser, schedule, data
/// pipeline, seed): changing one would make the steps after the checkpoint
/// belong to a different run, so `--resume` refuses it.
pub const CHANGEABLE_ON_RESUME: [&str; 16] = [
    "manifest",
    "epochs",
    "device",
    "threads",
    "channels_last",
    "prefetch",
    "on_bad_image",
    "max_bad_fraction",
    "checkpoint_every",
    "checkpoint_every_steps",
    "checkpoint_every_minutes",
    "knn_every",
    "knn_k",
    "knn_t",
    "knn_train_split",
    "knn_test_split",
];

/// One setting whose value differs between a checkpoint and a resume.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingChange {
    /// The config key (`batch_size`), or a description for what is not a
    /// key (`geo classes`).
    pub key: String,
    /// The checkpoint's value.
    pub old: String,
    /// The requested value.
    pub new: String,
}

impl std::fmt::Display for SettingChange {
    /// `--batch-size: 8 -> 16` for a config key, `geo classes: 3 -> 5` else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.contains(' ') {
            write!(f, "{}: {} -> {}", self.key, self.old, self.new)
        } else {
            write!(
                f,
                "--{}: {} -> {}",
                self.key.replace('_', "-"),
                self.old,
                self.new
            )
        }
    }
}

/// How a requested config differs from a checkpoint's, split by
/// [`CHANGEABLE_ON_RESUME`].
#[derive(Debug, Default)]
pub struct ResumeDiff {
    /// Differences in settings that define the run: `--resume` refuses them.
    pub refused: Vec<SettingChange>,
    /// Differences in settings that may change; recorded.
    pub allowed: Vec<SettingChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub manifest: PathBuf,
    pub method: Method,
    /// Rows used for pretraining: this split, or every row when "all".
    pub split: String,
    pub arch: Arch,
    pub width: i64,
    pub small_input: bool,
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate for batch 256; the run uses lr x batch / 256.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub cos: bool,
    pub cos_per_step: bool,
    pub schedule: Vec<usize>,
    pub warmup_epochs: usize,
    pub moco_dim: i64,
    pub moco_k: i64,
    pub moco_m: f64,
    pub moco_t: f64,
    pub bn_groups: i64,
    pub alpha: f64,
    pub beta: f64,
    pub image_size: u32,
    /// Resize + CenterCrop side before the random crop; 0 means 2 x image_size.
    pub pre_size: u32,
    pub crop_min_scale: f64,
    pub sample_by: SampleBy,
    pub seed: u64,
    pub device: String,
    /// libtorch intra-op threads; 0 keeps libtorch's default.
    pub threads: usize,
    /// bf16 autocast of the forward passes (PyTorch's torch.autocast).
    pub amp: bool,
    /// Channels-last (NHWC) weights and inputs for the convolutions.
    pub channels_last: bool,
    pub prefetch: usize,
    /// Unreadable images: replace and report (skip) or stop (fail).
    pub on_bad_image: BadImagePolicy,
    /// With skip: stop once more than this fraction of the images is bad.
    pub max_bad_fraction: f64,
    /// Checkpoint every N epochs (and at the end).
    pub checkpoint_every: usize,
    /// Also checkpoint mid-epoch every N optimiser steps (0: never), so that
    /// a SIGKILL loses at most N steps.
    pub checkpoint_every_steps: u64,
    /// Also checkpoint mid-epoch once this many minutes have passed since
    /// the last checkpoint of this invocation (0: never); bounds the work a
    /// SIGKILL (pre-emption, a scheduler's hard kill) loses in wall-clock.
    pub checkpoint_every_minutes: f64,
    /// Weighted-kNN top-1 of the query encoder every N epochs (0: never),
    /// on the manifest's labels: bank `knn_train_split`, tested on
    /// `knn_test_split`; logged to the metrics.
    pub knn_every: usize,
    pub knn_k: usize,
    pub knn_t: f64,
    pub knn_train_split: String,
    pub knn_test_split: String,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            manifest: PathBuf::new(),
            method: Method::MocoTpGeo,
            split: "train".into(),
            arch: Arch::Resnet50,
            width: 64,
            small_input: false,
            epochs: 200,
            batch_size: 256,
            lr: 0.03,
            momentum: 0.9,
            weight_decay: 1e-4,
            cos: true,
            cos_per_step: false,
            schedule: vec![120, 160],
            warmup_epochs: 0,
            moco_dim: 128,
            moco_k: 65536,
            moco_m: 0.999,
            moco_t: 0.02,
            bn_groups: 4,
            alpha: 1.0,
            beta: 1.0,
            image_size: 224,
            pre_size: 0,
            crop_min_scale: 0.2,
            sample_by: SampleBy::Image,
            seed: 0,
            device: "auto".into(),
            threads: 0,
            amp: false,
            channels_last: false,
            prefetch: 4,
            on_bad_image: BadImagePolicy::Skip,
            max_bad_fraction: 0.01,
            checkpoint_every: 10,
            checkpoint_every_steps: 0,
            checkpoint_every_minutes: 30.0,
            knn_every: 0,
            knn_k: 20,
            knn_t: 0.07,
            knn_train_split: "train".into(),
            knn_test_split: "val".into(),
        }
    }
}

impl PretrainConfig {
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// `RUN_DIR/config.toml`, with its manifest found by [`Self::manifest_in`].
    pub fn from_run_dir(run_dir: &Path) -> anyhow::Result<Self> {
        let mut c = Self::from_toml_file(&run_dir.join("config.toml"))?;
        c.manifest = c.manifest_in(run_dir);
        Ok(c)
    }

    /// The manifest of a run whose config lies in `run_dir`: the path as
    /// recorded when it is absolute (what `pretrain` records), else relative
    /// to the run folder when a file is there (a hand-written config, or a
    /// run folder moved together with its data), else as written: relative
    /// to the working directory, as geossl recorded it before.
    pub fn manifest_in(&self, run_dir: &Path) -> PathBuf {
        if self.manifest.is_absolute() || self.manifest.as_os_str().is_empty() {
            return self.manifest.clone();
        }
        let beside = run_dir.join(&self.manifest);
        if beside.is_file() {
            beside
        } else {
            self.manifest.clone()
        }
    }

    /// Every setting in which `self` (the requested run) differs from
    /// `checkpoint` (the config a checkpoint was trained with).
    pub fn resume_diff(&self, checkpoint: &PretrainConfig) -> anyhow::Result<ResumeDiff> {
        let new = toml::Table::try_from(self)?;
        let old = toml::Table::try_from(checkpoint)?;
        let show = |v: Option<&toml::Value>| match v {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "(unset)".to_string(),
        };
        let mut diff = ResumeDiff::default();
        for (key, value) in &new {
            let before = old.get(key);
            if before == Some(value) {
                continue;
            }
            let change = SettingChange {
                key: key.clone(),
                old: show(before),
                new: show(Some(value)),
            };
            if CHANGEABLE_ON_RESUME.contains(&key.as_str()) {
                diff.allowed.push(change);
            } else {
                diff.refused.push(change);
            }
        }
        Ok(diff)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.epochs > 0, "epochs must be at least 1");
        anyhow::ensure!(self.batch_size > 0, "batch-size must be at least 1");
        anyhow::ensure!(
            self.moco_k > 0 && self.moco_k % self.batch_size as i64 == 0,
            "moco-k (queue size) {} must be a positive multiple of batch-size {}",
            self.moco_k,
            self.batch_size
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.moco_m),
            "moco-m must be in [0, 1)"
        );
        anyhow::ensure!(self.moco_t > 0.0, "moco-t must be positive");
        anyhow::ensure!(
            self.crop_min_scale > 0.0 && self.crop_min_scale <= 1.0,
            "crop-min-scale must be in (0, 1]"
        );
        anyhow::ensure!(self.width > 0, "width must be positive");
        crate::data::augment::check_image_size(self.image_size)?;
        if self.knn_every > 0 {
            anyhow::ensure!(self.knn_k >= 1, "knn-k must be at least 1");
            anyhow::ensure!(
                self.knn_t > 0.0 && self.knn_t.is_finite(),
                "knn-t must be positive and finite, got {}",
                self.knn_t
            );
        }
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.max_bad_fraction),
            "max-bad-fraction must be in [0, 1]"
        );
        anyhow::ensure!(
            self.checkpoint_every > 0,
            "checkpoint-every must be at least 1"
        );
        anyhow::ensure!(
            self.checkpoint_every_minutes >= 0.0 && self.checkpoint_every_minutes.is_finite(),
            "checkpoint-every-minutes must be 0 (never) or positive"
        );
        Ok(())
    }

    pub fn resnet(&self) -> ResNetConfig {
        ResNetConfig {
            arch: self.arch,
            width: self.width,
            small_input: self.small_input,
        }
    }

    pub fn moco(&self, geo_classes: Option<i64>) -> MocoConfig {
        MocoConfig {
            dim: self.moco_dim,
            queue_size: self.moco_k,
            momentum: self.moco_m,
            temperature: self.moco_t,
            bn_groups: self.bn_groups,
            geo_classes,
            alpha: self.alpha,
            beta: self.beta,
        }
    }

    pub fn aug(&self) -> AugConfig {
        let mut a = AugConfig::aug_plus_pre(self.image_size, self.pre_size);
        a.scale = (self.crop_min_scale, 1.0);
        a
    }

    /// The pair loader of the run: its batch, aug+, pairing (temporal
    /// positives or two crops of one image), sampling, seed and labels.
    pub fn loader(&self, pin_memory: bool) -> LoaderConfig {
        LoaderConfig {
            batch: self.batch_size,
            aug: self.aug(),
            pairs: if self.method.temporal() {
                PairMode::Temporal
            } else {
                PairMode::SameImage
            },
            sample_by: self.sample_by,
            seed: self.seed,
            prefetch: self.prefetch,
            decode: DecodeLimits::default(),
            geo_labels: self.method.geo(),
            pin_memory,
            on_bad_image: self.on_bad_image,
        }
    }

    /// The run's learning rate: lr x batch / 256 (linear scaling).
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            base_lr: self.lr * self.batch_size as f64 / 256.0,
            epochs: self.epochs,
            cosine: self.cos,
            per_step: self.cos_per_step,
            milestones: self.schedule.clone(),
            warmup_epochs: self.warmup_epochs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_paper_and_round_trip_through_toml() {
        let c = PretrainConfig::default();
        assert_eq!(
            (c.moco_k, c.moco_m, c.moco_t, c.moco_dim),
            (65536, 0.999, 0.02, 128)
        );
        assert_eq!(
            (c.epochs, c.batch_size, c.lr, c.weight_decay),
            (200, 256, 0.03, 1e-4)
        );
        assert!((c.schedule().base_lr - 0.03).abs() < 1e-12);
        let text = c.to_toml().unwrap();
        let back: PretrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: PretrainConfig =
            toml::from_str("method = \"moco-tp\"\nbatch_size = 128\n").unwrap();
        assert_eq!(partial.method, Method::MocoTp);
        assert!((partial.schedule().base_lr - 0.015).abs() < 1e-12);
        assert!(
            toml::from_str::<PretrainConfig>("batch_sise = 3").is_err(),
            "typos are errors"
        );
    }

    #[test]
    fn the_four_methods() {
        let m = [
            Method::Moco,
            Method::MocoTp,
            Method::MocoGeo,
            Method::MocoTpGeo,
        ];
        assert_eq!(m.map(Method::temporal), [false, true, false, true]);
        assert_eq!(m.map(Method::geo), [false, false, true, true]);
        let names = m.map(crate::settings::choice_name);
        assert_eq!(names, ["moco", "moco-tp", "moco-geo", "moco-tp-geo"]);
        assert_eq!("moco-geo".parse(), Ok(Method::MocoGeo));
        assert_eq!(
            m.map(Method::name),
            ["moco", "moco-tp", "moco-geo", "moco-tp-geo"]
        );
    }

    #[test]
    fn resume_refuses_what_defines_the_run_and_allows_the_rest() {
        let old = PretrainConfig::default();
        let new = PretrainConfig {
            batch_size: 128,
            moco_t: 0.2,
            method: Method::MocoTp,
            epochs: 300,
            threads: 4,
            checkpoint_every_minutes: 5.0,
            ..old.clone()
        };
        let diff = new.resume_diff(&old).unwrap();
        let shown = |v: &[SettingChange]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shown(&diff.refused),
            [
                "--batch-size: 256 -> 128",
                "--method: moco-tp-geo -> moco-tp",
                "--moco-t: 0.02 -> 0.2"
            ]
        );
        assert_eq!(
            shown(&diff.allowed),
            [
                "--checkpoint-every-minutes: 30.0 -> 5.0",
                "--epochs: 200 -> 300",
                "--threads: 0 -> 4"
            ]
        );
        assert!(old.resume_diff(&old).unwrap().refused.is_empty());
        // Every changeable key is a real key, so a renamed field cannot
        // silently become fixed.
        let keys = toml::Table::try_from(&old).unwrap();
        for k in CHANGEABLE_ON_RESUME {
            assert!(keys.contains_key(k), "{k}");
        }
    }

    #[test]
    fn the_manifest_is_found_from_any_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("data")).unwrap();
        std::fs::write(run.join("data/m.csv"), "path\n").unwrap();
        let with = |m: &str| PretrainConfig {
            manifest: m.into(),
            ..Default::default()
        };
        // Absolute: as recorded.
        let abs = run.join("data/m.csv");
        assert_eq!(with(abs.to_str().unwrap()).manifest_in(&run), abs);
        // Relative to the run folder when the file is there.
        assert_eq!(with("data/m.csv").manifest_in(&run), abs);
        // Else as written (older run folders, relative to where they ran).
        assert_eq!(
            with("elsewhere/m.csv").manifest_in(&run),
            PathBuf::from("elsewhere/m.csv")
        );
        std::fs::write(
            run.join("config.toml"),
            with("data/m.csv").to_toml().unwrap(),
        )
        .unwrap();
        assert_eq!(PretrainConfig::from_run_dir(&run).unwrap().manifest, abs);
    }

    #[test]
    fn validation_messages() {
        let mut c = PretrainConfig {
            batch_size: 100,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "moco-k (queue size) 65536 must be a positive multiple of batch-size 100"
        );
        c.batch_size = 256;
        assert!(c.validate().is_ok());
        // Every command's input-side rule, and the kNN monitor's settings
        // when it runs (checked before any epoch, not at its first use).
        let err = |c: PretrainConfig| c.validate().unwrap_err().to_string();
        let monitored = PretrainConfig {
            knn_every: 2,
            ..c.clone()
        };
        assert_eq!(
            err(PretrainConfig {
                image_size: 7,
                ..c.clone()
            }),
            "image-size must be at least 8 pixels, got 7"
        );
        assert_eq!(
            err(PretrainConfig {
                knn_k: 0,
                ..monitored.clone()
            }),
            "knn-k must be at least 1"
        );
        assert_eq!(
            err(PretrainConfig {
                knn_t: 0.0,
                ..monitored.clone()
            }),
            "knn-t must be positive and finite, got 0"
        );
        assert!(
            PretrainConfig { knn_k: 0, ..c }.validate().is_ok(),
            "no monitor"
        );
    }
}
