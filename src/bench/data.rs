//! `geossl bench data`: the input pipeline alone, as
//! `../shared/bench/torch_data_reference.py` measures PyTorch's: every image
//! of a manifest decoded and turned into two independently augmented aug+
//! views (Resize + CenterCrop to `pre`, then RandomResizedCrop to `size`,
//! ...), collated into batches, on `threads` worker threads. Unreadable
//! images are replaced and listed, as pretraining does (or stop the bench
//! with `--on-bad-image fail`); a pass that prepared no pair is an error.
//! `--pairs temporal` takes each key from another view of the place (two
//! decodes per pair, as pretraining with temporal positives), `--packed`
//! reads a pack, `--decode-scale full` turns JPEG DCT scaling off.

use std::path::PathBuf;
use std::time::Instant;

use crate::data::augment::{AugConfig, MIN_IMAGE_SIZE};
use crate::data::bands::{BandSelection, BandStats, InputSpec, Radiometry};
use crate::data::decode::DecodeOptions;
use crate::data::loader::{BadImage, BadImagePolicy, LoaderConfig, PairLoader, PairMode, SampleBy};
use crate::data::Manifest;
use crate::settings::name;

/// The settings of `geossl bench data` (the reference's; the CLI holds its
/// defaults).
#[derive(Debug, Clone)]
pub struct DataBenchConfig {
    pub manifest: PathBuf,
    /// Output side of the random crop in pixels.
    pub size: u32,
    /// Resize + CenterCrop side before the random crop (0: twice `size`, as
    /// pretraining's `pre_size`).
    pub pre: u32,
    pub batch: usize,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Use the first N images only (0: all).
    pub limit: usize,
    pub seed: u64,
    /// Unreadable images: replace them by other samples and list them
    /// (skip), or stop (fail).
    pub on_bad_image: BadImagePolicy,
    /// The input channels (`--bands`; `rgb`: the paper's RGB path).
    pub bands: BandSelection,
    /// How stored values become unit values (`--radiometry`); `stats` reads
    /// the manifest's `M.band_stats.json`.
    pub radiometry: Radiometry,
    /// Same-image pairs (MoCo-v2) or temporal positives (the key from
    /// another view of the place: two decodes per pair).
    pub pairs: PairMode,
    /// Read the images from this pack (`geossl pack`) instead of the files.
    pub packed: Option<PathBuf>,
    /// JPEG decoding (DCT scaling or full).
    pub decode: DecodeOptions,
}

#[derive(Debug, Clone)]
pub struct DataTiming {
    /// The pre-step's side in pixels (`pre`, or twice `size` for 0).
    pub pre: u32,
    /// Input channels of each view (C of the `[N, C, S, S]` batches).
    pub channels: usize,
    pub pairs: usize,
    /// The distinct images that were replaced by other samples, by path.
    pub bad: Vec<BadImage>,
    pub seconds: f64,
    pub pairs_per_s: f64,
}

/// One pass over the manifest's images (an epoch of same-image pairs, the
/// last partial batch dropped), timed from the first request to the last
/// batch; the loader's threads are rayon's global pool, sized here.
pub fn run(c: &DataBenchConfig) -> anyhow::Result<DataTiming> {
    if c.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(c.threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("{} {}: {e}", name("threads"), c.threads))?;
    }
    anyhow::ensure!(
        c.size >= MIN_IMAGE_SIZE,
        "{} must be at least {MIN_IMAGE_SIZE} pixels, got {}",
        name("size"),
        c.size
    );
    anyhow::ensure!(c.batch >= 1, "{} must be at least 1", name("batch"));
    let mut manifest = Manifest::read(&c.manifest)?;
    if c.limit > 0 {
        manifest.records.truncate(c.limit);
    }
    let images = manifest.records.len();
    // The defaults keep the RGB path without opening a file (as before
    // `--bands`), so a manifest of unreadable files is the loader's error.
    let input = if c.bands == BandSelection::Rgb && c.radiometry == Radiometry::Auto {
        InputSpec::rgb()
    } else {
        let stats = BandStats::load_for(&c.manifest)?;
        InputSpec::resolve(
            c.bands.clone(),
            c.radiometry.clone(),
            &manifest,
            stats.as_ref(),
        )?
    };
    let channels = input.channels();
    let source = crate::data::source::ImageSource::open(c.packed.as_deref(), &manifest)?;
    let aug = AugConfig::aug_plus_pre(c.size, c.pre);
    let loader = PairLoader::new(
        manifest,
        LoaderConfig {
            batch: c.batch,
            aug,
            pairs: c.pairs,
            sample_by: SampleBy::Image,
            seed: c.seed,
            prefetch: 4,
            decode: c.decode,
            geo_labels: false,
            pin_memory: false,
            on_bad_image: c.on_bad_image,
            shard: Default::default(),
            input,
            source,
        },
    )?;
    let started = Instant::now();
    let (mut pairs, mut bad) = (0, std::collections::BTreeMap::new());
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        pairs += batch.rows.len();
        bad.extend(batch.bad.into_iter().map(|b| (b.path.clone(), b)));
    }
    let seconds = started.elapsed().as_secs_f64();
    let bad: Vec<BadImage> = bad.into_values().collect();
    // A timing of nothing is no measurement (the loader reports its own
    // errors; this guards against any pass that ends without one).
    anyhow::ensure!(
        pairs > 0,
        "{}: no pair was prepared from {} images ({} unreadable); nothing was measured",
        c.manifest.display(),
        images,
        bad.len()
    );
    Ok(DataTiming {
        pre: aug.pre_size.unwrap_or(0),
        channels,
        pairs,
        bad,
        seconds,
        pairs_per_s: pairs as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest of `good` PNGs at the sizes that once put the default
    /// pre-step's box outside the image, and `bad` TIFF headers followed
    /// by junk, which GDAL cannot open.
    fn images(dir: &std::path::Path, good: usize, bad: usize) -> PathBuf {
        let sizes = [(597, 478), (1201, 899), (478, 597), (899, 1201)];
        let mut csv = String::from("path\n");
        for i in 0..good {
            let (w, h) = sizes[i % sizes.len()];
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
            img.save(dir.join(format!("good{i}.png"))).unwrap();
            csv.push_str(&format!("good{i}.png\n"));
        }
        let tiff = b"II*\0junk, not a raster";
        for i in 0..bad {
            std::fs::write(dir.join(format!("bad{i}.tif")), tiff).unwrap();
            csv.push_str(&format!("bad{i}.tif\n"));
        }
        let manifest = dir.join("manifest.csv");
        std::fs::write(&manifest, csv).unwrap();
        manifest
    }

    fn config(manifest: PathBuf) -> DataBenchConfig {
        DataBenchConfig {
            manifest,
            size: 224,
            pre: 448,
            batch: 4,
            threads: 0,
            limit: 0,
            seed: 0,
            on_bad_image: BadImagePolicy::Skip,
            bands: BandSelection::Rgb,
            radiometry: Radiometry::Auto,
            pairs: PairMode::SameImage,
            packed: None,
            decode: DecodeOptions::default(),
        }
    }

    #[test]
    fn unreadable_images_are_replaced_and_listed_or_stop_the_bench() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(images(dir.path(), 4, 4));
        let t = run(&c).unwrap();
        assert_eq!(t.pairs, 8);
        let bad: Vec<&str> = t.bad.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(bad, ["bad0.tif", "bad1.tif", "bad2.tif", "bad3.tif"]);
        assert!(
            t.bad[0].error.contains("not a raster GDAL can read"),
            "{}",
            t.bad[0].error
        );
        let err = run(&DataBenchConfig {
            on_bad_image: BadImagePolicy::Fail,
            ..c
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(".tif: not a raster GDAL can read"), "{err}");
    }

    #[test]
    fn pre_0_is_twice_the_size_as_in_pretraining() {
        // `--pre 0` once asked the pre-step for a 0 x 0 box and blamed
        // every image for it.
        let dir = tempfile::tempdir().unwrap();
        let c = DataBenchConfig {
            size: 32,
            pre: 0,
            ..config(images(dir.path(), 4, 0))
        };
        let t = run(&c).unwrap();
        assert_eq!((t.pre, t.pairs, t.bad.len()), (64, 4, 0));
        assert_eq!(AugConfig::aug_plus_pre(32, 0).pre_size, Some(64));
        assert_eq!(AugConfig::aug_plus_pre(32, 40).pre_size, Some(40));
        let err = run(&DataBenchConfig { size: 4, ..c })
            .unwrap_err()
            .to_string();
        assert_eq!(err, "size must be at least 8 pixels, got 4");
    }

    #[test]
    fn a_folder_of_unreadable_images_is_an_error_not_a_timing() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&config(images(dir.path(), 0, 4)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("16 images in a row could not be read")
                && err.contains("not a raster GDAL can read"),
            "{err}"
        );
    }
}
