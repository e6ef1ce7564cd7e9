//! `synth`, `index`, `cluster` and `pack`: the dataset commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use regex::Regex;

use crate::data::band_stats::{self, StatsOptions};
use crate::data::fmow::{self, FmowOptions};
use crate::data::geo_classes::{write_geo_classes, GeoClassOptions};
use crate::data::import_csv;
use crate::data::manifest::create_manifest_dir;
use crate::data::scenes::{self, ScanOptions};
use crate::data::summary::{CheckOptions, FileCheck, Summary};
use crate::data::synth::{self, SynthConfig};
use crate::data::{Manifest, Split};

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
    /// Image format: jpg (quality 90, like fMoW's JPEGs) or png. Only for --bands 3.
    #[arg(long, default_value = "jpg", value_parser = ["jpg", "png"])]
    pub format: String,
    /// Bands per image: 3 = 8-bit RGB JPEG/PNG; 13 = Sentinel-2-like UInt16 GeoTIFFs (reflectance x 10000, bands B01..B12 with B8A, NoData 0 on part of the views); 4 = blue, green, red, NIR GeoTIFFs.
    #[arg(long, default_value_t = 3, value_parser = parse_band_count)]
    pub bands: usize,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IndexArgs {
    /// Validate this manifest and print its summary; exits non-zero on any
    /// problem (missing or, with --decode, undecodable files; locations
    /// spread over more than --max-spread-km).
    #[arg(long, value_name = "MANIFEST")]
    pub check: Option<PathBuf>,
    /// With --check: print the summary as JSON.
    #[arg(long, requires = "check")]
    pub json: bool,
    /// With --check: decode every image (and crop), in parallel, and list each one that fails.
    #[arg(long, requires = "check", conflicts_with = "no_files")]
    pub decode: bool,
    /// With --check: leave the image files alone (data on remote storage).
    #[arg(long, requires = "check")]
    pub no_files: bool,
    /// With --check: views of one location farther apart than this (great-circle km) are a problem.
    #[arg(long, requires = "check", value_name = "KM",
          default_value_t = crate::data::summary::DEFAULT_MAX_LOCATION_SPREAD_KM)]
    pub max_spread_km: f64,
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
        /// Leave out the rows with problems (each listed) instead of stopping.
        #[arg(long)]
        skip_errors: bool,
        /// Without --split: put this fraction of the LOCATIONS in val, the rest in train (all views of a place in one split).
        #[arg(long, conflicts_with = "split", value_name = "F")]
        val_fraction: Option<f64>,
        /// Seed of --val-fraction's draw (same input and seed, same split).
        #[arg(long, requires = "val_fraction", default_value_t = 0)]
        seed: u64,
    },
    /// Per-band statistics of a manifest's rasters (mean, std, min, max, valid pixels; NoData excluded), written beside it as <stem>.band_stats.json for --radiometry stats.
    Stats {
        /// The manifest.
        manifest: PathBuf,
        /// Images (rows) sampled, seeded; all when the manifest has fewer.
        #[arg(long, value_name = "N", default_value_t = band_stats::DEFAULT_SAMPLE)]
        sample: usize,
        /// Pixels read per image at most: larger images are read decimated (nearest neighbour).
        #[arg(long, value_name = "N", default_value_t = band_stats::DEFAULT_PIXELS_PER_IMAGE)]
        pixels_per_image: usize,
        /// Seed of the draw of images.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Index a folder of rasters (GeoTIFF, COG, JPEG2000, VRT, ...) through
    /// GDAL: position (centre in WGS84), size, bands, acquisition date;
    /// views of one place share a location_id.
    Rasters(RastersArgs),
}

#[derive(Args, Debug)]
pub struct RastersArgs {
    /// Folder scanned recursively.
    pub dir: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Pattern on each file name whose named group `date` is the acquisition
    /// date (e.g. '_(?P<date>\d{8})_'); used where it matches, else the
    /// date in the raster's metadata.
    #[arg(long, value_name = "REGEX")]
    pub date_regex: Option<String>,
    /// Pattern on each path below DIR whose named group `location` names the
    /// place (e.g. '^(?P<location>[^/]+)/'); paths it does not match are
    /// grouped by footprint.
    #[arg(long, value_name = "REGEX")]
    pub location_regex: Option<String>,
    /// Views whose four corners lie within this many metres of each other
    /// are one place [default: 2 pixels of the coarser view].
    #[arg(long, value_name = "METRES")]
    pub tolerance: Option<f64>,
    /// Cut each scene into SIZE x SIZE chips; chip (row, col) of every view
    /// of a place is one place. Partial chips at the edges are left out.
    #[arg(long, value_name = "SIZE")]
    pub chip: Option<u32>,
    /// File extensions read (comma-separated, no dots).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tif,tiff,jp2,j2k,vrt,img,ntf"
    )]
    pub extensions: Vec<String>,
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
    /// Leave the rows of locations without lat/lon out of the output (counted) instead of stopping.
    #[arg(long)]
    pub drop_unpositioned: bool,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The manifest whose rows are packed (every row; unreadable images are listed and left out).
    pub manifest: PathBuf,
    /// The pack's folder (created). A re-run into it keeps the shards an earlier run of the same manifest and flags completed.
    #[arg(long)]
    pub out: PathBuf,
    /// Side S of the stored images: each row's crop after Resize(S) + CenterCrop(S); the run's --pre-size (e.g. 448 for fMoW) stores exactly pretraining's first step.
    #[arg(long, value_name = "S")]
    pub size: u32,
    /// JPEG quality (1-100) of RGB images [default: 95].
    #[arg(long, value_name = "Q", conflicts_with = "raw")]
    pub quality: Option<u8>,
    /// Store RGB as raw arrays (KEY.npy, uint8 [S, S, 3]) instead of JPEG. Other inputs are always raw (float32 [C, S, S] unit values).
    #[arg(long)]
    pub raw: bool,
    /// Shard size to aim at, MB (10^6 bytes; the views of one place are never split over shards).
    #[arg(long, value_name = "MB", default_value_t = crate::data::pack::DEFAULT_SHARD_MB)]
    pub shard_size: f64,
    /// Bands stored as channels, as pretrain's --bands (rgb, all, 4,3,2 or B04,B03,B02); the run that reads the pack must use the same.
    #[arg(long, value_name = "BANDS", default_value = "rgb")]
    pub bands: crate::data::bands::BandSelection,
    /// Stored values to [0, 1], as pretrain's --radiometry (auto, stretch[:P], scale:D[,D...] or stats).
    #[arg(long, value_name = "R", default_value = "auto")]
    pub radiometry: crate::data::bands::Radiometry,
    /// JPEG decoding: auto (DCT-domain downscaling to the smallest scale that keeps the crop at least S, only the crop's blocks) or full (every pixel).
    #[arg(long, value_parser = super::choice::<crate::data::decode::DecodeScale>(), default_value = "auto")]
    pub decode_scale: crate::data::decode::DecodeScale,
    /// Threads decoding and encoding; 0: one per core.
    #[arg(long, default_value_t = 0, value_parser = super::thread_count)]
    pub threads: usize,
}

/// `geossl pack`: resolves the input, packs in a pool of `--threads`,
/// lists the unreadable rows (the first 10) and sums up.
pub(super) fn pack_cmd(a: &PackArgs) -> anyhow::Result<()> {
    use crate::data::pack::{pack, Encoding, PackOptions, DEFAULT_QUALITY, UNREADABLE_FILE};
    let m = Manifest::read(&a.manifest)?;
    let stats = crate::data::bands::BandStats::load_for(&a.manifest)?;
    let input = crate::data::bands::InputSpec::resolve(
        a.bands.clone(),
        a.radiometry.clone(),
        &m,
        stats.as_ref(),
    )?;
    if let Some(note) = crate::train::config::input_note(&input) {
        println!("{note}");
    }
    anyhow::ensure!(
        a.shard_size.is_finite() && a.shard_size * 1e6 >= 1.0,
        "--shard-size must be a positive number of MB (got {})",
        a.shard_size
    );
    let options = PackOptions {
        size: a.size,
        quality: a.quality.unwrap_or(DEFAULT_QUALITY),
        raw: a.raw,
        shard_bytes: (a.shard_size * 1e6) as u64,
        input,
        decode: a.decode_scale,
        quiet: false,
    };
    if a.quality.is_some() && options.encoding() != Encoding::Jpeg {
        println!(
            "note: --quality applies to RGB JPEGs; this input is stored as raw float32 arrays"
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()?;
    let t0 = std::time::Instant::now();
    let report = pool.install(|| pack(&m, &a.out, &options))?;
    let unreadable: Vec<String> = report.unreadable.iter().map(|u| u.error.clone()).collect();
    print_some("unreadable", &unreadable);
    let info = &report.info;
    let bytes: u64 = info.shards.iter().map(|s| s.bytes).sum();
    let encoding = match info.quality {
        Some(q) => format!("JPEG quality {q}"),
        None => "raw .npy".to_string(),
    };
    println!(
        "packed {} of {} rows at {s} x {s} px ({encoding}) into {} shards, {:.1} MB ({} written, {} complete from an earlier run) in {:.1} s; {} unreadable rows left out{}",
        info.samples,
        m.records.len(),
        info.shards.len(),
        bytes as f64 / 1e6,
        report.written,
        report.kept,
        t0.elapsed().as_secs_f64(),
        info.unreadable,
        if info.unreadable > 0 {
            format!(" (listed in {})", a.out.join(UNREADABLE_FILE).display())
        } else {
            String::new()
        },
        s = info.size,
    );
    println!(
        "wrote {}; read it with --packed {}",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}

/// `--bands` of `synth`: one of [`synth::BAND_COUNTS`].
pub(super) fn parse_band_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if synth::BAND_COUNTS.contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}': expected 3 (RGB), 4 (blue, green, red, NIR) or 13 (Sentinel-2)"
        )),
    }
}

pub(super) fn synth_cmd(a: &SynthArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        locations: a.locations,
        max_views: a.max_views,
        size: a.size,
        seed: a.seed,
        jpeg_quality: if a.format == "png" { 0 } else { 90 },
    };
    let t0 = std::time::Instant::now();
    let m = synth::generate_bands(&a.out, &config, a.bands)?;
    println!(
        "wrote {} images ({} bands) of {} locations to {} in {:.1} s",
        m.records.len(),
        a.bands,
        a.locations,
        m.source.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints a manifest's summary; fails on any problem it finds.
fn check_manifest(path: &Path, json: bool, options: &CheckOptions) -> anyhow::Result<()> {
    let (_, s) = Summary::check_file(path, options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{s}");
    }
    s.ensure_passes(path)
}

pub(super) fn index_cmd(a: IndexArgs) -> anyhow::Result<()> {
    match (a.check, a.source) {
        (Some(path), None) => {
            anyhow::ensure!(
                a.max_spread_km.is_finite() && a.max_spread_km >= 0.0,
                "--max-spread-km must be a non-negative number of kilometres (got {})",
                a.max_spread_km
            );
            let options = CheckOptions {
                files: if a.no_files {
                    FileCheck::None
                } else if a.decode {
                    FileCheck::Decode
                } else {
                    FileCheck::Exists
                },
                max_location_spread_km: a.max_spread_km,
                ..CheckOptions::default()
            };
            check_manifest(&path, a.json, &options)
        }
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
            let dir = create_manifest_dir(&out)?;
            let (m, report) = fmow::import(&root, &dir, &options)?;
            for e in &report.skipped {
                eprintln!("skipped: {e}");
            }
            // Boxes outside their image and images without metadata point at
            // damaged metadata: list them (the first few), not only count.
            print_some("box outside its image", &report.boxes_outside);
            let orphans: Vec<String> = report
                .images_without_metadata
                .iter()
                .map(|p| format!("{}: no metadata JSON beside it", p.display()))
                .collect();
            print_some("image without metadata", &orphans);
            m.write(&out)?;
            println!("{} metadata files; {}", report.files, report.left_out());
            println!(
                "wrote {} rows to {}{}",
                m.records.len(),
                out.display(),
                skipped_note(report.skipped.len())
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
                skip_errors,
                val_fraction,
                seed,
            }),
        ) => {
            let split = split
                .map(|s| s.parse::<Split>().map_err(anyhow::Error::msg))
                .transpose()?;
            let images = images
                .canonicalize()
                .with_context(|| format!("{}: cannot open image folder", images.display()))?;
            let dir = create_manifest_dir(&out)?;
            let options = import_csv::CsvImportOptions {
                split,
                skip_errors,
                manifest_dir: dir,
            };
            let (mut m, skipped) = if format == "fmow" {
                let (m, report) =
                    import_csv::import_fmow_csv(&file, &images, &path_template, &options)?;
                println!(
                    "{} rows; {} without a position (empty polygon; kept); {} rows left out",
                    report.rows, report.rows_without_position, report.skipped_rows
                );
                (m, report.skipped)
            } else {
                let (m, report) = import_csv::import_geoimagenet(&file, &images, &options)?;
                println!(
                    "{} images; {} without a metadata row and {} with empty lat/lon (both kept without position); {} left out with their metadata row; {} metadata rows without an image",
                    report.images,
                    report.images_without_metadata,
                    report.images_without_position,
                    report.images_skipped,
                    report.metadata_without_image
                );
                (m, report.skipped)
            };
            for e in &skipped {
                eprintln!("skipped: {e}");
            }
            if let Some(f) = val_fraction {
                let c = import_csv::assign_splits_by_location(&mut m, f, seed)?;
                println!(
                    "split by location (seed {seed}): {} locations in train, {} in val",
                    c.train_locations, c.val_locations
                );
            }
            m.write(&out)?;
            println!("wrote {} rows to {}", m.records.len(), out.display());
            if m.records.iter().any(|r| r.position.is_none()) {
                println!(
                    "note: rows without a position stop `geossl cluster`; its --drop-unpositioned leaves them out"
                );
            }
            Ok(())
        }
        (
            None,
            Some(IndexSource::Stats {
                manifest,
                sample,
                pixels_per_image,
                seed,
            }),
        ) => index_stats_cmd(&manifest, sample, pixels_per_image, seed),
        (None, Some(IndexSource::Rasters(r))) => rasters_cmd(&r),
        (None, None) => anyhow::bail!(
            "say what to index: --check MANIFEST, or a source (fmow, csv, rasters, stats); see geossl index --help"
        ),
        (Some(_), Some(_)) => unreachable!("clap rejects --check together with a source"),
    }
}

/// `geossl index stats`: computes, prints and writes a manifest's per-band
/// statistics; unreadable files are listed (the first 10) and skipped.
fn index_stats_cmd(
    manifest: &Path,
    sample: usize,
    pixels_per_image: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let m = Manifest::read(manifest)?;
    let options = StatsOptions {
        sample,
        pixels_per_image,
        seed,
        quiet: false,
        ..StatsOptions::default()
    };
    let t0 = std::time::Instant::now();
    let name = manifest.display().to_string();
    let report = band_stats::compute(&m, &name, &options)?;
    print_some("skipped", &report.skipped);
    let s = &report.stats;
    println!(
        "{:>4}  {:<12} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "band", "name", "mean", "std", "min", "max", "valid pixels"
    );
    for b in &s.bands {
        println!(
            "{:>4}  {:<12} {:>12.3} {:>12.3} {:>12} {:>12} {:>14}",
            b.band, b.name, b.mean, b.std, b.min, b.max, b.valid_pixels
        );
    }
    let path = s.save_for(manifest)?;
    println!(
        "{} of {} images read ({} skipped) in {:.1} s; wrote {}",
        s.images_sampled,
        s.images_total,
        report.skipped.len(),
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// A `--NAME` pattern with its named `group`, compiled.
fn named_pattern(
    flag: &str,
    pattern: &Option<String>,
    group: &str,
) -> anyhow::Result<Option<Regex>> {
    let Some(p) = pattern else {
        return Ok(None);
    };
    let re = Regex::new(p).map_err(|e| anyhow::anyhow!("--{flag} '{p}': {e}"))?;
    anyhow::ensure!(
        re.capture_names().flatten().any(|n| n == group),
        "--{flag} '{p}' has no named group '{group}': write it as (?P<{group}>...)"
    );
    Ok(Some(re))
}

/// `index rasters`: the scan, its summary, the manifest and the list of
/// unreadable files beside it.
fn rasters_cmd(a: &RastersArgs) -> anyhow::Result<()> {
    if let Some(t) = a.tolerance {
        anyhow::ensure!(
            t.is_finite() && t >= 0.0,
            "--tolerance must be a non-negative number of metres (got {t})"
        );
    }
    anyhow::ensure!(
        a.chip != Some(0),
        "--chip must be a positive number of pixels"
    );
    let extensions: Vec<String> = a
        .extensions
        .iter()
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect();
    anyhow::ensure!(!extensions.is_empty(), "--extensions names no extension");
    let options = ScanOptions {
        extensions,
        date_regex: named_pattern("date-regex", &a.date_regex, "date")?,
        location_regex: named_pattern("location-regex", &a.location_regex, "location")?,
        tolerance_m: a.tolerance,
        chip: a.chip,
        manifest_dir: create_manifest_dir(&a.out)?,
    };
    let (m, report) = scenes::index_rasters(&a.dir, &options)?;
    let unreadable: Vec<String> = report
        .unreadable
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.display()))
        .collect();
    for e in &unreadable {
        eprintln!("skipped: {e}");
    }
    let no_georef: Vec<String> = report
        .without_georef
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.display()))
        .collect();
    print_some("without georeferencing (no position)", &no_georef);
    print_some("date problem", &report.date_problems);
    m.write(&a.out)?;
    let sidecar = scenes::write_skipped(&a.out, &report.unreadable)?;
    print_rasters_summary(a, &report, m.records.len(), sidecar);
    Ok(())
}

fn print_rasters_summary(
    a: &RastersArgs,
    r: &scenes::RasterIndexReport,
    rows: usize,
    sidecar: bool,
) {
    println!(
        "{} files with extensions {}: {} scenes read, {} unreadable{}",
        r.files,
        a.extensions.join(","),
        r.scenes,
        r.unreadable.len(),
        if sidecar {
            format!(
                " (listed above and in {})",
                scenes::skipped_path(&a.out).display()
            )
        } else {
            String::new()
        }
    );
    println!(
        "{} places ({}); {} scenes without georeferencing (no position, each its own place unless named by --location-regex)",
        r.places,
        r.grouping,
        r.without_georef.len()
    );
    if a.location_regex.is_some() {
        println!(
            "{} paths not matched by --location-regex (grouped by footprint)",
            r.location_unmatched
        );
    }
    println!(
        "{} dates; {} scenes dated from the file name, {} from metadata, {} undated",
        r.dates, r.dated_by_name, r.dated_by_metadata, r.undated
    );
    if let Some(size) = a.chip {
        println!(
            "{} chips of {size} x {size} px; {} partial chips at the right and bottom edges left out",
            r.chips, r.partial_chips
        );
        print_some(
            "place whose views differ in size (chip (r, c) covers different ground)",
            &r.places_with_mixed_sizes,
        );
    }
    println!("wrote {rows} rows to {}", a.out.display());
    if !r.without_georef.is_empty() {
        println!(
            "note: rows without a position stop `geossl cluster`; its --drop-unpositioned leaves them out"
        );
    }
}

/// Prints the first 10 of `items` (one a line, `what: item`) and how many more.
fn print_some(what: &str, items: &[String]) {
    const SHOWN: usize = 10;
    for i in items.iter().take(SHOWN) {
        println!("{what}: {i}");
    }
    if items.len() > SHOWN {
        println!("... and {} more of: {what}", items.len() - SHOWN);
    }
}

fn skipped_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} metadata files skipped, listed above)")
    }
}

pub(super) fn cluster_cmd(a: &ClusterArgs) -> anyhow::Result<()> {
    let mut m = Manifest::read(&a.manifest)?;
    let unpositioned = crate::data::geo_classes::unpositioned_locations(&m);
    if !unpositioned.is_empty() {
        if !a.drop_unpositioned {
            let shown: Vec<&str> = unpositioned.iter().take(5).map(String::as_str).collect();
            anyhow::bail!(
                "{}: {} locations have no lat/lon (e.g. {}); geo clustering needs a position for every location: add them, or pass --drop-unpositioned to leave their rows out of --out",
                a.manifest.display(),
                unpositioned.len(),
                shown.join(", ")
            );
        }
        let dropped = crate::data::geo_classes::drop_unpositioned(&mut m);
        println!(
            "left out {} rows of {} locations without lat/lon",
            dropped,
            unpositioned.len()
        );
        anyhow::ensure!(
            !m.records.is_empty(),
            "{}: no row has a position",
            a.manifest.display()
        );
    }
    let centroids = a
        .centroids
        .clone()
        .unwrap_or_else(|| crate::geo::locations::centroids_path(&a.out));
    let options = GeoClassOptions {
        k: a.k,
        seed: a.seed,
        weighted: !a.unweighted,
    };
    let g = write_geo_classes(&mut m, &options, &a.out, &centroids)?;
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
