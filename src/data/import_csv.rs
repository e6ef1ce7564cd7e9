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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::manifest::{
    csv_error, ImageRecord, Manifest, ManifestError, RowProblem, Split, Timestamp,
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
        let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(f);
        let headers: Vec<String> = r
            .headers()
            .map_err(|e| csv_error(&file, e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| csv_error(&file, e))?;
            rows.push((rec.position().map_or(0, |p| p.line()), rec));
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

/// Collects per-row problems and turns them into one error at the end.
struct Problems {
    file: String,
    list: Vec<RowProblem>,
}

impl Problems {
    fn add(&mut self, line: u64, column: &str, value: &str, message: impl Into<String>) {
        self.list.push(RowProblem {
            line,
            column: column.into(),
            value: value.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ManifestError> {
        if self.list.is_empty() {
            return Ok(());
        }
        let total = self.list.len();
        let mut problems = self.list;
        problems.truncate(50);
        Err(ManifestError::Rows {
            file: self.file,
            problems,
            total,
        })
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

/// Imports a derived fMoW CSV. Image paths come from `path_template`
/// (placeholders are column names) joined to `images_root`; a `path` or
/// `image_path` column, when present, is used as is instead.
pub fn import_fmow_csv(
    csv_path: &Path,
    images_root: &Path,
    path_template: &str,
    split: Option<Split>,
) -> Result<Manifest, ManifestError> {
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
    let mut problems = Problems {
        file: t.file.clone(),
        list: Vec::new(),
    };
    let mut records = Vec::new();
    for (line, row) in &t.rows {
        let cell = |i: usize| row.get(i).unwrap_or("").trim();
        let path = match explicit_path {
            Some(i) => Ok(cell(i).to_string()),
            None => expand_template(path_template, &t.headers, row),
        };
        let path = match path {
            Ok(p) if Path::new(&p).is_absolute() => p,
            Ok(p) => images_root.join(p).to_string_lossy().into_owned(),
            Err(m) => {
                problems.add(*line, "", "", m);
                continue;
            }
        };
        let position = match wkt::centroid(cell(polygon)) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.add(*line, "polygon", cell(polygon), e.to_string());
                None
            }
        };
        let ts = match cell(timestamp) {
            "" => None,
            v => match v.parse::<Timestamp>() {
                Ok(t) => Some(t),
                Err(m) => {
                    problems.add(*line, "timestamp", v, m);
                    None
                }
            },
        };
        if cell(category).is_empty() {
            problems.add(*line, "category", "", "category is empty");
        }
        if cell(location).is_empty() {
            problems.add(*line, "location_id", "", "location_id is empty");
        }
        records.push(ImageRecord {
            path,
            position,
            timestamp: ts,
            location_id: Some(format!("{}_{}", cell(category), cell(location))),
            label: Some(cell(category).to_string()),
            split,
            crop: None,
            geo_cluster: None,
            extra: extra.iter().map(|&i| cell(i).to_string()).collect(),
        });
    }
    problems.finish()?;
    Ok(Manifest {
        source: PathBuf::new(),
        root: PathBuf::from("."),
        records,
        extra_columns: extra.iter().map(|&i| t.headers[i].clone()).collect(),
    })
}

/// What a GeoImageNet import found besides the manifest.
#[derive(Debug, Default, PartialEq)]
pub struct GeoImageNetReport {
    pub images: usize,
    pub images_without_metadata: usize,
    pub metadata_without_image: usize,
}

/// Imports GeoImageNet: images `<class>/<id>.<ext>` below `images_root`,
/// joined by `id` with the metadata CSV (`id, lat, lon, ...`). Every image is
/// its own location (GeoImageNet has no temporal views); images without a
/// metadata row are kept without a position and counted.
pub fn import_geoimagenet(
    metadata: &Path,
    images_root: &Path,
    split: Option<Split>,
) -> Result<(Manifest, GeoImageNetReport), anyhow::Error> {
    let t = Table::read(metadata)?;
    let id_col = t.column("id")?;
    let lat_col = t.column("lat")?;
    let lon_col = t.column("lon")?;
    let extra: Vec<usize> = (0..t.headers.len())
        .filter(|&i| ![id_col, lat_col, lon_col].contains(&i))
        .collect();
    let mut problems = Problems {
        file: t.file.clone(),
        list: Vec::new(),
    };
    let mut by_id: HashMap<String, (LatLon, Vec<String>)> = HashMap::new();
    for (line, row) in &t.rows {
        let cell = |i: usize| row.get(i).unwrap_or("").trim();
        let id = cell(id_col);
        if id.is_empty() {
            problems.add(*line, "id", "", "id is empty");
            continue;
        }
        let lat = cell(lat_col).parse::<f64>().ok().filter(|v| v.is_finite());
        let lon = cell(lon_col).parse::<f64>().ok().filter(|v| v.is_finite());
        let (Some(lat), Some(lon)) = (lat, lon) else {
            let (col, v) = if lat.is_none() {
                ("lat", cell(lat_col))
            } else {
                ("lon", cell(lon_col))
            };
            problems.add(*line, col, v, format!("{col} is not a number"));
            continue;
        };
        match LatLon::new(lat, lon) {
            Ok(p) => {
                if by_id
                    .insert(
                        id.to_string(),
                        (p, extra.iter().map(|&i| cell(i).to_string()).collect()),
                    )
                    .is_some()
                {
                    problems.add(*line, "id", id, "id appears twice");
                }
            }
            Err(e) => {
                let (col, v) = if lat.abs() > 90.0 {
                    ("lat", cell(lat_col))
                } else {
                    ("lon", cell(lon_col))
                };
                problems.add(*line, col, v, e.to_string());
            }
        }
    }
    problems.finish()?;

    let mut images: Vec<(String, PathBuf)> = Vec::new();
    for entry in walkdir::WalkDir::new(images_root)
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
    let mut report = GeoImageNetReport {
        images: images.len(),
        ..Default::default()
    };
    let mut used = std::collections::HashSet::new();
    let records = images
        .into_iter()
        .map(|(class, path)| {
            let id = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let meta = by_id.get(&id);
            if meta.is_none() {
                report.images_without_metadata += 1;
            } else {
                used.insert(id.clone());
            }
            ImageRecord {
                path: path.to_string_lossy().into_owned(),
                position: meta.map(|m| m.0),
                timestamp: None,
                location_id: Some(id),
                label: Some(class),
                split,
                crop: None,
                geo_cluster: None,
                extra: meta
                    .map(|m| m.1.clone())
                    .unwrap_or_else(|| vec![String::new(); extra.len()]),
            }
        })
        .collect();
    report.metadata_without_image = by_id.len() - used.len();
    let manifest = Manifest {
        source: PathBuf::new(),
        root: PathBuf::from("."),
        records,
        extra_columns: extra.iter().map(|&i| t.headers[i].clone()).collect(),
    };
    Ok((manifest, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn derived_fmow_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "train.csv",
            "category,location_id,image_id,timestamp,polygon,cloud\n\
             airport,12,0,2015-02-26T16:31:40Z,\"POLYGON ((10 20, 10.2 20, 10.2 20.2, 10 20.2, 10 20))\",0\n\
             airport,12,1,2017-03-01T10:00:00Z,\"POLYGON ((10 20, 10.2 20, 10.2 20.2, 10 20.2, 10 20))\",5\n",
        );
        let m = import_fmow_csv(
            &csv,
            Path::new("/fmow/train"),
            FMOW_PATH_TEMPLATE,
            Some(Split::Train),
        )
        .unwrap();
        assert_eq!(m.records.len(), 2);
        let r = &m.records[1];
        assert_eq!(
            r.path,
            "/fmow/train/airport/airport_12/airport_12_1_rgb.jpg"
        );
        assert_eq!(r.location_id.as_deref(), Some("airport_12"));
        assert_eq!(r.label.as_deref(), Some("airport"));
        assert_eq!(r.split, Some(Split::Train));
        assert!((r.position.unwrap().lat - 20.1).abs() < 1e-9);
        assert_eq!(m.extra_columns, vec!["cloud"]);
        assert_eq!(r.extra, vec!["5"]);
    }

    #[test]
    fn derived_fmow_csv_errors() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "bad.csv", "category,location_id,image_id,timestamp,polygon\nairport,1,0,soon,\"POLYGON ((0 0, 1 x))\"\n");
        let err = import_fmow_csv(&csv, Path::new("/r"), FMOW_PATH_TEMPLATE, None)
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
        let err = import_fmow_csv(&csv, Path::new("/r"), FMOW_PATH_TEMPLATE, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: path template names column 'image_id', which the CSV lacks"),
            "{err}"
        );
        let err = import_fmow_csv(&csv, Path::new("/r"), "{x", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unclosed '{' in path template"), "{err}");
        let csv = write(
            dir.path(),
            "nopoly.csv",
            "category,location_id,image_id,timestamp\na,1,0,\n",
        );
        let err = import_fmow_csv(&csv, Path::new("/r"), FMOW_PATH_TEMPLATE, None)
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("{f}: 1 problem found\n{f}:1: the header has no 'polygon' column (found: category, location_id, image_id, timestamp)", f = csv.display()));
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
        let (m, report) = import_geoimagenet(&meta, &images, Some(Split::Test)).unwrap();
        assert_eq!(
            report,
            GeoImageNetReport {
                images: 3,
                images_without_metadata: 1,
                metadata_without_image: 1
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
            "id,lat,lon\n1,abc,2\n2,95,2\n1,1,1\n1,1,1\n",
        );
        let err = import_geoimagenet(&meta, dir.path(), None)
            .unwrap_err()
            .to_string();
        let f = meta.display();
        assert!(
            err.contains(&format!("{f}:2:lat: lat is not a number (value \"abc\")")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{f}:3:lat: latitude 95 is outside [-90, 90]")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{f}:5:id: id appears twice (value \"1\")")),
            "{err}"
        );
    }
}
