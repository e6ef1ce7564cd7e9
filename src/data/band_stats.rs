//! Per-band statistics of a dataset (`geossl index stats M.csv`): mean,
//! population standard deviation, minimum, maximum and valid-pixel count of
//! every band, in stored values, over a seeded sample of the manifest's
//! images, NoData and masked pixels excluded. The result is a
//! [`BandStats`], written beside the manifest for `--radiometry stats` and
//! the per-band normalisation of multispectral input.
//!
//! Each sampled image is read through GDAL ([`RasterReader`]) at a target
//! size of at most [`StatsOptions::pixels_per_image`] pixels: a decimated
//! read with nearest neighbour (GDAL's overviews where the file has them),
//! so the statistics are those of stored values, not of averages (which
//! would shrink the standard deviation), and memory stays bounded whatever
//! the scene size. Images are read in parallel (rayon, one reader per
//! task); their moments are combined with Chan et al.'s parallel update in
//! the sampled order, so the result does not depend on the thread count.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::bands::{BandStat, BandStats};
use super::decode::DecodeOptions;
use super::manifest::{ImageRecord, Manifest};
use super::raster::{RasterReader, Resampling, Window};
use crate::progress;

/// Default number of images sampled (`--sample`).
pub const DEFAULT_SAMPLE: usize = 256;
/// Default pixel budget per image (`--pixels-per-image`): 256 x 256.
pub const DEFAULT_PIXELS_PER_IMAGE: usize = 256 * 256;

/// How [`compute`] samples a dataset.
#[derive(Debug, Clone)]
pub struct StatsOptions {
    /// Images (manifest rows) read, drawn without replacement; all rows
    /// when the manifest has fewer.
    pub sample: usize,
    /// Largest number of pixels read from one image: larger windows are
    /// read decimated (nearest neighbour) to fit, keeping their aspect.
    pub pixels_per_image: usize,
    /// Seed of the draw of images (same manifest and seed, same result).
    pub seed: u64,
    /// Bound on the window read from one image (refused above it).
    pub limits: DecodeOptions,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for StatsOptions {
    fn default() -> Self {
        Self {
            sample: DEFAULT_SAMPLE,
            pixels_per_image: DEFAULT_PIXELS_PER_IMAGE,
            seed: 0,
            limits: DecodeOptions::default(),
            quiet: true,
        }
    }
}

/// Count, mean, sum of squared deviations, minimum and maximum of a stream
/// of values: Welford's update for one value, Chan, Golub and LeVeque's
/// combination of two sets (both in f64, stable for millions of 16-bit
/// values where the naive sum of squares cancels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean (M2).
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// Adds one value (Welford).
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Adds the values `other` summarises (Chan et al.'s parallel update).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        let (na, nb) = (self.count as f64, other.count as f64);
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Population standard deviation (0 for no values).
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).sqrt()
        }
    }
}

/// What [`compute`] found.
#[derive(Debug, Clone)]
pub struct StatsReport {
    pub stats: BandStats,
    /// One line per sampled file that could not be read (skipped): the
    /// reader's error, which names the file.
    pub skipped: Vec<String>,
}

/// One image's per-band moments, or why it could not be read.
struct ImageMoments {
    path: String,
    names: Vec<String>,
    bands: Vec<Moments>,
}

/// The target size of a `w` x `h` window read with at most `budget`
/// pixels: the window itself when it fits, else scaled down by the same
/// factor on both axes (at least 1 pixel each, at most `budget` in all).
pub fn target_size(w: usize, h: usize, budget: usize) -> (usize, usize) {
    let pixels = w as u64 * h as u64;
    if pixels <= budget.max(1) as u64 {
        return (w, h);
    }
    let budget = budget.max(1);
    let s = (budget as f64 / pixels as f64).sqrt();
    let fit = |v: usize| ((v as f64 * s).floor() as usize).clamp(1, v);
    let (tw, th) = (fit(w), fit(h));
    // A side clamped to 1 pixel leaves the other to take the whole budget.
    (tw.min(budget / th).max(1), th.min(budget / tw).max(1))
}

/// The record's window: its crop box clamped to the raster, else the whole
/// raster.
fn window_of(record: &ImageRecord, width: usize, height: usize) -> Window {
    match record.crop {
        Some(c) if (c.x as usize) < width && (c.y as usize) < height => Window {
            x: c.x as usize,
            y: c.y as usize,
            width: (c.w as usize).min(width - c.x as usize),
            height: (c.h as usize).min(height - c.y as usize),
        },
        _ => Window {
            x: 0,
            y: 0,
            width,
            height,
        },
    }
}

/// Reads one image (every band, decimated to the pixel budget) and
/// accumulates its valid, finite values per band.
fn image_moments(
    path: &Path,
    record: &ImageRecord,
    options: &StatsOptions,
) -> Result<ImageMoments, String> {
    let reader = RasterReader::open(path).map_err(|e| e.to_string())?;
    let info = reader.info();
    let window = window_of(record, info.width, info.height);
    let target = target_size(window.width, window.height, options.pixels_per_image);
    let bands: Vec<usize> = (1..=info.bands.len()).collect();
    let read = reader
        .read(&bands, window, target, Resampling::Nearest, &options.limits)
        .map_err(|e| e.to_string())?;
    let plane = read.width * read.height;
    let moments = (0..read.bands)
        .map(|c| {
            let mut m = Moments::default();
            let values = &read.data[c * plane..(c + 1) * plane];
            for (&v, &ok) in values.iter().zip(&read.valid) {
                if ok && v.is_finite() {
                    m.push(v as f64);
                }
            }
            m
        })
        .collect();
    Ok(ImageMoments {
        path: reader.path().to_string(),
        names: info.bands.iter().map(|b| b.description.clone()).collect(),
        bands: moments,
    })
}

/// The rows to read: `sample` of the manifest's rows drawn without
/// replacement with `seed`, in manifest order.
fn sample_rows(rows: usize, sample: usize, seed: u64) -> Vec<usize> {
    if sample >= rows {
        return (0..rows).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, rows, sample).into_vec();
    picked.sort_unstable();
    picked
}

/// Computes the per-band statistics of `manifest`'s images (see the module
/// documentation). `manifest_name` is recorded in the result.
///
/// Errors: an empty manifest or sample; a readable raster whose band count
/// differs from the first readable one in sampled order (the error names
/// both files); no sampled file readable. Unreadable files are listed in
/// [`StatsReport::skipped`] and left out.
pub fn compute(
    manifest: &Manifest,
    manifest_name: &str,
    options: &StatsOptions,
) -> anyhow::Result<StatsReport> {
    anyhow::ensure!(
        !manifest.records.is_empty(),
        "{manifest_name}: the manifest has no rows"
    );
    anyhow::ensure!(options.sample > 0, "--sample must be at least 1 image");
    anyhow::ensure!(
        options.pixels_per_image > 0,
        "--pixels-per-image must be at least 1"
    );
    let rows = sample_rows(manifest.records.len(), options.sample, options.seed);
    let bar = progress::bar_unless(options.quiet, rows.len() as u64, "band statistics");
    let per_image: Vec<Result<ImageMoments, String>> = rows
        .par_iter()
        .map(|&r| {
            let record = &manifest.records[r];
            let m = image_moments(&manifest.resolve(record), record, options);
            bar.inc(1);
            m
        })
        .collect();
    bar.finish_and_clear();

    let mut skipped = Vec::new();
    let mut first: Option<ImageMoments> = None;
    let mut images = 0usize;
    for result in per_image {
        let image = match result {
            Ok(image) => image,
            Err(e) => {
                skipped.push(e);
                continue;
            }
        };
        images += 1;
        match &mut first {
            None => first = Some(image),
            Some(acc) => {
                anyhow::ensure!(
                    image.bands.len() == acc.bands.len(),
                    "{}: has {} bands, but {} has {}; every raster of a dataset needs the same bands",
                    image.path,
                    image.bands.len(),
                    acc.path,
                    acc.bands.len()
                );
                for (a, b) in acc.bands.iter_mut().zip(&image.bands) {
                    a.merge(b);
                }
            }
        }
    }
    let Some(acc) = first else {
        anyhow::bail!(
            "{manifest_name}: none of the {} sampled images could be read (first: {})",
            rows.len(),
            skipped.first().map(String::as_str).unwrap_or("?")
        );
    };
    let bands = acc
        .bands
        .iter()
        .zip(&acc.names)
        .enumerate()
        .map(|(i, (m, name))| BandStat {
            band: i + 1,
            name: name.clone(),
            mean: m.mean,
            std: m.std(),
            min: if m.count > 0 { m.min } else { 0.0 },
            max: if m.count > 0 { m.max } else { 0.0 },
            valid_pixels: m.count,
        })
        .collect();
    Ok(StatsReport {
        stats: BandStats {
            bands,
            images_sampled: images,
            images_total: manifest.records.len(),
            seed: options.seed,
            manifest: manifest_name.to_string(),
        },
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdal::raster::Buffer;
    use gdal::{DriverManager, Metadata};

    const NODATA: u16 = 0;

    /// Writes a `bands`-band UInt16 GeoTIFF with GDAL, NoData = 0, values
    /// `f(band, x, y)`; returns the values written, band-major.
    fn write_u16(
        path: &Path,
        w: usize,
        h: usize,
        bands: usize,
        f: impl Fn(usize, usize, usize) -> u16,
    ) -> Vec<Vec<u16>> {
        let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
        let ds = gtiff
            .create_with_band_type::<u16, _>(path, w, h, bands)
            .unwrap();
        let mut written = Vec::new();
        for b in 0..bands {
            let mut band = ds.rasterband(b + 1).unwrap();
            band.set_no_data_value(Some(NODATA as f64)).unwrap();
            band.set_description(&format!("B{}", b + 1)).unwrap();
            let data: Vec<u16> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| f(b, x, y))
                .collect();
            band.write((0, 0), (w, h), &mut Buffer::new((w, h), data.clone()))
                .unwrap();
            written.push(data);
        }
        written
    }

    fn manifest_of(dir: &Path, files: &[&str]) -> Manifest {
        Manifest {
            source: dir.join("m.csv"),
            root: dir.to_path_buf(),
            records: files
                .iter()
                .map(|f| ImageRecord {
                    path: f.to_string(),
                    ..Default::default()
                })
                .collect(),
            extra_columns: Vec::new(),
        }
    }

    /// Image `i`'s pattern: NoData (0) in every band along the left column
    /// of even images, else values around 1000 * (band + 1) + 37 * i.
    fn pattern(i: usize) -> impl Fn(usize, usize, usize) -> u16 {
        move |b, x, y| {
            if i % 2 == 0 && x == 0 {
                NODATA
            } else {
                (1000 * (b + 1) + 37 * i + x * 11 + y * 5 + (x * y) % 7) as u16
            }
        }
    }

    #[test]
    fn full_reads_give_the_exact_statistics_without_nodata() {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<Vec<f64>> = vec![Vec::new(); 3];
        let mut files = Vec::new();
        for i in 0..4 {
            let name = format!("img{i}.tif");
            let written = write_u16(&dir.path().join(&name), 12 + i, 9, 3, pattern(i));
            for (b, values) in written.iter().enumerate() {
                all[b].extend(values.iter().filter(|&&v| v != NODATA).map(|&v| v as f64));
            }
            files.push(name);
        }
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        let m = manifest_of(dir.path(), &names);
        let report = compute(&m, "m.csv", &StatsOptions::default()).unwrap();
        assert!(report.skipped.is_empty());
        let s = &report.stats;
        assert_eq!((s.images_sampled, s.images_total), (4, 4));
        assert_eq!(s.bands.len(), 3);
        for (b, values) in all.iter().enumerate() {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let got = &s.bands[b];
            assert_eq!(got.band, b + 1);
            assert_eq!(got.name, format!("B{}", b + 1));
            assert_eq!(got.valid_pixels, values.len() as u64);
            assert!(
                (got.mean - mean).abs() < 1e-9 * mean,
                "{} vs {mean}",
                got.mean
            );
            assert!(
                (got.std - var.sqrt()).abs() < 1e-9 * mean,
                "{} vs {}",
                got.std,
                var.sqrt()
            );
            let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!((got.min, got.max), (min, max));
            assert!(got.min > 0.0, "NoData entered the statistics");
        }
        // Written beside the manifest and read back.
        let path = s.save_for(&m.source).unwrap();
        assert_eq!(path, dir.path().join("m.band_stats.json"));
        assert_eq!(BandStats::load_for(&m.source).unwrap().as_ref(), Some(s));
    }

    #[test]
    fn chan_merge_matches_one_pass_on_large_offsets() {
        // Reflectance-like values on a large offset, where the naive
        // sum of squares loses digits.
        let values: Vec<f64> = (0..10_000)
            .map(|i| 1.0e6 + ((i * 7919) % 1000) as f64 * 0.01)
            .collect();
        let mut one = Moments::default();
        values.iter().for_each(|&v| one.push(v));
        let mut merged = Moments::default();
        for chunk in values.chunks(333) {
            let mut part = Moments::default();
            chunk.iter().for_each(|&v| part.push(v));
            merged.merge(&part);
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        for m in [one, merged] {
            assert_eq!(m.count, 10_000);
            assert!((m.mean - mean).abs() < 1e-6);
            assert!(
                (m.std() - std).abs() < 1e-8 * std.max(1.0),
                "{} vs {std}",
                m.std()
            );
        }
        assert_eq!((merged.min, merged.max), (one.min, one.max));
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for i in 0..10 {
            let name = format!("img{i}.tif");
            write_u16(&dir.path().join(&name), 8, 8, 2, pattern(i));
            names.push(name);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let m = manifest_of(dir.path(), &refs);
        let options = |seed| StatsOptions {
            sample: 4,
            seed,
            ..StatsOptions::default()
        };
        let a = compute(&m, "m.csv", &options(1)).unwrap().stats;
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| compute(&m, "m.csv", &options(1)).unwrap().stats);
        assert_eq!(a, b);
        assert_eq!((a.images_sampled, a.images_total, a.seed), (4, 10, 1));
        assert_eq!(sample_rows(10, 4, 1), sample_rows(10, 4, 1));
        assert_ne!(sample_rows(10, 4, 1), sample_rows(10, 4, 2));
        let c = compute(&m, "m.csv", &options(2)).unwrap().stats;
        assert_ne!(a.bands[0].mean, c.bands[0].mean);
    }

    #[test]
    fn large_images_are_read_decimated_to_the_budget() {
        assert_eq!(target_size(100, 50, 10_000), (100, 50));
        assert_eq!(target_size(400, 100, 10_000), (200, 50));
        assert_eq!(target_size(10_000, 1, 100), (100, 1));
        let dir = tempfile::tempdir().unwrap();
        write_u16(&dir.path().join("big.tif"), 120, 60, 1, |_, x, y| {
            (1 + x + 1000 * y) as u16
        });
        let m = manifest_of(dir.path(), &["big.tif"]);
        let options = StatsOptions {
            pixels_per_image: 800,
            ..StatsOptions::default()
        };
        let s = compute(&m, "m.csv", &options).unwrap().stats;
        // 120 x 60 -> 40 x 20: nearest neighbour keeps stored values.
        assert_eq!(s.bands[0].valid_pixels, 800);
        let v = s.bands[0].min;
        assert!(v >= 1.0 && v.fract() == 0.0, "{v}");
    }

    #[test]
    fn unreadable_files_are_listed_and_band_counts_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        write_u16(&dir.path().join("a.tif"), 8, 8, 2, pattern(1));
        std::fs::write(dir.path().join("junk.tif"), b"not a raster").unwrap();
        let m = manifest_of(dir.path(), &["a.tif", "junk.tif", "missing.tif"]);
        let report = compute(&m, "m.csv", &StatsOptions::default()).unwrap();
        assert_eq!(report.skipped.len(), 2);
        assert!(
            report.skipped[0].contains("junk.tif"),
            "{:?}",
            report.skipped
        );
        assert!(report.skipped[1].contains("missing.tif"));
        assert_eq!(report.stats.images_sampled, 1);
        assert_eq!(report.stats.bands[0].valid_pixels, 64);

        write_u16(&dir.path().join("b.tif"), 8, 8, 3, pattern(1));
        let m = manifest_of(dir.path(), &["a.tif", "b.tif"]);
        let err = compute(&m, "m.csv", &StatsOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.tif") && err.contains("3 bands"), "{err}");

        let m = manifest_of(dir.path(), &["junk.tif"]);
        let err = compute(&m, "m.csv", &StatsOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none of the 1") && err.contains("junk.tif"),
            "{err}"
        );
    }
}
