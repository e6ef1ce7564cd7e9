//! From a manifest to batches of (query, key) image pairs, off the training
//! thread: batches are made on the rayon pool (each batch's samples decoded
//! and augmented in parallel, two batches at once so no thread idles at a
//! batch's end) and delivered in order into a bounded queue, so decoding
//! overlaps the model step.
//!
//! Pairs: for `moco`/`moco-geo` the key is a second augmentation of the
//! query image; for the temporal variants the key image is a uniformly drawn
//! OTHER view of the same location (the same image when the location has only
//! one). The epoch iterates over images (as the paper's code does, so places
//! with many views come up more often), or over locations with
//! `SampleBy::Location` (one random view per place per epoch).
//!
//! Determinism: the epoch order comes from (seed, epoch) and each sample's
//! randomness from (seed, epoch, position), so batches are identical whatever
//! the thread count, and a run resumed at a batch boundary sees exactly the
//! batches an uninterrupted run would.

use std::cell::Cell;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tch::Tensor;

use super::augment::{augment_bands_into, augment_into, AugConfig, ViewTransform};
use super::band_image::SourceImage;
use super::bands::InputSpec;
use super::decode::{catch_panic, DecodeOptions};
use super::decoded_cache::{apply_prepared_into, prepare_view, CacheBudget, DecodedCache};
use super::location_index::LocationIndex;
use super::manifest::Manifest;
use super::source::ImageSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairMode {
    /// Two augmentations of one image (MoCo-v2).
    SameImage,
    /// Query and key from two different views of a place (temporal positives).
    Temporal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleBy {
    Image,
    Location,
}

impl crate::settings::Choice for SampleBy {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (SampleBy::Image, "image", ""),
        (SampleBy::Location, "location", ""),
    ];
}
crate::settings::choice_by_name!(SampleBy);

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch: usize,
    pub aug: AugConfig,
    pub pairs: PairMode,
    pub sample_by: SampleBy,
    pub seed: u64,
    /// Batches prepared ahead of the training step.
    pub prefetch: usize,
    pub decode: DecodeOptions,
    /// Attach `geo_cluster` labels (every row must have one).
    pub geo_labels: bool,
    /// Build batches in pinned host memory, for asynchronous copies to a GPU.
    pub pin_memory: bool,
    /// What an unreadable image does to a batch.
    pub on_bad_image: BadImagePolicy,
    /// This process's part of every batch in data-parallel training.
    pub shard: Shard,
    /// The input channels and their radiometry and normalisation
    /// ([`InputSpec::rgb`]: the paper's RGB input).
    pub input: InputSpec,
    /// Where the images are read from: the files, or a pack.
    pub source: ImageSource,
}

/// One rank's part of each global batch (PyTorch's `DistributedSampler`
/// with `drop_last`, but contiguous): with `world` ranks and the global
/// batch `B = LoaderConfig::batch`, rank `r` gets the `b = B / world`
/// samples `order[i*B + r*b .. i*B + (r+1)*b]` of global batch `i`, each
/// with the randomness of its global position, so the ranks' parts put
/// together are exactly the one-process batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Default for Shard {
    /// The whole batch: a single-process run.
    fn default() -> Self {
        Self { rank: 0, world: 1 }
    }
}

/// What to do with an image that cannot be decoded (missing, empty,
/// truncated, not an image, a decompression bomb, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadImagePolicy {
    /// Leave the image out and report it. Pretraining replaces the sample by
    /// another one (drawn from the sample's own seed, so runs stay
    /// reproducible); evaluation ([`ImageLoader`]) drops the row, and every
    /// output of the command then leaves that row out.
    #[default]
    Skip,
    /// Stop with the decoder's error.
    Fail,
}

impl crate::settings::Choice for BadImagePolicy {
    /// The help is the variants' docs as one line each.
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            BadImagePolicy::Skip,
            "skip",
            "Leave the image out and report it. Pretraining replaces the sample by another one \
             (drawn from the sample's own seed, so runs stay reproducible); evaluation \
             ([`ImageLoader`]) drops the row, and every output of the command then leaves that \
             row out",
        ),
        (
            BadImagePolicy::Fail,
            "fail",
            "Stop with the decoder's error",
        ),
    ];
}
crate::settings::choice_by_name!(BadImagePolicy);

/// An image that could not be used: its manifest path and the decoder's
/// message.
#[derive(Debug, Clone, PartialEq)]
pub struct BadImage {
    pub path: String,
    pub error: String,
}

/// An error of manifest row `row`, naming its image file as the decoder's
/// errors do.
fn file_error(manifest: &Manifest, row: usize, e: impl std::fmt::Display) -> anyhow::Error {
    let path = manifest.resolve(&manifest.records[row]);
    anyhow::anyhow!("{}: {e}", path.display())
}

/// Replacement draws per sample before a batch gives up (an archive whose
/// images are nearly all broken stops instead of spinning).
const REPLACEMENT_TRIES: usize = 16;

/// A new [n, channels, size, size] f32 batch tensor that the augmentation
/// writes into directly (no copy from a Vec), in pinned memory when asked.
pub fn image_batch_tensor(
    n: usize,
    channels: usize,
    size: u32,
    pinned: bool,
) -> anyhow::Result<Tensor> {
    let dims = [n as i64, channels as i64, size as i64, size as i64];
    Ok(if pinned {
        crate::model::torch_ext::empty_pinned(&dims)?
    } else {
        Tensor::empty(dims, (tch::Kind::Float, tch::Device::Cpu))
    })
}

/// The f32 values of a contiguous CPU tensor made by [`image_batch_tensor`].
fn f32_values(t: &mut Tensor) -> &mut [f32] {
    assert!(t.kind() == tch::Kind::Float && t.device() == tch::Device::Cpu && t.is_contiguous());
    let n = t.numel();
    // SAFETY: a contiguous f32 CPU tensor of `n` elements that `t` owns and
    // that nothing else references while the slice lives (borrowed from t).
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) }
}

/// One batch, ready for the model.
pub struct PairBatch {
    /// [B, C, S, S] normalised query images.
    pub query: Tensor,
    /// [B, C, S, S] normalised key images.
    pub key: Tensor,
    /// [B] geo cluster of each query, when asked for.
    pub geo: Option<Tensor>,
    pub rows: Vec<usize>,
    pub key_rows: Vec<usize>,
    /// Images that were replaced under [`BadImagePolicy::Skip`].
    pub bad: Vec<BadImage>,
    /// Pixels of the query and key views that are NoData (or masked) and
    /// hold [`super::bands::NODATA_FILL`], over the whole batch.
    pub nodata_pixels: u64,
}

/// The key image for anchor `row`.
pub fn key_row<R: Rng>(index: &LocationIndex, row: usize, mode: PairMode, rng: &mut R) -> usize {
    match mode {
        PairMode::SameImage => row,
        PairMode::Temporal => match index.other_view_count(row) {
            0 => row,
            n => index.other_view(row, rng.gen_range(0..n)),
        },
    }
}

/// SplitMix64 of the seed with the epoch and position, so that each
/// sample's stream is independent and reproducible.
fn sample_seed(seed: u64, epoch: u64, position: u64) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ position.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct PairLoader {
    manifest: Arc<Manifest>,
    index: Arc<LocationIndex>,
    config: LoaderConfig,
}

impl PairLoader {
    pub fn new(manifest: Manifest, config: LoaderConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.batch > 0, "batch size must be positive");
        let Shard { rank, world } = config.shard;
        anyhow::ensure!(
            world > 0 && rank < world && config.batch % world == 0,
            "rank {rank} of {world}: the global batch {} does not split evenly over the ranks",
            config.batch
        );
        if config.geo_labels {
            if let Some(r) = manifest.records.iter().find(|r| r.geo_cluster.is_none()) {
                anyhow::bail!(
                    "{}: row with path {} has no geo_cluster; run `geossl cluster` on the manifest first",
                    manifest.source.display(),
                    r.path
                );
            }
        }
        let index = LocationIndex::build(&manifest);
        let loader = Self {
            manifest: Arc::new(manifest),
            index: Arc::new(index),
            config,
        };
        anyhow::ensure!(
            loader.batches_per_epoch() > 0,
            "{} anchors per epoch are fewer than one batch of {} (drop_last)",
            loader.anchors_per_epoch(),
            loader.config.batch
        );
        Ok(loader)
    }

    pub fn index(&self) -> &LocationIndex {
        &self.index
    }

    pub fn anchors_per_epoch(&self) -> usize {
        match self.config.sample_by {
            SampleBy::Image => self.manifest.records.len(),
            SampleBy::Location => self.index.len(),
        }
    }

    /// Full (global) batches per epoch (the last partial batch is
    /// dropped), whatever the shard.
    pub fn batches_per_epoch(&self) -> usize {
        self.anchors_per_epoch() / self.config.batch
    }

    /// Samples of this rank in each batch: the global batch over the ranks.
    pub fn rank_batch(&self) -> usize {
        self.config.batch / self.config.shard.world
    }

    /// The anchor rows of `epoch`, shuffled.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(self.config.seed, epoch, u64::MAX));
        let mut order: Vec<usize> = match self.config.sample_by {
            SampleBy::Image => (0..self.manifest.records.len()).collect(),
            SampleBy::Location => self
                .index
                .locations
                .iter()
                .map(|l| l.views[rng.gen_range(0..l.views.len())])
                .collect(),
        };
        order.shuffle(&mut rng);
        order
    }

    /// Batches of `epoch` from batch `first` on (this shard's part of
    /// each), prepared in the background.
    pub fn epoch(&self, epoch: u64, first: usize) -> BatchIter<PairBatch> {
        let order = self.epoch_order(epoch);
        let (manifest, index, config) = (
            self.manifest.clone(),
            self.index.clone(),
            self.config.clone(),
        );
        let part = self.rank_batch();
        prefetch(first..self.batches_per_epoch(), config.prefetch, move |b| {
            let start = b * config.batch + config.shard.rank * part;
            let anchors = &order[start..start + part];
            make_batch(&manifest, &index, &config, epoch, start, anchors)
        })
    }
}

/// Batches being made at once. With one batch at a time, every batch ends
/// with a tail where the last samples finish on some threads while the
/// others wait for the next batch to start (at 2 threads and images of
/// 1-10 Mpx, a fifth of the time); with two, the idle threads start on the
/// next batch (rayon steals its samples) while the tail of the current one
/// finishes.
const BATCHES_IN_FLIGHT: usize = 2;

/// Runs `make` for each batch number of `batches` on the rayon pool, up to
/// [`BATCHES_IN_FLIGHT`] batches at once, and delivers them in order from a
/// producer thread that keeps up to `depth` finished batches ahead of the
/// consumer. The first error ends the stream (after it is delivered); a
/// panic in `make` is such an error, so a stream never ends early in
/// silence. Each batch depends on its number alone, so the stream is the
/// same whatever the overlap.
pub fn prefetch<T, F>(batches: std::ops::Range<usize>, depth: usize, make: F) -> BatchIter<T>
where
    T: Send + 'static,
    F: Fn(usize) -> anyhow::Result<T> + Send + Sync + 'static,
{
    let (tx, rx) = sync_channel(depth.max(1));
    let make = Arc::new(make);
    let handle = std::thread::spawn(move || {
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = batches.start;
        loop {
            while in_flight.len() < BATCHES_IN_FLIGHT && next < batches.end {
                in_flight.push_back((next, start_batch(next, make.clone())));
                next += 1;
            }
            let Some((b, done)) = in_flight.pop_front() else {
                return;
            };
            let batch = done.recv().unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "the loader lost batch {b} (a worker thread stopped)"
                ))
            });
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    });
    BatchIter {
        rx,
        handle: Some(handle),
    }
}

/// Makes batch `b` on the rayon pool; its result (or its panic, as an
/// error) arrives on the returned channel.
fn start_batch<T, F>(b: usize, make: Arc<F>) -> Receiver<anyhow::Result<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> anyhow::Result<T> + Send + Sync + 'static,
{
    let (done, result) = sync_channel(1);
    rayon::spawn(move || {
        let batch = catch_panic(|| make(b)).unwrap_or_else(|panic| {
            Err(anyhow::anyhow!(
                "the loader panicked while preparing batch {b}: {panic}"
            ))
        });
        // Let go of the loader before the batch is delivered: once a
        // stream has ended, nothing of its loader is alive any more (a
        // decoded-image cache's memory is back in its budget; the task
        // dropped it after sending, racing the consumer: seen in a test).
        drop(make);
        // The consumer may be gone (the stream was dropped): nothing to do.
        let _ = done.send(batch);
    });
    result
}

fn make_batch(
    manifest: &Manifest,
    index: &LocationIndex,
    config: &LoaderConfig,
    epoch: u64,
    first_position: usize,
    anchors: &[usize],
) -> anyhow::Result<PairBatch> {
    let s = config.aug.size as usize;
    let c = config.input.channels();
    let plane = c * s * s;
    let n = anchors.len();
    let mut query = image_batch_tensor(n, c, config.aug.size, config.pin_memory)?;
    let mut key = image_batch_tensor(n, c, config.aug.size, config.pin_memory)?;
    let samples: Vec<(usize, usize, Vec<BadImage>, u64)> = super::collect_in_order(
        f32_values(&mut query)
        .par_chunks_mut(plane)
        .zip(f32_values(&mut key).par_chunks_mut(plane))
        .zip(anchors.par_iter().enumerate())
        .map(|((q, k), (i, &row))| {
            let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(
                config.seed,
                epoch,
                (first_position + i) as u64,
            ));
            let mut bad = Vec::new();
            let mut anchor = row;
            for _ in 0..REPLACEMENT_TRIES {
                let krow = key_row(index, anchor, config.pairs, &mut rng);
                // The row being worked on, blamed for an error or a panic.
                let current = Cell::new(anchor);
                let outcome = catch_panic(|| -> anyhow::Result<u64> {
                    let load = |r: usize| {
                        current.set(r);
                        config.source.load(
                            manifest,
                            r,
                            &config.input,
                            &config.decode,
                            config.aug.pre_size,
                        )
                    };
                    let qimg = load(anchor)?;
                    let kimg = match krow == anchor {
                        true => None,
                        false => Some(load(krow)?),
                    };
                    current.set(anchor);
                    let qvalid = augment_source_into(&qimg, config, &mut rng, q)
                        .map_err(|e| file_error(manifest, anchor, e))?;
                    current.set(krow);
                    let kvalid =
                        augment_source_into(kimg.as_ref().unwrap_or(&qimg), config, &mut rng, k)
                            .map_err(|e| file_error(manifest, krow, e))?;
                    Ok((2 * s * s - qvalid - kvalid) as u64)
                });
                let failed = current.get();
                let e = match outcome {
                    Ok(Ok(nodata)) => return Ok((anchor, krow, bad, nodata)),
                    Ok(Err(e)) => e,
                    Err(panic) => file_error(manifest, failed, format!("panicked: {panic}")),
                };
                if config.on_bad_image == BadImagePolicy::Fail {
                    return Err(e);
                }
                bad.push(BadImage {
                    path: manifest.records[failed].path.clone(),
                    error: e.to_string(),
                });
                anchor = rng.gen_range(0..manifest.records.len());
            }
            anyhow::bail!(
                "{}: {REPLACEMENT_TRIES} images in a row could not be read (last: {}); is the image folder right?",
                manifest.source.display(),
                bad.last().map_or("", |b| b.error.as_str())
            )
        }),
    )?;
    let rows: Vec<usize> = samples.iter().map(|s| s.0).collect();
    let key_rows: Vec<usize> = samples.iter().map(|s| s.1).collect();
    let nodata_pixels = samples.iter().map(|s| s.3).sum();
    let bad: Vec<BadImage> = samples.into_iter().flat_map(|s| s.2).collect();
    let geo = config.geo_labels.then(|| {
        let labels: Vec<i64> = rows
            .iter()
            .map(|&r| manifest.records[r].geo_cluster.unwrap_or(0) as i64)
            .collect();
        Tensor::from_slice(&labels)
    });
    Ok(PairBatch {
        query,
        key,
        geo,
        rows,
        key_rows,
        bad,
        nodata_pixels,
    })
}

/// One aug+ view of a decoded image into `out` (C x S x S): the RGB8 path
/// for [`SourceImage::Rgb8`], the C-band one otherwise; returns the view's
/// valid pixels.
fn augment_source_into(
    img: &SourceImage,
    config: &LoaderConfig,
    rng: &mut ChaCha8Rng,
    out: &mut [f32],
) -> Result<usize, super::augment::ResampleError> {
    match img {
        SourceImage::Rgb8(rgb) => {
            augment_into(rgb, &config.aug, rng, out)?;
            Ok((config.aug.size * config.aug.size) as usize)
        }
        SourceImage::Bands(b) => augment_bands_into(b, &config.aug, &config.input, rng, out),
    }
}

/// Single-view batches of chosen rows, for evaluation, probes and
/// fine-tuning: each image through a [`ViewTransform`], in row order or
/// shuffled per epoch, with the same determinism as [`PairLoader`].
#[derive(Clone)]
pub struct ImageLoader {
    manifest: Arc<Manifest>,
    rows: Arc<Vec<usize>>,
    pub batch: usize,
    pub transform: ViewTransform,
    /// Shuffle the rows every epoch (training) or keep their order.
    pub shuffle: bool,
    /// Drop the last partial batch (training) or keep it (evaluation).
    pub drop_last: bool,
    pub seed: u64,
    pub prefetch: usize,
    pub decode: DecodeOptions,
    /// Build batches in pinned host memory (for a GPU).
    pub pin_memory: bool,
    /// Unreadable rows: dropped from the batch and listed in
    /// [`ImageBatch::skipped`] (skip), or the error (fail).
    pub on_bad_image: BadImagePolicy,
    /// The input channels, radiometry and normalisation.
    pub input: InputSpec,
    /// Where the images are read from: the files, or a pack.
    pub source: ImageSource,
    /// Rows' images kept between epochs after the view's first step
    /// ([`super::decoded_cache`]); `None`: decoded on every read.
    pub cache: Option<Arc<DecodedCache>>,
}

/// One single-view batch.
pub struct ImageBatch {
    /// [B, C, S, S] normalised images, B = `rows.len()`.
    pub images: Tensor,
    /// Manifest rows of the images, in the loader's order; rows that could
    /// not be read are not among them.
    pub rows: Vec<usize>,
    /// Rows of this batch left out under [`BadImagePolicy::Skip`], with why.
    pub skipped: Vec<(usize, BadImage)>,
    /// Pixels of the kept images that are NoData (or masked) and hold
    /// [`super::bands::NODATA_FILL`].
    pub nodata_pixels: u64,
}

impl ImageLoader {
    /// An evaluation loader: `rows` in order, every row once.
    pub fn new(
        manifest: Arc<Manifest>,
        rows: Vec<usize>,
        transform: ViewTransform,
        batch: usize,
        input: InputSpec,
    ) -> Self {
        Self {
            manifest,
            rows: Arc::new(rows),
            batch: batch.max(1),
            transform,
            shuffle: false,
            drop_last: false,
            seed: 0,
            prefetch: 4,
            decode: DecodeOptions::default(),
            pin_memory: false,
            on_bad_image: BadImagePolicy::default(),
            input,
            source: ImageSource::Files,
            cache: None,
        }
    }

    /// The same loader keeping each row's decoded image between epochs
    /// (for a loader read more than once: a probe's or fine-tuning's
    /// training rows), in a new cache under the process's budget
    /// ([`CacheBudget::process`]), unless it has one.
    pub fn cached(self) -> Self {
        if self.cache.is_some() {
            return self;
        }
        let cache = DecodedCache::new(self.manifest.records.len(), CacheBudget::process());
        self.with_cache(cache)
    }

    /// The same loader keeping decoded images in `cache` (one made for
    /// this manifest and this loader's view, input, source and decoding:
    /// the cache does not check).
    pub fn with_cache(mut self, cache: Arc<DecodedCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The same loader decoding with `decode`.
    pub fn with_decode(mut self, decode: DecodeOptions) -> Self {
        self.decode = decode;
        self
    }

    /// The same loader reading its images from `source`.
    pub fn with_source(mut self, source: ImageSource) -> Self {
        self.source = source;
        self
    }

    /// The same loader with `policy` for unreadable rows.
    pub fn on_bad_image(mut self, policy: BadImagePolicy) -> Self {
        self.on_bad_image = policy;
        self
    }

    /// A training loader: shuffled every epoch, last partial batch dropped.
    pub fn for_training(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.drop_last = true;
        self.seed = seed;
        self
    }

    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Rows an epoch reads (kept or skipped): all of them, or the full
    /// batches' with `drop_last`.
    pub fn rows_per_epoch(&self) -> usize {
        if self.drop_last {
            self.batches_per_epoch() * self.batch
        } else {
            self.rows.len()
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.rows.len() / self.batch
        } else {
            self.rows.len().div_ceil(self.batch)
        }
    }

    /// The batches of `epoch`, prepared in the background.
    pub fn epoch(&self, epoch: u64) -> BatchIter<ImageBatch> {
        let mut order: Vec<usize> = self.rows.to_vec();
        if self.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(sample_seed(
                self.seed,
                epoch,
                u64::MAX,
            )));
        }
        let this = self.clone();
        prefetch(0..self.batches_per_epoch(), self.prefetch, move |b| {
            let start = b * this.batch;
            let rows = &order[start..(start + this.batch).min(order.len())];
            let s = this.transform.size() as usize;
            let c = this.input.channels();
            let plane = c * s * s;
            let mut images = image_batch_tensor(rows.len(), c, s as u32, this.pin_memory)?;
            // Written in place; a row that cannot be read leaves its plane
            // unwritten and is cut out below, so images and rows stay
            // aligned.
            let read: Vec<Result<u64, BadImage>> = super::collect_in_order(
                f32_values(&mut images)
                    .par_chunks_mut(plane)
                    .zip(rows.par_iter().enumerate())
                    .map(
                        |(out, (i, &row))| -> anyhow::Result<Result<u64, BadImage>> {
                            let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(
                                this.seed,
                                epoch,
                                (start + i) as u64,
                            ));
                            let m = &this.manifest;
                            let rec = &m.records[row];
                            // The last net: a decoder or transform panic is this
                            // row's error, under the same policy as any other.
                            let read = catch_panic(|| -> anyhow::Result<u64> {
                                let load = || {
                                    this.source.load(
                                        m,
                                        row,
                                        &this.input,
                                        &this.decode,
                                        this.transform.resize_to(),
                                    )
                                };
                                let view = &this.transform;
                                let valid = match &this.cache {
                                    None => {
                                        view.apply_source_into(&load()?, &this.input, &mut rng, out)
                                    }
                                    Some(cache) => {
                                        let img =
                                            cache.get_or_load(row, || -> anyhow::Result<_> {
                                                let img = load()?;
                                                prepare_view(view, img)
                                                    .map_err(|e| file_error(m, row, e))
                                            })?;
                                        apply_prepared_into(view, &img, &this.input, &mut rng, out)
                                    }
                                }
                                .map_err(|e| file_error(m, row, e))?;
                                Ok((s * s - valid) as u64)
                            })
                            .unwrap_or_else(|panic| {
                                Err(file_error(m, row, format!("panicked: {panic}")))
                            });
                            match read {
                                Ok(nodata) => Ok(Ok(nodata)),
                                Err(e) if this.on_bad_image == BadImagePolicy::Fail => {
                                    Err(anyhow::anyhow!(
                                        "{}:{}: {e} ({} skip leaves such rows out)",
                                        m.source.display(),
                                        row + 2,
                                        crate::settings::name("on_bad_image")
                                    ))
                                }
                                Err(e) => Ok(Err(BadImage {
                                    path: rec.path.clone(),
                                    error: e.to_string(),
                                })),
                            }
                        },
                    ),
            )?;
            let mut kept = Vec::with_capacity(rows.len());
            let mut skipped = Vec::new();
            let mut nodata_pixels = 0;
            for (i, r) in read.into_iter().enumerate() {
                match r {
                    Ok(nodata) => {
                        kept.push(i as i64);
                        nodata_pixels += nodata;
                    }
                    Err(b) => skipped.push((rows[i], b)),
                }
            }
            if !skipped.is_empty() {
                let mut compact = image_batch_tensor(kept.len(), c, s as u32, this.pin_memory)?;
                if !kept.is_empty() {
                    compact.f_copy_(&images.index_select(0, &Tensor::from_slice(&kept)))?;
                }
                images = compact;
            }
            Ok(ImageBatch {
                images,
                rows: kept.iter().map(|&i| rows[i as usize]).collect(),
                skipped,
                nodata_pixels,
            })
        })
    }
}

/// Batches as they become ready; dropping it stops the producer.
pub struct BatchIter<T> {
    rx: Receiver<anyhow::Result<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T> Iterator for BatchIter<T> {
    type Item = anyhow::Result<T>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            // The producer is gone: finished, or died in a panic, which
            // must not pass for the end of the epoch (a shorter stream
            // would misalign every per-row output).
            Err(_) => match self.handle.take()?.join() {
                Ok(()) => None,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    Some(Err(anyhow::anyhow!(
                        "the batch loader thread panicked ({message}); the batches after it are missing"
                    )))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{self, SynthConfig};

    fn world(dir: &std::path::Path) -> Manifest {
        synth::generate(
            dir,
            &SynthConfig {
                locations: 30,
                max_views: 4,
                size: 16,
                seed: 2,
                jpeg_quality: 0,
            },
        )
        .unwrap()
    }

    fn config(pairs: PairMode, batch: usize) -> LoaderConfig {
        LoaderConfig {
            batch,
            aug: AugConfig::aug_plus(12),
            pairs,
            sample_by: SampleBy::Image,
            seed: 5,
            prefetch: 2,
            decode: DecodeOptions::default(),
            geo_labels: false,
            pin_memory: false,
            on_bad_image: BadImagePolicy::Skip,
            shard: Shard::default(),
            input: InputSpec::rgb(),
            source: ImageSource::Files,
        }
    }

    /// The world with its row 5 pointing at a band-interleaved tiled TIFF,
    /// which makes the `tiff` crate panic.
    /// The world with its row 5 pointing at a TIFF header followed by junk,
    /// which GDAL cannot open.
    fn world_with_an_unreadable_image(dir: &std::path::Path) -> (Manifest, String) {
        let mut m = world(dir);
        std::fs::write(dir.join("junk.tif"), b"II*\0junk, not a raster").unwrap();
        m.records[5].path = "junk.tif".into();
        (m, dir.join("junk.tif").display().to_string())
    }

    #[test]
    fn an_unreadable_image_is_a_bad_image_of_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let (m, file) = world_with_an_unreadable_image(dir.path());
        let n = m.records.len();
        let loader = PairLoader::new(m.clone(), config(PairMode::SameImage, 8)).unwrap();
        let batches: Vec<PairBatch> = loader.epoch(0, 0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), n / 8, "every batch of the epoch");
        let bad: Vec<&BadImage> = batches.iter().flat_map(|b| &b.bad).collect();
        let in_epoch = loader.epoch_order(0)[..(n / 8) * 8].contains(&5);
        assert_eq!(bad.is_empty(), !in_epoch);
        for b in &bad {
            assert_eq!(b.path, "junk.tif");
            assert!(
                b.error
                    .starts_with(&format!("{file}: not a raster GDAL can read")),
                "{}",
                b.error
            );
        }
        // The replaced sample is another row, and no batch holds row 5.
        assert!(batches.iter().all(|b| !b.rows.contains(&5)));

        let mut cfg = config(PairMode::SameImage, n);
        cfg.on_bad_image = BadImagePolicy::Fail;
        let err = PairLoader::new(m.clone(), cfg)
            .unwrap()
            .epoch(0, 0)
            .next()
            .unwrap()
            .err()
            .expect("fail stops at the image");
        assert!(
            err.to_string()
                .starts_with(&format!("{file}: not a raster GDAL can read")),
            "{err}"
        );

        // Evaluation: under skip the row leaves the batch and is listed
        // with why; under fail it is the error, naming the file.
        let eval = ImageLoader::new(
            Arc::new(m),
            (0..8).collect(),
            ViewTransform::CenterCrop { size: 12 },
            8,
            InputSpec::rgb(),
        );
        let batch = eval.epoch(0).next().unwrap().unwrap();
        assert_eq!(batch.rows, vec![0, 1, 2, 3, 4, 6, 7]);
        assert_eq!(batch.images.size(), vec![7, 3, 12, 12]);
        assert_eq!(batch.skipped.len(), 1);
        assert_eq!(batch.skipped[0].0, 5);
        assert!(
            batch.skipped[0]
                .1
                .error
                .starts_with(&format!("{file}: not a raster GDAL can read")),
            "{}",
            batch.skipped[0].1.error
        );
        let err = eval
            .on_bad_image(BadImagePolicy::Fail)
            .epoch(0)
            .next()
            .unwrap()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("{file}: not a raster GDAL can read")),
            "{err}"
        );
    }

    #[test]
    fn batches_in_flight_together_arrive_in_order() {
        // Later batches take less time, so with two in flight on two or
        // more threads each next batch finishes before the one ahead of it.
        let got: Vec<usize> = prefetch(0..6, 1, |b| {
            std::thread::sleep(std::time::Duration::from_millis((6 - b as u64) * 5));
            Ok(b)
        })
        .map(|b| b.unwrap())
        .collect();
        assert_eq!(got, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_batch_ends_the_stream_with_an_error() {
        let mut it = prefetch(0..3, 1, |b| {
            if b == 1 {
                panic!("batch maker bug");
            }
            Ok(b)
        });
        assert_eq!(it.next().unwrap().unwrap(), 0);
        let err = it.next().unwrap().unwrap_err().to_string();
        assert!(
            err.starts_with("the loader panicked while preparing batch 1: batch maker bug"),
            "{err}"
        );
        assert!(it.next().is_none());
    }

    #[test]
    fn the_methods_build_the_right_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let m = world(dir.path());
        let index = LocationIndex::build(&m);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for row in 0..m.records.len() {
            assert_eq!(key_row(&index, row, PairMode::SameImage, &mut rng), row);
            let k = key_row(&index, row, PairMode::Temporal, &mut rng);
            assert_eq!(
                index.location_of(k),
                index.location_of(row),
                "TP keys come from the same location"
            );
            if index.other_view_count(row) > 0 {
                assert_ne!(k, row, "a different image whenever one exists");
            } else {
                assert_eq!(k, row);
            }
        }
        // Uniform over the other views.
        let row = (0..m.records.len())
            .find(|&r| index.other_view_count(r) == 3)
            .expect("a place with 4 views");
        let mut counts = std::collections::HashMap::new();
        for _ in 0..3000 {
            *counts
                .entry(key_row(&index, row, PairMode::Temporal, &mut rng))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(
            counts.values().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn batches_are_deterministic_and_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let m = world(dir.path());
        let n = m.records.len();
        let loader = PairLoader::new(m, config(PairMode::Temporal, 8)).unwrap();
        assert_eq!(loader.batches_per_epoch(), n / 8);
        let all: Vec<PairBatch> = loader.epoch(1, 0).map(|b| b.unwrap()).collect();
        assert_eq!(all.len(), n / 8);
        assert_eq!(all[0].query.size(), vec![8, 3, 12, 12]);
        let again: Vec<PairBatch> = loader.epoch(1, 1).map(|b| b.unwrap()).collect();
        assert_eq!(again.len(), all.len() - 1);
        assert!(again[0].query.equal(&all[1].query) && again[0].key.equal(&all[1].key));
        assert_eq!(again[0].key_rows, all[1].key_rows);
        let other_epoch = loader.epoch(2, 0).next().unwrap().unwrap();
        assert_ne!(other_epoch.rows, all[0].rows);
        // Every anchor appears at most once per epoch.
        let mut rows: Vec<usize> = all.iter().flat_map(|b| b.rows.clone()).collect();
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), (n / 8) * 8);
    }

    #[test]
    fn the_shards_of_a_batch_put_together_are_the_one_process_batch() {
        let dir = tempfile::tempdir().unwrap();
        let m = world(dir.path());
        let mut cfg = config(PairMode::Temporal, 8);
        cfg.geo_labels = true;
        let mut m2 = m.clone();
        m2.records
            .iter_mut()
            .enumerate()
            .for_each(|(i, r)| r.geo_cluster = Some((i % 3) as u32));
        let whole = PairLoader::new(m2.clone(), cfg.clone()).unwrap();
        let shards: Vec<PairLoader> = (0..2)
            .map(|rank| {
                let shard = Shard { rank, world: 2 };
                PairLoader::new(
                    m2.clone(),
                    LoaderConfig {
                        shard,
                        ..cfg.clone()
                    },
                )
                .unwrap()
            })
            .collect();
        assert_eq!(shards[1].batches_per_epoch(), whole.batches_per_epoch());
        assert_eq!(shards[1].rank_batch(), 4);
        // From a mid-epoch batch too (a resume).
        let expected: Vec<PairBatch> = whole.epoch(3, 2).map(|b| b.unwrap()).collect();
        let parts: Vec<Vec<PairBatch>> = shards
            .iter()
            .map(|s| s.epoch(3, 2).map(|b| b.unwrap()).collect())
            .collect();
        assert_eq!(parts[0].len(), expected.len());
        for (i, e) in expected.iter().enumerate() {
            let (a, b) = (&parts[0][i], &parts[1][i]);
            assert_eq!(a.query.size(), vec![4, 3, 12, 12]);
            let cat = |f: fn(&PairBatch) -> &Tensor| Tensor::cat(&[f(a), f(b)], 0);
            assert!(cat(|p| &p.query).equal(&e.query), "queries of batch {i}");
            assert!(cat(|p| &p.key).equal(&e.key), "keys of batch {i}");
            let geo = Tensor::cat(&[a.geo.as_ref().unwrap(), b.geo.as_ref().unwrap()], 0);
            assert!(geo.equal(e.geo.as_ref().unwrap()));
            assert_eq!([a.rows.clone(), b.rows.clone()].concat(), e.rows);
            assert_eq!(
                [a.key_rows.clone(), b.key_rows.clone()].concat(),
                e.key_rows
            );
        }
        let odd = LoaderConfig {
            shard: Shard { rank: 0, world: 3 },
            ..cfg
        };
        let err = PairLoader::new(m2, odd).err().unwrap().to_string();
        assert_eq!(
            err,
            "rank 0 of 3: the global batch 8 does not split evenly over the ranks"
        );
    }

    #[test]
    fn geo_labels_required_and_sample_by_location() {
        let dir = tempfile::tempdir().unwrap();
        let m = world(dir.path());
        let mut cfg = config(PairMode::SameImage, 4);
        cfg.geo_labels = true;
        let err = PairLoader::new(m.clone(), cfg.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("has no geo_cluster; run `geossl cluster`"),
            "{err}"
        );
        let mut m2 = m.clone();
        m2.records
            .iter_mut()
            .enumerate()
            .for_each(|(i, r)| r.geo_cluster = Some((i % 3) as u32));
        let loader = PairLoader::new(m2, cfg).unwrap();
        let b = loader.epoch(0, 0).next().unwrap().unwrap();
        let labels: Vec<i64> = b.geo.unwrap().try_into().unwrap();
        assert_eq!(
            labels,
            b.rows.iter().map(|&r| (r % 3) as i64).collect::<Vec<_>>()
        );

        let mut cfg = config(PairMode::Temporal, 4);
        cfg.sample_by = SampleBy::Location;
        let loader = PairLoader::new(m, cfg).unwrap();
        assert_eq!(loader.anchors_per_epoch(), 30);
        let order = loader.epoch_order(0);
        let locs: std::collections::HashSet<_> = order
            .iter()
            .map(|&r| loader.index().location_of(r))
            .collect();
        assert_eq!(locs.len(), 30, "one view per location");
    }

    #[test]
    fn image_loader_covers_rows_in_order_or_shuffled() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(world(dir.path()));
        let rows: Vec<usize> = (0..m.records.len()).step_by(2).collect();
        let eval = ImageLoader::new(
            m.clone(),
            rows.clone(),
            ViewTransform::CenterCrop { size: 12 },
            8,
            InputSpec::rgb(),
        );
        let batches: Vec<ImageBatch> = eval.epoch(0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), rows.len().div_ceil(8));
        let seen: Vec<usize> = batches.iter().flat_map(|b| b.rows.clone()).collect();
        assert_eq!(seen, rows, "evaluation keeps every row, in order");
        assert_eq!(batches[0].images.size(), vec![8, 3, 12, 12]);
        let again: Vec<ImageBatch> = eval.epoch(3).map(|b| b.unwrap()).collect();
        assert!(
            again[0].images.equal(&batches[0].images),
            "center crops are fixed"
        );

        let train = eval.clone().for_training(1);
        assert_eq!(train.batches_per_epoch(), rows.len() / 8);
        let e0: Vec<usize> = train.epoch(0).flat_map(|b| b.unwrap().rows).collect();
        let e1: Vec<usize> = train.epoch(1).flat_map(|b| b.unwrap().rows).collect();
        assert_ne!(e0, e1, "a new order every epoch");
        let mut sorted = e0.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), e0.len(), "no row twice in an epoch");
    }

    #[test]
    fn image_loader_drops_unreadable_rows_and_keeps_images_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = world(dir.path());
        // Row 5 points at a file that is not an image.
        std::fs::write(dir.path().join("broken.jpg"), b"not a JPEG").unwrap();
        m.records[5].path = "broken.jpg".into();
        let m = Arc::new(m);
        let rows: Vec<usize> = (0..12).collect();
        let view = ViewTransform::CenterCrop { size: 12 };
        let skip = ImageLoader::new(m.clone(), rows.clone(), view, 4, InputSpec::rgb());
        let batches: Vec<ImageBatch> = skip.epoch(0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3, "every batch comes, the short one too");
        assert_eq!(batches[1].rows, vec![4, 6, 7]);
        assert_eq!(batches[1].images.size(), vec![3, 3, 12, 12]);
        assert_eq!(batches[1].skipped.len(), 1);
        assert_eq!(batches[1].skipped[0].0, 5);
        assert_eq!(batches[1].skipped[0].1.path, "broken.jpg");
        // Each image is the one of its row: the same as a loader of the
        // readable rows alone.
        let clean: Vec<usize> = rows.iter().copied().filter(|&r| r != 5).collect();
        let reference = ImageLoader::new(m.clone(), clean.clone(), view, 1, InputSpec::rgb());
        let expected: Vec<Tensor> = reference.epoch(0).map(|b| b.unwrap().images).collect();
        let got: Vec<Tensor> = batches.iter().flat_map(|b| b.images.split(1, 0)).collect();
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(g.equal(e), "image {i} (row {}) differs", clean[i]);
        }
        // A batch with nothing readable is empty, not missing.
        let only_bad = ImageLoader::new(m.clone(), vec![5], view, 4, InputSpec::rgb());
        let b = only_bad.epoch(0).next().unwrap().unwrap();
        assert_eq!(
            (b.rows.len(), b.images.size()[0], b.skipped.len()),
            (0, 0, 1)
        );

        let fail = skip.clone().on_bad_image(BadImagePolicy::Fail);
        let err = fail
            .epoch(0)
            .find_map(|b| b.err())
            .expect("fail stops")
            .to_string();
        assert!(
            err.contains(":7: ") && err.contains("broken.jpg") && err.contains("on_bad_image skip"),
            "names the manifest line and the file: {err}"
        );
    }

    #[test]
    fn a_panicking_producer_is_an_error_not_the_end_of_the_epoch() {
        let mut batches = prefetch(0..4, 1, |b| {
            assert!(b < 2, "batch {b} exploded");
            Ok(b)
        });
        assert_eq!(batches.next().unwrap().unwrap(), 0);
        assert_eq!(batches.next().unwrap().unwrap(), 1);
        let err = batches.next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("panicked") && err.contains("batch 2 exploded"),
            "{err}"
        );
        assert!(batches.next().is_none());
    }

    #[test]
    fn thirteen_band_rasters_make_c_band_batches() {
        use crate::data::band_image::tests::{manifest_of, write_raster};
        use crate::data::bands::{BandSelection, Radiometry};
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("s{i}.tif")).collect();
        for (i, name) in names.iter().enumerate() {
            // NoData = 0 in the first two rows of every other scene.
            write_raster::<u16>(
                &dir.path().join(name),
                (24, 20),
                13,
                Some(0.0),
                &[],
                &[],
                |b, x, y| {
                    if i % 2 == 1 && y < 2 {
                        0
                    } else {
                        (1 + b * 500 + x * 30 + y * 20 + i * 7) as u16
                    }
                },
            );
        }
        let files: Vec<&str> = names.iter().map(String::as_str).collect();
        let m = manifest_of(dir.path(), &files);
        let spec = InputSpec::resolve(
            BandSelection::All,
            "scale:10000".parse::<Radiometry>().unwrap(),
            &m,
            None,
        )
        .unwrap();
        assert_eq!(spec.channels(), 13);
        let mut cfg = config(PairMode::Temporal, 4);
        cfg.input = spec.clone();
        cfg.on_bad_image = BadImagePolicy::Fail;
        let loader = PairLoader::new(m.clone(), cfg).unwrap();
        let batches: Vec<PairBatch> = loader.epoch(0, 0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        for b in &batches {
            assert_eq!(b.query.size(), vec![4, 13, 12, 12]);
            assert_eq!(b.key.size(), vec![4, 13, 12, 12]);
            assert!(b.bad.is_empty());
            let q: Vec<f32> = b.query.flatten(0, -1).try_into().unwrap();
            assert!(q.iter().all(|v| v.is_finite()));
        }
        let eval = ImageLoader::new(
            Arc::new(m),
            (0..8).collect(),
            ViewTransform::CenterCrop { size: 12 },
            8,
            spec,
        )
        .on_bad_image(BadImagePolicy::Fail);
        let batch = eval.epoch(0).next().unwrap().unwrap();
        assert_eq!(batch.images.size(), vec![8, 13, 12, 12]);
        // Rows 0..2 of the odd scenes' 20 are NoData: 12 x 12 from 24 x 20
        // by 5/3, the top output row or two reach them; even scenes have none.
        assert!(
            batch.nodata_pixels >= 4 * 12 && batch.nodata_pixels <= 4 * 3 * 12,
            "{}",
            batch.nodata_pixels
        );
    }
}
