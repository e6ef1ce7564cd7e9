//! Importer for fMoW (Functional Map of the World), RGB or MS-RGB release.
//!
//! Layout: `ROOT/{train,val,test,seq}/<category>/<category>_<loc>/<category>_<loc>_<img>_rgb.{jpg,json}`.
//! Each JSON describes one image; each bounding box in it becomes one
//! manifest row whose `crop` is the box grown by the fMoW baseline's context
//! rule ([`context_crop`]). Views of a place share `location_id =
//! <split>/<category>_<loc>` ([`location_id`]): fMoW numbers its location
//! folders per split, so `train/airport/airport_0` and `val/airport/airport_0`
//! are different places. The label is the box category; the position is the
//! centroid of the WKT footprint in `raw_location`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use serde::Deserialize;

use super::manifest::{CropBox, ImageRecord, Manifest, Split, Timestamp};
use crate::geo::wkt;
use crate::progress;

/// Category fMoW uses for boxes that turned out to contain nothing.
pub const FALSE_DETECTION: &str = "false_detection";

#[derive(Debug, Clone)]
pub struct FmowOptions {
    /// Read `_msrgb` files instead of `_rgb`.
    pub msrgb: bool,
    /// Keep boxes labelled `false_detection` (dropped by default, as the paper does).
    pub keep_false_detection: bool,
    /// Skip JSON files that fail to parse (reported) instead of stopping.
    pub skip_errors: bool,
}

/// The fields of an fMoW metadata JSON that geossl uses.
#[derive(Debug, Deserialize)]
pub struct FmowMetadata {
    pub timestamp: Option<String>,
    pub img_width: u32,
    pub img_height: u32,
    #[serde(default)]
    pub bounding_boxes: Vec<FmowBox>,
    pub raw_location: Option<String>,
    pub gsd: Option<f64>,
    pub cloud_cover: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct FmowBox {
    pub category: Option<String>,
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    #[serde(rename = "ID")]
    pub id: Option<i64>,
}

/// Per-axis context multiplier of the fMoW baseline: small boxes get
/// proportionally more surroundings.
fn context_multiplier(ratio: f64) -> f64 {
    match ratio {
        r if r < 0.1 => 2.0,
        r if r < 0.2 => 1.0,
        r if r < 0.3 => 0.5,
        r if r < 0.4 => 0.3,
        r if r < 0.5 => 0.2,
        _ => 0.15,
    }
}

/// The fMoW baseline's crop around a box `[x, y, w, h]` in an image of
/// `img_w x img_h`: grow each axis by `multiplier(box/image) x size`, half on
/// each side (truncated to whole pixels), clip to the image. `None` for boxes
/// of 2 px or less on a side, or when nothing of the box is inside the image.
/// The result lies inside the image by construction: whole-pixel edges,
/// saturating arithmetic (boxes from metadata can hold any number; NaN
/// counts as 0), clipped to `0..img_w` x `0..img_h`, never empty.
pub fn context_crop(bbox: [f64; 4], img_w: u32, img_h: u32) -> Option<CropBox> {
    let [x, y, w, h] = bbox.map(|v| v.trunc() as i64);
    if w <= 2 || h <= 2 || img_w == 0 || img_h == 0 {
        return None;
    }
    let cw = context_multiplier(w as f64 / img_w as f64);
    let ch = context_multiplier(h as f64 / img_h as f64);
    let pad_w = ((w as f64 * cw) / 2.0) as i64;
    let pad_h = ((h as f64 * ch) / 2.0) as i64;
    let c1 = x.saturating_sub(pad_w).max(0);
    let c2 = x.saturating_add(w).saturating_add(pad_w).min(img_w as i64);
    let r1 = y.saturating_sub(pad_h).max(0);
    let r2 = y.saturating_add(h).saturating_add(pad_h).min(img_h as i64);
    if c1 >= c2 || r1 >= r2 {
        return None;
    }
    Some(CropBox {
        x: c1 as u32,
        y: r1 as u32,
        w: (c2 - c1) as u32,
        h: (r2 - r1) as u32,
    })
}

/// Extra manifest columns the importer fills.
pub const EXTRA_COLUMNS: [&str; 6] = [
    "fmow_split",
    "box_id",
    "gsd",
    "cloud_cover",
    "img_width",
    "img_height",
];

/// Rows for one metadata file. `json_path` names the file in errors; `image`
/// is the path written to the manifest.
pub fn rows_for_metadata(
    meta: &FmowMetadata,
    image: &str,
    location_id: &str,
    fmow_split: &str,
    keep_false_detection: bool,
) -> Result<Vec<ImageRecord>, String> {
    let position = match meta.raw_location.as_deref() {
        Some(w) => Some(wkt::centroid(w).map_err(|e| format!("raw_location: {e}"))?),
        None => None,
    };
    let timestamp = match meta.timestamp.as_deref() {
        Some(t) => Some(
            t.parse::<Timestamp>()
                .map_err(|e| format!("timestamp '{t}': {e}"))?,
        ),
        None => None,
    };
    let split = fmow_split.parse::<Split>().ok();
    let mut rows = Vec::new();
    for b in &meta.bounding_boxes {
        if !keep_false_detection && b.category.as_deref() == Some(FALSE_DETECTION) {
            continue;
        }
        if b.bbox.iter().any(|v| !v.is_finite()) {
            return Err(format!("bounding box {:?} has a non-finite value", b.bbox));
        }
        let Some(crop) = context_crop(b.bbox, meta.img_width, meta.img_height) else {
            continue;
        };
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        rows.push(ImageRecord {
            path: image.to_string(),
            position,
            timestamp,
            location_id: Some(location_id.to_string()),
            label: b.category.clone(),
            split,
            crop: Some(crop),
            geo_cluster: None,
            extra: vec![
                fmow_split.to_string(),
                b.id.map(|i| i.to_string()).unwrap_or_default(),
                num(meta.gsd),
                num(meta.cloud_cover),
                meta.img_width.to_string(),
                meta.img_height.to_string(),
            ],
        });
    }
    Ok(rows)
}

/// Scans an fMoW tree and builds a manifest whose paths are relative to
/// `manifest_dir` when the images lie below it, absolute otherwise.
pub fn import(
    root: &Path,
    manifest_dir: &Path,
    options: &FmowOptions,
) -> anyhow::Result<(Manifest, Vec<String>)> {
    let suffix = if options.msrgb {
        "_msrgb.json"
    } else {
        "_rgb.json"
    };
    let root = root
        .canonicalize()
        .with_context(|| format!("{}: cannot open fMoW root", root.display()))?;
    let mut jsons: Vec<PathBuf> = Vec::new();
    for entry in walkdir::WalkDir::new(&root).follow_links(true) {
        let entry = entry.with_context(|| format!("{}: cannot scan", root.display()))?;
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(suffix) {
            jsons.push(entry.into_path());
        }
    }
    jsons.sort();
    if jsons.is_empty() {
        anyhow::bail!(
            "{}: no *{suffix} files found (is this an fMoW root with train/val/test folders?)",
            root.display()
        );
    }
    let manifest_dir = manifest_dir
        .canonicalize()
        .unwrap_or_else(|_| manifest_dir.to_path_buf());
    let bar = progress::bar(jsons.len() as u64, "reading fMoW metadata");
    let results: Vec<Result<Vec<ImageRecord>, String>> = jsons
        .par_iter()
        .map(|json| {
            let r = one_file(&root, json, &manifest_dir, options)
                .map_err(|e| format!("{}: {e}", json.display()));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(rows) => records.extend(rows),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() && !options.skip_errors {
        let shown: Vec<&str> = errors.iter().take(20).map(String::as_str).collect();
        let more = if errors.len() > 20 {
            format!("\n... and {} more", errors.len() - 20)
        } else {
            String::new()
        };
        anyhow::bail!(
            "{} of {} metadata files could not be imported (use --skip-errors to import the rest):\n{}{more}",
            errors.len(),
            jsons.len(),
            shown.join("\n")
        );
    }
    if records.is_empty() {
        anyhow::bail!(
            "{}: no usable bounding boxes in {} metadata files",
            root.display(),
            jsons.len()
        );
    }
    let manifest = Manifest {
        source: PathBuf::new(),
        root: manifest_dir,
        records,
        extra_columns: EXTRA_COLUMNS.iter().map(|s| s.to_string()).collect(),
    };
    Ok((manifest, errors))
}

/// The manifest `location_id` of an fMoW location folder: `<split>/<folder>`
/// (e.g. `train/airport_0`), because fMoW numbers the folders of each split
/// (train, val, test, seq) from 0 and the same name in two splits names two
/// places. An empty split leaves the folder name alone.
pub fn location_id(fmow_split: &str, folder: &str) -> String {
    if fmow_split.is_empty() {
        folder.to_string()
    } else {
        format!("{fmow_split}/{folder}")
    }
}

fn one_file(
    root: &Path,
    json: &Path,
    manifest_dir: &Path,
    options: &FmowOptions,
) -> Result<Vec<ImageRecord>, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("cannot read: {e}"))?;
    let meta: FmowMetadata =
        serde_json::from_str(&text).map_err(|e| format!("invalid metadata JSON: {e}"))?;
    let location_dir = json.parent().ok_or("no parent folder")?;
    let folder = location_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("no location folder")?;
    // The first folder below the root is the fMoW split (train/val/test/seq);
    // a tree without one (the location folder right below the root) has none.
    let rel = json
        .strip_prefix(root)
        .map_err(|_| "outside the fMoW root")?;
    let fmow_split = if rel.components().count() > 2 {
        rel.components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let location_id = location_id(&fmow_split, &folder);
    let stem = json.file_name().unwrap_or_default().to_string_lossy();
    let stem = stem.trim_end_matches(".json");
    let image = ["jpg", "jpeg", "tif", "tiff", "png"]
        .iter()
        .map(|ext| location_dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no image {stem}.jpg (or .tif/.png) beside it"))?;
    let image = match image.strip_prefix(manifest_dir) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => image.to_string_lossy().into_owned(),
    };
    rows_for_metadata(
        &meta,
        &image,
        &location_id,
        &fmow_split,
        options.keep_false_detection,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_rule_bands() {
        // 1000 x 1000 image; box side s gives ratio s/1000.
        let cases = [
            (600.0, 0.15), // >= 0.5
            (450.0, 0.2),  // [0.4, 0.5)
            (350.0, 0.3),  // [0.3, 0.4)
            (250.0, 0.5),  // [0.2, 0.3)
            (150.0, 1.0),  // [0.1, 0.2)
            (50.0, 2.0),   // < 0.1
        ];
        for (side, mult) in cases {
            let x = 200.0;
            let crop = context_crop([x, x, side, side], 1000, 1000).unwrap();
            let pad = ((side * mult) / 2.0).trunc();
            let expect_x0 = (x - pad).max(0.0);
            let expect_x1 = (x + side + pad).min(1000.0);
            assert_eq!(crop.x as f64, expect_x0, "side {side}");
            assert_eq!((crop.x + crop.w) as f64, expect_x1, "side {side}");
        }
        // Band edges: exactly 0.4 falls in [0.4, 0.5) -> 0.2; exactly 0.1 -> 1.0.
        assert_eq!(context_multiplier(0.4), 0.2);
        assert_eq!(context_multiplier(0.1), 1.0);
        assert_eq!(context_multiplier(0.0999), 2.0);
        assert_eq!(context_multiplier(0.5), 0.15);
    }

    #[test]
    fn context_rule_axes_are_independent_and_clipped() {
        // Wide, short box in a 1000 x 500 image: w ratio 0.6 -> 0.15, h ratio 0.02 -> 2.0.
        let c = context_crop([100.0, 240.0, 600.0, 10.0], 1000, 500).unwrap();
        assert_eq!((c.x, c.w), (100 - 45, 600 + 90));
        assert_eq!((c.y, c.h), (240 - 10, 10 + 20));
        // Near the corner: clipped to the image.
        let c = context_crop([0.0, 0.0, 50.0, 50.0], 1000, 1000).unwrap();
        assert_eq!(
            c,
            CropBox {
                x: 0,
                y: 0,
                w: 100,
                h: 100
            }
        );
        // Truncation of odd padding: 15 px box, ratio < 0.1: pad = int(15*2/2) = 15.
        let c = context_crop([100.0, 100.0, 15.0, 15.0], 1000, 1000).unwrap();
        assert_eq!(
            c,
            CropBox {
                x: 85,
                y: 85,
                w: 45,
                h: 45
            }
        );
    }

    #[test]
    fn tiny_or_outside_boxes_are_skipped() {
        assert_eq!(context_crop([10.0, 10.0, 2.0, 50.0], 100, 100), None);
        assert_eq!(context_crop([10.0, 10.0, 50.0, 1.0], 100, 100), None);
        assert!(context_crop([10.0, 10.0, 3.0, 3.0], 100, 100).is_some());
        assert_eq!(context_crop([500.0, 10.0, 50.0, 50.0], 100, 100), None);
        assert_eq!(context_crop([10.0, 10.0, 50.0, 50.0], 0, 100), None);
    }

    #[test]
    fn context_crops_lie_inside_the_image_for_any_box() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let extremes = [0.0, -1e300, 1e300, f64::MAX, f64::MIN, 2.9, 3.0, -5.5];
        for i in 0..100_000 {
            let (img_w, img_h) = (rng.gen_range(1..=5000u32), rng.gen_range(1..=5000u32));
            let mut bbox = [
                rng.gen_range(-500.0..5500.0),
                rng.gen_range(-500.0..5500.0),
                rng.gen_range(0.0..6000.0),
                rng.gen_range(0.0..6000.0),
            ];
            if i % 10 == 0 {
                bbox[rng.gen_range(0..4)] = extremes[rng.gen_range(0..extremes.len())];
            }
            if let Some(c) = context_crop(bbox, img_w, img_h) {
                assert!(
                    c.w > 0 && c.h > 0 && c.x + c.w <= img_w && c.y + c.h <= img_h,
                    "{bbox:?} in {img_w}x{img_h}: {c}"
                );
            }
        }
        // A box touching the far corner keeps its last pixel row and column.
        let c = context_crop([990.0, 490.0, 10.0, 10.0], 1000, 500).unwrap();
        assert_eq!((c.x + c.w, c.y + c.h), (1000, 500));
    }

    #[test]
    fn metadata_to_rows() {
        let json = r#"{
            "timestamp": "2015-02-26T16:31:40Z", "img_width": 1000, "img_height": 800,
            "gsd": 0.5, "cloud_cover": 3,
            "raw_location": "POLYGON ((10.0 20.0, 10.2 20.0, 10.2 20.2, 10.0 20.2, 10.0 20.0))",
            "bounding_boxes": [
                {"category": "airport", "box": [100, 100, 300, 200], "ID": 7},
                {"category": "false_detection", "box": [10, 10, 50, 50], "ID": 8},
                {"category": "airport", "box": [10, 10, 1, 1], "ID": 9}
            ]
        }"#;
        let meta: FmowMetadata = serde_json::from_str(json).unwrap();
        let rows = rows_for_metadata(
            &meta,
            "train/airport/airport_0/airport_0_0_rgb.jpg",
            "airport_0",
            "train",
            false,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.label.as_deref(), Some("airport"));
        assert_eq!(r.location_id.as_deref(), Some("airport_0"));
        assert_eq!(r.split, Some(Split::Train));
        let p = r.position.unwrap();
        assert!((p.lat - 20.1).abs() < 1e-9 && (p.lon - 10.1).abs() < 1e-9);
        assert_eq!(r.timestamp.unwrap().to_string(), "2015-02-26T16:31:40Z");
        assert_eq!(r.extra, vec!["train", "7", "0.5", "3", "1000", "800"]);
        let kept = rows_for_metadata(&meta, "x", "l", "seq", true).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].label.as_deref(), Some(FALSE_DETECTION));
        assert_eq!(kept[0].split, None, "seq is not a train/val/test split");
    }

    #[test]
    fn bad_metadata_is_described() {
        let meta: FmowMetadata = serde_json::from_str(
            r#"{"img_width": 10, "img_height": 10, "raw_location": "POLYGON ((0 0, 1 x))"}"#,
        )
        .unwrap();
        let err = rows_for_metadata(&meta, "x", "l", "train", false).unwrap_err();
        assert_eq!(err, "raw_location: WKT vertex 'x' is not a number");
        let meta: FmowMetadata = serde_json::from_str(
            r#"{"img_width": 10, "img_height": 10, "timestamp": "yesterday"}"#,
        )
        .unwrap();
        let err = rows_for_metadata(&meta, "x", "l", "train", false).unwrap_err();
        assert!(err.starts_with("timestamp 'yesterday': "), "{err}");
    }

    /// Writes one view (metadata + a stand-in image file) in fMoW's layout.
    fn view(root: &Path, rel_dir: &str, stem: &str, lon: f64) {
        let dir = root.join(rel_dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{stem}.jpg")), "x").unwrap();
        let json = format!(
            r#"{{"img_width": 400, "img_height": 300, "timestamp": "2015-02-26T16:31:40+0000",
            "raw_location": "POLYGON (({lon} 20, {lon1} 20, {lon1} 20.01, {lon} 20.01, {lon} 20))",
            "bounding_boxes": [{{"category": "airport", "box": [100, 50, 150, 100], "ID": 1}}]}}"#,
            lon1 = lon + 0.01
        );
        std::fs::write(dir.join(format!("{stem}.json")), json).unwrap();
    }

    /// fMoW numbers location folders per split: `train/.../airport_0` and
    /// `val/.../airport_0` are two places, 1,000 km apart here.
    #[test]
    fn places_are_per_split() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fmow");
        view(&root, "train/airport/airport_0", "airport_0_0_rgb", 10.0);
        view(&root, "train/airport/airport_0", "airport_0_1_rgb", 10.0);
        view(&root, "val/airport/airport_0", "airport_0_0_rgb", 19.4);
        let options = FmowOptions {
            msrgb: false,
            keep_false_detection: false,
            skip_errors: false,
        };
        let (m, errors) = import(&root, dir.path(), &options).unwrap();
        assert!(errors.is_empty());
        let ids: Vec<(&str, Option<Split>)> = m
            .records
            .iter()
            .map(|r| (r.location_id.as_deref().unwrap(), r.split))
            .collect();
        assert_eq!(
            ids,
            [
                ("train/airport_0", Some(Split::Train)),
                ("train/airport_0", Some(Split::Train)),
                ("val/airport_0", Some(Split::Val)),
            ]
        );
        assert_eq!(
            m.records[2].path,
            "fmow/val/airport/airport_0/airport_0_0_rgb.jpg"
        );
        let s = crate::data::summary::Summary::of(&m, true);
        assert_eq!(s.locations, 2);
        assert_eq!(s.locations_in_several_splits, 0);
        assert!(s.spread_out_locations.is_empty());
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert!(!s.to_string().contains("WARNING"));
        // A tree of location folders without split folders: the folder alone.
        let flat = dir.path().join("flat");
        view(&flat, "airport_7", "airport_7_0_rgb", 10.0);
        let (m, _) = import(&flat, dir.path(), &options).unwrap();
        assert_eq!(m.records[0].location_id.as_deref(), Some("airport_7"));
        assert_eq!(m.records[0].split, None);
        assert_eq!(location_id("seq", "dam_3"), "seq/dam_3");
    }
}
