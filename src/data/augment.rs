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

use image::imageops::FilterType;
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

/// torchvision Resize(int): the shorter side becomes `side`, the aspect
/// ratio is kept.
pub fn resize_shorter_side(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (
            side,
            ((h as f64) * side as f64 / w as f64).round().max(1.0) as u32,
        )
    } else {
        (
            ((w as f64) * side as f64 / h as f64).round().max(1.0) as u32,
            side,
        )
    };
    if (nw, nh) == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(img, nw, nh, FilterType::Triangle)
    }
}

/// Resize so the shorter side is `side` (torchvision Resize(int)), then
/// take the central `side` x `side` square.
pub fn resize_center_crop(img: &RgbImage, side: u32) -> RgbImage {
    let resized = resize_shorter_side(img, side);
    let (nw, nh) = resized.dimensions();
    let left = (nw.saturating_sub(side)) / 2;
    let top = (nh.saturating_sub(side)) / 2;
    image::imageops::crop_imm(&resized, left, top, side.min(nw), side.min(nh)).to_image()
}

/// Resize(side) + RandomCrop(side): a uniformly placed square of the resized
/// image (torchvision's RandomCrop.get_params).
pub fn resize_random_crop<R: Rng>(img: &RgbImage, side: u32, rng: &mut R) -> RgbImage {
    let resized = resize_shorter_side(img, side);
    let (nw, nh) = resized.dimensions();
    let left = rng.gen_range(0..=nw.saturating_sub(side));
    let top = rng.gen_range(0..=nh.saturating_sub(side));
    image::imageops::crop_imm(&resized, left, top, side.min(nw), side.min(nh)).to_image()
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
            image::imageops::resize(&view, size, size, FilterType::Triangle)
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
        let (r, g, b) = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
        p[0] = r;
        p[1] = g;
        p[2] = b;
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
    ((h / 6.0).rem_euclid(1.0), s, maxc)
}

/// torchvision's _hsv2rgb.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
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
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let mut tmp = vec![0.0f32; img.data.len()];
    blur_pass(&img.data, &mut tmp, img.width, img.height, &kernel, true);
    blur_pass(&tmp, &mut img.data, img.width, img.height, &kernel, false);
}

/// One 1-D convolution pass along rows (`horizontal`) or columns.
fn blur_pass(src: &[f32], dst: &mut [f32], w: usize, h: usize, kernel: &[f32], horizontal: bool) {
    let radius = (kernel.len() / 2) as isize;
    let n = if horizontal { w } else { h } as isize;
    // Reflect without repeating the edge (as torchvision's "reflect").
    let reflect = |i: isize| -> usize {
        let mut i = i;
        if n == 1 {
            return 0;
        }
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as usize
    };
    for y in 0..h {
        for x in 0..w {
            let along = if horizontal { x } else { y } as isize;
            for c in 0..3 {
                let mut acc = 0.0;
                for (ki, k) in kernel.iter().enumerate() {
                    let s = reflect(along + ki as isize - radius);
                    let (sx, sy) = if horizontal { (s, y) } else { (x, s) };
                    acc += k * src[(sy * w + sx) * 3 + c];
                }
                dst[(y * w + x) * 3 + c] = acc;
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
    let crop = image::imageops::crop_imm(src, left, top, w, h).to_image();
    let resized = image::imageops::resize(&crop, config.size, config.size, FilterType::Triangle);
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
