//! The MoCo-v2 "aug+" pipeline with torchvision's semantics, on 8-bit RGB
//! images, ending in a normalised CHW float tensor layout:
//!
//! [Resize(pre) + CenterCrop(pre)] -> RandomResizedCrop(size, scale, ratio)
//! -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8 (the four adjustments in
//! random order, torchvision's tensor formulas) -> RandomGrayscale(p = 0.2)
//! -> GaussianBlur(sigma ~ U[0.1, 2.0]) with p = 0.5 -> RandomHorizontalFlip
//! -> ToTensor -> Normalize(ImageNet mean/std).
//!
//! The bracketed pre-step is the temporal code path's Resize(448) +
//! CenterCrop(448) before RandomResizedCrop(224), scaled to the image size in
//! use. Colour work is done in f32 on [0, 1] values, as torchvision does on
//! tensors (PIL would round to 8 bits between steps). The blur is a true
//! Gaussian of standard deviation sigma pixels (kernel radius ceil(3 sigma)),
//! where the reference's PIL filter approximates one with box passes; sigma's
//! range scales with the crop size (see [`AugConfig::aug_plus`]).
//!
//! Geometry follows torchvision's integer arithmetic (Resize's sizes,
//! CenterCrop's half-to-even offsets, RandomResizedCrop's rounding). A crop
//! of a resized image is resampled straight from the original: its box is
//! mapped back by exact edges ([`ResizedCrop::source_box`]), so every box
//! lies inside its image by construction, and [`resize_box`] checks it
//! anyway, returning an error rather than panicking.
//!
//! # C bands
//!
//! Every image that is not a JPEG/PNG under the default input is a
//! [`BandImage`] of C bands of unit values (see [`super::band_image`]),
//! augmented by [`augment_bands_into`] with the same random draws in the
//! same order as the RGB path (so a seed gives the same geometry whatever
//! C is), after SSL4EO-S12's and torchgeo's multispectral augmentation:
//! - geometry (pre-step, RandomResizedCrop, flip) and the Gaussian blur
//!   apply to every band alike; resampling is the same antialiased
//!   bilinear filter on f32 planes ([`resize_bands_box`]);
//! - brightness multiplies every band by one factor; contrast blends each
//!   band with its own mean over the valid pixels (SSL4EO-S12's per-band
//!   contrast; for the exact RGB triple the mean luma, as torchvision);
//! - saturation, hue and grayscale have no meaning beyond colour: they
//!   apply only when the input is exactly the three RGB channels
//!   (`InputSpec::rgb == Some([0, 1, 2])` and C = 3); otherwise their draws
//!   are made and not applied;
//! - normalisation is per channel with `InputSpec::mean` / `std`, and
//!   pixels that are invalid (NoData, mask, alpha) are written as
//!   [`NODATA_FILL`]. Validity follows the geometry: a resampled pixel is
//!   valid when the valid source pixels carry all of its filter weight
//!   (at least [`VALID_COVERAGE`]); the blur does not shrink the valid
//!   area (invalid pixels hold their band's mean, a neutral value).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rand::Rng;

use super::band_image::{BandImage, SourceImage};
use super::bands::{InputSpec, NODATA_FILL};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The smallest input side geossl accepts, for training and evaluation
/// alike: a ResNet downsamples by 32 (by 8 with the small-input stem), and
/// below 8 px even that stem's output is a single pixel.
pub const MIN_IMAGE_SIZE: u32 = 8;

/// Checks an input side against [`MIN_IMAGE_SIZE`]; the error names the
/// setting (`image-size`).
pub fn check_image_size(size: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        size >= MIN_IMAGE_SIZE,
        "image-size must be at least {MIN_IMAGE_SIZE} pixels, got {size}"
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugConfig {
    /// Output side in pixels.
    pub size: u32,
    /// Resize + CenterCrop to this side first (`None`: skip).
    pub pre_size: Option<u32>,
    /// RandomResizedCrop area fraction range (aug+: 0.2..1).
    pub scale: (f64, f64),
    /// RandomResizedCrop aspect ratio range (3/4..4/3).
    pub ratio: (f64, f64),
    pub jitter_p: f64,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub grayscale_p: f64,
    pub blur_p: f64,
    pub blur_sigma: (f32, f32),
    pub flip_p: f64,
}

impl AugConfig {
    /// aug+ at `size`, with the pre-step at twice the size (448 for 224) and
    /// the blur's sigma range scaled by size / 224: the reference blurs
    /// 224 px crops by 0.1-2 px, and the same relative blur on a 32 px crop is
    /// 0.014-0.29 px (2 px there would erase most of a small image).
    pub fn aug_plus(size: u32) -> Self {
        Self::aug_plus_pre(size, 0)
    }

    /// [`Self::aug_plus`] with the pre-step's side `pre` pixels; 0 means
    /// twice `size` (the default of pretraining and `bench data` alike).
    pub fn aug_plus_pre(size: u32, pre: u32) -> Self {
        let pre = if pre == 0 { size * 2 } else { pre };
        let blur_scale = size as f32 / 224.0;
        Self {
            size,
            pre_size: Some(pre),
            scale: (0.2, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: (0.1 * blur_scale, 2.0 * blur_scale),
            flip_p: 0.5,
        }
    }
}

/// An image as f32 RGB in [0, 1], HWC.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl FloatImage {
    pub fn from_rgb8(img: &RgbImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    fn pixels(&mut self) -> impl Iterator<Item = &mut [f32]> {
        self.data.chunks_exact_mut(3)
    }
}

/// Luma with ITU-R 601 weights, as torchvision's rgb_to_grayscale.
pub fn gray(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// torchvision's RandomResizedCrop.get_params: (top, left, height, width),
/// a box inside the `width` x `height` image by construction.
///
/// Sides are rounded as Python's `int(round(x))` does (half to even), and
/// the fallback (no draw fits in ten tries) is the central crop with the
/// aspect ratio clamped into `ratio`, its offsets `(height - h) // 2`. Sides
/// are kept within 1..=the image's: the same as torchvision except where
/// its fallback rounds a side of 0.5 px to an empty crop (1 px images).
pub fn random_resized_crop_params<R: Rng>(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> (u32, u32, u32, u32) {
    let area = (width as f64) * (height as f64);
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale.0..=scale.1);
        let aspect = rng.gen_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round_ties_even() as i64;
        let h = (target / aspect).sqrt().round_ties_even() as i64;
        if w > 0 && h > 0 && w <= width as i64 && h <= height as i64 {
            let top = rng.gen_range(0..=(height as i64 - h)) as u32;
            let left = rng.gen_range(0..=(width as i64 - w)) as u32;
            return (top, left, h as u32, w as u32);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        let h = (width as f64 / ratio.0).round_ties_even() as u32;
        (width, h.clamp(1, height.max(1)))
    } else if in_ratio > ratio.1 {
        let w = (height as f64 * ratio.1).round_ties_even() as u32;
        (w.clamp(1, width.max(1)), height)
    } else {
        (width, height)
    };
    (
        height.saturating_sub(h) / 2,
        width.saturating_sub(w) / 2,
        h,
        w,
    )
}

/// A box of a source image in pixel units, possibly fractional, as the
/// resampler reads it: its left and top edges, width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl PixelBox {
    /// The whole `w` x `h` image.
    pub fn whole(w: u32, h: u32) -> Self {
        Self::from_ints(0, 0, w, h)
    }

    /// A box with whole-pixel edges.
    pub fn from_ints(left: u32, top: u32, width: u32, height: u32) -> Self {
        Self {
            left: left as f64,
            top: top as f64,
            width: width as f64,
            height: height as f64,
        }
    }

    /// Whether a `w` x `h` image contains the box as fast_image_resize's
    /// crop check (`CroppedSrcImageView::crop`) decides it, in f64: finite
    /// values, a positive size, `left < w`, `top < h`, `left + width <= w`
    /// and `top + height <= h`.
    pub fn is_inside(&self, w: u32, h: u32) -> bool {
        let (fw, fh) = (w as f64, h as f64);
        [self.left, self.top, self.width, self.height]
            .iter()
            .all(|v| v.is_finite())
            && self.width > 0.0
            && self.height > 0.0
            && self.left >= 0.0
            && self.top >= 0.0
            && self.left < fw
            && self.top < fh
            && self.left + self.width <= fw
            && self.top + self.height <= fh
    }
}

impl std::fmt::Display for PixelBox {
    /// `left,top,width,height` with every digit f64 needs, so that a box
    /// a hair outside an image shows it (478.00000000000006).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.left, self.top, self.width, self.height
        )
    }
}

/// A resampling request that cannot be met. Every box geossl computes is
/// inside its image by construction; this is the checked answer for any
/// other (the resampler's own errors are passed on too, never unwrapped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResampleError {
    #[error(
        "resampling box {bbox} (left,top,width,height) is not inside the {width} x {height} image"
    )]
    BoxOutside {
        bbox: PixelBox,
        width: u32,
        height: u32,
    },
    #[error("cannot resample to {width} x {height} pixels")]
    EmptyOutput { width: u32, height: u32 },
    #[error("resampler: {0}")]
    Resizer(String),
}

/// The errors of [`resize_box`] and [`resize_bands_box`]: `bbox` not inside
/// a `size` image, or an empty `out` size.
fn check_resize(bbox: PixelBox, size: (u32, u32), out: (u32, u32)) -> Result<(), ResampleError> {
    let (width, height) = size;
    if !bbox.is_inside(width, height) {
        return Err(ResampleError::BoxOutside {
            bbox,
            width,
            height,
        });
    }
    if out.0 == 0 || out.1 == 0 {
        return Err(ResampleError::EmptyOutput {
            width: out.0,
            height: out.1,
        });
    }
    Ok(())
}

/// Resamples the box `bbox` of `img` to `out_w` x `out_h` with PIL's
/// antialiased bilinear filter (what torchvision's Resize and
/// RandomResizedCrop use on PIL images), by `fast_image_resize` (SIMD,
/// 8-bit, no intermediate copy of the box). The filter reads pixels around
/// the box too, up to the image's edges, as resizing the whole image and
/// then cropping does.
///
/// Errors: a box not inside the image ([`PixelBox::is_inside`]) or an empty
/// output; neither happens for the boxes of this module.
pub fn resize_box(
    img: &RgbImage,
    bbox: PixelBox,
    out_w: u32,
    out_h: u32,
) -> Result<RgbImage, ResampleError> {
    let (w, h) = img.dimensions();
    check_resize(bbox, (w, h), (out_w, out_h))?;
    if bbox == PixelBox::whole(w, h) && (out_w, out_h) == (w, h) {
        return Ok(img.clone());
    }
    let resizer = |e: &dyn std::fmt::Display| ResampleError::Resizer(e.to_string());
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3).map_err(|e| resizer(&e))?;
    let mut dst = Image::new(out_w, out_h, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(bbox.left, bbox.top, bbox.width, bbox.height);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| resizer(&e))?;
    RgbImage::from_raw(out_w, out_h, dst.into_vec())
        .ok_or_else(|| ResampleError::Resizer("output buffer of the wrong size".into()))
}

/// torchvision Resize(int): the size whose shorter side is `side`, the
/// aspect ratio kept, the longer side `int(side * long / short)` (the
/// integer quotient: `side * long` and `short` are integers, so Python's
/// float division cannot round across an integer). Saturates at u32::MAX
/// for needle-shaped images beyond any real scene.
pub fn shorter_side_size(w: u32, h: u32, side: u32) -> (u32, u32) {
    let long = |long: u32, short: u32| {
        ((long as u64 * side as u64) / short.max(1) as u64).clamp(1, u32::MAX as u64) as u32
    };
    if w <= h {
        (side, long(h, w))
    } else {
        (long(w, h), side)
    }
}

/// Python's `int(round(excess / 2.0))` for a whole number of pixels: half
/// to even, the offset of torchvision's `center_crop`. (Rounding half away
/// from zero moves every crop whose excess is 2 mod 4 plus 1 by a pixel.)
pub fn center_offset(excess: u32) -> u32 {
    let half = excess / 2;
    if excess % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// A crop of the image torchvision's Resize(side) would make, in that
/// resized image's pixels. Resampling [`ResizedCrop::source_box`] of the
/// original straight to `width` x `height` is the same resampling without
/// the full-size intermediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizedCrop {
    /// (width, height) after Resize(side), see [`shorter_side_size`].
    pub resized: (u32, u32),
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

impl ResizedCrop {
    /// The crop's box in the original `w` x `h` image, inside it by
    /// construction (see [`source_span`]).
    pub fn source_box(&self, w: u32, h: u32) -> PixelBox {
        let (left, width) = source_span(self.left, self.width, self.resized.0, w);
        let (top, height) = source_span(self.top, self.height, self.resized.1, h);
        PixelBox {
            left,
            top,
            width,
            height,
        }
    }
}

/// The span of cells `start .. start + len` of a grid of `resized` cells
/// laid over `original` pixels, as (start, length) in original pixels.
/// Edge i lies at `i * original / resized` and the last edge at exactly
/// `original`; the length is the difference of the edges, stepped down by
/// an ulp while `start + length` exceeds the end edge in f64 (a rounded
/// difference may, and the sum is what the resampler checks). For
/// `start < resized` and `len >= 1` the span is non-empty and inside
/// `0..original`; other arguments are clamped to the grid.
fn source_span(start: u32, len: u32, resized: u32, original: u32) -> (f64, f64) {
    let resized = resized.max(1);
    let end = start.saturating_add(len).min(resized);
    let start = start.min(end.saturating_sub(1));
    let edge = |i: u32| {
        if i >= resized {
            original as f64
        } else {
            (i as u64 * original as u64) as f64 / resized as f64
        }
    };
    let (lo, hi) = (edge(start), edge(end));
    let mut length = hi - lo;
    while length > 0.0 && lo + length > hi {
        length = f64::from_bits(length.to_bits() - 1);
    }
    (lo, length)
}

/// torchvision's Resize(side) + CenterCrop(side) as a crop of the resized
/// image: offsets `int(round((resized - side) / 2.0))`, half to even.
pub fn center_crop_geometry(w: u32, h: u32, side: u32) -> ResizedCrop {
    let (nw, nh) = shorter_side_size(w, h, side);
    let (cw, ch) = (side.min(nw), side.min(nh));
    ResizedCrop {
        resized: (nw, nh),
        left: center_offset(nw - cw),
        top: center_offset(nh - ch),
        width: cw,
        height: ch,
    }
}

/// torchvision's Resize(side) + RandomCrop(side) as a crop of the resized
/// image: offsets uniform in `0..=resized - side` (RandomCrop.get_params).
pub fn random_crop_geometry<R: Rng>(w: u32, h: u32, side: u32, rng: &mut R) -> ResizedCrop {
    let (nw, nh) = shorter_side_size(w, h, side);
    let (cw, ch) = (side.min(nw), side.min(nh));
    let top = rng.gen_range(0..=nh - ch);
    let left = rng.gen_range(0..=nw - cw);
    ResizedCrop {
        resized: (nw, nh),
        left,
        top,
        width: cw,
        height: ch,
    }
}

/// Resize(side) + CenterCrop(side) of `img` (see [`center_crop_geometry`]).
pub fn resize_center_crop(img: &RgbImage, side: u32) -> Result<RgbImage, ResampleError> {
    let (w, h) = img.dimensions();
    let g = center_crop_geometry(w, h, side);
    resize_box(img, g.source_box(w, h), g.width, g.height)
}

/// Resize(side) + RandomCrop(side) of `img` (see [`random_crop_geometry`]).
pub fn resize_random_crop<R: Rng>(
    img: &RgbImage,
    side: u32,
    rng: &mut R,
) -> Result<RgbImage, ResampleError> {
    let (w, h) = img.dimensions();
    let g = random_crop_geometry(w, h, side, rng);
    resize_box(img, g.source_box(w, h), g.width, g.height)
}

/// How one image becomes one normalised view outside pretraining.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ViewTransform {
    /// Resize(size) + CenterCrop(size): the evaluation view of the protocol.
    CenterCrop { size: u32 },
    /// Resize(size) + RandomCrop(size): the probe's and fine-tuning's
    /// training view.
    RandomCrop { size: u32 },
    /// A full augmentation pipeline (e.g. supervised training from scratch).
    Augment(AugConfig),
}

impl ViewTransform {
    pub fn size(&self) -> u32 {
        match self {
            ViewTransform::CenterCrop { size } | ViewTransform::RandomCrop { size } => *size,
            ViewTransform::Augment(a) => a.size,
        }
    }

    /// The side this view resizes the image's shorter side to first
    /// (torchvision's `Resize`), if it does: what a decoder may scale the
    /// image down to ([`super::band_image::decode_source`]).
    pub fn resize_to(&self) -> Option<u32> {
        match self {
            ViewTransform::CenterCrop { size } | ViewTransform::RandomCrop { size } => Some(*size),
            ViewTransform::Augment(a) => a.pre_size,
        }
    }

    /// Whether two applications to one image can differ.
    pub fn is_random(&self) -> bool {
        !matches!(self, ViewTransform::CenterCrop { .. })
    }

    /// Writes the normalised CHW view of `img` into `out` (3 * size * size).
    /// Errors: see [`resize_box`] (none for an image of at least one pixel).
    pub fn apply_into<R: Rng>(
        &self,
        img: &RgbImage,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<(), ResampleError> {
        let view = match self {
            ViewTransform::CenterCrop { size } => resize_center_crop(img, *size)?,
            ViewTransform::RandomCrop { size } => resize_random_crop(img, *size, rng)?,
            ViewTransform::Augment(a) => return augment_into(img, a, rng, out),
        };
        // Resize(size) leaves both sides at least `size`, so the crop is
        // size x size; the final resize is a guard for any future view.
        let size = self.size();
        let view = if view.dimensions() == (size, size) {
            view
        } else {
            let (w, h) = view.dimensions();
            resize_box(&view, PixelBox::whole(w, h), size, size)?
        };
        normalize_into(&FloatImage::from_rgb8(&view), out);
        Ok(())
    }
}

pub fn adjust_brightness(img: &mut FloatImage, factor: f32) {
    img.data
        .iter_mut()
        .for_each(|v| *v = (*v * factor).clamp(0.0, 1.0));
}

/// Blend with the mean luma of the whole image.
pub fn adjust_contrast(img: &mut FloatImage, factor: f32) {
    let n = (img.width * img.height) as f32;
    let mean = img.data.chunks_exact(3).map(gray).sum::<f32>() / n;
    img.data
        .iter_mut()
        .for_each(|v| *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0));
}

/// Blend with each pixel's own luma.
pub fn adjust_saturation(img: &mut FloatImage, factor: f32) {
    for p in img.pixels() {
        let g = gray(p);
        for c in p.iter_mut() {
            *c = (factor * *c + (1.0 - factor) * g).clamp(0.0, 1.0);
        }
    }
}

/// Rotate hue by `shift` turns (in [-0.5, 0.5]) in HSV space.
pub fn adjust_hue(img: &mut FloatImage, shift: f32) {
    for p in img.pixels() {
        let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2]);
        let (r, g, b) = hsv_to_rgb(wrap_unit(h + shift), s, v);
        p[0] = r;
        p[1] = g;
        p[2] = b;
    }
}

/// `x` mod 1 for x in [-1, 2), the range hue arithmetic stays in; a
/// compare and an add instead of `rem_euclid` (a libm fmodf call per pixel).
fn wrap_unit(x: f32) -> f32 {
    if x < 0.0 {
        x + 1.0
    } else if x >= 1.0 {
        x - 1.0
    } else {
        x
    }
}

/// torchvision's _rgb2hsv: h, s, v in [0, 1].
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    let s = if maxc > 0.0 { cr / maxc } else { 0.0 };
    if cr == 0.0 {
        return (0.0, s, maxc);
    }
    let rc = (maxc - r) / cr;
    let gc = (maxc - g) / cr;
    let bc = (maxc - b) / cr;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    (wrap_unit(h / 6.0), s, maxc)
}

/// torchvision's _hsv2rgb.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    // h >= 0, so truncation is floor (and no libm call).
    let i = (h * 6.0) as i32 as f32;
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

pub fn to_grayscale(img: &mut FloatImage) {
    for p in img.pixels() {
        let g = gray(p);
        p.fill(g);
    }
}

/// The normalised 1-D Gaussian kernel of `sigma`, radius ceil(3 sigma) (at
/// least 1), as the blurs of this module use it.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let kernel: Vec<f32> = (-(radius as isize)..=radius as isize)
        .map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter().map(|k| k / sum).collect()
}

/// Separable Gaussian blur, reflect padding.
pub fn gaussian_blur(img: &mut FloatImage, sigma: f32) {
    let kernel = gaussian_kernel(sigma);
    let mut tmp = vec![0.0f32; img.data.len()];
    blur_rows(&img.data, &mut tmp, img.width, &kernel);
    blur_columns(&tmp, &mut img.data, img.width * 3, img.height, &kernel);
}

/// Index `i` (may be outside 0..n) reflected into 0..n without repeating
/// the edge (torchvision's "reflect" padding).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

/// Horizontal pass: each row is copied once into a reflect-padded buffer,
/// then every output value is a dot product over a contiguous window.
fn blur_rows(src: &[f32], dst: &mut [f32], w: usize, kernel: &[f32]) {
    let radius = kernel.len() / 2;
    let mut padded = vec![0.0f32; (w + 2 * radius) * 3];
    for (row, out) in src.chunks_exact(w * 3).zip(dst.chunks_exact_mut(w * 3)) {
        for (p, px) in padded.chunks_exact_mut(3).enumerate() {
            let x = reflect(p as isize - radius as isize, w);
            px.copy_from_slice(&row[x * 3..x * 3 + 3]);
        }
        for (x, o) in out.chunks_exact_mut(3).enumerate() {
            let window = &padded[x * 3..(x + kernel.len()) * 3];
            let mut acc = [0.0f32; 3];
            for (k, px) in kernel.iter().zip(window.chunks_exact(3)) {
                acc[0] += k * px[0];
                acc[1] += k * px[1];
                acc[2] += k * px[2];
            }
            o.copy_from_slice(&acc);
        }
    }
}

/// Vertical pass over `h` rows of `stride` values (w x 3 for RGB, w for one
/// band): each output row is a weighted sum of whole input rows
/// (contiguous, so the inner loop vectorises).
fn blur_columns(src: &[f32], dst: &mut [f32], stride: usize, h: usize, kernel: &[f32]) {
    let radius = kernel.len() / 2;
    for (y, out) in dst.chunks_exact_mut(stride).enumerate() {
        out.fill(0.0);
        for (ki, k) in kernel.iter().enumerate() {
            let sy = reflect(y as isize + ki as isize - radius as isize, h);
            for (o, v) in out.iter_mut().zip(&src[sy * stride..(sy + 1) * stride]) {
                *o += k * v;
            }
        }
    }
}

pub fn flip_horizontal(img: &mut FloatImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// Applies aug+ to `img` and writes the normalised CHW result into `out`
/// (length 3 * size * size). Errors: see [`resize_box`] (none for an image
/// of at least one pixel).
pub fn augment_into<R: Rng>(
    img: &RgbImage,
    config: &AugConfig,
    rng: &mut R,
    out: &mut [f32],
) -> Result<(), ResampleError> {
    let pre;
    let src = match config.pre_size {
        Some(side) => {
            pre = resize_center_crop(img, side)?;
            &pre
        }
        None => img,
    };
    let (top, left, h, w) =
        random_resized_crop_params(src.width(), src.height(), config.scale, config.ratio, rng);
    let resized = resize_box(
        src,
        PixelBox::from_ints(left, top, w, h),
        config.size,
        config.size,
    )?;
    let mut f = FloatImage::from_rgb8(&resized);
    if rng.gen_bool(config.jitter_p) {
        let b = rng.gen_range(1.0 - config.brightness..=1.0 + config.brightness);
        let c = rng.gen_range(1.0 - config.contrast..=1.0 + config.contrast);
        let s = rng.gen_range(1.0 - config.saturation..=1.0 + config.saturation);
        let hue = rng.gen_range(-config.hue..=config.hue);
        let mut order = [0usize, 1, 2, 3];
        rand::seq::SliceRandom::shuffle(&mut order[..], rng);
        for op in order {
            match op {
                0 => adjust_brightness(&mut f, b),
                1 => adjust_contrast(&mut f, c),
                2 => adjust_saturation(&mut f, s),
                _ => adjust_hue(&mut f, hue),
            }
        }
    }
    if rng.gen_bool(config.grayscale_p) {
        to_grayscale(&mut f);
    }
    if rng.gen_bool(config.blur_p) {
        let sigma = rng.gen_range(config.blur_sigma.0..=config.blur_sigma.1);
        gaussian_blur(&mut f, sigma);
    }
    if rng.gen_bool(config.flip_p) {
        flip_horizontal(&mut f);
    }
    normalize_into(&f, out);
    Ok(())
}

/// HWC [0, 1] -> normalised CHW.
pub fn normalize_into(f: &FloatImage, out: &mut [f32]) {
    let plane = f.width * f.height;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    for (i, p) in f.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
}

/// The least share of a resampled pixel's filter weight that valid source
/// pixels must carry for it to be valid (see the module doc, "C bands").
/// Not 1: the filter's normalised weights add up to 1 only within f32's
/// rounding.
pub const VALID_COVERAGE: f32 = 0.9999;

/// Resamples one f32 plane's box `bbox` to `out_w` x `out_h` with the
/// filter of [`resize_box`] (antialiased bilinear), in f32.
fn resize_plane(
    plane: &[f32],
    (w, h): (u32, u32),
    bbox: PixelBox,
    (out_w, out_h): (u32, u32),
) -> Result<Vec<f32>, ResampleError> {
    let resizer = |e: &dyn std::fmt::Display| ResampleError::Resizer(e.to_string());
    // SAFETY: viewing f32s as bytes (u8 has no alignment and every bit
    // pattern is a valid u8); the view is aligned for f32 by construction.
    let (_, bytes, _) = unsafe { plane.align_to::<u8>() };
    let src = ImageRef::new(w, h, bytes, PixelType::F32).map_err(|e| resizer(&e))?;
    let mut dst = Image::new(out_w, out_h, PixelType::F32);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(bbox.left, bbox.top, bbox.width, bbox.height);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| resizer(&e))?;
    Ok(dst
        .buffer()
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// [`resize_box`] for C bands: every band's box `bbox` resampled to
/// `out_w` x `out_h` in f32, and the validity carried along (a pixel is
/// valid when valid source pixels carry at least [`VALID_COVERAGE`] of its
/// weight). Errors as [`resize_box`].
pub fn resize_bands_box(
    img: &BandImage,
    bbox: PixelBox,
    out_w: u32,
    out_h: u32,
) -> Result<BandImage, ResampleError> {
    let (w, h) = (img.width as u32, img.height as u32);
    check_resize(bbox, (w, h), (out_w, out_h))?;
    if bbox == PixelBox::whole(w, h) && (out_w, out_h) == (w, h) {
        return Ok(img.clone());
    }
    let plane = (out_w * out_h) as usize;
    let mut data = Vec::with_capacity(img.channels * plane);
    for c in 0..img.channels {
        data.extend(resize_plane(img.band(c), (w, h), bbox, (out_w, out_h))?);
    }
    let valid = if img.valid_count == img.plane() {
        vec![true; plane]
    } else {
        let coverage: Vec<f32> = img.valid.iter().map(|&v| v as u8 as f32).collect();
        resize_plane(&coverage, (w, h), bbox, (out_w, out_h))?
            .iter()
            .map(|&c| c >= VALID_COVERAGE)
            .collect()
    };
    let mut out = BandImage {
        width: out_w as usize,
        height: out_h as usize,
        channels: img.channels,
        data,
        valid,
        valid_count: 0,
    };
    out.recount();
    Ok(out)
}

/// Resize(side) + CenterCrop(side) of C bands (see [`center_crop_geometry`]).
pub fn bands_center_crop(img: &BandImage, side: u32) -> Result<BandImage, ResampleError> {
    let (w, h) = (img.width as u32, img.height as u32);
    let g = center_crop_geometry(w, h, side);
    resize_bands_box(img, g.source_box(w, h), g.width, g.height)
}

/// Resize(side) + RandomCrop(side) of C bands (see [`random_crop_geometry`]).
pub fn bands_random_crop<R: Rng>(
    img: &BandImage,
    side: u32,
    rng: &mut R,
) -> Result<BandImage, ResampleError> {
    let (w, h) = (img.width as u32, img.height as u32);
    let g = random_crop_geometry(w, h, side, rng);
    resize_bands_box(img, g.source_box(w, h), g.width, g.height)
}

impl ViewTransform {
    /// [`Self::apply_into`] for any decoded image: an RGB8 image takes the
    /// RGB8 path unchanged (ImageNet's normalisation, `spec` is
    /// [`InputSpec::rgb`]); C bands are viewed the same way in f32 and
    /// normalised with `spec`'s mean/std, invalid pixels at
    /// [`NODATA_FILL`]. Writes C * size * size values into `out` and returns
    /// the view's valid pixels.
    pub fn apply_source_into<R: Rng>(
        &self,
        img: &SourceImage,
        spec: &InputSpec,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<usize, ResampleError> {
        let bands = match img {
            SourceImage::Rgb8(rgb) => {
                self.apply_into(rgb, rng, out)?;
                return Ok((self.size() * self.size()) as usize);
            }
            SourceImage::Bands(b) => b,
        };
        let size = self.size();
        let view = match self {
            ViewTransform::CenterCrop { size } => bands_center_crop(bands, *size)?,
            ViewTransform::RandomCrop { size } => bands_random_crop(bands, *size, rng)?,
            ViewTransform::Augment(a) => return augment_bands_into(bands, a, spec, rng, out),
        };
        let view = if (view.width, view.height) == (size as usize, size as usize) {
            view
        } else {
            let (w, h) = (view.width as u32, view.height as u32);
            resize_bands_box(&view, PixelBox::whole(w, h), size, size)?
        };
        Ok(normalize_bands_into(&view, spec, out))
    }
}

/// Applies aug+ to C bands (see the module doc, "C bands") and writes the
/// normalised C x size x size result into `out`; returns the valid pixels.
/// The random draws are those of [`augment_into`], in its order.
pub fn augment_bands_into<R: Rng>(
    img: &BandImage,
    config: &AugConfig,
    spec: &InputSpec,
    rng: &mut R,
    out: &mut [f32],
) -> Result<usize, ResampleError> {
    let pre;
    let src = match config.pre_size {
        Some(side) => {
            pre = bands_center_crop(img, side)?;
            &pre
        }
        None => img,
    };
    let (w, h) = (src.width as u32, src.height as u32);
    let (top, left, ch, cw) = random_resized_crop_params(w, h, config.scale, config.ratio, rng);
    let mut f = resize_bands_box(
        src,
        PixelBox::from_ints(left, top, cw, ch),
        config.size,
        config.size,
    )?;
    let rgb = spec.rgb == Some([0, 1, 2]) && f.channels == 3;
    if rng.gen_bool(config.jitter_p) {
        let b = rng.gen_range(1.0 - config.brightness..=1.0 + config.brightness);
        let c = rng.gen_range(1.0 - config.contrast..=1.0 + config.contrast);
        let s = rng.gen_range(1.0 - config.saturation..=1.0 + config.saturation);
        let hue = rng.gen_range(-config.hue..=config.hue);
        let mut order = [0usize, 1, 2, 3];
        rand::seq::SliceRandom::shuffle(&mut order[..], rng);
        for op in order {
            match op {
                0 => bands_brightness(&mut f, b),
                1 => bands_contrast(&mut f, c, rgb),
                2 if rgb => with_hwc(&mut f, |x| adjust_saturation(x, s)),
                3 if rgb => with_hwc(&mut f, |x| adjust_hue(x, hue)),
                _ => {}
            }
        }
    }
    if rng.gen_bool(config.grayscale_p) && rgb {
        with_hwc(&mut f, to_grayscale);
    }
    if rng.gen_bool(config.blur_p) {
        let sigma = rng.gen_range(config.blur_sigma.0..=config.blur_sigma.1);
        bands_blur(&mut f, sigma);
    }
    if rng.gen_bool(config.flip_p) {
        bands_flip(&mut f);
    }
    Ok(normalize_bands_into(&f, spec, out))
}

/// One factor for every band, clamped to [0, 1].
pub fn bands_brightness(img: &mut BandImage, factor: f32) {
    img.data
        .iter_mut()
        .for_each(|v| *v = (*v * factor).clamp(0.0, 1.0));
}

/// Blends each band with its own mean over the valid pixels (SSL4EO-S12);
/// with `rgb` (the exact RGB triple) with the mean luma, as torchvision.
pub fn bands_contrast(img: &mut BandImage, factor: f32, rgb: bool) {
    let p = img.plane();
    let n = img.valid_count.max(1) as f32;
    let mean_of = |c: usize, img: &BandImage| {
        img.band(c)
            .iter()
            .zip(&img.valid)
            .filter(|(_, &v)| v)
            .map(|(&x, _)| x)
            .sum::<f32>()
            / n
    };
    let means: Vec<f32> = if rgb {
        let luma = (0..p)
            .map(|i| gray(&[img.data[i], img.data[p + i], img.data[2 * p + i]]))
            .sum::<f32>()
            / p.max(1) as f32;
        vec![luma; 3]
    } else {
        (0..img.channels).map(|c| mean_of(c, img)).collect()
    };
    for (c, mean) in means.into_iter().enumerate() {
        img.data[c * p..(c + 1) * p]
            .iter_mut()
            .for_each(|v| *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0));
    }
}

/// Runs an HWC colour operation on a 3-band image.
fn with_hwc(img: &mut BandImage, op: impl FnOnce(&mut FloatImage)) {
    let p = img.plane();
    let mut f = FloatImage {
        width: img.width,
        height: img.height,
        data: (0..3 * p).map(|j| img.data[(j % 3) * p + j / 3]).collect(),
    };
    op(&mut f);
    for (j, v) in f.data.into_iter().enumerate() {
        img.data[(j % 3) * p + j / 3] = v;
    }
}

/// [`gaussian_blur`] on every band (the same kernel, reflect padding).
pub fn bands_blur(img: &mut BandImage, sigma: f32) {
    let kernel = gaussian_kernel(sigma);
    let radius = kernel.len() / 2;
    let (w, h, p) = (img.width, img.height, img.plane());
    let mut tmp = vec![0.0f32; p];
    for band in img.data.chunks_exact_mut(p) {
        for (row, out) in band.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
            for (x, o) in out.iter_mut().enumerate() {
                *o = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, kv)| kv * row[reflect(x as isize + k as isize - radius as isize, w)])
                    .sum();
            }
        }
        blur_columns(&tmp, band, w, h, &kernel);
    }
}

/// Mirrors every band and the validity left to right.
pub fn bands_flip(img: &mut BandImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w) {
        row.reverse();
    }
    for row in img.valid.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Unit C x H x W -> `(u - mean_c) / std_c` with `spec`'s per-channel
/// statistics, invalid pixels at [`NODATA_FILL`]; returns the valid pixels.
/// Panics when `out` is not C x H x W long or `spec` has another C (a
/// caller's bug: the loader sizes both from the same spec).
pub fn normalize_bands_into(img: &BandImage, spec: &InputSpec, out: &mut [f32]) -> usize {
    let p = img.plane();
    assert_eq!(out.len(), img.channels * p, "output buffer size");
    assert_eq!(spec.channels(), img.channels, "input channels");
    for c in 0..img.channels {
        let (mean, std) = (spec.mean[c], spec.std[c]);
        let dst = &mut out[c * p..(c + 1) * p];
        for ((o, &u), &v) in dst.iter_mut().zip(img.band(c)).zip(&img.valid) {
            *o = if v { (u - mean) / std } else { NODATA_FILL };
        }
    }
    img.valid_count
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn sample() -> FloatImage {
        let img = RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 50) as u8, ((x + y) * 17) as u8])
        });
        FloatImage::from_rgb8(&img)
    }

    #[test]
    fn identity_factors_change_nothing() {
        let base = sample();
        let mut f = base.clone();
        adjust_brightness(&mut f, 1.0);
        adjust_contrast(&mut f, 1.0);
        adjust_saturation(&mut f, 1.0);
        adjust_hue(&mut f, 0.0);
        for (a, b) in f.data.iter().zip(&base.data) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn colour_formulas() {
        let mut f = sample();
        adjust_brightness(&mut f, 0.0);
        assert!(f.data.iter().all(|&v| v == 0.0));
        let mut f = sample();
        adjust_saturation(&mut f, 0.0);
        for p in f.data.chunks_exact(3) {
            assert!((p[0] - p[1]).abs() < 1e-6 && (p[1] - p[2]).abs() < 1e-6);
        }
        let mut f = sample();
        let mean = f.data.chunks_exact(3).map(gray).sum::<f32>() / 35.0;
        adjust_contrast(&mut f, 0.0);
        assert!(f.data.iter().all(|&v| (v - mean).abs() < 1e-6));
        // Grayscale weights 0.299 / 0.587 / 0.114.
        let mut g = FloatImage {
            width: 1,
            height: 1,
            data: vec![1.0, 0.0, 0.0],
        };
        to_grayscale(&mut g);
        assert!((g.data[0] - 0.299).abs() < 1e-7 && (g.data[2] - 0.299).abs() < 1e-7);
        let mut g = FloatImage {
            width: 1,
            height: 1,
            data: vec![0.0, 1.0, 0.0],
        };
        to_grayscale(&mut g);
        assert!((g.data[1] - 0.587).abs() < 1e-7);
    }

    #[test]
    fn hue_rotates_primaries() {
        // A third of a turn maps red to green, as torchvision's adjust_hue.
        let mut f = FloatImage {
            width: 1,
            height: 1,
            data: vec![1.0, 0.0, 0.0],
        };
        adjust_hue(&mut f, 1.0 / 3.0);
        assert!(
            (f.data[0]).abs() < 1e-5 && (f.data[1] - 1.0).abs() < 1e-5 && f.data[2].abs() < 1e-5,
            "{:?}",
            f.data
        );
        // Full turn is identity; HSV round trip is exact on a gradient.
        let base = sample();
        let mut f = base.clone();
        adjust_hue(&mut f, 0.5);
        adjust_hue(&mut f, 0.5);
        for (a, b) in f.data.iter().zip(&base.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn crop_area_and_ratio_within_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (scale, ratio) = ((0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0));
        let mut areas = Vec::new();
        for _ in 0..5000 {
            let (top, left, h, w) = random_resized_crop_params(128, 96, scale, ratio, &mut rng);
            assert!(top + h <= 96 && left + w <= 128 && h > 0 && w > 0);
            let area = (h * w) as f64 / (128.0 * 96.0);
            // Rounding of w and h can move the area slightly past the bounds.
            assert!(area > 0.19 && area <= 1.0, "{area}");
            let r = w as f64 / h as f64;
            assert!(r > 0.70 && r < 1.42, "{r}");
            areas.push(area);
        }
        let mean = areas.iter().sum::<f64>() / areas.len() as f64;
        assert!(mean > 0.45 && mean < 0.65, "mean crop area {mean}");
        // Impossible request: fallback to the centre crop.
        let (top, left, h, w) =
            random_resized_crop_params(100, 10, (0.9, 1.0), (1.0, 1.0), &mut rng);
        assert_eq!((top, left, h, w), (0, 45, 10, 10));
    }

    /// The other side lengths the sweep pairs with every side 1..=4096:
    /// tiny, around every size setting, fMoW-like odd sizes, the largest.
    const OTHER_SIDES: [u32; 33] = [
        1, 2, 3, 5, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 223, 224, 225, 255, 256, 319, 320,
        447, 448, 449, 478, 511, 512, 597, 899, 1201, 2999, 3001, 4096,
    ];
    /// Every Resize(side) + crop geossl makes: the evaluation views at 32,
    /// 64 and 224, the aug+ pre-steps for them (64, 128, 448) and other
    /// pre-sizes a bench or a user may pick (256, 320, 512).
    const SIDES: [u32; 9] = [32, 64, 128, 224, 256, 320, 448, 512, 640];

    /// The pre-fix arithmetic: each box value scaled by float separately.
    fn naive_box(w: u32, h: u32, g: &ResizedCrop) -> PixelBox {
        let (sx, sy) = (w as f64 / g.resized.0 as f64, h as f64 / g.resized.1 as f64);
        PixelBox {
            left: g.left as f64 * sx,
            top: g.top as f64 * sy,
            width: g.width as f64 * sx,
            height: g.height as f64 * sy,
        }
    }

    fn check_crop(w: u32, h: u32, side: u32, g: &ResizedCrop) {
        assert_eq!(
            g.resized,
            shorter_side_size(w, h, side),
            "{w}x{h} at {side}"
        );
        assert_eq!((g.width, g.height), (side, side), "{w}x{h} at {side}");
        assert!(
            g.left + g.width <= g.resized.0 && g.top + g.height <= g.resized.1,
            "{w}x{h} at {side}: {g:?}"
        );
        let b = g.source_box(w, h);
        assert!(b.is_inside(w, h), "{w}x{h} at {side}: {g:?} -> {b}");
    }

    #[test]
    fn every_crop_box_of_every_side_length_is_inside_the_image() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut naive_outside = 0;
        for a in 1..=4096u32 {
            for b in OTHER_SIDES {
                for (w, h) in [(a, b), (b, a)] {
                    for side in SIDES {
                        let g = center_crop_geometry(w, h, side);
                        check_crop(w, h, side, &g);
                        naive_outside += usize::from(!naive_box(w, h, &g).is_inside(w, h));
                        check_crop(w, h, side, &random_crop_geometry(w, h, side, &mut rng));
                    }
                }
            }
        }
        // The sweep meets the float fault the construction avoids: the
        // pre-fix arithmetic put thousands of these boxes a hair outside,
        // among them 131 of the squares of 100..=3999 px at the default
        // pre-step (the "about 130").
        assert!(naive_outside > 10_000, "{naive_outside}");
        let squares = (100..=3999u32)
            .filter(|&a| !naive_box(a, a, &center_crop_geometry(a, a, 448)).is_inside(a, a))
            .count();
        assert_eq!(squares, 131);
    }

    #[test]
    fn random_boxes_and_random_crops_stay_inside() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for _ in 0..200_000 {
            let (w, h) = (rng.gen_range(1..=5000u32), rng.gen_range(1..=5000u32));
            // Any whole-pixel box of any Resize(side) grid maps inside.
            let side = rng.gen_range(1..=1000u32);
            let (nw, nh) = shorter_side_size(w, h, side);
            let (cw, ch) = (rng.gen_range(1..=nw), rng.gen_range(1..=nh));
            let g = ResizedCrop {
                resized: (nw, nh),
                left: rng.gen_range(0..=nw - cw),
                top: rng.gen_range(0..=nh - ch),
                width: cw,
                height: ch,
            };
            let b = g.source_box(w, h);
            assert!(b.is_inside(w, h), "{w}x{h}: {g:?} -> {b}");
            // RandomResizedCrop on the image itself (no pre-step), with
            // aug+'s ranges and with ranges that force the fallback.
            for (scale, ratio) in [
                ((0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0)),
                ((0.9, 1.0), (5.0, 6.0)),
                ((0.9, 1.0), (0.1, 0.2)),
            ] {
                let (top, left, ch, cw) = random_resized_crop_params(w, h, scale, ratio, &mut rng);
                assert!(
                    cw >= 1 && ch >= 1 && left + cw <= w && top + ch <= h,
                    "{w}x{h}: {top},{left},{ch},{cw}"
                );
            }
        }
        // Needle-shaped images at the decoder's pixel limit: the resized
        // long side saturates, the box still lies inside.
        for (w, h) in [(1, 1 << 28), (1 << 28, 1), (3, 89_478_485)] {
            for side in SIDES {
                let b = center_crop_geometry(w, h, side).source_box(w, h);
                assert!(b.is_inside(w, h), "{w}x{h} at {side}: {b}");
            }
        }
    }

    #[test]
    fn every_setting_resamples_a_sample_of_sizes() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let mut sizes: Vec<(u32, u32)> = (1..=4096u32)
            .step_by(255)
            .flat_map(|a| [(a, 478), (597, a), (a, 1), (a, a + 1)])
            .collect();
        sizes.extend([(597, 478), (815, 380), (1201, 899), (3001, 2999)]);
        for (w, h) in sizes {
            let img = RgbImage::new(w, h);
            for size in [32, 64, 224] {
                let mut out = vec![0.0; 3 * (size * size) as usize];
                for pre in [Some(size * 2), Some(256), Some(320), Some(512), None] {
                    let cfg = AugConfig {
                        pre_size: pre,
                        ..AugConfig::aug_plus(size)
                    };
                    augment_into(&img, &cfg, &mut rng, &mut out)
                        .unwrap_or_else(|e| panic!("{w}x{h} at {size} from {pre:?}: {e}"));
                }
                for view in [
                    ViewTransform::CenterCrop { size },
                    ViewTransform::RandomCrop { size },
                ] {
                    view.apply_into(&img, &mut rng, &mut out)
                        .unwrap_or_else(|e| panic!("{w}x{h} {view:?}: {e}"));
                }
            }
        }
    }

    #[test]
    fn the_reported_manifest_crop_at_default_sizes() {
        // `crop 355,0,597,478` leaves a 597 x 478 image; Resize(448) makes
        // it 559 x 448 (int(448 * 597 / 478) = int(559.53)) and
        // CenterCrop(448) starts at round(111 / 2 = 55.5) = 56 (half to even).
        let img = RgbImage::from_fn(1000, 478, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 251) as u8])
        });
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let crop: crate::data::manifest::CropBox = "355,0,597,478".parse().unwrap();
        let cropped = crate::data::decode::decode_bytes(
            png.get_ref(),
            "box.png",
            Some(crop),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(cropped.dimensions(), (597, 478));
        let g = center_crop_geometry(597, 478, 448);
        assert_eq!(
            g,
            ResizedCrop {
                resized: (559, 448),
                left: 56,
                top: 0,
                width: 448,
                height: 448
            }
        );
        let b = g.source_box(597, 478);
        assert_eq!((b.top, b.height), (0.0, 478.0));
        assert_eq!(b.left, 56.0 * 597.0 / 559.0);
        assert!(b.left + b.width <= 597.0);
        // What the old arithmetic asked the resampler for.
        assert_eq!(naive_box(597, 478, &g).height, 478.00000000000006);
        let pre = resize_center_crop(&cropped, 448).unwrap();
        assert_eq!(pre.dimensions(), (448, 448));
        // The pre-step shows the crop's column 60 (56 * 597 / 559 = 59.8)
        // at its left edge: red there is x = 355 + 60 mod 256 = 159, give
        // or take the filter's blending of 159 and 160.
        let red = pre.get_pixel(0, 200)[0];
        assert!((158..=161).contains(&red), "{red}");
        let mut out = vec![0.0; 3 * 224 * 224];
        augment_into(
            &cropped,
            &AugConfig::aug_plus(224),
            &mut ChaCha8Rng::seed_from_u64(0),
            &mut out,
        )
        .unwrap();
    }

    #[test]
    fn center_offsets_round_half_to_even_as_python() {
        // Python: [int(round(d / 2.0)) for d in range(9)]
        let offsets: Vec<u32> = (0..9).map(center_offset).collect();
        assert_eq!(offsets, [0, 0, 1, 2, 2, 2, 3, 4, 4]);
        // The reported 815 x 380 at 64: Resize gives 137 x 64, and the
        // left offset is round(36.5) = 36 (half away from zero: 37).
        let g = center_crop_geometry(815, 380, 64);
        assert_eq!((g.resized, g.left, g.top), ((137, 64), 36, 0));
        // Resize(int): int(side * long / short) on either orientation.
        assert_eq!(shorter_side_size(380, 815, 64), (64, 137));
        assert_eq!(shorter_side_size(448, 448, 224), (224, 224));
        assert_eq!(shorter_side_size(1, 3, 2), (2, 6));
    }

    #[test]
    fn random_resized_crop_fallback_rounds_half_to_even() {
        // 5 x 100 never fits an aspect of 2..2.5 at 90 % of the area, so
        // the fallback runs: h = round(5 / 2) = 2 (torchvision; half away
        // from zero: 3), top = (100 - 2) // 2.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            random_resized_crop_params(5, 100, (0.9, 1.0), (2.0, 2.5), &mut rng),
            (49, 0, 2, 5)
        );
        // And the wide case: w = round(1 * 2.5) = 2.
        assert_eq!(
            random_resized_crop_params(100, 1, (0.9, 1.0), (2.0, 2.5), &mut rng),
            (0, 49, 1, 2)
        );
    }

    #[test]
    fn boxes_outside_are_errors_not_panics() {
        let img = RgbImage::new(597, 478);
        let outside = PixelBox {
            left: 59.8,
            top: 0.0,
            width: 100.0,
            height: 478.00000000000006,
        };
        let err = resize_box(&img, outside, 16, 16).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resampling box 59.8,0,100,478.00000000000006 (left,top,width,height) is not inside the 597 x 478 image"
        );
        for bad in [
            PixelBox::from_ints(597, 0, 1, 1),
            PixelBox::from_ints(0, 0, 0, 5),
            PixelBox {
                left: f64::NAN,
                ..PixelBox::whole(1, 1)
            },
        ] {
            assert!(resize_box(&img, bad, 16, 16).is_err(), "{bad}");
        }
        assert!(resize_box(&img, PixelBox::whole(597, 478), 0, 16).is_err());
        assert_eq!(
            resize_box(&img, PixelBox::whole(597, 478), 597, 478).unwrap(),
            img
        );
    }

    #[test]
    fn blur_keeps_constants_and_mass() {
        let mut f = FloatImage {
            width: 9,
            height: 9,
            data: vec![0.5; 243],
        };
        gaussian_blur(&mut f, 1.5);
        assert!(f.data.iter().all(|&v| (v - 0.5).abs() < 1e-5));
        let mut dot = FloatImage {
            width: 21,
            height: 21,
            data: vec![0.0; 21 * 21 * 3],
        };
        dot.data[(10 * 21 + 10) * 3] = 1.0;
        gaussian_blur(&mut dot, 1.0);
        let total: f32 = dot.data.chunks_exact(3).map(|p| p[0]).sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert!(dot.data[(10 * 21 + 10) * 3] < 0.2);
    }

    #[test]
    fn flip_and_normalize() {
        let mut f = FloatImage {
            width: 3,
            height: 1,
            data: vec![0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3],
        };
        flip_horizontal(&mut f);
        assert_eq!(f.data[0], 0.3);
        assert_eq!(f.data[8], 0.1);
        let one = FloatImage {
            width: 1,
            height: 1,
            data: vec![0.485, 0.456, 0.406],
        };
        let mut out = vec![1.0; 3];
        normalize_into(&one, &mut out);
        assert!(out.iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn pipeline_shape_and_determinism() {
        let img = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        });
        let cfg = AugConfig::aug_plus(16);
        let mut a = vec![0.0; 3 * 16 * 16];
        let mut b = vec![0.0; 3 * 16 * 16];
        augment_into(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(3), &mut a).unwrap();
        augment_into(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(3), &mut b).unwrap();
        assert_eq!(a, b);
        augment_into(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(4), &mut b).unwrap();
        assert_ne!(a, b);
        assert!(a.iter().all(|v| v.is_finite() && v.abs() < 3.0));
        let sq = resize_center_crop(&img, 32).unwrap();
        assert_eq!(sq.dimensions(), (32, 32));
    }

    /// 13 bands of 40 x 30, pixels where `invalid(x, y)` NoData.
    fn thirteen_bands(invalid: impl Fn(usize, usize) -> bool) -> BandImage {
        let (w, h, c) = (40usize, 30usize, 13usize);
        let data = (0..c * w * h)
            .map(|i| ((i % w) * 5 + (i / w % h) * 3 + i / (w * h) * 7) as f32 % 97.0 / 97.0)
            .collect();
        let valid: Vec<bool> = (0..w * h).map(|i| !invalid(i % w, i / w)).collect();
        let mut img = BandImage {
            width: w,
            height: h,
            channels: c,
            data,
            valid,
            valid_count: 0,
        };
        img.recount();
        img.fill_invalid_with_band_means();
        img
    }

    fn spec_of(c: usize) -> InputSpec {
        InputSpec {
            selection: crate::data::bands::BandSelection::All,
            bands: (1..=c).collect(),
            band_names: (1..=c).map(|b| format!("band {b}")).collect(),
            radiometry: crate::data::bands::Radiometry::Auto,
            mean: vec![0.5; c],
            std: vec![0.25; c],
            stats: Vec::new(),
            rgb: None,
        }
    }

    #[test]
    fn c_band_augmentation_shape_determinism_and_nodata() {
        // NoData in the top 4 rows, which the pre-step's crop keeps.
        let img = thirteen_bands(|_, y| y < 4);
        let spec = spec_of(13);
        let cfg = AugConfig::aug_plus(16);
        let n = 13 * 16 * 16;
        let run = |seed: u64| {
            let mut out = vec![f32::NAN; n];
            let valid = augment_bands_into(
                &img,
                &cfg,
                &spec,
                &mut ChaCha8Rng::seed_from_u64(seed),
                &mut out,
            )
            .unwrap();
            (out, valid)
        };
        let (a, _) = run(3);
        assert_eq!(a, run(3).0, "the same seed gives the same view");
        assert!(a.iter().all(|v| v.is_finite() && v.abs() <= 2.0 + 1e-6));
        let mut some_invalid = false;
        for seed in 0..40 {
            let (out, valid) = run(seed);
            assert!(valid <= 256);
            // Invalid pixels are NODATA_FILL in every band, and counted.
            let invalid: Vec<usize> = (0..256)
                .filter(|&i| (0..13).all(|c| out[c * 256 + i] == NODATA_FILL))
                .collect();
            assert!(invalid.len() >= 256 - valid, "seed {seed}");
            some_invalid |= valid < 256;
        }
        assert!(some_invalid, "some crop reaches the NoData strip");
        // Without colour jitter, bands of one level each keep their level
        // under any crop, blur and flip.
        let grey = BandImage {
            width: 40,
            height: 30,
            channels: 13,
            data: (0..13 * 1200).map(|i| (i / 1200) as f32 / 13.0).collect(),
            valid: vec![true; 1200],
            valid_count: 1200,
        };
        let mut cfg_plain = cfg;
        cfg_plain.jitter_p = 0.0;
        let mut out = vec![0.0; n];
        let valid = augment_bands_into(
            &grey,
            &cfg_plain,
            &spec,
            &mut ChaCha8Rng::seed_from_u64(1),
            &mut out,
        )
        .unwrap();
        assert_eq!(valid, 256);
        for c in 0..13 {
            let want = (c as f32 / 13.0 - 0.5) / 0.25;
            assert!(
                out[c * 256..(c + 1) * 256]
                    .iter()
                    .all(|v| (v - want).abs() < 1e-4),
                "band {c}"
            );
        }
    }

    #[test]
    fn c_band_views_carry_validity_through_resize_and_flip() {
        let img = thirteen_bands(|x, _| x >= 36);
        // Whole image to 20 x 15 (by 2, filter radius 2 source pixels):
        // output column j reads source columns up to 2j + 2, so columns 17
        // to 19 reach the strip and are invalid, the rest valid.
        let small = resize_bands_box(&img, PixelBox::whole(40, 30), 20, 15).unwrap();
        for y in 0..15 {
            for x in 0..20 {
                assert_eq!(small.valid[y * 20 + x], x < 17, "({x}, {y})");
            }
        }
        assert_eq!(small.valid_count, 17 * 15);
        let mut flipped = small.clone();
        bands_flip(&mut flipped);
        assert!(!flipped.valid[2] && flipped.valid[3]);
        assert_eq!(flipped.band(5)[3], small.band(5)[16]);
        // Centre crop: the view's valid pixels are the count returned.
        let mut out = vec![0.0; 13 * 64];
        let view = ViewTransform::CenterCrop { size: 8 };
        let source = SourceImage::Bands(img);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let valid = view
            .apply_source_into(&source, &spec_of(13), &mut rng, &mut out)
            .unwrap();
        assert!(valid < 64 && valid > 32, "{valid}");
    }

    #[test]
    fn c_band_colour_jitter_only_on_the_rgb_triple() {
        let mut rgb = BandImage::from_rgb8(&RgbImage::from_fn(6, 5, |x, y| {
            image::Rgb([(x * 40) as u8, (y * 50) as u8, 200])
        }));
        let before = rgb.clone();
        with_hwc(&mut rgb, to_grayscale);
        let p = 30;
        for i in 0..p {
            assert_eq!(rgb.data[i], rgb.data[p + i]);
            let g = gray(&[before.data[i], before.data[p + i], before.data[2 * p + i]]);
            assert!((rgb.data[i] - g).abs() < 1e-6);
        }
        // Contrast on non-RGB bands blends each band with its own mean.
        let mut two = BandImage {
            width: 2,
            height: 1,
            channels: 2,
            data: vec![0.0, 1.0, 0.2, 0.4],
            valid: vec![true; 2],
            valid_count: 2,
        };
        bands_contrast(&mut two, 0.0, false);
        assert_eq!(two.data, vec![0.5, 0.5, 0.3, 0.3]);
    }
}
