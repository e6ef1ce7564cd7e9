//! The manifest: one CSV table for every geo-tagged image collection.
//!
//! Columns are found by name in the header; only `path` is required:
//!
//! | column        | meaning                                                          |
//! |---------------|------------------------------------------------------------------|
//! | `path`        | image file, relative to the manifest's folder or absolute        |
//! | `lat`, `lon`  | position in degrees (both or neither)                            |
//! | `timestamp`   | ISO 8601 date (`2016-05-01`) or date-time (`2016-05-01T10:42:03Z`), extended or basic (`20160501T104203Z`) |
//! | `location_id` | views of one place share it; absent: every row is its own place  |
//! | `label`       | class name or integer (evaluation only)                          |
//! | `split`       | `train`, `val` or `test`                                         |
//! | `crop`        | pixel box `x,y,w,h` cut out at load time                         |
//! | `geo_cluster` | geo-location class, written by `geossl cluster`                  |
//!
//! Other columns are kept (and written back) but otherwise ignored. Empty
//! cells mean "unknown". Reading validates every row and reports every
//! problem as `file:line:column: message (value "...")`, where line 1 is the
//! header, as an editor counts.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::geo::LatLon;

/// Problems kept in full in one error; the rest are only counted.
const MAX_REPORTED_PROBLEMS: usize = 50;

pub const COLUMN_PATH: &str = "path";
pub const COLUMN_LAT: &str = "lat";
pub const COLUMN_LON: &str = "lon";
pub const COLUMN_TIMESTAMP: &str = "timestamp";
pub const COLUMN_LOCATION: &str = "location_id";
pub const COLUMN_LABEL: &str = "label";
pub const COLUMN_SPLIT: &str = "split";
pub const COLUMN_CROP: &str = "crop";
pub const COLUMN_GEO_CLUSTER: &str = "geo_cluster";
const STANDARD_COLUMNS: [&str; 9] = [
    COLUMN_PATH,
    COLUMN_LAT,
    COLUMN_LON,
    COLUMN_TIMESTAMP,
    COLUMN_LOCATION,
    COLUMN_LABEL,
    COLUMN_SPLIT,
    COLUMN_CROP,
    COLUMN_GEO_CLUSTER,
];

/// Train/val/test membership of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err("split must be one of train, val, test".into()),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pixel box `x,y,w,h` (top-left corner, width, height).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl std::str::FromStr for CropBox {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [x, y, w, h] = parts[..] else {
            return Err("crop must be four integers x,y,w,h".into());
        };
        let num = |t: &str, name: &str| {
            t.parse::<u32>()
                .map_err(|_| format!("crop {name} '{t}' is not a non-negative integer"))
        };
        let b = CropBox {
            x: num(x, "x")?,
            y: num(y, "y")?,
            w: num(w, "w")?,
            h: num(h, "h")?,
        };
        if b.w == 0 || b.h == 0 {
            return Err("crop width and height must be positive".into());
        }
        if b.x.checked_add(b.w).is_none() || b.y.checked_add(b.h).is_none() {
            return Err("crop box extends past 2^32 pixels".into());
        }
        Ok(b)
    }
}

impl fmt::Display for CropBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.w, self.h)
    }
}

/// A moment in UTC, millisecond resolution. Date-only values mean midnight
/// UTC; values with an offset are converted to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub millis: i64,
}

impl Timestamp {
    pub fn from_datetime(dt: NaiveDateTime) -> Self {
        Self {
            millis: dt.and_utc().timestamp_millis(),
        }
    }

    pub fn datetime(self) -> NaiveDateTime {
        DateTime::from_timestamp_millis(self.millis)
            .expect("timestamp within chrono's range")
            .naive_utc()
    }

    /// Years between two moments (365.25-day years).
    pub fn years_until(self, later: Timestamp) -> f64 {
        (later.millis - self.millis) as f64 / (1000.0 * 86_400.0 * 365.25)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = String;
    /// ISO 8601 in its extended (`2016-05-01T10:42:03Z`) and basic
    /// (`20160501T104203Z`) forms, the one parser of every importer and the
    /// manifest reader: a date (`2016-05-01`, `20160501`: midnight UTC) or a
    /// date-time with minutes or seconds, `T` or a space between date and
    /// time, fractional seconds after `.` or `,` (kept to the millisecond,
    /// truncated), and a zone of `Z`, `+hh:mm`, `+hhmm` or `+hh` (converted
    /// to UTC; none means UTC).
    fn from_str(s: &str) -> Result<Self, String> {
        parse_iso8601(s.trim()).ok_or_else(|| {
            "timestamp must be an ISO 8601 date (2016-05-01) or date-time (2016-05-01T10:42:03Z)"
                .into()
        })
    }
}

fn parse_iso8601(t: &str) -> Option<Timestamp> {
    let (date, time) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let date = if date.contains('-') {
        NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?
    } else if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        let part = |r: std::ops::Range<usize>| date[r].parse::<u32>().ok();
        NaiveDate::from_ymd_opt(part(0..4)? as i32, part(4..6)?, part(6..8)?)?
    } else {
        return None;
    };
    let Some(time) = time else {
        return Some(Timestamp::from_datetime(date.and_hms_opt(0, 0, 0)?));
    };
    // The zone is the tail from `Z` or the sign onwards.
    let (clock, offset_s) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], zone_offset_seconds(time[i..].trim())?),
        None => (time, 0),
    };
    let clock = clock.trim().replace(',', ".");
    let extended = clock.contains(':');
    let (whole, frac) = match clock.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (w, Some(f)),
        Some(_) => return None,
        None => (clock.as_str(), None),
    };
    let fields: Vec<&str> = if extended {
        whole.split(':').collect()
    } else if whole.len() % 2 == 0 && whole.is_ascii() {
        (0..whole.len())
            .step_by(2)
            .map(|i| &whole[i..i + 2])
            .collect()
    } else {
        return None;
    };
    let num = |f: &str| -> Option<u32> {
        (f.len() == 2 && f.bytes().all(|b| b.is_ascii_digit()))
            .then(|| f.parse().ok())
            .flatten()
    };
    let (h, m, sec) = match fields[..] {
        [h, m] if frac.is_none() => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return None,
    };
    let millis = frac.map_or(0, |f| {
        let digits: String = f.chars().chain("000".chars()).take(3).collect();
        digits.parse::<u32>().unwrap_or(0)
    });
    let dt = date.and_hms_milli_opt(h, m, sec, millis)?;
    let millis = dt.and_utc().timestamp_millis() - offset_s * 1000;
    // Near the ends of chrono's range an offset can push the moment past
    // them; refuse here rather than fail when it is printed.
    DateTime::from_timestamp_millis(millis)?;
    Some(Timestamp { millis })
}

/// Seconds east of UTC for `Z`, `+hh:mm`, `+hhmm` or `+hh` (and `-`).
fn zone_offset_seconds(zone: &str) -> Option<i64> {
    if zone == "Z" || zone == "z" {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = zone[1..].replace(':', "");
    if !(rest.len() == 2 || rest.len() == 4) || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = rest[..2].parse().ok()?;
    let m: i64 = if rest.len() == 4 {
        rest[2..].parse().ok()?
    } else {
        0
    };
    if h > 23 || m > 59 || (zone[1..].contains(':') && zone.len() != 6) {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = self.datetime();
        if self.millis.rem_euclid(1000) == 0 {
            write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
        }
    }
}

/// One row of a manifest: one image (or one crop of an image).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageRecord {
    /// The path as written (relative to the manifest's folder, or absolute).
    pub path: String,
    pub position: Option<LatLon>,
    pub timestamp: Option<Timestamp>,
    pub location_id: Option<String>,
    pub label: Option<String>,
    pub split: Option<Split>,
    pub crop: Option<CropBox>,
    pub geo_cluster: Option<u32>,
    /// Values of the manifest's extra columns, in [`Manifest::extra_columns`] order.
    pub extra: Vec<String>,
}

/// One problem found in a manifest, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RowProblem {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    /// Column name; empty when the problem concerns the whole row.
    pub column: String,
    pub value: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:1: the header has no 'path' column (found: {found})")]
    MissingPathColumn { file: String, found: String },
    #[error("{file}:1: column '{column}' appears twice in the header")]
    DuplicateColumn { file: String, column: String },
    #[error("{file}:1: column '{present}' needs column '{missing}' too (positions need both lat and lon)")]
    HalfPosition {
        file: String,
        present: String,
        missing: String,
    },
    #[error("{file}: the manifest has no rows")]
    NoRows { file: String },
    #[error("{}", format_problems(.file, .problems, *.total))]
    Rows {
        file: String,
        problems: Vec<RowProblem>,
        total: usize,
    },
}

fn format_problems(file: &str, problems: &[RowProblem], total: usize) -> String {
    let mut out = format!(
        "{file}: {total} problem{} found",
        if total == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push('\n');
        out.push_str(&format_problem(file, p));
    }
    if total > problems.len() {
        out.push_str(&format!("\n... and {} more", total - problems.len()));
    }
    out
}

/// `file:line:column: message (value "...")`, the form every row error takes.
pub fn format_problem(file: &str, p: &RowProblem) -> String {
    if p.column.is_empty() {
        format!("{file}:{}: {}", p.line, p.message)
    } else {
        format!(
            "{file}:{}:{}: {} (value \"{}\")",
            p.line, p.column, p.message, p.value
        )
    }
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// The file it was read from (for messages); empty for in-memory tables.
    pub source: PathBuf,
    /// The folder relative image paths resolve against.
    pub root: PathBuf,
    pub records: Vec<ImageRecord>,
    /// Names of the columns kept verbatim, in file order.
    pub extra_columns: Vec<String>,
}

/// Where each recognised column sits in a row.
struct ColumnMap {
    path: usize,
    lat: Option<usize>,
    lon: Option<usize>,
    timestamp: Option<usize>,
    location_id: Option<usize>,
    label: Option<usize>,
    split: Option<usize>,
    crop: Option<usize>,
    geo_cluster: Option<usize>,
    extra: Vec<usize>,
}

impl Manifest {
    /// Reads and validates a manifest file; relative image paths resolve
    /// against its folder.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let file = path.display().to_string();
        let reader = std::fs::File::open(path).map_err(|source| ManifestError::Io {
            file: file.clone(),
            source,
        })?;
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        let mut m = Self::parse(reader, &file, &root)?;
        m.source = path.to_path_buf();
        Ok(m)
    }

    /// Parses a manifest from any reader; `file` names it in messages.
    pub fn parse<R: Read>(reader: R, file: &str, root: &Path) -> Result<Self, ManifestError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(super::csv_lines::LineTracker::new(reader));
        let headers = csv
            .headers()
            .map_err(|e| csv_error(file, e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect::<Vec<_>>();
        let columns = column_map(file, &headers)?;
        let extra_columns = columns.extra.iter().map(|&i| headers[i].clone()).collect();

        let mut records = Vec::new();
        let mut problems = Vec::new();
        let mut total = 0usize;
        let mut row = csv::StringRecord::new();
        loop {
            match csv.read_record(&mut row) {
                Ok(false) => break,
                Ok(true) => {
                    let line = csv.get_mut().line_of(row.position());
                    match parse_row(&row, line, &headers, &columns) {
                        Ok(r) => records.push(r),
                        Err(mut ps) => {
                            total += ps.len();
                            ps.truncate(MAX_REPORTED_PROBLEMS.saturating_sub(problems.len()));
                            problems.extend(ps);
                        }
                    }
                }
                Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                    return Err(csv_error(file, e))
                }
                Err(e) => {
                    total += 1;
                    if problems.len() < MAX_REPORTED_PROBLEMS {
                        let line = csv.get_mut().line_of(e.position());
                        problems.push(csv_row_problem(&e, line));
                    }
                    // A UTF-8 error leaves the reader positioned after the
                    // bad record, so reading on finds the remaining problems.
                }
            }
        }
        if total > 0 {
            return Err(ManifestError::Rows {
                file: file.to_string(),
                problems,
                total,
            });
        }
        if records.is_empty() {
            return Err(ManifestError::NoRows {
                file: file.to_string(),
            });
        }
        Ok(Self {
            source: PathBuf::new(),
            root: root.to_path_buf(),
            records,
            extra_columns,
        })
    }

    /// The file an image record refers to.
    pub fn resolve(&self, record: &ImageRecord) -> PathBuf {
        let p = Path::new(&record.path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    /// Re-expresses relative image paths for a manifest about to be written
    /// into `new_root`: unchanged for the same folder, relative when the old
    /// folder lies below the new one, absolute otherwise.
    pub fn rebase(&mut self, new_root: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(new_root)?;
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let (old, new) = (canon(&self.root), canon(new_root));
        if old == new {
            return Ok(());
        }
        let prefix = match old.strip_prefix(&new) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => old.clone(),
        };
        for r in &mut self.records {
            if Path::new(&r.path).is_relative() {
                r.path = prefix.join(&r.path).to_string_lossy().into_owned();
            }
        }
        self.root = new;
        Ok(())
    }

    /// Writes the manifest as CSV, atomically (temporary file, fsync,
    /// rename), with the standard columns any record uses, then the extras.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::formats::atomic_write::write_atomically(path, |w| self.write_csv(w))
    }

    pub fn write_csv<W: Write>(&self, w: W) -> anyhow::Result<()> {
        let mut out = csv::Writer::from_writer(w);
        self.csv_rows(|cells| Ok(out.write_record(cells)?))?;
        out.flush()?;
        Ok(())
    }

    /// Gives `each` the CSV header, then every record's cells, as
    /// [`Manifest::write_csv`] writes them: the standard columns any record
    /// uses, then the extras; an absent value is an empty cell. Stops at
    /// the first error of `each`.
    pub fn csv_rows(
        &self,
        mut each: impl FnMut(&[String]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let any = |f: &dyn Fn(&ImageRecord) -> bool| self.records.iter().any(f);
        let has_pos = any(&|r| r.position.is_some());
        let has_time = any(&|r| r.timestamp.is_some());
        let has_loc = any(&|r| r.location_id.is_some());
        let has_label = any(&|r| r.label.is_some());
        let has_split = any(&|r| r.split.is_some());
        let has_crop = any(&|r| r.crop.is_some());
        let has_geo = any(&|r| r.geo_cluster.is_some());
        let mut header = vec![COLUMN_PATH.to_string()];
        if has_pos {
            header.extend([COLUMN_LAT.to_string(), COLUMN_LON.to_string()]);
        }
        for (on, name) in [
            (has_time, COLUMN_TIMESTAMP),
            (has_loc, COLUMN_LOCATION),
            (has_label, COLUMN_LABEL),
            (has_split, COLUMN_SPLIT),
            (has_crop, COLUMN_CROP),
            (has_geo, COLUMN_GEO_CLUSTER),
        ] {
            if on {
                header.push(name.to_string());
            }
        }
        header.extend(self.extra_columns.iter().cloned());
        each(&header)?;
        let opt = |v: Option<String>| v.unwrap_or_default();
        for r in &self.records {
            let mut row = vec![r.path.clone()];
            if has_pos {
                // 7 decimals is ~1 cm: lossless for any real geo-tag.
                row.push(opt(r.position.map(|p| format!("{:.7}", p.lat))));
                row.push(opt(r.position.map(|p| format!("{:.7}", p.lon))));
            }
            if has_time {
                row.push(opt(r.timestamp.map(|t| t.to_string())));
            }
            if has_loc {
                row.push(opt(r.location_id.clone()));
            }
            if has_label {
                row.push(opt(r.label.clone()));
            }
            if has_split {
                row.push(opt(r.split.map(|s| s.to_string())));
            }
            if has_crop {
                row.push(opt(r.crop.map(|c| c.to_string())));
            }
            if has_geo {
                row.push(opt(r.geo_cluster.map(|c| c.to_string())));
            }
            for i in 0..self.extra_columns.len() {
                row.push(r.extra.get(i).cloned().unwrap_or_default());
            }
            each(&row)?;
        }
        Ok(())
    }
}

/// A CSV reader error as a manifest error: I/O stays I/O, anything else
/// (wrong field count, bad UTF-8) is a problem of its row.
pub(crate) fn csv_error(file: &str, e: csv::Error) -> ManifestError {
    let line = e.position().map_or(0, |p| p.line());
    csv_error_at(file, e, line)
}

/// [`csv_error`] of a record at file `line`.
pub(crate) fn csv_error_at(file: &str, e: csv::Error, line: u64) -> ManifestError {
    if let csv::ErrorKind::Io(_) = e.kind() {
        let csv::ErrorKind::Io(source) = e.into_kind() else {
            unreachable!("checked above")
        };
        return ManifestError::Io {
            file: file.to_string(),
            source,
        };
    }
    ManifestError::Rows {
        file: file.to_string(),
        problems: vec![csv_row_problem(&e, line)],
        total: 1,
    }
}

/// The row problem a non-I/O CSV reader error describes, at file `line`
/// (from [`super::csv_lines::LineTracker`]).
pub(crate) fn csv_row_problem(e: &csv::Error, line: u64) -> RowProblem {
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("row has {len} fields but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "row is not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    RowProblem {
        line,
        column: String::new(),
        value: String::new(),
        message,
    }
}

fn column_map(file: &str, headers: &[String]) -> Result<ColumnMap, ManifestError> {
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].contains(h) {
            return Err(ManifestError::DuplicateColumn {
                file: file.to_string(),
                column: h.clone(),
            });
        }
    }
    let find = |name: &str| headers.iter().position(|h| h == name);
    let path = find(COLUMN_PATH).ok_or_else(|| ManifestError::MissingPathColumn {
        file: file.to_string(),
        found: if headers.is_empty() {
            "nothing".to_string()
        } else {
            headers.join(", ")
        },
    })?;
    let (lat, lon) = (find(COLUMN_LAT), find(COLUMN_LON));
    match (lat, lon) {
        (Some(_), None) | (None, Some(_)) => {
            let (present, missing) = if lat.is_some() {
                (COLUMN_LAT, COLUMN_LON)
            } else {
                (COLUMN_LON, COLUMN_LAT)
            };
            return Err(ManifestError::HalfPosition {
                file: file.to_string(),
                present: present.to_string(),
                missing: missing.to_string(),
            });
        }
        _ => {}
    }
    Ok(ColumnMap {
        path,
        lat,
        lon,
        timestamp: find(COLUMN_TIMESTAMP),
        location_id: find(COLUMN_LOCATION),
        label: find(COLUMN_LABEL),
        split: find(COLUMN_SPLIT),
        crop: find(COLUMN_CROP),
        geo_cluster: find(COLUMN_GEO_CLUSTER),
        extra: (0..headers.len())
            .filter(|&i| !STANDARD_COLUMNS.contains(&headers[i].as_str()))
            .collect(),
    })
}

fn parse_row(
    row: &csv::StringRecord,
    line: u64,
    headers: &[String],
    c: &ColumnMap,
) -> Result<ImageRecord, Vec<RowProblem>> {
    let mut problems = Vec::new();
    let cell = |i: usize| row.get(i).unwrap_or("").trim();
    let mut problem = |i: usize, message: String| {
        problems.push(RowProblem {
            line,
            column: headers[i].clone(),
            value: cell(i).to_string(),
            message,
        });
    };
    // A cell that is either empty (None) or parses (Some); records a problem otherwise.
    fn parsed<T: std::str::FromStr<Err = String>>(value: &str) -> Result<Option<T>, String> {
        if value.is_empty() {
            Ok(None)
        } else {
            value.parse::<T>().map(Some)
        }
    }

    let path = cell(c.path).to_string();
    if path.is_empty() {
        problem(c.path, "path is empty".into());
    }

    let mut position = None;
    if let (Some(li), Some(oi)) = (c.lat, c.lon) {
        let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
        match (cell(li), cell(oi)) {
            ("", "") => {}
            (la, "") => problem(
                oi,
                format!("lon is empty but lat is {la}; give both or neither"),
            ),
            ("", lo) => problem(
                li,
                format!("lat is empty but lon is {lo}; give both or neither"),
            ),
            (la, lo) => match (number(la), number(lo)) {
                (None, _) => problem(li, "lat is not a number".into()),
                (_, None) => problem(oi, "lon is not a number".into()),
                (Some(lat), Some(lon)) => match LatLon::new(lat, lon) {
                    Ok(p) => position = Some(p),
                    Err(crate::geo::coords::CoordError::LatitudeOutOfRange(_)) => {
                        problem(li, "lat is outside [-90, 90]".into())
                    }
                    Err(crate::geo::coords::CoordError::LongitudeOutOfRange(_)) => {
                        problem(oi, "lon is outside [-180, 180]".into())
                    }
                },
            },
        }
    }

    let optional = |idx: Option<usize>| -> Option<String> {
        let i = idx?;
        let v = cell(i);
        (!v.is_empty()).then(|| v.to_string())
    };
    let location_id = optional(c.location_id);
    let label = optional(c.label);

    let timestamp = c.timestamp.and_then(|i| {
        parsed::<Timestamp>(cell(i)).unwrap_or_else(|m| {
            problem(i, m);
            None
        })
    });
    let split = c.split.and_then(|i| {
        parsed::<Split>(cell(i)).unwrap_or_else(|m| {
            problem(i, m);
            None
        })
    });
    let crop = c.crop.and_then(|i| {
        parsed::<CropBox>(cell(i)).unwrap_or_else(|m| {
            problem(i, m);
            None
        })
    });
    let geo_cluster = c.geo_cluster.and_then(|i| {
        let v = cell(i);
        if v.is_empty() {
            return None;
        }
        v.parse::<u32>().map(Some).unwrap_or_else(|_| {
            problem(i, "geo_cluster must be a non-negative integer".into());
            None
        })
    });
    if let Some(i) = c.location_id {
        if location_id.is_none() {
            problem(
                i,
                "location_id is empty (leave the column out if every image is its own location)"
                    .into(),
            );
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ImageRecord {
        path,
        position,
        timestamp,
        location_id,
        label,
        split,
        crop,
        geo_cluster,
        extra: c
            .extra
            .iter()
            .map(|&i| row.get(i).unwrap_or("").to_string())
            .collect(),
    })
}

/// The folder a manifest file at `path` lies in (its images' root for
/// relative paths): `.` for a bare file name.
pub fn manifest_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates [`manifest_dir`] of `path` (and its parents) for a manifest
/// about to be written there; returns it.
pub fn create_manifest_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = manifest_dir(path);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text.as_bytes(), "m.csv", Path::new("/data"))
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn full_row_parses() {
        let m = parse(
            "path,lat,lon,timestamp,location_id,label,split,crop,geo_cluster,gsd\n\
             a/x.jpg,48.85,2.35,2016-05-01T10:42:03Z,paris_1,airport,train,\"10,20,30,40\",7,0.5\n\
             /abs/y.png,,,2016-05-02,paris_1,,,,,\n",
        )
        .unwrap();
        assert_eq!(m.records.len(), 2);
        assert_eq!(m.extra_columns, vec!["gsd"]);
        let r = &m.records[0];
        assert_eq!(
            r.position,
            Some(LatLon {
                lat: 48.85,
                lon: 2.35
            })
        );
        assert_eq!(r.timestamp.unwrap().to_string(), "2016-05-01T10:42:03Z");
        assert_eq!(r.location_id.as_deref(), Some("paris_1"));
        assert_eq!(r.label.as_deref(), Some("airport"));
        assert_eq!(r.split, Some(Split::Train));
        assert_eq!(
            r.crop,
            Some(CropBox {
                x: 10,
                y: 20,
                w: 30,
                h: 40
            })
        );
        assert_eq!(r.geo_cluster, Some(7));
        assert_eq!(r.extra, vec!["0.5"]);
        assert_eq!(m.resolve(r), PathBuf::from("/data/a/x.jpg"));
        let r2 = &m.records[1];
        assert_eq!(r2.position, None);
        assert_eq!(r2.timestamp.unwrap().to_string(), "2016-05-02T00:00:00Z");
        assert_eq!(m.resolve(r2), PathBuf::from("/abs/y.png"));
    }

    #[test]
    fn columns_in_any_order_and_path_only() {
        let m = parse("label,path\ncat,b.jpg\n").unwrap();
        assert_eq!(m.records[0].path, "b.jpg");
        assert_eq!(m.records[0].label.as_deref(), Some("cat"));
        assert_eq!(m.records[0].location_id, None);
    }

    #[test]
    fn timestamps_in_iso_forms() {
        for (text, expect) in [
            ("2016-05-01T10:42:03Z", "2016-05-01T10:42:03Z"),
            ("2016-05-01T12:42:03+02:00", "2016-05-01T10:42:03Z"),
            ("2016-05-01T10:42:03.250Z", "2016-05-01T10:42:03.250Z"),
            ("2016-05-01 10:42:03", "2016-05-01T10:42:03Z"),
            ("2016-05-01T10:42", "2016-05-01T10:42:00Z"),
            ("2016-05-01", "2016-05-01T00:00:00Z"),
            // Offsets without a colon (fMoW-derived tables), hours only,
            // negative, and `-00:00`.
            ("2015-02-26T16:31:40+0000", "2015-02-26T16:31:40Z"),
            ("2015-02-26T18:01:40+0130", "2015-02-26T16:31:40Z"),
            ("2015-02-26T11:31:40-05", "2015-02-26T16:31:40Z"),
            ("2015-02-26T16:31:40-00:00", "2015-02-26T16:31:40Z"),
            ("2015-02-26t16:31:40z", "2015-02-26T16:31:40Z"),
            // Basic forms.
            ("20180115", "2018-01-15T00:00:00Z"),
            ("20180115T102030Z", "2018-01-15T10:20:30Z"),
            ("20180115T102030", "2018-01-15T10:20:30Z"),
            ("20180115T1020", "2018-01-15T10:20:00Z"),
            ("20180115T122030+0200", "2018-01-15T10:20:30Z"),
            ("20180115T102030.5Z", "2018-01-15T10:20:30.500Z"),
            // A space for `T`, fractional seconds of any length (truncated
            // to the millisecond), a decimal comma.
            ("2016-05-01 10:42:03.123456789Z", "2016-05-01T10:42:03.123Z"),
            ("2016-05-01 10:42:03.1", "2016-05-01T10:42:03.100Z"),
            ("2016-05-01T10:42:03,75Z", "2016-05-01T10:42:03.750Z"),
            ("2016-05-01 10:42:03 +02:00", "2016-05-01T08:42:03Z"),
            ("  2016-05-01  ", "2016-05-01T00:00:00Z"),
            // Offsets cross midnight and the year.
            ("2016-01-01T01:00:00+02:00", "2015-12-31T23:00:00Z"),
        ] {
            assert_eq!(
                text.parse::<Timestamp>()
                    .unwrap_or_else(|e| panic!("{text}: {e}"))
                    .to_string(),
                expect,
                "{text}"
            );
        }
        for bad in [
            "",
            "yesterday",
            "01/05/2016",
            "2016-02-30",
            "20160230",
            "2016051",
            "2016-05-01T",
            "2016-05-01T10",
            "2016-05-01T25:00:00Z",
            "2016-05-01T10:61",
            "2016-05-01T10:42:03.Z",
            "2016-05-01T10:42.5",
            "2016-05-01T10:42:03+2",
            "2016-05-01T10:42:03+24:00",
            "2016-05-01T10:42:03+02:00:00",
            "2016-05-01T10:42:03Q",
            "20180115T10203Z",
            "20180115T1020305",
            "2016-05-01T10:42:03ZZ",
            "262143-12-31T23:59:59-23:59",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} was accepted");
        }
        let a: Timestamp = "2015-01-01".parse().unwrap();
        let b: Timestamp = "2017-01-01".parse().unwrap();
        assert!((a.years_until(b) - 2.0).abs() < 0.01);
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            message("file,lat\nx,1\n"),
            "m.csv:1: the header has no 'path' column (found: file, lat)"
        );
        assert_eq!(
            message("path,label,label\nx,a,b\n"),
            "m.csv:1: column 'label' appears twice in the header"
        );
        assert_eq!(
            message("path,lat\nx,1\n"),
            "m.csv:1: column 'lat' needs column 'lon' too (positions need both lat and lon)"
        );
        assert_eq!(
            message("path,lon\nx,1\n"),
            "m.csv:1: column 'lon' needs column 'lat' too (positions need both lat and lon)"
        );
        assert_eq!(message("path\n"), "m.csv: the manifest has no rows");
        assert_eq!(
            message(""),
            "m.csv:1: the header has no 'path' column (found: nothing)"
        );
    }

    #[test]
    fn every_cell_error_names_line_column_and_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("path,lat,lon", ",1,2", "m.csv:2:path: path is empty (value \"\")"),
            ("path,lat,lon", "x,91,2", "m.csv:2:lat: lat is outside [-90, 90] (value \"91\")"),
            ("path,lat,lon", "x,1,-181", "m.csv:2:lon: lon is outside [-180, 180] (value \"-181\")"),
            ("path,lat,lon", "x,north,2", "m.csv:2:lat: lat is not a number (value \"north\")"),
            ("path,lat,lon", "x,1,east", "m.csv:2:lon: lon is not a number (value \"east\")"),
            ("path,lat,lon", "x,NaN,2", "m.csv:2:lat: lat is not a number (value \"NaN\")"),
            ("path,lat,lon", "x,1,", "m.csv:2:lon: lon is empty but lat is 1; give both or neither (value \"\")"),
            ("path,lat,lon", "x,,2", "m.csv:2:lat: lat is empty but lon is 2; give both or neither (value \"\")"),
            (
                "path,timestamp",
                "x,01/05/2016",
                "m.csv:2:timestamp: timestamp must be an ISO 8601 date (2016-05-01) or date-time (2016-05-01T10:42:03Z) (value \"01/05/2016\")",
            ),
            ("path,timestamp", "x,2016-02-30", "m.csv:2:timestamp: timestamp must be an ISO 8601 date (2016-05-01) or date-time (2016-05-01T10:42:03Z) (value \"2016-02-30\")"),
            ("path,split", "x,training", "m.csv:2:split: split must be one of train, val, test (value \"training\")"),
            ("path,crop", "x,\"1,2,3\"", "m.csv:2:crop: crop must be four integers x,y,w,h (value \"1,2,3\")"),
            ("path,crop", "x,\"1,-2,3,4\"", "m.csv:2:crop: crop y '-2' is not a non-negative integer (value \"1,-2,3,4\")"),
            ("path,crop", "x,\"1,2,0,4\"", "m.csv:2:crop: crop width and height must be positive (value \"1,2,0,4\")"),
            (
                "path,crop",
                "x,\"4294967295,0,2,2\"",
                "m.csv:2:crop: crop box extends past 2^32 pixels (value \"4294967295,0,2,2\")",
            ),
            ("path,geo_cluster", "x,-1", "m.csv:2:geo_cluster: geo_cluster must be a non-negative integer (value \"-1\")"),
            (
                "path,location_id",
                "x,",
                "m.csv:2:location_id: location_id is empty (leave the column out if every image is its own location) (value \"\")",
            ),
        ];
        for (header, row, expect) in cases {
            let text = format!("{header}\n{row}\n");
            assert_eq!(
                message(&text),
                format!("m.csv: 1 problem found\n{expect}"),
                "{text}"
            );
        }
    }

    #[test]
    fn row_shape_and_encoding_errors() {
        assert_eq!(
            message("path,label\nx,a\ny\n"),
            "m.csv: 1 problem found\nm.csv:3: row has 1 fields but the header has 2"
        );
        let mut bytes = b"path,label\nx,a\n".to_vec();
        bytes.extend_from_slice(b"y,\xff\xfe\n");
        let err = Manifest::parse(&bytes[..], "m.csv", Path::new("."))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "m.csv: 1 problem found\nm.csv:3: row is not valid UTF-8"
        );
    }

    /// Problems name the file line (header = 1) in LF and CRLF files alike
    /// (Excel writes CRLF), with a byte-order mark and a blank line.
    #[test]
    fn problem_lines_for_lf_and_crlf() {
        let body = [
            "\u{feff}path,lat,lon,timestamp",
            "a.jpg,10,20,2018-02-30",
            "",
            "b.jpg,NaN,20,",
            "c.jpg,1,2",
        ];
        for eol in ["\n", "\r\n"] {
            let text = body.join(eol) + eol;
            let err = Manifest::parse(text.as_bytes(), "edge.csv", Path::new("."));
            let Err(ManifestError::Rows { problems, .. }) = err else {
                panic!("{eol:?}: {err:?}")
            };
            let lines: Vec<(u64, &str)> = problems
                .iter()
                .map(|p| (p.line, p.column.as_str()))
                .collect();
            assert_eq!(
                lines,
                [(2, "timestamp"), (4, "lat"), (5, "")],
                "line ending {eol:?}"
            );
        }
    }

    #[test]
    fn all_problems_reported_with_lines() {
        let err = parse("path,lat,lon,split\na,1,2,train\nb,100,2,train\nc,1,2,nope\n,1,2,val\n")
            .unwrap_err();
        let ManifestError::Rows {
            problems, total, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(*total, 3);
        let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        // Two problems in one row are both reported.
        let err = parse("path,lat,lon,split\na,100,2,nope\n").unwrap_err();
        assert!(
            err.to_string().starts_with("m.csv: 2 problems found\n"),
            "{err}"
        );
    }

    #[test]
    fn problem_list_is_capped_but_counted() {
        let mut text = String::from("path,split\n");
        for i in 0..120 {
            text.push_str(&format!("x{i},bad\n"));
        }
        let err = parse(&text).unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("m.csv: 120 problems found\n"));
        assert!(s.ends_with("\n... and 70 more"), "{s}");
    }

    #[test]
    fn missing_file_names_it() {
        let err = Manifest::read(Path::new("/nonexistent/m.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/m.csv: "), "{err}");
    }

    #[test]
    fn write_read_round_trip_keeps_extras() {
        let text = "path,lat,lon,timestamp,location_id,label,split,crop,geo_cluster,gsd,note\n\
                    a.jpg,48.8500000,2.3500000,2016-05-01T10:42:03Z,p1,airport,train,\"1,2,3,4\",7,0.5,\"has, comma\"\n\
                    b.jpg,,,,p2,,,,,,\n";
        let m = parse(text).unwrap();
        let mut out = Vec::new();
        m.write_csv(&mut out).unwrap();
        let again = Manifest::parse(&out[..], "again.csv", Path::new("/data")).unwrap();
        assert_eq!(again.records, m.records);
        assert_eq!(again.extra_columns, m.extra_columns);
        // Only columns that carry data are written.
        let m = parse("path,label,lat,lon\nx,,,\n").unwrap();
        let mut out = Vec::new();
        m.write_csv(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "path\nx\n");
    }
}
