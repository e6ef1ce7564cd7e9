//! Embeddings for other tools: the pooled feature of every manifest row
//! (Resize + CenterCrop) as a float32 `.npy` matrix, row i of which belongs
//! to row i of a CSV written beside it with the manifest's columns (image
//! paths rewritten relative to the CSV's folder, so it is itself a valid
//! manifest). `numpy.load` and `pandas.read_csv` read them. A row whose
//! image cannot be read is left out of both files and listed in a third,
//! `<name>.skipped.csv` (or, with `--on-bad-image fail`, stops the work).
//!
//! [`EmbedFormat::Parquet`] writes one `.parquet` file instead: the CSV's
//! columns (typed: `lat`, `lon` float64, `geo_cluster` int64, the others
//! strings as written in the CSV, empty cells null) and then `embedding`,
//! a fixed-size list of float32 per row (`pandas.read_parquet`,
//! `pyarrow.parquet.read_table`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::encoder::Encoder;
use super::features::{extract, to_vec};
use crate::data::augment::ViewTransform;
use crate::data::loader::{BadImage, BadImagePolicy, ImageLoader};
use crate::data::manifest::{COLUMN_GEO_CLUSTER, COLUMN_LAT, COLUMN_LON};
use crate::data::Manifest;
use crate::formats::npy;
use crate::formats::parquet::{self, Column};

/// The file layout of the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedFormat {
    /// A float32 `.npy` matrix and the `.csv` of its rows beside it.
    Npy,
    /// One `.parquet` table: the rows' columns and an `embedding` column.
    Parquet,
}

impl crate::settings::Choice for EmbedFormat {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            EmbedFormat::Npy,
            "npy",
            "A float32 .npy matrix (rows x features) and the .csv of its rows beside it",
        ),
        (
            EmbedFormat::Parquet,
            "parquet",
            "One .parquet table: the .csv's columns and `embedding` (fixed-size list of float32)",
        ),
    ];
}
crate::settings::choice_by_name!(EmbedFormat);

impl EmbedFormat {
    /// The extension the output file must have.
    pub fn extension(self) -> &'static str {
        match self {
            EmbedFormat::Npy => "npy",
            EmbedFormat::Parquet => "parquet",
        }
    }
}

/// The name of the embeddings column of [`EmbedFormat::Parquet`].
pub const EMBEDDING_COLUMN: &str = "embedding";

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
    /// The output's layout.
    pub format: EmbedFormat,
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
    /// The `.npy` or `.parquet` file.
    pub embeddings: PathBuf,
    /// The CSV of the `.npy`'s rows (none for Parquet: the rows are in it).
    pub csv: Option<PathBuf>,
    /// Rows written.
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
/// and the CSV beside it: row i of both is the same image (or into the one
/// `.parquet` file `out`, as `config.format` says). Rows that cannot
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
    let ext = config.format.extension();
    anyhow::ensure!(
        out.extension().is_some_and(|e| e == ext),
        "{}: the embeddings file must end in .{ext} with --format {}{}",
        out.display(),
        crate::settings::choice_name(config.format),
        if config.format == EmbedFormat::Npy {
            " (the CSV of its rows is written beside it)"
        } else {
            ""
        }
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
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    table.rebase(&folder)?;
    let values = to_vec(&features.features)?;
    let csv = match config.format {
        EmbedFormat::Npy => {
            npy::write(out, &[n, dim], &values)?;
            let csv = out.with_extension("csv");
            table.write(&csv)?;
            Some(csv)
        }
        EmbedFormat::Parquet => {
            let columns = table_columns(&table)?;
            parquet::write_table(out, &columns, EMBEDDING_COLUMN, &values, dim)?;
            None
        }
    };
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
        embeddings: out.to_path_buf(),
        csv,
        rows: n,
        dim,
        skipped: features.skipped,
        skipped_csv,
    })
}

/// The columns of `table` exactly as its CSV spells them (the cells of the
/// manifest's own writer, so paths, timestamps and crops read the same),
/// typed: `lat`, `lon` float64, `geo_cluster` int64, the rest strings; an
/// empty cell is a null.
fn table_columns(table: &Manifest) -> anyhow::Result<Vec<(String, Column)>> {
    let mut header: Option<Vec<String>> = None;
    let mut records: Vec<Vec<String>> = Vec::with_capacity(table.records.len());
    table.csv_rows(|cells| {
        match header {
            None => header = Some(cells.to_vec()),
            Some(_) => records.push(cells.to_vec()),
        }
        Ok(())
    })?;
    let header = header.unwrap_or_default();
    let mut columns = Vec::with_capacity(header.len());
    for (i, name) in header.into_iter().enumerate() {
        let cells = records
            .iter()
            .map(|r| r.get(i).map(String::as_str).filter(|c| !c.is_empty()));
        let column = if name == COLUMN_LAT || name == COLUMN_LON {
            Column::Float64(parse_cells(&name, cells)?)
        } else if name == COLUMN_GEO_CLUSTER {
            Column::Int64(parse_cells(&name, cells)?)
        } else {
            Column::Utf8(cells.map(|c| c.map(str::to_string)).collect())
        };
        columns.push((name, column));
    }
    Ok(columns)
}

/// The numbers of column `name`'s cells (`None` stays a null). Errors: a
/// cell that is not a number, naming the column and the cell.
fn parse_cells<'a, T: std::str::FromStr>(
    name: &str,
    cells: impl Iterator<Item = Option<&'a str>>,
) -> anyhow::Result<Vec<Option<T>>> {
    cells
        .map(|c| {
            c.map(|c| {
                c.parse()
                    .map_err(|_| anyhow::anyhow!("column {name}: {c:?} is not a number"))
            })
            .transpose()
        })
        .collect()
}
