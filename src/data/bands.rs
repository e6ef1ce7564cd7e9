//! The model's input channels: which bands of each image are read
//! ([`BandSelection`], `--bands`), how their stored values become values in
//! [0, 1] before augmentation ([`Radiometry`], `--radiometry`), the
//! per-dataset per-band statistics that `geossl index stats` computes
//! ([`BandStats`], stored beside the manifest), and the resolved
//! [`InputSpec`] that a run records in its checkpoints and exports.
//!
//! The pipeline of one image (see `docs` in the README, "Multispectral
//! rasters"): stored values of the selected bands -> radiometry -> "unit"
//! values in [0, 1] (clamped) -> augmentation (torchvision's semantics on
//! [0, 1] floats) -> per-channel normalisation `(u - mean) / std` with
//! [`InputSpec::mean`] / [`InputSpec::std`] -> pixels that are NoData (or
//! masked) in any selected band are set to [`NODATA_FILL`] = 0, the
//! per-band mean after standardisation, and counted.
//!
//! JPEG and PNG files with the default selection and radiometry keep the
//! RGB8 path of [`super::decode`] and ImageNet's normalisation unchanged
//! (what torchvision's pretrained weights and the paper use).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use anyhow::Context;

use super::augment::{IMAGENET_MEAN, IMAGENET_STD};
use super::manifest::Manifest;
use super::raster::{BandInfo, RasterReader};

/// The normalised value written at pixels that are NoData or masked in any
/// selected band: 0, the band's mean after per-band standardisation.
pub const NODATA_FILL: f32 = 0.0;

/// The percentile of an image's valid values that [`Radiometry::Stretch`]
/// maps to 1 when none is given (geossl's earlier 16-bit behaviour).
pub const DEFAULT_STRETCH_PERCENTILE: f32 = 99.9;

/// Unit-domain mean and standard deviation that [`Radiometry::Stats`]
/// produces by construction: `(v - (mean - 2 std)) / (4 std)` has mean 0.5
/// and standard deviation 0.25, so normalising with them gives back the
/// per-band standardised value `(v - mean) / std` (within +-2 std).
pub const STATS_UNIT_MEAN: f32 = 0.5;
/// See [`STATS_UNIT_MEAN`].
pub const STATS_UNIT_STD: f32 = 0.25;

/// `--bands`: which bands of each image become the model's input channels,
/// in order. Serialised as its command-line text (`config.toml`:
/// `bands = "4,3,2"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BandSelection {
    /// Red, green, blue: a JPEG's or PNG's colours; for a GDAL raster the
    /// bands whose colour interpretation is red, green and blue, else bands
    /// 1, 2, 3. The default (the paper's input).
    #[default]
    Rgb,
    /// Every band of the raster, in GDAL's order (every image of a dataset
    /// must have the same number).
    All,
    /// 1-based GDAL band numbers in the order given (`4,3,2`).
    Indices(Vec<usize>),
    /// Band descriptions (`B04,B03,B02`), matched exactly against each
    /// raster's band descriptions.
    Names(Vec<String>),
}

impl FromStr for BandSelection {
    type Err = String;

    /// `rgb`, `all`, a comma list of 1-based numbers (`4,3,2`) or of band
    /// descriptions (`B04,B03,B02`; not mixed with numbers).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "rgb" => return Ok(Self::Rgb),
            "all" => return Ok(Self::All),
            "" => return Err("empty band list (expected rgb, all, 4,3,2 or B04,B03,B02)".into()),
            _ => {}
        }
        let items: Vec<&str> = s.split(',').map(str::trim).collect();
        if let Some(i) = items.iter().position(|i| i.is_empty()) {
            return Err(format!("'{s}': band {} of the list is empty", i + 1));
        }
        if items.iter().all(|i| i.bytes().all(|b| b.is_ascii_digit())) {
            let numbers = items
                .iter()
                .map(|i| match i.parse::<usize>() {
                    Ok(0) | Err(_) => Err(format!(
                        "'{s}': band '{i}' is not a band number (GDAL numbers bands from 1)"
                    )),
                    Ok(n) => Ok(n),
                })
                .collect::<Result<_, _>>()?;
            return Ok(Self::Indices(numbers));
        }
        if let Some(i) = items.iter().find(|i| i.bytes().all(|b| b.is_ascii_digit())) {
            return Err(format!(
                "'{s}': mixes band numbers ('{i}') and band descriptions; use one or the other"
            ));
        }
        Ok(Self::Names(items.iter().map(|i| i.to_string()).collect()))
    }
}

impl fmt::Display for BandSelection {
    /// The form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rgb => f.write_str("rgb"),
            Self::All => f.write_str("all"),
            Self::Indices(v) => {
                let parts: Vec<String> = v.iter().map(usize::to_string).collect();
                f.write_str(&parts.join(","))
            }
            Self::Names(v) => f.write_str(&v.join(",")),
        }
    }
}

/// `--radiometry`: how each selected band's stored values become "unit"
/// values in [0, 1] (clamped) before augmentation. Serialised as its
/// command-line text (`radiometry = "scale:10000"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Radiometry {
    /// 8-bit bands: value / 255; other data types: [`Self::Stretch`] at
    /// [`DEFAULT_STRETCH_PERCENTILE`]. The default, and geossl's behaviour
    /// before `--radiometry` (JPEG and PNG are 8-bit).
    #[default]
    Auto,
    /// Per image and band: 0 stays 0 and the given percentile of the band's
    /// valid values (NoData excluded) maps to 1. Brightness differences
    /// between images are lost.
    Stretch { percentile: f32 },
    /// value / divisor: one divisor for every band or one per selected band
    /// (`scale:10000`: Sentinel-2 L2A reflectance, the torchgeo / SSL4EO
    /// convention; `scale:255` for 8-bit).
    Scale(Vec<f32>),
    /// `(value - (mean - 2 std)) / (4 std)` per band with the dataset's
    /// statistics from `geossl index stats` (SSL4EO-S12's normalisation).
    Stats,
}

impl FromStr for Radiometry {
    type Err = String;

    /// `auto`, `stretch`, `stretch:P` (0 < P <= 100), `scale:D` or
    /// `scale:D1,D2,...` (divisors > 0), `stats`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s, None),
        };
        let expected =
            "expected auto, stretch, stretch:99.9, scale:10000, scale:D1,D2,... or stats";
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("auto", None) => Ok(Self::Auto),
            ("stats", None) => Ok(Self::Stats),
            ("stretch", None) => Ok(Self::Stretch {
                percentile: DEFAULT_STRETCH_PERCENTILE,
            }),
            ("stretch", Some(p)) => match p.parse::<f32>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Self::Stretch { percentile: p }),
                _ => Err(format!(
                    "'{s}': the percentile must be a number in (0, 100]"
                )),
            },
            ("scale", Some(d)) => {
                let divisors = d
                    .split(',')
                    .map(|x| match x.trim().parse::<f32>() {
                        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
                        _ => Err(format!("'{s}': divisor '{}' is not a number > 0", x.trim())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::Scale(divisors))
            }
            ("scale", None) => Err(format!("'{s}': scale needs its divisor, e.g. scale:10000")),
            _ => Err(format!("'{s}': unknown radiometry; {expected}")),
        }
    }
}

impl fmt::Display for Radiometry {
    /// The form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Stats => f.write_str("stats"),
            Self::Stretch { percentile } => write!(f, "stretch:{percentile}"),
            Self::Scale(d) => {
                let parts: Vec<String> = d.iter().map(f32::to_string).collect();
                write!(f, "scale:{}", parts.join(","))
            }
        }
    }
}

/// Serde as text, the form the command line reads (see `try_from` above).
macro_rules! serde_as_text {
    ($($ty:ty),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }
    )*};
}
serde_as_text!(BandSelection, Radiometry);

/// One band's statistics over a dataset, in stored values (before any
/// radiometry), NoData and masked pixels excluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandStat {
    /// 1-based GDAL band number.
    pub band: usize,
    /// The band's description in the first raster read ("" when none).
    pub name: String,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Valid pixels that entered the statistics.
    pub valid_pixels: u64,
}

/// Per-band statistics of a dataset: what `geossl index stats M.csv`
/// computes (sampled, NoData excluded) and writes beside the manifest as
/// [`BandStats::path_for`]; read by [`Radiometry::Stats`] and by the
/// per-band normalisation of multispectral input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandStats {
    /// Every band of the dataset's rasters, in GDAL's order.
    pub bands: Vec<BandStat>,
    /// Images whose pixels were sampled, and the manifest's rows.
    pub images_sampled: usize,
    pub images_total: usize,
    /// The sampling's seed (the same seed gives the same statistics).
    pub seed: u64,
    /// The manifest's file name, as given.
    pub manifest: String,
}

impl BandStats {
    /// Where the statistics of `manifest` live: beside it, `M.csv` ->
    /// `M.band_stats.json`.
    pub fn path_for(manifest: &Path) -> PathBuf {
        let stem = manifest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "manifest".into());
        manifest.with_file_name(format!("{stem}.band_stats.json"))
    }

    /// Reads the statistics written beside `manifest`, `Ok(None)` when
    /// there are none. Errors name the file.
    pub fn load_for(manifest: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path_for(manifest);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let stats: Self = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not band statistics: {e}", path.display()))?;
        Ok(Some(stats))
    }

    /// Writes the statistics beside `manifest` (atomically), returning the
    /// path written.
    pub fn save_for(&self, manifest: &Path) -> anyhow::Result<PathBuf> {
        let path = Self::path_for(manifest);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        crate::formats::atomic_write::write_string(&path, &text)?;
        Ok(path)
    }

    /// The statistics of 1-based `band`, if present.
    pub fn band(&self, band: usize) -> Option<&BandStat> {
        self.bands.iter().find(|b| b.band == band)
    }
}

/// The model's input, resolved against a dataset: what a run records in
/// its checkpoints and exports, and what evaluation reuses (so probe, kNN,
/// embed and fine-tuning read images exactly as pretraining did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The selection as given (`--bands`).
    pub selection: BandSelection,
    /// 1-based GDAL band numbers read, one per input channel, C = len.
    /// `[1, 2, 3]` for JPEG/PNG RGB.
    pub bands: Vec<usize>,
    /// A name per channel: the band's description, else `band N`
    /// (`red`, `green`, `blue` for JPEG/PNG).
    pub band_names: Vec<String>,
    /// `--radiometry`.
    pub radiometry: Radiometry,
    /// Per-channel normalisation of unit values, `(u - mean) / std`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Stored-value statistics per channel when [`Radiometry::Stats`]
    /// needs them ((mean, std) per channel), else empty.
    pub stats: Vec<(f64, f64)>,
    /// The channels holding red, green and blue, when the input has them:
    /// colour jitter (hue, saturation) and grayscale apply only to these
    /// and only when C = 3; the report's composites show them.
    pub rgb: Option<[usize; 3]>,
}

impl InputSpec {
    /// The paper's input: the three colour channels of JPEG/PNG, 8-bit /
    /// 255, ImageNet's normalisation (torchvision's `Normalize`).
    pub fn rgb() -> Self {
        Self {
            selection: BandSelection::Rgb,
            bands: vec![1, 2, 3],
            band_names: vec!["red".into(), "green".into(), "blue".into()],
            radiometry: Radiometry::Auto,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            stats: Vec::new(),
            rgb: Some([0, 1, 2]),
        }
    }

    /// The whole transform from stored values `v` to the model's input `x`
    /// as one formula, for exports' metadata (`input_transform`) and for
    /// users rebuilding the input elsewhere (e.g. the +-2 std clipping of
    /// `stats`, which `normalize_mean` / `normalize_std` alone do not say).
    pub fn transform_formula(&self) -> String {
        let unit = match &self.radiometry {
            Radiometry::Auto => "u = v / 255 for 8-bit bands, else clamp(v / p99.9(v over the image's valid pixels), 0, 1)".to_string(),
            Radiometry::Stretch { percentile } => {
                format!("u = clamp(v / p{percentile}(v over the image's valid pixels), 0, 1)")
            }
            Radiometry::Scale(d) => {
                let d: Vec<String> = d.iter().map(f32::to_string).collect();
                format!("u = clamp(v / D, 0, 1) with D = [{}]", d.join(", "))
            }
            Radiometry::Stats => "u = clamp((v - (mean - 2 std)) / (4 std), 0, 1) with (mean, std) per channel = input_spec.stats (SSL4EO-S12)".to_string(),
        };
        format!(
            "{unit}; x = (u - normalize_mean) / normalize_std per channel; x = {NODATA_FILL} at pixels invalid (NoData, mask, alpha) in any selected band"
        )
    }

    /// Input channels, C.
    pub fn channels(&self) -> usize {
        self.bands.len()
    }

    /// Whether this is [`Self::rgb`], for which JPEG and PNG files keep the
    /// RGB8 decoding and augmentation path unchanged.
    pub fn is_default_rgb(&self) -> bool {
        *self == Self::rgb()
    }
}

/// A band of the first image as [`InputSpec::resolve`] sees it.
struct FileBand {
    description: String,
    /// GDAL's colour interpretation name ("Red", "Gray", "Alpha", ...).
    color: String,
}

impl InputSpec {
    /// Resolves `--bands` and `--radiometry` against `manifest`'s first
    /// image: 1-based band numbers and names (descriptions, else the colour
    /// ("red") or `band N`), the channels holding red, green and blue, and
    /// the per-channel normalisation (see the module doc):
    /// - [`Radiometry::Stats`]: [`STATS_UNIT_MEAN`] / [`STATS_UNIT_STD`],
    ///   and `stats` must hold every selected band;
    /// - exactly the three RGB channels (otherwise): ImageNet's mean/std;
    /// - [`Radiometry::Scale`] with `stats`: `mean_b / D`, `std_b / D` (per-band
    ///   standardisation);
    /// - anything else: 0.5 / 0.25 per channel.
    ///
    /// JPEG and PNG are red, green, blue (bands 1, 2, 3, named `red`,
    /// `green`, `blue`); `rgb` on a GDAL raster takes the bands whose colour
    /// interpretation is Red, Green, Blue, else bands 1, 2, 3 (band 1 three
    /// times for a single-band gray raster, as gray JPEGs are read); `all`
    /// takes every band except alpha bands. `rgb` with `auto` on JPEG/PNG
    /// gives exactly [`Self::rgb`].
    ///
    /// Errors name the manifest's first image and the band: an empty
    /// manifest, a file GDAL cannot open, a band number beyond the file's,
    /// a description no band has, a scale with neither 1 nor C divisors,
    /// `stats` without statistics (run `geossl index stats M.csv`).
    pub fn resolve(
        selection: BandSelection,
        radiometry: Radiometry,
        manifest: &Manifest,
        stats: Option<&BandStats>,
    ) -> anyhow::Result<Self> {
        let (file, bands) = first_readable_bands(manifest)?;
        let numbers = select(&selection, &bands, &file)?;
        let names = numbers
            .iter()
            .map(|&b| {
                let band = &bands[b - 1];
                match (band.description.as_str(), band.color.as_str()) {
                    ("", "Red" | "Green" | "Blue" | "Gray") => band.color.to_lowercase(),
                    ("", _) => format!("band {b}"),
                    (d, _) => d.to_string(),
                }
            })
            .collect();
        let rgb = rgb_positions(&selection, &numbers, &bands);
        let mut spec = Self {
            selection,
            bands: numbers,
            band_names: names,
            radiometry,
            mean: Vec::new(),
            std: Vec::new(),
            stats: Vec::new(),
            rgb,
        };
        spec.derive_normalisation(manifest, stats, &file)?;
        Ok(spec)
    }

    /// Fills `mean`, `std` and `stats` from the radiometry (see
    /// [`Self::resolve`]) and checks the scale's divisors.
    fn derive_normalisation(
        &mut self,
        manifest: &Manifest,
        stats: Option<&BandStats>,
        file: &str,
    ) -> anyhow::Result<()> {
        let c = self.channels();
        let per_band = |stats: &BandStats| -> anyhow::Result<Vec<(f64, f64)>> {
            self.bands
                .iter()
                .map(|&b| {
                    let s = stats.band(b).with_context(|| {
                        format!(
                            "{}: the band statistics have no band {b} ({file} has it); \
                             run `geossl index stats {}` again",
                            BandStats::path_for(&manifest.source).display(),
                            manifest.source.display()
                        )
                    })?;
                    // A constant band (std 0) standardises to 0, not 0/0.
                    Ok((s.mean, s.std.max(1e-6 * s.mean.abs().max(1.0))))
                })
                .collect()
        };
        let rgb_triple = self.rgb == Some([0, 1, 2]) && c == 3;
        let unit = (vec![STATS_UNIT_MEAN; c], vec![STATS_UNIT_STD; c]);
        let (mean, std) = match &self.radiometry {
            Radiometry::Stats => {
                let stats = stats.with_context(|| {
                    format!(
                        "radiometry stats needs the dataset's band statistics ({} not found); \
                         run `geossl index stats {}` first",
                        BandStats::path_for(&manifest.source).display(),
                        manifest.source.display()
                    )
                })?;
                self.stats = per_band(stats)?;
                unit
            }
            Radiometry::Scale(d) if d.len() != 1 && d.len() != c => anyhow::bail!(
                "radiometry {}: {} divisors for {c} bands ({}); give one divisor or one per band",
                self.radiometry,
                d.len(),
                self.selection
            ),
            _ if rgb_triple => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
            Radiometry::Scale(d) => match stats {
                Some(stats) => {
                    let s = per_band(stats)?;
                    let div = |i: usize| if d.len() == 1 { d[0] } else { d[i] } as f64;
                    let mean = (0..c).map(|i| (s[i].0 / div(i)) as f32).collect();
                    let std = (0..c)
                        .map(|i| ((s[i].1 / div(i)) as f32).max(f32::MIN_POSITIVE))
                        .collect();
                    (mean, std)
                }
                None => unit,
            },
            _ => unit,
        };
        self.mean = mean;
        self.std = std;
        Ok(())
    }

    /// The divisor of channel `c` under [`Radiometry::Scale`].
    pub fn scale_divisor(&self, c: usize) -> Option<f32> {
        match &self.radiometry {
            Radiometry::Scale(d) if d.len() == 1 => Some(d[0]),
            Radiometry::Scale(d) => d.get(c).copied(),
            _ => None,
        }
    }
}

impl From<&BandInfo> for FileBand {
    fn from(b: &BandInfo) -> Self {
        Self {
            description: b.description.clone(),
            color: b.color.clone(),
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// 1-based band numbers of `selection` in a file with `bands`.
fn select(selection: &BandSelection, bands: &[FileBand], file: &str) -> anyhow::Result<Vec<usize>> {
    let n = bands.len();
    let by_color = |name: &str| bands.iter().position(|b| b.color == name).map(|i| i + 1);
    Ok(match selection {
        BandSelection::Rgb => match (by_color("Red"), by_color("Green"), by_color("Blue")) {
            (Some(r), Some(g), Some(b)) => vec![r, g, b],
            _ if n >= 3 => vec![1, 2, 3],
            _ if n >= 1 && bands[0].color != "Alpha" && bands.iter().skip(1).all(|b| b.color == "Alpha") => {
                vec![1, 1, 1]
            }
            _ => anyhow::bail!(
                "{file}: has {n} bands; --bands rgb needs 3 (or one gray band); choose bands with --bands"
            ),
        },
        BandSelection::All => {
            let all: Vec<usize> = (1..=n).filter(|&b| bands[b - 1].color != "Alpha").collect();
            anyhow::ensure!(!all.is_empty(), "{file}: has no bands other than alpha");
            all
        }
        BandSelection::Indices(v) => {
            if let Some(&b) = v.iter().find(|&&b| b == 0 || b > n) {
                anyhow::bail!("{file}: no band {b} (the raster has bands 1 to {n})");
            }
            v.clone()
        }
        BandSelection::Names(v) => v
            .iter()
            .map(|name| match bands.iter().position(|b| b.description == *name) {
                Some(i) => Ok(i + 1),
                None => {
                    let have: Vec<&str> = bands
                        .iter()
                        .map(|b| b.description.as_str())
                        .filter(|d| !d.is_empty())
                        .collect();
                    Err(anyhow::anyhow!(
                        "{file}: no band described as '{name}' (the band descriptions are: {})",
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    ))
                }
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

/// Channels of `numbers` holding red, green and blue: by the bands' colour
/// interpretation, or channels 0, 1, 2 for `rgb` on a file without one.
fn rgb_positions(
    selection: &BandSelection,
    numbers: &[usize],
    bands: &[FileBand],
) -> Option<[usize; 3]> {
    let find = |name: &str| numbers.iter().position(|&b| bands[b - 1].color == name);
    match (find("Red"), find("Green"), find("Blue")) {
        (Some(r), Some(g), Some(b)) => Some([r, g, b]),
        _ if *selection == BandSelection::Rgb => Some([0, 1, 2]),
        _ => None,
    }
}

impl Default for InputSpec {
    fn default() -> Self {
        Self::rgb()
    }
}

/// Images [`InputSpec::resolve`] tries, in manifest order, before it gives
/// up finding one that opens (an unreadable image is the loader's to skip
/// or report, not a reason to refuse the run).
const RESOLVE_TRIES: usize = 32;

/// The bands of the manifest's first image that opens (JPEG/PNG: red, green,
/// blue), with that image's path. Errors: an empty manifest, or none of the
/// first [`RESOLVE_TRIES`] images opens (the first error is given).
fn first_readable_bands(manifest: &Manifest) -> anyhow::Result<(String, Vec<FileBand>)> {
    anyhow::ensure!(
        !manifest.records.is_empty(),
        "{}: the manifest has no images",
        manifest.source.display()
    );
    let mut first_error = None;
    for record in manifest.records.iter().take(RESOLVE_TRIES) {
        let path = manifest.resolve(record);
        let file = path.display().to_string();
        let bands = match super::decode::is_jpeg_or_png(&path) {
            Err(e) => Err(anyhow::anyhow!("{file}: cannot read: {e}")),
            Ok(true) => Ok(["red", "green", "blue"]
                .iter()
                .map(|c| FileBand {
                    description: c.to_string(),
                    color: capitalise(c),
                })
                .collect()),
            Ok(false) => RasterReader::open(&path)
                .map(|r| r.info().bands.iter().map(FileBand::from).collect())
                .map_err(anyhow::Error::from),
        };
        match bands {
            Ok(bands) => return Ok((file, bands)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let tried = manifest.records.len().min(RESOLVE_TRIES);
    Err(first_error
        .expect("at least one image tried")
        .context(format!(
            "{}: none of the first {tried} images opens, so the input's bands cannot be found",
            manifest.source.display()
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_selections_parse_and_print_back() {
        for (text, want) in [
            ("rgb", BandSelection::Rgb),
            ("ALL", BandSelection::All),
            ("4,3,2", BandSelection::Indices(vec![4, 3, 2])),
            (" 8 ", BandSelection::Indices(vec![8])),
            (
                "B04,B03,B02",
                BandSelection::Names(vec!["B04".into(), "B03".into(), "B02".into()]),
            ),
        ] {
            let got: BandSelection = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<BandSelection>().unwrap(), want);
        }
        for bad in ["", "0,1", "4,,2", "4,B03"] {
            assert!(bad.parse::<BandSelection>().is_err(), "{bad}");
        }
    }

    #[test]
    fn radiometries_parse_and_print_back() {
        for (text, want) in [
            ("auto", Radiometry::Auto),
            ("stats", Radiometry::Stats),
            (
                "stretch",
                Radiometry::Stretch {
                    percentile: DEFAULT_STRETCH_PERCENTILE,
                },
            ),
            ("stretch:98", Radiometry::Stretch { percentile: 98.0 }),
            ("scale:10000", Radiometry::Scale(vec![10000.0])),
            (
                "scale:255,255,4095",
                Radiometry::Scale(vec![255.0, 255.0, 4095.0]),
            ),
        ] {
            let got: Radiometry = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<Radiometry>().unwrap(), want);
        }
        for bad in [
            "",
            "scale",
            "scale:0",
            "scale:x",
            "stretch:0",
            "stretch:101",
            "minmax",
        ] {
            assert!(bad.parse::<Radiometry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stats_live_beside_the_manifest_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("scenes.csv");
        assert_eq!(
            BandStats::path_for(&manifest),
            dir.path().join("scenes.band_stats.json")
        );
        assert_eq!(BandStats::load_for(&manifest).unwrap(), None);
        let stats = BandStats {
            bands: vec![BandStat {
                band: 1,
                name: "B01".into(),
                mean: 1234.5,
                std: 321.0,
                min: 1.0,
                max: 9000.0,
                valid_pixels: 4096,
            }],
            images_sampled: 4,
            images_total: 9,
            seed: 0,
            manifest: "scenes.csv".into(),
        };
        stats.save_for(&manifest).unwrap();
        assert_eq!(BandStats::load_for(&manifest).unwrap(), Some(stats.clone()));
        assert_eq!(stats.band(1).unwrap().name, "B01");
        assert!(stats.band(2).is_none());
        std::fs::write(BandStats::path_for(&manifest), "{").unwrap();
        let err = BandStats::load_for(&manifest).unwrap_err().to_string();
        assert!(err.contains("scenes.band_stats.json"), "{err}");
    }

    #[test]
    fn the_default_input_is_the_papers_rgb() {
        let spec = InputSpec::default();
        assert_eq!(spec.channels(), 3);
        assert!(spec.is_default_rgb());
        assert_eq!(spec.mean, IMAGENET_MEAN.to_vec());
    }
}
