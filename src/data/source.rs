//! Where a manifest row's image is read from: its own file (the raw path),
//! or a packed copy written by `geossl pack` ([`super::pack`]). The loaders
//! ask an [`ImageSource`] for row after row and never see the difference.

use std::path::Path;
use std::sync::Arc;

use super::band_image::{decode_source, SourceImage};
use super::bands::InputSpec;
use super::decode::{DecodeError, DecodeOptions};
use super::manifest::Manifest;
use super::pack::PackedRows;

/// The images of a manifest's rows.
#[derive(Clone, Default)]
pub enum ImageSource {
    /// Each row's file, cut to its `crop` ([`decode_source`]).
    #[default]
    Files,
    /// The rows' crops as `geossl pack` stored them, pre-resized.
    Packed(Arc<PackedRows>),
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::Files => f.write_str("Files"),
            ImageSource::Packed(p) => write!(f, "Packed({})", p.dir().display()),
        }
    }
}

impl ImageSource {
    /// The files (`packed` is `None` or empty), or the pack in folder
    /// `packed` matched to `manifest`'s rows. Errors: the pack cannot be
    /// read, or rows of `manifest` are not in it (named).
    pub fn open(packed: Option<&Path>, manifest: &Manifest) -> anyhow::Result<Self> {
        match packed {
            Some(dir) if !dir.as_os_str().is_empty() => Ok(ImageSource::Packed(Arc::new(
                PackedRows::open(dir, manifest)?,
            ))),
            _ => Ok(ImageSource::Files),
        }
    }

    /// Errors unless a pack holds images of the input `spec` (the files
    /// are read with any input): say it before the first batch rather than
    /// once per image.
    pub fn check_input(&self, spec: &InputSpec) -> anyhow::Result<()> {
        match self {
            ImageSource::Files => Ok(()),
            ImageSource::Packed(p) => p
                .check_input(spec)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.dir().display())),
        }
    }

    /// Warns when a pack's images are smaller than `needed`, the side the
    /// reader resizes them to (pretraining's pre-size, an evaluation's
    /// input size): they are then upsampled. Nothing for files.
    pub fn warn_if_smaller(&self, needed: u32) {
        if let ImageSource::Packed(p) = self {
            let size = p.info().size;
            if size < needed {
                tracing::warn!(
                    "{}: the pack stores {size} x {size} px images, smaller than the {needed} px they are resized to here: they are upsampled (pack at {needed} for the full resolution)",
                    p.dir().display()
                );
            }
        }
    }

    /// Row `row` of `manifest` decoded for the input `spec` (see
    /// [`decode_source`] for `resize_to`: the image may come back smaller
    /// than the crop, never smaller than `resize_to` on its shorter side
    /// unless the crop itself is).
    pub fn load(
        &self,
        manifest: &Manifest,
        row: usize,
        spec: &InputSpec,
        options: &DecodeOptions,
        resize_to: Option<u32>,
    ) -> Result<SourceImage, DecodeError> {
        match self {
            ImageSource::Files => {
                let rec = &manifest.records[row];
                decode_source(&manifest.resolve(rec), rec.crop, spec, options, resize_to)
            }
            ImageSource::Packed(p) => p.load(row, spec, options, resize_to),
        }
    }
}
