//! Importers for collections described by CSV metadata rather than a folder
//! of JSON files:
//!
//! - the derived fMoW tables used by SatMAE, DiffusionSat and fMoW-Sentinel:
//!   `category, location_id, image_id, timestamp, polygon` (WKT lon/lat),
//!   images found through a path template;
//! - GeoImageNet: metadata rows `id, lat, lon, locality, country, region,
//!   county` plus images laid out as `<class>/<id>.jpg`.
//!
//! Problems are reported like manifest problems: `file:line:column: message`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::manifest::{
    csv_error, csv_error_at, format_problem, ImageRecord, Manifest, ManifestError, RowProblem,
    Split, Timestamp,
};
use crate::geo::{wkt, LatLon};

/// Default image location for derived fMoW rows, relative to the image root.
pub const FMOW_PATH_TEMPLATE: &str =
    "{category}/{category}_{location_id}/{category}_{location_id}_{image_id}_rgb.jpg";

/// A CSV table read whole, with its header and 1-based line numbers.
struct Table {
    file: String,
    headers: Vec<String>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path) -> Result<Self, ManifestError> {
        let file = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|source| ManifestError::Io {
            file: file.clone(),
            source,
        })?;
        let mut r = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(super::csv_lines::LineTracker::new(f));
        let headers: Vec<String> = r
            .headers()
            .map_err(|e| csv_error(&file, e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut rows = Vec::new();
        loop {
            let mut rec = csv::StringRecord::new();
            match r.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => rows.push((r.get_mut().line_of(rec.position()), rec)),
                Err(e) => {
                    let line = r.get_mut().line_of(e.position());
                    return Err(csv_error_at(&file, e, line));
                }
            }
        }
        if rows.is_empty() {
            return Err(ManifestError::NoRows { file });
        }
        Ok(Self {
            file,
            headers,
            rows,
        })
    }

    fn column(&self, name: &str) -> Result<usize, ManifestError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| ManifestError::Rows {
                file: self.file.clone(),
                problems: vec![RowProblem {
                    line: 1,
                    column: String::new(),
                    value: String::new(),
                    message: format!(
                        "the header has no '{name}' column (found: {})",
                        self.headers.join(", ")
                    ),
                }],
                total: 1,
            })
    }
}

/// How a CSV import treats its rows and where it writes them.
#[derive(Debug, Clone, Default)]
pub struct CsvImportOptions {
    /// Split recorded for every row (`None`: no split column, or see
    /// [`assign_splits_by_location`]).
    pub split: Option<Split>,
    /// Leave out rows with problems (each reported) instead of failing.
    pub skip_errors: bool,
    /// Folder the manifest will be written to: image paths below it are
    /// written relative to it, others absolute (as `index fmow` does).
    pub manifest_dir: PathBuf,
}

/// Per-row problems of one table: every problem of a row is kept, so that a
/// failing import lists them all and a `skip_errors` import can say why each
/// left-out row was left out.
struct Problems {
    file: String,
    list: Vec<RowProblem>,
}

impl Problems {
    fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    fn add(&mut self, line: u64, column: &str, value: &str, message: impl Into<String>) {
        self.list.push(RowProblem {
            line,
            column: column.into(),
            value: value.into(),
            message: message.into(),
        });
    }

    /// Whether any problem was recorded for `line`.
    fn has(&self, line: u64) -> bool {
        self.list.last().is_some_and(|p| p.line == line)
    }

    /// With `skip_errors`, the problems as `file:line:column: message`
    /// lines (their rows were left out); otherwise an error listing them.
    fn finish(self, skip_errors: bool) -> Result<Vec<String>, ManifestError> {
        if skip_errors || self.list.is_empty() {
            return Ok(self
                .list
                .iter()
                .map(|p| format_problem(&self.file, p))
                .collect());
        }
        Err(self.into_error())
    }

    fn into_error(self) -> ManifestError {
        let total = self.list.len();
        let mut problems = self.list;
        problems.truncate(50);
        ManifestError::Rows {
            file: self.file,
            problems,
            total,
        }
    }
}

/// `path` as the manifest in `manifest_dir` should name it: relative when it
/// lies below that folder, absolute otherwise.
fn manifest_path(path: &Path, manifest_dir: &Path) -> String {
    match path.strip_prefix(manifest_dir) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// The folder a manifest is written to, canonical (so that image paths
/// found by scanning canonical folders can be made relative to it).
fn canonical_dir(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// A `lat`/`lon` pair of cells: `Ok(None)` when both are empty (position
/// unknown), the validated position, or the column at fault and why.
fn position_cells(lat: &str, lon: &str) -> Result<Option<LatLon>, (&'static str, String)> {
    let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    match (lat, lon) {
        ("", "") => Ok(None),
        (la, "") => Err((
            "lon",
            format!("lon is empty but lat is {la}; give both or neither"),
        )),
        ("", lo) => Err((
            "lat",
            format!("lat is empty but lon is {lo}; give both or neither"),
        )),
        (la, lo) => match (number(la), number(lo)) {
            (None, _) => Err(("lat", "lat is not a number".into())),
            (_, None) => Err(("lon", "lon is not a number".into())),
            (Some(lat), Some(lon)) => LatLon::new(lat, lon).map(Some).map_err(|e| {
                let col = match e {
                    crate::geo::coords::CoordError::LatitudeOutOfRange(_) => "lat",
                    crate::geo::coords::CoordError::LongitudeOutOfRange(_) => "lon",
                };
                (col, e.to_string())
            }),
        },
    }
}

/// Fills `{column}` placeholders of `template` from a row.
fn expand_template(
    template: &str,
    headers: &[String],
    row: &csv::StringRecord,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or("unclosed '{' in path template")?
            + open;
        let name = &rest[open + 1..close];
        let i = headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("path template names column '{name}', which the CSV lacks"))?;
        out.push_str(row.get(i).unwrap_or("").trim());
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a derived-fMoW CSV import found besides the manifest.
#[derive(Debug, Default, PartialEq)]
pub struct FmowCsvReport {
    pub rows: usize,
    /// Rows with an empty `polygon` (kept, without a position).
    pub rows_without_position: usize,
    /// With `skip_errors`: every problem of the rows left out, as
    /// `file:line:column: message (value "...")`.
    pub skipped: Vec<String>,
    pub skipped_rows: usize,
}

/// The split qualifier of a derived fMoW table's location ids: the split
/// when one is given, else the CSV's file stem (`train.csv` -> `train`), the
/// name the published tables use for their split.
fn fmow_csv_qualifier(csv_path: &Path, split: Option<Split>) -> String {
    match split {
        Some(s) => s.to_string(),
        None => csv_path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    }
}

/// Imports a derived fMoW CSV. Image paths come from `path_template`
/// (placeholders are column names) joined to `images_root`; a `path` or
/// `image_path` column, when present, is used as is instead.
///
/// `location_id` is `<split>/<category>_<location_id>`
/// ([`super::fmow::location_id`], as `index fmow` writes it), the split being
/// `options.split` or, without one, the CSV's file stem: fMoW numbers
/// locations per split, so the same number in `train.csv` and `val.csv`
/// names two places. A stem that is a split name (train, val, test) is
/// also written as the rows' `split`. An empty `polygon` leaves the row without a position
/// (counted); an empty `timestamp` leaves it undated.
pub fn import_fmow_csv(
    csv_path: &Path,
    images_root: &Path,
    path_template: &str,
    options: &CsvImportOptions,
) -> Result<(Manifest, FmowCsvReport), ManifestError> {
    let t = Table::read(csv_path)?;
    let category = t.column("category")?;
    let location = t.column("location_id")?;
    let timestamp = t.column("timestamp")?;
    let polygon = t.column("polygon")?;
    let explicit_path = t
        .headers
        .iter()
        .position(|h| h == "path" || h == "image_path");
    let known = [
        "category",
        "location_id",
        "image_id",
        "timestamp",
        "polygon",
        "path",
        "image_path",
    ];
    let extra: Vec<usize> = (0..t.headers.len())
        .filter(|&i| !known.contains(&t.headers[i].as_str()))
        .collect();
    let manifest_dir = canonical_dir(&options.manifest_dir);
    let qualifier = fmow_csv_qualifier(csv_path, options.split);
    // The stem standing for the split (train.csv) is the rows' split too.
    let split = options.split.or_else(|| qualifier.parse::<Split>().ok());
    let mut problems = Problems::new(&t.file);
    let mut report = FmowCsvReport::default();
    let mut records = Vec::new();
    for (line, row) in &t.rows {
        let line = *line;
        let cell = |i: usize| row.get(i).unwrap_or("").trim();
        let path = match explicit_path {
            Some(i) => Ok(cell(i).to_string()),
            None => expand_template(path_template, &t.headers, row),
        };
        let path = match path {
            Ok(p) if p.is_empty() => {
                problems.add(line, "path", "", "path is empty");
                String::new()
            }
            Ok(p) => manifest_path(&images_root.join(p), &manifest_dir),
            Err(m) => {
                problems.add(line, "", "", m);
                String::new()
            }
        };
        let position = match cell(polygon) {
            "" => None,
            w => match wkt::centroid(w) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.add(line, "polygon", w, e.to_string());
                    None
                }
            },
        };
        let ts = match cell(timestamp) {
            "" => None,
            v => match v.parse::<Timestamp>() {
                Ok(t) => Some(t),
                Err(m) => {
                    problems.add(line, "timestamp", v, m);
                    None
                }
            },
        };
        if cell(category).is_empty() {
            problems.add(line, "category", "", "category is empty");
        }
        if cell(location).is_empty() {
            problems.add(line, "location_id", "", "location_id is empty");
        }
        if problems.has(line) {
            report.skipped_rows += 1;
            continue;
        }
        report.rows_without_position += usize::from(position.is_none());
        let folder = format!("{}_{}", cell(category), cell(location));
        records.push(ImageRecord {
            path,
            position,
            timestamp: ts,
            location_id: Some(super::fmow::location_id(&qualifier, &folder)),
            label: Some(cell(category).to_string()),
            split,
            crop: None,
            geo_cluster: None,
            extra: extra.iter().map(|&i| cell(i).to_string()).collect(),
        });
    }
    if records.is_empty() {
        // Every row was left out: the reasons are the error.
        return Err(problems.into_error());
    }
    report.skipped = problems.finish(options.skip_errors)?;
    report.rows = records.len();
    let manifest = Manifest {
        source: PathBuf::new(),
        root: manifest_dir,
        records,
        extra_columns: extra.iter().map(|&i| t.headers[i].clone()).collect(),
    };
    Ok((manifest, report))
}

/// What a GeoImageNet import found besides the manifest.
#[derive(Debug, Default, PartialEq)]
pub struct GeoImageNetReport {
    /// Images written to the manifest.
    pub images: usize,
    /// Images without a metadata row (kept, without a position).
    pub images_without_metadata: usize,
    /// Images whose metadata row has empty `lat` and `lon` (kept, without a
    /// position).
    pub images_without_position: usize,
    /// Images left out because their metadata row was (with `skip_errors`).
    pub images_skipped: usize,
    pub metadata_without_image: usize,
    /// With `skip_errors`: every problem of the metadata rows left out, as
    /// `file:line:column: message (value "...")`.
    pub skipped: Vec<String>,
    pub skipped_rows: usize,
}

/// Imports GeoImageNet: images `<class>/<id>.<ext>` below `images_root`,
/// joined by `id` with the metadata CSV (`id, lat, lon, ...`). Every image is
/// its own location (GeoImageNet has no temporal views). Images without a
/// metadata row, or whose row leaves `lat` and `lon` empty, are kept without
/// a position and counted (`geossl cluster` refuses them or, when asked,
/// leaves them out). A row whose position is malformed (one of the pair
/// empty, not a number, out of range) is an error; with
/// `options.skip_errors` it is reported and its image left out. Of two rows
/// with one `id`, the first is used.
pub fn import_geoimagenet(
    metadata: &Path,
    images_root: &Path,
    options: &CsvImportOptions,
) -> Result<(Manifest, GeoImageNetReport), anyhow::Error> {
    let t = Table::read(metadata)?;
    let id_col = t.column("id")?;
    let lat_col = t.column("lat")?;
    let lon_col = t.column("lon")?;
    let extra: Vec<usize> = (0..t.headers.len())
        .filter(|&i| ![id_col, lat_col, lon_col].contains(&i))
        .collect();
    let mut problems = Problems::new(&t.file);
    let mut report = GeoImageNetReport::default();
    let mut by_id: HashMap<String, (Option<LatLon>, Vec<String>)> = HashMap::new();
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut skipped_ids: HashSet<String> = HashSet::new();
    for (line, row) in &t.rows {
        let line = *line;
        let cell = |i: usize| row.get(i).unwrap_or("").trim();
        let id = cell(id_col);
        let first = !id.is_empty() && seen_ids.insert(id.to_string());
        if id.is_empty() {
            problems.add(line, "id", "", "id is empty");
        } else if !first {
            problems.add(line, "id", id, "id appears twice");
        }
        let position = match position_cells(cell(lat_col), cell(lon_col)) {
            Ok(p) => p,
            Err((col, message)) => {
                let v = if col == "lat" {
                    cell(lat_col)
                } else {
                    cell(lon_col)
                };
                problems.add(line, col, v, message);
                None
            }
        };
        if problems.has(line) {
            report.skipped_rows += 1;
            if first {
                skipped_ids.insert(id.to_string());
            }
            continue;
        }
        by_id.insert(
            id.to_string(),
            (
                position,
                extra.iter().map(|&i| cell(i).to_string()).collect(),
            ),
        );
    }
    report.skipped = problems.finish(options.skip_errors)?;

    let images_root = images_root
        .canonicalize()
        .with_context(|| format!("{}: cannot open image folder", images_root.display()))?;
    let mut images: Vec<(String, PathBuf)> = Vec::new();
    for entry in walkdir::WalkDir::new(&images_root)
        .min_depth(2)
        .max_depth(2)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("{}: cannot scan", images_root.display()))?;
        let p = entry.path();
        let is_image = p
            .extension()
            .map(|e| {
                matches!(
                    e.to_string_lossy().to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "tif" | "tiff"
                )
            })
            .unwrap_or(false);
        if entry.file_type().is_file() && is_image {
            let class = p
                .parent()
                .and_then(|d| d.file_name())
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            images.push((class, p.to_path_buf()));
        }
    }
    if images.is_empty() {
        anyhow::bail!(
            "{}: no images in <class>/<id>.jpg layout",
            images_root.display()
        );
    }
    let manifest_dir = canonical_dir(&options.manifest_dir);
    let mut used = HashSet::new();
    let mut records = Vec::with_capacity(images.len());
    for (class, path) in images {
        let id = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if skipped_ids.contains(&id) {
            report.images_skipped += 1;
            continue;
        }
        let meta = by_id.get(&id);
        match meta {
            None => report.images_without_metadata += 1,
            Some((None, _)) => report.images_without_position += 1,
            Some(_) => {}
        }
        if meta.is_some() {
            used.insert(id.clone());
        }
        records.push(ImageRecord {
            path: manifest_path(&path, &manifest_dir),
            position: meta.and_then(|m| m.0),
            timestamp: None,
            location_id: Some(id),
            label: Some(class),
            split: options.split,
            crop: None,
            geo_cluster: None,
            extra: meta
                .map(|m| m.1.clone())
                .unwrap_or_else(|| vec![String::new(); extra.len()]),
        });
    }
    if records.is_empty() {
        anyhow::bail!(
            "{}: every image was left out with its metadata row",
            images_root.display()
        );
    }
    report.images = records.len();
    report.metadata_without_image = by_id.len() - used.len();
    let manifest = Manifest {
        source: PathBuf::new(),
        root: manifest_dir,
        records,
        extra_columns: extra.iter().map(|&i| t.headers[i].clone()).collect(),
    };
    Ok((manifest, report))
}

/// Locations put in each split by [`assign_splits_by_location`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitCounts {
    pub train_locations: usize,
    pub val_locations: usize,
}

/// Gives a collection without splits a train/val split by LOCATION, so that
/// all views of a place land in one split (no place leaks between them).
///
/// Each location is ranked by SHA-256 of `seed` (8 bytes, little-endian)
/// followed by its id (the id breaks ties); the first
/// `round(val_fraction x locations)` are `val`, the rest `train`. The result
/// depends on the set of location ids and the seed only: not on row order,
/// thread count or the platform. Rows that already have a split keep it and
/// their locations take no part.
///
/// # Errors
/// `val_fraction` outside [0, 1].
pub fn assign_splits_by_location(
    manifest: &mut Manifest,
    val_fraction: f64,
    seed: u64,
) -> anyhow::Result<SplitCounts> {
    use sha2::{Digest, Sha256};
    anyhow::ensure!(
        (0.0..=1.0).contains(&val_fraction),
        "the validation fraction must lie in [0, 1] (got {val_fraction})"
    );
    let index = super::LocationIndex::build(manifest);
    let mut ranked: Vec<([u8; 32], &str, &[usize])> = index
        .locations
        .iter()
        .filter(|l| l.views.iter().all(|&r| manifest.records[r].split.is_none()))
        .map(|l| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(l.id.as_bytes());
            (h.finalize().into(), l.id.as_str(), l.views.as_slice())
        })
        .collect();
    ranked.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let val = (val_fraction * ranked.len() as f64).round() as usize;
    // A fraction strictly between 0 and 1 asks for both splits; rounding
    // must not silently leave one of them empty.
    anyhow::ensure!(
        ranked.is_empty()
            || !(val_fraction > 0.0 && val_fraction < 1.0)
            || (val > 0 && val < ranked.len()),
        "a validation fraction of {val_fraction} of the {} locations without a split rounds to {val} validation locations, leaving {} empty; choose a fraction between {:.4} and {:.4}",
        ranked.len(),
        if val == 0 { "val" } else { "train" },
        0.5 / ranked.len() as f64,
        1.0 - 0.5 / ranked.len() as f64
    );
    let assignments: Vec<(usize, Split)> = ranked
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, views))| {
            let split = if i < val { Split::Val } else { Split::Train };
            views.iter().map(move |&r| (r, split))
        })
        .collect();
    let counts = SplitCounts {
        train_locations: ranked.len() - val,
        val_locations: val,
    };
    for (r, split) in assignments {
        manifest.records[r].split = Some(split);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::summary::Summary;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn options(split: Option<Split>, skip_errors: bool, manifest_dir: &Path) -> CsvImportOptions {
        CsvImportOptions {
            split,
            skip_errors,
            manifest_dir: manifest_dir.to_path_buf(),
        }
    }

    const SQUARE: &str = "\"POLYGON ((10 20, 10.2 20, 10.2 20.2, 10 20.2, 10 20))\"";

    #[test]
    fn derived_fmow_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "train.csv",
            &format!(
                "category,location_id,image_id,timestamp,polygon,cloud\n\
                 airport,12,0,2015-02-26T16:31:40Z,{SQUARE},0\n\
                 airport,12,1,2017-03-01T10:00:00+0000,{SQUARE},5\n"
            ),
        );
        let (m, report) = import_fmow_csv(
            &csv,
            Path::new("/fmow/train"),
            FMOW_PATH_TEMPLATE,
            &options(Some(Split::Train), false, dir.path()),
        )
        .unwrap();
        assert_eq!(m.records.len(), 2);
        assert_eq!(report.rows, 2);
        let r = &m.records[1];
        // Images outside the manifest's folder keep their absolute path.
        assert_eq!(
            r.path,
            "/fmow/train/airport/airport_12/airport_12_1_rgb.jpg"
        );
        assert_eq!(r.location_id.as_deref(), Some("train/airport_12"));
        assert_eq!(r.label.as_deref(), Some("airport"));
        assert_eq!(r.split, Some(Split::Train));
        assert_eq!(r.timestamp.unwrap().to_string(), "2017-03-01T10:00:00Z");
        assert!((r.position.unwrap().lat - 20.1).abs() < 1e-9);
        assert_eq!(m.extra_columns, vec!["cloud"]);
        assert_eq!(r.extra, vec!["5"]);
    }

    /// fMoW numbers locations per split: `airport_12` of train.csv and of
    /// val.csv are two places, with or without --split.
    #[test]
    fn derived_fmow_csv_places_are_per_split() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("fmow");
        let table = |name: &str, lon: f64| {
            write(
                dir.path(),
                name,
                &format!(
                    "category,location_id,image_id,timestamp,polygon\n\
                     airport,12,0,2015-02-26T16:31:40Z,\"POINT ({lon} 20)\"\n\
                     airport,12,1,2016-02-26T16:31:40Z,\"POINT ({lon} 20)\"\n"
                ),
            )
        };
        let (train_csv, val_csv) = (table("train.csv", 10.0), table("val.csv", -70.0));
        let mut merged = Manifest::default();
        for (csv, split) in [(&train_csv, Split::Train), (&val_csv, Split::Val)] {
            let (m, _) = import_fmow_csv(
                csv,
                &images,
                FMOW_PATH_TEMPLATE,
                &options(Some(split), false, dir.path()),
            )
            .unwrap();
            // Below the manifest's folder: relative paths.
            assert_eq!(
                m.records[0].path,
                "fmow/airport/airport_12/airport_12_0_rgb.jpg"
            );
            merged.root = m.root.clone();
            merged.records.extend(m.records);
        }
        let ids: Vec<&str> = merged
            .records
            .iter()
            .map(|r| r.location_id.as_deref().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "train/airport_12",
                "train/airport_12",
                "val/airport_12",
                "val/airport_12"
            ]
        );
        let s = Summary::of(&merged, false);
        assert_eq!(s.locations, 2);
        assert_eq!(s.locations_in_several_splits, 0);
        assert!(s.spread_out_locations.is_empty());
        // Without --split the file stem stands for the split.
        let (m, _) = import_fmow_csv(
            &val_csv,
            &images,
            FMOW_PATH_TEMPLATE,
            &options(None, false, dir.path()),
        )
        .unwrap();
        assert_eq!(m.records[0].location_id.as_deref(), Some("val/airport_12"));
        // ... and is the rows' split, so `pretrain` finds its train rows.
        assert_eq!(m.records[0].split, Some(Split::Val));
        // A stem that names no split qualifies places but sets no split.
        let other = table("rgb_2016.csv", 10.0);
        let (m, _) = import_fmow_csv(
            &other,
            &images,
            FMOW_PATH_TEMPLATE,
            &options(None, false, dir.path()),
        )
        .unwrap();
        assert_eq!(
            m.records[0].location_id.as_deref(),
            Some("rgb_2016/airport_12")
        );
        assert_eq!(m.records[0].split, None);
    }

    #[test]
    fn derived_fmow_csv_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(None, false, dir.path());
        let csv = write(dir.path(), "bad.csv", "category,location_id,image_id,timestamp,polygon\nairport,1,0,soon,\"POLYGON ((0 0, 1 x))\"\n");
        let err = import_fmow_csv(&csv, Path::new("/r"), FMOW_PATH_TEMPLATE, &opts)
            .unwrap_err()
            .to_string();
        let f = csv.display();
        assert!(
            err.contains(&format!(
                "{f}:2:polygon: WKT vertex 'x' is not a number (value \"POLYGON ((0 0, 1 x))\")"
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("{f}:2:timestamp: timestamp must be an ISO 8601")),
            "{err}"
        );
        let csv = write(
            dir.path(),
            "nocol.csv",
            "category,location_id,timestamp,polygon\na,1,,POINT (0 0)\n",
        );
        let err = import_fmow_csv(&csv, Path::new("/r"), FMOW_PATH_TEMPLATE, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: path template names column 'image_id', which the CSV lacks"),
            "{err}"
        );
        let err = import_fmow_csv(&csv, Path::new("/r"), "{x", &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unclosed '{' in path template"), "{err}");
        // Even with skip_errors, a table whose every row fails says why.
        let err = import_fmow_csv(
            &csv,
            Path::new("/r"),
            "{x",
            &options(None, true, dir.path()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unclosed '{' in path template"), "{err}");
        let csv = write(
            dir.path(),
            "nopoly.csv",
            "category,location_id,image_id,timestamp\na,1,0,\n",
        );
        let err = import_fmow_csv(&csv, Path::new("/r"), FMOW_PATH_TEMPLATE, &opts)
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("{f}: 1 problem found\n{f}:1: the header has no 'polygon' column (found: category, location_id, image_id, timestamp)", f = csv.display()));
    }

    #[test]
    fn derived_fmow_csv_skip_errors_and_rows_without_position() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "train.csv",
            &format!(
                "category,location_id,image_id,timestamp,polygon\n\
                 airport,1,0,2015-02-26,{SQUARE}\n\
                 airport,1,1,2015-13-26,{SQUARE}\n\
                 airport,2,0,20180115T102030Z,\n\
                 ,3,0,2015-02-26,\"POLYGON ((0 0, 1 x))\"\n"
            ),
        );
        let err = import_fmow_csv(
            &csv,
            Path::new("/r"),
            FMOW_PATH_TEMPLATE,
            &options(None, false, dir.path()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(": 3 problems found"), "{err}");
        let (m, report) = import_fmow_csv(
            &csv,
            Path::new("/r"),
            FMOW_PATH_TEMPLATE,
            &options(None, true, dir.path()),
        )
        .unwrap();
        let f = csv.display();
        assert_eq!(report.skipped_rows, 2);
        assert_eq!(
            report.skipped,
            vec![
                format!("{f}:3:timestamp: timestamp must be an ISO 8601 date (2016-05-01) or date-time (2016-05-01T10:42:03Z) (value \"2015-13-26\")"),
                format!("{f}:5:polygon: WKT vertex 'x' is not a number (value \"POLYGON ((0 0, 1 x))\")"),
                format!("{f}:5:category: category is empty (value \"\")"),
            ]
        );
        assert_eq!(report.rows, 2);
        assert_eq!(report.rows_without_position, 1);
        let kept: Vec<(&str, bool)> = m
            .records
            .iter()
            .map(|r| (r.location_id.as_deref().unwrap(), r.position.is_some()))
            .collect();
        assert_eq!(
            kept,
            [("train/airport_1", true), ("train/airport_2", false)]
        );
        assert_eq!(
            m.records[1].timestamp.unwrap().to_string(),
            "2018-01-15T10:20:30Z"
        );
    }

    #[test]
    fn geoimagenet_join() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write(
            dir.path(),
            "meta.csv",
            "id,lat,lon,locality,country,region,county\n\
             111,48.85,2.35,Paris,France,IDF,\n\
             222,-33.9,151.2,Sydney,Australia,NSW,\n\
             333,35.7,139.7,Tokyo,Japan,,\n",
        );
        let images = dir.path().join("images");
        write(&images, "n01/111.jpg", "x");
        write(&images, "n02/222.JPEG", "x");
        write(&images, "n02/999.jpg", "x");
        write(&images, "n02/notes.txt", "x");
        let (m, report) = import_geoimagenet(
            &meta,
            &images,
            &options(Some(Split::Test), false, dir.path()),
        )
        .unwrap();
        assert_eq!(
            report,
            GeoImageNetReport {
                images: 3,
                images_without_metadata: 1,
                metadata_without_image: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            m.extra_columns,
            vec!["locality", "country", "region", "county"]
        );
        let paris = m
            .records
            .iter()
            .find(|r| r.location_id.as_deref() == Some("111"))
            .unwrap();
        assert_eq!(paris.label.as_deref(), Some("n01"));
        assert_eq!(paris.extra[0], "Paris");
        assert_eq!(paris.split, Some(Split::Test));
        // Relative to the manifest's folder, as `index fmow` writes them.
        assert_eq!(paris.path, "images/n01/111.jpg");
        assert_eq!(
            m.resolve(paris),
            dir.path()
                .canonicalize()
                .unwrap()
                .join("images/n01/111.jpg")
        );
        let orphan = m
            .records
            .iter()
            .find(|r| r.location_id.as_deref() == Some("999"))
            .unwrap();
        assert_eq!(orphan.position, None);
    }

    #[test]
    fn geoimagenet_metadata_errors() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write(
            dir.path(),
            "meta.csv",
            "id,lat,lon\n1,abc,2\n2,95,2\n1,1,1\n1,1,1\n3,,4\n",
        );
        let err = import_geoimagenet(&meta, dir.path(), &options(None, false, dir.path()))
            .unwrap_err()
            .to_string();
        let f = meta.display();
        for expect in [
            format!("{f}:2:lat: lat is not a number (value \"abc\")"),
            format!("{f}:3:lat: latitude 95 is outside [-90, 90] (value \"95\")"),
            format!("{f}:4:id: id appears twice (value \"1\")"),
            format!("{f}:5:id: id appears twice (value \"1\")"),
            format!("{f}:6:lat: lat is empty but lon is 4; give both or neither (value \"\")"),
        ] {
            assert!(err.contains(&expect), "{expect}\nnot in\n{err}");
        }
        assert!(err.contains(": 5 problems found"), "{err}");
    }

    /// One empty `lat` no longer aborts the import: an empty pair is an
    /// image without a position (kept, counted); a malformed row is reported
    /// and, with skip_errors, left out with its image.
    #[test]
    fn geoimagenet_skip_errors_and_rows_without_position() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write(
            dir.path(),
            "meta.csv",
            "id,lat,lon,country\n\
             1,40.7,-74.0,US\n\
             2,,,GB\n\
             3,,139.7,JP\n\
             4,north,1,FR\n\
             1,1,1,US\n",
        );
        let images = dir.path().join("images");
        for id in 1..=4 {
            write(&images, &format!("n01/{id}.jpg"), "x");
        }
        let err = import_geoimagenet(&meta, &images, &options(None, false, dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(": 3 problems found"), "{err}");
        let (m, report) =
            import_geoimagenet(&meta, &images, &options(None, true, dir.path())).unwrap();
        let f = meta.display();
        assert_eq!(
            report,
            GeoImageNetReport {
                images: 2,
                images_without_metadata: 0,
                images_without_position: 1,
                images_skipped: 2,
                metadata_without_image: 0,
                skipped: vec![
                    format!("{f}:4:lat: lat is empty but lon is 139.7; give both or neither (value \"\")"),
                    format!("{f}:5:lat: lat is not a number (value \"north\")"),
                    format!("{f}:6:id: id appears twice (value \"1\")"),
                ],
                skipped_rows: 3,
            }
        );
        let rows: Vec<(&str, Option<LatLon>, &str)> = m
            .records
            .iter()
            .map(|r| (r.path.as_str(), r.position, r.extra[0].as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "images/n01/1.jpg",
                    Some(LatLon {
                        lat: 40.7,
                        lon: -74.0
                    }),
                    "US"
                ),
                ("images/n01/2.jpg", None, "GB"),
            ]
        );
    }

    #[test]
    fn splits_by_location_are_deterministic_and_keep_places_whole() {
        // 40 places, 1-3 views each, no split.
        let mut text = String::from("path,location_id\n");
        for p in 0..40 {
            for v in 0..(1 + p % 3) {
                text.push_str(&format!("p{p}_{v}.jpg,place_{p}\n"));
            }
        }
        let parse = |t: &str| Manifest::parse(t.as_bytes(), "m.csv", Path::new(".")).unwrap();
        let split_of = |m: &Manifest| -> HashMap<String, Split> {
            let mut by_place = HashMap::new();
            for r in &m.records {
                let s = r.split.expect("every row gets a split");
                let prev = by_place.insert(r.location_id.clone().unwrap(), s);
                assert!(prev.is_none() || prev == Some(s), "a place in two splits");
            }
            by_place
        };
        let mut a = parse(&text);
        let counts = assign_splits_by_location(&mut a, 0.25, 7).unwrap();
        assert_eq!(
            counts,
            SplitCounts {
                train_locations: 30,
                val_locations: 10
            }
        );
        let sa = split_of(&a);
        assert_eq!(sa.values().filter(|&&s| s == Split::Val).count(), 10);
        // Same input and seed: same split, also with the rows in reverse order.
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1..].reverse();
        let mut b = parse(&(lines.join("\n") + "\n"));
        assign_splits_by_location(&mut b, 0.25, 7).unwrap();
        assert_eq!(split_of(&b), sa);
        // Another seed: another split of the same size.
        let mut c = parse(&text);
        assign_splits_by_location(&mut c, 0.25, 8).unwrap();
        let sc = split_of(&c);
        assert_ne!(sc, sa);
        assert_eq!(sc.values().filter(|&&s| s == Split::Val).count(), 10);
        // Rows with a split keep it; 0 and 1 are whole splits.
        let mut d = parse("path,location_id,split\na,A,test\nb,B,\nc,C,\n");
        let counts = assign_splits_by_location(&mut d, 1.0, 0).unwrap();
        assert_eq!(counts.val_locations, 2);
        let splits: Vec<Option<Split>> = d.records.iter().map(|r| r.split).collect();
        assert_eq!(
            splits,
            [Some(Split::Test), Some(Split::Val), Some(Split::Val)]
        );
        let err = assign_splits_by_location(&mut d, 1.5, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the validation fraction must lie in [0, 1] (got 1.5)"
        );
        // A fraction that rounds to an empty split is refused, both ways.
        let seven = (0..7).fold(String::from("path,location_id\n"), |t, i| {
            t + &format!("{i}.jpg,P{i}\n")
        });
        let err = assign_splits_by_location(&mut parse(&seven), 0.01, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a validation fraction of 0.01 of the 7 locations without a split rounds to 0 validation locations, leaving val empty; choose a fraction between 0.0714 and 0.9286"
        );
        let err = assign_splits_by_location(&mut parse(&seven), 0.95, 0).unwrap_err();
        assert!(err
            .to_string()
            .contains("rounds to 7 validation locations, leaving train empty"));
        let counts = assign_splits_by_location(&mut parse(&seven), 0.0715, 0).unwrap();
        assert_eq!((counts.train_locations, counts.val_locations), (6, 1));
    }
}
