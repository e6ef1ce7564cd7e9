//! Where a trained encoder's weights lie: what `--checkpoint` may name, for
//! evaluation (`eval::Encoder`) and export (`interop::export`) alike.
//!
//! Accepted paths:
//! - a pretraining run folder (its `checkpoints/latest`), or one
//!   `checkpoints/epoch-NNNN` folder: the MoCo model, whose query encoder
//!   (`encoder_q.*`) the paper evaluates;
//! - a classifier folder written by `geossl finetune` (`classifier.json` +
//!   `classifier.safetensors`, torchvision names).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainState};
use super::run_dir::{CheckpointDir, ClassifierDir};
use crate::data::bands::InputSpec;
use crate::model::ResNetConfig;

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
    /// The input the classifier reads (its encoder's, or the `--bands` /
    /// `--radiometry` of a from-scratch run); RGB in folders written
    /// before multispectral input.
    #[serde(default)]
    pub input: InputSpec,
}

/// A path resolved to the weights it names.
pub enum EncoderSource {
    /// A classifier folder from `geossl finetune`, with its description.
    Classifier {
        dir: ClassifierDir,
        info: ClassifierInfo,
    },
    /// A pretraining checkpoint folder (a run folder's latest), with its
    /// training state.
    Checkpoint {
        dir: CheckpointDir,
        state: Box<TrainState>,
    },
}

impl EncoderSource {
    /// Resolves `path` (see the module documentation); fails naming it when
    /// it is none of the accepted folders.
    pub fn resolve(path: &Path) -> anyhow::Result<Self> {
        let classifier = ClassifierDir::new(path);
        if classifier.info_json().is_file() {
            let info = read_classifier_info(&classifier)?;
            return Ok(Self::Classifier {
                dir: classifier,
                info,
            });
        }
        let dir = checkpoint_dir(path)?;
        let state = checkpoint::read_state(&dir)?;
        Ok(Self::Checkpoint {
            dir: CheckpointDir::new(dir),
            state: Box::new(state),
        })
    }
}

/// A run folder resolves to its latest checkpoint; a checkpoint folder to itself.
pub fn checkpoint_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if CheckpointDir::new(path).state_json().is_file() {
        return Ok(path.to_path_buf());
    }
    anyhow::ensure!(
        path.is_dir(),
        "{}: no such run, checkpoint or classifier folder",
        path.display()
    );
    checkpoint::latest(path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: neither a run folder with checkpoints, a checkpoint folder (state.json) nor a classifier folder ({})",
            path.display(),
            ClassifierDir::INFO_JSON
        )
    })
}

/// Reads a classifier folder's `classifier.json`.
pub fn read_classifier_info(dir: &ClassifierDir) -> anyhow::Result<ClassifierInfo> {
    let p = dir.info_json();
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid classifier description", p.display()))
}
