//! An archive of scenes as a manifest (`geossl index rasters DIR`): every
//! raster below a folder read through GDAL for its size, bands, data type,
//! georeferencing and acquisition date; views of the same place grouped into
//! one `location_id`; optionally each scene cut into chips whose
//! same-position chips across dates form one place (a folder of Sentinel-2
//! time series becomes a dataset with temporal positives).
//!
//! - Files: those whose extension is in [`ScanOptions::extensions`]
//!   ([`DEFAULT_EXTENSIONS`]: GeoTIFF, JPEG2000, VRT, ERDAS Imagine, NITF),
//!   each opened with GDAL's raster drivers; a file GDAL cannot open is
//!   listed with GDAL's message ([`RasterIndexReport::unreadable`]), not
//!   fatal.
//! - Position: the raster centre (pixel `(W/2, H/2)` through the
//!   geotransform) transformed from the raster's CRS to WGS84 with
//!   GDAL/PROJ (`OCTTransform`), both CRSs in GDAL's traditional GIS axis
//!   order (x = easting or longitude, y = northing or latitude; GDAL 3's
//!   EPSG:4326 is latitude-first otherwise). A raster without a geotransform
//!   or a CRS gets no position (listed), never a guessed one.
//! - Date ([`acquisition_date`]): `--date-regex` on the file name (named
//!   group `date`) when it matches, else the first of [`DATE_KEYS`] in the
//!   raster's metadata.
//! - Places ([`group_scenes`]): `--location-regex` on the path below DIR
//!   (named group `location`), else the same footprint (all four corners in
//!   WGS84) within a tolerance: `--tolerance` metres, by default
//!   [`DEFAULT_TOLERANCE_PIXELS`] pixels of the coarser of the two scenes.
//! - Chips (`--chip S`): S x S pixel boxes on a grid from the top-left
//!   corner (the manifest's `crop` column), each with its own centre
//!   position; partial chips at the right and bottom edges are left out and
//!   counted. Chip `(r, c)` of every view of a place forms the place
//!   `<place>_r<r>_c<c>`, so footprint grouping then also requires the same
//!   pixel size (W x H): the same chip covers the same ground.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::{Dataset, DatasetOptions, GdalOpenFlags, Metadata};
use rayon::prelude::*;
use regex::Regex;

use super::manifest::{CropBox, ImageRecord, Manifest, Timestamp};
use crate::geo::LatLon;
use crate::progress;

/// File extensions read by default (lower case, without the dot): GeoTIFF
/// and COG (`tif`, `tiff`), JPEG2000 (`jp2`, `j2k`; Sentinel-2's band files),
/// GDAL's virtual rasters (`vrt`), ERDAS Imagine (`img`), NITF (`ntf`).
/// JPEG and PNG are left out (quicklooks and previews lie beside scenes);
/// name them in [`ScanOptions::extensions`] to index them.
pub const DEFAULT_EXTENSIONS: [&str; 7] = ["tif", "tiff", "jp2", "j2k", "vrt", "img", "ntf"];

/// Default footprint tolerance, in pixels of the coarser of two scenes:
/// views of one place resampled onto the same grid (Sentinel-2 tiles,
/// Landsat WRS scenes, orthophoto tiles) agree to well under a pixel, while
/// different places of one grid are a whole tile apart.
pub const DEFAULT_TOLERANCE_PIXELS: f64 = 2.0;

/// Metadata items holding an acquisition date, as `(domain, key)`, in the
/// order they are tried. `IMAGERY/ACQUISITIONDATETIME` is what GDAL's
/// metadata readers (DigitalGlobe, GeoEye, Pleiades, SPOT, Landsat MTL,
/// ...) normalise to (`%Y-%m-%d %H:%M:%S`, UTC);
/// `DATATAKE_1_DATATAKE_SENSING_START` and `PRODUCT_START_TIME` are the
/// SENTINEL2 driver's; `DATE_ACQUIRED` is Landsat's MTL name; the others
/// are common in GeoTIFFs written by processing chains. `TIFFTAG_DATETIME`
/// (`YYYY:MM:DD HH:MM:SS`) comes last: TIFF defines it as the time the file
/// was created, which is the acquisition time only when the writer made it
/// so.
pub const DATE_KEYS: [(&str, &str); 9] = [
    ("IMAGERY", "ACQUISITIONDATETIME"),
    ("", "ACQUISITIONDATETIME"),
    ("", "ACQUISITION_DATETIME"),
    ("", "ACQUISITION_DATE"),
    ("", "DATE_ACQUIRED"),
    ("", "DATATAKE_1_DATATAKE_SENSING_START"),
    ("", "PRODUCT_START_TIME"),
    ("", "SENSING_TIME"),
    ("", "TIFFTAG_DATETIME"),
];

/// Extra manifest columns the index writes, in this order.
pub const EXTRA_COLUMNS: [&str; 7] = [
    "width",
    "height",
    "bands",
    "data_type",
    "crs",
    "footprint",
    "date_source",
];

/// How [`index_rasters`] reads a folder.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// File extensions to read (lower case, no dot).
    pub extensions: Vec<String>,
    /// Applied to each file name; its named group `date` is the acquisition
    /// date (any form [`parse_date`] reads).
    pub date_regex: Option<Regex>,
    /// Applied to each path below the folder (`/` separators); its named
    /// group `location` names the place.
    pub location_regex: Option<Regex>,
    /// Footprint tolerance in metres (`None`: [`DEFAULT_TOLERANCE_PIXELS`]).
    pub tolerance_m: Option<f64>,
    /// Chip side in pixels.
    pub chip: Option<u32>,
    /// Folder the manifest is written to: paths below it are written
    /// relative to it, others absolute.
    pub manifest_dir: PathBuf,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            extensions: DEFAULT_EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            date_regex: None,
            location_regex: None,
            tolerance_m: None,
            chip: None,
            manifest_dir: PathBuf::from("."),
        }
    }
}

/// Where a raster lies, in WGS84.
#[derive(Debug, Clone, PartialEq)]
pub struct Georef {
    /// The raster's CRS as `AUTHORITY:CODE` (e.g. `EPSG:32633`), or its name.
    pub crs: String,
    /// GDAL's geotransform (x0, dx, rx, y0, ry, dy).
    pub geo_transform: [f64; 6],
    /// The raster centre.
    pub centre: LatLon,
    /// Corners: top-left, top-right, bottom-right, bottom-left (the outer
    /// edges of the corner pixels).
    pub footprint: [LatLon; 4],
    /// Ground size of a pixel in metres (the larger of its width and height,
    /// measured along the footprint's top and left edges).
    pub pixel_size_m: f64,
}

/// One chip of a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Chip {
    pub row: u32,
    pub col: u32,
    pub crop: CropBox,
    /// Centre of the chip (`None` without georeferencing).
    pub centre: Option<LatLon>,
    /// Corners as in [`Georef::footprint`].
    pub footprint: Option<[LatLon; 4]>,
}

/// What one raster says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// The file, as found below the scanned folder.
    pub path: PathBuf,
    /// The path below the scanned folder, `/`-separated.
    pub relative: String,
    pub width: usize,
    pub height: usize,
    pub bands: usize,
    /// GDAL's name of the first band's data type ("Byte", "UInt16", ...);
    /// `a/b` listing each distinct type when bands differ.
    pub data_type: String,
    /// `Err(why)` when the raster has no usable georeferencing.
    pub georef: Result<Georef, String>,
    pub timestamp: Option<Timestamp>,
    /// Where the date came from: `file name` or the metadata key
    /// (`IMAGERY:ACQUISITIONDATETIME`, `TIFFTAG_DATETIME`, ...).
    pub date_source: Option<String>,
    /// A `--date-regex` match that is not a date (the scene stays undated
    /// unless its metadata has one).
    pub date_problem: Option<String>,
    /// With `--chip`: the whole chips, row-major.
    pub chips: Vec<Chip>,
    /// With `--chip`: chips of the grid that do not fit whole.
    pub partial_chips: usize,
}

/// What [`index_rasters`] found besides the manifest.
#[derive(Debug, Default)]
pub struct RasterIndexReport {
    /// Files with a listed extension.
    pub files: usize,
    /// Rasters read.
    pub scenes: usize,
    /// Files GDAL could not open or describe: (path, GDAL's message).
    pub unreadable: Vec<(PathBuf, String)>,
    /// Rasters without usable georeferencing (no position): (path, why).
    pub without_georef: Vec<(PathBuf, String)>,
    /// Distinct places (before chipping).
    pub places: usize,
    /// Distinct acquisition dates (days).
    pub dates: usize,
    /// Scenes without a date.
    pub undated: usize,
    /// Scenes dated from their file name / from metadata.
    pub dated_by_name: usize,
    pub dated_by_metadata: usize,
    /// `path: why` for `--date-regex` matches that are not dates.
    pub date_problems: Vec<String>,
    /// Scenes whose path `--location-regex` did not match (grouped by
    /// footprint instead).
    pub location_unmatched: usize,
    /// Chips written and partial chips left out.
    pub chips: usize,
    pub partial_chips: usize,
    /// With `--chip`: places whose views differ in pixel size (chip `(r, c)`
    /// then covers different ground in different views).
    pub places_with_mixed_sizes: Vec<String>,
    /// How places were told apart, for the summary.
    pub grouping: String,
}

/// A date as remote-sensing metadata writes it: any ISO 8601 form the
/// manifest reads ([`Timestamp`]) or TIFF's `YYYY:MM:DD HH:MM:SS`
/// (`TIFFTAG_DATETIME`, TIFF 6.0 section 8).
pub fn parse_date(text: &str) -> Option<Timestamp> {
    let t = text.trim().trim_matches('\0').trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Some(ts);
    }
    let b = t.as_bytes();
    if b.len() >= 10 && b[4] == b':' && b[7] == b':' {
        let iso = format!("{}-{}-{}{}", &t[..4], &t[5..7], &t[8..10], &t[10..]);
        return iso.parse::<Timestamp>().ok();
    }
    None
}

/// The acquisition date of a raster: `date_regex`'s named group `date` in
/// `file_name` when it matches (an error when the match is not a date),
/// else the first of [`DATE_KEYS`] in the dataset's metadata that parses.
/// Returns the date and where it came from.
pub fn acquisition_date(
    dataset: &Dataset,
    file_name: &str,
    date_regex: Option<&Regex>,
) -> (Option<(Timestamp, String)>, Option<String>) {
    let mut problem = None;
    if let Some(m) = date_regex.and_then(|r| r.captures(file_name)?.name("date")) {
        match parse_date(m.as_str()) {
            Some(ts) => return (Some((ts, "file name".to_string())), None),
            None => {
                problem = Some(format!(
                    "the date pattern matched '{}' in the file name, which is not a date",
                    m.as_str()
                ))
            }
        }
    }
    for (domain, key) in DATE_KEYS {
        let Some(v) = dataset.metadata_item(key, domain) else {
            continue;
        };
        if let Some(ts) = parse_date(&v) {
            let source = if domain.is_empty() {
                key.to_string()
            } else {
                format!("{domain}:{key}")
            };
            return (Some((ts, source)), problem);
        }
    }
    (None, problem)
}

/// Pixel `(x, y)` (fractional, from the top-left corner of the raster)
/// through GDAL's geotransform into CRS coordinates.
fn apply_geo_transform(gt: &[f64; 6], x: f64, y: f64) -> (f64, f64) {
    (gt[0] + x * gt[1] + y * gt[2], gt[3] + x * gt[4] + y * gt[5])
}

/// Transforms pixel positions of a georeferenced raster to WGS84.
struct ToWgs84 {
    transform: CoordTransform,
    geo_transform: [f64; 6],
}

impl ToWgs84 {
    /// `Err(why)` when the dataset has no geotransform, no CRS, or a CRS
    /// PROJ cannot transform to WGS84.
    fn new(dataset: &Dataset) -> Result<(Self, String), String> {
        let gt = dataset
            .geo_transform()
            .map_err(|_| "no geotransform (not georeferenced, or by GCPs/RPCs only)")?;
        let mut source = dataset.spatial_ref().map_err(|_| "no CRS")?;
        // The geotransform is always x = easting/longitude, y =
        // northing/latitude (GDAL's data axis order for rasters).
        source.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let mut wgs84 = SpatialRef::from_epsg(4326).map_err(|e| format!("EPSG:4326: {e}"))?;
        wgs84.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let transform = CoordTransform::new(&source, &wgs84)
            .map_err(|e| format!("no transformation from its CRS to WGS84: {e}"))?;
        let crs = source
            .authority()
            .ok()
            .or_else(|| source.name())
            .unwrap_or_default();
        Ok((
            Self {
                transform,
                geo_transform: gt,
            },
            crs,
        ))
    }

    /// Pixel positions to WGS84, in one PROJ call.
    fn pixels(&self, points: &[(f64, f64)]) -> Result<Vec<LatLon>, String> {
        let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = points
            .iter()
            .map(|&(x, y)| apply_geo_transform(&self.geo_transform, x, y))
            .unzip();
        self.transform
            .transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(|e| format!("cannot transform to WGS84: {e}"))?;
        xs.iter()
            .zip(&ys)
            .map(|(&lon, &lat)| {
                LatLon::new(lat, lon).map_err(|e| format!("outside WGS84's range: {e}"))
            })
            .collect()
    }
}

/// Corners of the pixel box `(x, y, w, h)`: TL, TR, BR, BL.
fn corners(x: f64, y: f64, w: f64, h: f64) -> [(f64, f64); 4] {
    [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
}

fn metres(a: LatLon, b: LatLon) -> f64 {
    a.haversine_km(b) * 1000.0
}

/// Centre, footprint and pixel size of a `width x height` raster.
fn georef(to: &ToWgs84, crs: String, width: usize, height: usize) -> Result<Georef, String> {
    let (w, h) = (width as f64, height as f64);
    let mut points = vec![(w / 2.0, h / 2.0)];
    points.extend(corners(0.0, 0.0, w, h));
    let p = to.pixels(&points)?;
    let footprint = [p[1], p[2], p[3], p[4]];
    let pixel_size_m =
        (metres(footprint[0], footprint[1]) / w).max(metres(footprint[0], footprint[3]) / h);
    Ok(Georef {
        crs,
        geo_transform: to.geo_transform,
        centre: p[0],
        footprint,
        pixel_size_m,
    })
}

/// The whole `size x size` chips of a `width x height` raster, row-major,
/// with their positions when `to` is given; and how many grid cells at the
/// right and bottom edges do not fit whole.
fn chips(
    width: usize,
    height: usize,
    size: u32,
    to: Option<&ToWgs84>,
) -> Result<(Vec<Chip>, usize), String> {
    let s = size as usize;
    let (cols, rows) = (width / s, height / s);
    let partial = width.div_ceil(s) * height.div_ceil(s) - cols * rows;
    let mut out = Vec::with_capacity(rows * cols);
    let mut points = Vec::with_capacity(rows * cols * 5);
    for row in 0..rows {
        for col in 0..cols {
            let (x, y) = ((col * s) as f64, (row * s) as f64);
            points.push((x + s as f64 / 2.0, y + s as f64 / 2.0));
            points.extend(corners(x, y, s as f64, s as f64));
            out.push(Chip {
                row: row as u32,
                col: col as u32,
                crop: CropBox {
                    x: (col * s) as u32,
                    y: (row * s) as u32,
                    w: size,
                    h: size,
                },
                centre: None,
                footprint: None,
            });
        }
    }
    if let Some(to) = to {
        let p = to.pixels(&points)?;
        for (chip, q) in out.iter_mut().zip(p.chunks_exact(5)) {
            chip.centre = Some(q[0]);
            chip.footprint = Some([q[1], q[2], q[3], q[4]]);
        }
    }
    Ok((out, partial))
}

/// The distinct data types of a dataset's bands, `/`-joined.
fn data_types(dataset: &Dataset) -> Result<String, String> {
    let mut types: Vec<String> = Vec::new();
    for b in 1..=dataset.raster_count() {
        let band = dataset
            .rasterband(b)
            .map_err(|e| format!("band {b}: {e}"))?;
        let t = band.band_type().name();
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types.join("/"))
}

/// Reads one raster's description. `Err` carries GDAL's message for a file
/// GDAL cannot open as a raster (the caller pairs it with the path).
pub fn read_scene(path: &Path, relative: &str, options: &ScanOptions) -> Result<Scene, String> {
    super::raster::route_gdal_messages();
    let dataset = Dataset::open_ex(
        path,
        DatasetOptions {
            // VERBOSE_ERROR: GDAL says why no driver took the file.
            open_flags: GdalOpenFlags::GDAL_OF_RASTER
                | GdalOpenFlags::GDAL_OF_READONLY
                | GdalOpenFlags::GDAL_OF_VERBOSE_ERROR,
            ..Default::default()
        },
    )
    .map_err(|e| {
        let why = super::raster::gdal_message(&e).unwrap_or_else(|| "GDAL gave no reason".into());
        format!("GDAL cannot open it as a raster: {why}")
    })?;
    let (width, height) = dataset.raster_size();
    if dataset.raster_count() == 0 || width == 0 || height == 0 {
        return Err(format!(
            "no raster bands (GDAL opened it as {width} x {height} with {} bands)",
            dataset.raster_count()
        ));
    }
    let data_type = data_types(&dataset)?;
    let to = ToWgs84::new(&dataset);
    let georef = match &to {
        Ok((to, crs)) => georef(to, crs.clone(), width, height),
        Err(why) => Err(why.clone()),
    };
    // A transform that works for the footprint works for the chips.
    let to = to.ok().filter(|_| georef.is_ok()).map(|(t, _)| t);
    let (chips, partial_chips) = match options.chip {
        Some(s) => chips(width, height, s, to.as_ref())?,
        None => (Vec::new(), 0),
    };
    let file_name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let (date, date_problem) = acquisition_date(&dataset, &file_name, options.date_regex.as_ref());
    Ok(Scene {
        path: path.to_path_buf(),
        relative: relative.to_string(),
        width,
        height,
        bands: dataset.raster_count(),
        data_type,
        georef,
        timestamp: date.as_ref().map(|d| d.0),
        date_source: date.map(|d| d.1),
        date_problem,
        chips,
        partial_chips,
    })
}

/// Files below `root` with one of `extensions` (case-insensitive), sorted;
/// entries that cannot be listed are returned as (path, why).
pub fn find_rasters(root: &Path, extensions: &[String]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(true) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let p = e.path().unwrap_or(root).to_path_buf();
                problems.push((p, format!("cannot list: {e}")));
                continue;
            }
        };
        let wanted = entry.path().extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            extensions.contains(&e)
        });
        if entry.file_type().is_file() && wanted {
            files.push(entry.into_path());
        }
    }
    files.sort();
    (files, problems)
}

/// Whether two footprints are the same place: every corner within
/// `tolerance_m` metres of its counterpart.
pub fn same_footprint(a: &[LatLon; 4], b: &[LatLon; 4], tolerance_m: f64) -> bool {
    a.iter().zip(b).all(|(&p, &q)| metres(p, q) <= tolerance_m)
}

/// Metres per degree of latitude, at least (WGS84's is 110574 m at the
/// equator): a latitude window of `m / METRES_PER_DEGREE_MIN` degrees holds
/// every point within `m` metres.
const METRES_PER_DEGREE_MIN: f64 = 110_000.0;

/// Groups georeferenced scenes by footprint: each scene joins the first
/// group (in path order) whose first scene has the same footprint
/// ([`same_footprint`]) and, when `same_size`, the same width and height;
/// else it starts a group. Comparing with each group's first scene, not
/// with any member, keeps a chain of small shifts from merging distant
/// places. Returns each scene's group, numbered from 0 in order of
/// appearance.
pub fn group_by_footprint(
    scenes: &[(&Georef, (usize, usize))],
    tolerance_m: Option<f64>,
    same_size: bool,
) -> Vec<usize> {
    let tol = |a: &Georef, b: &Georef| {
        tolerance_m.unwrap_or(DEFAULT_TOLERANCE_PIXELS * a.pixel_size_m.max(b.pixel_size_m))
    };
    let widest = scenes.iter().map(|(g, _)| tol(g, g)).fold(0.0f64, f64::max);
    let window = widest / METRES_PER_DEGREE_MIN;
    // Group founders sorted by centre latitude: (lat, scene index, group).
    let mut founders: Vec<(f64, usize, usize)> = Vec::new();
    let mut out = Vec::with_capacity(scenes.len());
    for (i, (g, size)) in scenes.iter().enumerate() {
        let lat = g.centre.lat;
        let start = founders.partition_point(|f| f.0 < lat - window);
        let found = founders[start..]
            .iter()
            .take_while(|f| f.0 <= lat + window)
            .find(|f| {
                let (fg, fsize) = scenes[f.1];
                (!same_size || fsize == *size)
                    && same_footprint(&g.footprint, &fg.footprint, tol(g, fg))
            })
            .map(|f| f.2);
        let group = found.unwrap_or_else(|| {
            let group = founders.len();
            let at = founders.partition_point(|f| f.0 < lat);
            founders.insert(at, (lat, i, group));
            group
        });
        out.push(group);
    }
    out
}

/// Place names of scenes: `--location-regex`'s `location` group where it
/// matches; else footprint groups (`place_0001`, ... in order of first
/// appearance); a scene without georeferencing that the regex does not
/// name is its own place, named by its relative path. Returns the names
/// and how many paths the regex did not match.
pub fn group_scenes(scenes: &[Scene], options: &ScanOptions) -> (Vec<String>, usize) {
    let mut names: Vec<Option<String>> = vec![None; scenes.len()];
    let mut unmatched = 0;
    if let Some(re) = &options.location_regex {
        for (name, s) in names.iter_mut().zip(scenes) {
            *name = re
                .captures(&s.relative)
                .and_then(|c| c.name("location"))
                .map(|m| m.as_str().to_string());
            unmatched += usize::from(name.is_none());
        }
    }
    let rest: Vec<usize> = (0..scenes.len())
        .filter(|&i| names[i].is_none() && scenes[i].georef.is_ok())
        .collect();
    let input: Vec<(&Georef, (usize, usize))> = rest
        .iter()
        .map(|&i| {
            let g = scenes[i].georef.as_ref().expect("filtered on is_ok");
            (g, (scenes[i].width, scenes[i].height))
        })
        .collect();
    let groups = group_by_footprint(&input, options.tolerance_m, options.chip.is_some());
    for (&i, g) in rest.iter().zip(groups) {
        names[i] = Some(format!("place_{:04}", g + 1));
    }
    let names = names
        .into_iter()
        .zip(scenes)
        .map(|(n, s)| n.unwrap_or_else(|| s.relative.clone()))
        .collect();
    (names, unmatched)
}

/// `path` as the manifest in `manifest_dir` names it: relative when below
/// it, absolute otherwise.
fn manifest_path(path: &Path, manifest_dir: &Path) -> String {
    match path.strip_prefix(manifest_dir) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// `POLYGON ((lon lat, ...))`, closed, as fMoW's footprints are written.
fn footprint_wkt(f: &[LatLon; 4]) -> String {
    let ring: Vec<String> = f
        .iter()
        .chain(std::iter::once(&f[0]))
        .map(|p| format!("{:.7} {:.7}", p.lon, p.lat))
        .collect();
    format!("POLYGON (({}))", ring.join(", "))
}

/// The manifest rows of one scene at place `place`.
fn scene_rows(scene: &Scene, place: &str, manifest_dir: &Path, chip: bool) -> Vec<ImageRecord> {
    let g = scene.georef.as_ref().ok();
    let row = |position, location: String, crop, footprint: Option<&[LatLon; 4]>| ImageRecord {
        path: manifest_path(&scene.path, manifest_dir),
        position,
        timestamp: scene.timestamp,
        location_id: Some(location),
        crop,
        extra: vec![
            scene.width.to_string(),
            scene.height.to_string(),
            scene.bands.to_string(),
            scene.data_type.clone(),
            g.map(|g| g.crs.clone()).unwrap_or_default(),
            footprint.map(footprint_wkt).unwrap_or_default(),
            scene.date_source.clone().unwrap_or_default(),
        ],
        ..ImageRecord::default()
    };
    if !chip {
        return vec![row(
            g.map(|g| g.centre),
            place.to_string(),
            None,
            g.map(|g| &g.footprint),
        )];
    }
    scene
        .chips
        .iter()
        .map(|c| {
            let location = format!("{place}_r{:02}_c{:02}", c.row, c.col);
            row(c.centre, location, Some(c.crop), c.footprint.as_ref())
        })
        .collect()
}

/// Reads every raster below `root` in parallel (one GDAL dataset per file,
/// a progress bar) and builds the manifest: one row per scene, or per chip
/// with `options.chip`. Unreadable files are listed in the report, not
/// fatal. Errors: `root` cannot be opened, or no raster could be read
/// (the message lists why for the first files).
pub fn index_rasters(
    root: &Path,
    options: &ScanOptions,
) -> anyhow::Result<(Manifest, RasterIndexReport)> {
    let root = root
        .canonicalize()
        .with_context(|| format!("{}: cannot open the folder", root.display()))?;
    let (files, mut unreadable) = find_rasters(&root, &options.extensions);
    let bar = progress::bar(files.len() as u64, "reading rasters");
    let results: Vec<Result<Scene, String>> = files
        .par_iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap_or(f);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let r = read_scene(f, &rel.join("/"), options);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut scenes = Vec::with_capacity(results.len());
    for (r, f) in results.into_iter().zip(&files) {
        match r {
            Ok(s) => scenes.push(s),
            Err(e) => unreadable.push((f.clone(), e)),
        }
    }
    if scenes.is_empty() {
        let why: Vec<String> = unreadable.iter().take(5).map(|u| u.1.clone()).collect();
        anyhow::bail!(
            "{}: no raster read ({} files with extensions {}){}{}",
            root.display(),
            files.len(),
            options.extensions.join(","),
            if why.is_empty() { "" } else { ":\n" },
            why.join("\n")
        );
    }
    let report = RasterIndexReport {
        files: files.len(),
        unreadable,
        ..RasterIndexReport::default()
    };
    Ok(build_manifest(&scenes, options, report))
}

/// The manifest of read scenes, and the report completed.
fn build_manifest(
    scenes: &[Scene],
    options: &ScanOptions,
    mut report: RasterIndexReport,
) -> (Manifest, RasterIndexReport) {
    let manifest_dir = options
        .manifest_dir
        .canonicalize()
        .unwrap_or_else(|_| options.manifest_dir.clone());
    let (places, unmatched) = group_scenes(scenes, options);
    let mut records = Vec::new();
    let mut sizes: BTreeMap<&str, BTreeSet<(usize, usize)>> = BTreeMap::new();
    for (s, place) in scenes.iter().zip(&places) {
        records.extend(scene_rows(s, place, &manifest_dir, options.chip.is_some()));
        sizes.entry(place).or_default().insert((s.width, s.height));
        report.chips += s.chips.len();
        report.partial_chips += s.partial_chips;
        match s.date_source.as_deref() {
            None => report.undated += 1,
            Some("file name") => report.dated_by_name += 1,
            Some(_) => report.dated_by_metadata += 1,
        }
        if let Some(p) = &s.date_problem {
            report
                .date_problems
                .push(format!("{}: {p}", s.path.display()));
        }
        if let Err(why) = &s.georef {
            report.without_georef.push((s.path.clone(), why.clone()));
        }
    }
    if options.chip.is_some() {
        report.places_with_mixed_sizes = sizes
            .iter()
            .filter(|(_, s)| s.len() > 1)
            .map(|(p, _)| p.to_string())
            .collect();
    }
    report.scenes = scenes.len();
    report.places = sizes.len();
    report.dates = scenes
        .iter()
        .filter_map(|s| s.timestamp)
        .map(|t| t.datetime().date())
        .collect::<BTreeSet<_>>()
        .len();
    report.location_unmatched = unmatched;
    report.grouping = grouping_description(options);
    let manifest = Manifest {
        source: PathBuf::new(),
        root: manifest_dir,
        records,
        extra_columns: EXTRA_COLUMNS.iter().map(|c| c.to_string()).collect(),
    };
    (manifest, report)
}

fn grouping_description(options: &ScanOptions) -> String {
    let footprint = match options.tolerance_m {
        Some(m) => format!("same footprint within {m} m"),
        None => {
            format!("same footprint within {DEFAULT_TOLERANCE_PIXELS} pixels of the coarser scene")
        }
    };
    let footprint = if options.chip.is_some() {
        format!("{footprint} and the same size")
    } else {
        footprint
    };
    match &options.location_regex {
        Some(re) => format!("the location pattern {re} (else {footprint})"),
        None => footprint,
    }
}

/// The sidecar listing unreadable files beside manifest `M.csv`:
/// `M.skipped.csv` (columns `path,error`).
pub fn skipped_path(manifest: &Path) -> PathBuf {
    let stem = manifest.file_stem().unwrap_or_default().to_string_lossy();
    manifest.with_file_name(format!("{stem}.skipped.csv"))
}

/// Writes [`skipped_path`] when there are unreadable files, and removes a
/// stale one from an earlier run when there are none. Returns whether it
/// was written.
pub fn write_skipped(manifest: &Path, unreadable: &[(PathBuf, String)]) -> anyhow::Result<bool> {
    let path = skipped_path(manifest);
    if unreadable.is_empty() {
        if path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: cannot remove", path.display()))?;
        }
        return Ok(false);
    }
    crate::formats::atomic_write::write_atomically(&path, |w| {
        let mut out = csv::Writer::from_writer(w);
        out.write_record(["path", "error"])?;
        for (p, e) in unreadable {
            out.write_record([p.to_string_lossy().as_ref(), e.as_str()])?;
        }
        out.flush()?;
        Ok(())
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdal::raster::{Buffer, RasterCreationOptions};
    use gdal::DriverManager;

    /// What to write into a test raster.
    #[derive(Clone)]
    struct Spec {
        width: usize,
        height: usize,
        /// EPSG code and geotransform; `None`: no georeferencing.
        georef: Option<(u32, [f64; 6])>,
        /// Metadata items (domain, key, value).
        metadata: Vec<(&'static str, &'static str, String)>,
    }

    fn spec(width: usize, height: usize, epsg: u32, gt: [f64; 6]) -> Spec {
        Spec {
            width,
            height,
            georef: Some((epsg, gt)),
            metadata: Vec::new(),
        }
    }

    /// A 1-band Byte GeoTIFF written with GDAL (MEM, then CreateCopy as
    /// gdal_translate does, like the tests of `raster`).
    fn write(path: &Path, s: &Spec) {
        let mem = DriverManager::get_driver_by_name("MEM").unwrap();
        let mut ds = mem
            .create_with_band_type::<u8, _>("", s.width, s.height, 1)
            .unwrap();
        if let Some((epsg, gt)) = s.georef {
            ds.set_geo_transform(&gt).unwrap();
            ds.set_spatial_ref(&SpatialRef::from_epsg(epsg).unwrap())
                .unwrap();
        }
        for (domain, key, value) in &s.metadata {
            ds.set_metadata_item(key, value, domain).unwrap();
        }
        let data: Vec<u8> = (0..s.width * s.height).map(|i| (i % 251) as u8).collect();
        let mut band = ds.rasterband(1).unwrap();
        band.write(
            (0, 0),
            (s.width, s.height),
            &mut Buffer::new((s.width, s.height), data),
        )
        .unwrap();
        let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(
            ds.create_copy(&gtiff, path, &RasterCreationOptions::new())
                .unwrap(),
        );
    }

    /// WGS84's meridian arc from the equator to latitude `phi` (radians), in
    /// metres: the series of Snyder's "Map Projections: A Working Manual"
    /// (eq. 3-21), written out here independently of PROJ.
    fn meridian_arc(phi: f64) -> f64 {
        let a = 6_378_137.0;
        let f = 1.0 / 298.257_223_563;
        let e2: f64 = f * (2.0 - f);
        let (e4, e6) = (e2 * e2, e2 * e2 * e2);
        a * ((1.0 - e2 / 4.0 - 3.0 * e4 / 64.0 - 5.0 * e6 / 256.0) * phi
            - (3.0 * e2 / 8.0 + 3.0 * e4 / 32.0 + 45.0 * e6 / 1024.0) * (2.0 * phi).sin()
            + (15.0 * e4 / 256.0 + 45.0 * e6 / 1024.0) * (4.0 * phi).sin()
            - (35.0 * e6 / 3072.0) * (6.0 * phi).sin())
    }

    fn close(a: LatLon, lat: f64, lon: f64, metres_max: f64) {
        let d = metres(a, LatLon::new(lat, lon).unwrap());
        assert!(d <= metres_max, "{a:?} is {d} m from ({lat}, {lon})");
    }

    /// 10 m pixels in UTM 33N (EPSG:32633), the raster centred at pixel
    /// (cx, cy) on the easting/northing (e, n).
    fn utm_gt(e: f64, n: f64, w: usize, h: usize) -> [f64; 6] {
        [
            e - 5.0 * w as f64,
            10.0,
            0.0,
            n + 5.0 * h as f64,
            0.0,
            -10.0,
        ]
    }

    #[test]
    fn tiff_and_iso_dates() {
        let t = |s: &str| parse_date(s).map(|t| t.to_string());
        assert_eq!(
            t("2019:07:14 10:20:30").as_deref(),
            Some("2019-07-14T10:20:30Z")
        );
        assert_eq!(
            t("2019:07:14 10:20:30\0").as_deref(),
            Some("2019-07-14T10:20:30Z")
        );
        assert_eq!(t("20190714").as_deref(), Some("2019-07-14T00:00:00Z"));
        assert_eq!(
            t("2019-07-14 10:20:30").as_deref(),
            Some("2019-07-14T10:20:30Z")
        );
        assert_eq!(
            t("2019-07-14T10:20:30.123456Z").as_deref(),
            Some("2019-07-14T10:20:30.123Z")
        );
        assert_eq!(t("2019:13:14 10:20:30"), None);
        assert_eq!(t("yesterday"), None);
    }

    #[test]
    fn utm_centre_footprint_and_date_in_wgs84() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("utm.tif");
        // Centred on UTM 33N's central meridian (15 E) at 45 N: northing =
        // k0 x meridian arc, easting = the false easting.
        let n45 = 0.9996 * meridian_arc(45f64.to_radians());
        let mut s = spec(60, 40, 32633, utm_gt(500_000.0, n45, 60, 40));
        s.metadata
            .push(("", "TIFFTAG_DATETIME", "2019:07:14 10:20:30".to_string()));
        write(&path, &s);
        let scene = read_scene(&path, "utm.tif", &ScanOptions::default()).unwrap();
        assert_eq!((scene.width, scene.height, scene.bands), (60, 40, 1));
        assert_eq!(scene.data_type, "Byte");
        let g = scene.georef.as_ref().unwrap();
        assert_eq!(g.crs, "EPSG:32633");
        close(g.centre, 45.0, 15.0, 1.0);
        assert!((g.pixel_size_m - 10.0).abs() < 0.1, "{}", g.pixel_size_m);
        // The footprint's top-right corner, easting 500300, northing n45 +
        // 200: cs2cs EPSG:32633 EPSG:4326 (PROJ 9.1.1) on a second point
        // checks the off-meridian case: 600000 5000000 -> 45.146392876 N
        // 16.272032960 E.
        // Distances between positions are great-circle ones on the mean
        // sphere, within 0.5% of the ellipsoid's over a scene.
        let (tl, tr) = (g.footprint[0], g.footprint[1]);
        assert!((metres(tl, tr) / 600.0 - 1.0).abs() < 0.005);
        assert!(tl.lon < 15.0 && tr.lon > 15.0 && tl.lat > 45.0);
        assert_eq!(scene.timestamp.unwrap().to_string(), "2019-07-14T10:20:30Z");
        assert_eq!(scene.date_source.as_deref(), Some("TIFFTAG_DATETIME"));

        let path = dir.path().join("off.tif");
        write(
            &path,
            &spec(20, 20, 32633, utm_gt(600_000.0, 5_000_000.0, 20, 20)),
        );
        let scene = read_scene(&path, "off.tif", &ScanOptions::default()).unwrap();
        close(
            scene.georef.unwrap().centre,
            45.146392876,
            16.272032960,
            1.0,
        );
    }

    #[test]
    fn geographic_crs_keeps_latitude_and_longitude_apart() {
        // EPSG:4326 is latitude-first for GDAL 3; the geotransform is
        // longitude-first. 0.001 degree pixels from (2.0 E, 49.0 N).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geo.tif");
        write(
            &path,
            &spec(40, 20, 4326, [2.0, 0.001, 0.0, 49.0, 0.0, -0.001]),
        );
        let scene = read_scene(&path, "geo.tif", &ScanOptions::default()).unwrap();
        let g = scene.georef.unwrap();
        assert_eq!(g.crs, "EPSG:4326");
        close(g.centre, 48.99, 2.02, 0.01);
        close(g.footprint[0], 49.0, 2.0, 0.01);
        close(g.footprint[2], 48.98, 2.04, 0.01);
    }

    #[test]
    fn dates_from_the_file_name_and_imagery_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let gt = utm_gt(400_000.0, 5_000_000.0, 8, 8);
        let named = dir.path().join("S2A_20200115_T33.tif");
        let mut s = spec(8, 8, 32633, gt);
        s.metadata
            .push(("", "TIFFTAG_DATETIME", "2021:01:01 00:00:00".to_string()));
        write(&named, &s);
        // Landsat's MTL name, kept by GTiff in its GDAL_METADATA tag.
        let mut imagery = spec(8, 8, 32633, gt);
        imagery
            .metadata
            .push(("", "DATE_ACQUIRED", "2018-03-04".to_string()));
        let imagery_path = dir.path().join("other_2020xx.tif");
        write(&imagery_path, &imagery);
        let options = ScanOptions {
            date_regex: Some(Regex::new(r"_(?P<date>\d{8})_").unwrap()),
            ..ScanOptions::default()
        };
        let a = read_scene(&named, "a", &options).unwrap();
        assert_eq!(a.timestamp.unwrap().to_string(), "2020-01-15T00:00:00Z");
        assert_eq!(a.date_source.as_deref(), Some("file name"));
        let b = read_scene(&imagery_path, "b", &options).unwrap();
        assert_eq!(b.timestamp.unwrap().to_string(), "2018-03-04T00:00:00Z");
        assert_eq!(b.date_source.as_deref(), Some("DATE_ACQUIRED"));
        // A match that is not a date is reported, and metadata used.
        let bad = ScanOptions {
            date_regex: Some(Regex::new(r"_(?P<date>\d{4}\w\w)\.").unwrap()),
            ..ScanOptions::default()
        };
        let c = read_scene(&imagery_path, "c", &bad).unwrap();
        assert_eq!(c.date_source.as_deref(), Some("DATE_ACQUIRED"));
        assert!(c.date_problem.unwrap().contains("'2020xx'"));
    }

    #[test]
    fn imagery_domain_comes_before_tiff_datetime() {
        // GTiff does not store the IMAGERY domain (its metadata readers
        // fill it from sidecar files), so a MEM dataset stands in.
        let mem = DriverManager::get_driver_by_name("MEM").unwrap();
        let mut ds = mem.create_with_band_type::<u8, _>("", 2, 2, 1).unwrap();
        ds.set_metadata_item("TIFFTAG_DATETIME", "2021:01:01 00:00:00", "")
            .unwrap();
        let (date, problem) = acquisition_date(&ds, "x.tif", None);
        assert_eq!(date.unwrap().1, "TIFFTAG_DATETIME");
        assert_eq!(problem, None);
        ds.set_metadata_item("ACQUISITIONDATETIME", "2018-03-04 05:06:07", "IMAGERY")
            .unwrap();
        let (date, _) = acquisition_date(&ds, "x.tif", None);
        let (ts, source) = date.unwrap();
        assert_eq!(ts.to_string(), "2018-03-04T05:06:07Z");
        assert_eq!(source, "IMAGERY:ACQUISITIONDATETIME");
    }

    /// Two places 3 km apart, three dates each, one view shifted by half a
    /// pixel; an unreadable file; a raster without georeferencing.
    fn archive(dir: &Path) {
        let dates = ["20200101", "20200201", "20200301"];
        for (place, e) in [("a", 400_000.0), ("b", 403_000.0)] {
            for (i, d) in dates.iter().enumerate() {
                let shift = if i == 1 { 5.0 } else { 0.0 };
                let gt = utm_gt(e + shift, 5_000_000.0, 70, 50);
                write(
                    &dir.join(format!("{place}/S2_{d}_x.tif")),
                    &spec(70, 50, 32633, gt),
                );
            }
        }
        std::fs::write(dir.join("a/broken.tif"), b"II*\0 not really a tiff").unwrap();
        let mut plain = spec(70, 50, 0, [0.0; 6]);
        plain.georef = None;
        write(&dir.join("plain_20200401_.tif"), &plain);
        std::fs::write(dir.join("notes.txt"), b"not a raster, not read").unwrap();
    }

    fn options_for(dir: &Path) -> ScanOptions {
        ScanOptions {
            date_regex: Some(Regex::new(r"_(?P<date>\d{8})_").unwrap()),
            manifest_dir: dir.to_path_buf(),
            ..ScanOptions::default()
        }
    }

    #[test]
    fn archive_groups_places_dates_and_lists_problems() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        archive(&root);
        let (m, r) = index_rasters(&root, &options_for(&root)).unwrap();
        assert_eq!((r.files, r.scenes), (8, 7));
        assert_eq!(r.unreadable.len(), 1);
        assert!(r.unreadable[0].0.ends_with("a/broken.tif"));
        // GDAL's own words (libtiff's, for a TIFF header without a directory).
        let why = &r.unreadable[0].1;
        assert!(
            why.starts_with("GDAL cannot open it as a raster: "),
            "{why}"
        );
        assert!(why.contains("TIFF"), "{why}");
        assert_eq!(r.without_georef.len(), 1);
        assert!(r.without_georef[0].1.contains("no geotransform"));
        // a, b and the raster without georeferencing.
        assert_eq!(r.places, 3);
        assert_eq!((r.dates, r.dated_by_name, r.undated), (4, 7, 0));
        let rows: BTreeMap<&str, &ImageRecord> =
            m.records.iter().map(|r| (r.path.as_str(), r)).collect();
        assert_eq!(rows.len(), 7);
        let place = |p: &str| rows[p].location_id.as_deref().unwrap();
        assert_eq!(place("a/S2_20200101_x.tif"), "place_0001");
        assert_eq!(place("a/S2_20200201_x.tif"), "place_0001");
        assert_eq!(place("a/S2_20200301_x.tif"), "place_0001");
        assert_eq!(place("b/S2_20200201_x.tif"), "place_0002");
        assert_eq!(place("plain_20200401_.tif"), "plain_20200401_.tif");
        assert_eq!(rows["plain_20200401_.tif"].position, None);
        let b = rows["b/S2_20200101_x.tif"];
        let a = rows["a/S2_20200101_x.tif"];
        let d = metres(a.position.unwrap(), b.position.unwrap());
        // Great-circle metres on the mean sphere: within 0.5%.
        assert!((d / 3000.0 - 1.0).abs() < 0.005, "{d}");
        assert_eq!(a.timestamp.unwrap().to_string(), "2020-01-01T00:00:00Z");
        assert_eq!(a.extra[..5], ["70", "50", "1", "Byte", "EPSG:32633"]);
        assert!(a.extra[5].starts_with("POLYGON (("), "{}", a.extra[5]);
        // A tolerance below the half-pixel shift splits place a.
        let tight = ScanOptions {
            tolerance_m: Some(4.0),
            ..options_for(&root)
        };
        let (_, r) = index_rasters(&root, &tight).unwrap();
        // Both a and b have one view shifted by 5 m.
        assert_eq!(r.places, 5);
    }

    #[test]
    fn chips_form_places_across_dates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        archive(&root);
        let options = ScanOptions {
            chip: Some(32),
            ..options_for(&root)
        };
        let (m, r) = index_rasters(&root, &options).unwrap();
        // 70 x 50 in 32 px chips: 2 x 1 whole, 3 x 2 - 2 = 4 partial.
        assert_eq!((r.chips, r.partial_chips), (7 * 2, 7 * 4));
        assert_eq!(m.records.len(), 14);
        let mut by_place: BTreeMap<&str, Vec<&ImageRecord>> = BTreeMap::new();
        for rec in &m.records {
            by_place
                .entry(rec.location_id.as_deref().unwrap())
                .or_default()
                .push(rec);
        }
        let ids: Vec<&str> = by_place.keys().copied().collect();
        assert_eq!(
            ids,
            [
                "place_0001_r00_c00",
                "place_0001_r00_c01",
                "place_0002_r00_c00",
                "place_0002_r00_c01",
                "plain_20200401_.tif_r00_c00",
                "plain_20200401_.tif_r00_c01"
            ]
        );
        let views = &by_place["place_0001_r00_c01"];
        assert_eq!(views.len(), 3);
        assert!(views
            .iter()
            .all(|v| v.crop == Some("32,0,32,32".parse().unwrap())));
        // Chip (0, 1) of place a at 2020-01-01: its centre is pixel (48, 16),
        // 10 m pixels from the scene's top-left corner.
        let scene = views.iter().find(|v| v.path.contains("20200101")).unwrap();
        let whole = read_scene(&root.join(&scene.path), "x", &ScanOptions::default()).unwrap();
        let tl = whole.georef.unwrap().footprint[0];
        let c = scene.position.unwrap();
        let expect = (48.0f64.powi(2) + 16.0f64.powi(2)).sqrt() * 10.0;
        assert!(
            (metres(tl, c) / expect - 1.0).abs() < 0.005,
            "{}",
            metres(tl, c)
        );
    }

    #[test]
    fn location_regex_names_places() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        archive(&root);
        let options = ScanOptions {
            location_regex: Some(Regex::new(r"^(?P<location>[ab])/").unwrap()),
            ..options_for(&root)
        };
        let (m, r) = index_rasters(&root, &options).unwrap();
        assert_eq!(r.location_unmatched, 1);
        let places: BTreeSet<&str> = m
            .records
            .iter()
            .map(|r| r.location_id.as_deref().unwrap())
            .collect();
        assert_eq!(
            places.into_iter().collect::<Vec<_>>(),
            ["a", "b", "plain_20200401_.tif"]
        );
    }

    #[test]
    fn footprint_groups_do_not_chain() {
        // Scenes shifted by 15 m each with a 20 m tolerance: each is within
        // tolerance of its neighbour, but the third is 30 m from the first.
        let dir = tempfile::tempdir().unwrap();
        let mut georefs = Vec::new();
        for i in 0..3 {
            let path = dir.path().join(format!("{i}.tif"));
            let gt = utm_gt(500_000.0 + 15.0 * i as f64, 5_000_000.0, 10, 10);
            write(&path, &spec(10, 10, 32633, gt));
            georefs.push(
                read_scene(&path, "x", &ScanOptions::default())
                    .unwrap()
                    .georef
                    .unwrap(),
            );
        }
        let input: Vec<(&Georef, (usize, usize))> = georefs.iter().map(|g| (g, (10, 10))).collect();
        assert_eq!(group_by_footprint(&input, Some(20.0), false), [0, 0, 1]);
        // The default: 2 pixels of 10 m.
        assert_eq!(group_by_footprint(&input, None, false), [0, 0, 1]);
        assert_eq!(group_by_footprint(&input, Some(40.0), false), [0, 0, 0]);
        // With chips, a different size is a different place.
        let sized = [input[0], (input[1].0, (20, 10))];
        assert_eq!(group_by_footprint(&sized, Some(40.0), true), [0, 1]);
    }

    #[test]
    fn skipped_sidecar_is_written_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.csv");
        assert_eq!(skipped_path(&m), dir.path().join("m.skipped.csv"));
        let list = vec![(
            PathBuf::from("x.tif"),
            "GDAL says no, \"really\"".to_string(),
        )];
        assert!(write_skipped(&m, &list).unwrap());
        let text = std::fs::read_to_string(skipped_path(&m)).unwrap();
        assert_eq!(text, "path,error\nx.tif,\"GDAL says no, \"\"really\"\"\"\n");
        assert!(!write_skipped(&m, &[]).unwrap());
        assert!(!skipped_path(&m).exists());
    }
}
