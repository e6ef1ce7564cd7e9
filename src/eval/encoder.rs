//! The encoder under evaluation: a ResNet backbone (no `fc`) loaded from
//! what geossl writes, or freshly initialised for the random baseline.
//!
//! Accepted `--checkpoint` paths:
//! - a pretraining run folder (its `checkpoints/latest`), or one
//!   `checkpoints/epoch-NNNN` folder: the QUERY encoder's backbone, as the
//!   paper evaluates (`encoder_q.*` without `encoder_q.fc.*`);
//! - a classifier folder written by `geossl finetune` (`classifier.json` +
//!   `classifier.safetensors`, torchvision names): its backbone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Device;

use crate::model::weights::{copy_named, read_safetensors};
use crate::model::{ResNet, ResNetConfig};
use crate::train::checkpoint;

/// What a classifier folder says about itself (`classifier.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub resnet: ResNetConfig,
    pub image_size: u32,
    /// Class names, in the order of `fc`'s outputs.
    pub classes: Vec<String>,
    /// Which column the classes come from (`label` or `geo_cluster`).
    pub target: String,
    /// Where the weights started: a checkpoint path, or "random".
    pub init: String,
    pub epochs: usize,
}

pub const CLASSIFIER_JSON: &str = "classifier.json";
pub const CLASSIFIER_WEIGHTS: &str = "classifier.safetensors";

/// A backbone with its own variable store.
pub struct Encoder {
    pub vs: nn::VarStore,
    pub backbone: ResNet,
    /// Input side the encoder was trained at.
    pub image_size: u32,
    /// Where it came from, for reports.
    pub source: String,
}

impl Encoder {
    /// A randomly initialised backbone (torchvision's initialisation).
    pub fn random(resnet: ResNetConfig, image_size: u32, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let backbone = ResNet::new(&vs.root(), resnet);
        Self {
            vs,
            backbone,
            image_size,
            source: "random initialisation".into(),
        }
    }

    /// Loads the backbone found at `path` (see the module documentation).
    pub fn load(path: &Path, device: Device) -> anyhow::Result<Self> {
        if path.join(CLASSIFIER_JSON).is_file() {
            let info = read_classifier_info(path)?;
            return Self::from_tensors(
                info.resnet,
                info.image_size,
                &path.join(CLASSIFIER_WEIGHTS),
                "",
                device,
                format!("{} (classifier on {})", path.display(), info.target),
            );
        }
        let dir = checkpoint_dir(path)?;
        let state = checkpoint::read_state(&dir)?;
        Self::from_tensors(
            state.config.resnet(),
            state.config.data.image_size,
            &dir.join("model.safetensors"),
            "encoder_q.",
            device,
            format!(
                "{} ({:?}, epoch {})",
                dir.display(),
                state.config.method,
                state.epoch
            ),
        )
    }

    fn from_tensors(
        resnet: ResNetConfig,
        image_size: u32,
        file: &Path,
        prefix: &str,
        device: Device,
        source: String,
    ) -> anyhow::Result<Self> {
        let mut encoder = Self::random(resnet, image_size, device);
        encoder.source = source;
        copy_named(&encoder.vs, &read_safetensors(file)?, prefix, file)?;
        Ok(encoder)
    }

    pub fn feature_dim(&self) -> i64 {
        self.backbone.config.feature_dim()
    }
}

/// A run folder resolves to its latest checkpoint; a checkpoint folder to itself.
pub fn checkpoint_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    anyhow::ensure!(
        path.is_dir(),
        "{}: no such run, checkpoint or classifier folder",
        path.display()
    );
    checkpoint::latest(path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: neither a run folder with checkpoints, a checkpoint folder (state.json) nor a classifier folder ({CLASSIFIER_JSON})",
            path.display()
        )
    })
}

pub fn read_classifier_info(dir: &Path) -> anyhow::Result<ClassifierInfo> {
    let p = dir.join(CLASSIFIER_JSON);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid classifier description", p.display()))
}
