//! Raster reading through GDAL (the library rasterio and torchgeo wrap):
//! every format the linked GDAL has a driver for (GeoTIFF in all its
//! layouts, COG, BigTIFF, VRT, JPEG2000 where the build has a driver, ...).
//!
//! [`RasterReader::open`] opens a file and describes it ([`RasterInfo`]:
//! size, per-band data type, description, NoData value and mask flags);
//! [`RasterReader::read`] reads a window of chosen bands into `f32` at a
//! target size with GDAL's `RasterIO`, which decimates (and takes a
//! suitable overview when the target is smaller than the window) with the
//! chosen [`Resampling`], and returns the valid-pixel mask that GDAL's
//! NoData values, mask bands and alpha bands define. A window above
//! [`DecodeOptions::max_pixels`] is refused before any pixel is read, the
//! same bound as the JPEG/PNG/TIFF decoder of [`super::decode`].
//!
//! Values are the stored ones converted to `f32` (GDAL's data type
//! conversion; no scale/offset is applied and no stretch): radiometry is
//! the caller's choice. Every error names the file, and the band where one
//! is concerned.

use std::path::Path;

use gdal::raster::ResampleAlg;
use gdal::{Dataset, Metadata};

use super::decode::DecodeOptions;

/// What a raster's band says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct BandInfo {
    /// 1-based band index, as GDAL numbers bands.
    pub index: usize,
    /// GDAL's name of the stored data type ("Byte", "UInt16", "Float32", ...).
    pub data_type: String,
    /// The band's description (e.g. "B04" or "nir"); empty when it has none.
    pub description: String,
    /// GDAL's colour interpretation by its name (`GDALGetColorInterpretationName`:
    /// "Red", "Green", "Blue", "Alpha", "Gray", "Undefined", ...): how
    /// `--bands rgb` finds a raster's colour bands.
    pub color: String,
    /// The NoData value, when the band has one.
    pub nodata: Option<f64>,
    /// Where the band's validity mask comes from.
    pub mask: MaskSource,
}

/// Where GDAL's mask of a band comes from (`GDALGetMaskFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSource {
    /// Every pixel is valid (`GMF_ALL_VALID`): no NoData, no mask, no alpha.
    AllValid,
    /// Pixels equal to the band's NoData value are invalid (`GMF_NODATA`).
    NoData,
    /// An alpha band: value 0 is invalid (`GMF_ALPHA`, `GMF_PER_DATASET`).
    Alpha,
    /// A mask band shared by all bands (`GMF_PER_DATASET`, e.g. a GeoTIFF's
    /// internal mask), 0 = invalid.
    PerDataset,
    /// A mask band of this band alone, 0 = invalid.
    PerBand,
}

impl MaskSource {
    /// From `GDALGetMaskFlags`' bits (gdal 0.19 does not export its
    /// flags type).
    fn from_flags(all_valid: bool, nodata: bool, alpha: bool, per_dataset: bool) -> Self {
        if all_valid {
            Self::AllValid
        } else if nodata {
            Self::NoData
        } else if alpha {
            Self::Alpha
        } else if per_dataset {
            Self::PerDataset
        } else {
            Self::PerBand
        }
    }
}

/// A raster's size and bands.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterInfo {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The bands, in GDAL's order (`bands[i].index == i + 1`).
    pub bands: Vec<BandInfo>,
}

/// A pixel window of a raster: columns `x .. x + width`, rows
/// `y .. y + height`, in pixels of the full-resolution raster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// The resampling of a read whose target size differs from its window
/// (GDAL's `GDALRIOResampleAlg`). GDAL's non-nearest kernels leave out
/// pixels that the band's mask marks invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resampling {
    Nearest,
    Bilinear,
    Cubic,
    CubicSpline,
    Lanczos,
    Average,
    Mode,
    Gauss,
}

impl Resampling {
    fn to_gdal(self) -> ResampleAlg {
        match self {
            Self::Nearest => ResampleAlg::NearestNeighbour,
            Self::Bilinear => ResampleAlg::Bilinear,
            Self::Cubic => ResampleAlg::Cubic,
            Self::CubicSpline => ResampleAlg::CubicSpline,
            Self::Lanczos => ResampleAlg::Lanczos,
            Self::Average => ResampleAlg::Average,
            Self::Mode => ResampleAlg::Mode,
            Self::Gauss => ResampleAlg::Gauss,
        }
    }
}

/// Pixels read from a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterRead {
    /// Target width (columns).
    pub width: usize,
    /// Target height (rows).
    pub height: usize,
    /// Number of bands read, C.
    pub bands: usize,
    /// Values, band-major: shape C x H x W, `data[(c * height + y) * width
    /// + x]`. At invalid pixels, whatever GDAL read (usually the NoData
    /// value): use [`Self::valid`].
    pub data: Vec<f32>,
    /// Validity, shape H x W: true where every band read is valid by its
    /// mask (NoData value, mask band or alpha band). For a decimated read the
    /// mask is read at the same target size with nearest neighbour.
    pub valid: Vec<bool>,
    /// Number of `true` in [`Self::valid`].
    pub valid_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    /// The file cannot be read at all (missing, no permission).
    #[error("{path}: cannot read: {message}")]
    Io { path: String, message: String },
    /// No GDAL driver recognises the file (GDAL says nothing more).
    #[error("{path}: not a raster format GDAL reads")]
    NotRecognised { path: String },
    /// GDAL recognised the file but could not open it; `message` is GDAL's.
    #[error("{path}: GDAL cannot open it as a raster: {message}")]
    Open { path: String, message: String },
    #[error("{path}: band {band}: cannot {what}: {message}")]
    Band {
        path: String,
        band: usize,
        what: &'static str,
        message: String,
    },
    #[error("{path}: no band {band} (the raster has bands 1 to {count})")]
    NoSuchBand {
        path: String,
        band: usize,
        count: usize,
    },
    #[error("{path}: no bands to read")]
    NoBands { path: String },
    #[error(
        "{path}: window {width} x {height} at ({x}, {y}) is empty or not inside the {raster_width} x {raster_height} raster"
    )]
    BadWindow {
        path: String,
        x: usize,
        y: usize,
        width: usize,
        height: usize,
        raster_width: usize,
        raster_height: usize,
    },
    #[error("{path}: target size {width} x {height} is empty")]
    EmptyTarget {
        path: String,
        width: usize,
        height: usize,
    },
    /// A read whose values over all bands (target width x height x bands)
    /// exceed what an RGB image at the pixel limit holds (3 x the limit),
    /// so that 13 bands cost no more memory than 3.
    #[error(
        "{path}: a {width} x {height} read of {bands} bands is {values} values, above the limit of {limit} (3 bands at the pixel limit); cut the scene into chips (geossl index rasters --chip SIZE) or read fewer bands"
    )]
    TooManyValues {
        path: String,
        width: usize,
        height: usize,
        bands: usize,
        values: u64,
        limit: u64,
    },
    #[error(
        "{path}: {what} is {width} x {height} = {pixels} pixels, above the limit of {limit} pixels"
    )]
    TooLarge {
        path: String,
        what: &'static str,
        width: usize,
        height: usize,
        pixels: u64,
        limit: u64,
    },
}

/// An open raster. Not `Sync` (a GDAL dataset is used by one thread at a
/// time); open one per worker.
pub struct RasterReader {
    path: String,
    dataset: Dataset,
    info: RasterInfo,
}

impl std::fmt::Debug for RasterReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RasterReader")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

/// Sends GDAL's own messages (its default handler prints `ERROR 4: ...` to
/// stderr) to `tracing` at debug level (target `gdal`), once per process.
/// Every GDAL failure geossl meets already becomes an error naming the file
/// (the gdal crate reads `CPLGetLastErrorMsg`, which GDAL sets before
/// calling any handler), so the stderr copy only repeated it, once per bad
/// image of a training run. `RUST_LOG=gdal=debug` shows them.
pub fn route_gdal_messages() {
    static ROUTED: std::sync::Once = std::sync::Once::new();
    ROUTED.call_once(|| {
        gdal::config::set_error_handler(|class, number, message| {
            tracing::debug!(target: "gdal", "GDAL {class:?} {number}: {message}")
        })
    });
}

/// GDAL's own words from a failed call: the CPL message the gdal crate
/// carries (`None` when GDAL gave none, as `GDALOpenEx` does for a file no
/// driver recognises), without the crate's "method returned a NULL
/// pointer" wrapping.
pub(crate) fn gdal_message(e: &gdal::errors::GdalError) -> Option<String> {
    use gdal::errors::GdalError;
    let text = match e {
        GdalError::NullPointer { msg, .. } => msg.trim().to_string(),
        GdalError::CplError { msg, .. } => msg.trim().to_string(),
        other => other.to_string(),
    };
    (!text.is_empty()).then_some(text)
}

impl RasterReader {
    /// Opens `path` read-only with any GDAL raster driver and reads its
    /// description (no pixels).
    pub fn open(path: &Path) -> Result<Self, RasterError> {
        route_gdal_messages();
        let name = path.display().to_string();
        if let Err(e) = std::fs::metadata(path) {
            return Err(RasterError::Io {
                path: name,
                message: e.to_string(),
            });
        }
        let dataset = Dataset::open(path).map_err(|e| match gdal_message(&e) {
            None => RasterError::NotRecognised { path: name.clone() },
            Some(message) => RasterError::Open {
                path: name.clone(),
                message,
            },
        })?;
        let (width, height) = dataset.raster_size();
        let mut bands = Vec::with_capacity(dataset.raster_count());
        for index in 1..=dataset.raster_count() {
            let band_err = |what, e: gdal::errors::GdalError| RasterError::Band {
                path: name.clone(),
                band: index,
                what,
                message: gdal_message(&e).unwrap_or_else(|| "GDAL gave no reason".into()),
            };
            let band = dataset
                .rasterband(index)
                .map_err(|e| band_err("open the band", e))?;
            let flags = band
                .mask_flags()
                .map_err(|e| band_err("read the mask flags", e))?;
            bands.push(BandInfo {
                index,
                data_type: band.band_type().name(),
                description: band.description().unwrap_or_default(),
                color: band.color_interpretation().name(),
                nodata: band.no_data_value(),
                mask: MaskSource::from_flags(
                    flags.is_all_valid(),
                    flags.is_nodata(),
                    flags.is_alpha(),
                    flags.is_per_dataset(),
                ),
            });
        }
        Ok(Self {
            path: name,
            dataset,
            info: RasterInfo {
                width,
                height,
                bands,
            },
        })
    }

    /// The file's path as given to [`Self::open`].
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Size and bands.
    pub fn info(&self) -> &RasterInfo {
        &self.info
    }

    /// Reads `window` of the 1-based `bands` (in that order, repeats
    /// allowed) into `f32` at `target` = (width, height), resampled with
    /// `resampling` where the sizes differ.
    ///
    /// Matches GDAL's `GDALRasterIOEx` for each band (buffer type Float32):
    /// when the target is smaller than the window GDAL reads from the
    /// overview closest to (and not coarser than) the target resolution
    /// when the file has overviews, else decimates the full-resolution
    /// pixels. The mask of each band (`GDALGetMaskBand`) is read the same
    /// way with nearest neighbour.
    ///
    /// Refused before any pixel is read: a window or a target above
    /// `limits.max_pixels` (the window bounds what GDAL may have to
    /// decode), an empty window or one not inside the raster, no bands, a
    /// band that does not exist.
    pub fn read(
        &self,
        bands: &[usize],
        window: Window,
        target: (usize, usize),
        resampling: Resampling,
        limits: &DecodeOptions,
    ) -> Result<RasterRead, RasterError> {
        let path = || self.path.clone();
        if bands.is_empty() {
            return Err(RasterError::NoBands { path: path() });
        }
        for &band in bands {
            if band == 0 || band > self.info.bands.len() {
                return Err(RasterError::NoSuchBand {
                    path: path(),
                    band,
                    count: self.info.bands.len(),
                });
            }
        }
        let inside = window.width > 0
            && window.height > 0
            && window
                .x
                .checked_add(window.width)
                .is_some_and(|r| r <= self.info.width)
            && window
                .y
                .checked_add(window.height)
                .is_some_and(|b| b <= self.info.height);
        if !inside {
            return Err(RasterError::BadWindow {
                path: path(),
                x: window.x,
                y: window.y,
                width: window.width,
                height: window.height,
                raster_width: self.info.width,
                raster_height: self.info.height,
            });
        }
        let (tw, th) = target;
        if tw == 0 || th == 0 {
            return Err(RasterError::EmptyTarget {
                path: path(),
                width: tw,
                height: th,
            });
        }
        for (what, w, h) in [("window", window.width, window.height), ("target", tw, th)] {
            let pixels = w as u64 * h as u64;
            if pixels > limits.max_pixels {
                return Err(RasterError::TooLarge {
                    path: path(),
                    what,
                    width: w,
                    height: h,
                    pixels,
                    limit: limits.max_pixels,
                });
            }
        }
        // What is allocated: the target's values over all bands read.
        let values = tw as u64 * th as u64 * bands.len() as u64;
        if values > 3 * limits.max_pixels {
            return Err(RasterError::TooManyValues {
                path: path(),
                width: tw,
                height: th,
                bands: bands.len(),
                values,
                limit: 3 * limits.max_pixels,
            });
        }

        let plane = tw * th;
        let mut data = vec![0f32; bands.len() * plane];
        let mut valid = vec![true; plane];
        let mut mask_buf = vec![0u8; plane];
        let origin = (window.x as isize, window.y as isize);
        let size = (window.width, window.height);
        for (c, &index) in bands.iter().enumerate() {
            let band_err = |what, e: gdal::errors::GdalError| RasterError::Band {
                path: path(),
                band: index,
                what,
                message: gdal_message(&e).unwrap_or_else(|| "GDAL gave no reason".into()),
            };
            let band = self
                .dataset
                .rasterband(index)
                .map_err(|e| band_err("open the band", e))?;
            band.read_into_slice::<f32>(
                origin,
                size,
                target,
                &mut data[c * plane..(c + 1) * plane],
                Some(resampling.to_gdal()),
            )
            .map_err(|e| band_err("read pixels", e))?;
            if self.info.bands[index - 1].mask == MaskSource::AllValid {
                continue;
            }
            let mask = band
                .open_mask_band()
                .map_err(|e| band_err("open the mask band", e))?;
            mask.read_into_slice::<u8>(
                origin,
                size,
                target,
                &mut mask_buf,
                Some(ResampleAlg::NearestNeighbour),
            )
            .map_err(|e| band_err("read the mask", e))?;
            for (v, &m) in valid.iter_mut().zip(&mask_buf) {
                *v &= m != 0;
            }
        }
        let valid_count = valid.iter().filter(|&&v| v).count();
        Ok(RasterRead {
            width: tw,
            height: th,
            bands: bands.len(),
            data,
            valid,
            valid_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdal::raster::{Buffer, GdalType, RasterCreationOptions};
    use gdal::DriverManager;

    const W: usize = 40;
    const H: usize = 24;
    const NODATA: u16 = 65535;

    /// Pattern value of band `b` (0-based) at (x, y).
    fn value(b: usize, x: usize, y: usize) -> u16 {
        (100 + b * 1000 + x * 7 + y * 13) as u16
    }

    /// Asserts that the GTiff driver of the linked GDAL lists `word` (a
    /// compression) among its creation options. Debian's GDAL 3.6.2
    /// (libgdal-dev, scripts/setup.sh) has ZSTD and JPEG; a GDAL without
    /// them fails here rather than skipping silently.
    fn require_gtiff_option(word: &str) {
        let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
        let list = driver
            .metadata_item("DMD_CREATIONOPTIONLIST", "")
            .unwrap_or_default();
        assert!(
            list.contains(word),
            "the linked GDAL's GTiff driver cannot write {word}"
        );
    }

    /// A GDAL in-memory (MEM) raster: `bands` planes of `w` x `h` from
    /// `f(band, x, y)`, with per-band NoData `nodata` and descriptions.
    fn mem_raster<T: GdalType + Copy>(
        w: usize,
        h: usize,
        bands: usize,
        nodata: Option<f64>,
        descriptions: &[&str],
        f: impl Fn(usize, usize, usize) -> T,
    ) -> Dataset {
        let mem = DriverManager::get_driver_by_name("MEM").unwrap();
        let ds = mem.create_with_band_type::<T, _>("", w, h, bands).unwrap();
        for b in 0..bands {
            let mut band = ds.rasterband(b + 1).unwrap();
            if let Some(nd) = nodata {
                band.set_no_data_value(Some(nd)).unwrap();
            }
            if let Some(d) = descriptions.get(b) {
                band.set_description(d).unwrap();
            }
            let data: Vec<T> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| f(b, x, y))
                .collect();
            let mut buf = Buffer::new((w, h), data);
            band.write((0, 0), (w, h), &mut buf).unwrap();
        }
        ds
    }

    /// Copies `ds` into `path` with the GDAL driver `driver` ("GTiff",
    /// "COG") and its creation options `options` ("KEY=VALUE"), as
    /// gdal_translate does: the GTiff driver compresses pixel-interleaved
    /// JPEG-YCbCr tiles correctly only when all bands arrive together.
    fn create_copy(ds: &Dataset, driver: &str, path: &Path, options: &[&str]) {
        let driver = DriverManager::get_driver_by_name(driver).unwrap();
        let mut opts = RasterCreationOptions::new();
        for o in options {
            let (k, v) = o.split_once('=').unwrap();
            opts.set_name_value(k, v).unwrap();
        }
        drop(ds.create_copy(&driver, path, &opts).unwrap());
    }

    /// Writes a GeoTIFF with GDAL: `bands` planes of `w` x `h` from `f`,
    /// with creation options `options` and per-band NoData `nodata`.
    #[allow(clippy::too_many_arguments)]
    fn write_tiff<T: GdalType + Copy>(
        path: &Path,
        w: usize,
        h: usize,
        bands: usize,
        options: &[&str],
        nodata: Option<f64>,
        descriptions: &[&str],
        f: impl Fn(usize, usize, usize) -> T,
    ) {
        let ds = mem_raster(w, h, bands, nodata, descriptions, f);
        create_copy(&ds, "GTiff", path, options);
    }

    /// uint16, 4 bands, NoData = 65535 in the last 3 columns.
    fn write_uint16_nodata(path: &Path, options: &[&str]) {
        write_tiff::<u16>(
            path,
            W,
            H,
            4,
            options,
            Some(NODATA as f64),
            &["blue", "green", "red", "nir"],
            |b, x, y| if x >= W - 3 { NODATA } else { value(b, x, y) },
        );
    }

    fn full() -> Window {
        Window {
            x: 0,
            y: 0,
            width: W,
            height: H,
        }
    }

    fn at(r: &RasterRead, c: usize, x: usize, y: usize) -> f32 {
        r.data[(c * r.height + y) * r.width + x]
    }

    #[test]
    fn tiled_band_interleaved_window_of_chosen_bands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiled.tif");
        write_uint16_nodata(
            &path,
            &[
                "TILED=YES",
                "BLOCKXSIZE=16",
                "BLOCKYSIZE=16",
                "INTERLEAVE=BAND",
                "COMPRESS=DEFLATE",
                "PREDICTOR=2",
            ],
        );
        let reader = RasterReader::open(&path).unwrap();
        let structure = |key| reader.dataset.metadata_item(key, "IMAGE_STRUCTURE");
        assert_eq!(structure("INTERLEAVE").as_deref(), Some("BAND"));
        assert_eq!(structure("COMPRESSION").as_deref(), Some("DEFLATE"));
        assert_eq!(reader.dataset.rasterband(1).unwrap().block_size(), (16, 16));
        let window = Window {
            x: 30,
            y: 5,
            width: 10,
            height: 12,
        };
        let r = reader
            .read(
                &[4, 1],
                window,
                (10, 12),
                Resampling::Nearest,
                &DecodeOptions::default(),
            )
            .unwrap();
        for y in 0..12 {
            for x in 0..10 {
                let (sx, sy) = (30 + x, 5 + y);
                let valid = sx < W - 3;
                assert_eq!(r.valid[y * 10 + x], valid);
                if valid {
                    assert_eq!(at(&r, 0, x, y), value(3, sx, sy) as f32);
                    assert_eq!(at(&r, 1, x, y), value(0, sx, sy) as f32);
                }
            }
        }
        assert_eq!(r.valid_count, 7 * 12);
    }

    #[test]
    fn decimated_read_averages_and_keeps_nodata_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u16.tif");
        write_uint16_nodata(&path, &[]);
        let reader = RasterReader::open(&path).unwrap();
        // 40 x 24 -> 10 x 6: each target pixel averages a 4 x 4 block.
        let r = reader
            .read(
                &[1],
                full(),
                (10, 6),
                Resampling::Average,
                &DecodeOptions::default(),
            )
            .unwrap();
        for ty in 0..6 {
            for tx in 0..10 {
                let v = at(&r, 0, tx, ty);
                let valid = r.valid[ty * 10 + tx];
                let cols: Vec<usize> = (4 * tx..4 * tx + 4).filter(|&x| x < W - 3).collect();
                // The last target column covers 1 valid + 3 NoData columns;
                // its mask is read with nearest neighbour (column 38).
                assert_eq!(valid, tx < 9, "({tx}, {ty})");
                if cols.is_empty() {
                    continue;
                }
                let n = (cols.len() * 4) as f64;
                let mean: f64 = cols
                    .iter()
                    .flat_map(|&x| (4 * ty..4 * ty + 4).map(move |y| value(0, x, y) as f64))
                    .sum::<f64>()
                    / n;
                // NoData is left out of the average, also in the edge column.
                assert!(
                    (v as f64 - mean).abs() <= 1.0,
                    "({tx}, {ty}): {v} vs {mean}"
                );
            }
        }
    }

    #[test]
    fn overviews_are_used_for_a_smaller_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ovr.tif");
        write_tiff::<u16>(&path, 64, 64, 1, &["TILED=YES"], None, &[], |_, x, y| {
            (x * 10 + y) as u16
        });
        {
            // An overview whose values differ from any decimation of the
            // full resolution shows which one RasterIO read.
            let mut ds = Dataset::open_ex(
                &path,
                gdal::DatasetOptions {
                    open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE
                        | gdal::GdalOpenFlags::GDAL_OF_RASTER,
                    ..Default::default()
                },
            )
            .unwrap();
            ds.build_overviews("NEAREST", &[2], &[]).unwrap();
            let band = ds.rasterband(1).unwrap();
            let mut ovr = band.overview(0).unwrap();
            assert_eq!(ovr.size(), (32, 32));
            let mut buf = Buffer::new((32, 32), vec![7u16; 32 * 32]);
            ovr.write((0, 0), (32, 32), &mut buf).unwrap();
        }
        let reader = RasterReader::open(&path).unwrap();
        let window = Window {
            x: 0,
            y: 0,
            width: 64,
            height: 64,
        };
        let r = reader
            .read(
                &[1],
                window,
                (32, 32),
                Resampling::Nearest,
                &DecodeOptions::default(),
            )
            .unwrap();
        assert!(r.data.iter().all(|&v| v == 7.0), "overview not used");
        // The full resolution stays readable.
        let r = reader
            .read(
                &[1],
                window,
                (64, 64),
                Resampling::Nearest,
                &DecodeOptions::default(),
            )
            .unwrap();
        assert_eq!(r.data[64 + 3], (3 * 10 + 1) as f32);
    }

    #[test]
    fn window_over_the_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u16.tif");
        write_uint16_nodata(&path, &[]);
        let reader = RasterReader::open(&path).unwrap();
        let limits = DecodeOptions {
            max_pixels: 100,
            ..Default::default()
        };
        let window = Window {
            x: 0,
            y: 0,
            width: 20,
            height: 10,
        };
        let err = reader
            .read(&[1], window, (5, 5), Resampling::Average, &limits)
            .unwrap_err();
        assert!(matches!(
            err,
            RasterError::TooLarge {
                what: "window",
                pixels: 200,
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains("u16.tif") && message.contains("limit of 100"),
            "{message}"
        );
        // At the limit it reads.
        let small = Window {
            width: 10,
            ..window
        };
        reader
            .read(&[1], small, (5, 5), Resampling::Average, &limits)
            .unwrap();
        // 13 bands cost what 3 do: 4 bands of 10 x 10 are 400 values, over
        // 3 x 100 (the read's memory, whatever the window).
        let err = reader
            .read(&[1, 2, 3, 4], small, (10, 10), Resampling::Average, &limits)
            .unwrap_err();
        assert!(
            matches!(
                err,
                RasterError::TooManyValues {
                    values: 400,
                    limit: 300,
                    ..
                }
            ),
            "{err}"
        );
        reader
            .read(&[1, 2, 3], small, (10, 10), Resampling::Average, &limits)
            .unwrap();
    }

    #[test]
    fn errors_name_the_file_and_band() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.tif");
        let err = RasterReader::open(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.tif"), "{err}");
        let junk = dir.path().join("junk.tif");
        std::fs::write(&junk, b"not a raster at all").unwrap();
        let err = RasterReader::open(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.tif"), "{err}");

        let path = dir.path().join("u16.tif");
        write_uint16_nodata(&path, &[]);
        let reader = RasterReader::open(&path).unwrap();
        let limits = DecodeOptions::default();
        let err = reader
            .read(&[1, 5], full(), (W, H), Resampling::Nearest, &limits)
            .unwrap_err();
        assert!(matches!(
            err,
            RasterError::NoSuchBand {
                band: 5,
                count: 4,
                ..
            }
        ));
        assert!(err.to_string().contains("u16.tif"));
        let outside = Window { x: 1, ..full() };
        let err = reader
            .read(&[1], outside, (W, H), Resampling::Nearest, &limits)
            .unwrap_err();
        assert!(matches!(err, RasterError::BadWindow { .. }), "{err}");
        assert!(matches!(
            reader.read(&[], full(), (W, H), Resampling::Nearest, &limits),
            Err(RasterError::NoBands { .. })
        ));
    }

    /// The acceptance matrix of issue 16: a GeoTIFF of each layout that
    /// researchers bring, written by GDAL itself (MEM + CreateCopy with the
    /// GTiff or COG driver and creation options, as gdal_translate does),
    /// checked from the file's own TIFF tags (so a creation option that
    /// GDAL ignored fails here, not later) and decoded through
    /// [`RasterReader::read`] against the written pixels and validity.
    mod matrix {
        use super::*;

        /// Odd sizes on purpose: no layout divides into whole blocks
        /// (partial tiles and strips, odd overview sizes).
        const MW: usize = 37;
        const MH: usize = 29;

        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Px {
            U8,
            U16,
            F32,
        }

        /// Which pixels are written invalid, and how.
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Invalid {
            None,
            /// This NoData value in the last 3 columns of every band.
            NoData(f64),
            /// A per-dataset mask band, written into the file
            /// (GDAL_TIFF_INTERNAL_MASK): top 2 rows and first column
            /// invalid.
            Mask,
        }

        /// What the first IFD (the full-resolution image, also in a COG)
        /// must say, in TIFF 6.0 tag values.
        struct Tags {
            /// Header version 43 (BigTIFF) rather than 42.
            bigtiff: bool,
            /// 259: 1 none, 5 LZW, 7 JPEG, 8 Deflate, 50000 ZSTD.
            compression: u16,
            /// 317: 1 none, 2 horizontal differencing, 3 floating point.
            predictor: u16,
            /// 284: 1 chunky (pixel interleave), 2 planar (band interleave).
            planar: u16,
            /// 262: 1 BlackIsZero, 2 RGB, 6 YCbCr.
            photometric: u16,
            /// 322 (TileWidth) present: tiled, else strips.
            tiled: bool,
        }

        struct Case {
            name: &'static str,
            driver: &'static str,
            px: Px,
            bands: usize,
            options: &'static [&'static str],
            invalid: Invalid,
            /// Largest |decoded - written| allowed: 0 for lossless codecs.
            tolerance: f32,
            tags: Tags,
            /// Overviews the file must have (band 1).
            overviews: usize,
        }

        const fn tags(compression: u16, predictor: u16, planar: u16, photometric: u16) -> Tags {
            Tags {
                bigtiff: false,
                compression,
                predictor,
                planar,
                photometric,
                tiled: false,
            }
        }

        const fn tiled(t: Tags) -> Tags {
            Tags { tiled: true, ..t }
        }

        const TILE16: [&str; 3] = ["TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16"];

        fn cases() -> Vec<Case> {
            let t = |extra: &[&'static str]| -> &'static [&'static str] {
                let mut v: Vec<&'static str> = TILE16.to_vec();
                v.extend_from_slice(extra);
                v.leak()
            };
            vec![
                Case {
                    name: "strip, uncompressed, uint8, 1 band",
                    driver: "GTiff",
                    px: Px::U8,
                    bands: 1,
                    options: &[],
                    invalid: Invalid::None,
                    tolerance: 0.0,
                    tags: tags(1, 1, 1, 1),
                    overviews: 0,
                },
                Case {
                    name: "strip, pixel interleave, LZW, uint8, 3 bands",
                    driver: "GTiff",
                    px: Px::U8,
                    bands: 3,
                    options: &["COMPRESS=LZW", "INTERLEAVE=PIXEL"],
                    invalid: Invalid::None,
                    tolerance: 0.0,
                    tags: tags(5, 1, 1, 2),
                    overviews: 0,
                },
                Case {
                    // RGB + near-infrared: the 4th band is data, not alpha.
                    name: "tiled, pixel interleave, LZW, uint8, 4 bands",
                    driver: "GTiff",
                    px: Px::U8,
                    bands: 4,
                    options: t(&["COMPRESS=LZW", "INTERLEAVE=PIXEL"]),
                    invalid: Invalid::None,
                    tolerance: 0.0,
                    tags: tiled(tags(5, 1, 1, 2)),
                    overviews: 0,
                },
                Case {
                    name: "tiled, band interleave, LZW + predictor 2, uint16, 4 bands, NoData 65535",
                    driver: "GTiff",
                    px: Px::U16,
                    bands: 4,
                    options: t(&["COMPRESS=LZW", "PREDICTOR=2", "INTERLEAVE=BAND"]),
                    invalid: Invalid::NoData(65535.0),
                    tolerance: 0.0,
                    tags: tiled(tags(5, 2, 2, 1)),
                    overviews: 0,
                },
                Case {
                    // Sentinel-2 L1C's NoData is 0.
                    name: "strip, band interleave, Deflate + predictor 2, uint16, 13 bands, NoData 0",
                    driver: "GTiff",
                    px: Px::U16,
                    bands: 13,
                    options: &["COMPRESS=DEFLATE", "PREDICTOR=2", "INTERLEAVE=BAND"],
                    invalid: Invalid::NoData(0.0),
                    tolerance: 0.0,
                    tags: tags(8, 2, 2, 1),
                    overviews: 0,
                },
                Case {
                    name: "tiled, pixel interleave, Deflate + predictor 3, float32, 4 bands, NoData -9999",
                    driver: "GTiff",
                    px: Px::F32,
                    bands: 4,
                    options: t(&["COMPRESS=DEFLATE", "PREDICTOR=3", "INTERLEAVE=PIXEL"]),
                    invalid: Invalid::NoData(-9999.0),
                    tolerance: 0.0,
                    tags: tiled(tags(8, 3, 1, 1)),
                    overviews: 0,
                },
                Case {
                    name: "tiled, band interleave, ZSTD + predictor 2, uint16, 13 bands, internal mask",
                    driver: "GTiff",
                    px: Px::U16,
                    bands: 13,
                    options: t(&["COMPRESS=ZSTD", "PREDICTOR=2", "INTERLEAVE=BAND"]),
                    invalid: Invalid::Mask,
                    tolerance: 0.0,
                    tags: tiled(tags(50000, 2, 2, 1)),
                    overviews: 0,
                },
                Case {
                    name: "strip, ZSTD + predictor 3, float32, 1 band",
                    driver: "GTiff",
                    px: Px::F32,
                    bands: 1,
                    options: &["COMPRESS=ZSTD", "PREDICTOR=3"],
                    invalid: Invalid::None,
                    tolerance: 0.0,
                    tags: tags(50000, 3, 1, 1),
                    overviews: 0,
                },
                Case {
                    name: "tiled, JPEG YCbCr quality 90, uint8, 3 bands",
                    driver: "GTiff",
                    px: Px::U8,
                    bands: 3,
                    options: t(&["COMPRESS=JPEG", "PHOTOMETRIC=YCBCR", "JPEG_QUALITY=90"]),
                    invalid: Invalid::None,
                    tolerance: JPEG_TOLERANCE,
                    tags: tiled(tags(7, 1, 1, 6)),
                    overviews: 0,
                },
                Case {
                    // As NAIP and other orthophotos ship: JPEG-in-TIFF with a mask.
                    name: "strip, JPEG YCbCr quality 90, uint8, 3 bands, internal mask",
                    driver: "GTiff",
                    px: Px::U8,
                    bands: 3,
                    options: &["COMPRESS=JPEG", "PHOTOMETRIC=YCBCR", "JPEG_QUALITY=90"],
                    invalid: Invalid::Mask,
                    tolerance: JPEG_TOLERANCE,
                    tags: tags(7, 1, 1, 6),
                    overviews: 0,
                },
                Case {
                    name: "BigTIFF, tiled, band interleave, Deflate, uint16, 4 bands, NoData 65535",
                    driver: "GTiff",
                    px: Px::U16,
                    bands: 4,
                    options: t(&["BIGTIFF=YES", "COMPRESS=DEFLATE", "INTERLEAVE=BAND"]),
                    invalid: Invalid::NoData(65535.0),
                    tolerance: 0.0,
                    tags: Tags {
                        bigtiff: true,
                        ..tiled(tags(8, 1, 2, 1))
                    },
                    overviews: 0,
                },
                Case {
                    name: "COG, Deflate + predictor 2, uint16, 4 bands, overviews",
                    driver: "COG",
                    px: Px::U16,
                    bands: 4,
                    options: &[
                        "COMPRESS=DEFLATE",
                        "PREDICTOR=YES",
                        "BLOCKSIZE=16",
                        "RESAMPLING=AVERAGE",
                    ],
                    invalid: Invalid::None,
                    tolerance: 0.0,
                    tags: tiled(tags(8, 2, 1, 1)),
                    // 37 x 29 -> 19 x 15 -> 10 x 8: until it fits a 16 px tile.
                    overviews: 2,
                },
                Case {
                    name: "COG, ZSTD + predictor 3, float32, 1 band, NoData -9999, overviews",
                    driver: "COG",
                    px: Px::F32,
                    bands: 1,
                    options: &[
                        "COMPRESS=ZSTD",
                        "PREDICTOR=FLOATING_POINT",
                        "BLOCKSIZE=16",
                        "RESAMPLING=AVERAGE",
                    ],
                    invalid: Invalid::NoData(-9999.0),
                    tolerance: 0.0,
                    tags: tiled(tags(50000, 3, 1, 1)),
                    overviews: 2,
                },
            ]
        }

        /// Largest JPEG error allowed on the smooth uint8 pattern at
        /// quality 90 (measured with GDAL 3.6.2: 14, at the edges of the
        /// partial tiles and strips, with 4:2:0 chroma subsampling); the
        /// mean error must also stay below [`JPEG_MEAN_TOLERANCE`]. RGB
        /// bands read as YCbCr, or shifted by a tile, are off by tens.
        const JPEG_TOLERANCE: f32 = 16.0;
        const JPEG_MEAN_TOLERANCE: f64 = 2.0;

        /// The written value of band `b` (0-based) at (x, y) before NoData.
        fn pattern(px: Px, b: usize, x: usize, y: usize) -> f64 {
            match px {
                // Smooth (steps of 2), so lossy JPEG stays close: 20..=247.
                Px::U8 => (20 + (b * 13) % 100 + 2 * x + 2 * y) as f64,
                // Above 255 and 32767 (byte order, sign): 100..=54540.
                Px::U16 => (100 + 3000 * b + 37 * x + 611 * y) as f64,
                // Negative and fractional, not only round steps.
                Px::F32 => {
                    (b as f32 * 0.75 - 3.0 + x as f32 * 0.125 - y as f32 * 0.3
                        + (x * y) as f32 / 1024.0) as f64
                }
            }
        }

        fn valid_at(invalid: Invalid, x: usize, y: usize) -> bool {
            match invalid {
                Invalid::None => true,
                Invalid::NoData(_) => x < MW - 3,
                Invalid::Mask => y >= 2 && x >= 1,
            }
        }

        fn written(case: &Case, b: usize, x: usize, y: usize) -> f64 {
            match case.invalid {
                Invalid::NoData(v) if !valid_at(case.invalid, x, y) => v,
                _ => pattern(case.px, b, x, y),
            }
        }

        /// Sentinel-2's band names for 13 bands, else "b1", "b2", ...
        fn band_names(bands: usize) -> Vec<String> {
            const S2: [&str; 13] = [
                "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
                "B12",
            ];
            if bands == 13 {
                S2.iter().map(|s| s.to_string()).collect()
            } else {
                (1..=bands).map(|i| format!("b{i}")).collect()
            }
        }

        fn write(case: &Case, path: &Path) {
            let names = band_names(case.bands);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let nodata = match case.invalid {
                Invalid::NoData(v) => Some(v),
                _ => None,
            };
            let f = |b, x, y| written(case, b, x, y);
            let (w, h, n) = (MW, MH, case.bands);
            let ds = match case.px {
                Px::U8 => mem_raster(w, h, n, nodata, &names, |b, x, y| f(b, x, y) as u8),
                Px::U16 => mem_raster(w, h, n, nodata, &names, |b, x, y| f(b, x, y) as u16),
                Px::F32 => mem_raster(w, h, n, nodata, &names, |b, x, y| f(b, x, y) as f32),
            };
            if case.invalid == Invalid::Mask {
                let mut band = ds.rasterband(1).unwrap();
                band.create_mask_band(true).unwrap();
                let mut mask = band.open_mask_band().unwrap();
                let m: Vec<u8> = (0..h)
                    .flat_map(|y| {
                        (0..w).map(move |x| 255 * u8::from(valid_at(Invalid::Mask, x, y)))
                    })
                    .collect();
                mask.write((0, 0), (w, h), &mut Buffer::new((w, h), m))
                    .unwrap();
            }
            // GDAL 3.6's GTiff writes a mask into a .msk side-car file
            // unless told to keep it inside (the default from GDAL 3.9).
            gdal::config::set_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK", "YES").unwrap();
            create_copy(&ds, case.driver, path, case.options);
            gdal::config::clear_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK").unwrap();
        }

        /// The TIFF header's version (42 classic, 43 BigTIFF) and the
        /// single-valued SHORT / LONG / LONG8 tags of the first IFD as
        /// (tag, value); other types read as `u64::MAX`.
        fn first_ifd(bytes: &[u8]) -> (u64, Vec<(u16, u64)>) {
            let little = match &bytes[..2] {
                b"II" => true,
                b"MM" => false,
                other => panic!("not a TIFF header: {other:?}"),
            };
            let uint = |at: usize, n: usize| -> u64 {
                let b = &bytes[at..at + n];
                let mut v = 0u64;
                for i in 0..n {
                    v = v << 8 | b[if little { n - 1 - i } else { i }] as u64;
                }
                v
            };
            let version = uint(2, 2);
            // Classic: 4-byte offsets, 2-byte entry count, 12-byte entries;
            // BigTIFF: 8-byte offsets (at byte 8), 8-byte count, 20-byte entries.
            let (offset, count, entry) = if version == 43 {
                (8, 8, 20)
            } else {
                (4, 2, 12)
            };
            let ifd = uint(if version == 43 { 8 } else { 4 }, offset) as usize;
            let entries = (0..uint(ifd, count) as usize).map(|i| {
                let e = ifd + count + i * entry;
                let value = e + 4 + offset; // after tag, type and count
                let v = match uint(e + 2, 2) {
                    3 => uint(value, 2),
                    4 => uint(value, 4),
                    16 => uint(value, 8),
                    _ => u64::MAX,
                };
                (uint(e, 2) as u16, v)
            });
            (version, entries.collect())
        }

        fn check_tags(case: &Case, path: &Path) {
            let bytes = std::fs::read(path).unwrap();
            let (version, entries) = first_ifd(&bytes);
            let tag = |t: u16| entries.iter().find(|e| e.0 == t).map(|e| e.1);
            let t = &case.tags;
            let name = case.name;
            assert_eq!(
                version,
                if t.bigtiff { 43 } else { 42 },
                "{name}: TIFF version"
            );
            assert_eq!(tag(259), Some(t.compression.into()), "{name}: Compression");
            assert_eq!(
                tag(317).unwrap_or(1),
                u64::from(t.predictor),
                "{name}: Predictor"
            );
            assert_eq!(
                tag(284).unwrap_or(1),
                u64::from(t.planar),
                "{name}: PlanarConfiguration"
            );
            assert_eq!(
                tag(262),
                Some(t.photometric.into()),
                "{name}: PhotometricInterpretation"
            );
            assert_eq!(tag(322).is_some(), t.tiled, "{name}: TileWidth present");
            let msk = format!("{}.msk", path.display());
            assert!(
                !Path::new(&msk).exists(),
                "{name}: the mask went to a side-car file"
            );
        }

        fn check_info(case: &Case, reader: &RasterReader) {
            let info = reader.info();
            let name = case.name;
            assert_eq!(
                (info.width, info.height, info.bands.len()),
                (MW, MH, case.bands),
                "{name}"
            );
            let data_type = match case.px {
                Px::U8 => "Byte",
                Px::U16 => "UInt16",
                Px::F32 => "Float32",
            };
            let (nodata, mask) = match case.invalid {
                Invalid::None => (None, MaskSource::AllValid),
                Invalid::NoData(v) => (Some(v), MaskSource::NoData),
                Invalid::Mask => (None, MaskSource::PerDataset),
            };
            for (band, description) in info.bands.iter().zip(band_names(case.bands)) {
                let b = band.index;
                assert_eq!(band.data_type, data_type, "{name}: band {b}");
                assert_eq!(band.nodata, nodata, "{name}: band {b}");
                assert_eq!(band.mask, mask, "{name}: band {b}");
                assert_eq!(band.description, description, "{name}: band {b}");
            }
        }

        /// Every band, full window, full size: the written values (within
        /// the case's tolerance) and the written validity.
        fn check_pixels(case: &Case, reader: &RasterReader) -> (f32, f64) {
            let all: Vec<usize> = (1..=case.bands).collect();
            let window = Window {
                x: 0,
                y: 0,
                width: MW,
                height: MH,
            };
            let limits = DecodeOptions::default();
            let r = reader
                .read(&all, window, (MW, MH), Resampling::Nearest, &limits)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let name = case.name;
            let (mut worst, mut sum) = (0f32, 0f64);
            for c in 0..case.bands {
                for y in 0..MH {
                    for x in 0..MW {
                        let want = written(case, c, x, y) as f32;
                        let got = at(&r, c, x, y);
                        if case.tolerance == 0.0 {
                            assert_eq!(got, want, "{name}: band {} at ({x}, {y})", c + 1);
                        }
                        worst = worst.max((got - want).abs());
                        sum += f64::from((got - want).abs());
                    }
                }
            }
            let mean = sum / (case.bands * MW * MH) as f64;
            assert!(
                worst <= case.tolerance && mean <= JPEG_MEAN_TOLERANCE,
                "{name}: largest error {worst}, mean error {mean}"
            );
            for y in 0..MH {
                for x in 0..MW {
                    let want = valid_at(case.invalid, x, y);
                    assert_eq!(r.valid[y * MW + x], want, "{name}: validity at ({x}, {y})");
                }
            }
            let count = (0..MH)
                .flat_map(|y| (0..MW).map(move |x| (x, y)))
                .filter(|&(x, y)| valid_at(case.invalid, x, y))
                .count();
            assert_eq!(r.valid_count, count, "{name}: valid_count");
            (worst, mean)
        }

        /// The overview count, and that a read at the first overview's
        /// size takes the overview: it equals the overview's own pixels,
        /// which hold averages that no full-resolution pixel has (so no
        /// nearest-neighbour decimation of the full resolution gives them).
        fn check_overviews(case: &Case, reader: &RasterReader) {
            let name = case.name;
            let band = reader.dataset.rasterband(1).unwrap();
            let count = band.overview_count().unwrap() as usize;
            assert_eq!(count, case.overviews, "{name}: overviews");
            if count == 0 {
                return;
            }
            let ovr = band.overview(0).unwrap();
            let size = ovr.size();
            let own = ovr.read_as::<f32>((0, 0), size, size, None).unwrap();
            let window = Window {
                x: 0,
                y: 0,
                width: MW,
                height: MH,
            };
            let limits = DecodeOptions::default();
            let r = reader
                .read(&[1], window, size, Resampling::Nearest, &limits)
                .unwrap();
            assert_eq!(
                r.data,
                own.data(),
                "{name}: read at {size:?} is not the overview"
            );
            let full: Vec<f32> = (0..MH)
                .flat_map(|y| (0..MW).map(move |x| (x, y)))
                .map(|(x, y)| written(case, 0, x, y) as f32)
                .collect();
            assert!(
                own.data().iter().any(|v| !full.contains(v)),
                "{name}: the overview holds only full-resolution values"
            );
        }

        #[test]
        fn every_layout_decodes_to_the_written_pixels() {
            require_gtiff_option("ZSTD");
            require_gtiff_option("JPEG");
            DriverManager::get_driver_by_name("COG").expect("the linked GDAL has no COG driver");
            let dir = tempfile::tempdir().unwrap();
            for (i, case) in cases().iter().enumerate() {
                let path = dir.path().join(format!("case{i}.tif"));
                write(case, &path);
                check_tags(case, &path);
                let reader = RasterReader::open(&path).unwrap();
                check_info(case, &reader);
                let (worst, mean) = check_pixels(case, &reader);
                if case.tolerance > 0.0 {
                    eprintln!("{}: JPEG error largest {worst}, mean {mean:.3}", case.name);
                }
                check_overviews(case, &reader);
            }
        }
    }
}
