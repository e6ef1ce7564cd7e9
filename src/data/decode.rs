//! Bounded image decoding of JPEG and PNG to 8-bit RGB, never a panic:
//! the paper's input path (every other raster format is read through GDAL,
//! [`super::raster`] and [`super::band_image`]; [`decode_file`] hands those
//! files over).
//!
//! JPEG and PNG (8/16-bit, gray, RGB, with or without alpha) are recognised
//! by content rather than extension. The header is read first and images
//! above [`DecodeOptions::max_pixels`] are refused before a byte of pixel
//! memory is allocated, so a "decompression bomb" (a tiny file announcing
//! 100k x 100k pixels) costs nothing. Every failure is a [`DecodeError`]
//! naming the file; a panic inside a decoder (a bug of a decoding crate on
//! an unusual file) is caught and becomes [`DecodeError::DecoderPanic`]
//! (see [`catch_panic`]).
//!
//! Damage is an error, never a silently altered image: JPEGs are decoded
//! strictly (see [`decode_jpeg`]: no grey fill for data that ends early),
//! and a crop must lie inside the image.
//!
//! Scaled decoding ([`DecodeScale::Auto`], the default): when the caller
//! resizes the crop next (`resize_to`, torchvision's `Resize`), a JPEG is
//! decoded by libjpeg-turbo ([`super::jpeg`]) at the smallest DCT scale
//! 1/2, 1/4 or 1/8 at which the crop's shorter side is still at least
//! `resize_to` (PIL draft's rule, applied to the crop), and only over the
//! crop's blocks; the crop box at that scale is its x, y, w, h divided and
//! rounded down, as the PyTorch reference scales it after `draft`. After
//! `Resize + CenterCrop` the result is within 34.9-40.8 dB PSNR of the full
//! decode's on the tests' odd-sized images, 38.1 dB at 1/4 for 4:2:0; the
//! sub-pixel shift of the rounded crop box and the DCT's own low-pass
//! (not the resampler's) make the difference. A crop of part of the image
//! that no reduction fits (under 2 x `resize_to` on its shorter side) is
//! still decoded by libjpeg-turbo over its blocks only, at full scale
//! (68-72 dB from zune-jpeg's pixels). For a whole image that no reduction
//! fits (the built-in 64 px images), under [`DecodeScale::Full`]
//! (`--decode-scale full`, the paper's exact path) and for PNGs, the
//! full-resolution path below runs unchanged.
//! On 16 fMoW-sized JPEGs (1200 x 900 to 3500 x 3000, fMoW-like crops,
//! resize to 448; `geossl bench decode --scaled-only`, one thread) the
//! scaled decode takes 20.8 ms an image against 39.8 ms for the full path,
//! at 40.0-50.4 dB PSNR (mean 45.4) after Resize + CenterCrop. The
//! full-resolution path stays on zune-jpeg although libjpeg-turbo decoding
//! only the crop's blocks at full scale took 25.7 ms there (the bench's
//! `turbo full` column): libjpeg-turbo's pixels differ from zune-jpeg's by
//! rounding, so moving it would change every default result, including the
//! built-in dataset's.
//!
//! 16-bit PNGs are stretched linearly so that the 99.9th percentile of the
//! image's values maps to 255; a plain `>> 8` would leave 12-bit data in a
//! 16-bit container almost black.

use std::cell::{Cell, RefCell};
use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Once;

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use super::manifest::CropBox;

/// How images are decoded: the limit on what one decode may allocate, and
/// whether JPEGs may be decoded at a reduced DCT scale.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Largest accepted width x height.
    pub max_pixels: u64,
    /// Full decoding, or JPEG's DCT-domain downscaling where the caller's
    /// resize allows it ([`DecodeScale`]).
    pub scale: DecodeScale,
}

impl Default for DecodeOptions {
    /// 16384 x 16384 pixels: above the largest fMoW scenes, and at most
    /// ~1.5 GiB while a 16-bit RGB image is converted; [`DecodeScale::Auto`].
    fn default() -> Self {
        Self {
            max_pixels: 16384 * 16384,
            scale: DecodeScale::Auto,
        }
    }
}

impl DecodeOptions {
    /// The default limits with [`DecodeScale::Full`]: every pixel decoded,
    /// as PIL's `Image.open(..).convert("RGB")` does.
    pub fn full() -> Self {
        Self {
            scale: DecodeScale::Full,
            ..Self::default()
        }
    }
}

/// Whether a JPEG whose crop is about to be shrunk may be decoded at 1/2,
/// 1/4 or 1/8 scale in the DCT domain (PIL's `Image.draft`), and only over
/// the blocks the crop covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeScale {
    /// The smallest DCT scale at which the crop's shorter side still is at
    /// least the size it is resized to, decoding only the crop's blocks
    /// (at full scale when no reduction fits a crop of part of the image);
    /// a whole image that no scale fits is decoded as under `Full`.
    #[default]
    Auto,
    /// Every pixel at full resolution, then resampled (the paper's code).
    Full,
}

impl crate::settings::Choice for DecodeScale {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            DecodeScale::Auto,
            "auto",
            "Decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) at which the crop's shorter \
             side still is at least the size it is resized to, and only the crop's blocks",
        ),
        (
            DecodeScale::Full,
            "full",
            "Decode every pixel at full resolution, then resample (the paper's code)",
        ),
    ];
}
crate::settings::choice_by_name!(DecodeScale);

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: empty file")]
    Empty { path: String },
    #[error("{path}: not a recognised image (JPEG, PNG, or a raster GDAL reads expected)")]
    UnknownFormat { path: String },
    #[error(
        "{path}: image is {width} x {height} = {pixels} pixels, above the limit of {limit} pixels"
    )]
    TooLarge {
        path: String,
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("{path}: unsupported image: {message}")]
    Unsupported { path: String, message: String },
    #[error("{path}: corrupt or truncated image: {message}")]
    Corrupt { path: String, message: String },
    #[error("{path}: the decoder crashed on this file (caught; please report it): {message}")]
    DecoderPanic { path: String, message: String },
    /// GDAL has no driver that opens the file as a raster.
    #[error("{path}: not a raster GDAL can read: {message}")]
    NotARaster { path: String, message: String },
    /// The input selects a band the file does not have.
    #[error("{path}: has {count} bands, but the input reads band {band}")]
    MissingBand {
        path: String,
        band: usize,
        count: usize,
    },
    /// The file's band at a channel's position is described otherwise than
    /// the band the input resolved there (files of one dataset laid out
    /// differently: a 4-band B,G,R,NIR file among 13-band Sentinel-2 ones).
    #[error("{path}: band {band} is '{found}', but the input's channel {channel} is '{expected}' (input bands {layout}); every image must have the run's band layout")]
    BandLayout {
        path: String,
        band: usize,
        found: String,
        channel: usize,
        expected: String,
        layout: String,
    },
    /// Another error of GDAL's reading (the message names the file and band).
    #[error(transparent)]
    Raster(#[from] super::raster::RasterError),
    /// A packed sample (`geossl pack`) that cannot be used: its checksum
    /// does not match, or its bytes are not what the pack's index says.
    #[error("{shard}: sample {key} ({path}): {message}")]
    Packed {
        shard: String,
        key: String,
        path: String,
        message: String,
    },
    /// The manifest's crop does not lie entirely inside the decoded image.
    #[error("{path}: crop {crop} does not lie inside the {width} x {height} image")]
    CropOutside {
        path: String,
        crop: CropBox,
        width: u32,
        height: u32,
    },
}

/// Decodes the file at `path` to RGB8 and applies `crop`, which must lie
/// inside the image ([`DecodeError::CropOutside`] otherwise). JPEG and PNG
/// are decoded here; any other raster through GDAL as the default input
/// reads it ([`super::band_image::decode_source`] with
/// [`super::bands::InputSpec::rgb`]: red, green, blue, `auto` radiometry),
/// rounded to 8 bits.
pub fn decode_file(
    path: &Path,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
) -> Result<RgbImage, DecodeError> {
    let name = path.display().to_string();
    let rgb8 = is_jpeg_or_png(path).map_err(|source| DecodeError::Io {
        path: name.clone(),
        source,
    })?;
    if !rgb8 {
        let spec = super::bands::InputSpec::rgb();
        return match super::band_image::decode_source(path, crop, &spec, limits, None)? {
            super::band_image::SourceImage::Rgb8(img) => Ok(img),
            super::band_image::SourceImage::Bands(b) => Ok(b.to_rgb8()),
        };
    }
    decode_rgb8_file(path, crop, limits, None)
}

/// [`decode_file`] of a JPEG or PNG (other formats are refused as
/// [`decode_bytes`] refuses them), possibly at reduced scale
/// ([`decode_bytes_scaled`]).
pub(crate) fn decode_rgb8_file(
    path: &Path,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
    resize_to: Option<u32>,
) -> Result<RgbImage, DecodeError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io {
        path: name.clone(),
        source,
    })?;
    decode_bytes_scaled(&bytes, &name, crop, limits, resize_to)
}

/// Decodes in-memory JPEG or PNG contents; `name` is used in errors. Other
/// formats are [`DecodeError::Unsupported`] here (GDAL reads them from
/// files: [`decode_file`]). A panic in the decoding crates is
/// [`DecodeError::DecoderPanic`].
pub fn decode_bytes(
    bytes: &[u8],
    name: &str,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
) -> Result<RgbImage, DecodeError> {
    decode_bytes_scaled(bytes, name, crop, limits, None)
}

/// [`decode_bytes`] for a crop whose shorter side is resized to
/// `resize_to` next (torchvision's `Resize(resize_to)`): under
/// [`DecodeScale::Auto`] a JPEG is decoded at the smallest DCT scale 1/2,
/// 1/4 or 1/8 at which the crop's shorter side is still at least
/// `resize_to` (`min(w, h) / d >= resize_to`, PIL draft's rule applied to
/// the crop), and only over the crop's blocks, through libjpeg-turbo
/// ([`super::jpeg`]). The result is then the crop at that scale: the crop
/// box's x, y, w, h each divided by d and rounded down (as the PyTorch
/// reference scales the box after `draft`). A crop of part of the image
/// that no scale fits is decoded over its blocks at full scale. For a whole
/// image that no scale fits, for PNGs, under [`DecodeScale::Full`] and for
/// `resize_to: None`, exactly [`decode_bytes`].
pub fn decode_bytes_scaled(
    bytes: &[u8],
    name: &str,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
    resize_to: Option<u32>,
) -> Result<RgbImage, DecodeError> {
    catch_panic(|| decode_unguarded(bytes, name, crop, limits, resize_to)).unwrap_or_else(
        |message| {
            Err(DecodeError::DecoderPanic {
                path: name.to_string(),
                message,
            })
        },
    )
}

thread_local! {
    /// Depth of [`catch_panic`] calls on this thread.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the last caught panic on this thread happened.
    static CAUGHT_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic into `Err(message)`: the panic's message and
/// its source location. The last net at the boundary of per-image work
/// (decoders, augmentation, loader workers), so that one image's bug is
/// that image's error. Inside, panics on this thread are not printed by
/// the default panic hook (the error carries the message); elsewhere the
/// previous hook runs unchanged.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) > 0 {
                let at = info.location().map(|l| l.to_string());
                CAUGHT_AT.with(|c| *c.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(c.get() + 1));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".into());
        match CAUGHT_AT.with(|c| c.borrow_mut().take()) {
            Some(at) => format!("{message} (at {at})"),
            None => message,
        }
    })
}

fn decode_unguarded(
    bytes: &[u8],
    name: &str,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
    resize_to: Option<u32>,
) -> Result<RgbImage, DecodeError> {
    let path = || name.to_string();
    if bytes.is_empty() {
        return Err(DecodeError::Empty { path: path() });
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, DecodeError> {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| DecodeError::Io {
                path: path(),
                source,
            })
    };
    let image = match reader()?.format() {
        None => return Err(DecodeError::UnknownFormat { path: path() }),
        Some(ImageFormat::Jpeg) => {
            if let (DecodeScale::Auto, Some(r)) = (limits.scale, resize_to) {
                if let Some((img, _)) = super::jpeg::decode_scaled(bytes, name, crop, limits, r)? {
                    return Ok(img);
                }
            }
            decode_jpeg(bytes, name, limits)?
        }
        Some(ImageFormat::Png) => {
            let (width, height) = reader()?.into_dimensions().map_err(|e| classify(name, e))?;
            check_size(name, width, height, limits)?;
            let mut r = reader()?;
            let pixels = width as u64 * height as u64;
            let mut l = image::Limits::default();
            l.max_image_width = Some(width);
            l.max_image_height = Some(height);
            // The widest layout the decoders produce is 4 channels x 4 bytes.
            l.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
            r.limits(l);
            r.decode().map_err(|e| classify(name, e))?
        }
        // Recognised by its signature, but not one of the formats read here
        // (the `image` crate is built without them).
        Some(other) => {
            let format = other
                .extensions_str()
                .first()
                .map_or_else(|| format!("{other:?}"), |e| e.to_uppercase());
            return Err(DecodeError::Unsupported {
                path: path(),
                message: format!(
                    "{format} image in memory (JPEG or PNG expected; other formats are read \
                     from files through GDAL)"
                ),
            });
        }
    };
    let rgb = to_rgb8(image);
    match crop {
        None => Ok(rgb),
        Some(c) => apply_crop(rgb, c, name),
    }
}

/// Whether the file at `path` is a JPEG or a PNG by its content (the
/// formats of the RGB8 path), read from its first bytes.
pub fn is_jpeg_or_png(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(matches!(
        image::guess_format(&head[..n]),
        Ok(ImageFormat::Jpeg | ImageFormat::Png)
    ))
}

/// Refuses images above `limits` (before any pixel memory is allocated) and
/// images without pixels.
pub(super) fn check_size(
    name: &str,
    width: u32,
    height: u32,
    limits: &DecodeOptions,
) -> Result<(), DecodeError> {
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooLarge {
            path: name.to_string(),
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(corrupt(name, "image has no pixels"));
    }
    Ok(())
}

/// A [`DecodeError::Corrupt`] whose message is trimmed: decoders end some
/// messages with a newline or wrap them in quotes, which would leave blank
/// lines in warnings and push hints onto a line of their own.
pub(super) fn corrupt(name: &str, message: impl std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt {
        path: name.to_string(),
        message: tidy(message),
    }
}

fn tidy(message: impl std::fmt::Display) -> String {
    let m = message.to_string();
    let m = m
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let m = m
        .strip_prefix('"')
        .and_then(|m| m.strip_suffix('"'))
        .unwrap_or(&m);
    m.trim().to_string()
}

/// Decodes a JPEG with zune-jpeg, the decoder the `image` crate uses, with
/// the same options except strict mode: `image` runs it lenient, where
/// entropy-coded data that ends early or does not decode is filled with
/// grey and the image is returned as if whole. Strict, such data is an
/// error, as it is for libjpeg (Pillow raises "image file is truncated").
/// A scan that decodes to its end but lacks the EOI marker (a file cut in
/// its last bytes) is caught by [`ends_with_eoi`]. The output layouts are
/// the ones `image` asks for (RGB, RGBA, gray, gray + alpha as in the file;
/// CMYK/YCCK converted to RGB by zune-jpeg), so pixels are unchanged.
fn decode_jpeg(
    bytes: &[u8],
    name: &str,
    limits: &DecodeOptions,
) -> Result<DynamicImage, DecodeError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut header = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    header.decode_headers().map_err(|e| jpeg_error(name, e))?;
    let (width, height, input) = match (header.dimensions(), header.input_colorspace()) {
        (Some((w, h)), Some(c)) => (w as u32, h as u32, c),
        _ => return Err(corrupt(name, "JPEG headers incomplete")),
    };
    check_size(name, width, height, limits)?;
    let output = match input {
        ColorSpace::RGB | ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA => input,
        _ => ColorSpace::RGB,
    };
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        ZCursor::new(bytes),
        options.jpeg_set_out_colorspace(output),
    );
    let data = decoder.decode().map_err(|e| jpeg_error(name, e))?;
    if !ends_with_eoi(bytes) {
        return Err(corrupt(
            name,
            "JPEG ends before its end-of-image marker (file cut short)",
        ));
    }
    let wrong_size = || corrupt(name, "JPEG decoder returned a buffer of the wrong size");
    Ok(match output {
        ColorSpace::RGBA => DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(width, height, data).ok_or_else(wrong_size)?,
        ),
        ColorSpace::Luma => DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(width, height, data).ok_or_else(wrong_size)?,
        ),
        ColorSpace::LumaA => DynamicImage::ImageLumaA8(
            image::GrayAlphaImage::from_raw(width, height, data).ok_or_else(wrong_size)?,
        ),
        _ => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, data).ok_or_else(wrong_size)?)
        }
    })
}

fn jpeg_error(name: &str, e: zune_jpeg::errors::DecodeErrors) -> DecodeError {
    use zune_jpeg::errors::DecodeErrors as E;
    match e {
        E::Unsupported(scheme) => DecodeError::Unsupported {
            path: name.to_string(),
            message: format!("JPEG: {}", tidy(format!("{scheme:?}"))),
        },
        other => corrupt(name, other),
    }
}

/// Whether the JPEG's marker sequence reaches an EOI marker (ITU T.81
/// B.2.1: a compressed image ends with EOI). Walks the marker segments from
/// SOI by their lengths and skips each scan's entropy-coded data, where a
/// 0xFF byte is followed by 0x00 (stuffing) or a restart marker; so EXIF
/// thumbnails (inside APP1) and data appended after the EOI do not count.
pub(super) fn ends_with_eoi(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let mut i = 2; // after SOI
    loop {
        // Fill bytes and stray data before a marker are skipped, as libjpeg does.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            EOI => return true,
            // Markers without a length: RSTm, TEM, a lone SOI.
            0xD0..=0xD8 | 0x01 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return false;
        };
        i += u16::from_be_bytes([len[0], len[1]]) as usize;
        if marker == SOS {
            // Entropy-coded data runs to the next marker other than RSTm.
            let at_marker =
                |i: usize| bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF);
            while i + 1 < bytes.len() && !at_marker(i) {
                i += 1;
            }
        }
    }
}

fn classify(name: &str, e: image::ImageError) -> DecodeError {
    use image::ImageError as E;
    let path = name.to_string();
    match e {
        E::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            corrupt(name, "file ends early")
        }
        E::IoError(source) => DecodeError::Io { path, source },
        E::Unsupported(u) => DecodeError::Unsupported {
            path,
            message: tidy(u),
        },
        E::Limits(l) => corrupt(name, format!("decoder limit: {l}")),
        other => corrupt(name, other),
    }
}

/// Converts any decoded layout to RGB8: gray is replicated, alpha dropped,
/// 16-bit stretched (see the module doc), float clamped to [0, 1].
pub fn to_rgb8(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => stretch_16bit(image.to_rgb16()),
        other => other.to_rgb8(),
    }
}

fn stretch_16bit(img: image::ImageBuffer<image::Rgb<u16>, Vec<u16>>) -> RgbImage {
    let mut histogram = vec![0u64; 65536];
    for &v in img.as_raw() {
        histogram[v as usize] += 1;
    }
    let n = img.as_raw().len() as u64;
    let target = n - n / 1000; // 99.9th percentile
    let mut seen = 0u64;
    let mut high = 65535u32;
    for (v, &c) in histogram.iter().enumerate() {
        seen += c;
        if seen >= target {
            high = v as u32;
            break;
        }
    }
    let high = high.max(1) as f32;
    let (w, h) = img.dimensions();
    let data = img
        .as_raw()
        .iter()
        .map(|&v| ((v as f32) * 255.0 / high).round().min(255.0) as u8)
        .collect();
    RgbImage::from_raw(w, h, data).expect("same dimensions")
}

/// Cuts `c` out of `img`. A crop that is not entirely inside the image is
/// an error rather than clipped: it means the manifest's box (or the
/// metadata it came from, e.g. fMoW JSON sizes that do not match the JPEG)
/// describes a different image, and clipping would train on a part of it.
fn apply_crop(img: RgbImage, c: CropBox, name: &str) -> Result<RgbImage, DecodeError> {
    let (w, h) = img.dimensions();
    let inside = c.w > 0
        && c.h > 0
        && c.x as u64 + c.w as u64 <= w as u64
        && c.y as u64 + c.h as u64 <= h as u64;
    if !inside {
        return Err(DecodeError::CropOutside {
            path: name.to_string(),
            crop: c,
            width: w,
            height: h,
        });
    }
    Ok(image::imageops::crop_imm(&img, c.x, c.y, c.w, c.h).to_image())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};

    fn encode(img: DynamicImage, fmt: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 100]))
    }

    fn limits() -> DecodeOptions {
        DecodeOptions::default()
    }

    #[test]
    fn decodes_png_jpeg_by_content_not_extension() {
        let img = gradient(20, 10);
        for fmt in [ImageFormat::Png, ImageFormat::Jpeg] {
            let bytes = encode(DynamicImage::ImageRgb8(img.clone()), fmt);
            let out = decode_bytes(&bytes, "wrong_extension.txt", None, &limits()).unwrap();
            assert_eq!(out.dimensions(), (20, 10), "{fmt:?}");
            if fmt != ImageFormat::Jpeg {
                assert_eq!(out, img, "{fmt:?} is lossless");
            }
        }
    }

    #[test]
    fn cmyk_jpeg_becomes_rgb8() {
        // An 8 x 8 pure red CMYK JPEG as Pillow writes it (Adobe marker,
        // inverted CMYK); Pillow reads it back as (255, 0, 0).
        let bytes = include_bytes!("testdata/red_cmyk.jpg");
        let out = decode_bytes(bytes, "red_cmyk.jpg", None, &limits()).unwrap();
        assert_eq!(out.dimensions(), (8, 8));
        let p = out.get_pixel(3, 3);
        assert!(p[0] >= 245 && p[1] <= 10 && p[2] <= 10, "{p:?}");
    }

    #[test]
    fn gray_alpha_and_16bit_become_rgb8() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(4, 4, |x, _| {
            image::Luma([x as u8 * 60])
        }));
        let out = decode_bytes(&encode(gray, ImageFormat::Png), "g.png", None, &limits()).unwrap();
        assert_eq!(out.get_pixel(3, 0), &Rgb([180, 180, 180]));

        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            3,
            3,
            image::Rgba([10, 20, 30, 0]),
        ));
        let out = decode_bytes(&encode(rgba, ImageFormat::Png), "a.png", None, &limits()).unwrap();
        assert_eq!(out.get_pixel(1, 1), &Rgb([10, 20, 30]));

        // 12-bit data in a 16-bit PNG: stretched to the full 8-bit range.
        let img16 = image::ImageBuffer::<Rgb<u16>, _>::from_fn(32, 32, |x, y| {
            Rgb([(x * 128) as u16, (y * 128) as u16, 2048])
        });
        let bytes = encode(DynamicImage::ImageRgb16(img16), ImageFormat::Png);
        let out = decode_bytes(&bytes, "s.png", None, &limits()).unwrap();
        let max = out.as_raw().iter().copied().max().unwrap();
        assert!(max >= 250, "stretched maximum {max}");
        assert_eq!(out.get_pixel(0, 0)[0], 0);
    }

    #[test]
    fn crop_is_applied_and_must_lie_inside() {
        let img = gradient(20, 10);
        let bytes = encode(DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
        let crop = |s: &str| Some(s.parse::<CropBox>().unwrap());
        let out = decode_bytes(&bytes, "c.png", crop("5,2,4,3"), &limits()).unwrap();
        assert_eq!(out.dimensions(), (4, 3));
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(5, 2));
        // Up to the far edges is inside.
        let out = decode_bytes(&bytes, "c.png", crop("15,5,5,5"), &limits()).unwrap();
        assert_eq!(out.dimensions(), (5, 5));
        assert_eq!(out.get_pixel(4, 4), img.get_pixel(19, 9));
        // Starting outside, or running past an edge by one pixel or more.
        for c in ["20,0,1,1", "15,5,100,100", "15,5,6,5", "0,5,20,6"] {
            let err = decode_bytes(&bytes, "c.png", crop(c), &limits()).unwrap_err();
            assert!(matches!(err, DecodeError::CropOutside { .. }), "{c}: {err}");
            assert_eq!(
                err.to_string(),
                format!("c.png: crop {c} does not lie inside the 20 x 10 image")
            );
        }
    }

    #[test]
    fn the_reported_crops_past_a_1201x899_image_are_errors() {
        // The tester's case: on a 1201 x 899 image, 1000,0,300,899 and
        // 1000,0,10000,10000 were both clipped to 1000,0,201,899 and gave
        // identical features; a JPEG whose metadata size is wrong looks so.
        let img = gradient(1201, 899);
        let bytes = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let crop = |s: &str| Some(s.parse::<CropBox>().unwrap());
        let ok = decode_bytes(&bytes, "s.jpg", crop("1000,0,201,899"), &limits()).unwrap();
        assert_eq!(ok.dimensions(), (201, 899));
        for c in ["1000,0,300,899", "1000,0,10000,10000", "0,0,1201,900"] {
            let err = decode_bytes(&bytes, "s.jpg", crop(c), &limits()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("s.jpg: crop {c} does not lie inside the 1201 x 899 image")
            );
        }
    }

    #[test]
    fn refuses_pixel_bombs_before_allocating() {
        let bytes = encode(DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Png);
        let small = DecodeOptions {
            max_pixels: 1000,
            ..Default::default()
        };
        let err = decode_bytes(&bytes, "big.png", None, &small).unwrap_err();
        assert_eq!(
            err.to_string(),
            "big.png: image is 64 x 64 = 4096 pixels, above the limit of 1000 pixels"
        );

        // A PNG header that announces 100000 x 100000 pixels with no data.
        let mut bomb = bytes.clone();
        // IHDR width/height live at bytes 16..24; patch them and fix the CRC.
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_bytes(&bomb, "bomb.png", None, &limits()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    width: 100_000,
                    height: 100_000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let bytes = encode(DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Jpeg);
        let err = decode_bytes(&[], "zero.jpg", None, &limits()).unwrap_err();
        assert_eq!(err.to_string(), "zero.jpg: empty file");
        let err = decode_bytes(b"hello, not an image", "text.jpg", None, &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text.jpg: not a recognised image (JPEG, PNG, or a raster GDAL reads expected)"
        );
        for cut in [10, 100, bytes.len() / 2] {
            let err = decode_bytes(&bytes[..cut], "cut.jpg", None, &limits()).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("cut.jpg: corrupt or truncated image: "),
                "{err}"
            );
        }
        let png = encode(DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Png);
        let err = decode_bytes(&png[..png.len() / 2], "cut.png", None, &limits()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cut.png: corrupt or truncated image"),
            "{err}"
        );
        let err = decode_file(Path::new("/nonexistent/x.jpg"), None, &limits()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/x.jpg: cannot read"),
            "{err}"
        );
    }

    /// A noisy gradient: enough entropy-coded data that a cut or a garbled
    /// stretch falls inside the scan, not only in the headers.
    fn textured(w: u32, h: u32) -> RgbImage {
        let mut state = 0x9E37_79B9u32;
        RgbImage::from_fn(w, h, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let n = (state % 48) as u8;
            Rgb([
                (x * 4) as u8 + n,
                (y * 5) as u8 + n,
                ((x + y) * 2) as u8 + n,
            ])
        })
    }

    /// The JPEG kinds the corruption tests cover: baseline (the `image`
    /// encoder), progressive and Adobe CMYK (Pillow 13, quality 85, from a
    /// 61 x 47 noisy gradient).
    fn jpeg_kinds() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (
                "baseline",
                encode(DynamicImage::ImageRgb8(textured(61, 47)), ImageFormat::Jpeg),
            ),
            (
                "progressive",
                include_bytes!("testdata/grad_progressive.jpg").to_vec(),
            ),
            ("cmyk", include_bytes!("testdata/grad_cmyk.jpg").to_vec()),
        ]
    }

    #[test]
    fn truncated_or_corrupt_jpegs_are_corrupt_errors() {
        use rand::{Rng, SeedableRng};
        // The tester's cases: cut to 10%, 50%, 99%, without the last two
        // bytes (the EOI marker), and a garbled stretch in the middle; each
        // decoded before as a whole image with grey fill. Pillow rejects
        // all of them (except, for the CMYK file, the missing EOI alone).
        // Not every garbled stretch can be seen (one that keeps the Huffman
        // decoder in step and holds no marker decodes to other pixels, for
        // libjpeg too); this one, like the tester's, hits a marker or a bad
        // code in each kind.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (kind, bytes) in jpeg_kinds() {
            let whole = decode_bytes(&bytes, kind, None, &limits()).unwrap();
            assert_eq!(whole.dimensions(), (61, 47), "{kind}");
            let n = bytes.len();
            let mut broken: Vec<(String, Vec<u8>)> = [n / 10, n / 2, n * 99 / 100, n - 2]
                .into_iter()
                .map(|cut| {
                    (
                        format!("{kind} cut to {cut} of {n} bytes"),
                        bytes[..cut].to_vec(),
                    )
                })
                .collect();
            let mut garbled = bytes.clone();
            rng.fill(&mut garbled[n / 2 - n / 8..n / 2 + n / 8]);
            broken.push((format!("{kind} garbled"), garbled));
            for (name, data) in broken {
                let Err(err) = decode_bytes(&data, &name, None, &limits()) else {
                    panic!("{name}: decoded without an error");
                };
                assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
                let msg = err.to_string();
                assert!(
                    msg.starts_with(&format!("{name}: corrupt or truncated image: ")),
                    "{msg}"
                );
                assert!(!msg.contains('\n') && !msg.ends_with(' '), "{msg:?}");
            }
        }
        // A cut in the headers: zune-core's message ends with a newline,
        // which left a blank line in warnings; it is one line now.
        let Err(err) = decode_bytes(&jpeg_kinds()[0].1[..600], "t.jpg", None, &limits()) else {
            panic!("cut to 600 bytes: decoded without an error");
        };
        assert_eq!(
            err.to_string(),
            "t.jpg: corrupt or truncated image: I/O errors Not enough bytes, expected 162 but found 153"
        );
    }

    #[test]
    fn clean_jpegs_decode_as_the_image_crate_decodes_them() {
        // Strict mode changes what is refused, not the pixels: every clean
        // file decodes exactly as `image` (lenient zune-jpeg) decodes it.
        let mut files = jpeg_kinds();
        files.push(("red_cmyk", include_bytes!("testdata/red_cmyk.jpg").to_vec()));
        for (w, h) in [(1, 1), (7, 5), (17, 333), (333, 17), (1201, 899)] {
            let rgb = textured(w, h);
            files.push((
                "rgb",
                encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg),
            ));
            let gray = DynamicImage::ImageRgb8(rgb).into_luma8();
            files.push((
                "gray",
                encode(DynamicImage::ImageLuma8(gray), ImageFormat::Jpeg),
            ));
        }
        for (kind, bytes) in &files {
            let before = image::load_from_memory(bytes).unwrap().to_rgb8();
            let after = decode_bytes(bytes, kind, None, &limits()).unwrap();
            assert_eq!(after.dimensions(), before.dimensions(), "{kind}");
            assert!(
                after == before,
                "{kind} {:?}: pixels differ",
                before.dimensions()
            );
            // Data after the EOI marker (some cameras append their own,
            // here with an SOS-like pair) is ignored, as libjpeg does.
            let mut trailer = bytes.clone();
            trailer.extend_from_slice(b"\xFF\xDA\x00\x08trailing");
            assert!(
                decode_bytes(&trailer, kind, None, &limits()).unwrap() == before,
                "{kind}"
            );
        }
        assert!(files.len() >= 14);
    }

    #[test]
    fn decoder_messages_are_one_trimmed_line() {
        assert_eq!(
            tidy("\"Premature end of buffer\""),
            "Premature end of buffer"
        );
        assert_eq!(
            tidy("I/O errors Not enough bytes, expected 2 but found 0\n"),
            "I/O errors Not enough bytes, expected 2 but found 0"
        );
        assert_eq!(tidy(" a\n\n b \n"), "a; b");
    }

    #[test]
    fn other_formats_are_named_without_the_multispectral_hint() {
        let mut webp = b"RIFF\x24\0\0\0WEBPVP8 ".to_vec();
        webp.resize(44, 0);
        let mut bmp = b"BM".to_vec();
        bmp.resize(64, 0);
        for (name, bytes, format) in [("x.webp", webp, "WEBP"), ("x.bmp", bmp, "BMP")] {
            let err = decode_bytes(&bytes, name, None, &limits()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{name}: unsupported image: {format} image in memory (JPEG or PNG expected; \
                     other formats are read from files through GDAL)"
                )
            );
        }
    }

    #[test]
    fn tiff_bands_are_read_by_gdal_none_dropped() {
        // The tester's case: 4 samples, PhotometricInterpretation = RGB, no
        // ExtraSamples, which the `tiff` crate read as RGBA with the 4th
        // band (NIR) dropped. Through GDAL every band but a declared alpha
        // is an input band of `all`.
        use crate::data::band_image::{decode_source, SourceImage};
        use crate::data::bands::{BandSelection, InputSpec};
        let every_band = InputSpec {
            selection: BandSelection::All,
            bands: Vec::new(),
            ..InputSpec::rgb()
        };
        let dir = tempfile::tempdir().unwrap();
        for (photometric, bands, extra, read) in [
            (2, 4, vec![], vec![1, 2, 3, 4]),        // RGB + an undeclared band
            (2, 4, vec![0], vec![1, 2, 3, 4]),       // RGB + a band of unspecified meaning
            (2, 5, vec![2, 0], vec![1, 2, 3, 5]),    // RGBA + one more band
            (1, 5, vec![0; 4], vec![1, 2, 3, 4, 5]), // 5 bands as gray
            (2, 4, vec![2], vec![1, 2, 3]),          // RGB + unassociated alpha
            (2, 3, vec![], vec![1, 2, 3]),
            (1, 1, vec![], vec![1]),
        ] {
            let path = dir.path().join("ms.tif");
            std::fs::write(&path, chunky_tiff(6, 4, photometric, bands, &extra)).unwrap();
            let what = format!("{photometric} {bands} {extra:?}");
            let Ok(SourceImage::Bands(img)) =
                decode_source(&path, None, &every_band, &limits(), None)
            else {
                panic!("{what}: not read as bands");
            };
            assert_eq!((img.width, img.height), (6, 4), "{what}");
            assert_eq!(img.channels, read.len(), "{what}");
            // Pixel 1 of band n holds sample bands + n - 1; Byte data / 255.
            let b = bands as usize;
            for (c, n) in read.iter().enumerate() {
                let want = ((b + n - 1) % 251) as f32 / 255.0;
                assert_eq!(img.band(c)[1], want, "{what} band {n}");
            }
        }
    }

    #[test]
    fn band_interleaved_tiled_tiffs_decode_through_gdal() {
        // The `tiff` crate (0.11) asserted on band-interleaved tiled TIFFs
        // whose tiles overhang the image's bottom edge (a panic caught as
        // DecoderPanic); GDAL reads them.
        let bytes = planar_tiled_tiff(20, 20, 16);
        assert_eq!(&bytes[..], include_bytes!("testdata/planar_tiled.tif"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("planar.tif");
        std::fs::write(&path, &bytes).unwrap();
        let out = decode_file(&path, None, &limits()).unwrap();
        assert_eq!(out.dimensions(), (20, 20));
        for (x, y) in [(0, 0), (5, 3), (17, 2), (3, 18), (19, 19)] {
            let want: Vec<u8> = (0..3)
                .map(|b| {
                    let tile = b * 4 + (y / 16) * 2 + x / 16;
                    ((tile * 256 + (y % 16) * 16 + x % 16) % 251) as u8
                })
                .collect();
            assert_eq!(out.get_pixel(x, y).0.to_vec(), want, "({x}, {y})");
        }
        // In memory, only JPEG and PNG are read.
        let err = decode_bytes(&bytes, "planar.tif", None, &limits()).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn caught_panics_carry_their_message_and_leave_others_alone() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let err = catch_panic(|| -> u8 { panic!("boom {}", 3) }).unwrap_err();
        assert!(err.starts_with("boom 3 (at src/data/decode.rs:"), "{err}");
        let nested = catch_panic(|| catch_panic(|| -> u8 { panic!("inner") }));
        assert!(nested.unwrap().unwrap_err().starts_with("inner"));
        // Outside catch_panic a panic still unwinds as usual.
        assert!(std::panic::catch_unwind(|| panic!("plain")).is_err());
    }

    #[test]
    fn random_crops_give_the_box_or_an_error() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let img = gradient(23, 17);
        let (mut inside, mut outside) = (0, 0);
        for _ in 0..2000 {
            let c = CropBox {
                x: rng.gen_range(0..30),
                y: rng.gen_range(0..30),
                w: rng.gen_range(1..40),
                h: rng.gen_range(1..40),
            };
            let fits = c.x + c.w <= 23 && c.y + c.h <= 17;
            match apply_crop(img.clone(), c, "r.png") {
                Ok(out) => {
                    assert!(fits, "{c}");
                    assert_eq!(out.dimensions(), (c.w, c.h));
                    assert_eq!(out.get_pixel(0, 0), img.get_pixel(c.x, c.y));
                    let far = out.get_pixel(c.w - 1, c.h - 1);
                    assert_eq!(far, img.get_pixel(c.x + c.w - 1, c.y + c.h - 1));
                    inside += 1;
                }
                Err(e) => {
                    assert!(!fits, "{c}: {e}");
                    assert!(matches!(e, DecodeError::CropOutside { .. }), "{e}");
                    outside += 1;
                }
            }
        }
        assert!(
            inside > 50 && outside > 50,
            "{inside} inside, {outside} outside"
        );
    }

    /// A little-endian RGB TIFF, 8 bits per sample, band-interleaved
    /// (PlanarConfiguration = 2) in `tile` x `tile` tiles, uncompressed.
    pub(crate) fn planar_tiled_tiff(w: u32, h: u32, tile: u32) -> Vec<u8> {
        let tiles = w.div_ceil(tile) * h.div_ceil(tile) * 3;
        let tile_bytes = tile * tile;
        // Layout: header, BitsPerSample values, offsets, byte counts, data, IFD.
        let bits_at = 8u32;
        let offsets_at = bits_at + 8;
        let counts_at = offsets_at + 4 * tiles;
        let data_at = counts_at + 4 * tiles;
        let ifd_at = data_at + tiles * tile_bytes;
        let mut out = Vec::new();
        out.extend_from_slice(b"II");
        out.extend_from_slice(&42u16.to_le_bytes());
        out.extend_from_slice(&ifd_at.to_le_bytes());
        for _ in 0..3 {
            out.extend_from_slice(&8u16.to_le_bytes());
        }
        out.extend_from_slice(&[0, 0]);
        for t in 0..tiles {
            out.extend_from_slice(&(data_at + t * tile_bytes).to_le_bytes());
        }
        for _ in 0..tiles {
            out.extend_from_slice(&tile_bytes.to_le_bytes());
        }
        out.extend((0..tiles * tile_bytes).map(|i| (i % 251) as u8));
        let entries: [(u16, u16, u32, u32); 11] = [
            (256, 4, 1, w),              // ImageWidth
            (257, 4, 1, h),              // ImageLength
            (258, 3, 3, bits_at),        // BitsPerSample: 8, 8, 8
            (259, 3, 1, 1),              // Compression: none
            (262, 3, 1, 2),              // Photometric: RGB
            (277, 3, 1, 3),              // SamplesPerPixel
            (284, 3, 1, 2),              // PlanarConfiguration: planar
            (322, 4, 1, tile),           // TileWidth
            (323, 4, 1, tile),           // TileLength
            (324, 4, tiles, offsets_at), // TileOffsets
            (325, 4, tiles, counts_at),  // TileByteCounts
        ];
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, typ, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if typ == 3 && count == 1 {
                out.extend_from_slice(&(value as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    /// Minimal little-endian TIFF: one uncompressed strip, `bands` samples
    /// of 8 bits per pixel (chunky), the given PhotometricInterpretation
    /// and ExtraSamples (left out when empty); sample i holds i % 251.
    fn chunky_tiff(w: u32, h: u32, photometric: u16, bands: u16, extra: &[u16]) -> Vec<u8> {
        // u16 values in an entry's 4 bytes, or after the data when longer.
        fn shorts(out: &mut Vec<u8>, values: &[u16]) -> [u8; 4] {
            if values.len() <= 2 {
                let mut v = [0u8; 4];
                for (i, x) in values.iter().enumerate() {
                    v[2 * i..2 * i + 2].copy_from_slice(&x.to_le_bytes());
                }
                v
            } else {
                let at = out.len() as u32;
                values
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                at.to_le_bytes()
            }
        }
        let data_len = w * h * bands as u32;
        let mut out = b"II".to_vec();
        out.extend_from_slice(&42u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // IFD offset, set below
        out.extend((0..data_len).map(|i| (i % 251) as u8));
        out.resize(out.len().next_multiple_of(2), 0);
        let bits = shorts(&mut out, &vec![8; bands as usize]);
        let extras = shorts(&mut out, extra);
        let long = |v: u32| v.to_le_bytes();
        let short = |v: u16| shorts(&mut Vec::new(), &[v]);
        let mut entries: Vec<(u16, u16, u32, [u8; 4])> = vec![
            (256, 4, 1, long(w)),            // ImageWidth
            (257, 4, 1, long(h)),            // ImageLength
            (258, 3, bands as u32, bits),    // BitsPerSample
            (259, 3, 1, short(1)),           // Compression: none
            (262, 3, 1, short(photometric)), // PhotometricInterpretation
            (273, 4, 1, long(8)),            // StripOffsets: after the header
            (277, 3, 1, short(bands)),       // SamplesPerPixel
            (278, 4, 1, long(h)),            // RowsPerStrip
            (279, 4, 1, long(data_len)),     // StripByteCounts
            (284, 3, 1, short(1)),           // PlanarConfiguration: chunky
        ];
        if !extra.is_empty() {
            entries.push((338, 3, extra.len() as u32, extras)); // ExtraSamples
        }
        let ifd_at = out.len() as u32;
        out[4..8].copy_from_slice(&ifd_at.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, typ, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&value);
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
