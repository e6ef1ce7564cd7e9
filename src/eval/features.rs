//! Pooled backbone features of many images, batch by batch, with the rows
//! they belong to.

use tch::{Device, Kind, Tensor};

use tch::nn::ModuleT;

use crate::data::loader::{BadImage, ImageLoader};
use crate::data::Manifest;
use crate::model::ResNet;

/// Features of the rows of a loader that could be read.
pub struct Features {
    /// [N, D] float on the CPU; row i is the feature of `rows[i]`.
    pub features: Tensor,
    /// Manifest rows, in the loader's order, without the skipped ones.
    pub rows: Vec<usize>,
    /// Rows left out as unreadable (under `--on-bad-image skip`), in order.
    pub skipped: Vec<(usize, BadImage)>,
}

/// The rows whose "left out unreadable row" warning was already given,
/// so that work repeated over the same rows (the pretraining kNN monitor,
/// every few epochs) warns once per row rather than once per pass.
#[derive(Debug, Default)]
pub struct SkipWarnings(std::sync::Mutex<std::collections::HashSet<usize>>);

impl SkipWarnings {
    /// True the first time `row` is passed.
    pub fn first_time(&self, row: usize) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(row)
    }
}

/// Features of the loader's rows in row order, with the images of `epoch`
/// (random transforms differ per epoch): BN in eval mode, no graph. `bar`
/// advances by one per batch. Each skipped row is warned about once.
///
/// Errors: an unreadable row under `--on-bad-image fail`; no row left to
/// show (naming how many there were, how many were unreadable and the
/// first of them); a loader that delivered fewer rows than it was given.
pub fn extract(
    backbone: &ResNet,
    device: Device,
    loader: &ImageLoader,
    epoch: u64,
    what: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Features> {
    let warnings = SkipWarnings::default();
    extract_warning_once(backbone, device, loader, epoch, what, bar, &warnings)
}

/// [`extract`], warning about a skipped row only if `warnings` has not
/// seen it yet (it records the rows it warns about).
pub fn extract_warning_once(
    backbone: &ResNet,
    device: Device,
    loader: &ImageLoader,
    epoch: u64,
    what: &str,
    bar: &indicatif::ProgressBar,
    warnings: &SkipWarnings,
) -> anyhow::Result<Features> {
    let mut parts = Vec::with_capacity(loader.batches_per_epoch());
    let (mut rows, mut skipped) = (Vec::new(), Vec::new());
    for batch in loader.epoch(epoch) {
        let batch = batch?;
        for (row, bad) in &batch.skipped {
            if !warnings.first_time(*row) {
                continue;
            }
            bar.suspend(|| {
                tracing::warn!(
                    "{what}: left out unreadable row {} of {}: {}",
                    row + 2,
                    loader.manifest().source.display(),
                    bad.error
                )
            });
        }
        skipped.extend(batch.skipped);
        if !batch.rows.is_empty() {
            let features =
                tch::no_grad(|| backbone.forward_t(&batch.images.to_device(device), false));
            parts.push(features.to_device(Device::Cpu).to_kind(Kind::Float));
            rows.extend(batch.rows);
        }
        bar.inc(1);
    }
    let expected = loader.rows_per_epoch();
    anyhow::ensure!(
        rows.len() + skipped.len() == expected,
        "{what}: the loader delivered {} of {expected} rows",
        rows.len() + skipped.len()
    );
    if rows.is_empty() {
        return Err(nothing_read(what, loader.manifest(), expected, &skipped));
    }
    Ok(Features {
        features: Tensor::cat(&parts, 0),
        rows,
        skipped,
    })
}

/// The error of work left with no row to use: none given, or every one of
/// the `total` rows unreadable (`skipped`, the first named), since "no
/// images" would hide that the images are there but could not be read.
pub fn nothing_read(
    what: &str,
    manifest: &Manifest,
    total: usize,
    skipped: &[(usize, BadImage)],
) -> anyhow::Error {
    let source = manifest.source.display();
    match skipped.first() {
        None => anyhow::anyhow!("{what}: no rows of {source} to read"),
        Some((row, bad)) => anyhow::anyhow!(
            "{what}: none of the {total} rows of {source} could be read ({} unreadable; the first, line {}: {})",
            skipped.len(),
            row + 2,
            bad.error
        ),
    }
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
