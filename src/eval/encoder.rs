//! The encoder under evaluation: a ResNet backbone (no `fc`) loaded from
//! what geossl writes, or freshly initialised for the random baseline.
//!
//! Accepted `--checkpoint` paths are those of
//! [`crate::train::encoder_source`]: from a pretraining run or checkpoint
//! folder the QUERY encoder's backbone, as the paper evaluates
//! (`encoder_q.*` without `encoder_q.fc.*`); from a classifier folder
//! written by `geossl finetune`, its backbone; from a plain backbone file
//! (a torchvision, timm or torchgeo ResNet state dict, `.pth` or
//! `.safetensors`), its tensors, read by the registered reader
//! ([`crate::train::encoder_source::read_backbone`]). A backbone file does
//! not say its input size: it is taken as the paper's (the `image_size`
//! default of pretraining, 224), which `--image-size` overrides.

use std::path::Path;

use tch::nn;
use tch::Device;

use crate::data::bands::InputSpec;
use crate::formats::safetensors::read_safetensors;
use crate::model::weights::{copy_mapped, copy_named};
use crate::model::{ResNet, ResNetConfig};
use crate::train::config::DataConfig;
use crate::train::encoder_source::{read_backbone, EncoderSource};

/// A backbone with its own variable store.
pub struct Encoder {
    pub vs: nn::VarStore,
    pub backbone: ResNet,
    /// Input side the encoder was trained at.
    pub image_size: u32,
    /// The bands, radiometry and normalisation it was trained on: every
    /// evaluation reads images this way.
    pub input: InputSpec,
    /// Where it came from, for reports.
    pub source: String,
}

impl Encoder {
    /// A randomly initialised backbone (torchvision's initialisation) for
    /// `input`: conv1 takes its channels, whatever `resnet.in_channels`.
    pub fn random(resnet: ResNetConfig, input: InputSpec, image_size: u32, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let resnet = ResNetConfig {
            in_channels: input.channels() as i64,
            ..resnet
        };
        let backbone = ResNet::new(&vs.root(), resnet);
        Self {
            vs,
            backbone,
            image_size,
            input,
            source: "random initialisation".into(),
        }
    }

    /// Loads the backbone found at `path` (see the module documentation).
    pub fn load(path: &Path, device: Device) -> anyhow::Result<Self> {
        match EncoderSource::resolve(path)? {
            EncoderSource::Classifier { dir, info } => Self::from_tensors(
                info.resnet,
                info.input,
                info.image_size,
                &dir.weights(),
                "",
                device,
                format!("{} (classifier on {})", path.display(), info.target),
            ),
            EncoderSource::Checkpoint { dir, state } => Self::from_tensors(
                state.config.resnet(&state.input),
                state.input.clone(),
                state.config.data.image_size,
                &dir.model_safetensors(),
                "encoder_q.",
                device,
                crate::train::encoder_source::checkpoint_description(
                    dir.path(),
                    state.config.method,
                    state.epoch,
                ),
            ),
            EncoderSource::Backbone { path } => {
                let backbone = read_backbone(&path)?;
                let mut encoder = Self::random(
                    backbone.resnet,
                    backbone.input,
                    DataConfig::default().image_size,
                    device,
                );
                encoder.source = format!("{} ({})", path.display(), backbone.layout);
                copy_mapped(
                    &encoder.vs,
                    |name| Some(name.to_string()),
                    |key| backbone.tensors.get(key),
                    &path,
                )?;
                Ok(encoder)
            }
        }
    }

    fn from_tensors(
        resnet: ResNetConfig,
        input: InputSpec,
        image_size: u32,
        file: &Path,
        prefix: &str,
        device: Device,
        source: String,
    ) -> anyhow::Result<Self> {
        let mut encoder = Self::random(resnet, input, image_size, device);
        encoder.source = source;
        copy_named(&encoder.vs, &read_safetensors(file)?, prefix, file)?;
        Ok(encoder)
    }

    pub fn feature_dim(&self) -> i64 {
        self.backbone.config.feature_dim()
    }

    /// `bands 4,3,2 (B04, B03, B02), radiometry scale:10000` for what
    /// evaluation output says about a non-default input; `None` for RGB.
    pub fn input_note(&self) -> Option<String> {
        crate::train::config::input_note(&self.input)
    }
}
