//! Where a trained encoder's weights lie: what `--checkpoint` may name, for
//! evaluation (`eval::Encoder`) and export (`interop::export`) alike.
//!
//! Accepted paths:
//! - a pretraining run folder (its `checkpoints/latest`), or one
//!   `checkpoints/epoch-NNNN` folder: the MoCo model, whose query encoder
//!   (`encoder_q.*`) the paper evaluates;
//! - a classifier folder written by `geossl finetune` (`classifier.json` +
//!   `classifier.safetensors`, torchvision names);
//! - a plain backbone file from the rest of the field (`.pth`, `.pth.tar`,
//!   `.pt` or `.safetensors`: a torchvision, timm or torchgeo ResNet state
//!   dict), read by `interop::backbone::read` (see [`set_backbone_reader`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::checkpoint::{self, TrainState};
use super::run_dir::{CheckpointDir, ClassifierDir};
use crate::data::bands::InputSpec;
use crate::model::{Moco, ResNetConfig};

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
        info: Box<ClassifierInfo>,
    },
    /// A pretraining checkpoint folder (a run folder's latest), with its
    /// training state.
    Checkpoint {
        dir: CheckpointDir,
        state: Box<TrainState>,
    },
    /// A plain backbone file (see [`is_backbone_file`]); read by
    /// [`read_backbone`].
    Backbone { path: PathBuf },
}

impl EncoderSource {
    /// Resolves `path` (see the module documentation); fails naming it when
    /// it is none of the accepted folders.
    pub fn resolve(path: &Path) -> anyhow::Result<Self> {
        if is_backbone_file(path) {
            return Ok(Self::Backbone {
                path: path.to_path_buf(),
            });
        }
        let classifier = ClassifierDir::new(path);
        if classifier.info_json().is_file() {
            let info = Box::new(read_classifier_info(&classifier)?);
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
        "{}: no such run, checkpoint or classifier folder, nor a backbone file ({})",
        path.display(),
        BACKBONE_EXTENSIONS.join(", ")
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

/// The file names a backbone file may end with: PyTorch's (`torch.save`,
/// the MoCo code's `.pth.tar`) and safetensors.
pub const BACKBONE_EXTENSIONS: [&str; 4] = [".pth", ".pth.tar", ".pt", ".safetensors"];

/// Whether `path` is a regular file whose name ends with one of
/// [`BACKBONE_EXTENSIONS`].
pub fn is_backbone_file(path: &Path) -> bool {
    path.is_file() && backbone_stem(path).is_some()
}

/// The name of a backbone file without its extension (`resnet50` of
/// `resnet50.pth.tar`); `None` when it has none of [`BACKBONE_EXTENSIONS`].
pub fn backbone_stem(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    // No extension is a suffix of another, so at most one matches.
    BACKBONE_EXTENSIONS
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .filter(|stem| !stem.is_empty())
        .map(str::to_string)
}

/// A ResNet backbone read from a file of the rest of the field, in
/// geossl's (= torchvision's) names. Read by `interop::backbone::read`;
/// defined here so that evaluation and pretraining, below `interop`, can
/// use it (see [`set_backbone_reader`]).
#[derive(Debug)]
pub struct Backbone {
    /// Backbone tensors by torchvision name (`conv1.weight`,
    /// `layer1.0.bn1.running_mean`, ...), prefix stripped, no `fc.*`, as
    /// float32 on the CPU.
    pub tensors: BTreeMap<String, Tensor>,
    /// Architecture inferred from the tensor shapes.
    pub resnet: ResNetConfig,
    /// The input the weights expect: RGB with ImageNet normalisation for 3
    /// channels (torchvision's and timm's), else
    /// `interop::import::imported_input`.
    pub input: InputSpec,
    /// What the file was, for messages: e.g. "torchvision/timm ResNet-50
    /// state dict (prefix module.)".
    pub layout: String,
    /// Names (as in the file) of the tensors that were not used (`fc.*`,
    /// `num_batches_tracked`, projection heads, ...).
    pub ignored: Vec<String>,
}

impl Backbone {
    /// Copies the backbone into both encoders of `moco` (`encoder_q.*` and
    /// `encoder_k.*`, BN running statistics included), leaving the
    /// projection heads (`fc.*`) and the geo head as they are: the start
    /// of `pretrain --init` and of `geossl import` of a backbone file.
    /// Errors: a variable with no tensor or another shape (`source` names
    /// the file).
    pub fn copy_into_moco(&self, moco: &Moco, source: &Path) -> anyhow::Result<usize> {
        let mut copied = 0;
        for (vs, prefix) in [(&moco.vs_q, "encoder_q."), (&moco.vs_k, "encoder_k.")] {
            copied += crate::model::weights::copy_mapped(
                vs,
                |name| {
                    let rest = name.strip_prefix(prefix)?;
                    (!rest.starts_with("fc.")).then(|| rest.to_string())
                },
                |key| self.tensors.get(key),
                source,
            )?;
        }
        Ok(copied)
    }
}

/// Reads a backbone file (the signature of `interop::backbone::read`).
pub type BackboneReader = fn(&Path) -> anyhow::Result<Backbone>;

static BACKBONE_READER: OnceLock<BackboneReader> = OnceLock::new();

/// Registers how backbone files are read: `interop::backbone::read`,
/// which sits above this layer (it parses `torch.save` files). The command
/// line registers it at start-up (`interop::backbone::register`); a
/// library caller that passes backbone files to `eval::Encoder::load` or
/// `pretrain` with `init` set does the same. The first registration wins.
pub fn set_backbone_reader(reader: BackboneReader) {
    let _ = BACKBONE_READER.set(reader);
}

/// Reads the backbone file `path` with the registered reader. Errors: the
/// reader's, or none registered.
pub fn read_backbone(path: &Path) -> anyhow::Result<Backbone> {
    let reader = BACKBONE_READER.get().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no backbone file reader registered (call geossl::interop::backbone::register() first; the command line does)",
            path.display()
        )
    })?;
    reader(path)
}

/// The backbone at any path `--checkpoint` accepts ([`EncoderSource`]):
/// a backbone file through the registered reader, the query encoder of a
/// pretraining run or checkpoint folder (a run `geossl import` made from a
/// MoCo checkpoint included), or a classifier folder's backbone. What
/// `pretrain --init` starts from. Errors: those of
/// [`EncoderSource::resolve`] and of reading the weights.
pub fn backbone_of(path: &Path) -> anyhow::Result<Backbone> {
    let (resnet, input, file, prefix, layout) = match EncoderSource::resolve(path)? {
        EncoderSource::Backbone { path } => return read_backbone(&path),
        EncoderSource::Checkpoint { dir, state } => (
            state.config.resnet(&state.input),
            state.input.clone(),
            dir.model_safetensors(),
            "encoder_q.",
            format!(
                "the query encoder of {} ({}, epoch {})",
                dir.path().display(),
                state.config.method.name(),
                state.epoch
            ),
        ),
        EncoderSource::Classifier { dir, info } => (
            info.resnet,
            info.input.clone(),
            dir.weights(),
            "",
            format!("the backbone of classifier {}", dir.path().display()),
        ),
    };
    let mut tensors = BTreeMap::new();
    let mut ignored = Vec::new();
    for (name, t) in crate::formats::safetensors::read_safetensors(&file)? {
        match name.strip_prefix(prefix).filter(|n| !n.starts_with("fc.")) {
            Some(rest) => {
                tensors.insert(rest.to_string(), t);
            }
            None => ignored.push(name),
        }
    }
    ignored.sort();
    Ok(Backbone {
        tensors,
        resnet,
        input,
        layout,
        ignored,
    })
}

/// How evaluation describes a pretraining checkpoint it read, in reports'
/// `encoder` field: `PATH (Method, epoch N)`. [`checkpoint_of_description`]
/// reads it back (the report and the model card find the epoch an
/// evaluation read from it).
pub fn checkpoint_description(dir: &Path, method: crate::train::Method, epoch: usize) -> String {
    format!("{} ({method:?}, epoch {epoch})", dir.display())
}

/// The checkpoint folder and epoch of a [`checkpoint_description`]; `None`
/// for any other encoder (a random initialisation, a backbone file, a
/// classifier).
pub fn checkpoint_of_description(description: &str) -> Option<(PathBuf, usize)> {
    let (path, rest) = description.rsplit_once(" (")?;
    let epoch = rest.strip_suffix(')')?.rsplit_once(", epoch ")?.1;
    Some((PathBuf::from(path), epoch.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_description_reads_back_and_nothing_else_does() {
        let dir = Path::new("/r/run (v2)/checkpoints/epoch-0012");
        let text = checkpoint_description(dir, crate::train::Method::MocoTpGeo, 12);
        assert_eq!(
            text,
            "/r/run (v2)/checkpoints/epoch-0012 (MocoTpGeo, epoch 12)"
        );
        assert_eq!(
            checkpoint_of_description(&text),
            Some((dir.to_path_buf(), 12))
        );
        for other in [
            "random initialisation",
            "r50.pth (torchvision/timm ResNet-50 state dict (zip torch.save format) (bare, no prefix))",
            "/r/ft (classifier on label)",
        ] {
            assert_eq!(checkpoint_of_description(other), None, "{other}");
        }
    }
}
