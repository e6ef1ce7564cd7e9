//! `geossl bench data`: the input pipeline alone, as
//! `../shared/bench/torch_data_reference.py` measures PyTorch's: every image
//! of a manifest decoded and turned into two independently augmented aug+
//! views (Resize + CenterCrop to `pre`, then RandomResizedCrop to `size`,
//! ...), collated into batches, on `threads` worker threads.

use std::path::Path;
use std::time::Instant;

use crate::data::augment::AugConfig;
use crate::data::decode::DecodeLimits;
use crate::data::loader::{LoaderConfig, PairLoader, PairMode, SampleBy};
use crate::data::Manifest;

#[derive(Debug, Clone)]
pub struct DataBenchConfig {
    pub size: u32,
    pub pre: u32,
    pub batch: usize,
    /// Use the first N rows only (0: all).
    pub limit: usize,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct DataTiming {
    pub pairs: usize,
    pub seconds: f64,
    pub pairs_per_s: f64,
}

/// One pass over the manifest's images (an epoch of same-image pairs, the
/// last partial batch dropped), timed from the first request to the last
/// batch; the loader's threads are rayon's global pool.
pub fn run(manifest: &Path, c: &DataBenchConfig) -> anyhow::Result<DataTiming> {
    let mut manifest = Manifest::read(manifest)?;
    if c.limit > 0 {
        manifest.records.truncate(c.limit);
    }
    let mut aug = AugConfig::aug_plus(c.size);
    aug.pre_size = Some(c.pre);
    let loader = PairLoader::new(
        manifest,
        LoaderConfig {
            batch: c.batch,
            aug,
            pairs: PairMode::SameImage,
            sample_by: SampleBy::Image,
            seed: c.seed,
            prefetch: 4,
            decode: DecodeLimits::default(),
            geo_labels: false,
            pin_memory: false,
            on_bad_image: crate::data::loader::BadImagePolicy::Fail,
        },
    )?;
    let started = Instant::now();
    let mut pairs = 0;
    for batch in loader.epoch(0, 0) {
        pairs += batch?.rows.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(DataTiming {
        pairs,
        seconds,
        pairs_per_s: pairs as f64 / seconds,
    })
}
