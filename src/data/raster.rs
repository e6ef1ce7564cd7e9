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
//! [`DecodeLimits::max_pixels`] is refused before any pixel is read, the
//! same bound as the JPEG/PNG/TIFF decoder of [`super::decode`].
//!
//! Values are the stored ones converted to `f32` (GDAL's data type
//! conversion; no scale/offset is applied and no stretch): radiometry is
//! the caller's choice. Every error names the file, and the band where one
//! is concerned.

use std::path::Path;

use gdal::raster::ResampleAlg;
use gdal::{Dataset, Metadata};

use super::decode::DecodeLimits;

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
    #[error("{path}: GDAL cannot open it as a raster: {source}")]
    Open {
        path: String,
        source: gdal::errors::GdalError,
    },
    #[error("{path}: band {band}: cannot {what}: {source}")]
    Band {
        path: String,
        band: usize,
        what: &'static str,
        source: gdal::errors::GdalError,
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

impl RasterReader {
    /// Opens `path` read-only with any GDAL raster driver and reads its
    /// description (no pixels).
    pub fn open(path: &Path) -> Result<Self, RasterError> {
        let name = path.display().to_string();
        let dataset = Dataset::open(path).map_err(|source| RasterError::Open {
            path: name.clone(),
            source,
        })?;
        let (width, height) = dataset.raster_size();
        let mut bands = Vec::with_capacity(dataset.raster_count());
        for index in 1..=dataset.raster_count() {
            let band_err = |what, source| RasterError::Band {
                path: name.clone(),
                band: index,
                what,
                source,
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
        limits: &DecodeLimits,
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

        let plane = tw * th;
        let mut data = vec![0f32; bands.len() * plane];
        let mut valid = vec![true; plane];
        let mut mask_buf = vec![0u8; plane];
        let origin = (window.x as isize, window.y as isize);
        let size = (window.width, window.height);
        for (c, &index) in bands.iter().enumerate() {
            let band_err = |what, source| RasterError::Band {
                path: path(),
                band: index,
                what,
                source,
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
        // Written in memory, then copied into the GeoTIFF as gdal_translate
        // does: the GTiff driver compresses pixel-interleaved JPEG-YCbCr
        // tiles correctly only when all bands arrive together.
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
        let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut opts = RasterCreationOptions::new();
        for o in options {
            let (k, v) = o.split_once('=').unwrap();
            opts.set_name_value(k, v).unwrap();
        }
        drop(ds.create_copy(&gtiff, path, &opts).unwrap());
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
    fn uint16_four_bands_with_nodata_edge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u16.tif");
        write_uint16_nodata(&path, &[]);
        let reader = RasterReader::open(&path).unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height, info.bands.len()), (W, H, 4));
        for (i, band) in info.bands.iter().enumerate() {
            assert_eq!(band.index, i + 1);
            assert_eq!(band.data_type, "UInt16");
            assert_eq!(band.nodata, Some(65535.0));
            assert_eq!(band.mask, MaskSource::NoData);
        }
        let names: Vec<_> = info.bands.iter().map(|b| b.description.as_str()).collect();
        assert_eq!(names, ["blue", "green", "red", "nir"]);

        let r = reader
            .read(
                &[1, 2, 3, 4],
                full(),
                (W, H),
                Resampling::Nearest,
                &DecodeLimits::default(),
            )
            .unwrap();
        assert_eq!(
            (r.width, r.height, r.bands, r.data.len()),
            (W, H, 4, 4 * W * H)
        );
        for c in 0..4 {
            for y in 0..H {
                for x in 0..W {
                    let valid = x < W - 3;
                    assert_eq!(r.valid[y * W + x], valid, "({x}, {y})");
                    let expected = if valid { value(c, x, y) } else { NODATA };
                    assert_eq!(at(&r, c, x, y), expected as f32, "band {c} ({x}, {y})");
                }
            }
        }
        assert_eq!(r.valid_count, (W - 3) * H);
    }

    #[test]
    fn float32_values_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f32.tif");
        let f =
            |b: usize, x: usize, y: usize| (b as f32) * 0.5 + x as f32 * 0.001 - y as f32 * 0.25;
        write_tiff::<f32>(&path, W, H, 2, &[], None, &[], f);
        let reader = RasterReader::open(&path).unwrap();
        assert_eq!(reader.info().bands[0].data_type, "Float32");
        assert_eq!(reader.info().bands[0].mask, MaskSource::AllValid);
        assert_eq!(reader.info().bands[0].description, "");
        let r = reader
            .read(
                &[2, 1],
                full(),
                (W, H),
                Resampling::Nearest,
                &DecodeLimits::default(),
            )
            .unwrap();
        assert_eq!(r.valid_count, W * H);
        for y in 0..H {
            for x in 0..W {
                assert_eq!(at(&r, 0, x, y), f(1, x, y));
                assert_eq!(at(&r, 1, x, y), f(0, x, y));
            }
        }
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
                &DecodeLimits::default(),
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
    fn zstd_lossless() {
        require_gtiff_option("ZSTD");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zstd.tif");
        write_uint16_nodata(&path, &["COMPRESS=ZSTD", "TILED=YES", "PREDICTOR=2"]);
        let reader = RasterReader::open(&path).unwrap();
        assert_eq!(
            reader
                .dataset
                .metadata_item("COMPRESSION", "IMAGE_STRUCTURE")
                .as_deref(),
            Some("ZSTD")
        );
        let r = reader
            .read(
                &[3],
                full(),
                (W, H),
                Resampling::Nearest,
                &DecodeLimits::default(),
            )
            .unwrap();
        for y in 0..H {
            for x in 0..W - 3 {
                assert_eq!(at(&r, 0, x, y), value(2, x, y) as f32);
            }
        }
        assert_eq!(r.valid_count, (W - 3) * H);
    }

    #[test]
    fn jpeg_ycbcr_close_to_written() {
        require_gtiff_option("JPEG");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ycbcr.tif");
        // Smooth bands (at most 40 + 100 + 63 + 15 = 218), so that lossy
        // JPEG stays close.
        let f = |b: usize, x: usize, y: usize| (40 + b * 50 + x + y / 2) as u8;
        write_tiff::<u8>(
            &path,
            64,
            32,
            3,
            &[
                "COMPRESS=JPEG",
                "PHOTOMETRIC=YCBCR",
                "JPEG_QUALITY=95",
                "TILED=YES",
            ],
            None,
            &[],
            f,
        );
        let reader = RasterReader::open(&path).unwrap();
        let structure = |key| reader.dataset.metadata_item(key, "IMAGE_STRUCTURE");
        assert_eq!(structure("COMPRESSION").as_deref(), Some("YCbCr JPEG"));
        assert_eq!(structure("SOURCE_COLOR_SPACE").as_deref(), Some("YCbCr"));
        // GDAL converts YCbCr back to 3 RGB bands.
        assert_eq!(reader.info().bands.len(), 3);
        assert_eq!(reader.info().bands[0].data_type, "Byte");
        let window = Window {
            x: 0,
            y: 0,
            width: 64,
            height: 32,
        };
        let r = reader
            .read(
                &[1, 2, 3],
                window,
                (64, 32),
                Resampling::Nearest,
                &DecodeLimits::default(),
            )
            .unwrap();
        let mut worst = 0f32;
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..64 {
                    worst = worst.max((at(&r, c, x, y) - f(c, x, y) as f32).abs());
                }
            }
        }
        // Measured: 1 at quality 95 (GDAL 3.6.2).
        assert!(worst <= 4.0, "largest JPEG error {worst}");
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
                &DecodeLimits::default(),
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
                &DecodeLimits::default(),
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
                &DecodeLimits::default(),
            )
            .unwrap();
        assert_eq!(r.data[64 + 3], (3 * 10 + 1) as f32);
    }

    #[test]
    fn internal_mask_band_shared_by_all_bands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.tif");
        let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
        let ds = gtiff
            .create_with_band_type::<u8, _>(&path, 16, 8, 3)
            .unwrap();
        for b in 1..=3 {
            let mut band = ds.rasterband(b).unwrap();
            let mut buf = Buffer::new((16, 8), vec![b as u8 * 10; 16 * 8]);
            band.write((0, 0), (16, 8), &mut buf).unwrap();
        }
        let mut band = ds.rasterband(1).unwrap();
        band.create_mask_band(true).unwrap();
        let mut mask = band.open_mask_band().unwrap();
        // Valid everywhere except the top 2 rows.
        let m: Vec<u8> = (0..8 * 16).map(|i| if i < 32 { 0 } else { 255 }).collect();
        mask.write((0, 0), (16, 8), &mut Buffer::new((16, 8), m))
            .unwrap();
        drop(ds);
        let reader = RasterReader::open(&path).unwrap();
        for band in &reader.info().bands {
            assert_eq!(band.mask, MaskSource::PerDataset);
            assert_eq!(band.nodata, None);
        }
        let window = Window {
            x: 0,
            y: 0,
            width: 16,
            height: 8,
        };
        let r = reader
            .read(
                &[3],
                window,
                (16, 8),
                Resampling::Nearest,
                &DecodeLimits::default(),
            )
            .unwrap();
        assert_eq!(r.valid_count, 16 * 6);
        assert!(r.valid[..32].iter().all(|&v| !v));
        assert!(r.data[32..].iter().all(|&v| v == 30.0));
    }

    #[test]
    fn window_over_the_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u16.tif");
        write_uint16_nodata(&path, &[]);
        let reader = RasterReader::open(&path).unwrap();
        let limits = DecodeLimits { max_pixels: 100 };
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
        let limits = DecodeLimits::default();
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
}
