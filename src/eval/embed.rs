//! Embeddings for other tools: the pooled feature of every manifest row
//! (Resize + CenterCrop) as a float32 `.npy` matrix, row i of which belongs
//! to row i of a CSV written beside it with the manifest's columns (image
//! paths rewritten relative to the CSV's folder, so it is itself a valid
//! manifest). `numpy.load` and `pandas.read_csv` read them. A row whose
//! image cannot be read is left out of both files and listed in a third,
//! `<name>.skipped.csv` (or, with `--on-bad-image fail`, stops the work).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::encoder::Encoder;
use super::features::{extract, to_vec};
use crate::data::augment::ViewTransform;
use crate::data::loader::{BadImage, BadImagePolicy, ImageLoader};
use crate::data::Manifest;
use crate::formats::npy;

/// How to embed.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// Resize + CenterCrop side, pixels.
    pub image_size: u32,
    /// Images per forward pass.
    pub batch: usize,
    /// Unreadable images: left out of the `.npy` and the CSV alike and
    /// listed in the skipped CSV (skip), or the error (fail).
    pub on_bad_image: BadImagePolicy,
    /// No progress bar.
    pub quiet: bool,
    /// Where the images are read from: the manifest's files, or a pack.
    pub source: crate::data::source::ImageSource,
    /// How they are decoded.
    pub decode: crate::data::decode::DecodeOptions,
}

impl EmbedConfig {
    /// At least one image per batch and an input side of at least
    /// [`crate::data::augment::MIN_IMAGE_SIZE`]; the errors name the
    /// setting as the flag does.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.batch >= 1, "batch-size must be at least 1");
        crate::data::augment::check_image_size(self.image_size)
    }
}

/// Where the embeddings went.
#[derive(Debug)]
pub struct EmbedOutcome {
    pub npy: PathBuf,
    pub csv: PathBuf,
    /// Rows written (to both files).
    pub rows: usize,
    pub dim: usize,
    /// Rows left out as unreadable, with why.
    pub skipped: Vec<(usize, BadImage)>,
    /// The list of them ([`skipped_path`]), when there are any.
    pub skipped_csv: Option<PathBuf>,
}

/// The list of rows left out of the embeddings `npy`:
/// `<name>.skipped.csv` beside it (`line` of the manifest, `path`, `error`).
pub fn skipped_path(npy: &Path) -> PathBuf {
    npy.with_extension("skipped.csv")
}

/// Embeds `rows` of `manifest` (all rows when `None`) into `out` (`.npy`)
/// and the CSV beside it: row i of both is the same image. Rows that cannot
/// be read are left out of both (and listed in [`skipped_path`]) or stop
/// the work, as `config.on_bad_image` says; none left is an error.
pub fn embed(
    encoder: &Encoder,
    manifest: &Manifest,
    rows: Option<Vec<usize>>,
    config: &EmbedConfig,
    out: &Path,
) -> anyhow::Result<EmbedOutcome> {
    config.validate()?;
    anyhow::ensure!(
        out.extension().is_some_and(|e| e == "npy"),
        "{}: the embeddings file must end in .npy (the CSV of its rows is written beside it)",
        out.display()
    );
    let rows = rows.unwrap_or_else(|| (0..manifest.records.len()).collect());
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: no rows to embed",
        manifest.source.display()
    );
    let loader = ImageLoader::new(
        Arc::new(manifest.clone()),
        rows,
        ViewTransform::CenterCrop {
            size: config.image_size,
        },
        config.batch,
        encoder.input.clone(),
    )
    .on_bad_image(config.on_bad_image)
    .with_source(config.source.clone())
    .with_decode(config.decode);
    let what = "embedding";
    let bar = crate::progress::bar_unless(config.quiet, loader.batches_per_epoch() as u64, what);
    let features = extract(
        &encoder.backbone,
        encoder.vs.device(),
        &loader,
        0,
        what,
        &bar,
    )?;
    bar.finish_and_clear();
    let (n, dim) = (
        features.features.size()[0] as usize,
        features.features.size()[1] as usize,
    );
    anyhow::ensure!(
        n == features.rows.len(),
        "{n} features for {} rows",
        features.rows.len()
    );
    // The CSV gets exactly the rows whose features were written, in order.
    let mut table = manifest.clone();
    table.records = features
        .rows
        .iter()
        .map(|&r| manifest.records[r].clone())
        .collect();
    npy::write(out, &[n, dim], &to_vec(&features.features)?)?;
    let csv = out.with_extension("csv");
    let folder = match csv.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    table.rebase(&folder)?;
    table.write(&csv)?;
    let list = skipped_path(out);
    let skipped_csv = if features.skipped.is_empty() {
        // A list from an earlier run would describe other outputs.
        match std::fs::remove_file(&list) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("{}: cannot remove", list.display()))
            }
            _ => None,
        }
    } else {
        crate::formats::atomic_write::write_atomically(&list, |w| {
            let mut w = csv::Writer::from_writer(w);
            w.write_record(["line", "path", "error"])?;
            for (row, bad) in &features.skipped {
                w.write_record([(row + 2).to_string().as_str(), &bad.path, &bad.error])?;
            }
            Ok(w.flush()?)
        })?;
        Some(list)
    };
    Ok(EmbedOutcome {
        npy: out.to_path_buf(),
        csv,
        rows: n,
        dim,
        skipped: features.skipped,
        skipped_csv,
    })
}
