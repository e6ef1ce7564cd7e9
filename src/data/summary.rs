//! What `geossl index --check` prints: a manifest described without loading
//! a pixel (files are only stat'ed, in parallel).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use rayon::prelude::*;
use serde::Serialize;

use super::location_index::LocationIndex;
use super::manifest::Manifest;

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
    pub missing_files: usize,
    pub missing_examples: Vec<String>,
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
    pub fn of(manifest: &Manifest, check_files: bool) -> Self {
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
        let missing: Vec<String> = if check_files {
            files
                .par_iter()
                .filter(|p| !p.is_file())
                .map(|p| p.display().to_string())
                .collect()
        } else {
            Vec::new()
        };

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
            missing_files: missing.len(),
            missing_examples: missing.into_iter().take(10).collect(),
        }
    }
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
        let text = s.to_string();
        assert!(
            text.contains("WARNING           1 locations have views in more than one split"),
            "{text}"
        );
        assert!(text.contains("missing files     3"), "{text}");
    }
}
