//! Embeddings for other tools: the pooled feature of every manifest row
//! (Resize + CenterCrop) as a float32 `.npy` matrix, row i of which belongs
//! to row i of a CSV written beside it with the manifest's columns (image
//! paths rewritten relative to the CSV's folder, so it is itself a valid
//! manifest). `numpy.load` and `pandas.read_csv` read them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::encoder::Encoder;
use super::features::{extract, to_vec};
use crate::data::augment::ViewTransform;
use crate::data::loader::ImageLoader;
use crate::data::Manifest;
use crate::interop::npy;

/// Where the embeddings went.
#[derive(Debug)]
pub struct EmbedOutcome {
    pub npy: PathBuf,
    pub csv: PathBuf,
    pub rows: usize,
    pub dim: usize,
}

/// Embeds `rows` of `manifest` (all rows when `None`) into `out` (`.npy`)
/// and the CSV beside it.
pub fn embed(
    encoder: &Encoder,
    manifest: &Manifest,
    rows: Option<Vec<usize>>,
    image_size: u32,
    batch: usize,
    out: &Path,
    quiet: bool,
) -> anyhow::Result<EmbedOutcome> {
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
    let mut table = manifest.clone();
    table.records = rows.iter().map(|&r| manifest.records[r].clone()).collect();
    let loader = ImageLoader::new(
        Arc::new(manifest.clone()),
        rows,
        ViewTransform::CenterCrop { size: image_size },
        batch,
    );
    let features = extract(
        &encoder.backbone,
        encoder.vs.device(),
        &loader,
        0,
        "embedding",
        quiet,
    )?;
    let (n, dim) = (features.size()[0] as usize, features.size()[1] as usize);
    npy::write(out, &[n, dim], &to_vec(&features)?)?;
    let csv = out.with_extension("csv");
    let folder = match csv.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    table.rebase(&folder)?;
    table.write(&csv)?;
    Ok(EmbedOutcome {
        npy: out.to_path_buf(),
        csv,
        rows: n,
        dim,
    })
}
