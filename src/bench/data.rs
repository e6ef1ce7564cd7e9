//! `geossl bench data`: the input pipeline alone, as
//! `../shared/bench/torch_data_reference.py` measures PyTorch's: every image
//! of a manifest decoded and turned into two independently augmented aug+
//! views (Resize + CenterCrop to `pre`, then RandomResizedCrop to `size`,
//! ...), collated into batches, on `threads` worker threads.

use std::path::PathBuf;
use std::time::Instant;

use crate::data::augment::AugConfig;
use crate::data::decode::DecodeLimits;
use crate::data::loader::{LoaderConfig, PairLoader, PairMode, SampleBy};
use crate::data::Manifest;

/// The settings of `geossl bench data` (the reference's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct DataBenchConfig {
    #[arg(long)]
    pub manifest: PathBuf,
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Resize + CenterCrop side before the random crop.
    #[arg(long, default_value_t = 448)]
    pub pre: u32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Use the first N images only (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
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
/// batch; the loader's threads are rayon's global pool, sized here.
pub fn run(c: &DataBenchConfig) -> anyhow::Result<DataTiming> {
    if c.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(c.threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads {}: {e}", c.threads))?;
    }
    let mut manifest = Manifest::read(&c.manifest)?;
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
