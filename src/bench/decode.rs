//! `geossl bench decode`: decode throughput of the two readers geossl has,
//! per format, on files the bench writes itself: the current JPEG/PNG
//! decoder (`decode_rgb8_file` of [`crate::data::decode`]: zune-jpeg, the
//! `image` crate's PNG, to RGB8; it reads no TIFF since the `tiff` crate
//! was retired) and GDAL ([`RasterReader`]: open + full-window read
//! of every band to `f32`, plus the interleave to RGB8 for 3-band 8-bit
//! files, the conversion the RGB path would need).
//!
//! The files: fMoW-size JPEGs (quality 90, the built-in world's scenes at
//! `--size`, ~1000 px, and at 300 px), the same scenes as PNG and as
//! GeoTIFFs (uint8 RGB Deflate; uint16 4 bands Deflate + predictor;
//! uint16 13 bands tiled, band interleave, Deflate + predictor, at
//! SSL4EO-S12's 264 px patch size), written by GDAL. Each timed pass
//! decodes a format's files round-robin until `--megasamples` million
//! values (pixels x bands) are decoded, on one thread and on all cores;
//! passes alternate which decoder goes first, and the median over
//! `--rounds` is reported (this class of machine drifts by +-15%).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use gdal::raster::{Buffer, GdalType, RasterCreationOptions};
use gdal::DriverManager;
use image::RgbImage;
use rayon::prelude::*;

use crate::data::decode::{decode_file, decode_rgb8_file, DecodeOptions};
use crate::data::raster::{RasterReader, Resampling, Window};
use crate::data::synth::{self, SynthConfig};

/// The settings of `geossl bench decode` (the CLI holds its defaults).
#[derive(Debug, Clone)]
pub struct DecodeBenchConfig {
    /// Side of the large scenes in pixels (fMoW's JPEGs are ~1000 px).
    pub size: usize,
    /// Files per format.
    pub files: usize,
    /// Million decoded values (pixels x bands) per timed pass and format.
    pub megasamples: f64,
    /// Timed passes per decoder, format and thread count (median reported).
    pub rounds: usize,
    /// Threads of the parallel passes (0: one per core).
    pub threads: usize,
    /// Keep the files here (with `files.csv`, for bench/decode_reference.py);
    /// else a temporary folder, removed at the end.
    pub keep: Option<PathBuf>,
    /// With `keep`: also write two loader sets of this many images at
    /// SSL4EO-S12's 264 px, `loader-jpeg-264/manifest.csv` (3-band JPEG
    /// q90) and `loader-u16x13-264/manifest.csv` (13-band uint16 GeoTIFF,
    /// tiled, Deflate), for `geossl bench data` (0: none).
    pub loader_images: usize,
    pub seed: u64,
}

/// One format of the bench and its files.
#[derive(Debug, Clone)]
pub struct Format {
    /// Short name, e.g. "jpeg-1000".
    pub name: String,
    /// What it is, e.g. "JPEG q90, 3 x uint8".
    pub what: &'static str,
    pub width: usize,
    pub height: usize,
    pub bands: usize,
    pub files: Vec<PathBuf>,
}

/// Which reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// `decode_rgb8_file`: zune-jpeg / the `image` crate, to RGB8.
    Current,
    /// [`RasterReader`]: GDAL, every band to `f32`.
    Gdal,
}

impl Decoder {
    pub fn name(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Gdal => "gdal",
        }
    }
}

/// The median pass of one decoder on one format at one thread count.
#[derive(Debug, Clone)]
pub struct Measure {
    pub format: String,
    pub decoder: Decoder,
    pub threads: usize,
    /// Decodes per pass.
    pub images: usize,
    /// Median over rounds; `None` when the decoder cannot read the format.
    pub images_per_s: Option<f64>,
    /// Million pixels (not values) per second, median pass.
    pub mp_per_s: Option<f64>,
    /// Why the decoder cannot read the format.
    pub error: Option<String>,
}

/// Writes the files, times every (format, decoder, threads) and returns the
/// formats and the measures, in that order.
pub fn run(c: &DecodeBenchConfig) -> anyhow::Result<(Vec<Format>, Vec<Measure>)> {
    anyhow::ensure!(
        c.files >= 1 && c.rounds >= 1,
        "files and rounds must be at least 1"
    );
    let dir = match &c.keep {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("geossl-bench-decode-{}", std::process::id())),
    };
    let outcome = write_and_time(&dir, c);
    if c.keep.is_none() {
        // Best effort: a leftover temporary folder is no reason to fail.
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

fn write_and_time(
    dir: &Path,
    c: &DecodeBenchConfig,
) -> anyhow::Result<(Vec<Format>, Vec<Measure>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let formats = write_formats(dir, c)?;
    write_listing(dir, &formats)?;
    if c.keep.is_some() && c.loader_images > 0 {
        write_loader_sets(dir, c)?;
    }
    let all = if c.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        c.threads
    };
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    let mut measures = Vec::new();
    let bar = crate::progress::bar((formats.len() * counts.len()) as u64, "timing decoders");
    for f in &formats {
        for &threads in &counts {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .context("cannot start the decode threads")?;
            measures.extend(pool.install(|| time_format(f, threads, c))?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok((formats, measures))
}

/// Both decoders on `f` with the current rayon pool: one untimed pass of
/// each file (and the check that the decoder reads it), then `rounds`
/// timed passes, alternating which decoder goes first.
fn time_format(f: &Format, threads: usize, c: &DecodeBenchConfig) -> anyhow::Result<Vec<Measure>> {
    let per_image = (f.width * f.height * f.bands) as f64 / 1e6;
    let images = ((c.megasamples / per_image).round() as usize).max(f.files.len());
    let decoders = [Decoder::Current, Decoder::Gdal];
    let errors: Vec<Option<String>> = decoders
        .iter()
        .map(|&d| {
            f.files
                .iter()
                .find_map(|p| decode(d, p).err().map(|e| format!("{e:#}")))
        })
        .collect();
    let mut seconds = [Vec::new(), Vec::new()];
    for round in 0..c.rounds {
        for k in 0..2 {
            let i = if round % 2 == 0 { k } else { 1 - k };
            if errors[i].is_some() {
                continue;
            }
            let started = Instant::now();
            let failed = (0..images)
                .into_par_iter()
                .filter(|j| decode(decoders[i], &f.files[j % f.files.len()]).is_err())
                .count();
            anyhow::ensure!(
                failed == 0,
                "{}: {failed} decodes failed after an untimed pass that read every file",
                f.name
            );
            seconds[i].push(started.elapsed().as_secs_f64());
        }
    }
    Ok(decoders
        .iter()
        .zip(errors)
        .zip(seconds)
        .map(|((&decoder, error), s)| {
            let median = (!s.is_empty()).then(|| super::median_min(&s).0);
            let ips = median.map(|m| images as f64 / m);
            Measure {
                format: f.name.clone(),
                decoder,
                threads,
                images,
                images_per_s: ips,
                mp_per_s: ips.map(|v| v * (f.width * f.height) as f64 / 1e6),
                error,
            }
        })
        .collect())
}

/// One decode of `path` to what the data pipeline consumes. The result is
/// passed to `black_box` so that no part of the work is optimised away.
fn decode(d: Decoder, path: &Path) -> anyhow::Result<()> {
    let limits = DecodeOptions::default();
    match d {
        Decoder::Current => {
            let img = decode_rgb8_file(path, None, &limits, None)?;
            std::hint::black_box(img);
        }
        Decoder::Gdal => {
            let reader = RasterReader::open(path)?;
            let info = reader.info();
            let (w, h) = (info.width, info.height);
            let bands: Vec<usize> = (1..=info.bands.len()).collect();
            let eight_bit_rgb =
                bands.len() == 3 && info.bands.iter().all(|b| b.data_type == "Byte");
            let window = Window {
                x: 0,
                y: 0,
                width: w,
                height: h,
            };
            let r = reader.read(&bands, window, (w, h), Resampling::Nearest, &limits)?;
            if eight_bit_rgb {
                std::hint::black_box(interleave_rgb8(&r.data, w, h));
            } else {
                std::hint::black_box(r);
            }
        }
    }
    Ok(())
}

/// Band-major 3 x H x W `f32` (8-bit values) to an interleaved RGB8 image.
fn interleave_rgb8(data: &[f32], w: usize, h: usize) -> RgbImage {
    let plane = w * h;
    let mut out = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        out.extend([
            data[i] as u8,
            data[plane + i] as u8,
            data[2 * plane + i] as u8,
        ]);
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("3 x w x h values")
}

/// Renders the scenes with the built-in world and writes every format.
fn write_formats(dir: &Path, c: &DecodeBenchConfig) -> anyhow::Result<Vec<Format>> {
    let scenes = |size: usize, sub: &str| -> anyhow::Result<Vec<PathBuf>> {
        // Every field today; the default fills those other branches add.
        #[allow(clippy::needless_update)]
        let config = SynthConfig {
            locations: c.files,
            max_views: 1,
            size,
            seed: c.seed,
            jpeg_quality: 90,
            ..SynthConfig::default()
        };
        let m = synth::generate(&dir.join(sub), &config)?;
        Ok(m.records.iter().map(|r| m.resolve(r)).collect())
    };
    let large = scenes(c.size, "jpeg-large")?;
    let small = scenes(300, "jpeg-300")?;
    let limits = DecodeOptions::default();
    let rgb: Vec<RgbImage> = large
        .iter()
        .map(|p| decode_file(p, None, &limits))
        .collect::<Result<_, _>>()?;
    let s = c.size;
    let mut formats = vec![
        format(&format!("jpeg-{s}"), "JPEG q90, 3 x uint8", s, 3, large),
        format("jpeg-300", "JPEG q90, 3 x uint8", 300, 3, small),
    ];
    let out = |name: &str, i: usize, ext: &str| dir.join(format!("{name}-{i}.{ext}"));
    let png: Vec<PathBuf> = (0..rgb.len()).map(|i| out("png", i, "png")).collect();
    for (img, p) in rgb.iter().zip(&png) {
        img.save(p)
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    formats.push(format(&format!("png-{s}"), "PNG, 3 x uint8", s, 3, png));
    let deflate = ["COMPRESS=DEFLATE", "PREDICTOR=2"];
    let mut tiffs = |name: String, what, bands: usize, side: usize, opts: &[&str]| {
        let paths: Vec<PathBuf> = (0..rgb.len()).map(|i| out(&name, i, "tif")).collect();
        for (img, p) in rgb.iter().zip(&paths) {
            write_geotiff(img, bands, side, opts, p)?;
        }
        formats.push(format(&name, what, side, bands, paths));
        anyhow::Ok(())
    };
    tiffs(
        format!("tiff-rgb8-{s}"),
        "GeoTIFF Deflate, 3 x uint8",
        3,
        s,
        &["COMPRESS=DEFLATE"],
    )?;
    tiffs(
        format!("tiff-u16x4-{s}"),
        "GeoTIFF Deflate+pred 2, 4 x uint16",
        4,
        s,
        &deflate,
    )?;
    let tiled = ["TILED=YES", "INTERLEAVE=BAND", deflate[0], deflate[1]];
    tiffs(
        "tiff-u16x13-264".into(),
        "GeoTIFF tiled band-il. Deflate+pred 2, 13 x uint16",
        13,
        264,
        &tiled,
    )?;
    Ok(formats)
}

/// The two loader sets (see [`DecodeBenchConfig::loader_images`]): the
/// same scenes, as JPEG and as 13-band GeoTIFFs, each with a manifest
/// whose rows are the built-in world's (positions, dates, locations).
fn write_loader_sets(dir: &Path, c: &DecodeBenchConfig) -> anyhow::Result<()> {
    const SIDE: usize = 264;
    let jpeg_dir = dir.join("loader-jpeg-264");
    #[allow(clippy::needless_update)]
    let config = SynthConfig {
        locations: c.loader_images,
        max_views: 1,
        size: SIDE,
        seed: c.seed,
        jpeg_quality: 90,
        ..SynthConfig::default()
    };
    let mut m = synth::generate(&jpeg_dir, &config)?;
    let tiff_dir = dir.join("loader-u16x13-264");
    std::fs::create_dir_all(&tiff_dir)
        .with_context(|| format!("{}: cannot create", tiff_dir.display()))?;
    let limits = DecodeOptions::default();
    let options = [
        "TILED=YES",
        "INTERLEAVE=BAND",
        "COMPRESS=DEFLATE",
        "PREDICTOR=2",
    ];
    for (i, r) in m.records.iter_mut().enumerate() {
        let img = decode_file(&jpeg_dir.join(&r.path), None, &limits)?;
        let name = format!("scene{i}.tif");
        write_geotiff(&img, 13, SIDE, &options, &tiff_dir.join(&name))?;
        r.path = name;
    }
    m.root = tiff_dir.clone();
    m.source = tiff_dir.join("manifest.csv");
    m.write(&m.source)
}

fn format(
    name: &str,
    what: &'static str,
    side: usize,
    bands: usize,
    files: Vec<PathBuf>,
) -> Format {
    Format {
        name: name.to_string(),
        what,
        width: side,
        height: side,
        bands,
        files,
    }
}

/// Writes `img`'s top-left `side` x `side` pixels as a GeoTIFF with GDAL:
/// 3 bands as uint8 RGB, else `bands` uint16 bands of reflectance-like
/// values (0..~10000, Sentinel-2 L2A's scale), each a different mix of
/// the scene's red, green and blue so that bands are not copies.
fn write_geotiff(
    img: &RgbImage,
    bands: usize,
    side: usize,
    options: &[&str],
    path: &Path,
) -> anyhow::Result<()> {
    let err = || format!("{}: cannot write", path.display());
    let mem = DriverManager::get_driver_by_name("MEM")?;
    let side = side.min(img.width() as usize).min(img.height() as usize);
    let pixel = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0.map(f32::from);
    let ds = if bands == 3 {
        let ds = mem.create_with_band_type::<u8, _>("", side, side, 3)?;
        for b in 0..3 {
            write_band(&ds, b, side, |x, y| pixel(x, y)[b] as u8)?;
        }
        ds
    } else {
        let ds = mem.create_with_band_type::<u16, _>("", side, side, bands)?;
        for b in 0..bands {
            let t = b as f32 / bands as f32;
            let w = [1.0 - t, 0.5 + 0.5 * t, t];
            write_band(&ds, b, side, |x, y| {
                let p = pixel(x, y);
                (13.0 * (w[0] * p[0] + w[1] * p[1] + w[2] * p[2])) as u16
            })?;
        }
        ds
    };
    let gtiff = DriverManager::get_driver_by_name("GTiff")?;
    let mut opts = RasterCreationOptions::new();
    for o in options {
        let (k, v) = o.split_once('=').expect("KEY=VALUE");
        opts.set_name_value(k, v)?;
    }
    ds.create_copy(&gtiff, path, &opts).with_context(err)?;
    Ok(())
}

fn write_band<T: GdalType + Copy>(
    ds: &gdal::Dataset,
    b: usize,
    side: usize,
    f: impl Fn(usize, usize) -> T,
) -> anyhow::Result<()> {
    let data: Vec<T> = (0..side)
        .flat_map(|y| (0..side).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect();
    let mut band = ds.rasterband(b + 1)?;
    band.write((0, 0), (side, side), &mut Buffer::new((side, side), data))?;
    Ok(())
}

/// `files.csv` (format,path,width,height,bands) for the PyTorch yardstick.
fn write_listing(dir: &Path, formats: &[Format]) -> anyhow::Result<()> {
    let mut csv = String::from("format,path,width,height,bands\n");
    for f in formats {
        for p in &f.files {
            let line = format!(
                "{},{},{},{},{}\n",
                f.name,
                p.display(),
                f.width,
                f.height,
                f.bands
            );
            csv.push_str(&line);
        }
    }
    let path = dir.join("files.csv");
    std::fs::write(&path, csv).with_context(|| format!("{}: cannot write", path.display()))
}

/// The table `geossl bench decode` prints: images/s and MP/s of both
/// decoders at each thread count, and which is faster on one thread.
pub fn table(formats: &[Format], measures: &[Measure]) -> String {
    let cell = |f: &str, d: Decoder, t: usize| {
        measures
            .iter()
            .find(|m| m.format == f && m.decoder == d && m.threads == t)
    };
    let mut threads: Vec<usize> = measures.iter().map(|m| m.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut out = String::from("| format | what | bands |");
    for t in &threads {
        out.push_str(&format!(
            " current, {t} thr: img/s (MP/s) | GDAL, {t} thr: img/s (MP/s) |"
        ));
    }
    out.push_str(" faster on 1 thread |\n|---|---|---|");
    out.push_str(&"---|---|".repeat(threads.len()));
    out.push_str("---|\n");
    for f in formats {
        out.push_str(&format!("| {} | {} | {} |", f.name, f.what, f.bands));
        for &t in &threads {
            for d in [Decoder::Current, Decoder::Gdal] {
                let text = match cell(&f.name, d, t) {
                    Some(Measure {
                        images_per_s: Some(v),
                        mp_per_s: Some(mp),
                        ..
                    }) => format!("{v:.1} ({mp:.1})"),
                    _ => "cannot read".to_string(),
                };
                out.push_str(&format!(" {text} |"));
            }
        }
        out.push_str(&format!(
            " {} |\n",
            verdict(
                cell(&f.name, Decoder::Current, 1),
                cell(&f.name, Decoder::Gdal, 1)
            )
        ));
    }
    out
}

/// "current 1.23x" / "GDAL 1.50x" / "GDAL only" by single-thread images/s.
fn verdict(current: Option<&Measure>, gdal: Option<&Measure>) -> String {
    let ips = |m: Option<&Measure>| m.and_then(|m| m.images_per_s);
    match (ips(current), ips(gdal)) {
        (Some(c), Some(g)) if c >= g => format!("current {:.2}x", c / g),
        (Some(c), Some(g)) => format!("GDAL {:.2}x", g / c),
        (Some(_), None) => "current only".into(),
        (None, Some(_)) => "GDAL only".into(),
        (None, None) => "neither".into(),
    }
}
