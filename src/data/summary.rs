//! What `geossl index --check` prints: a manifest described, its files
//! stat'ed (or decoded, or left alone) in parallel, and its problems listed.
//!
//! Problems, which make the check fail: missing files, files that do not
//! decode, and locations whose views lie farther apart than a threshold
//! (one `location_id` given to different places, such as fMoW's per-split
//! folder names taken alone). Views of one place in several splits are
//! reported as a warning.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::band_image::decode_source;
use super::bands::{BandSelection, InputSpec};
use super::decode::DecodeOptions;
use super::location_index::LocationIndex;
use super::manifest::{CropBox, Manifest};
use crate::geo::LatLon;
use crate::progress;

/// Default of [`CheckOptions::max_location_spread_km`]: fMoW's views of one
/// place are crops around one object, their footprint centroids a few
/// hundred metres apart; different places sharing an id are usually much
/// farther apart than this.
pub const DEFAULT_MAX_LOCATION_SPREAD_KM: f64 = 5.0;

/// Locations above this many distinct positions get the double-sweep
/// estimate of their spread rather than the exact all-pairs maximum.
const EXACT_SPREAD_MAX_POSITIONS: usize = 512;

/// How far a check looks at the image files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileCheck {
    /// Leave the files alone (e.g. data on remote storage).
    None,
    /// Each distinct file must exist.
    Exists,
    /// Each distinct file (and crop) must also decode, as training would
    /// decode it ([`decode_source`]; every band of a GDAL raster).
    Decode,
}

/// What [`Summary::check`] checks.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub files: FileCheck,
    /// Views of one location farther apart than this (great-circle
    /// kilometres) make the location a problem.
    pub max_location_spread_km: f64,
    pub decode_limits: DecodeOptions,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            files: FileCheck::Exists,
            max_location_spread_km: DEFAULT_MAX_LOCATION_SPREAD_KM,
            decode_limits: DecodeOptions::default(),
        }
    }
}

/// A manifest row: its line in the manifest file (the header is line 1, as
/// in every other message that names a row) and its path as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowRef {
    pub line: usize,
    pub path: String,
}

/// A location whose views lie far apart: the two rows farthest apart found
/// and their great-circle distance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpreadOutLocation {
    pub location_id: String,
    pub km: f64,
    pub rows: [RowRef; 2],
}

/// A file that exists but does not decode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadableFile {
    pub path: String,
    pub reason: String,
}

/// Views-per-location buckets, fMoW-like (1..21 views per place).
const VIEW_BUCKETS: [(usize, usize, &str); 7] = [
    (1, 1, "1"),
    (2, 2, "2"),
    (3, 3, "3"),
    (4, 4, "4"),
    (5, 9, "5-9"),
    (10, 19, "10-19"),
    (20, usize::MAX, "20+"),
];

#[derive(Debug, Serialize)]
pub struct Summary {
    pub manifest: String,
    pub rows: usize,
    pub distinct_files: usize,
    pub locations: usize,
    pub views_per_location: Vec<(String, usize)>,
    pub mean_views_per_location: f64,
    /// Years between first and last view, over locations with 2+ dated views.
    pub time_span_years: Option<SpanStats>,
    pub earliest: Option<String>,
    pub latest: Option<String>,
    pub undated_rows: usize,
    pub classes: usize,
    pub top_classes: Vec<(String, usize)>,
    pub unlabelled_rows: usize,
    pub splits: BTreeMap<String, usize>,
    /// Locations whose views sit in more than one split (a leak between splits).
    pub locations_in_several_splits: usize,
    pub positioned_rows: usize,
    pub lat_range: Option<(f64, f64)>,
    pub lon_range: Option<(f64, f64)>,
    pub geo_clusters: usize,
    pub files_checked: FileCheck,
    pub missing_files: usize,
    pub missing_examples: Vec<String>,
    /// With [`FileCheck::Decode`]: every file that does not decode, in
    /// manifest order.
    pub unreadable_files: Vec<UnreadableFile>,
    pub max_location_spread_km: f64,
    /// Every location whose views lie more than `max_location_spread_km`
    /// apart, farthest first.
    pub spread_out_locations: Vec<SpreadOutLocation>,
    /// One line per kind of problem found; empty when the manifest passes.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SpanStats {
    pub locations: usize,
    pub min: f64,
    pub median: f64,
    pub mean: f64,
    pub max: f64,
}

impl Summary {
    /// The summary with the default checks; files are stat'ed when
    /// `check_files`.
    pub fn of(manifest: &Manifest, check_files: bool) -> Self {
        Self::check(
            manifest,
            &CheckOptions {
                files: if check_files {
                    FileCheck::Exists
                } else {
                    FileCheck::None
                },
                ..CheckOptions::default()
            },
        )
    }

    /// Reads the manifest at `path` and checks it; the summary says whether
    /// it passes ([`Summary::ensure_passes`]).
    pub fn check_file(path: &Path, options: &CheckOptions) -> anyhow::Result<(Manifest, Self)> {
        let manifest = Manifest::read(path)?;
        let summary = Self::check(&manifest, options);
        Ok((manifest, summary))
    }

    /// Fails, naming the manifest at `path` and each kind of problem, when
    /// the check found any.
    pub fn ensure_passes(&self, path: &Path) -> anyhow::Result<()> {
        if !self.problems.is_empty() {
            anyhow::bail!("{}: {}", path.display(), self.problems.join("; "));
        }
        Ok(())
    }

    /// Describes and checks `manifest`; [`Summary::problems`] says whether
    /// it passes.
    pub fn check(manifest: &Manifest, options: &CheckOptions) -> Self {
        let index = LocationIndex::build(manifest);
        let records = &manifest.records;

        let mut views_per_location = VIEW_BUCKETS
            .iter()
            .map(|b| (b.2.to_string(), 0))
            .collect::<Vec<_>>();
        let mut spans = Vec::new();
        let mut several_splits = 0;
        for loc in &index.locations {
            let n = loc.views.len();
            if let Some(b) = VIEW_BUCKETS
                .iter()
                .position(|&(lo, hi, _)| n >= lo && n <= hi)
            {
                views_per_location[b].1 += 1;
            }
            spans.extend(loc.time_span_years(manifest));
            let splits: HashSet<_> = loc.views.iter().map(|&r| records[r].split).collect();
            if splits.len() > 1 {
                several_splits += 1;
            }
        }
        spans.sort_by(f64::total_cmp);
        let time_span_years = (!spans.is_empty()).then(|| SpanStats {
            locations: spans.len(),
            min: spans[0],
            median: spans[spans.len() / 2],
            mean: spans.iter().sum::<f64>() / spans.len() as f64,
            max: spans[spans.len() - 1],
        });

        let times: Vec<_> = records.iter().filter_map(|r| r.timestamp).collect();
        let mut class_counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in records {
            if let Some(l) = &r.label {
                *class_counts.entry(l.as_str()).or_default() += 1;
            }
        }
        let mut top_classes: Vec<(String, usize)> = class_counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        top_classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top_classes.truncate(10);

        let mut splits = BTreeMap::new();
        for r in records {
            let key = r.split.map_or("(none)".to_string(), |s| s.to_string());
            *splits.entry(key).or_default() += 1;
        }

        let positions: Vec<_> = records.iter().filter_map(|r| r.position).collect();
        let range = |f: &dyn Fn(&crate::geo::LatLon) -> f64| {
            positions
                .iter()
                .map(f)
                .fold(None, |acc: Option<(f64, f64)>, v| {
                    Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
                })
        };

        let files: Vec<_> = {
            let mut seen = HashSet::new();
            records
                .iter()
                .map(|r| manifest.resolve(r))
                .filter(|p| seen.insert(p.clone()))
                .collect()
        };
        let missing: Vec<String> = if options.files == FileCheck::None {
            Vec::new()
        } else {
            files
                .par_iter()
                .filter(|p| !p.is_file())
                .map(|p| p.display().to_string())
                .collect()
        };
        let unreadable = if options.files == FileCheck::Decode {
            let missing: HashSet<&str> = missing.iter().map(String::as_str).collect();
            decode_all(manifest, &missing, &options.decode_limits)
        } else {
            Vec::new()
        };
        let spread_out = spread_out_locations(manifest, &index, options.max_location_spread_km);
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("{} image files are missing", missing.len()));
        }
        if !unreadable.is_empty() {
            problems.push(format!(
                "{} image files cannot be decoded",
                unreadable.len()
            ));
        }
        if !spread_out.is_empty() {
            problems.push(format!(
                "{} locations have views more than {} km apart (one location_id for several places?)",
                spread_out.len(),
                options.max_location_spread_km
            ));
        }

        Summary {
            manifest: manifest.source.display().to_string(),
            rows: records.len(),
            distinct_files: files.len(),
            locations: index.len(),
            mean_views_per_location: records.len() as f64 / index.len().max(1) as f64,
            views_per_location,
            time_span_years,
            earliest: times.iter().min().map(|t| t.to_string()),
            latest: times.iter().max().map(|t| t.to_string()),
            undated_rows: records.len() - times.len(),
            classes: class_counts.len(),
            top_classes,
            unlabelled_rows: records.iter().filter(|r| r.label.is_none()).count(),
            splits,
            locations_in_several_splits: several_splits,
            positioned_rows: positions.len(),
            lat_range: range(&|p| p.lat),
            lon_range: range(&|p| p.lon),
            geo_clusters: records
                .iter()
                .filter_map(|r| r.geo_cluster)
                .collect::<HashSet<_>>()
                .len(),
            files_checked: options.files,
            missing_files: missing.len(),
            missing_examples: missing.into_iter().take(10).collect(),
            unreadable_files: unreadable,
            max_location_spread_km: options.max_location_spread_km,
            spread_out_locations: spread_out,
            problems,
        }
    }
}

/// Decodes every distinct (file, crop) of the manifest that exists, in
/// parallel with a progress bar; the failures in manifest order.
fn decode_all(
    manifest: &Manifest,
    missing: &HashSet<&str>,
    limits: &DecodeOptions,
) -> Vec<UnreadableFile> {
    let mut seen = HashSet::new();
    let work: Vec<(PathBuf, Option<CropBox>)> = manifest
        .records
        .iter()
        .map(|r| (manifest.resolve(r), r.crop))
        .filter(|(p, _)| !missing.contains(p.display().to_string().as_str()))
        .filter(|w| seen.insert(w.clone()))
        .collect();
    let bar = progress::bar(work.len() as u64, "decoding images");
    // Every band of each raster (each file's own), so that a band that
    // cannot be read is found whatever `--bands` a run will choose.
    let every_band = InputSpec {
        selection: BandSelection::All,
        bands: Vec::new(),
        ..InputSpec::rgb()
    };
    let failures: Vec<Option<UnreadableFile>> = work
        .par_iter()
        .map(|(path, crop)| {
            let r = decode_source(path, *crop, &every_band, limits, None)
                .err()
                .map(|e| {
                    let path = path.display().to_string();
                    let message = e.to_string();
                    let reason = message
                        .strip_prefix(&format!("{path}: "))
                        .unwrap_or(&message)
                        .to_string();
                    UnreadableFile { path, reason }
                });
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    failures.into_iter().flatten().collect()
}

/// Locations whose positioned views lie more than `max_km` apart, farthest
/// first. The spread is the largest great-circle distance between two of a
/// location's distinct positions: exact up to
/// [`EXACT_SPREAD_MAX_POSITIONS`] positions, above that the double-sweep
/// estimate (the view farthest from the spherical mean, then the view
/// farthest from it), which never overstates the spread.
fn spread_out_locations(
    manifest: &Manifest,
    index: &LocationIndex,
    max_km: f64,
) -> Vec<SpreadOutLocation> {
    let records = &manifest.records;
    let row_ref = |r: usize| RowRef {
        line: r + 2,
        path: records[r].path.clone(),
    };
    let mut out: Vec<SpreadOutLocation> = index
        .locations
        .par_iter()
        .filter_map(|loc| {
            // One row per distinct position, the first in manifest order.
            let mut seen = HashSet::new();
            let mut views: Vec<(usize, LatLon)> = loc
                .views
                .iter()
                .filter_map(|&r| records[r].position.map(|p| (r, p)))
                .collect();
            views.sort_by_key(|v| v.0);
            views.retain(|(_, p)| seen.insert((p.lat.to_bits(), p.lon.to_bits())));
            if views.len() < 2 {
                return None;
            }
            let (a, b, km) = if views.len() <= EXACT_SPREAD_MAX_POSITIONS {
                let mut best = (0, 0, -1.0);
                for i in 0..views.len() {
                    for j in i + 1..views.len() {
                        let d = views[i].1.haversine_km(views[j].1);
                        if d > best.2 {
                            best = (i, j, d);
                        }
                    }
                }
                best
            } else {
                let mean = LatLon::spherical_mean(views.iter().map(|v| v.1)).unwrap_or(views[0].1);
                let farthest = |from: LatLon| {
                    (0..views.len())
                        .map(|i| (i, from.haversine_km(views[i].1)))
                        .fold((0, -1.0), |acc, x| if x.1 > acc.1 { x } else { acc })
                };
                let a = farthest(mean).0;
                let (b, km) = farthest(views[a].1);
                (a.min(b), a.max(b), km)
            };
            (km > max_km).then(|| SpreadOutLocation {
                location_id: loc.id.clone(),
                km,
                rows: [row_ref(views[a].0), row_ref(views[b].0)],
            })
        })
        .collect();
    out.sort_by(|x, y| {
        y.km.total_cmp(&x.km)
            .then_with(|| x.location_id.cmp(&y.location_id))
    });
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "manifest          {}", self.manifest)?;
        writeln!(
            f,
            "images (rows)     {} ({} distinct files)",
            self.rows, self.distinct_files
        )?;
        writeln!(
            f,
            "locations         {} (mean {:.2} views each)",
            self.locations, self.mean_views_per_location
        )?;
        let hist: Vec<String> = self
            .views_per_location
            .iter()
            .map(|(b, n)| format!("{b}: {n}"))
            .collect();
        writeln!(f, "views/location    {}", hist.join("  "))?;
        match &self.time_span_years {
            Some(s) => writeln!(
                f,
                "time span/loc     {:.2} / {:.2} / {:.2} / {:.2} years (min/median/mean/max over {} locations with 2+ dated views)",
                s.min, s.median, s.mean, s.max, s.locations
            )?,
            None => writeln!(f, "time span/loc     no location has 2+ dated views")?,
        }
        match (&self.earliest, &self.latest) {
            (Some(a), Some(b)) => writeln!(
                f,
                "dates             {a} .. {b} ({} undated rows)",
                self.undated_rows
            )?,
            _ => writeln!(f, "dates             none")?,
        }
        let top: Vec<String> = self
            .top_classes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        writeln!(
            f,
            "classes           {} ({} unlabelled rows){}{}",
            self.classes,
            self.unlabelled_rows,
            if top.is_empty() {
                ""
            } else {
                "; most common: "
            },
            top.join(", ")
        )?;
        let splits: Vec<String> = self
            .splits
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(f, "splits            {}", splits.join(", "))?;
        if self.locations_in_several_splits > 0 {
            writeln!(f, "WARNING           {} locations have views in more than one split (leaks between splits)", self.locations_in_several_splits)?;
        }
        match (self.lat_range, self.lon_range) {
            (Some(la), Some(lo)) => writeln!(
                f,
                "positions         {} rows; lat {:.4} .. {:.4}, lon {:.4} .. {:.4}",
                self.positioned_rows, la.0, la.1, lo.0, lo.1
            )?,
            _ => writeln!(f, "positions         none")?,
        }
        if self.geo_clusters > 0 {
            writeln!(f, "geo clusters      {}", self.geo_clusters)?;
        }
        if self.files_checked == FileCheck::None {
            write!(f, "missing files     not checked")?;
        } else {
            write!(f, "missing files     {}", self.missing_files)?;
            for m in &self.missing_examples {
                write!(f, "\n                  {m}")?;
            }
            if self.missing_files > self.missing_examples.len() {
                write!(
                    f,
                    "\n                  ... and {} more",
                    self.missing_files - self.missing_examples.len()
                )?;
            }
        }
        if self.files_checked == FileCheck::Decode {
            write!(f, "\nunreadable files  {}", self.unreadable_files.len())?;
            for u in &self.unreadable_files {
                write!(f, "\n                  {}: {}", u.path, u.reason)?;
            }
        }
        write!(
            f,
            "\nspread-out places {} (views more than {} km apart)",
            self.spread_out_locations.len(),
            self.max_location_spread_km
        )?;
        const SHOWN: usize = 20;
        for s in self.spread_out_locations.iter().take(SHOWN) {
            write!(
                f,
                "\n                  {}: {:.1} km between line {} ({}) and line {} ({})",
                s.location_id, s.km, s.rows[0].line, s.rows[0].path, s.rows[1].line, s.rows[1].path
            )?;
        }
        if self.spread_out_locations.len() > SHOWN {
            write!(
                f,
                "\n                  ... and {} more",
                self.spread_out_locations.len() - SHOWN
            )?;
        }
        for p in &self.problems {
            write!(f, "\nPROBLEM           {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn summarises_a_small_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a0.jpg"), "x").unwrap();
        let text = "path,lat,lon,timestamp,location_id,label,split\n\
                    a0.jpg,10,20,2014-01-01,A,farm,train\n\
                    a1.jpg,10,20,2016-01-01,A,farm,train\n\
                    b0.jpg,-5,170,2015-06-01,B,port,val\n\
                    b1.jpg,-5,170,,B,port,test\n";
        let mut m = Manifest::parse(text.as_bytes(), "m.csv", dir.path()).unwrap();
        m.source = Path::new("m.csv").to_path_buf();
        let s = Summary::of(&m, true);
        assert_eq!((s.rows, s.locations, s.classes), (4, 2, 2));
        assert_eq!(s.views_per_location[1], ("2".to_string(), 2));
        let span = s.time_span_years.as_ref().unwrap();
        assert_eq!(span.locations, 1);
        assert!((span.max - 2.0).abs() < 0.01);
        assert_eq!(s.undated_rows, 1);
        assert_eq!(s.locations_in_several_splits, 1);
        assert_eq!(s.lat_range, Some((-5.0, 10.0)));
        assert_eq!(s.lon_range, Some((20.0, 170.0)));
        assert_eq!(s.missing_files, 3);
        assert_eq!(s.splits.get("train"), Some(&2));
        assert!(s.spread_out_locations.is_empty());
        // A split leak is a warning, missing files a problem.
        assert_eq!(s.problems, ["3 image files are missing"]);
        let text = s.to_string();
        assert!(
            text.contains("WARNING           1 locations have views in more than one split"),
            "{text}"
        );
        assert!(text.contains("missing files     3"), "{text}");
        assert!(
            text.contains("PROBLEM           3 image files are missing"),
            "{text}"
        );
        let s = Summary::of(&m, false);
        assert_eq!(s.missing_files, 0);
        assert!(s.problems.is_empty());
        assert!(s.to_string().contains("missing files     not checked"));
    }

    #[test]
    fn spread_out_locations_are_problems() {
        // X: Paris and New York under one id (5,837 km apart); Y: two views
        // 1.0 km apart (0.009 degrees of latitude); Z: one position twice.
        let text = "path,lat,lon,location_id\n\
                    x0.jpg,48.85,2.35,X\n\
                    y0.jpg,48.85,2.35,Y\n\
                    x1.jpg,40.7,-74.0,X\n\
                    y1.jpg,48.859,2.35,Y\n\
                    x2.jpg,48.85,2.35,X\n\
                    z0.jpg,1,1,Z\n\
                    z1.jpg,1,1,Z\n\
                    n0.jpg,,,Y\n";
        let m = Manifest::parse(text.as_bytes(), "m.csv", Path::new(".")).unwrap();
        let s = Summary::of(&m, false);
        assert_eq!(
            s.spread_out_locations.len(),
            1,
            "{:?}",
            s.spread_out_locations
        );
        let x = &s.spread_out_locations[0];
        assert_eq!(x.location_id, "X");
        assert!((x.km - 5837.0).abs() < 5.0, "{}", x.km);
        assert_eq!(
            x.rows,
            [
                RowRef {
                    line: 2,
                    path: "x0.jpg".into()
                },
                RowRef {
                    line: 4,
                    path: "x1.jpg".into()
                }
            ]
        );
        assert_eq!(
            s.problems,
            ["1 locations have views more than 5 km apart (one location_id for several places?)"]
        );
        let text = s.to_string();
        assert!(
            text.contains("X: 5837.")
                && text.contains("km between line 2 (x0.jpg) and line 4 (x1.jpg)"),
            "{text}"
        );
        // A tighter threshold catches Y too; farthest first.
        let s = Summary::check(
            &m,
            &CheckOptions {
                files: FileCheck::None,
                max_location_spread_km: 0.5,
                ..CheckOptions::default()
            },
        );
        let ids: Vec<&str> = s
            .spread_out_locations
            .iter()
            .map(|l| l.location_id.as_str())
            .collect();
        assert_eq!(ids, ["X", "Y"]);
        assert!((s.spread_out_locations[1].km - 1.0).abs() < 0.01);
    }

    #[test]
    fn spread_of_many_positions_is_estimated_from_both_ends() {
        // 600 distinct positions 100 m apart along a meridian, plus one
        // outlier 1,000 km east: above the exact limit, the double sweep
        // still finds the outlier and its farthest partner.
        let mut text = String::from("path,lat,lon,location_id\n");
        for i in 0..600 {
            text.push_str(&format!("v{i}.jpg,{},10,P\n", 0.0009 * i as f64));
        }
        text.push_str("far.jpg,0,18.99,P\n");
        let m = Manifest::parse(text.as_bytes(), "m.csv", Path::new(".")).unwrap();
        let s = Summary::of(&m, false);
        let p = &s.spread_out_locations[0];
        let paths = [p.rows[0].path.as_str(), p.rows[1].path.as_str()];
        assert_eq!(paths, ["v599.jpg", "far.jpg"]);
        let exact = LatLon::new(0.0009 * 599.0, 10.0)
            .unwrap()
            .haversine_km(LatLon::new(0.0, 18.99).unwrap());
        assert!((p.km - exact).abs() < 1e-9, "{} vs {exact}", p.km);
    }

    #[test]
    fn decode_check_lists_every_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_pixel(40, 30, image::Rgb([10, 200, 30]));
        img.save(dir.path().join("good.png")).unwrap();
        // A PNG cut in half: unlike JPEG decoders, which may fill a missing
        // tail with grey, PNG's checksums make this an error every time.
        let png = std::fs::read(dir.path().join("good.png")).unwrap();
        std::fs::write(dir.path().join("cut.png"), &png[..png.len() / 2]).unwrap();
        std::fs::write(dir.path().join("notes.jpg"), "not an image").unwrap();
        let text = "path,crop\n\
                    good.png,\n\
                    cut.png,\n\
                    good.png,\"50,0,5,5\"\n\
                    gone.jpg,\n\
                    notes.jpg,\n\
                    cut.png,\n";
        let m = Manifest::parse(text.as_bytes(), "m.csv", dir.path()).unwrap();
        let s = Summary::check(
            &m,
            &CheckOptions {
                files: FileCheck::Decode,
                ..CheckOptions::default()
            },
        );
        assert_eq!(s.missing_files, 1);
        let d = dir.path().display();
        let listed: Vec<(String, String)> = s
            .unreadable_files
            .iter()
            .map(|u| (u.path.clone(), u.reason.clone()))
            .collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert_eq!(listed[0].0, format!("{d}/cut.png"));
        assert!(
            listed[0].1.starts_with("corrupt or truncated image"),
            "{listed:?}"
        );
        assert_eq!(
            listed[1],
            (
                format!("{d}/good.png"),
                "crop 50,0,5,5 does not lie inside the 40 x 30 image".to_string()
            )
        );
        assert_eq!(
            listed[2],
            (
                format!("{d}/notes.jpg"),
                "not a recognised image (JPEG, PNG, or a raster GDAL reads expected)".to_string()
            )
        );
        assert_eq!(
            s.problems,
            [
                "1 image files are missing",
                "3 image files cannot be decoded"
            ]
        );
        let text = s.to_string();
        assert!(text.contains("unreadable files  3"), "{text}");
        assert!(
            text.contains(&format!("{d}/notes.jpg: not a recognised image")),
            "{text}"
        );
    }
}
