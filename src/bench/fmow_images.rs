//! `geossl bench fmow-images`: a stand-in for fMoW-RGB on disk, for the
//! loader benchmarks. Real fMoW JPEGs are 1,000-3,500+ px, quality ~90-95,
//! and textured everywhere (fields, roofs, roads, vegetation), so they hold
//! about 2-4 bits per pixel where the built-in synthetic scenes, smooth
//! shapes, hold a fraction of one; decoding cost follows the entropy, so a
//! benchmark on smooth scenes flatters every decoder. Each place has 2-4
//! views (temporal positives), each its own image size and its own
//! `crop`: the fMoW baseline's context crop ([`crate::data::fmow::box_crop`])
//! of a box of 10-60 % of the image side at about the same relative spot.

use std::path::PathBuf;

use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::fmow::box_crop;
use crate::data::manifest::{ImageRecord, Manifest, Split, Timestamp};
use crate::geo::coords::LatLon;

/// The settings of `geossl bench fmow-images`.
#[derive(Debug, Clone)]
pub struct FmowImagesConfig {
    pub out: PathBuf,
    /// Images (views) to write, over places of 2-4 views.
    pub count: usize,
    /// Smallest and largest (width, height) in pixels.
    pub min_size: (u32, u32),
    pub max_size: (u32, u32),
    /// JPEG quality (fMoW's files are ~90-95).
    pub quality: u8,
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct FmowImages {
    pub manifest: PathBuf,
    pub images: usize,
    pub places: usize,
    /// Compressed bits per pixel over all images.
    pub bits_per_pixel: f64,
    pub bytes: u64,
}

/// One view to write: its file, size, crop and place.
struct View {
    file: String,
    size: (u32, u32),
    record: ImageRecord,
    seed: u64,
}

/// Writes `count` JPEGs and `manifest.csv` (path, lat, lon, timestamp,
/// location_id, label, split, crop) into `out`, in parallel with a progress
/// bar; the manifest is written last (atomically), so a folder with a
/// manifest is complete. Errors: the folder or a file cannot be written.
pub fn run(c: &FmowImagesConfig) -> anyhow::Result<FmowImages> {
    anyhow::ensure!(c.count > 0, "count must be at least 1");
    anyhow::ensure!(
        c.min_size.0 >= 64 && c.min_size.1 >= 64 && c.min_size <= c.max_size,
        "sizes must be at least 64 px and min <= max"
    );
    std::fs::create_dir_all(&c.out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", c.out.display()))?;
    let (views, places) = plan(c);
    let bar = crate::progress::bar(views.len() as u64, "fMoW-sized JPEGs");
    let bytes: Vec<u64> = crate::data::collect_in_order(views.par_iter().map(|v| {
        let img = texture(v.size, v.seed);
        let path = c.out.join(&v.file);
        let mut data = Vec::new();
        JpegEncoder::new_with_quality(&mut data, c.quality).encode_image(&img)?;
        // The manifest, written last, marks the folder complete.
        std::fs::write(&path, &data)
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
        bar.inc(1);
        Ok(data.len() as u64)
    }))?;
    bar.finish_and_clear();
    let pixels: f64 = views
        .iter()
        .map(|v| v.size.0 as f64 * v.size.1 as f64)
        .sum();
    let manifest = Manifest {
        source: c.out.join("manifest.csv"),
        root: c.out.clone(),
        records: views.into_iter().map(|v| v.record).collect(),
        extra_columns: vec![],
    };
    manifest.write(&manifest.source)?;
    let total: u64 = bytes.iter().sum();
    Ok(FmowImages {
        manifest: manifest.source,
        images: bytes.len(),
        places,
        bits_per_pixel: total as f64 * 8.0 / pixels,
        bytes: total,
    })
}

/// The views of every place and the number of places, drawn from the seed
/// alone (so the same settings write the same files).
fn plan(c: &FmowImagesConfig) -> (Vec<View>, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let mut views = Vec::with_capacity(c.count);
    let mut place = 0;
    while views.len() < c.count {
        let n = rng.gen_range(2..=4).min(c.count - views.len());
        // The box's spot and size relative to the image, shared by the
        // place's views (the same building, seen again).
        let (cx, cy) = (rng.gen_range(0.25..0.75), rng.gen_range(0.25..0.75));
        let (bw, bh) = (rng.gen_range(0.1..0.6), rng.gen_range(0.1..0.6));
        let (lat, lon) = (rng.gen_range(-60.0..70.0), rng.gen_range(-180.0..180.0));
        let split = if place % 5 == 4 {
            Split::Val
        } else {
            Split::Train
        };
        for v in 0..n {
            let w = rng.gen_range(c.min_size.0..=c.max_size.0);
            let h = rng.gen_range(c.min_size.1..=c.max_size.1.min(w.max(c.min_size.1)));
            let jitter = |r: &mut ChaCha8Rng| r.gen_range(0.9..1.1);
            let (boxw, boxh) = (
                bw * w as f64 * jitter(&mut rng),
                bh * h as f64 * jitter(&mut rng),
            );
            let bbox = [
                cx * w as f64 - boxw / 2.0,
                cy * h as f64 - boxh / 2.0,
                boxw,
                boxh,
            ];
            let crop = box_crop(bbox, w, h).ok();
            let file = format!("place{place:05}_{v}.jpg");
            views.push(View {
                record: ImageRecord {
                    path: file.clone(),
                    position: Some(LatLon { lat, lon }),
                    timestamp: Some(Timestamp {
                        millis: 1_420_070_400_000 + v as i64 * 31_536_000_000,
                    }),
                    location_id: Some(format!("place{place:05}")),
                    label: Some(format!("class{}", place % 10)),
                    split: Some(split),
                    crop,
                    ..Default::default()
                },
                file,
                size: (w, h),
                seed: rng.gen(),
            });
        }
        place += 1;
    }
    (views, place)
}

/// Satellite-like texture: a patchwork of land-cover colours (value noise
/// at 400 and 90 px), structure at 20 and 5 px (fields, roofs, tree crowns)
/// and sensor-like grain of a few levels on every pixel.
fn texture((w, h): (u32, u32), seed: u64) -> RgbImage {
    let octaves = [(400.0, 70.0), (90.0, 40.0), (20.0, 26.0), (5.0, 20.0)];
    let lattices: Vec<Lattice> = octaves
        .iter()
        .enumerate()
        .map(|(i, &(cell, _))| Lattice::new(w, h, cell, seed.wrapping_add(i as u64)))
        .collect();
    let tint = Lattice::new(w, h, 250.0, seed ^ 0x5EED);
    let mut img = RgbImage::new(w, h);
    img.enumerate_rows_mut().par_bridge().for_each(|(y, row)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (y as u64).wrapping_mul(0x9E37_79B9));
        for (x, _, px) in row {
            let mut v = 110.0;
            for (l, &(_, amp)) in lattices.iter().zip(&octaves) {
                v += amp * l.at(x, y);
            }
            let t = tint.at(x, y);
            let grain = rng.gen_range(-8.0..8.0);
            let rgb = [
                v + 14.0 * t + grain,
                v + 6.0 * t + grain,
                v - 12.0 * t + grain,
            ];
            px.0 = rgb.map(|c: f32| c.clamp(0.0, 255.0) as u8);
        }
    });
    img
}

/// Smooth value noise in [-1, 1]: random values on a grid of `cell` px,
/// bilinearly interpolated.
struct Lattice {
    cell: f32,
    cols: usize,
    values: Vec<f32>,
}

impl Lattice {
    fn new(w: u32, h: u32, cell: f32, seed: u64) -> Self {
        let cols = (w as f32 / cell) as usize + 2;
        let rows = (h as f32 / cell) as usize + 2;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Self {
            cell,
            cols,
            values: (0..cols * rows).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        }
    }

    fn at(&self, x: u32, y: u32) -> f32 {
        let (fx, fy) = (x as f32 / self.cell, y as f32 / self.cell);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let v = |c: usize, r: usize| self.values[r * self.cols + c];
        let top = v(ix, iy) * (1.0 - tx) + v(ix + 1, iy) * tx;
        let bottom = v(ix, iy + 1) * (1.0 - tx) + v(ix + 1, iy + 1) * tx;
        top * (1.0 - ty) + bottom * ty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_places_of_several_views_with_crops_inside_their_images() {
        let dir = tempfile::tempdir().unwrap();
        let c = FmowImagesConfig {
            out: dir.path().join("f"),
            count: 7,
            min_size: (120, 90),
            max_size: (350, 300),
            quality: 92,
            seed: 1,
        };
        let got = run(&c).unwrap();
        assert_eq!(got.images, 7);
        let m = Manifest::read(&got.manifest).unwrap();
        assert_eq!(m.records.len(), 7);
        let index = crate::data::LocationIndex::build(&m);
        assert!(
            index.len() >= 2 && index.len() <= 4,
            "{} places",
            index.len()
        );
        for r in &m.records {
            let img = image::open(m.resolve(r)).unwrap();
            let (w, h) = (img.width(), img.height());
            assert!((120..=350).contains(&w) && (90..=300).contains(&h));
            let crop = r.crop.expect("every view has its box");
            assert!(crop.x + crop.w <= w && crop.y + crop.h <= h);
        }
        // Textured like imagery, not smooth synth scenes (a real fMoW JPEG
        // at quality 92 holds ~2-4 bits per pixel).
        assert!(got.bits_per_pixel > 1.5, "{} bpp", got.bits_per_pixel);
        let again = run(&FmowImagesConfig {
            out: dir.path().join("g"),
            ..c
        })
        .unwrap();
        assert_eq!(again.bytes, got.bytes, "the seed fixes the files");
    }
}
