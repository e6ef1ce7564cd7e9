//! JPEG decoding at a reduced DCT scale and over a cropping region only,
//! through libjpeg-turbo's TurboJPEG 3 API (the `turbojpeg-sys` crate, which
//! builds libjpeg-turbo 3 with its SIMD code from vendored source).
//!
//! This is what PIL's `Image.draft("RGB", size)` does for a JPEG: the
//! inverse DCT of each 8 x 8 block produces 4 x 4, 2 x 2 or 1 x 1 pixels
//! (scale 1/2, 1/4, 1/8), so an image that is shrunk right after decoding
//! costs a fraction of a full decode. On top of PIL, only the blocks of the
//! crop window are transformed (`tj3SetCroppingRegion`: libjpeg's
//! `jpeg_crop_scanline` / `jpeg_skip_scanlines`; the entropy-coded data
//! outside the window is still read, as a sequential JPEG requires).
//!
//! Strict as the full-resolution path ([`super::decode`]): libjpeg's
//! warnings (data that ends early, a corrupt Huffman code) stop the decode
//! (`TJPARAM_STOPONWARNING`) and become [`DecodeError::Corrupt`] naming the
//! file. The rows above the window are entropy-decoded (and checked);
//! libjpeg does not read the rows below it at all (`jpeg_skip_scanlines`
//! to the bottom), so a file cut short there is caught by walking its
//! markers to the EOI marker first ([`super::decode`]'s `ends_with_eoi`),
//! while bit errors inside the entropy-coded data below the window go
//! unnoticed, as they do for PIL's draft + crop.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};

use image::RgbImage;
use rayon::prelude::*;
use turbojpeg_sys as tj;

use super::decode::{check_size, corrupt, ends_with_eoi, DecodeError, DecodeOptions};
use super::manifest::CropBox;

/// The reductions tried, the strongest last: libjpeg's DCT scaling factors
/// 1/2, 1/4, 1/8 (those of PIL's draft mode).
const DENOMINATORS: [u32; 3] = [2, 4, 8];

/// The denominator `d` (2, 4 or 8) of the smallest scale 1/d at which a
/// `w` x `h` crop's shorter side, rounded down, still is at least
/// `resize_to` pixels (`min(w, h) / d >= resize_to`): the rule of PIL's
/// draft mode in the PyTorch reference (`torch_data_reference.py --draft`),
/// applied to the crop. `None` when not even 1/2 fits, or `resize_to` is 0.
pub(crate) fn scale_for(w: u32, h: u32, resize_to: u32) -> Option<u32> {
    if resize_to == 0 {
        return None;
    }
    DENOMINATORS
        .iter()
        .copied()
        .take_while(|d| w.min(h) / d >= resize_to)
        .last()
}

/// `crop` at scale 1/`denom`: every coordinate divided and rounded down, as
/// the PyTorch reference scales the box after PIL's draft
/// (`int(v * f)`). Inside the scaled image whenever `crop` is inside the
/// full one (libjpeg's scaled size is `ceil(width / denom)`).
pub(crate) fn scaled_crop(crop: CropBox, denom: u32) -> CropBox {
    CropBox {
        x: crop.x / denom,
        y: crop.y / denom,
        w: crop.w / denom,
        h: crop.h / denom,
    }
}

/// The iMCU width in pixels per `TJSAMP_*` subsampling (444, 422, 420,
/// GRAY, 440, 411, 441): turbojpeg.h's `tjMCUWidth`, a `static` array in
/// the header that the library does not export.
const MCU_WIDTH: [u32; tj::TJ_NUMSAMP as usize] = [8, 16, 16, 8, 8, 32, 8];

/// What libjpeg-turbo's header says about a JPEG.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// `TJSAMP_*`: chrominance subsampling, which sets the iMCU width.
    subsamp: c_int,
    /// 8-bit, lossy, YCbCr / RGB / gray: a JPEG this module decodes to RGB
    /// at reduced scale (CMYK, 12-bit and lossless JPEGs are left to the
    /// full-resolution path).
    scalable: bool,
}

/// Decodes `crop` (the whole image when `None`) of the JPEG `bytes` at the
/// smallest DCT scale at which it is still at least `resize_to` on its
/// shorter side ([`scale_for`]), decoding only the blocks the crop needs.
/// Returns the crop at that scale ([`scaled_crop`]) with the denominator
/// (1 for a crop of part of the image that no reduction fits: its blocks
/// only, at full scale), or `None` for a whole image that no reduction
/// fits or a JPEG that is not [`JpegHeader`]'s `scalable` (the caller
/// decodes at full resolution).
///
/// Errors: [`DecodeError::TooLarge`] above `limits` (before decoding),
/// [`DecodeError::CropOutside`] for a crop not inside the image,
/// [`DecodeError::Corrupt`] naming the file for damaged data.
pub(crate) fn decode_scaled(
    bytes: &[u8],
    name: &str,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
    resize_to: u32,
) -> Result<Option<(RgbImage, u32)>, DecodeError> {
    with_decompressor(name, |d| {
        let header = d.header(bytes, name, limits)?;
        let (crop, part) = match crop {
            Some(c) => (
                check_crop(c, &header, name)?,
                c.w < header.width || c.h < header.height,
            ),
            None => (
                CropBox {
                    x: 0,
                    y: 0,
                    w: header.width,
                    h: header.height,
                },
                false,
            ),
        };
        if !header.scalable {
            return Ok(None);
        }
        // A crop of part of the image is decoded over its blocks only, at
        // full scale when no reduction fits: libjpeg-turbo then skips the
        // IDCT and colour conversion outside the crop and every row below
        // it (fMoW's context crops are mostly smaller than 2 x 448 px, so
        // this is the common case on fMoW; 1.5x zune-jpeg's whole-image
        // decode, BENCHMARKS.md). A whole image at full scale stays on
        // zune-jpeg: today's path, bit for bit.
        let denom = match scale_for(crop.w, crop.h, resize_to) {
            Some(denom) => denom,
            None if part => 1,
            None => return Ok(None),
        };
        check_eoi(bytes, name)?;
        let img = d.decode_region(bytes, name, &header, denom, scaled_crop(crop, denom))?;
        Ok(Some((img, denom)))
    })
}

/// Decodes `crop` (the whole image when `None`) of the JPEG `bytes` at
/// scale 1/`denom` (1, 2, 4 or 8; the crop box scaled as by
/// [`scaled_crop`]) through libjpeg-turbo, decoding only the crop's blocks,
/// whatever the crop's size: the benchmark's libjpeg-turbo rows (full scale,
/// or a chosen scale). Errors as [`decode_scaled`]; a JPEG that is not
/// `scalable` here is [`DecodeError::Unsupported`].
pub(crate) fn decode_at(
    bytes: &[u8],
    name: &str,
    crop: Option<CropBox>,
    limits: &DecodeOptions,
    denom: u32,
) -> Result<RgbImage, DecodeError> {
    with_decompressor(name, |d| {
        let header = d.header(bytes, name, limits)?;
        if !header.scalable {
            return Err(DecodeError::Unsupported {
                path: name.to_string(),
                message: "JPEG not 8-bit lossy YCbCr, RGB or gray".into(),
            });
        }
        let crop = match crop {
            Some(c) => scaled_crop(check_crop(c, &header, name)?, denom),
            None => CropBox {
                x: 0,
                y: 0,
                w: header.width.div_ceil(denom),
                h: header.height.div_ceil(denom),
            },
        };
        check_eoi(bytes, name)?;
        d.decode_region(bytes, name, &header, denom, crop)
    })
}

/// A JPEG whose marker sequence does not reach its EOI marker is cut short
/// ([`DecodeError::Corrupt`]): libjpeg does not read below the region.
fn check_eoi(bytes: &[u8], name: &str) -> Result<(), DecodeError> {
    match ends_with_eoi(bytes) {
        true => Ok(()),
        false => Err(corrupt(
            name,
            "JPEG ends before its end-of-image marker (file cut short)",
        )),
    }
}

/// `crop` when it lies inside the image, else [`DecodeError::CropOutside`]
/// (the error of the full-resolution path).
fn check_crop(c: CropBox, header: &JpegHeader, name: &str) -> Result<CropBox, DecodeError> {
    let inside = c.w > 0
        && c.h > 0
        && c.x as u64 + c.w as u64 <= header.width as u64
        && c.y as u64 + c.h as u64 <= header.height as u64;
    if inside {
        Ok(c)
    } else {
        Err(DecodeError::CropOutside {
            path: name.to_string(),
            crop: c,
            width: header.width,
            height: header.height,
        })
    }
}

/// A TurboJPEG decompression instance (`tj3Init(TJINIT_DECOMPRESS)`);
/// destroyed on drop. Not shareable between threads, so each thread keeps
/// its own ([`with_decompressor`]).
struct Decompressor(tj::tjhandle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init, is not null, and is
        // destroyed exactly once, here.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

thread_local! {
    /// This thread's instance, made on first use.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's [`Decompressor`]; an instance that reported
/// an error is destroyed, not reused.
fn with_decompressor<T>(
    name: &str,
    f: impl FnOnce(&Decompressor) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: tj3Init has no preconditions; a null result is checked.
            let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
            if handle.is_null() {
                return Err(corrupt(name, "libjpeg-turbo: cannot create a decompressor"));
            }
            *slot = Some(Decompressor(handle));
        }
        let result = f(slot.as_ref().expect("made above"));
        if result.is_err() {
            // After an error libjpeg's state machine may not be back at its
            // start (the next image would fail with the old error): the
            // next image gets a new instance.
            *slot = None;
        }
        result
    })
}

impl Decompressor {
    /// The instance's last error message (`tj3GetErrorStr`) as a
    /// [`DecodeError::Corrupt`] naming the file.
    fn error(&self, name: &str) -> DecodeError {
        // SAFETY: the handle is valid; tj3GetErrorStr returns a pointer to
        // the instance's NUL-terminated message buffer, copied before any
        // other call on the instance.
        let message = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        corrupt(name, format!("JPEG: {}", message.to_string_lossy()))
    }

    fn set(&self, param: tj::TJPARAM, value: c_int, name: &str) -> Result<(), DecodeError> {
        // SAFETY: the handle is valid; invalid values are reported, not UB.
        match unsafe { tj::tj3Set(self.0, param as c_int, value) } {
            0 => Ok(()),
            _ => Err(self.error(name)),
        }
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is valid; unknown parameters return -1.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    /// Reads the header (`tj3DecompressHeader`), sets strict decoding and
    /// the pixel limit, and refuses images above `limits` before any pixel
    /// memory is allocated.
    fn header(
        &self,
        bytes: &[u8],
        name: &str,
        limits: &DecodeOptions,
    ) -> Result<JpegHeader, DecodeError> {
        self.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1, name)?;
        // 0 = no limit in TurboJPEG; check_size below is the limit then.
        let max = c_int::try_from(limits.max_pixels).unwrap_or(0);
        self.set(tj::TJPARAM_TJPARAM_MAXPIXELS, max, name)?;
        // SAFETY: the handle is valid and `bytes` is a live slice of
        // `bytes.len()` bytes, only read.
        if unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t) }
            != 0
        {
            return Err(self.error(name));
        }
        let dim = |p| u32::try_from(self.get(p)).unwrap_or(0);
        let width = dim(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = dim(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        check_size(name, width, height, limits)?;
        let subsamp = self.get(tj::TJPARAM_TJPARAM_SUBSAMP);
        let colorspace = self.get(tj::TJPARAM_TJPARAM_COLORSPACE);
        let scalable = self.get(tj::TJPARAM_TJPARAM_PRECISION) == 8
            && self.get(tj::TJPARAM_TJPARAM_LOSSLESS) == 0
            && (0..tj::TJ_NUMSAMP as c_int).contains(&subsamp)
            && [tj::TJCS_TJCS_RGB, tj::TJCS_TJCS_YCbCr, tj::TJCS_TJCS_GRAY]
                .iter()
                .any(|&c| c as c_int == colorspace);
        Ok(JpegHeader {
            width,
            height,
            subsamp,
            scalable,
        })
    }

    /// Decodes `region` (in the coordinates of the image at scale
    /// 1/`denom`, inside it) to RGB. TurboJPEG's cropping region must start
    /// at a multiple of the scaled iMCU width, so the region decoded starts
    /// at the multiple at or left of `region.x` and the columns before
    /// `region.x` are cut off here. `header` must come from
    /// [`Self::header`] of the same `bytes`, the last call before this one.
    fn decode_region(
        &self,
        bytes: &[u8],
        name: &str,
        header: &JpegHeader,
        denom: u32,
        region: CropBox,
    ) -> Result<RgbImage, DecodeError> {
        let factor = tj::tjscalingfactor {
            num: 1,
            denom: denom as c_int,
        };
        // SAFETY: the handle is valid; an unsupported factor is reported.
        if unsafe { tj::tj3SetScalingFactor(self.0, factor) } != 0 {
            return Err(self.error(name));
        }
        let mcu_width = MCU_WIDTH[header.subsamp as usize];
        let imcu = mcu_width.div_ceil(denom); // TJSCALED(tjMCUWidth[subsamp], 1/denom)
        let left = region.x - region.x % imcu;
        let (w, h) = (region.x + region.w - left, region.h);
        let as_int =
            |v: u32| c_int::try_from(v).map_err(|_| corrupt(name, "JPEG region too large"));
        let tj_region = tj::tjregion {
            x: as_int(left)?,
            y: as_int(region.y)?,
            w: as_int(w)?,
            h: as_int(h)?,
        };
        // SAFETY: the handle is valid and the header was read; a region
        // that breaks TurboJPEG's rules is reported, not UB.
        if unsafe { tj::tj3SetCroppingRegion(self.0, tj_region) } != 0 {
            return Err(self.error(name));
        }
        let mut buf = vec![0u8; w as usize * h as usize * 3];
        // SAFETY: the handle is valid; `bytes` is only read; `buf` holds
        // exactly region height x pitch bytes, which is what tj3Decompress8
        // writes for a cropping region with TJPF_RGB (3 bytes a pixel) and
        // pitch w * 3.
        let status = unsafe {
            tj::tj3Decompress8(
                self.0,
                bytes.as_ptr(),
                bytes.len() as tj::size_t,
                buf.as_mut_ptr(),
                as_int(w * 3)?,
                tj::TJPF_TJPF_RGB,
            )
        };
        if status != 0 {
            return Err(self.error(name));
        }
        let img = RgbImage::from_raw(w, h, buf).expect("buffer sized w x h x 3 above");
        Ok(if left == region.x {
            img
        } else {
            image::imageops::crop_imm(&img, region.x - left, 0, region.w, h).to_image()
        })
    }
}

/// Chrominance subsampling of [`encode`] (TurboJPEG's `TJSAMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subsampling {
    /// 4:4:4, no subsampling.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' files only
    S444,
    /// 4:2:0 (what most cameras and fMoW's JPEGs use; 16 x 16 MCUs).
    S420,
    /// One gray channel (libjpeg's RGB-to-luma conversion).
    #[cfg_attr(not(test), allow(dead_code))] // the tests' files only
    Gray,
}

/// Encodes `img` as a baseline JPEG at `quality` (1-100) with libjpeg-turbo
/// (`tj3Compress8`): test and benchmark files with a chosen subsampling,
/// which the `image` crate's encoder does not offer.
pub(crate) fn encode(img: &RgbImage, quality: u8, subsampling: Subsampling) -> Vec<u8> {
    encode_with(img, quality, subsampling, false)
}

/// [`encode`], progressive (multi-scan) when `progressive`.
pub(crate) fn encode_with(
    img: &RgbImage,
    quality: u8,
    subsampling: Subsampling,
    progressive: bool,
) -> Vec<u8> {
    let subsamp = match subsampling {
        Subsampling::S444 => tj::TJSAMP_TJSAMP_444,
        Subsampling::S420 => tj::TJSAMP_TJSAMP_420,
        Subsampling::Gray => tj::TJSAMP_TJSAMP_GRAY,
    };
    let (w, h) = (img.width() as c_int, img.height() as c_int);
    // SAFETY: the handle is checked and destroyed once; `img` holds h rows
    // of w * 3 bytes (TJPF_RGB, pitch w * 3), only read; TurboJPEG
    // allocates the output (tj3Alloc), copied and freed with tj3Free.
    unsafe {
        let handle = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as c_int);
        assert!(
            !handle.is_null(),
            "libjpeg-turbo: cannot create a compressor"
        );
        tj::tj3Set(
            handle,
            tj::TJPARAM_TJPARAM_QUALITY as c_int,
            quality as c_int,
        );
        tj::tj3Set(handle, tj::TJPARAM_TJPARAM_SUBSAMP as c_int, subsamp);
        let progressive = c_int::from(progressive);
        tj::tj3Set(
            handle,
            tj::TJPARAM_TJPARAM_PROGRESSIVE as c_int,
            progressive,
        );
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut size: tj::size_t = 0;
        let status = tj::tj3Compress8(
            handle,
            img.as_raw().as_ptr(),
            w,
            w * 3,
            h,
            tj::TJPF_TJPF_RGB,
            &mut out,
            &mut size,
        );
        assert_eq!(status, 0, "libjpeg-turbo: encoding failed");
        let bytes = std::slice::from_raw_parts(out, size as usize).to_vec();
        tj::tj3Free(out.cast());
        tj::tj3Destroy(handle);
        bytes
    }
}

/// Value noise at four octaves (fields and blocks of 300 down to 6 px) plus
/// per-pixel grain, with correlated colour: about as hard to compress as
/// satellite imagery (~3 bits a pixel at quality 92, where the smooth
/// renders of `synth` take well under 1): the files of the tests and of
/// `geossl bench decode`'s scaled-JPEG rows.
pub(crate) fn aerial_texture(w: u32, h: u32, seed: u64) -> RgbImage {
    let octaves = [(300.0, 60.0), (70.0, 35.0), (18.0, 20.0), (6.0, 12.0)];
    let rows: Vec<Vec<u8>> = (0..h)
        .into_par_iter()
        .map(|y| {
            let mut row = Vec::with_capacity(w as usize * 3);
            for x in 0..w {
                let mut v = 120.0;
                for (k, &(cell, amp)) in octaves.iter().enumerate() {
                    v += amp
                        * (value_noise(x as f64 / cell, y as f64 / cell, seed + k as u64) - 0.5);
                }
                let tint = value_noise(x as f64 / 150.0, y as f64 / 150.0, seed + 9) - 0.5;
                let grain = 14.0 * (hash(x as u64, y as u64, seed + 17) - 0.5);
                let c = |a: f64, b: f64| (v * a + b + grain).clamp(0.0, 255.0) as u8;
                row.extend([
                    c(1.0, 40.0 * tint),
                    c(0.95, 8.0),
                    c(0.85, 20.0 - 40.0 * tint),
                ]);
            }
            row
        })
        .collect();
    RgbImage::from_raw(w, h, rows.concat()).expect("w x h x 3 values")
}

/// Smoothly interpolated lattice noise in [0, 1].
fn value_noise(x: f64, y: f64, seed: u64) -> f64 {
    let (xi, yi) = (x.floor(), y.floor());
    let (fx, fy) = (x - xi, y - yi);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (xi, yi) = (xi as u64, yi as u64);
    let at = |dx, dy| hash(xi + dx, yi + dy, seed);
    let top = at(0, 0) + sx * (at(1, 0) - at(0, 0));
    let bottom = at(0, 1) + sx * (at(1, 1) - at(0, 1));
    top + sy * (bottom - top)
}

/// A hash of a lattice point to [0, 1) (SplitMix64's finaliser).
fn hash(x: u64, y: u64, seed: u64) -> f64 {
    let mut z = x
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(y.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(seed.wrapping_mul(0x1656_67B1_9E37_79F9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / u64::MAX as f64
}

/// Peak signal-to-noise ratio in dB of two images of one size, over all
/// channels (infinite when identical).
pub(crate) fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "PSNR of images of two sizes"
    );
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
        .sum();
    let mse = se / a.as_raw().len().max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::resize_center_crop;
    use crate::data::decode::{decode_bytes, decode_bytes_scaled, DecodeScale};

    fn crop(s: &str) -> CropBox {
        s.parse().unwrap()
    }

    fn full() -> DecodeOptions {
        DecodeOptions::full()
    }

    #[test]
    fn scale_is_the_smallest_that_keeps_the_shorter_side() {
        assert_eq!(scale_for(1000, 1000, 448), Some(2));
        assert_eq!(scale_for(895, 2000, 448), None);
        assert_eq!(scale_for(896, 2000, 448), Some(2));
        assert_eq!(scale_for(1792, 1800, 448), Some(4));
        assert_eq!(scale_for(3584, 3600, 448), Some(8));
        assert_eq!(scale_for(9000, 9000, 448), Some(8));
        assert_eq!(scale_for(64, 64, 224), None);
        assert_eq!(scale_for(640, 640, 0), None);
    }

    /// Resize(r) + CenterCrop(r) of the scaled crop against the same of the
    /// full decode's crop, on odd sizes and crops off the 8/16 grid.
    #[test]
    fn scaled_decode_then_resize_is_close_to_full_decode_then_resize() {
        // Measured PSNR: 38.06, 34.89, 39.77, 40.79 dB (~2 bits a pixel at
        // quality 92); the bounds are a little under.
        let cases = [
            (
                1203,
                901,
                Subsampling::S420,
                "101,67,1003,811",
                200,
                4,
                37.5,
            ),
            (1203, 901, Subsampling::S444, "13,5,1177,893", 100, 8, 34.0),
            (997, 1501, Subsampling::Gray, "3,211,990,1283", 400, 2, 39.0),
            (997, 1501, Subsampling::S420, "7,9,979,1489", 448, 2, 40.0),
        ];
        for (i, (w, h, sub, c, r, expected, bound)) in cases.into_iter().enumerate() {
            let bytes = encode(&aerial_texture(w, h, i as u64), 92, sub);
            let c = crop(c);
            let (scaled, denom) =
                decode_scaled(&bytes, "t.jpg", Some(c), &DecodeOptions::default(), r)
                    .unwrap()
                    .expect("a scale fits");
            assert_eq!(denom, expected, "case {i}");
            let s = scaled_crop(c, denom);
            assert_eq!(scaled.dimensions(), (s.w, s.h), "case {i}");
            // The public path returns the same image.
            let auto = DecodeOptions::default();
            let public = decode_bytes_scaled(&bytes, "t.jpg", Some(c), &auto, Some(r)).unwrap();
            assert!(public == scaled, "case {i}");
            let reference = decode_bytes(&bytes, "t.jpg", Some(c), &full()).unwrap();
            let a = resize_center_crop(&scaled, r).unwrap();
            let b = resize_center_crop(&reference, r).unwrap();
            let p = psnr(&a, &b);
            let bpp = bytes.len() as f64 * 8.0 / (w * h) as f64;
            eprintln!("case {i}: {w} x {h} {sub:?} {bpp:.2} bits/px crop {c} r {r} scale 1/{denom}: PSNR {p:.2} dB");
            assert!(p > bound, "case {i}: PSNR {p:.2} dB, below {bound}");
        }
    }

    /// The cropping region (aligned to the scaled iMCU, then sub-cropped)
    /// gives exactly the pixels of the whole image decoded at that scale,
    /// baseline and progressive.
    #[test]
    fn region_decode_equals_the_region_of_a_whole_decode_at_the_same_scale() {
        let img = aerial_texture(1203, 901, 7);
        let kinds = [
            (Subsampling::S420, false),
            (Subsampling::S444, false),
            (Subsampling::Gray, false),
            (Subsampling::S420, true),
        ];
        for (sub, progressive) in kinds {
            let bytes = encode_with(&img, 90, sub, progressive);
            for denom in [2, 4, 8] {
                let limits = DecodeOptions::default();
                let whole = decode_at(&bytes, "t.jpg", None, &limits, denom).unwrap();
                assert_eq!(
                    whole.dimensions(),
                    (1203u32.div_ceil(denom), 901u32.div_ceil(denom))
                );
                for c in [
                    "101,67,1003,811",
                    "13,5,1177,893",
                    "1,1,1202,900",
                    "777,333,17,45",
                ] {
                    let s = scaled_crop(crop(c), denom);
                    if s.w == 0 || s.h == 0 {
                        continue;
                    }
                    let region = decode_at(&bytes, "t.jpg", Some(crop(c)), &limits, denom).unwrap();
                    let expected = image::imageops::crop_imm(&whole, s.x, s.y, s.w, s.h);
                    assert!(
                        region == expected.to_image(),
                        "{sub:?} progressive {progressive} 1/{denom} crop {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_jpegs_are_errors_naming_the_file_under_scaling() {
        let bytes = encode(&aerial_texture(1203, 901, 3), 90, Subsampling::S420);
        let auto = DecodeOptions::default();
        // A crop at the top: the cuts but the first lie below its blocks,
        // where libjpeg reads nothing (the EOI check catches them).
        let c = Some(crop("0,0,600,400"));
        assert!(decode_scaled(&bytes, "ok.jpg", c, &auto, 100)
            .unwrap()
            .is_some());
        for cut in [100, bytes.len() / 3, bytes.len() * 9 / 10, bytes.len() - 2] {
            let err =
                decode_bytes_scaled(&bytes[..cut], "cut.jpg", c, &auto, Some(100)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Corrupt { .. })
                    && err
                        .to_string()
                        .starts_with("cut.jpg: corrupt or truncated image: JPEG"),
                "cut at {cut}: {err}"
            );
        }
        // A marker in the entropy-coded data a fifth of the way down: inside
        // a crop at the top, above one at the bottom (whose rows above are
        // entropy-decoded too).
        let mut bad = bytes.clone();
        let at = bytes.len() / 5;
        bad[at..at + 2].copy_from_slice(&[0xFF, 0xC4]);
        for c in [c, Some(crop("500,500,700,400"))] {
            let err = decode_bytes_scaled(&bad, "bad.jpg", c, &auto, Some(100)).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("bad.jpg: corrupt or truncated image: JPEG"),
                "{err}"
            );
        }
    }

    /// One bad file must not break the thread's decoder for the next ones
    /// (it did: every later image failed with the bad file's error).
    #[test]
    fn a_good_jpeg_after_a_corrupt_one_decodes() {
        let good = encode(&aerial_texture(403, 301, 4), 90, Subsampling::S420);
        // A Huffman table whose code counts are bogus: an error while the
        // header is read (the case that broke the decoder).
        let dht = good.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        let mut bad = good.clone();
        bad[dht + 5..dht + 21].fill(0xFF);
        let auto = DecodeOptions::default();
        let c = Some(crop("10,10,300,250"));
        let expected = decode_scaled(&good, "good.jpg", c, &auto, 100).unwrap();
        for _ in 0..3 {
            let err = decode_scaled(&bad, "bad.jpg", c, &auto, 100).unwrap_err();
            assert!(err.to_string().contains("Huffman"), "{err}");
            let again = decode_scaled(&good, "good.jpg", c, &auto, 100).unwrap();
            assert!(again == expected);
        }
    }

    #[test]
    fn a_crop_outside_the_image_is_refused_under_scaling_as_at_full_scale() {
        let bytes = encode(&aerial_texture(1203, 901, 5), 90, Subsampling::S420);
        let auto = DecodeOptions::default();
        for c in ["1000,0,300,899", "0,0,1203,902", "500,500,800,300"] {
            let err =
                decode_bytes_scaled(&bytes, "s.jpg", Some(crop(c)), &auto, Some(100)).unwrap_err();
            assert!(matches!(err, DecodeError::CropOutside { .. }), "{c}: {err}");
            assert_eq!(
                err.to_string(),
                format!("s.jpg: crop {c} does not lie inside the 1203 x 901 image")
            );
        }
    }

    /// A crop of part of the image that no reduction fits is decoded over
    /// its blocks at full scale: exactly that region of libjpeg-turbo's
    /// whole decode, and close to zune-jpeg's (two IDCT and upsampling
    /// implementations of the same standard).
    #[test]
    fn a_crop_without_a_fitting_scale_is_decoded_over_its_blocks_at_full_scale() {
        let img = aerial_texture(1203, 901, 11);
        for sub in [Subsampling::S420, Subsampling::S444] {
            let bytes = encode(&img, 90, sub);
            let auto = DecodeOptions::default();
            let whole = decode_at(&bytes, "t.jpg", None, &auto, 1).unwrap();
            for c in ["101,67,603,411", "13,5,447,893", "777,333,17,45"] {
                let c = crop(c);
                let (region, denom) = decode_scaled(&bytes, "t.jpg", Some(c), &auto, 448)
                    .unwrap()
                    .unwrap();
                assert_eq!(denom, 1, "{sub:?} {c}");
                let expected = image::imageops::crop_imm(&whole, c.x, c.y, c.w, c.h).to_image();
                assert!(region == expected, "{sub:?} {c}");
                let zune = decode_bytes(&bytes, "t.jpg", Some(c), &full()).unwrap();
                let p = psnr(&region, &zune);
                eprintln!("{sub:?} crop {c}: libjpeg-turbo vs zune-jpeg PSNR {p:.2} dB");
                assert!(p > 60.0, "{sub:?} {c}: PSNR {p:.2}");
            }
        }
    }

    /// Where no reduction fits, under `Full`, or with no resize ahead, the
    /// decode is exactly the full-resolution path's.
    #[test]
    fn without_a_fitting_scale_the_decode_is_the_full_path() {
        let bytes = encode(&aerial_texture(301, 203, 9), 90, Subsampling::S420);
        let auto = DecodeOptions::default();
        let reference = decode_bytes(&bytes, "s.jpg", None, &auto).unwrap();
        for (options, r) in [(auto, Some(102)), (auto, None), (full(), Some(50))] {
            let out = decode_bytes_scaled(&bytes, "s.jpg", None, &options, r).unwrap();
            assert!(out == reference, "{:?} {r:?}", options.scale);
        }
        assert_eq!(full().scale, DecodeScale::Full);
        // 203 / 2 >= 101: scaled, the whole image at 1/2 (301 / 2 and
        // 203 / 2 rounded down).
        let out = decode_bytes_scaled(&bytes, "s.jpg", None, &auto, Some(101)).unwrap();
        assert_eq!(out.dimensions(), (150, 101));
    }
}
