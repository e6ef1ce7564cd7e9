//! Plain backbone weights from the rest of the field: a torchvision or timm
//! ResNet state dict (`.pth` written by `torch.save`, zip or legacy format,
//! or `.safetensors`), with or without the `module.`, `backbone.` or
//! `encoder.` prefixes that DDP, torchgeo and Lightning wrappers add.
//!
//! CONTRACT (issue 18): helper "backbone" implements this module.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use crate::data::bands::InputSpec;
use crate::model::ResNetConfig;

/// A ResNet backbone read from a file, in geossl's (= torchvision's) names.
#[derive(Debug)]
pub struct Backbone {
    /// Backbone tensors by torchvision name (`conv1.weight`,
    /// `layer1.0.bn1.running_mean`, ...), prefix stripped, no `fc.*`.
    pub tensors: BTreeMap<String, Tensor>,
    /// Architecture inferred from the tensor shapes.
    pub resnet: ResNetConfig,
    /// The input the weights expect: RGB with ImageNet normalisation for 3
    /// channels (torchvision's and timm's), else
    /// [`crate::interop::import::imported_input`].
    pub input: InputSpec,
    /// What the file was, for messages: e.g. "torchvision/timm ResNet-50
    /// state dict (prefix module.)".
    pub layout: String,
    /// Names (as in the file) of the tensors that were not used (`fc.*`,
    /// `num_batches_tracked`, projection heads, ...).
    pub ignored: Vec<String>,
}

/// Reads a backbone file (see the module documentation). Errors name the
/// file and say which tensors were missing or of the wrong shape.
pub fn read(path: &Path) -> anyhow::Result<Backbone> {
    anyhow::bail!("{}: backbone files are not read yet", path.display())
}

/// `geossl import` of a backbone file: a run folder `out` whose epoch-0
/// checkpoint holds the backbone as both MoCo encoders (fresh MLP head,
/// like `pretrain --init`), so every command that takes a run folder works.
pub fn import(path: &Path, out: &Path) -> anyhow::Result<super::import::Imported> {
    let _ = out;
    read(path).map(|_| unreachable!())
}
