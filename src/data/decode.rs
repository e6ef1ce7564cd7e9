//! Bounded image decoding: any supported file to 8-bit RGB, never a panic.
//!
//! Formats: JPEG, PNG and TIFF/GeoTIFF (8/16-bit, gray, RGB, with or without
//! alpha), recognised by content rather than extension. The header is read
//! first and images above [`DecodeLimits::max_pixels`] are refused before a
//! byte of pixel memory is allocated, so a "decompression bomb" (a tiny file
//! announcing 100k x 100k pixels) costs nothing. Every failure is a
//! [`DecodeError`] naming the file; a panic inside a decoder (a bug of the
//! decoding crate on an unusual file, e.g. the `tiff` crate's assertions on
//! some band-interleaved tiled TIFFs) is caught and becomes
//! [`DecodeError::DecoderPanic`] (see [`catch_panic`]).
//!
//! 16-bit imagery (common in GeoTIFFs, often 11- or 12-bit data in a 16-bit
//! container) is stretched linearly so that the 99.9th percentile of the
//! image's values maps to 255; a plain `>> 8` would leave such images almost
//! black.

use std::cell::{Cell, RefCell};
use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Once;

use image::{DynamicImage, ImageReader, RgbImage};

use super::manifest::CropBox;

/// Limits on what one decode may allocate.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted width x height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 16384 x 16384 pixels: above the largest fMoW scenes, and at most
    /// ~1.5 GiB while a 16-bit RGB image is converted.
    fn default() -> Self {
        Self {
            max_pixels: 16384 * 16384,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: empty file")]
    Empty { path: String },
    #[error("{path}: not a recognised image (JPEG, PNG or TIFF expected)")]
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
    #[error("{path}: crop {crop} lies outside the {width} x {height} image")]
    CropOutside {
        path: String,
        crop: CropBox,
        width: u32,
        height: u32,
    },
}

/// Decodes the file at `path` to RGB8 and applies `crop` (clipped to the image).
pub fn decode_file(
    path: &Path,
    crop: Option<CropBox>,
    limits: &DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io {
        path: name.clone(),
        source,
    })?;
    decode_bytes(&bytes, &name, crop, limits)
}

/// Decodes in-memory file contents; `name` is used in errors. A panic in
/// the decoding crates is [`DecodeError::DecoderPanic`].
pub fn decode_bytes(
    bytes: &[u8],
    name: &str,
    crop: Option<CropBox>,
    limits: &DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    catch_panic(|| decode_unguarded(bytes, name, crop, limits)).unwrap_or_else(|message| {
        Err(DecodeError::DecoderPanic {
            path: name.to_string(),
            message,
        })
    })
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
    limits: &DecodeLimits,
) -> Result<RgbImage, DecodeError> {
    let path = || name.to_string();
    if bytes.is_empty() {
        return Err(DecodeError::Empty { path: path() });
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, DecodeError> {
        let r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| DecodeError::Io {
                path: path(),
                source,
            })?;
        if r.format().is_none() {
            return Err(DecodeError::UnknownFormat { path: path() });
        }
        Ok(r)
    };
    let (width, height) = reader()?.into_dimensions().map_err(|e| classify(name, e))?;
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooLarge {
            path: path(),
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(DecodeError::Corrupt {
            path: path(),
            message: "image has no pixels".into(),
        });
    }
    let mut r = reader()?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(width);
    l.max_image_height = Some(height);
    // The widest layout the decoders produce is 4 channels x 4 bytes.
    l.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    r.limits(l);
    let image = r.decode().map_err(|e| classify(name, e))?;
    let rgb = to_rgb8(image);
    match crop {
        None => Ok(rgb),
        Some(c) => apply_crop(rgb, c, name),
    }
}

fn classify(name: &str, e: image::ImageError) -> DecodeError {
    use image::ImageError as E;
    let path = name.to_string();
    match e {
        E::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Corrupt {
                path,
                message: "file ends early".into(),
            }
        }
        E::IoError(source) => DecodeError::Io { path, source },
        E::Unsupported(u) => DecodeError::Unsupported {
            path,
            message: format!(
                "{u} (multispectral rasters with more than RGB(A) bands are not read yet)"
            ),
        },
        E::Limits(l) => DecodeError::Corrupt {
            path,
            message: format!("decoder limit: {l}"),
        },
        other => DecodeError::Corrupt {
            path,
            message: other.to_string(),
        },
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

fn apply_crop(img: RgbImage, c: CropBox, name: &str) -> Result<RgbImage, DecodeError> {
    let (w, h) = img.dimensions();
    if c.x >= w || c.y >= h {
        return Err(DecodeError::CropOutside {
            path: name.to_string(),
            crop: c,
            width: w,
            height: h,
        });
    }
    let cw = c.w.min(w - c.x);
    let ch = c.h.min(h - c.y);
    Ok(image::imageops::crop_imm(&img, c.x, c.y, cw, ch).to_image())
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

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn decodes_png_jpeg_tiff_by_content_not_extension() {
        let img = gradient(20, 10);
        for fmt in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Tiff] {
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

        // 12-bit data in a 16-bit GeoTIFF: stretched to the full 8-bit range.
        let img16 = image::ImageBuffer::<Rgb<u16>, _>::from_fn(32, 32, |x, y| {
            Rgb([(x * 128) as u16, (y * 128) as u16, 2048])
        });
        let bytes = encode(DynamicImage::ImageRgb16(img16), ImageFormat::Tiff);
        let out = decode_bytes(&bytes, "s.tif", None, &limits()).unwrap();
        let max = out.as_raw().iter().copied().max().unwrap();
        assert!(max >= 250, "stretched maximum {max}");
        assert_eq!(out.get_pixel(0, 0)[0], 0);
    }

    #[test]
    fn crop_is_applied_and_clipped() {
        let img = gradient(20, 10);
        let bytes = encode(DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
        let out = decode_bytes(
            &bytes,
            "c.png",
            Some(CropBox {
                x: 5,
                y: 2,
                w: 4,
                h: 3,
            }),
            &limits(),
        )
        .unwrap();
        assert_eq!(out.dimensions(), (4, 3));
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(5, 2));
        let out = decode_bytes(
            &bytes,
            "c.png",
            Some(CropBox {
                x: 15,
                y: 5,
                w: 100,
                h: 100,
            }),
            &limits(),
        )
        .unwrap();
        assert_eq!(out.dimensions(), (5, 5));
        let err = decode_bytes(
            &bytes,
            "c.png",
            Some(CropBox {
                x: 20,
                y: 0,
                w: 1,
                h: 1,
            }),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.png: crop 20,0,1,1 lies outside the 20 x 10 image"
        );
    }

    #[test]
    fn refuses_pixel_bombs_before_allocating() {
        let bytes = encode(DynamicImage::ImageRgb8(gradient(64, 64)), ImageFormat::Png);
        let small = DecodeLimits { max_pixels: 1000 };
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
            "text.jpg: not a recognised image (JPEG, PNG or TIFF expected)"
        );
        for cut in [10, 100, bytes.len() / 2] {
            match decode_bytes(&bytes[..cut], "cut.jpg", None, &limits()) {
                Err(e) => assert!(e.to_string().starts_with("cut.jpg: "), "{e}"),
                // JPEG decoders may fill a missing tail with grey; that is not a crash.
                Ok(img) => assert_eq!(img.dimensions(), (64, 64)),
            }
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

    #[test]
    fn multiband_tiff_is_a_clean_error() {
        // A 5-band 8-bit TIFF, as multispectral sensors write.
        let bytes = five_band_tiff(8, 8);
        match decode_bytes(&bytes, "ms.tif", None, &limits()) {
            Err(e) => assert!(e.to_string().starts_with("ms.tif: "), "{e}"),
            Ok(img) => assert_eq!(img.dimensions(), (8, 8)),
        }
    }

    #[test]
    fn a_decoder_panic_is_an_error_naming_the_file() {
        // The `tiff` crate (0.11) asserts (image.rs, "TODO: Should these
        // return errors instead?") on band-interleaved tiled TIFFs whose
        // tiles overhang the image's bottom edge.
        let bytes = planar_tiled_tiff(20, 20, 16);
        let err = decode_bytes(&bytes, "planar.tif", None, &limits()).unwrap_err();
        assert!(matches!(err, DecodeError::DecoderPanic { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "planar.tif: the decoder crashed on this file (caught; please report it): "
            ),
            "{msg}"
        );
        assert!(msg.contains("tiff"), "the panic's location: {msg}");
        // The copy the end-to-end tests use is this file.
        assert_eq!(&bytes[..], include_bytes!("testdata/planar_tiled.tif"));
        // Through a file too, as every caller of decode_file sees it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("planar.tif");
        std::fs::write(&path, &bytes).unwrap();
        let err = decode_file(&path, None, &limits()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: the decoder crashed", path.display())),
            "{err}"
        );
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
    fn random_crops_give_the_clipped_box_or_an_error() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let img = gradient(23, 17);
        for _ in 0..2000 {
            let c = CropBox {
                x: rng.gen_range(0..30),
                y: rng.gen_range(0..30),
                w: rng.gen_range(1..40),
                h: rng.gen_range(1..40),
            };
            match apply_crop(img.clone(), c, "r.png") {
                Ok(out) => {
                    assert!(c.x < 23 && c.y < 17, "{c}");
                    assert_eq!(out.dimensions(), (c.w.min(23 - c.x), c.h.min(17 - c.y)));
                    assert_eq!(out.get_pixel(0, 0), img.get_pixel(c.x, c.y));
                }
                Err(e) => assert!(c.x >= 23 || c.y >= 17, "{c}: {e}"),
            }
        }
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

    /// Minimal little-endian TIFF: one strip, 5 samples per pixel, 8 bits each.
    fn five_band_tiff(w: u32, h: u32) -> Vec<u8> {
        let samples = 5u16;
        let data_len = w * h * samples as u32;
        let entries: Vec<(u16, u16, u32, u32)> = vec![
            (256, 4, 1, w),              // ImageWidth
            (257, 4, 1, h),              // ImageLength
            (258, 3, 1, 8),              // BitsPerSample (same for all)
            (259, 3, 1, 1),              // Compression: none
            (262, 3, 1, 1),              // Photometric: BlackIsZero
            (273, 4, 1, 8),              // StripOffsets: right after header
            (277, 3, 1, samples as u32), // SamplesPerPixel
            (278, 4, 1, h),              // RowsPerStrip
            (279, 4, 1, data_len),       // StripByteCounts
            (284, 3, 1, 1),              // PlanarConfiguration: chunky
            (338, 3, 1, 0),              // ExtraSamples: unspecified (one value)
        ];
        let mut out = Vec::new();
        out.extend_from_slice(b"II");
        out.extend_from_slice(&42u16.to_le_bytes());
        out.extend_from_slice(&(8 + data_len).to_le_bytes());
        out.extend((0..data_len).map(|i| (i % 251) as u8));
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, typ, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if typ == 3 {
                out.extend_from_slice(&(value as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&value.to_le_bytes());
            }
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
