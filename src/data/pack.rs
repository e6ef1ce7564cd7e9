//! `geossl pack`: a packed, pre-resized copy of a manifest's images for
//! training at speed (issue 17). CONTRACT SKELETON: the pack helper fills it.

use std::path::{Path, PathBuf};

use super::band_image::SourceImage;
use super::bands::InputSpec;
use super::decode::{DecodeError, DecodeOptions};
use super::manifest::Manifest;

/// A pack opened for one manifest: each manifest row's sample.
pub struct PackedRows {
    dir: PathBuf,
}

impl PackedRows {
    /// Opens the pack in `dir` and finds every row of `manifest` in it.
    pub fn open(dir: &Path, manifest: &Manifest) -> anyhow::Result<Self> {
        let _ = manifest;
        anyhow::bail!("{}: packs are not implemented yet", dir.display())
    }

    /// The pack's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Row `row`'s sample, decoded for `spec`.
    pub fn load(
        &self,
        row: usize,
        spec: &InputSpec,
        options: &DecodeOptions,
        resize_to: Option<u32>,
    ) -> Result<SourceImage, DecodeError> {
        let _ = (row, spec, options, resize_to);
        Err(DecodeError::Packed {
            shard: String::new(),
            key: String::new(),
            path: self.dir.display().to_string(),
            message: "not implemented".into(),
        })
    }
}
