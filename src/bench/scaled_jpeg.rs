//! The scaled-JPEG rows of `geossl bench decode`: on fMoW-sized JPEGs
//! (1200 x 900 to 3500 x 3000, quality 92, 4:2:0, a texture about as hard to
//! compress as aerial imagery) with fMoW-like crop boxes, one thread, the
//! time to decode a crop for `Resize(resize_to)`:
//!
//! - `zune_full`: the full-resolution path ([`DecodeScale::Full`]: zune-jpeg
//!   decodes every pixel, then the crop is cut), the paper's;
//! - `turbo_full`: libjpeg-turbo at full scale over the crop's blocks only
//!   (whether the full path would gain from moving to libjpeg-turbo);
//! - `auto`: [`DecodeScale::Auto`], what geossl does by default: the crop's
//!   blocks at the smallest DCT scale that keeps its shorter side at least
//!   `resize_to` (the full path when none fits).
//!
//! and the PSNR of `Resize(resize_to) + CenterCrop(resize_to)` of the `auto`
//! decode against the same of the full decode (the error scaling adds).
//! Files are decoded from memory (no I/O); each time is the median of
//! `rounds` decodes.

use std::time::Instant;

use image::RgbImage;
use rand::{Rng, SeedableRng};

use crate::data::augment::resize_center_crop;
use crate::data::decode::{decode_bytes_scaled, DecodeOptions};
use crate::data::jpeg::{self, Subsampling};
use crate::data::manifest::CropBox;

/// The settings of the scaled-JPEG rows.
#[derive(Debug, Clone)]
pub struct ScaledJpegConfig {
    /// Number of JPEGs, sizes spread evenly from 1200 x 900 to 3500 x 3000.
    pub files: usize,
    /// The side the crop's shorter side is resized to (the pre-size, 448).
    pub resize_to: u32,
    /// JPEG quality of the files.
    pub quality: u8,
    /// Decodes per measure (median reported).
    pub rounds: usize,
    pub seed: u64,
}

/// One file's measures.
#[derive(Debug, Clone)]
pub struct ScaledRow {
    pub width: u32,
    pub height: u32,
    pub crop: CropBox,
    /// Compressed size in bits per pixel.
    pub bits_per_pixel: f64,
    /// The denominator `auto` decoded at; `None`: no reduction fits.
    pub denom: Option<u32>,
    pub zune_full_ms: f64,
    pub turbo_full_ms: f64,
    pub auto_ms: f64,
    /// PSNR (dB) of the `auto` result after Resize + CenterCrop against the
    /// full decode's; `None` when `auto` is the full path (identical).
    pub psnr: Option<f64>,
}

/// Writes the files in memory and measures each.
pub fn run(c: &ScaledJpegConfig) -> anyhow::Result<Vec<ScaledRow>> {
    anyhow::ensure!(
        c.files >= 1 && c.rounds >= 1,
        "files and rounds must be at least 1"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);
    let bar = crate::progress::bar(c.files as u64, "scaled JPEG decodes");
    let mut rows = Vec::new();
    for i in 0..c.files {
        let t = if c.files == 1 {
            0.0
        } else {
            i as f64 / (c.files - 1) as f64
        };
        let (w, h) = ((1200.0 + 2300.0 * t) as u32, (900.0 + 2100.0 * t) as u32);
        let img = jpeg::aerial_texture(w, h, rng.gen());
        let bytes = jpeg::encode(&img, c.quality, Subsampling::S420);
        drop(img);
        rows.push(measure(&bytes, w, h, fmow_like_crop(w, h, &mut rng), c)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

fn measure(
    bytes: &[u8],
    width: u32,
    height: u32,
    crop: CropBox,
    c: &ScaledJpegConfig,
) -> anyhow::Result<ScaledRow> {
    let name = format!("{width}x{height}.jpg");
    let full = DecodeOptions::full();
    let auto = DecodeOptions::default();
    let r = c.resize_to;
    let time = |f: &dyn Fn() -> anyhow::Result<RgbImage>| -> anyhow::Result<(f64, RgbImage)> {
        let mut ms = Vec::new();
        let mut out = f()?; // untimed: warms the caches and the decoder
        for _ in 0..c.rounds {
            let started = Instant::now();
            out = std::hint::black_box(f()?);
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        Ok((super::median_min(&ms).0, out))
    };
    let (zune_full_ms, reference) = time(&|| {
        Ok(decode_bytes_scaled(
            bytes,
            &name,
            Some(crop),
            &full,
            Some(r),
        )?)
    })?;
    let (turbo_full_ms, _) = time(&|| Ok(jpeg::decode_at(bytes, &name, Some(crop), &full, 1)?))?;
    let (auto_ms, scaled) = time(&|| {
        Ok(decode_bytes_scaled(
            bytes,
            &name,
            Some(crop),
            &auto,
            Some(r),
        )?)
    })?;
    let denom = jpeg::scale_for(crop.w, crop.h, r);
    anyhow::ensure!(
        scaled.dimensions() == denom.map_or((crop.w, crop.h), |d| (crop.w / d, crop.h / d)),
        "{name}: the auto decode of crop {crop} is {:?}, not at the scale chosen",
        scaled.dimensions()
    );
    let psnr = match denom {
        Some(_) => Some(crate::data::jpeg::psnr(
            &resize_center_crop(&scaled, r)?,
            &resize_center_crop(&reference, r)?,
        )),
        None => None,
    };
    Ok(ScaledRow {
        width,
        height,
        crop,
        bits_per_pixel: bytes.len() as f64 * 8.0 / (width as f64 * height as f64),
        denom,
        zune_full_ms,
        turbo_full_ms,
        auto_ms,
        psnr,
    })
}

/// A box like fMoW's context crops: 35-95% of each side of the image, at a
/// random place inside it.
fn fmow_like_crop(w: u32, h: u32, rng: &mut impl Rng) -> CropBox {
    let cw = (w as f64 * rng.gen_range(0.35..0.95)) as u32;
    let ch = (h as f64 * rng.gen_range(0.35..0.95)) as u32;
    CropBox {
        x: rng.gen_range(0..=w - cw),
        y: rng.gen_range(0..=h - ch),
        w: cw,
        h: ch,
    }
}

/// The summary of the rows: a Markdown table, one line per file, and the
/// totals (time per image over all files, speed-up, PSNR range).
pub fn table(rows: &[ScaledRow], resize_to: u32) -> String {
    let mut s = format!(
        "| image | crop | bits/px | auto scale | zune full ms | turbo full ms | auto ms | zune/auto | PSNR dB (Resize({resize_to})+CenterCrop) |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s += &format!(
            "| {}x{} | {} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {:.2}x | {} |\n",
            r.width,
            r.height,
            r.crop,
            r.bits_per_pixel,
            r.denom.map_or("1 (full path)".into(), |d| format!("1/{d}")),
            r.zune_full_ms,
            r.turbo_full_ms,
            r.auto_ms,
            r.zune_full_ms / r.auto_ms,
            r.psnr.map_or("identical".into(), |p| format!("{p:.2}")),
        );
    }
    let sum = |f: fn(&ScaledRow) -> f64| rows.iter().map(f).sum::<f64>();
    let n = rows.len() as f64;
    let psnrs: Vec<f64> = rows.iter().filter_map(|r| r.psnr).collect();
    let (lo, mean) = match psnrs.is_empty() {
        true => (f64::NAN, f64::NAN),
        false => (
            psnrs.iter().copied().fold(f64::INFINITY, f64::min),
            psnrs.iter().sum::<f64>() / psnrs.len() as f64,
        ),
    };
    s += &format!(
        "\nper image: zune full {:.1} ms, turbo full {:.1} ms, auto {:.1} ms; zune/auto {:.2}x, zune/turbo full {:.2}x; {} of {} scaled; PSNR min {lo:.2} dB, mean {mean:.2} dB",
        sum(|r| r.zune_full_ms) / n,
        sum(|r| r.turbo_full_ms) / n,
        sum(|r| r.auto_ms) / n,
        sum(|r| r.zune_full_ms) / sum(|r| r.auto_ms),
        sum(|r| r.zune_full_ms) / sum(|r| r.turbo_full_ms),
        psnrs.len(),
        rows.len(),
    );
    s
}
