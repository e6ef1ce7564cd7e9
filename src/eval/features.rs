//! Pooled backbone features of many images, batch by batch.

use tch::{Device, Kind, Tensor};

use tch::nn::ModuleT;

use crate::data::loader::ImageLoader;
use crate::model::ResNet;
use crate::progress;

/// Features [N, D] (float, on the CPU) of the loader's rows in row order,
/// with the images of `epoch` (random transforms differ per epoch): BN in
/// eval mode, no graph.
pub fn extract(
    backbone: &ResNet,
    device: Device,
    loader: &ImageLoader,
    epoch: u64,
    what: &str,
    quiet: bool,
) -> anyhow::Result<Tensor> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        progress::bar(loader.batches_per_epoch() as u64, what)
    };
    let mut parts = Vec::with_capacity(loader.batches_per_epoch());
    for batch in loader.epoch(epoch) {
        let batch = batch?;
        let features = tch::no_grad(|| backbone.forward_t(&batch.images.to_device(device), false));
        parts.push(features.to_device(Device::Cpu).to_kind(Kind::Float));
        bar.inc(1);
    }
    bar.finish_and_clear();
    anyhow::ensure!(!parts.is_empty(), "{what}: no images");
    Ok(Tensor::cat(&parts, 0))
}

/// Row-major copy of a 2-D float tensor.
pub fn to_vec(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .flatten(0, -1),
    )?)
}
