//! The decoded image as the augmentation sees it ([`SourceImage`]): the
//! RGB8 image of a JPEG or PNG under the default input ([`InputSpec::rgb`],
//! the paper's path, unchanged), or a C-band image of unit values
//! ([`BandImage`]) for every other file and every other input.
//!
//! A [`BandImage`] holds the selected bands after radiometry ("unit"
//! values, clamped to [0, 1]; see [`super::bands`]) and the validity of
//! each pixel (GDAL's NoData values, mask and alpha bands: a pixel invalid
//! in any selected band is invalid). Invalid pixels hold their band's mean
//! unit value over the valid pixels, so that resampling and blurring near
//! a NoData border mix in a neutral value rather than the NoData value; the
//! validity is carried through crops, resizes and flips, and the view's
//! invalid pixels end at [`super::bands::NODATA_FILL`] after normalisation.
//!
//! GDAL rasters are read through [`RasterReader`] (the manifest's crop box
//! as the window); JPEG and PNG under another input are decoded by
//! [`super::decode`] (red, green, blue as bands 1, 2, 3) and converted.

use std::path::Path;

use image::RgbImage;

use super::bands::{BandSelection, InputSpec, Radiometry};
use super::decode::{catch_panic, decode_rgb8_file, is_jpeg_or_png, DecodeError, DecodeOptions};
use super::manifest::CropBox;
use super::raster::{RasterError, RasterInfo, RasterReader, Resampling, Window};

/// C bands of unit values with their valid-pixel mask.
#[derive(Debug, Clone, PartialEq)]
pub struct BandImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bands, C.
    pub channels: usize,
    /// Unit values in [0, 1], band-major C x H x W:
    /// `data[(c * height + y) * width + x]`. Invalid pixels hold their
    /// band's mean over the valid ones (0 when none is valid).
    pub data: Vec<f32>,
    /// H x W: true where every band is valid.
    pub valid: Vec<bool>,
    /// Number of `true` in [`Self::valid`].
    pub valid_count: usize,
}

impl BandImage {
    /// Pixels per band, H x W.
    pub fn plane(&self) -> usize {
        self.width * self.height
    }

    /// Band `c`'s values, H x W.
    pub fn band(&self, c: usize) -> &[f32] {
        let p = self.plane();
        &self.data[c * p..(c + 1) * p]
    }

    /// The three channels of an RGB8 image as unit values (v / 255), every
    /// pixel valid.
    pub fn from_rgb8(img: &RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * w * h + i] = p[c] as f32 / 255.0;
            }
        }
        Self {
            width: w,
            height: h,
            channels: 3,
            data,
            valid: vec![true; w * h],
            valid_count: w * h,
        }
    }

    /// Sets every invalid pixel of each band to that band's mean over the
    /// valid pixels (0 when none is valid), so that filters reading across
    /// a NoData border mix in a neutral value.
    pub fn fill_invalid_with_band_means(&mut self) {
        if self.valid_count == self.plane() {
            return;
        }
        let p = self.plane();
        for c in 0..self.channels {
            let band = &mut self.data[c * p..(c + 1) * p];
            let sum: f64 = band
                .iter()
                .zip(&self.valid)
                .filter(|(_, &v)| v)
                .map(|(&x, _)| x as f64)
                .sum();
            let mean = if self.valid_count > 0 {
                (sum / self.valid_count as f64) as f32
            } else {
                0.0
            };
            for (x, &v) in band.iter_mut().zip(&self.valid) {
                if !v {
                    *x = mean;
                }
            }
        }
    }

    /// The first three bands as 8-bit RGB (unit * 255, rounded): for
    /// showing an image; invalid pixels are black.
    pub fn to_rgb8(&self) -> RgbImage {
        let p = self.plane();
        let at = |c: usize, i: usize| {
            let c = c.min(self.channels.saturating_sub(1));
            match self.valid[i] {
                true => (self.data[c * p + i] * 255.0).round().clamp(0.0, 255.0) as u8,
                false => 0,
            }
        };
        let data = (0..p)
            .flat_map(|i| [at(0, i), at(1, i), at(2, i)])
            .collect();
        RgbImage::from_raw(self.width as u32, self.height as u32, data).expect("W x H x 3")
    }

    /// Recounts [`Self::valid_count`] from [`Self::valid`].
    pub fn recount(&mut self) {
        self.valid_count = self.valid.iter().filter(|&&v| v).count();
    }
}

/// A decoded image, before the view or augmentation.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceImage {
    /// A JPEG's or PNG's 8-bit RGB under [`InputSpec::rgb`]: the RGB8 path
    /// of [`super::augment`], unchanged.
    Rgb8(RgbImage),
    /// Anything else: C bands of unit values and their validity.
    Bands(BandImage),
}

impl SourceImage {
    /// (width, height) in pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Self::Rgb8(i) => i.dimensions(),
            Self::Bands(b) => (b.width as u32, b.height as u32),
        }
    }

    /// Input channels, C.
    pub fn channels(&self) -> usize {
        match self {
            Self::Rgb8(_) => 3,
            Self::Bands(b) => b.channels,
        }
    }

    /// Valid pixels (every pixel of an RGB8 image).
    pub fn valid_count(&self) -> usize {
        match self {
            Self::Rgb8(i) => i.width() as usize * i.height() as usize,
            Self::Bands(b) => b.valid_count,
        }
    }
}

/// Decodes the file at `path` for the input `spec`, cut to `crop` (which
/// must lie inside the image, [`DecodeError::CropOutside`] otherwise):
/// JPEG and PNG under [`InputSpec::rgb`] as [`SourceImage::Rgb8`] (exactly
/// [`super::decode::decode_file`]); everything else as [`SourceImage::Bands`] with the
/// spec's bands and radiometry. A panic inside a decoder is
/// [`DecodeError::DecoderPanic`]; a window above `limits` is refused
/// before any pixel is read.
///
/// `resize_to`: the side the caller resizes the crop's shorter side to
/// next (torchvision's `Resize(resize_to)`), when it does; under
/// [`super::decode::DecodeScale::Auto`] a JPEG is then decoded at the
/// smallest DCT scale that keeps the crop's shorter side at least
/// `resize_to`, so the image returned is the crop at that scale (smaller
/// than the crop). `None`: the crop at full resolution.
pub fn decode_source(
    path: &Path,
    crop: Option<CropBox>,
    spec: &InputSpec,
    limits: &DecodeOptions,
    resize_to: Option<u32>,
) -> Result<SourceImage, DecodeError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| DecodeError::Io {
        path: name.clone(),
        source,
    })?;
    if meta.len() == 0 {
        return Err(DecodeError::Empty { path: name });
    }
    let rgb8 = is_jpeg_or_png(path).map_err(|source| DecodeError::Io {
        path: name.clone(),
        source,
    })?;
    if rgb8 {
        let img = decode_rgb8_file(path, crop, limits, resize_to)?;
        return Ok(if spec.is_default_rgb() {
            SourceImage::Rgb8(img)
        } else {
            SourceImage::Bands(rgb8_bands(&img, spec, &name)?)
        });
    }
    catch_panic(|| decode_raster(path, crop, spec, limits))
        .unwrap_or_else(|message| {
            Err(DecodeError::DecoderPanic {
                path: name.clone(),
                message,
            })
        })
        .map(SourceImage::Bands)
}

/// The spec's bands of a JPEG's or PNG's red, green, blue (bands 1, 2, 3),
/// with its radiometry (8-bit data: `auto` is v / 255).
fn rgb8_bands(img: &RgbImage, spec: &InputSpec, name: &str) -> Result<BandImage, DecodeError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bands = if spec.selection == BandSelection::Rgb {
        vec![1, 2, 3]
    } else {
        spec.bands.clone()
    };
    let mut data = vec![0f32; bands.len() * w * h];
    for (c, &b) in bands.iter().enumerate() {
        if b == 0 || b > 3 {
            return Err(DecodeError::MissingBand {
                path: name.to_string(),
                band: b,
                count: 3,
            });
        }
        let plane = &mut data[c * w * h..(c + 1) * w * h];
        for (o, p) in plane.iter_mut().zip(img.pixels()) {
            *o = p[b - 1] as f32;
        }
    }
    let mut out = BandImage {
        width: w,
        height: h,
        channels: bands.len(),
        data,
        valid: vec![true; w * h],
        valid_count: w * h,
    };
    let types = vec!["Byte".to_string(); bands.len()];
    to_unit(&mut out, spec, &types, name)?;
    Ok(out)
}

/// Refuses a file whose band at a channel's position has a description
/// other than the name the input resolved for that channel (from the first
/// image's description). Names the input made up (`red`, `band 4`, ...)
/// and files without descriptions are not compared: nothing says they
/// differ.
fn check_band_layout(
    info: &RasterInfo,
    bands: &[usize],
    spec: &InputSpec,
    name: &str,
) -> Result<(), DecodeError> {
    let made_up =
        |n: &str| matches!(n, "red" | "green" | "blue" | "gray") || n.starts_with("band ");
    for (c, (&b, expected)) in bands.iter().zip(&spec.band_names).enumerate() {
        let found = info.bands.get(b - 1).map_or("", |i| i.description.as_str());
        if !found.is_empty() && found != expected && !made_up(expected) {
            return Err(DecodeError::BandLayout {
                path: name.to_string(),
                band: b,
                found: found.to_string(),
                channel: c + 1,
                expected: expected.clone(),
                layout: spec.band_names.join(","),
            });
        }
    }
    Ok(())
}

/// The 1-based bands of `info` that `spec` reads: `rgb` is resolved per
/// file (colour interpretation Red, Green, Blue, else 1, 2, 3, else band 1
/// three times for one gray band), as [`InputSpec::resolve`] does; `all`
/// with no bands resolved (`spec.bands` empty) is every non-alpha band of
/// this file.
fn raster_bands(info: &RasterInfo, spec: &InputSpec) -> Vec<usize> {
    match spec.selection {
        BandSelection::Rgb => {}
        // `all` without resolved bands: this file's own (the manifest
        // check reads every band of every file).
        BandSelection::All if spec.bands.is_empty() => {
            return info
                .bands
                .iter()
                .filter(|b| b.color != "Alpha")
                .map(|b| b.index)
                .collect();
        }
        _ => return spec.bands.clone(),
    }
    let by_color = |c: &str| info.bands.iter().find(|b| b.color == c).map(|b| b.index);
    match (by_color("Red"), by_color("Green"), by_color("Blue")) {
        (Some(r), Some(g), Some(b)) => vec![r, g, b],
        _ if info.bands.len() >= 3 => vec![1, 2, 3],
        _ if !info.bands.is_empty() && info.bands.iter().skip(1).all(|b| b.color == "Alpha") => {
            vec![1, 1, 1]
        }
        _ => vec![1, 2, 3],
    }
}

/// Reads a GDAL raster's window (the crop, else the whole raster) of the
/// spec's bands at full resolution and applies the radiometry.
fn decode_raster(
    path: &Path,
    crop: Option<CropBox>,
    spec: &InputSpec,
    limits: &DecodeOptions,
) -> Result<BandImage, DecodeError> {
    let name = path.display().to_string();
    let reader = RasterReader::open(path).map_err(|e| raster_error(e, crop))?;
    let info = reader.info();
    let bands = raster_bands(info, spec);
    check_band_layout(info, &bands, spec, &name)?;

    let window = match crop {
        Some(c) => Window {
            x: c.x as usize,
            y: c.y as usize,
            width: c.w as usize,
            height: c.h as usize,
        },
        None => Window {
            x: 0,
            y: 0,
            width: info.width,
            height: info.height,
        },
    };
    let target = (window.width, window.height);
    let read = reader
        .read(&bands, window, target, Resampling::Nearest, limits)
        .map_err(|e| raster_error(e, crop))?;
    let types: Vec<String> = bands
        .iter()
        .map(|&b| info.bands[b - 1].data_type.clone())
        .collect();
    let mut out = BandImage {
        width: read.width,
        height: read.height,
        channels: read.bands,
        data: read.data,
        valid: read.valid,
        valid_count: read.valid_count,
    };
    to_unit(&mut out, spec, &types, &name)?;
    Ok(out)
}

/// A [`RasterError`] as the decoder's error of the same kind.
fn raster_error(e: RasterError, crop: Option<CropBox>) -> DecodeError {
    let clip = |v: usize| v.min(u32::MAX as usize) as u32;
    match e {
        RasterError::NotRecognised { path } => DecodeError::UnknownFormat { path },
        RasterError::Open { path, message } => DecodeError::NotARaster { path, message },
        RasterError::NoSuchBand { path, band, count } => {
            DecodeError::MissingBand { path, band, count }
        }
        RasterError::TooLarge {
            path,
            width,
            height,
            pixels,
            limit,
            ..
        } => DecodeError::TooLarge {
            path,
            width: clip(width),
            height: clip(height),
            pixels,
            limit,
        },
        RasterError::BadWindow {
            path,
            raster_width,
            raster_height,
            ..
        } if crop.is_some() => DecodeError::CropOutside {
            path,
            crop: crop.expect("checked"),
            width: clip(raster_width),
            height: clip(raster_height),
        },
        other => DecodeError::Raster(other),
    }
}

/// Stored values -> unit values in [0, 1] per the spec's radiometry (see
/// [`Radiometry`]): `types` are the bands' GDAL data types. Non-finite
/// values are invalid. Invalid pixels end holding their band's mean.
fn to_unit(
    img: &mut BandImage,
    spec: &InputSpec,
    types: &[String],
    name: &str,
) -> Result<(), DecodeError> {
    let p = img.plane();
    for c in 0..img.channels {
        let band = &img.data[c * p..(c + 1) * p];
        for (v, x) in img.valid.iter_mut().zip(band) {
            *v &= x.is_finite();
        }
    }
    img.recount();
    for (c, data_type) in types.iter().enumerate().take(img.channels) {
        let (offset, divisor) = unit_transform(img, c, spec, data_type, name)?;
        let band = &mut img.data[c * p..(c + 1) * p];
        for x in band.iter_mut() {
            let u = (*x - offset) / divisor;
            *x = if u.is_nan() { 0.0 } else { u.clamp(0.0, 1.0) };
        }
    }
    img.fill_invalid_with_band_means();
    Ok(())
}

/// (offset, divisor) of channel `c`: `unit = (v - offset) / divisor`.
fn unit_transform(
    img: &BandImage,
    c: usize,
    spec: &InputSpec,
    data_type: &str,
    name: &str,
) -> Result<(f32, f32), DecodeError> {
    let stretch = |percentile: f32| {
        let high = valid_percentile(img.band(c), &img.valid, percentile);
        (0.0, if high > 0.0 { high } else { 1.0 })
    };
    Ok(match &spec.radiometry {
        Radiometry::Auto if data_type == "Byte" => (0.0, 255.0),
        Radiometry::Auto => stretch(super::bands::DEFAULT_STRETCH_PERCENTILE),
        Radiometry::Stretch { percentile } => stretch(*percentile),
        Radiometry::Scale(_) => (0.0, spec.scale_divisor(c).unwrap_or(1.0)),
        Radiometry::Stats => {
            let Some(&(mean, std)) = spec.stats.get(c) else {
                return Err(DecodeError::Unsupported {
                    path: name.to_string(),
                    message: format!(
                        "radiometry stats without the statistics of channel {} (resolve the input first)",
                        c + 1
                    ),
                });
            };
            ((mean - 2.0 * std) as f32, (4.0 * std) as f32)
        }
    })
}

/// The `percentile` (0-100] of `values` where `valid`, by rank: the value
/// at sorted position `ceil(n * percentile / 100) - 1` (the 99.9th
/// percentile of 1000 values is the 999th smallest). 0 without valid values.
pub fn valid_percentile(values: &[f32], valid: &[bool], percentile: f32) -> f32 {
    let mut v: Vec<f32> = values
        .iter()
        .zip(valid)
        .filter(|(_, &ok)| ok)
        .map(|(&x, _)| x)
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    // Less a hair, so that 99.9 (99.90000152 as f32) of 1000 values is rank
    // 999, not 1000.
    let rank = n as f64 * percentile as f64 / 100.0 - 1e-4;
    let k = (rank.ceil() as usize).clamp(1, n) - 1;
    let (_, at, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    *at
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::augment::ViewTransform;
    use crate::data::bands::{BandStat, BandStats, NODATA_FILL};
    use crate::data::manifest::Manifest;
    use gdal::raster::{Buffer, ColorInterpretation, GdalType, RasterCreationOptions};
    use gdal::{DriverManager, Metadata};
    use rand::SeedableRng;

    /// Writes a GeoTIFF with GDAL (in memory, then CreateCopy, as
    /// gdal_translate does): `bands` planes of `w` x `h` from `f(band, x,
    /// y)`, with per-band NoData, descriptions and colour interpretations
    /// when given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_raster<T: GdalType + Copy>(
        path: &Path,
        (w, h): (usize, usize),
        bands: usize,
        nodata: Option<f64>,
        descriptions: &[&str],
        colors: &[ColorInterpretation],
        f: impl Fn(usize, usize, usize) -> T,
    ) {
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
            if let Some(c) = colors.get(b) {
                let c = ColorInterpretation::from_c_int(c.c_int()).unwrap();
                band.set_color_interpretation(c).unwrap();
            }
            let data: Vec<T> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| f(b, x, y))
                .collect();
            let mut buf = Buffer::new((w, h), data);
            band.write((0, 0), (w, h), &mut buf).unwrap();
        }
        let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
        drop(
            ds.create_copy(&gtiff, path, &RasterCreationOptions::new())
                .unwrap(),
        );
    }

    /// A one-row manifest of `file` (in `dir`).
    pub(crate) fn manifest_of(dir: &Path, files: &[&str]) -> Manifest {
        let mut csv = String::from("path,location_id\n");
        for (i, f) in files.iter().enumerate() {
            csv.push_str(&format!("{f},loc{}\n", i / 2));
        }
        let path = dir.join("m.csv");
        std::fs::write(&path, csv).unwrap();
        Manifest::read(&path).unwrap()
    }

    const SIDE: usize = 32;
    const STRIP: usize = 3;
    const NODATA: u16 = 65535;

    /// A uint16 4-band scene: a texture below 1400 and a bright block of
    /// 3000+ (8% of the pixels, so the 99.9th percentile of the valid
    /// values is the block's value whether or not the strip's columns
    /// count), NoData = 65535 in the last `STRIP` columns when `strip`.
    fn scene(path: &Path, strip: bool) {
        write_raster::<u16>(
            path,
            (SIDE, SIDE),
            4,
            strip.then_some(NODATA as f64),
            &["B02", "B03", "B04", "B08"],
            &[],
            |b, x, y| {
                if strip && x >= SIDE - STRIP {
                    NODATA
                } else if (8..16).contains(&y) && (4..14).contains(&x) {
                    (3000 + 100 * b) as u16
                } else {
                    (300 + 200 * b + (x * 37 + y * 53) % 600) as u16
                }
            },
        );
    }

    fn view(path: &Path, spec: &InputSpec, size: u32) -> (Vec<f32>, usize) {
        let img = decode_source(path, None, spec, &DecodeOptions::default(), None).unwrap();
        let mut out = vec![0f32; spec.channels() * (size * size) as usize];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let valid = ViewTransform::CenterCrop { size }
            .apply_source_into(&img, spec, &mut rng, &mut out)
            .unwrap();
        (out, valid)
    }

    #[test]
    fn a_nodata_strip_leaves_the_valid_area_as_without_it() {
        // The acceptance case: the strip is excluded from the
        // stretch and cannot bleed into its neighbours; it ends at 0.
        let dir = tempfile::tempdir().unwrap();
        let (with, without) = (dir.path().join("strip.tif"), dir.path().join("clean.tif"));
        scene(&with, true);
        scene(&without, false);
        let m = manifest_of(dir.path(), &["strip.tif"]);
        let size = 16u32;
        let plane = (size * size) as usize;
        for radiometry in ["auto", "stretch", "scale:10000"] {
            let spec =
                InputSpec::resolve(BandSelection::All, radiometry.parse().unwrap(), &m, None)
                    .unwrap();
            assert_eq!(spec.channels(), 4);
            let (a, valid) = view(&with, &spec, size);
            let (b, all) = view(&without, &spec, size);
            assert_eq!(all, plane, "{radiometry}");
            // Downscaled by 2 with a filter of radius 2 source pixels: the
            // two output columns that reach the 3-column strip are invalid.
            assert_eq!(valid, plane - 2 * size as usize, "{radiometry}");
            let mut compared = 0;
            for c in 0..4 {
                for y in 0..size as usize {
                    for x in 0..size as usize {
                        let i = c * plane + y * size as usize + x;
                        if x >= size as usize - 2 {
                            assert_eq!(a[i], NODATA_FILL, "{radiometry} c{c} ({x}, {y})");
                        } else {
                            assert!(
                                (a[i] - b[i]).abs() <= 1e-5,
                                "{radiometry} c{c} ({x}, {y}): {} vs {}",
                                a[i],
                                b[i]
                            );
                            compared += 1;
                        }
                    }
                }
            }
            assert_eq!(compared, 4 * valid);
            // Not all dark: the bright block reaches the top of the range
            // under the stretch (it would be ~0.05 had NoData counted).
            let top = a.iter().copied().fold(f32::MIN, f32::max);
            let want = if radiometry == "scale:10000" {
                (0.33 - 0.5) / 0.25
            } else {
                1.9
            };
            assert!(top >= want, "{radiometry}: brightest {top}");
        }
    }

    #[test]
    fn uint8_geotiff_through_gdal_matches_the_png_path() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (40u32, 30u32);
        let px = |c: usize, x: usize, y: usize| ((x * 29 + y * 13 + c * 71) % 256) as u8;
        let png = image::RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as usize, y as usize);
            image::Rgb([px(0, x, y), px(1, x, y), px(2, x, y)])
        });
        png.save(dir.path().join("a.png")).unwrap();
        let tif = dir.path().join("a.tif");
        write_raster::<u8>(&tif, (w as usize, h as usize), 3, None, &[], &[], px);
        let spec = InputSpec::rgb();
        let (a, _) = view(&dir.path().join("a.png"), &spec, 16);
        let (b, valid) = view(&tif, &spec, 16);
        assert_eq!(valid, 256);
        let plane = 256;
        let mut worst = 0f32;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            // In unit values: the RGB8 path rounds its resampled values to
            // 8 bits, the f32 path does not.
            worst = worst.max((x - y).abs() * spec.std[i / plane]);
        }
        assert!(worst <= 1.0 / 255.0, "largest difference {worst}");
    }

    /// The input is resolved on the first image that opens (an unreadable
    /// first row is the loader's to skip); a file laid out otherwise than
    /// that image (a 4-band B,G,R,NIR file among 13-band ones) is refused
    /// naming the band, not read with other bands in its channels; a
    /// constant band under `stats` standardises to 0.
    #[test]
    fn resolve_skips_unreadable_images_and_other_layouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.tif"), b"not a raster").unwrap();
        let s2 = ["B01", "B02", "B03", "B04", "B08"];
        write_raster::<u16>(
            &dir.path().join("s2.tif"),
            (8, 8),
            5,
            None,
            &s2,
            &[],
            |b, _, _| (1000 + 100 * b) as u16,
        );
        write_raster::<u16>(
            &dir.path().join("planet.tif"),
            (8, 8),
            4,
            None,
            &["blue", "green", "red", "nir"],
            &[],
            |_, _, _| 500,
        );
        let m = manifest_of(dir.path(), &["broken.tif", "s2.tif", "planet.tif"]);
        let stats = BandStats {
            bands: (1..=5)
                .map(|band| BandStat {
                    band,
                    name: s2[band - 1].into(),
                    mean: (900 + 100 * band) as f64,
                    std: 0.0,
                    min: 0.0,
                    max: 0.0,
                    valid_pixels: 64,
                })
                .collect(),
            images_sampled: 1,
            images_total: 1,
            seed: 0,
            manifest: "m.csv".into(),
        };
        let spec = InputSpec::resolve(
            "1,2,3,4".parse().unwrap(),
            Radiometry::Stats,
            &m,
            Some(&stats),
        )
        .unwrap();
        assert_eq!(spec.band_names, vec!["B01", "B02", "B03", "B04"]);
        let limits = DecodeOptions::default();
        let view = ViewTransform::CenterCrop { size: 4 };
        let mut out = vec![1.0f32; 4 * 16];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let img = decode_source(&dir.path().join("s2.tif"), None, &spec, &limits, None).unwrap();
        view.apply_source_into(&img, &spec, &mut rng, &mut out)
            .unwrap();
        assert!(
            out.iter().all(|v| v.abs() < 0.1),
            "constant bands at their mean: {out:?}"
        );
        let err =
            decode_source(&dir.path().join("planet.tif"), None, &spec, &limits, None).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                DecodeError::BandLayout {
                    band: 1,
                    channel: 1,
                    ..
                }
            ) && text.contains("planet.tif: band 1 is 'blue', but the input's channel 1 is 'B01'"),
            "{text}"
        );
    }

    #[test]
    fn resolve_finds_bands_names_and_normalisation() {
        let dir = tempfile::tempdir().unwrap();
        use ColorInterpretation::{BlueBand, GreenBand, RedBand, Undefined};
        write_raster::<u16>(
            &dir.path().join("s2.tif"),
            (8, 8),
            4,
            None,
            &["B02", "B03", "B04", "B08"],
            &[BlueBand, GreenBand, RedBand, Undefined],
            |b, x, _| (b * 100 + x) as u16,
        );
        let m = manifest_of(dir.path(), &["s2.tif"]);
        let resolve = |sel: &str, rad: &str, stats: Option<&BandStats>| {
            InputSpec::resolve(sel.parse().unwrap(), rad.parse().unwrap(), &m, stats)
        };
        let rgb = resolve("rgb", "auto", None).unwrap();
        assert_eq!(rgb.bands, vec![3, 2, 1], "by colour interpretation");
        assert_eq!(rgb.band_names, vec!["B04", "B03", "B02"]);
        assert_eq!(rgb.rgb, Some([0, 1, 2]));
        assert_eq!(rgb.mean, crate::data::augment::IMAGENET_MEAN.to_vec());
        let named = resolve("B08,B04,B03,B02", "auto", None).unwrap();
        assert_eq!(named.bands, vec![4, 3, 2, 1]);
        assert_eq!(named.rgb, Some([1, 2, 3]));
        assert_eq!(named.mean, vec![0.5; 4]);
        assert_eq!(named.std, vec![0.25; 4]);
        let all = resolve("all", "scale:10000", None).unwrap();
        assert_eq!(all.bands, vec![1, 2, 3, 4]);

        let file = dir.path().join("s2.tif").display().to_string();
        let err = |r: anyhow::Result<InputSpec>| r.unwrap_err().to_string();
        let e = err(resolve("4,5", "auto", None));
        assert!(
            e.contains(&file) && e.contains("no band 5") && e.contains("1 to 4"),
            "{e}"
        );
        let e = err(resolve("B04,B99", "auto", None));
        assert!(
            e.contains(&file) && e.contains("'B99'") && e.contains("B02, B03, B04, B08"),
            "{e}"
        );
        let e = err(resolve("all", "scale:1,2", None));
        assert!(e.contains("2 divisors for 4 bands"), "{e}");
        let e = err(resolve("all", "stats", None));
        assert!(
            e.contains("geossl index stats") && e.contains("m.csv"),
            "{e}"
        );

        let stats = BandStats {
            bands: (1..=4)
                .map(|b| BandStat {
                    band: b,
                    name: format!("B{b}"),
                    mean: 1000.0 * b as f64,
                    std: 100.0 * b as f64,
                    min: 0.0,
                    max: 1e4,
                    valid_pixels: 64,
                })
                .collect(),
            images_sampled: 1,
            images_total: 1,
            seed: 0,
            manifest: "m.csv".into(),
        };
        let s = resolve("4,1", "stats", Some(&stats)).unwrap();
        assert_eq!(s.stats, vec![(4000.0, 400.0), (1000.0, 100.0)]);
        assert_eq!(s.mean, vec![0.5; 2]);
        let s = resolve("4,1", "scale:10000", Some(&stats)).unwrap();
        assert_eq!(s.mean, vec![0.4, 0.1]);
        assert_eq!(s.std, vec![0.04, 0.01]);
        // Stats radiometry: (v - (mean - 2 std)) / (4 std), then (u - 0.5) /
        // 0.25, gives back (v - mean) / std within 2 std: band 1 holds x.
        let mut narrow = stats.clone();
        narrow.bands[0].mean = 4.0;
        narrow.bands[0].std = 2.0;
        let s = resolve("1", "stats", Some(&narrow)).unwrap();
        let (out, _) = view(&dir.path().join("s2.tif"), &s, 8);
        for (x, v) in out[..8].iter().enumerate() {
            assert!((v - (x as f32 - 4.0) / 2.0).abs() < 1e-5, "x = {x}: {v}");
        }

        // JPEG/PNG: red, green, blue; `rgb` + `auto` is the paper's input.
        image::RgbImage::new(4, 4)
            .save(dir.path().join("p.png"))
            .unwrap();
        let m = manifest_of(dir.path(), &["p.png"]);
        let p = InputSpec::resolve(BandSelection::Rgb, Radiometry::Auto, &m, None).unwrap();
        assert_eq!(p, InputSpec::rgb());
        let e = InputSpec::resolve("4".parse().unwrap(), Radiometry::Auto, &m, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("no band 4 (the raster has bands 1 to 3)"),
            "{e}"
        );
    }

    #[test]
    fn a_raster_with_fewer_bands_than_the_input_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_raster::<u16>(
            &dir.path().join("four.tif"),
            (6, 6),
            4,
            None,
            &[],
            &[],
            |_, _, _| 1,
        );
        write_raster::<u16>(
            &dir.path().join("two.tif"),
            (6, 6),
            2,
            None,
            &[],
            &[],
            |_, _, _| 1,
        );
        let m = manifest_of(dir.path(), &["four.tif", "two.tif"]);
        let spec = InputSpec::resolve(BandSelection::All, Radiometry::Auto, &m, None).unwrap();
        let two = dir.path().join("two.tif");
        let err = decode_source(&two, None, &spec, &DecodeOptions::default(), None).unwrap_err();
        assert!(matches!(err, DecodeError::MissingBand { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("{}: has 2 bands, but the input reads band 3", two.display())
        );
        // A window over the limit is refused before reading, naming the file.
        let limits = DecodeOptions {
            max_pixels: 35,
            ..Default::default()
        };
        let four = dir.path().join("four.tif");
        let err = decode_source(&four, None, &InputSpec::rgb(), &limits, None).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }), "{err}");
        // A crop outside the raster.
        let crop = CropBox {
            x: 4,
            y: 0,
            w: 4,
            h: 2,
        };
        let err =
            decode_source(&four, Some(crop), &spec, &DecodeOptions::default(), None).unwrap_err();
        assert!(matches!(err, DecodeError::CropOutside { .. }), "{err}");
        // Not a raster.
        std::fs::write(dir.path().join("junk.tif"), b"II*\0junk").unwrap();
        let junk = dir.path().join("junk.tif");
        let err = decode_source(&junk, None, &spec, &DecodeOptions::default(), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", junk.display())),
            "{err}"
        );
    }

    #[test]
    fn percentiles_by_rank_over_valid_values() {
        let v: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let all = vec![true; 1000];
        assert_eq!(valid_percentile(&v, &all, 99.9), 999.0);
        assert_eq!(valid_percentile(&v, &all, 100.0), 1000.0);
        assert_eq!(valid_percentile(&v, &all, 50.0), 500.0);
        let mut some = all.clone();
        some[999] = false;
        some[998] = false;
        assert_eq!(valid_percentile(&v, &some, 100.0), 998.0);
        assert_eq!(valid_percentile(&v, &[false; 1000], 99.9), 0.0);
    }
}
