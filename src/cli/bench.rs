//! `bench`: the benchmark commands.

use std::path::PathBuf;

use clap::Subcommand;

use crate::bench::data::DataBenchConfig;
use crate::bench::decode::DecodeBenchConfig;
use crate::bench::scaled_jpeg::ScaledJpegConfig;
use crate::bench::step::StepBenchConfig;
use crate::data::bands::{BandSelection, Radiometry};
use crate::data::loader::{BadImagePolicy, PairMode};
use crate::model::Arch;
use crate::train::PretrainConfig;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// k-means on geo-tag-like points (seeding + Lloyd).
    Kmeans {
        #[arg(long, default_value_t = 1_000_000)]
        points: usize,
        #[arg(long, default_value_t = 100)]
        k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Timed repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Also write the points as float64 .npy, e.g. for bench/kmeans_sklearn.py.
        #[arg(long)]
        dump_points: Option<PathBuf>,
    },
    /// One full pretraining step (MoCo-v2 + TP + Geo) on random inputs, as
    /// ../shared/bench/torch_reference.py times PyTorch's.
    Step(StepArgs),
    /// The input pipeline: decode + two aug+ views + collation of every image
    /// of a manifest, as ../shared/bench/torch_data_reference.py.
    Data(DataArgs),
    /// Decode throughput per format: GDAL vs the current JPEG/PNG decoder,
    /// on one thread and all cores, on files the bench writes (JPEG, PNG,
    /// GeoTIFF uint8/uint16, 3/4/13 bands).
    Decode(DecodeArgs),
    /// fMoW-sized JPEGs (1200x900 .. 3500x3000, textured like imagery, 2-4
    /// views per place, fMoW context crops) and their manifest.csv, for
    /// `bench data` and bench/loader.sh.
    FmowImages(FmowImagesArgs),
}

/// The settings of `geossl bench fmow-images`.
#[derive(Debug, Clone, clap::Args)]
pub struct FmowImagesArgs {
    /// Folder to write the JPEGs and manifest.csv into.
    #[arg(long)]
    pub out: PathBuf,
    /// Images to write (views, over places of 2-4 views).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Smallest image, WxH.
    #[arg(long, default_value = "1200x900")]
    pub min_size: String,
    /// Largest image, WxH.
    #[arg(long, default_value = "3500x3000")]
    pub max_size: String,
    /// JPEG quality (fMoW's files: ~90-95).
    #[arg(long, default_value_t = 92)]
    pub quality: u8,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `WxH` as (width, height).
fn parse_size(flag: &str, v: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = v
        .split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    parsed.ok_or_else(|| anyhow::anyhow!("--{flag} must be WxH, e.g. 1200x900, got '{v}'"))
}

/// The settings of `geossl bench decode`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// Side of the large scenes in pixels (fMoW's JPEGs are ~1000 px).
    #[arg(long, default_value_t = 1000)]
    pub size: usize,
    /// Files per format.
    #[arg(long, default_value_t = 4)]
    pub files: usize,
    /// Million decoded values (pixels x bands) per timed pass and format.
    #[arg(long, default_value_t = 48.0)]
    pub megasamples: f64,
    /// Timed passes per decoder, format and thread count (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Threads of the parallel passes (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = super::thread_count)]
    pub threads: usize,
    /// Keep the files in this folder, with files.csv for bench/decode_reference.py
    /// (default: a temporary folder, removed).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// With --keep: also write loader sets of this many 264 px scenes as 3-band
    /// JPEG and 13-band GeoTIFF (KEEP/loader-*/manifest.csv) for `geossl bench data`.
    #[arg(long, default_value_t = 128)]
    pub loader_images: usize,
    /// JPEGs of 1200 x 900 to 3500 x 3000 with fMoW-like crops for the
    /// scaled-JPEG rows (full vs DCT-scaled + region decode, PSNR; 0: none).
    #[arg(long, default_value_t = 16)]
    pub scaled_files: usize,
    /// The side the scaled-JPEG rows resize each crop's shorter side to.
    #[arg(long, default_value_t = 448)]
    pub scaled_resize_to: u32,
    /// Only the scaled-JPEG rows (not the format x decoder matrix).
    #[arg(long)]
    pub scaled_only: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The settings of `geossl bench step` (the reference's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct StepArgs {
    #[arg(long, value_parser = super::choice::<Arch>(), default_value = "resnet50")]
    pub arch: Arch,
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    #[arg(long, default_value_t = 64)]
    pub size: i64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// bf16 autocast.
    #[arg(long)]
    pub amp: bool,
    #[arg(long)]
    pub channels_last: bool,
    #[arg(long, default_value_t = 4096)]
    pub queue: i64,
    #[arg(long, default_value_t = PretrainConfig::default().moco.moco_dim)]
    pub dim: i64,
    #[arg(long, default_value_t = 100)]
    pub geo_classes: i64,
    #[arg(long, default_value_t = PretrainConfig::default().moco.moco_t)]
    pub temperature: f64,
    /// Shuffle-BN groups (1: none, as the reference).
    #[arg(long, default_value_t = 1)]
    pub bn_groups: i64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// libtorch intra-op threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `--pairs` of `geossl bench data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pairs {
    Same,
    Temporal,
}

/// The settings of `geossl bench data` (the reference's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Resize + CenterCrop side before the random crop (0: twice --size, as pretrain's --pre-size).
    #[arg(long, default_value_t = 448)]
    pub pre: u32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 1, value_parser = super::thread_count)]
    pub threads: usize,
    /// Use the first N images only (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Unreadable images: replace them by other samples and list them
    /// (skip), or stop (fail).
    #[arg(long, value_parser = super::choice::<BadImagePolicy>(), default_value_t = BadImagePolicy::Skip)]
    pub on_bad_image: BadImagePolicy,
    /// Pairs: same (two views of one image, MoCo-v2) or temporal (the key
    /// from another view of the same place, as pretraining with TP).
    #[arg(long, value_enum, default_value_t = Pairs::Same)]
    pub pairs: Pairs,
    /// Where and how the images are read (`--packed DIR`, `--decode-scale`).
    #[command(flatten)]
    pub read: super::eval::ImageReading,
    /// Input bands: rgb, all, 1-based numbers (4,3,2) or band descriptions (B04,B03,B02).
    #[arg(long, default_value = "rgb")]
    pub bands: BandSelection,
    /// auto, stretch[:P], scale:D[,D..] or stats (the manifest's band_stats.json).
    #[arg(long, default_value = "auto")]
    pub radiometry: Radiometry,
}

impl From<StepArgs> for StepBenchConfig {
    fn from(a: StepArgs) -> Self {
        Self {
            arch: a.arch,
            batch: a.batch,
            size: a.size,
            device: a.device,
            amp: a.amp,
            channels_last: a.channels_last,
            queue: a.queue,
            dim: a.dim,
            geo_classes: a.geo_classes,
            temperature: a.temperature,
            bn_groups: a.bn_groups,
            warmup: a.warmup,
            steps: a.steps,
            threads: a.threads,
            seed: a.seed,
        }
    }
}

impl From<DataArgs> for DataBenchConfig {
    fn from(a: DataArgs) -> Self {
        Self {
            manifest: a.manifest,
            size: a.size,
            pre: a.pre,
            batch: a.batch,
            threads: a.threads,
            limit: a.limit,
            seed: a.seed,
            on_bad_image: a.on_bad_image,
            bands: a.bands,
            radiometry: a.radiometry,
            pairs: match a.pairs {
                Pairs::Same => PairMode::SameImage,
                Pairs::Temporal => PairMode::Temporal,
            },
            packed: a.read.packed.clone(),
            decode: a.read.decode(),
        }
    }
}

impl From<DecodeArgs> for DecodeBenchConfig {
    fn from(a: DecodeArgs) -> Self {
        Self {
            size: a.size,
            files: a.files,
            megasamples: a.megasamples,
            rounds: a.rounds,
            threads: a.threads,
            keep: a.keep,
            loader_images: a.loader_images,
            seed: a.seed,
        }
    }
}

pub(super) fn bench_cmd(b: BenchCommand) -> anyhow::Result<()> {
    match b {
        BenchCommand::Kmeans {
            points,
            k,
            seed,
            repeat,
            dump_points,
        } => {
            let pts = crate::bench::kmeans::geo_points(points, seed);
            if let Some(p) = dump_points {
                crate::bench::kmeans::write_npy(&p, &pts)?;
                println!("wrote {} points to {}", pts.len(), p.display());
            }
            let runs = crate::bench::kmeans::time_kmeans_repeated(&pts, k, seed, repeat)?;
            let median = &runs[runs.len() / 2];
            println!(
                "BENCH kmeans points={points} k={k} threads={} repeats={} median_s={:.3} min_s={:.3} iterations={} inertia={:.3}",
                rayon::current_num_threads(),
                runs.len(),
                median.seconds,
                runs[0].seconds,
                median.iterations,
                median.inertia
            );
            Ok(())
        }
        BenchCommand::Step(args) => {
            let config = StepBenchConfig::from(args);
            let t = crate::bench::step::run(&config)?;
            let c = &config;
            println!(
                "BENCH step arch={} batch={} size={} queue={} device={} amp={} channels_last={} threads={} loss={:.4} median_ms={:.1} min_ms={:.1} pairs_per_s={:.1} peak_rss_mib={:.0}",
                c.arch.name(),
                c.batch,
                c.size,
                c.queue,
                c.device,
                u8::from(c.amp),
                u8::from(c.channels_last),
                tch::get_num_threads(),
                t.last_loss,
                t.median_ms,
                t.min_ms,
                c.batch as f64 * 1e3 / t.median_ms,
                t.peak_rss_mib.unwrap_or(f64::NAN)
            );
            Ok(())
        }
        BenchCommand::Data(args) => {
            let config = DataBenchConfig::from(args);
            let t = crate::bench::data::run(&config)?;
            let c = &config;
            for b in &t.bad {
                tracing::warn!("skipped unreadable image: {}", b.error);
            }
            println!(
                "BENCH data threads={} pairs={} packed={} decode_scale={} channels={} size={} pre={} batch={} images={} bad_images={} seconds={:.2} pairs_per_s={:.1} pairs_per_s_per_thread={:.1}",
                rayon::current_num_threads(),
                match c.pairs {
                    PairMode::SameImage => "same",
                    PairMode::Temporal => "temporal",
                },
                u8::from(c.packed.is_some()),
                crate::settings::choice_name(c.decode.scale),
                t.channels,
                c.size,
                t.pre,
                c.batch,
                t.pairs,
                t.bad.len(),
                t.seconds,
                t.pairs_per_s,
                t.pairs_per_s / rayon::current_num_threads() as f64
            );
            Ok(())
        }
        BenchCommand::FmowImages(a) => {
            let config = crate::bench::fmow_images::FmowImagesConfig {
                out: a.out,
                count: a.count,
                min_size: parse_size("min-size", &a.min_size)?,
                max_size: parse_size("max-size", &a.max_size)?,
                quality: a.quality,
                seed: a.seed,
            };
            let w = crate::bench::fmow_images::run(&config)?;
            println!(
                "BENCH fmow-images images={} places={} bytes={} bits_per_pixel={:.2} manifest={}",
                w.images,
                w.places,
                w.bytes,
                w.bits_per_pixel,
                w.manifest.display()
            );
            Ok(())
        }
        BenchCommand::Decode(args) => {
            let scaled = ScaledJpegConfig {
                files: args.scaled_files,
                resize_to: args.scaled_resize_to,
                quality: 92,
                rounds: args.rounds,
                seed: args.seed,
            };
            if !args.scaled_only {
                decode_matrix(args)?;
            }
            if scaled.files > 0 {
                scaled_jpeg_rows(&scaled)?;
            }
            Ok(())
        }
    }
}

/// The format x decoder rows of `geossl bench decode`.
fn decode_matrix(args: DecodeArgs) -> anyhow::Result<()> {
    let (formats, measures) = crate::bench::decode::run(&DecodeBenchConfig::from(args))?;
    for m in &measures {
        match (m.images_per_s, m.mp_per_s) {
            (Some(ips), Some(mps)) => println!(
                "BENCH decode format={} decoder={} threads={} images={} images_per_s={ips:.1} mp_per_s={mps:.1}",
                m.format,
                m.decoder.name(),
                m.threads,
                m.images
            ),
            _ => println!(
                "BENCH decode format={} decoder={} threads={} unreadable: {}",
                m.format,
                m.decoder.name(),
                m.threads,
                m.error.as_deref().unwrap_or("?")
            ),
        }
    }
    println!("{}", crate::bench::decode::table(&formats, &measures));
    Ok(())
}

/// The scaled-JPEG rows of `geossl bench decode` (one thread).
fn scaled_jpeg_rows(c: &ScaledJpegConfig) -> anyhow::Result<()> {
    let rows = crate::bench::scaled_jpeg::run(c)?;
    for (i, r) in rows.iter().enumerate() {
        println!(
            "BENCH decode-scaled-jpeg file={i} size={}x{} crop={} bits_per_pixel={:.2} resize_to={} scale={} zune_full_ms={:.2} turbo_full_ms={:.2} auto_ms={:.2} psnr_db={}",
            r.width,
            r.height,
            r.crop,
            r.bits_per_pixel,
            c.resize_to,
            r.denom.map_or("1".into(), |d| format!("1/{d}")),
            r.zune_full_ms,
            r.turbo_full_ms,
            r.auto_ms,
            r.psnr.map_or("inf".into(), |p| format!("{p:.2}"))
        );
    }
    println!("{}", crate::bench::scaled_jpeg::table(&rows, c.resize_to));
    Ok(())
}
