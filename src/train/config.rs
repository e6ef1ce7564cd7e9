//! The pretraining configuration: every hyperparameter, with the paper's
//! defaults. It is read from a TOML file (`--config run.toml`, any subset of
//! keys), overridden by command-line flags, and saved resolved as
//! `RUN_DIR/config.toml`.
//!
//! Each default is written once, on its field: [`config_section!`] turns one
//! line per field (doc, name, type, default) into the struct, its `Default`
//! and a description of its fields ([`Settings`]) from which the command line
//! builds its flags and their help. The sections (model, MoCo, optimiser,
//! data, run, monitor) are flattened: `config.toml` stays one flat table with
//! the keys of the fields, and the flags are `--` and the key with dashes.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::data::augment::AugConfig;
use crate::data::bands::{BandSelection, InputSpec, Radiometry};
use crate::data::decode::{DecodeOptions, DecodeScale};
use crate::data::loader::{BadImagePolicy, LoaderConfig, PairMode, SampleBy};
use crate::data::source::ImageSource;
use crate::model::{Arch, MocoConfig, ResNetConfig};
use crate::settings::{self, Choice};

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

/// How a setting takes its value on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// One value (`--lr 0.03`).
    Value,
    /// A boolean: the flag alone means true (`--amp`), or `--amp false`.
    Switch,
    /// A comma-separated list (`--schedule 120,160`).
    List,
    /// A file or folder (`--manifest m.csv`); not empty.
    Path,
    /// One of these names, each with its help (empty: none).
    Choice(Vec<(&'static str, &'static str)>),
}

/// A config field's type as text: how the command line and the help
/// spell its values.
pub trait SettingValue: Sized {
    /// How the flag takes the value.
    fn kind() -> FieldKind {
        FieldKind::Value
    }
    /// The value as the help shows it (`0.0001`, `120,160`, `moco-tp-geo`).
    fn show(&self) -> String;
    /// Parses a command-line value; the error says why it is not one.
    fn parse(text: &str) -> Result<Self, String>;
}

macro_rules! setting_from_str {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            fn show(&self) -> String {
                self.to_string()
            }
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: <$ty as std::str::FromStr>::Err| e.to_string())
            }
        }
    )*};
}
setting_from_str!(i64, u64, usize, f64, String, BandSelection, Radiometry);

impl SettingValue for u32 {
    fn show(&self) -> String {
        self.to_string()
    }
    /// Out of range names the range (`-1 is not in 0..=4294967295`).
    fn parse(text: &str) -> Result<Self, String> {
        let wide: i64 = text
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        u32::try_from(wide).map_err(|_| format!("{wide} is not in 0..={}", u32::MAX))
    }
}

impl SettingValue for bool {
    fn kind() -> FieldKind {
        FieldKind::Switch
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|e: std::str::ParseBoolError| e.to_string())
    }
}

impl SettingValue for PathBuf {
    fn kind() -> FieldKind {
        FieldKind::Path
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a path cannot be empty".to_string());
        }
        Ok(PathBuf::from(text))
    }
}

impl SettingValue for Vec<usize> {
    fn kind() -> FieldKind {
        FieldKind::List
    }
    fn show(&self) -> String {
        let items: Vec<String> = self.iter().map(usize::to_string).collect();
        items.join(",")
    }
    fn parse(text: &str) -> Result<Self, String> {
        text.split(',').map(usize::parse).collect()
    }
}

impl<T: Choice> SettingValue for T {
    fn kind() -> FieldKind {
        FieldKind::Choice(T::CHOICES.iter().map(|&(_, n, h)| (n, h)).collect())
    }
    fn show(&self) -> String {
        settings::choice_name(*self).to_string()
    }
    fn parse(text: &str) -> Result<Self, String> {
        settings::parse_choice(text)
    }
}

/// One field of a config, as the command line presents it.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The config key (`batch_size`); its flag is `--batch-size`.
    pub key: &'static str,
    /// The first paragraph of the field's doc comment, on one line (may be
    /// empty): the flag's help.
    pub help: String,
    /// The name of the flag's value in the help (`N`); `None`: the key in
    /// capitals.
    pub value_name: Option<&'static str>,
    pub kind: FieldKind,
    /// The field's value as the command line spells it.
    pub value: String,
}

impl Field {
    fn new<T: SettingValue>(
        key: &'static str,
        doc: &[&str],
        value_name: Option<&'static str>,
        value: &T,
    ) -> Self {
        let paragraph: Vec<&str> = doc
            .iter()
            .map(|line| line.trim())
            .take_while(|line| !line.is_empty())
            .collect();
        Field {
            key,
            help: paragraph.join(" "),
            value_name,
            kind: T::kind(),
            value: value.show(),
        }
    }
}

/// A config written by [`config_section!`]: its fields by key.
pub trait Settings {
    /// Appends each field (a section's fields in its place), in the order of
    /// `config.toml`.
    fn fields(&self, out: &mut Vec<Field>);
    /// Sets field `key` from its command-line text; `None`: no such key.
    fn set(&mut self, key: &str, text: &str) -> Option<Result<(), String>>;
    /// Sets field `key` from the next value of `map`; `false`: no such key.
    fn set_from<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error>;
}

/// Writes a config struct from one line per field: its doc comment, name,
/// type and default (`=> "N"` after the default names the flag's value in
/// the help), then optionally the sections flattened into it. Emits the
/// struct, `impl Default` and `impl Settings`.
macro_rules! config_section {
    (
        $(#[doc = $struct_doc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr $(=> $value_name:literal)?
            ),* $(,)?
        }
        $(sections {
            $( $(#[doc = $section_doc:literal])* $section:ident : $Section:ty ),* $(,)?
        })?
    ) => {
        $(#[doc = $struct_doc])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $($( $(#[doc = $section_doc])* #[serde(flatten)] pub $section: $Section, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $default, )*
                    $($( $section: Default::default(), )*)?
                }
            }
        }

        impl Settings for $name {
            fn fields(&self, out: &mut Vec<Field>) {
                $( out.push(Field::new(
                    stringify!($field),
                    &[$($doc),*],
                    None $(.or(Some($value_name)))?,
                    &self.$field,
                )); )*
                $($( self.$section.fields(out); )*)?
            }

            fn set(&mut self, key: &str, text: &str) -> Option<Result<(), String>> {
                match key {
                    $( stringify!($field) => {
                        return Some(SettingValue::parse(text).map(|v| self.$field = v));
                    } )*
                    _ => {}
                }
                $($( if let Some(done) = self.$section.set(key, text) {
                    return Some(done);
                } )*)?
                None
            }

            fn set_from<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $( stringify!($field) => {
                        self.$field = map.next_value()?;
                        return Ok(true);
                    } )*
                    _ => {}
                }
                $($( if self.$section.set_from(key, map)? {
                    return Ok(true);
                } )*)?
                Ok(false)
            }
        }
    };
}

/// The settings a resumed run may change (config keys; the flag is the key
/// with dashes): where and how fast it runs (device, threads, layout,
/// prefetch), how long (epochs: the cosine then decays over the new count,
/// as MoCo's `--resume` with a new `--epochs`), what it monitors, how it
/// treats unreadable images and how often it saves, and where the manifest
/// lies (data moved; its training rows are checked separately). Every other
/// key defines the run (model, objective, optimiser, schedule, data
/// pipeline, seed): changing one would make the steps after the checkpoint
/// belong to a different run, so `--resume` refuses it.
pub const CHANGEABLE_ON_RESUME: [&str; 17] = [
    "manifest",
    "packed",
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
    /// `batch_size: 8 -> 16` for a config key, named by [`settings::name`]
    /// (`--batch-size` under the CLI); `geo classes: 3 -> 5` else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.contains(' ') {
            write!(f, "{}: {} -> {}", self.key, self.old, self.new)
        } else {
            let key = settings::name(&self.key);
            write!(f, "{key}: {} -> {}", self.old, self.new)
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

config_section! {
    /// Every hyperparameter of a pretraining run, by concern. Serialised
    /// flat: one key per field, the sections' keys in their place.
    pub struct PretrainConfig {
        /// Manifest with the images (and, for the *-geo methods, a
        /// geo_cluster column).
        manifest: PathBuf = PathBuf::new(),
        method: Method = Method::MocoTpGeo,
        /// Rows to train on: train, val, test or all.
        split: String = "train".into(),
    }
    sections {
        /// The encoder.
        model: ModelConfig,
        /// SGD and its learning-rate schedule.
        optimizer: OptimizerConfig,
        /// The MoCo objective: queue, key encoder, losses.
        moco: MocoSettings,
        /// The augmentation and sampling of the training pairs.
        data: DataConfig,
        /// How the run executes: seed, device, loader, bad images, checkpoints.
        run: RunConfig,
        /// The kNN monitor of the metrics.
        monitor: MonitorConfig,
    }
}

config_section! {
    /// The ResNet encoder.
    pub struct ModelConfig {
        arch: Arch = Arch::Resnet50,
        /// Channels of the first ResNet stage.
        width: i64 = 64,
        /// 3x3 stride-1 stem without max-pool, for small images.
        small_input: bool = false,
        /// Start both encoders' backbones from this file (a torchvision,
        /// timm or torchgeo ResNet state dict, .pth or .safetensors) or from
        /// the query encoder of a run or checkpoint folder (one `geossl
        /// import` made of a MoCo checkpoint included) or a classifier
        /// folder's backbone; the MLP head starts fresh. Empty: a random
        /// initialisation.
        ///
        /// Its arch, width, stem and input channels must be the run's
        /// (--arch, --width, --small-input, --bands); read when the run
        /// starts, not on --resume (the checkpoint holds the weights).
        init: PathBuf = PathBuf::new() => "PATH",
    }
}

config_section! {
    /// SGD with momentum and its learning-rate schedule.
    pub struct OptimizerConfig {
        epochs: usize = 200,
        batch_size: usize = 256,
        /// Learning rate for batch 256, scaled linearly with the batch.
        ///
        /// The run uses lr x batch / 256.
        lr: f64 = 0.03,
        /// SGD momentum.
        momentum: f64 = 0.9,
        /// Weight decay, on all parameters as the paper.
        weight_decay: f64 = 1e-4,
        /// Cosine learning-rate decay (else step decay at --schedule).
        cos: bool = true,
        /// Evaluate the cosine every step instead of every epoch.
        cos_per_step: bool = false,
        /// Step-decay milestones (epochs), comma separated.
        schedule: Vec<usize> = vec![120, 160],
        /// Linear warm-up epochs.
        warmup_epochs: usize = 0,
    }
}

config_section! {
    /// The MoCo objective (the geo head's classes come from the manifest).
    pub struct MocoSettings {
        /// Projection dimension.
        moco_dim: i64 = 128,
        /// Queue size; a multiple of the batch size.
        moco_k: i64 = 65536,
        /// Key encoder momentum.
        moco_m: f64 = 0.999,
        /// Softmax temperature (0.02 published; 0.07 code default; 0.2 MoCo-v2).
        moco_t: f64 = 0.02,
        /// Shuffle-BN groups (1 disables).
        bn_groups: i64 = 4,
        /// Weight of the InfoNCE loss.
        alpha: f64 = 1.0,
        /// Weight of the geo loss.
        beta: f64 = 1.0,
    }
}

config_section! {
    /// The augmentation (aug+) and sampling of the training pairs.
    pub struct DataConfig {
        /// Crop size fed to the network.
        image_size: u32 = 224,
        /// Resize + CenterCrop side before the random crop; 0: twice
        /// --image-size.
        pre_size: u32 = 0,
        /// Smallest RandomResizedCrop area (aug+: 0.2; the temporal code: 0.08).
        crop_min_scale: f64 = 0.2,
        /// Iterate over images (as the paper) or locations.
        sample_by: SampleBy = SampleBy::Image,
        /// JPEG decoding: auto (DCT-domain downscaling to the smallest
        /// scale that keeps the crop at least --pre-size, only the crop's
        /// blocks) or full (every pixel, as the paper's code).
        decode_scale: DecodeScale = DecodeScale::Auto,
        /// Bands read as input channels: rgb, all, 4,3,2 (GDAL band
        /// numbers) or B04,B03,B02 (band descriptions).
        ///
        /// conv1 takes one channel per band; the resolved bands are recorded
        /// in the checkpoints and the export.
        bands: BandSelection = BandSelection::Rgb => "BANDS",
        /// Stored values to [0, 1]: auto, stretch[:P], scale:D[,D...] or
        /// stats (from `geossl index stats`).
        ///
        /// auto: 8-bit / 255, other types stretched per image to their
        /// 99.9th percentile.
        radiometry: Radiometry = Radiometry::Auto => "R",
    }
}

config_section! {
    /// How the run executes: seed, device, loader, bad images, checkpoints.
    pub struct RunConfig {
        seed: u64 = 0,
        /// auto, cpu, cuda or cuda:N.
        device: String = "auto".into(),
        /// libtorch CPU threads; 0 keeps libtorch's default.
        ///
        /// libtorch's intra-op threads.
        threads: usize = 0,
        /// bf16 autocast of the forward passes.
        ///
        /// As PyTorch's torch.autocast.
        amp: bool = false,
        /// Channels-last (NHWC) layout for the convolutions.
        channels_last: bool = false,
        /// Batches prepared ahead by the loader.
        prefetch: usize = 4,
        /// Read the images from this pack (`geossl pack`) instead of the
        /// manifest's files; empty: the files.
        packed: PathBuf = PathBuf::new() => "DIR",
        /// Unreadable images: replace them by other samples and list them in
        /// RUN/bad_images.csv (skip), or stop (fail).
        on_bad_image: BadImagePolicy = BadImagePolicy::Skip,
        /// With skip: stop once more than this fraction of the manifest's
        /// images is unreadable.
        max_bad_fraction: f64 = 0.01,
        /// Checkpoint every N epochs (and at the end).
        checkpoint_every: usize = 10,
        /// Also checkpoint mid-epoch every N steps, so that a SIGKILL loses
        /// at most N steps; 0: never. Only the newest mid-epoch checkpoint is
        /// kept.
        checkpoint_every_steps: u64 = 0 => "N",
        /// Also checkpoint mid-epoch once M minutes have passed since the
        /// last checkpoint; 0: never.
        ///
        /// Bounds the work a SIGKILL (pre-emption, a scheduler's hard kill)
        /// loses in wall-clock.
        checkpoint_every_minutes: f64 = 30.0 => "M",
    }
}

config_section! {
    /// The weighted-kNN monitor: top-1 of the query encoder on the
    /// manifest's labels, logged to the metrics.
    pub struct MonitorConfig {
        /// kNN top-1 of the query encoder on the manifest's labels every N
        /// epochs, into the metrics; 0: never.
        ///
        /// The bank is `knn_train_split`, the test `knn_test_split`.
        knn_every: usize = 0 => "N",
        /// Neighbours of --knn-every.
        knn_k: usize = 20,
        /// Temperature of --knn-every.
        knn_t: f64 = 0.07,
        /// Split whose features form the kNN bank.
        knn_train_split: String = "train".into(),
        /// Split the kNN classifies.
        knn_test_split: String = "val".into(),
    }
}

/// Every key of `config.toml`, in its order.
static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    PretrainConfig::default()
        .describe()
        .iter()
        .map(|f| f.key)
        .collect()
});

/// A key of `config.toml`, checked as it is read, so that the error of an
/// unknown one points at the key in the file.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = &'static str;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl serde::de::Visitor<'_> for Key {
    type Value = &'static str;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a pretraining setting")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<&'static str, E> {
        match KEYS.iter().find(|k| **k == key) {
            Some(known) => Ok(known),
            None => Err(E::unknown_field(key, &KEYS)),
        }
    }
}

/// Reads any subset of the keys over the defaults; an unknown or repeated
/// key is an error that names it (as `deny_unknown_fields`, which serde
/// does not offer beside `flatten`).
impl<'de> Deserialize<'de> for PretrainConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Table;
        impl<'de> serde::de::Visitor<'de> for Table {
            type Value = PretrainConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of pretraining settings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PretrainConfig, A::Error> {
                use serde::de::Error;
                let mut config = PretrainConfig::default();
                let mut seen = Vec::new();
                while let Some(key) = map.next_key_seed(Key)? {
                    if seen.contains(&key) {
                        return Err(A::Error::duplicate_field(key));
                    }
                    seen.push(key);
                    if !config.set_from(key, &mut map)? {
                        return Err(A::Error::unknown_field(key, &KEYS));
                    }
                }
                Ok(config)
            }
        }
        deserializer.deserialize_struct("PretrainConfig", &KEYS, Table)
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
        let mut c = Self::from_toml_file(&super::RunDir::new(run_dir).config_toml())?;
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
        let (o, m, d, run, k) = (
            &self.optimizer,
            &self.moco,
            &self.data,
            &self.run,
            &self.monitor,
        );
        let n = bare_name;
        anyhow::ensure!(o.epochs > 0, "{} must be at least 1", n("epochs"));
        anyhow::ensure!(o.batch_size > 0, "{} must be at least 1", n("batch_size"));
        anyhow::ensure!(
            m.moco_k > 0 && m.moco_k % o.batch_size as i64 == 0,
            "{} (queue size) {} must be a positive multiple of {} {}",
            n("moco_k"),
            m.moco_k,
            n("batch_size"),
            o.batch_size
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&m.moco_m),
            "{} must be in [0, 1)",
            n("moco_m")
        );
        anyhow::ensure!(m.moco_t > 0.0, "{} must be positive", n("moco_t"));
        anyhow::ensure!(
            d.crop_min_scale > 0.0 && d.crop_min_scale <= 1.0,
            "{} must be in (0, 1]",
            n("crop_min_scale")
        );
        anyhow::ensure!(self.model.width > 0, "{} must be positive", n("width"));
        crate::data::augment::check_image_size(d.image_size)?;
        if k.knn_every > 0 {
            anyhow::ensure!(k.knn_k >= 1, "{} must be at least 1", n("knn_k"));
            anyhow::ensure!(
                k.knn_t > 0.0 && k.knn_t.is_finite(),
                "{} must be positive and finite, got {}",
                n("knn_t"),
                k.knn_t
            );
        }
        anyhow::ensure!(
            (0.0..=1.0).contains(&run.max_bad_fraction),
            "{} must be in [0, 1]",
            n("max_bad_fraction")
        );
        anyhow::ensure!(
            run.checkpoint_every > 0,
            "{} must be at least 1",
            n("checkpoint_every")
        );
        anyhow::ensure!(
            run.checkpoint_every_minutes >= 0.0 && run.checkpoint_every_minutes.is_finite(),
            "{} must be 0 (never) or positive",
            n("checkpoint_every_minutes")
        );
        Ok(())
    }

    /// The encoder of this config for `input` (its channels are conv1's
    /// input channels).
    pub fn resnet(&self, input: &InputSpec) -> ResNetConfig {
        ResNetConfig {
            arch: self.model.arch,
            width: self.model.width,
            small_input: self.model.small_input,
            in_channels: input.channels() as i64,
        }
    }

    pub fn moco(&self, geo_classes: Option<i64>) -> MocoConfig {
        let m = &self.moco;
        MocoConfig {
            dim: m.moco_dim,
            queue_size: m.moco_k,
            momentum: m.moco_m,
            temperature: m.moco_t,
            bn_groups: m.bn_groups,
            geo_classes,
            alpha: m.alpha,
            beta: m.beta,
        }
    }

    pub fn aug(&self) -> AugConfig {
        let mut a = AugConfig::aug_plus_pre(self.data.image_size, self.data.pre_size);
        a.scale = (self.data.crop_min_scale, 1.0);
        a
    }

    /// The pair loader of the run: its batch, aug+, pairing (temporal
    /// positives or two crops of one image), sampling, seed, labels, and
    /// the resolved `input` (see `train::pretrain::resolve_input`).
    pub fn loader(&self, pin_memory: bool, input: &InputSpec) -> LoaderConfig {
        LoaderConfig {
            batch: self.optimizer.batch_size,
            aug: self.aug(),
            pairs: if self.method.temporal() {
                PairMode::Temporal
            } else {
                PairMode::SameImage
            },
            sample_by: self.data.sample_by,
            seed: self.run.seed,
            prefetch: self.run.prefetch,
            decode: DecodeOptions {
                scale: self.data.decode_scale,
                ..DecodeOptions::default()
            },
            geo_labels: self.method.geo(),
            pin_memory,
            on_bad_image: self.run.on_bad_image,
            shard: Default::default(),
            input: input.clone(),
            source: ImageSource::Files,
        }
    }

    /// The run's learning rate: lr x batch / 256 (linear scaling).
    pub fn schedule(&self) -> LrSchedule {
        let o = &self.optimizer;
        LrSchedule {
            base_lr: o.lr * o.batch_size as f64 / 256.0,
            epochs: o.epochs,
            cosine: o.cos,
            per_step: o.cos_per_step,
            milestones: o.schedule.clone(),
            warmup_epochs: o.warmup_epochs,
        }
    }

    /// Every field with its current value, in the order of `config.toml`:
    /// on [`PretrainConfig::default`], the command line's flags and defaults.
    pub fn describe(&self) -> Vec<Field> {
        let mut fields = Vec::new();
        self.fields(&mut fields);
        fields
    }
}

/// `input: 4 band(s) 4,3,2,8 (B04, B03, B02, B08), radiometry scale:10000`:
/// what pretraining and the evaluation commands say about a non-default
/// input; `None` for [`InputSpec::rgb`] (the paper's, said nowhere).
pub fn input_note(input: &InputSpec) -> Option<String> {
    if input.is_default_rgb() {
        return None;
    }
    let bands: Vec<String> = input.bands.iter().map(usize::to_string).collect();
    Some(format!(
        "input: {} band(s) {} ({}), radiometry {}",
        input.channels(),
        bands.join(","),
        input.band_names.join(", "),
        input.radiometry
    ))
}

/// A field as the messages of [`PretrainConfig::validate`] have always
/// spelt it, without a flag's dashes: `batch-size` under the CLI (whose
/// tests assert that text), the field `batch_size` for a library caller.
fn bare_name(field: &str) -> String {
    let name = settings::name(field);
    match name.strip_prefix("--") {
        Some(flag) => flag.to_string(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_paper_and_round_trip_through_toml() {
        let c = PretrainConfig::default();
        assert_eq!(
            (c.moco.moco_k, c.moco.moco_m, c.moco.moco_t, c.moco.moco_dim),
            (65536, 0.999, 0.02, 128)
        );
        assert_eq!(
            (
                c.optimizer.epochs,
                c.optimizer.batch_size,
                c.optimizer.lr,
                c.optimizer.weight_decay
            ),
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
    fn config_files_name_the_file_and_key_of_a_typo_or_a_wrong_type() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            PretrainConfig::from_toml_file(&file)
                .unwrap_err()
                .to_string()
        };
        let typo = read("lr = 0.1\nbatch_sise = 3\n");
        assert!(typo.starts_with(&file.display().to_string()), "{typo}");
        assert!(typo.contains("line 2"), "{typo}");
        assert!(
            typo.contains("unknown field `batch_sise`, expected one of `manifest`, `method`"),
            "{typo}"
        );
        let wrong = read("lr = \"abc\"\n");
        assert!(wrong.contains("line 1"), "{wrong}");
        assert!(wrong.contains("lr = \"abc\""), "{wrong}");
        assert!(wrong.contains("expected f64"), "{wrong}");
        // A section's field is a key at the top, as before the sections.
        std::fs::write(&file, "moco_t = 0.2\nknn_every = 3\n").unwrap();
        let c = PretrainConfig::from_toml_file(&file).unwrap();
        assert_eq!((c.moco.moco_t, c.monitor.knn_every), (0.2, 3));
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
        let mut new = PretrainConfig {
            method: Method::MocoTp,
            ..old.clone()
        };
        new.optimizer.batch_size = 128;
        new.moco.moco_t = 0.2;
        new.optimizer.epochs = 300;
        new.run.threads = 4;
        new.run.checkpoint_every_minutes = 5.0;
        let diff = new.resume_diff(&old).unwrap();
        let shown = |v: &[SettingChange]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shown(&diff.refused),
            [
                "batch_size: 256 -> 128",
                "method: moco-tp-geo -> moco-tp",
                "moco_t: 0.02 -> 0.2"
            ]
        );
        assert_eq!(
            shown(&diff.allowed),
            [
                "checkpoint_every_minutes: 30.0 -> 5.0",
                "epochs: 200 -> 300",
                "threads: 0 -> 4"
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
    fn bands_and_radiometry_are_flags_and_text_in_config_toml() {
        let mut c = PretrainConfig::default();
        assert_eq!(c.data.bands, BandSelection::Rgb);
        assert_eq!(c.data.radiometry, Radiometry::Auto);
        assert_eq!(c.set("bands", "B04,B03,B02,B08"), Some(Ok(())));
        assert_eq!(c.set("radiometry", "scale:10000"), Some(Ok(())));
        assert!(matches!(c.set("radiometry", "scale:0"), Some(Err(_))));
        let text = c.to_toml().unwrap();
        assert!(text.contains("bands = \"B04,B03,B02,B08\""), "{text}");
        assert!(text.contains("radiometry = \"scale:10000\""), "{text}");
        let back: PretrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        // A config.toml of older geossl (no such keys) is the RGB run.
        let old: PretrainConfig = toml::from_str("lr = 0.1\n").unwrap();
        assert_eq!(
            (old.data.bands, old.data.radiometry),
            (BandSelection::Rgb, Radiometry::Auto)
        );
        // Both define the run: a resume may not change them.
        let diff = c.resume_diff(&PretrainConfig::default()).unwrap();
        let keys: Vec<&str> = diff.refused.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["bands", "radiometry"]);
        let help = PretrainConfig::default().describe();
        let bands = help.iter().find(|f| f.key == "bands").unwrap();
        assert_eq!(
            (bands.value.as_str(), bands.value_name),
            ("rgb", Some("BANDS"))
        );
    }

    #[test]
    fn the_encoder_takes_the_inputs_channels_and_the_note_names_them() {
        let c = PretrainConfig::default();
        assert_eq!(c.resnet(&InputSpec::rgb()).in_channels, 3);
        assert_eq!(input_note(&InputSpec::rgb()), None);
        let mut four = InputSpec::rgb();
        four.bands = vec![4, 3, 2, 8];
        four.band_names = ["B04", "B03", "B02", "B08"].map(String::from).to_vec();
        four.radiometry = Radiometry::Scale(vec![10000.0]);
        four.mean = vec![0.5; 4];
        four.std = vec![0.25; 4];
        assert_eq!(c.resnet(&four).in_channels, 4);
        assert_eq!(
            input_note(&four).unwrap(),
            "input: 4 band(s) 4,3,2,8 (B04, B03, B02, B08), radiometry scale:10000"
        );
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
        let mut c = PretrainConfig::default();
        c.optimizer.batch_size = 100;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "moco_k (queue size) 65536 must be a positive multiple of batch_size 100"
        );
        c.optimizer.batch_size = 256;
        assert!(c.validate().is_ok());
        // Every command's input-side rule, and the kNN monitor's settings
        // when it runs (checked before any epoch, not at its first use).
        let err = |c: PretrainConfig| c.validate().unwrap_err().to_string();
        let with = |change: fn(&mut PretrainConfig)| {
            let mut changed = c.clone();
            change(&mut changed);
            changed
        };
        let monitored = |change: fn(&mut PretrainConfig)| {
            let mut changed = with(change);
            changed.monitor.knn_every = 2;
            changed
        };
        assert_eq!(
            err(with(|c| c.data.image_size = 7)),
            "image-size must be at least 8 pixels, got 7"
        );
        assert_eq!(
            err(monitored(|c| c.monitor.knn_k = 0)),
            "knn_k must be at least 1"
        );
        assert_eq!(
            err(monitored(|c| c.monitor.knn_t = 0.0)),
            "knn_t must be positive and finite, got 0"
        );
        assert!(
            with(|c| c.monitor.knn_k = 0).validate().is_ok(),
            "no monitor"
        );
    }
}
