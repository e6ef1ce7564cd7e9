//! The `geossl` command line: argument parsing and dispatch, nothing more.
//! Each command lives in the library module of its concept.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::data::fmow::{self, FmowOptions};
use crate::data::import_csv;
use crate::data::summary::Summary;
use crate::data::synth::{self, SynthConfig};
use crate::data::{Manifest, Split};
use crate::geo::locations::assign_geo_clusters;

#[derive(Parser, Debug)]
#[command(
    name = "geossl",
    version,
    about = "Geography-aware self-supervised learning on satellite imagery"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate the built-in synthetic geo-temporal dataset (images + manifest.csv).
    Synth(SynthArgs),
    /// Validate and summarise a manifest (--check), or build one from fMoW or CSV metadata.
    Index(IndexArgs),
    /// k-means the manifest's locations on the sphere and write a `geo_cluster` column.
    Cluster(ClusterArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The whole pipeline on the built-in dataset: synth, index --check, cluster.
    Demo(DemoArgs),
    /// Show the libtorch build, threads and visible CUDA devices.
    Info,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (created); receives images/ and manifest.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of places.
    #[arg(long, default_value_t = 1000)]
    pub locations: usize,
    /// Most views (images over time) of one place.
    #[arg(long, default_value_t = 8)]
    pub max_views: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image format: jpg (quality 90, like fMoW's JPEGs) or png.
    #[arg(long, default_value = "jpg", value_parser = ["jpg", "png"])]
    pub format: String,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IndexArgs {
    /// Validate this manifest and print its summary (no pixels are loaded).
    #[arg(long, value_name = "MANIFEST")]
    pub check: Option<PathBuf>,
    /// With --check: print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub source: Option<IndexSource>,
}

#[derive(Subcommand, Debug)]
pub enum IndexSource {
    /// Scan an fMoW tree ({train,val,test,seq}/<category>/<category>_<loc>/..._rgb.{jpg,json}).
    Fmow {
        /// fMoW root folder.
        root: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Read the _msrgb files instead of _rgb.
        #[arg(long)]
        msrgb: bool,
        /// Keep boxes labelled false_detection.
        #[arg(long)]
        keep_false_detection: bool,
        /// Import what can be read and list the files that cannot.
        #[arg(long)]
        skip_errors: bool,
    },
    /// Import CSV metadata: derived fMoW tables or GeoImageNet.
    Csv {
        /// fmow: columns category, location_id, image_id, timestamp, polygon;
        /// geoimagenet: id, lat, lon, ... with images in <class>/<id>.jpg.
        #[arg(long, value_parser = ["fmow", "geoimagenet"])]
        format: String,
        /// The metadata CSV.
        file: PathBuf,
        /// Folder the images are under.
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Split to record for every row (train, val or test).
        #[arg(long)]
        split: Option<String>,
        /// fmow: where an image lies below --images; placeholders are column names.
        #[arg(long, default_value = import_csv::FMOW_PATH_TEMPLATE)]
        path_template: String,
    },
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    /// Number of geo clusters (the paper uses 100).
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output manifest (may be the input).
    #[arg(long)]
    pub out: PathBuf,
    /// Centroids JSON (default: next to --out, `<stem>.clusters.json`).
    #[arg(long)]
    pub centroids: Option<PathBuf>,
    /// Weight every location alike instead of by its number of images.
    #[arg(long)]
    pub unweighted: bool,
}

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
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the dataset and outputs go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// A smaller dataset that finishes in seconds.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Synth(a) => synth_cmd(&a),
        Command::Index(a) => index_cmd(a),
        Command::Cluster(a) => cluster_cmd(&a),
        Command::Bench(b) => bench_cmd(b),
        Command::Demo(a) => demo_cmd(&a),
        Command::Info => info_cmd(),
    }
}

fn synth_cmd(a: &SynthArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        locations: a.locations,
        max_views: a.max_views,
        size: a.size,
        seed: a.seed,
        jpeg_quality: if a.format == "png" { 0 } else { 90 },
    };
    let t0 = std::time::Instant::now();
    let m = synth::generate(&a.out, &config)?;
    println!(
        "wrote {} images of {} locations to {} in {:.1} s",
        m.records.len(),
        a.locations,
        m.source.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints a manifest's summary; fails when files are missing.
fn check_manifest(path: &Path, json: bool) -> anyhow::Result<Summary> {
    let m = Manifest::read(path)?;
    let s = Summary::of(&m, true);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{s}");
    }
    if s.missing_files > 0 {
        anyhow::bail!(
            "{}: {} image files are missing",
            path.display(),
            s.missing_files
        );
    }
    Ok(s)
}

fn index_cmd(a: IndexArgs) -> anyhow::Result<()> {
    match (a.check, a.source) {
        (Some(path), None) => check_manifest(&path, a.json).map(|_| ()),
        (
            None,
            Some(IndexSource::Fmow {
                root,
                out,
                msrgb,
                keep_false_detection,
                skip_errors,
            }),
        ) => {
            let options = FmowOptions {
                msrgb,
                keep_false_detection,
                skip_errors,
            };
            let dir = parent_dir(&out);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            let (m, errors) = fmow::import(&root, &dir, &options)?;
            for e in &errors {
                eprintln!("skipped: {e}");
            }
            m.write(&out)?;
            println!(
                "wrote {} rows to {}{}",
                m.records.len(),
                out.display(),
                skipped_note(errors.len())
            );
            Ok(())
        }
        (
            None,
            Some(IndexSource::Csv {
                format,
                file,
                images,
                out,
                split,
                path_template,
            }),
        ) => {
            let split = split
                .map(|s| s.parse::<Split>().map_err(anyhow::Error::msg))
                .transpose()?;
            let images = images
                .canonicalize()
                .with_context(|| format!("{}: cannot open image folder", images.display()))?;
            let m = if format == "fmow" {
                import_csv::import_fmow_csv(&file, &images, &path_template, split)?
            } else {
                let (m, report) = import_csv::import_geoimagenet(&file, &images, split)?;
                println!(
                    "{} images; {} without a metadata row (kept without position); {} metadata rows without an image",
                    report.images, report.images_without_metadata, report.metadata_without_image
                );
                m
            };
            m.write(&out)?;
            println!("wrote {} rows to {}", m.records.len(), out.display());
            Ok(())
        }
        (None, None) => anyhow::bail!(
            "say what to index: --check MANIFEST, or a source (fmow, csv); see geossl index --help"
        ),
        (Some(_), Some(_)) => unreachable!("clap rejects --check together with a source"),
    }
}

fn skipped_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} metadata files skipped, listed above)")
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn cluster_cmd(a: &ClusterArgs) -> anyhow::Result<()> {
    let mut m = Manifest::read(&a.manifest)?;
    let g = assign_geo_clusters(&mut m, a.k, a.seed, !a.unweighted)?;
    m.rebase(&parent_dir(&a.out))?;
    m.write(&a.out)?;
    let centroids = a.centroids.clone().unwrap_or_else(|| {
        let stem = a
            .out
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        parent_dir(&a.out).join(format!("{stem}.clusters.json"))
    });
    crate::atomic_write::write_string(&centroids, &serde_json::to_string_pretty(&g)?)?;
    let sizes: Vec<usize> = g.clusters.iter().map(|c| c.locations).collect();
    println!(
        "{} locations in {} clusters ({} Lloyd iterations{}; locations per cluster {}..{}); wrote {} and {}",
        g.locations,
        g.k,
        g.iterations,
        if g.converged { ", converged" } else { ", NOT converged" },
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
        a.out.display(),
        centroids.display()
    );
    Ok(())
}

fn bench_cmd(b: BenchCommand) -> anyhow::Result<()> {
    match b {
        BenchCommand::Kmeans {
            points,
            k,
            seed,
            repeat,
            dump_points,
        } => {
            let pts = crate::bench::geo_points(points, seed);
            if let Some(p) = dump_points {
                crate::bench::write_npy(&p, &pts)?;
                println!("wrote {} points to {}", pts.len(), p.display());
            }
            let mut runs = Vec::new();
            for _ in 0..repeat.max(1) {
                runs.push(crate::bench::time_kmeans(&pts, k, seed)?);
            }
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
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
    }
}

fn demo_cmd(a: &DemoArgs) -> anyhow::Result<()> {
    let (locations, k) = if a.quick { (400, 50) } else { (2000, 100) };
    let data = a.out.join("data");
    println!(
        "== 1/3 synth: {locations} places of the built-in world -> {}",
        data.display()
    );
    synth_cmd(&SynthArgs {
        out: data.clone(),
        locations,
        max_views: 8,
        size: 64,
        seed: a.seed,
        format: "jpg".into(),
    })?;
    let manifest = data.join("manifest.csv");
    println!("\n== 2/3 index --check {}", manifest.display());
    check_manifest(&manifest, false)?;
    let clustered = data.join("manifest_geo.csv");
    println!("\n== 3/3 cluster k={k} -> {}", clustered.display());
    cluster_cmd(&ClusterArgs {
        manifest,
        k,
        seed: a.seed,
        out: clustered,
        centroids: None,
        unweighted: false,
    })
}

fn info_cmd() -> anyhow::Result<()> {
    println!("geossl {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads   {}", tch::get_num_threads());
    println!("CUDA devices       {}", tch::Cuda::device_count());
    println!("cuDNN available    {}", tch::Cuda::cudnn_is_available());
    println!("rayon threads      {}", rayon::current_num_threads());
    Ok(())
}
