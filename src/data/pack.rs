//! `geossl pack`: a packed, pre-resized copy of a manifest's images for
//! training at speed (issue 17), and [`PackedRows`], which reads it in
//! place of the files.
//!
//! A pack is a folder of WebDataset tar shards (POSIX ustar, the layout
//! the Python `webdataset` package and `tarfile` read):
//! - `shard-000000.tar`, ...: each sample is consecutive members with one
//!   key (no dots in it): `KEY.jpg` (RGB, S x S, JPEG at quality Q) or
//!   `KEY.npy` (uint8 [S, S, 3] for `--raw` RGB; float32 [C, S, S] unit
//!   values for every other input, with `KEY.valid.npy` uint8 [S, S], 1 =
//!   valid, when the image had NoData), then `KEY.json` (the manifest row).
//!   The image is the row's crop after torchvision's Resize(S) +
//!   CenterCrop(S), so a pack at S = the run's pre-size holds exactly the
//!   pretraining pre-step. Every view of a place (`location_id`) lies in
//!   one shard, consecutively (temporal positives read a place's other
//!   views); shards are about `--shard-size` MB.
//! - `index.csv`: one line per sample, `key,row,path,crop,location_id,
//!   shard,member,offset,size,crc32c` (offset and size: the byte range of
//!   the image member's data in the shard; crc32c of those bytes, hex),
//!   then `valid_offset,valid_size,valid_crc32c` of the `KEY.valid.npy`
//!   member (empty when there is none): readers need not parse tar.
//! - `unreadable.csv`: the rows that could not be read when packing
//!   (`row,path,crop,error`); readers treat them as bad images.
//! - `pack.json` ([`PackInfo`]), written last: its presence means the
//!   pack is complete. `SHA256SUMS`: `sha256sum -c` over the shards.
//! - `shard-000000.json`, ...: each shard's index rows and a fingerprint of
//!   what it should hold, so that a re-run skips the complete shards.
//!
//! Headers carry mtime 0, uid/gid 0 and mode 0644, and shards are planned
//! from the manifest alone, so the same manifest and flags give the same
//! bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::RgbImage;
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::augment::{bands_center_crop, resize_center_crop};
use super::band_image::{BandImage, SourceImage};
use super::bands::{BandSelection, InputSpec, Radiometry};
use super::decode::{catch_panic, decode_bytes, DecodeError, DecodeOptions, DecodeScale};
use super::manifest::{CropBox, Manifest};
use super::source::ImageSource;
use crate::formats::atomic_write::{write_atomically, write_string};
use crate::formats::npy;

/// `format` in `pack.json`.
pub const FORMAT: &str = "geossl-pack";
/// `version` in `pack.json`.
pub const VERSION: u32 = 1;
/// The pack's description, written last.
pub const INFO_FILE: &str = "pack.json";
/// One line per sample.
pub const INDEX_FILE: &str = "index.csv";
/// The rows that could not be read when packing.
pub const UNREADABLE_FILE: &str = "unreadable.csv";
/// `sha256sum -c` over the shards.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// `--quality` by default: PIL's highest recommended JPEG quality.
pub const DEFAULT_QUALITY: u8 = 95;
/// `--shard-size` by default, MB: in WebDataset's usual 100 MB-1 GB
/// range (few files to open, yet many shards to spread over workers).
pub const DEFAULT_SHARD_MB: f64 = 256.0;
/// Modification time of every member (the epoch): the same input gives
/// the same bytes.
const MTIME: u64 = 0;
/// Samples encoded in parallel before they are appended in order: bounds
/// a shard's memory while its samples are encoded.
const CHUNK: usize = 64;

/// How a sample's image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `KEY.jpg`: RGB JPEG at `quality` (the default input only).
    Jpeg,
    /// `KEY.npy`: uint8 [S, S, 3] for the default input, else float32
    /// [C, S, S] unit values with `KEY.valid.npy` where there is NoData.
    Npy,
}

/// `pack.json`: what the pack holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackInfo {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The side S of every stored image, pixels.
    pub size: u32,
    pub encoding: Encoding,
    /// JPEG quality (1-100) with [`Encoding::Jpeg`].
    pub quality: Option<u8>,
    /// The resolved input when it is not [`InputSpec::rgb`] (the stored
    /// values are its unit values; a run must read the same input).
    pub input: Option<InputSpec>,
    /// The manifest the pack was made from.
    pub source_manifest: String,
    /// Samples stored.
    pub samples: usize,
    /// Rows left out because they could not be read (`unreadable.csv`).
    pub unreadable: usize,
    pub shards: Vec<ShardInfo>,
}

/// One shard in `pack.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name in the pack's folder.
    pub file: String,
    pub samples: usize,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// One line of `index.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRow {
    pub key: String,
    /// The row in the source manifest, 0-based.
    pub row: usize,
    /// The row's path as the manifest writes it.
    pub path: String,
    /// The row's crop `x,y,w,h`, empty for none.
    pub crop: String,
    pub location_id: String,
    /// The shard's file name.
    pub shard: String,
    /// The image member's name (`KEY.jpg` or `KEY.npy`).
    pub member: String,
    /// Byte offset of the image member's data in the shard.
    pub offset: u64,
    /// Bytes of the image member's data.
    pub size: u64,
    /// CRC-32C (Castagnoli) of those bytes, 8 hex digits.
    pub crc32c: String,
    /// The `KEY.valid.npy` member's data, when the image had NoData.
    pub valid_offset: Option<u64>,
    pub valid_size: Option<u64>,
    pub valid_crc32c: Option<String>,
}

/// One line of `unreadable.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreadableRow {
    pub row: usize,
    pub path: String,
    pub crop: String,
    /// The decoder's message.
    pub error: String,
}

/// A shard's sidecar (`shard-NNNNNN.json`): written once the shard is
/// complete; a re-run keeps a shard whose sidecar has the plan's
/// fingerprint and whose file has the recorded length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sidecar {
    /// SHA-256 of the pack settings and the shard's rows ([`fingerprint`]).
    plan: String,
    shard: ShardInfo,
    samples: Vec<IndexRow>,
    unreadable: Vec<UnreadableRow>,
}

/// How `geossl pack` writes a pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The side S of the stored images.
    pub size: u32,
    /// JPEG quality, 1-100 (RGB without `raw`).
    pub quality: u8,
    /// Raw arrays instead of JPEG for RGB (other inputs are always raw).
    pub raw: bool,
    /// Target bytes per shard (a place is never split, so a shard may be
    /// larger; a shard holds at least one place).
    pub shard_bytes: u64,
    /// The input the stored images are read with.
    pub input: InputSpec,
    /// How the source JPEGs are decoded (DCT scaling to at least S, or
    /// every pixel).
    pub decode: DecodeScale,
    /// No progress bar.
    pub quiet: bool,
}

impl PackOptions {
    /// The images' encoding: JPEG for the default RGB input unless `raw`.
    pub fn encoding(&self) -> Encoding {
        match self.input.is_default_rgb() && !self.raw {
            true => Encoding::Jpeg,
            false => Encoding::Npy,
        }
    }
}

/// What [`pack`] did.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub info: PackInfo,
    /// Shards written by this run, and kept from an earlier one.
    pub written: usize,
    pub kept: usize,
    /// Rows that could not be read, left out.
    pub unreadable: Vec<UnreadableRow>,
}

/// Shard `i`'s file name.
pub fn shard_name(i: usize) -> String {
    format!("shard-{i:06}.tar")
}

fn sidecar_name(i: usize) -> String {
    format!("shard-{i:06}.json")
}

/// The manifest's places: rows grouped by `location_id` in the order of
/// their first row, each place's rows in manifest order; a row without a
/// `location_id` is a place of its own.
pub fn places(manifest: &Manifest) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (row, r) in manifest.records.iter().enumerate() {
        match &r.location_id {
            Some(id) => {
                let i = *by_id.entry(id.as_str()).or_insert_with(|| {
                    out.push(Vec::new());
                    out.len() - 1
                });
                out[i].push(row);
            }
            None => out.push(vec![row]),
        }
    }
    out
}

/// Places in order into shards of at most `per_shard` samples; a place
/// larger than that is a shard of its own. Depends on the manifest only,
/// so that a re-run plans the same shards.
pub fn plan_shards(places: &[Vec<usize>], per_shard: usize) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for place in places {
        if !current.is_empty() && current.len() + place.len() > per_shard {
            shards.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(place);
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// The expected bytes of one sample, for planning shards before anything
/// is encoded: a JPEG at 0.5 byte per pixel (quality ~95 on satellite
/// imagery), raw arrays exactly; plus tar headers and the row's JSON.
fn estimated_sample_bytes(options: &PackOptions) -> u64 {
    let px = options.size as u64 * options.size as u64;
    let image = match (options.encoding(), options.input.is_default_rgb()) {
        (Encoding::Jpeg, _) => px / 2,
        (Encoding::Npy, true) => 3 * px,
        (Encoding::Npy, false) => 4 * px * options.input.channels() as u64 + px,
    };
    image + 3 * 1024
}

/// The key of manifest row `row` among `rows` rows: the row number,
/// zero-padded to at least 6 digits (sorts as the rows; no dots).
fn key_of(row: usize, rows: usize) -> String {
    let width = rows.saturating_sub(1).to_string().len().max(6);
    format!("{row:0width$}")
}

/// The crop as the manifest writes it (`x,y,w,h`), empty for none.
fn crop_text(crop: Option<CropBox>) -> String {
    crop.map(|c| c.to_string()).unwrap_or_default()
}

/// `KEY.json`: the manifest row (path, crop, location_id, timestamp, lat,
/// lon, label, split, geo_cluster and the extra columns, those present),
/// with its key and source row.
fn row_json(manifest: &Manifest, row: usize, key: &str) -> Vec<u8> {
    use serde_json::{json, Value};
    let r = &manifest.records[row];
    let mut m = serde_json::Map::new();
    m.insert("key".into(), json!(key));
    m.insert("row".into(), json!(row));
    m.insert("path".into(), json!(r.path));
    let text = |v: Option<String>| v.map(Value::String);
    let fields = [
        ("crop", text(r.crop.map(|c| c.to_string()))),
        ("location_id", text(r.location_id.clone())),
        ("timestamp", text(r.timestamp.map(|t| t.to_string()))),
        ("lat", r.position.map(|p| json!(p.lat))),
        ("lon", r.position.map(|p| json!(p.lon))),
        ("label", text(r.label.clone())),
        ("split", text(r.split.map(|s| s.to_string()))),
        ("geo_cluster", r.geo_cluster.map(|g| json!(g))),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            m.insert(name.into(), v);
        }
    }
    for (name, value) in manifest.extra_columns.iter().zip(&r.extra) {
        // An extra column never hides the key or a standard column.
        m.entry(name.clone()).or_insert_with(|| json!(value));
    }
    serde_json::to_vec(&Value::Object(m)).expect("a JSON object serialises")
}

/// What a shard must hold, as a hash: the pack settings and each row's
/// key and JSON. A sidecar with another fingerprint is from another plan.
fn fingerprint(settings: &str, manifest: &Manifest, rows: &[usize]) -> String {
    let mut h = Sha256::new();
    h.update(settings.as_bytes());
    for &row in rows {
        h.update(b"\n");
        h.update(row_json(
            manifest,
            row,
            &key_of(row, manifest.records.len()),
        ));
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pack settings that change the stored bytes, as JSON.
fn settings_text(options: &PackOptions) -> String {
    serde_json::json!({
        "format": FORMAT,
        "version": VERSION,
        "size": options.size,
        "encoding": options.encoding(),
        "quality": quality_of(options),
        "input": input_of(options),
        "decode_scale": crate::settings::choice_name(options.decode),
    })
    .to_string()
}

fn quality_of(options: &PackOptions) -> Option<u8> {
    (options.encoding() == Encoding::Jpeg).then_some(options.quality)
}

fn input_of(options: &PackOptions) -> Option<InputSpec> {
    (!options.input.is_default_rgb()).then(|| options.input.clone())
}

/// A sample's encoded members: the image, and the validity mask when the
/// image has invalid pixels.
struct Encoded {
    image: Vec<u8>,
    valid: Option<Vec<u8>>,
}

/// Decodes manifest row `row` from its file (the crop, JPEGs at the
/// smallest DCT scale that keeps it at least `size`), Resize(size) +
/// CenterCrop(size), and encodes it. Errors: the decoder's or resampler's
/// message (a panic is caught and is one too).
fn encode_row(manifest: &Manifest, row: usize, options: &PackOptions) -> Result<Encoded, String> {
    let (s, side) = (options.size, options.size as usize);
    let path = manifest.resolve(&manifest.records[row]);
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let run = || -> Result<Encoded, String> {
        let img = ImageSource::Files
            .load(
                manifest,
                row,
                &options.input,
                &DecodeOptions {
                    scale: options.decode,
                    ..DecodeOptions::default()
                },
                Some(s),
            )
            .map_err(|e| e.to_string())?;
        match img {
            SourceImage::Rgb8(rgb) => {
                let out = resize_center_crop(&rgb, s).map_err(|e| named(&e))?;
                let image = match options.encoding() {
                    Encoding::Jpeg => jpeg_bytes(&out, options.quality),
                    Encoding::Npy => npy::to_bytes(&[side, side, 3], out.as_raw()),
                }
                .map_err(|e| named(&e))?;
                Ok(Encoded { image, valid: None })
            }
            SourceImage::Bands(b) => {
                let out = bands_center_crop(&b, s).map_err(|e| named(&e))?;
                let image =
                    npy::to_bytes(&[out.channels, side, side], &out.data).map_err(|e| named(&e))?;
                let valid = (out.valid_count < out.plane())
                    .then(|| {
                        let mask: Vec<u8> = out.valid.iter().map(|&v| v as u8).collect();
                        npy::to_bytes(&[side, side], &mask)
                    })
                    .transpose()
                    .map_err(|e| named(&e))?;
                Ok(Encoded { image, valid })
            }
        }
    };
    catch_panic(run).unwrap_or_else(|p| Err(named(&format!("panicked: {p}"))))
}

/// `img` as a baseline JPEG at `quality` (the `image` crate's encoder).
fn jpeg_bytes(img: &RgbImage, quality: u8) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    img.write_with_encoder(encoder)
        .map_err(|e| anyhow::anyhow!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Appends member `name` with `data` (a ustar header with fixed metadata);
/// returns the offset of its data in the shard. Names are short (under
/// 100 bytes), so the header is one 512-byte block.
fn append<W: Write>(
    tar: &mut tar::Builder<&mut Hashing<W>>,
    name: &str,
    data: &[u8],
) -> std::io::Result<u64> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let offset = tar.get_ref().bytes + 512;
    tar.append(&header, data)?;
    Ok(offset)
}

/// What every shard of one run shares.
struct Job<'a> {
    manifest: &'a Manifest,
    dir: &'a Path,
    options: &'a PackOptions,
    settings: String,
    bar: ProgressBar,
}

impl Job<'_> {
    /// Shard `i`'s sidecar when it was completed by an earlier run of the
    /// same plan and its file has the recorded length and SHA-256 (a shard
    /// damaged since is written again, not kept under its old checksum).
    fn complete(&self, i: usize, plan: &str) -> Option<Sidecar> {
        use sha2::Digest;
        let text = std::fs::read_to_string(self.dir.join(sidecar_name(i))).ok()?;
        let sidecar: Sidecar = serde_json::from_str(&text).ok()?;
        let path = self.dir.join(shard_name(i));
        let len = std::fs::metadata(&path).ok()?.len();
        if sidecar.plan != plan || sidecar.shard.bytes != len {
            return None;
        }
        let mut sha = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(&path).ok()?, &mut sha).ok()?;
        (hex(&sha.finalize()) == sidecar.shard.sha256).then_some(sidecar)
    }

    /// Shard `i` of `rows`: kept when complete, else written (tar under a
    /// temporary name, renamed when complete, then its sidecar). Returns
    /// the sidecar and whether the shard was written.
    fn shard(&self, i: usize, rows: &[usize]) -> anyhow::Result<(Sidecar, bool)> {
        let plan = fingerprint(&self.settings, self.manifest, rows);
        if let Some(done) = self.complete(i, &plan) {
            self.bar.inc(rows.len() as u64);
            return Ok((done, false));
        }
        let file = shard_name(i);
        let path = self.dir.join(&file);
        let mut samples = Vec::new();
        let mut unreadable = Vec::new();
        let (mut bytes, mut sha) = (0, String::new());
        write_atomically(&path, |w| {
            let mut hashing = Hashing {
                inner: w,
                sha: Sha256::new(),
                bytes: 0,
            };
            let mut tar = tar::Builder::new(&mut hashing);
            for chunk in rows.chunks(CHUNK) {
                let encoded: Vec<_> = chunk
                    .par_iter()
                    .map(|&row| encode_row(self.manifest, row, self.options))
                    .collect();
                for (&row, e) in chunk.iter().zip(encoded) {
                    match e {
                        Ok(e) => samples.push(self.append_sample(&mut tar, &file, row, &e)?),
                        Err(error) => unreadable.push(self.unreadable(row, error)),
                    }
                    self.bar.inc(1);
                }
            }
            tar.finish()?;
            drop(tar);
            bytes = hashing.bytes;
            sha = hex(&hashing.sha.finalize());
            Ok(())
        })
        .with_context(|| format!("{}: cannot write the shard", path.display()))?;
        let sidecar = Sidecar {
            plan,
            shard: ShardInfo {
                file,
                samples: samples.len(),
                bytes,
                sha256: sha,
            },
            samples,
            unreadable,
        };
        write_string(
            &self.dir.join(sidecar_name(i)),
            &serde_json::to_string(&sidecar)?,
        )?;
        Ok((sidecar, true))
    }

    /// Appends row `row`'s members (image, validity, JSON) to the shard
    /// `file`; returns its line of the index.
    fn append_sample<W: Write>(
        &self,
        tar: &mut tar::Builder<&mut Hashing<W>>,
        file: &str,
        row: usize,
        e: &Encoded,
    ) -> anyhow::Result<IndexRow> {
        let r = &self.manifest.records[row];
        let key = key_of(row, self.manifest.records.len());
        let ext = match self.options.encoding() {
            Encoding::Jpeg => "jpg",
            Encoding::Npy => "npy",
        };
        let member = format!("{key}.{ext}");
        let offset = append(tar, &member, &e.image)?;
        let valid = match &e.valid {
            Some(v) => Some((append(tar, &format!("{key}.valid.npy"), v)?, v)),
            None => None,
        };
        append(
            tar,
            &format!("{key}.json"),
            &row_json(self.manifest, row, &key),
        )?;
        Ok(IndexRow {
            row,
            path: r.path.clone(),
            crop: crop_text(r.crop),
            location_id: r.location_id.clone().unwrap_or_default(),
            shard: file.to_string(),
            member,
            offset,
            size: e.image.len() as u64,
            crc32c: format!("{:08x}", crc32c::crc32c(&e.image)),
            valid_offset: valid.map(|(o, _)| o),
            valid_size: valid.map(|(_, v)| v.len() as u64),
            valid_crc32c: valid.map(|(_, v)| format!("{:08x}", crc32c::crc32c(v))),
            key,
        })
    }

    fn unreadable(&self, row: usize, error: String) -> UnreadableRow {
        let r = &self.manifest.records[row];
        UnreadableRow {
            row,
            path: r.path.clone(),
            crop: crop_text(r.crop),
            error,
        }
    }
}

/// Writes the pack of `manifest` into `dir` (created): every row's crop
/// after Resize(size) + CenterCrop(size), encoded as `options` says, in
/// shards written in parallel (rayon's pool), with a progress bar over the
/// samples. Resumable: shards completed by an earlier run of the same
/// manifest and options are kept; a run killed mid-way loses at most the
/// shards it was writing. Rows that cannot be read are left out and
/// returned (and listed in `unreadable.csv`). Errors: bad options, a
/// folder or file that cannot be written, no row readable.
pub fn pack(manifest: &Manifest, dir: &Path, options: &PackOptions) -> anyhow::Result<PackReport> {
    anyhow::ensure!(
        options.size > 0,
        "--size must be a positive number of pixels"
    );
    anyhow::ensure!(
        (1..=100).contains(&options.quality),
        "--quality must be 1 to 100 (got {})",
        options.quality
    );
    anyhow::ensure!(options.shard_bytes > 0, "--shard-size must be positive");
    anyhow::ensure!(
        !manifest.records.is_empty(),
        "{}: the manifest has no rows",
        manifest.source.display()
    );
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the pack folder", dir.display()))?;
    // Incomplete from here until this run writes it again.
    remove_if_present(&dir.join(INFO_FILE))?;
    let per_shard = (options.shard_bytes / estimated_sample_bytes(options)).max(1) as usize;
    let plan = plan_shards(&places(manifest), per_shard);
    remove_stale_files(dir, plan.len())?;
    let job = Job {
        manifest,
        dir,
        options,
        settings: settings_text(options),
        bar: crate::progress::bar_unless(
            options.quiet,
            manifest.records.len() as u64,
            "packing samples",
        ),
    };
    let done: Vec<(Sidecar, bool)> = super::collect_in_order(
        plan.par_iter()
            .enumerate()
            .map(|(i, rows)| job.shard(i, rows)),
    )?;
    job.bar.finish_and_clear();
    finish(manifest, dir, options, done)
}

/// Writes `index.csv`, `unreadable.csv`, `SHA256SUMS` and last `pack.json`
/// from the shards' sidecars.
fn finish(
    manifest: &Manifest,
    dir: &Path,
    options: &PackOptions,
    done: Vec<(Sidecar, bool)>,
) -> anyhow::Result<PackReport> {
    let written = done.iter().filter(|d| d.1).count();
    let kept = done.len() - written;
    let mut samples = Vec::new();
    let mut unreadable = Vec::new();
    let mut shards = Vec::new();
    for (s, _) in done {
        samples.extend(s.samples);
        unreadable.extend(s.unreadable);
        shards.push(s.shard);
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "{}: none of the {} rows could be read (first: {})",
        manifest.source.display(),
        manifest.records.len(),
        unreadable.first().map_or("", |u| u.error.as_str())
    );
    write_csv(&dir.join(INDEX_FILE), &INDEX_COLUMNS, &samples)?;
    write_csv(&dir.join(UNREADABLE_FILE), &UNREADABLE_COLUMNS, &unreadable)?;
    let sums: String = shards
        .iter()
        .map(|s| format!("{}  {}\n", s.sha256, s.file))
        .collect();
    write_string(&dir.join(SUMS_FILE), &sums)?;
    let info = PackInfo {
        format: FORMAT.into(),
        version: VERSION,
        size: options.size,
        encoding: options.encoding(),
        quality: quality_of(options),
        input: input_of(options),
        source_manifest: std::fs::canonicalize(&manifest.source)
            .unwrap_or_else(|_| manifest.source.clone())
            .display()
            .to_string(),
        samples: samples.len(),
        unreadable: unreadable.len(),
        shards,
    };
    write_string(
        &dir.join(INFO_FILE),
        &(serde_json::to_string_pretty(&info)? + "\n"),
    )?;
    Ok(PackReport {
        info,
        written,
        kept,
        unreadable,
    })
}

/// The columns of `index.csv` ([`IndexRow`]).
pub const INDEX_COLUMNS: [&str; 13] = [
    "key",
    "row",
    "path",
    "crop",
    "location_id",
    "shard",
    "member",
    "offset",
    "size",
    "crc32c",
    "valid_offset",
    "valid_size",
    "valid_crc32c",
];

/// The columns of `unreadable.csv` ([`UnreadableRow`]).
pub const UNREADABLE_COLUMNS: [&str; 4] = ["row", "path", "crop", "error"];

/// Writes `rows` as CSV under `header` (also when there are no rows).
fn write_csv<T: Serialize>(path: &Path, header: &[&str], rows: &[T]) -> anyhow::Result<()> {
    write_atomically(path, |w| {
        let mut out = csv::WriterBuilder::new().has_headers(false).from_writer(w);
        out.write_record(header)?;
        for r in rows {
            out.serialize(r)?;
        }
        out.flush()?;
        Ok(())
    })
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("{}: cannot remove", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes what a killed run left (temporary shard files) and the shards
/// and sidecars numbered `count` or above (an earlier, longer plan).
fn remove_stale_files(dir: &Path, count: usize) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().to_string();
        let numbered = name
            .strip_prefix("shard-")
            .and_then(|s| s.strip_suffix(".tar").or_else(|| s.strip_suffix(".json")))
            .filter(|n| n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok());
        let temporary = name.starts_with(".shard-") && name.contains(".tmp-");
        if temporary || numbered.is_some_and(|n| n >= count) {
            remove_if_present(&dir.join(&name))?;
        }
    }
    Ok(())
}

/// Reads `dir/pack.json`. Errors: no pack there (or an incomplete one), or
/// another format or version.
pub fn read_info(dir: &Path) -> anyhow::Result<PackInfo> {
    let path = dir.join(INFO_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read; is {} a pack written by geossl pack (an interrupted pack has no {INFO_FILE}: run geossl pack again)?",
            path.display(),
            dir.display()
        )
    })?;
    let info: PackInfo = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a geossl pack description", path.display()))?;
    anyhow::ensure!(
        info.format == FORMAT && info.version == VERSION,
        "{}: format {} version {}; this geossl reads {FORMAT} version {VERSION}",
        path.display(),
        info.format,
        info.version
    );
    Ok(info)
}

/// The input a run with `--bands selection --radiometry radiometry` reads
/// from the pack in `dir`: the one the pack was made with (its stored
/// values are that input's unit values, so its band statistics come with
/// it). Errors: the pack cannot be read, or it was made with other flags.
pub fn packed_input(
    dir: &Path,
    selection: &BandSelection,
    radiometry: &Radiometry,
) -> anyhow::Result<InputSpec> {
    let info = read_info(dir)?;
    let input = info.input.unwrap_or_else(InputSpec::rgb);
    anyhow::ensure!(
        input.selection == *selection && input.radiometry == *radiometry,
        "{}: the pack holds --bands {} --radiometry {}, but the run reads --bands {selection} --radiometry {radiometry}; pack the manifest again with the run's flags (geossl pack --bands --radiometry)",
        dir.display(),
        input.selection,
        input.radiometry
    );
    Ok(input)
}

/// A byte range of a shard with its CRC-32C.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
    crc: u32,
}

/// Where a manifest row's sample is.
#[derive(Debug, Clone)]
enum Slot {
    Sample {
        shard: usize,
        key: String,
        image: Member,
        valid: Option<Member>,
    },
    /// Left out when packing; the decoder's message then.
    Unreadable { error: String },
}

/// A pack opened for one manifest: each manifest row's sample, read from
/// the shards with positioned reads (no lock: any number of loader
/// threads read at once).
pub struct PackedRows {
    dir: PathBuf,
    info: PackInfo,
    /// The shard files, open, in [`PackInfo::shards`] order, with their paths.
    shards: Vec<(File, String)>,
    /// Per manifest row: its sample, and its path as the manifest writes it.
    slots: Vec<(Slot, String)>,
    /// The stored values' input ([`PackInfo::input`], else RGB).
    input: InputSpec,
}

impl std::fmt::Debug for PackedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedRows({}, {} rows)",
            self.dir.display(),
            self.slots.len()
        )
    }
}

impl PackedRows {
    /// Opens the pack in `dir` and finds every row of `manifest` in it by
    /// (path, crop); a pack of another size or encoding is fine. Errors:
    /// no complete pack in `dir`; a shard missing or of another length than
    /// `pack.json` says; rows of `manifest` not in the pack (their count and
    /// the first ones named).
    pub fn open(dir: &Path, manifest: &Manifest) -> anyhow::Result<Self> {
        let info = read_info(dir)?;
        let shards = open_shards(dir, &info)?;
        let found = packed_slots(dir, &info)?;
        let mut missing = Vec::new();
        let slots = manifest
            .records
            .iter()
            .map(|r| match found.get(&(r.path.clone(), r.crop)) {
                Some(slot) => (slot.clone(), r.path.clone()),
                None => {
                    missing.push(match r.crop {
                        Some(c) => format!("{} (crop {c})", r.path),
                        None => r.path.clone(),
                    });
                    (
                        Slot::Unreadable {
                            error: String::new(),
                        },
                        r.path.clone(),
                    )
                }
            })
            .collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
            anyhow::bail!(
                "{}: {} of the {} rows of {} are not in the pack (made from {}), e.g. {}; run geossl pack again on this manifest",
                dir.display(),
                missing.len(),
                manifest.records.len(),
                manifest.source.display(),
                info.source_manifest,
                shown.join(", ")
            );
        }
        let input = info.input.clone().unwrap_or_else(InputSpec::rgb);
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
            shards,
            slots,
            input,
        })
    }

    /// The pack's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `pack.json`.
    pub fn info(&self) -> &PackInfo {
        &self.info
    }

    /// The input the pack's values were made with ([`InputSpec::rgb`] for
    /// JPEG and uint8 packs).
    pub fn input(&self) -> &InputSpec {
        &self.input
    }

    /// Errors unless `spec` is the pack's input: stored unit values of one
    /// input cannot be read as another.
    pub fn check_input(&self, spec: &InputSpec) -> Result<(), String> {
        if *spec == self.input {
            return Ok(());
        }
        let detail = match (
            spec.selection == self.input.selection,
            spec.radiometry == self.input.radiometry,
        ) {
            (true, true) => {
                " (the same flags, resolved otherwise: other band statistics or files)".to_string()
            }
            _ => String::new(),
        };
        Err(format!(
            "the pack holds --bands {} --radiometry {} ({} channels), but the run reads --bands {} --radiometry {} ({} channels){detail}; pack the manifest again with the run's input",
            self.input.selection,
            self.input.radiometry,
            self.input.channels(),
            spec.selection,
            spec.radiometry,
            spec.channels()
        ))
    }

    /// Row `row`'s sample, decoded for `spec`: the stored S x S image
    /// ([`SourceImage::Rgb8`] for JPEG and uint8 packs, else
    /// [`SourceImage::Bands`]); a JPEG sample at a DCT scale when
    /// `resize_to` allows one ([`decode_packed_jpeg`]). Errors ([`DecodeError::Packed`], naming
    /// the shard, the key and the row's path): the member's CRC-32C does
    /// not match (a corrupt shard), it cannot be read or decoded, `spec` is
    /// not the pack's input, or the row could not be read when packing.
    pub fn load(
        &self,
        row: usize,
        spec: &InputSpec,
        options: &DecodeOptions,
        resize_to: Option<u32>,
    ) -> Result<SourceImage, DecodeError> {
        let Some((slot, path)) = self.slots.get(row) else {
            return Err(self.error("", "", "", format!("row {row} is not in the manifest")));
        };
        let (shard, key, image, valid) = match slot {
            Slot::Sample {
                shard,
                key,
                image,
                valid,
            } => (*shard, key, image, valid),
            Slot::Unreadable { error } => {
                let file = self.dir.join(UNREADABLE_FILE).display().to_string();
                let message = format!("could not be read when the pack was made: {error}");
                return Err(self.error(&file, "-", path, message));
            }
        };
        let shard_path = &self.shards[shard].1;
        let fail = |message: String| self.error(shard_path, key, path, message);
        self.check_input(spec).map_err(fail)?;
        let bytes = self.read_member(shard, image).map_err(fail)?;
        match self.info.encoding {
            Encoding::Jpeg => decode_packed_jpeg(&bytes, key, options, resize_to)
                .map(SourceImage::Rgb8)
                .map_err(|e| fail(e.to_string())),
            Encoding::Npy => {
                let valid = valid
                    .map(|m| self.read_member(shard, &m))
                    .transpose()
                    .map_err(fail)?;
                self.npy_image(&bytes, valid.as_deref(), key).map_err(fail)
            }
        }
    }

    fn error(&self, shard: &str, key: &str, path: &str, message: String) -> DecodeError {
        DecodeError::Packed {
            shard: shard.to_string(),
            key: key.to_string(),
            path: path.to_string(),
            message,
        }
    }

    /// The bytes of `m` in shard `shard`, their CRC-32C checked.
    fn read_member(&self, shard: usize, m: &Member) -> Result<Vec<u8>, String> {
        let mut bytes = vec![0u8; m.size as usize];
        self.shards[shard]
            .0
            .read_exact_at(&mut bytes, m.offset)
            .map_err(|e| format!("cannot read {} bytes at offset {}: {e}", m.size, m.offset))?;
        if crc32c::crc32c(&bytes) != m.crc {
            return Err(format!(
                "checksum mismatch: the shard is corrupt; run sha256sum -c {SUMS_FILE} in {}",
                self.dir.display()
            ));
        }
        Ok(bytes)
    }

    /// A `.npy` member (and its validity) as the image it stores.
    fn npy_image(
        &self,
        bytes: &[u8],
        valid: Option<&[u8]>,
        key: &str,
    ) -> Result<SourceImage, String> {
        let s = self.info.size as usize;
        let name = format!("{key}.npy");
        let shape_error =
            |shape: &[usize], want: String| format!("{name}: shape {shape:?}, expected {want}");
        if self.info.input.is_none() {
            let (shape, data) = npy::from_bytes::<u8>(bytes, &name).map_err(|e| e.to_string())?;
            if shape != [s, s, 3] {
                return Err(shape_error(&shape, format!("[{s}, {s}, 3]")));
            }
            let img = RgbImage::from_raw(s as u32, s as u32, data).expect("S x S x 3 values");
            return Ok(SourceImage::Rgb8(img));
        }
        let c = self.input.channels();
        let (shape, data) = npy::from_bytes::<f32>(bytes, &name).map_err(|e| e.to_string())?;
        if shape != [c, s, s] {
            return Err(shape_error(&shape, format!("[{c}, {s}, {s}]")));
        }
        let valid: Vec<bool> = match valid {
            None => vec![true; s * s],
            Some(v) => {
                let vname = format!("{key}.valid.npy");
                let (shape, mask) = npy::from_bytes::<u8>(v, &vname).map_err(|e| e.to_string())?;
                if shape != [s, s] {
                    return Err(format!("{vname}: shape {shape:?}, expected [{s}, {s}]"));
                }
                mask.into_iter().map(|m| m != 0).collect()
            }
        };
        let mut img = BandImage {
            width: s,
            height: s,
            channels: c,
            data,
            valid,
            valid_count: 0,
        };
        img.recount();
        Ok(SourceImage::Bands(img))
    }
}

/// Each (path, crop) of the pack: its sample (`index.csv`), or the
/// decoder's message when it could not be packed (`unreadable.csv`).
fn packed_slots(
    dir: &Path,
    info: &PackInfo,
) -> anyhow::Result<HashMap<(String, Option<CropBox>), Slot>> {
    let by_file: HashMap<&str, usize> = info
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.file.as_str(), i))
        .collect();
    let mut found: HashMap<(String, Option<CropBox>), Slot> = HashMap::new();
    let index_path = dir.join(INDEX_FILE);
    for r in read_csv::<IndexRow>(&index_path)? {
        let shard = *by_file.get(r.shard.as_str()).with_context(|| {
            format!(
                "{}: row {} names shard {}, which {INFO_FILE} does not list",
                index_path.display(),
                r.key,
                r.shard
            )
        })?;
        let slot = index_slot(&r, shard).with_context(|| index_path.display().to_string())?;
        found.insert((r.path, parse_crop(&r.crop)?), slot);
    }
    for u in read_csv::<UnreadableRow>(&dir.join(UNREADABLE_FILE))? {
        let slot = Slot::Unreadable { error: u.error };
        found.entry((u.path, parse_crop(&u.crop)?)).or_insert(slot);
    }
    Ok(found)
}

/// The shards of `info`, open, each of the length `pack.json` records.
fn open_shards(dir: &Path, info: &PackInfo) -> anyhow::Result<Vec<(File, String)>> {
    info.shards
        .iter()
        .map(|s| {
            let path = dir.join(&s.file);
            let name = path.display().to_string();
            let file = File::open(&path).with_context(|| format!("{name}: cannot open the shard"))?;
            let len = file.metadata().with_context(|| name.clone())?.len();
            anyhow::ensure!(
                len == s.bytes,
                "{name}: {len} bytes, but {INFO_FILE} says {}: the shard is incomplete or was replaced; run sha256sum -c {SUMS_FILE} in {} and geossl pack again",
                s.bytes,
                dir.display()
            );
            Ok((file, name))
        })
        .collect()
}

/// The sample an index line describes, in shard number `shard`.
fn index_slot(r: &IndexRow, shard: usize) -> anyhow::Result<Slot> {
    let crc = |text: &str| {
        u32::from_str_radix(text, 16)
            .map_err(|_| anyhow::anyhow!("sample {}: crc32c '{text}' is not 8 hex digits", r.key))
    };
    let valid = match (r.valid_offset, r.valid_size, &r.valid_crc32c) {
        (Some(offset), Some(size), Some(c)) => Some(Member {
            offset,
            size,
            crc: crc(c)?,
        }),
        _ => None,
    };
    Ok(Slot::Sample {
        shard,
        key: r.key.clone(),
        image: Member {
            offset: r.offset,
            size: r.size,
            crc: crc(&r.crc32c)?,
        },
        valid,
    })
}

fn parse_crop(text: &str) -> anyhow::Result<Option<CropBox>> {
    match text.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("crop '{t}': {e}")),
    }
}

fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let name = path.display().to_string();
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("{name}: cannot read"))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{name}:{}", i + 2)))
        .collect()
}

/// A packed JPEG sample decoded by libjpeg-turbo (1.5x zune-jpeg's speed
/// on whole images, `geossl bench decode`; the pack's pixels are its own
/// re-encoding, so no earlier result is at stake), at the smallest DCT scale
/// that keeps it at least `resize_to` under [`DecodeScale::Auto`] (an
/// evaluation at 224 px from a 448 px pack decodes at 1/2); a JPEG
/// libjpeg-turbo's path does not take goes to zune-jpeg ([`decode_bytes`]).
fn decode_packed_jpeg(
    bytes: &[u8],
    key: &str,
    options: &DecodeOptions,
    resize_to: Option<u32>,
) -> Result<image::RgbImage, DecodeError> {
    let name = format!("{key}.jpg");
    if let (DecodeScale::Auto, Some(r)) = (options.scale, resize_to) {
        if let Some((img, _)) = super::jpeg::decode_scaled(bytes, &name, None, options, r)? {
            return Ok(img);
        }
    }
    match super::jpeg::decode_at(bytes, &name, None, options, 1) {
        Err(DecodeError::Unsupported { .. }) => decode_bytes(bytes, &name, None, options),
        decoded => decoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A manifest of `rows` (path, location_id) in `dir`, row 1 with a
    /// crop, with a 20 x 14 JPEG for each path but those `missing`
    /// (unreadable rows).
    fn jpeg_manifest(dir: &Path, rows: &[(&str, &str)], missing: &[&str]) -> Manifest {
        let mut csv = String::from("path,location_id,crop\n");
        for (i, (path, place)) in rows.iter().enumerate() {
            if !missing.contains(path) {
                let img = RgbImage::from_fn(20, 14, |x, y| {
                    Rgb([(x * 12) as u8, (y * 17) as u8, (i * 40) as u8])
                });
                img.save(dir.join(path)).unwrap();
            }
            // One row with a crop: packs store the crop.
            let crop = if i == 1 { "\"2,1,16,12\"" } else { "" };
            csv += &format!("{path},{place},{crop}\n");
        }
        std::fs::write(dir.join("m.csv"), &csv).unwrap();
        Manifest::read(&dir.join("m.csv")).unwrap()
    }

    fn options(size: u32, raw: bool) -> PackOptions {
        PackOptions {
            size,
            quality: 95,
            raw,
            shard_bytes: 1,
            input: InputSpec::rgb(),
            decode: DecodeScale::Auto,
            quiet: true,
        }
    }

    const ROWS: [(&str, &str); 5] = [
        ("a.jpg", "p0"),
        ("b.jpg", "p1"),
        ("c.jpg", "p0"),
        ("d.jpg", "p2"),
        ("e.jpg", "p1"),
    ];

    #[test]
    fn places_stay_whole_and_in_first_row_order() {
        let dir = tempfile::tempdir().unwrap();
        let m = jpeg_manifest(dir.path(), &ROWS, &ROWS.map(|r| r.0));
        assert_eq!(places(&m), vec![vec![0, 2], vec![1, 4], vec![3]]);
        let p = places(&m);
        assert_eq!(plan_shards(&p, 1), vec![vec![0, 2], vec![1, 4], vec![3]]);
        assert_eq!(plan_shards(&p, 3), vec![vec![0, 2], vec![1, 4, 3]]);
        assert_eq!(plan_shards(&p, 4), vec![vec![0, 2, 1, 4], vec![3]]);
        assert_eq!(plan_shards(&p, 100), vec![vec![0, 2, 1, 4, 3]]);
        // Without a location_id column each row is a place.
        let alone = Manifest::parse("path\na.jpg\nb.jpg\n".as_bytes(), "m.csv", dir.path());
        assert_eq!(places(&alone.unwrap()), vec![vec![0], vec![1]]);
        assert_eq!(key_of(7, 10), "000007");
        assert_eq!(key_of(7, 12_345_678), "00000007");
    }

    #[test]
    fn raw_packs_hold_the_center_crop_exactly_and_jpeg_packs_s_by_s() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = jpeg_manifest(d, &ROWS, &[]);
        let report = pack(&m, &d.join("raw"), &options(8, true)).unwrap();
        assert_eq!((report.info.samples, report.info.shards.len()), (5, 3));
        assert_eq!(report.info.encoding, Encoding::Npy);
        let packed = PackedRows::open(&d.join("raw"), &m).unwrap();
        let spec = InputSpec::rgb();
        for row in 0..5 {
            let want = match ImageSource::Files
                .load(&m, row, &spec, &DecodeOptions::default(), Some(8))
                .unwrap()
            {
                SourceImage::Rgb8(img) => resize_center_crop(&img, 8).unwrap(),
                other => panic!("{other:?}"),
            };
            let got = packed
                .load(row, &spec, &DecodeOptions::default(), None)
                .unwrap();
            assert_eq!(got, SourceImage::Rgb8(want), "row {row}");
        }
        let report = pack(&m, &d.join("jpeg"), &options(8, false)).unwrap();
        assert_eq!(report.info.quality, Some(95));
        let packed = PackedRows::open(&d.join("jpeg"), &m).unwrap();
        let img = packed
            .load(1, &spec, &DecodeOptions::default(), None)
            .unwrap();
        assert_eq!(img.dimensions(), (8, 8));
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error_naming_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = jpeg_manifest(d, &ROWS, &[]);
        let out = d.join("pack");
        pack(&m, &out, &options(8, false)).unwrap();
        let index: Vec<IndexRow> = read_csv(&out.join(INDEX_FILE)).unwrap();
        let r = index.iter().find(|r| r.row == 4).unwrap();
        let shard = out.join(&r.shard);
        let mut bytes = std::fs::read(&shard).unwrap();
        bytes[(r.offset + r.size / 2) as usize] ^= 0x40;
        std::fs::write(&shard, bytes).unwrap();
        let packed = PackedRows::open(&out, &m).unwrap();
        let spec = InputSpec::rgb();
        let e = packed
            .load(4, &spec, &DecodeOptions::default(), None)
            .unwrap_err()
            .to_string();
        let named = format!("{}: sample {} (e.jpg)", shard.display(), r.key);
        assert!(e.starts_with(&named), "{e}");
        assert!(
            e.contains("checksum mismatch: the shard is corrupt; run sha256sum -c SHA256SUMS in"),
            "{e}"
        );
        // The other sample of that shard reads.
        assert!(packed
            .load(1, &spec, &DecodeOptions::default(), None)
            .is_ok());
    }

    #[test]
    fn unreadable_rows_are_left_out_and_read_as_bad_images() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = jpeg_manifest(d, &ROWS, &["c.jpg"]);
        let out = d.join("pack");
        let report = pack(&m, &out, &options(8, false)).unwrap();
        assert_eq!(report.info.samples, 4);
        assert_eq!(report.unreadable.len(), 1);
        assert!(
            report.unreadable[0].error.contains("c.jpg"),
            "{:?}",
            report.unreadable
        );
        let packed = PackedRows::open(&out, &m).unwrap();
        let e = packed
            .load(2, &InputSpec::rgb(), &DecodeOptions::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("could not be read when the pack was made"),
            "{e}"
        );
        assert!(e.contains("unreadable.csv"), "{e}");
    }

    #[test]
    fn rows_not_in_the_pack_and_another_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = jpeg_manifest(d, &ROWS[..3], &[]);
        let out = d.join("pack");
        pack(&m, &out, &options(8, false)).unwrap();
        let more = jpeg_manifest(d, &ROWS, &[]);
        let e = PackedRows::open(&out, &more).unwrap_err().to_string();
        assert!(e.contains("2 of the 5 rows"), "{e}");
        assert!(e.contains("d.jpg, e.jpg"), "{e}");
        assert!(e.contains("run geossl pack again"), "{e}");
        // The rows of `m` in another order are found by (path, crop).
        let mut shuffled = m.clone();
        shuffled.records.reverse();
        let packed = PackedRows::open(&out, &shuffled).unwrap();
        let spec = InputSpec::rgb();
        let crop_row = packed.load(1, &spec, &DecodeOptions::default(), None);
        assert_eq!(crop_row.unwrap().dimensions(), (8, 8));
        let mut other = InputSpec::rgb();
        other.radiometry = Radiometry::Scale(vec![255.0]);
        let e = packed
            .load(0, &other, &DecodeOptions::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the pack holds --bands rgb --radiometry auto"),
            "{e}"
        );
        let e = packed_input(&out, &BandSelection::All, &Radiometry::Auto).unwrap_err();
        assert!(e.to_string().contains("pack the manifest again"), "{e}");
        assert_eq!(
            packed_input(&out, &BandSelection::Rgb, &Radiometry::Auto).unwrap(),
            InputSpec::rgb()
        );
    }

    #[test]
    fn a_rerun_keeps_complete_shards_and_rewrites_a_missing_one_identically() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = jpeg_manifest(d, &ROWS, &[]);
        let out = d.join("pack");
        let first = pack(&m, &out, &options(8, false)).unwrap();
        assert_eq!((first.written, first.kept), (3, 0));
        let shard1 = std::fs::read(out.join(shard_name(1))).unwrap();
        let again = pack(&m, &out, &options(8, false)).unwrap();
        assert_eq!((again.written, again.kept), (0, 3));
        std::fs::remove_file(out.join(shard_name(1))).unwrap();
        // A temporary file of a killed run is cleared.
        std::fs::write(out.join(".shard-000002.tar.tmp-1"), b"partial").unwrap();
        let resumed = pack(&m, &out, &options(8, false)).unwrap();
        assert_eq!((resumed.written, resumed.kept), (1, 2));
        assert_eq!(std::fs::read(out.join(shard_name(1))).unwrap(), shard1);
        assert_eq!(resumed.info, first.info);
        assert!(!out.join(".shard-000002.tar.tmp-1").exists());
        // A complete shard damaged since (same length) is written again,
        // not kept under its old checksum.
        let mut damaged = shard1.clone();
        damaged[700] ^= 0x40;
        std::fs::write(out.join(shard_name(1)), &damaged).unwrap();
        let repaired = pack(&m, &out, &options(8, false)).unwrap();
        assert_eq!((repaired.written, repaired.kept), (1, 2));
        assert_eq!(std::fs::read(out.join(shard_name(1))).unwrap(), shard1);
        // Other settings are another plan: every shard is written again,
        // and the shards of a longer plan go.
        let fewer = PackOptions {
            shard_bytes: 1 << 30,
            ..options(8, false)
        };
        let repacked = pack(&m, &out, &fewer).unwrap();
        assert_eq!((repacked.written, repacked.kept), (1, 0));
        assert!(!out.join(shard_name(1)).exists() && !out.join(sidecar_name(2)).exists());
    }
}
