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

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rand::Rng;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

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
        let blur_scale = size as f32 / 224.0;
        Self {
            size,
            pre_size: Some(size * 2),
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

/// torchvision's RandomResizedCrop.get_params: (top, left, height, width).
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
        let w = (target * aspect).sqrt().round() as i64;
        let h = (target / aspect).sqrt().round() as i64;
        if w > 0 && h > 0 && w <= width as i64 && h <= height as i64 {
            let top = rng.gen_range(0..=(height as i64 - h)) as u32;
            let left = rng.gen_range(0..=(width as i64 - w)) as u32;
            return (top, left, h as u32, w as u32);
        }
    }
    // Fallback: the central crop with the aspect ratio clamped into range.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((width as f64) / ratio.0).round() as u32)
    } else if in_ratio > ratio.1 {
        (((height as f64) * ratio.1).round() as u32, height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Resamples the box (`left`, `top`, `width`, `height`, in pixels, may be
/// fractional) of `img` to `out_w` x `out_h` with PIL's antialiased
/// bilinear filter (what torchvision's Resize and RandomResizedCrop use on
/// PIL images), by `fast_image_resize` (SIMD, 8-bit, no intermediate copy
/// of the box).
pub fn resize_box(img: &RgbImage, bbox: (f64, f64, f64, f64), out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (left, top, bw, bh) = bbox;
    if (left, top, bw, bh) == (0.0, 0.0, w as f64, h as f64) && (out_w, out_h) == (w, h) {
        return img.clone();
    }
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3).expect("an RGB8 buffer of w x h");
    let mut dst = Image::new(out_w.max(1), out_h.max(1), PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, bw, bh);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel type and a crop box inside the image");
    RgbImage::from_raw(dst.width(), dst.height(), dst.into_vec()).expect("an RGB8 buffer")
}

/// torchvision Resize(int): the size whose shorter side is `side`, the
/// aspect ratio kept (the longer side rounded down, as torchvision does).
pub fn shorter_side_size(w: u32, h: u32, side: u32) -> (u32, u32) {
    if w <= h {
        (
            side,
            ((h as u64 * side as u64) / w.max(1) as u64).max(1) as u32,
        )
    } else {
        (
            ((w as u64 * side as u64) / h.max(1) as u64).max(1) as u32,
            side,
        )
    }
}

/// torchvision Resize(int): the shorter side becomes `side`, the aspect
/// ratio is kept.
pub fn resize_shorter_side(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = shorter_side_size(w, h, side);
    resize_box(img, (0.0, 0.0, w as f64, h as f64), nw, nh)
}

/// The box of the original image that Resize(side) followed by a crop of
/// (`left`, `top`, `cw`, `ch`) in the resized image shows: resizing that box
/// directly is the same resampling without the full-size intermediate.
fn box_in_original(img: &RgbImage, side: u32, crop: (u32, u32, u32, u32)) -> (f64, f64, f64, f64) {
    let (w, h) = img.dimensions();
    let (nw, nh) = shorter_side_size(w, h, side);
    let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
    let (left, top, cw, ch) = crop;
    (
        left as f64 * sx,
        top as f64 * sy,
        cw as f64 * sx,
        ch as f64 * sy,
    )
}

/// Resize so the shorter side is `side` (torchvision Resize(int)), then
/// take the central `side` x `side` square (torchvision's CenterCrop
/// offsets: rounded half-differences).
pub fn resize_center_crop(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = shorter_side_size(w, h, side);
    let (cw, ch) = (side.min(nw), side.min(nh));
    let left = ((nw - cw) as f64 / 2.0).round() as u32;
    let top = ((nh - ch) as f64 / 2.0).round() as u32;
    resize_box(img, box_in_original(img, side, (left, top, cw, ch)), cw, ch)
}

/// Resize(side) + RandomCrop(side): a uniformly placed square of the resized
/// image (torchvision's RandomCrop.get_params).
pub fn resize_random_crop<R: Rng>(img: &RgbImage, side: u32, rng: &mut R) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = shorter_side_size(w, h, side);
    let (cw, ch) = (side.min(nw), side.min(nh));
    let top = rng.gen_range(0..=nh - ch);
    let left = rng.gen_range(0..=nw - cw);
    resize_box(img, box_in_original(img, side, (left, top, cw, ch)), cw, ch)
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

    /// Whether two applications to one image can differ.
    pub fn is_random(&self) -> bool {
        !matches!(self, ViewTransform::CenterCrop { .. })
    }

    /// Writes the normalised CHW view of `img` into `out` (3 * size * size).
    pub fn apply_into<R: Rng>(&self, img: &RgbImage, rng: &mut R, out: &mut [f32]) {
        let view = match self {
            ViewTransform::CenterCrop { size } => resize_center_crop(img, *size),
            ViewTransform::RandomCrop { size } => resize_random_crop(img, *size, rng),
            ViewTransform::Augment(a) => return augment_into(img, a, rng, out),
        };
        // A non-square image smaller than the crop leaves a short side; the
        // final resize makes every view exactly size x size.
        let size = self.size();
        let view = if view.dimensions() == (size, size) {
            view
        } else {
            let (w, h) = view.dimensions();
            resize_box(&view, (0.0, 0.0, w as f64, h as f64), size, size)
        };
        normalize_into(&FloatImage::from_rgb8(&view), out);
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

/// Separable Gaussian blur, reflect padding.
pub fn gaussian_blur(img: &mut FloatImage, sigma: f32) {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let kernel: Vec<f32> = (-(radius as isize)..=radius as isize)
        .map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let mut tmp = vec![0.0f32; img.data.len()];
    blur_rows(&img.data, &mut tmp, img.width, &kernel);
    blur_columns(&tmp, &mut img.data, img.width, img.height, &kernel);
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

/// Vertical pass: each output row is a weighted sum of whole input rows
/// (contiguous, so the inner loop vectorises).
fn blur_columns(src: &[f32], dst: &mut [f32], w: usize, h: usize, kernel: &[f32]) {
    let radius = kernel.len() / 2;
    let stride = w * 3;
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
/// (length 3 * size * size).
pub fn augment_into<R: Rng>(img: &RgbImage, config: &AugConfig, rng: &mut R, out: &mut [f32]) {
    let pre;
    let src = match config.pre_size {
        Some(side) => {
            pre = resize_center_crop(img, side);
            &pre
        }
        None => img,
    };
    let (top, left, h, w) =
        random_resized_crop_params(src.width(), src.height(), config.scale, config.ratio, rng);
    let bbox = (left as f64, top as f64, w as f64, h as f64);
    let resized = resize_box(src, bbox, config.size, config.size);
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
        augment_into(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(3), &mut a);
        augment_into(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(3), &mut b);
        assert_eq!(a, b);
        augment_into(&img, &cfg, &mut ChaCha8Rng::seed_from_u64(4), &mut b);
        assert_ne!(a, b);
        assert!(a.iter().all(|v| v.is_finite() && v.abs() < 3.0));
        let sq = resize_center_crop(&img, 32);
        assert_eq!(sq.dimensions(), (32, 32));
    }
}
