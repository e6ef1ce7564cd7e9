//! The epoch monitor hook: a figure of the query encoder's backbone that
//! `pretrain` asks for at the end of some epochs (every `knn_every` and the
//! last of an invocation) and records as the epoch row's `knn_top1`. The
//! caller supplies it (the kNN monitor lives with the evaluations, in
//! `eval::knn::KnnMonitor`): training decides when to ask and what a
//! failure means, not how to evaluate.

use tch::Device;

use super::config::PretrainConfig;
use crate::data::bands::InputSpec;
use crate::data::Manifest;
use crate::model::ResNet;

/// Evaluates the backbone being trained at the end of an epoch.
pub trait EpochMonitor {
    /// The figure (a fraction, e.g. kNN top-1) of `backbone` on `device`
    /// after `epoch` epochs (counted from 1). An error is a figure the
    /// monitor could not compute (unreadable test images, say); `pretrain`
    /// warns and records none, or stops under `on_bad_image = fail`.
    fn evaluate(&mut self, backbone: &ResNet, device: Device, epoch: usize) -> anyhow::Result<f64>;
}

/// Builds a run's monitor when `knn_every > 0`, from the run's whole
/// manifest (every row, whatever the pretraining split) and its config
/// (manifest path absolute). `pretrain` calls it once it has read the
/// manifest and checked its geo clusters, before choosing the training
/// rows, so its errors (no labels on the monitor's splits) come there.
/// The [`InputSpec`] is the run's resolved input: the monitor reads its
/// images as pretraining does.
pub type BuildMonitor =
    dyn Fn(&Manifest, &PretrainConfig, &InputSpec) -> anyhow::Result<Box<dyn EpochMonitor>>;
