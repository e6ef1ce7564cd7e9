//! Geo-tagged image collections: manifests, importers, the location index,
//! geo-location classes, bounded decoding, raster reading through GDAL,
//! archives of scenes (`index rasters`), summaries and the built-in synthetic dataset.

pub mod augment;
pub mod band_image;
pub mod band_stats;
pub mod bands;
pub(crate) mod csv_lines;
pub mod decode;
pub mod decoded_cache;
pub mod fmow;
pub mod geo_classes;
pub mod import_csv;
pub(crate) mod jpeg;
pub mod loader;
pub mod location_index;
pub mod manifest;
pub mod pack;
pub mod raster;
pub mod scenes;
pub mod source;
pub mod summary;
pub mod synth;

pub use location_index::LocationIndex;
pub use manifest::{ImageRecord, Manifest, ManifestError, Split};
