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

/// Why a box yields no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFault {
    /// 2 px or less on a side (as the fMoW baseline drops them).
    TooSmall,
    /// No pixel of the box lies inside the image: the metadata is wrong
    /// (box or image size).
    Outside,
}

/// The fMoW baseline's crop around a box `[x, y, w, h]` in an image of
/// `img_w x img_h`: grow each axis by `multiplier(box/image) x size`, half on
/// each side (truncated to whole pixels), clip to the image. `None` for boxes
/// of 2 px or less on a side, or when no pixel of the box is inside the image
/// ([`box_crop`] says which).
pub fn context_crop(bbox: [f64; 4], img_w: u32, img_h: u32) -> Option<CropBox> {
    box_crop(bbox, img_w, img_h).ok()
}

/// [`context_crop`], with the reason when there is no crop.
/// The result lies inside the image by construction: whole-pixel edges,
/// saturating arithmetic (boxes from metadata can hold any number; NaN
/// counts as 0), clipped to `0..img_w` x `0..img_h`, never empty.
pub fn box_crop(bbox: [f64; 4], img_w: u32, img_h: u32) -> Result<CropBox, BoxFault> {
    let [x, y, w, h] = bbox.map(|v| v.trunc() as i64);
    if w <= 2 || h <= 2 {
        return Err(BoxFault::TooSmall);
    }
    let (iw, ih) = (img_w as i64, img_h as i64);
    // The box itself, not only its context, must reach into the image: a box
    // beside the image would give a crop of surroundings only.
    if x >= iw || y >= ih || x.saturating_add(w) <= 0 || y.saturating_add(h) <= 0 {
        return Err(BoxFault::Outside);
    }
    let cw = context_multiplier(w as f64 / img_w as f64);
    let ch = context_multiplier(h as f64 / img_h as f64);
    let pad_w = ((w as f64 * cw) / 2.0) as i64;
    let pad_h = ((h as f64 * ch) / 2.0) as i64;
    let c1 = x.saturating_sub(pad_w).max(0);
    let c2 = x.saturating_add(w).saturating_add(pad_w).min(iw);
    let r1 = y.saturating_sub(pad_h).max(0);
    let r2 = y.saturating_add(h).saturating_add(pad_h).min(ih);
    if c1 >= c2 || r1 >= r2 {
        return Err(BoxFault::Outside);
    }
    Ok(CropBox {
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

/// The rows of one metadata file and what it left out.
#[derive(Debug, Default)]
pub struct MetadataRows {
    pub rows: Vec<ImageRecord>,
    /// Boxes of 2 px or less on a side.
    pub too_small: usize,
    /// Boxes with no pixel inside the image (`[x, y, w, h]`).
    pub outside: Vec<[f64; 4]>,
    /// `false_detection` boxes dropped.
    pub false_detections: usize,
}

/// Rows for one metadata file; `image` is the path written to the manifest.
/// Errors (a bad `raw_location` or `timestamp`, a non-finite box) describe
/// the field; the caller names the file.
pub fn rows_for_metadata(
    meta: &FmowMetadata,
    image: &str,
    location_id: &str,
    fmow_split: &str,
    keep_false_detection: bool,
) -> Result<MetadataRows, String> {
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
    let mut out = MetadataRows::default();
    for b in &meta.bounding_boxes {
        if !keep_false_detection && b.category.as_deref() == Some(FALSE_DETECTION) {
            out.false_detections += 1;
            continue;
        }
        if b.bbox.iter().any(|v| !v.is_finite()) {
            return Err(format!("bounding box {:?} has a non-finite value", b.bbox));
        }
        let crop = match box_crop(b.bbox, meta.img_width, meta.img_height) {
            Ok(c) => c,
            Err(BoxFault::TooSmall) => {
                out.too_small += 1;
                continue;
            }
            Err(BoxFault::Outside) => {
                out.outside.push(b.bbox);
                continue;
            }
        };
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        out.rows.push(ImageRecord {
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
    Ok(out)
}

/// The split folders of an fMoW release, the first level below its root.
pub const FMOW_SPLITS: [&str; 4] = ["train", "val", "test", "seq"];

/// Image files that should have a metadata JSON beside them.
const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "tif", "tiff", "png"];

/// What [`import`] read and what it left out, by reason.
#[derive(Debug, Default)]
pub struct FmowReport {
    /// Metadata files read.
    pub files: usize,
    /// Metadata files that could not be imported (with `skip_errors`), as
    /// `path: why`.
    pub skipped: Vec<String>,
    /// Boxes of 2 px or less on a side (dropped, as the fMoW baseline does).
    pub boxes_too_small: usize,
    /// Boxes with no pixel inside their image, as `path: box [x, y, w, h] outside the W x H image`:
    /// a sign of wrong metadata.
    pub boxes_outside: Vec<String>,
    /// Metadata files with an empty `bounding_boxes`.
    pub files_without_boxes: usize,
    /// `false_detection` boxes dropped (kept with `keep_false_detection`).
    pub false_detections_dropped: usize,
    /// Images with no `<stem>.json` beside them.
    pub images_without_metadata: Vec<PathBuf>,
}

/// The fMoW split of a metadata file at `rel` (relative to the root), given
/// the root's own split when the root is a split folder. Layouts:
/// `<split>/<category>/<loc>/<file>` below a release root;
/// `<category>/<loc>/<file>` below a split folder (`ROOT` = `.../train`);
/// `<loc>/<file>` (no split: empty, or the root's split). Anything else is an
/// error, because guessing would merge places of different splits, which
/// reuse location folder names.
fn split_of(rel: &Path, root_split: Option<&str>) -> Result<String, String> {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let not_a_split = |first: &str| {
        format!(
            "'{first}' below it is not an fMoW split folder ({}): point at the folder holding \
             train/val/..., or at one split folder (e.g. fmow-rgb/train)",
            FMOW_SPLITS.join(", ")
        )
    };
    match parts.len() {
        4 if FMOW_SPLITS.contains(&parts[0].as_str()) => Ok(parts[0].clone()),
        4 => Err(not_a_split(&parts[0])),
        3 => root_split
            .map(str::to_string)
            .ok_or_else(|| not_a_split(&parts[0])),
        1 | 2 => Ok(root_split.unwrap_or_default().to_string()),
        _ => Err(not_a_split(&parts[0])),
    }
}

/// Scans an fMoW tree and builds a manifest whose paths are relative to
/// `manifest_dir` when the images lie below it, absolute otherwise.
/// `root` is the release root (holding train/val/...), one split folder
/// (its name, e.g. `train`, is the split of every row), or a folder of
/// location folders (no split). Errors: a tree in another layout (see
/// [`FMOW_SPLITS`]), no metadata, unreadable metadata without
/// `skip_errors`, no usable box.
pub fn import(
    root: &Path,
    manifest_dir: &Path,
    options: &FmowOptions,
) -> anyhow::Result<(Manifest, FmowReport)> {
    let suffix = if options.msrgb {
        "_msrgb.json"
    } else {
        "_rgb.json"
    };
    let root = root
        .canonicalize()
        .with_context(|| format!("{}: cannot open fMoW root", root.display()))?;
    let mut jsons: Vec<PathBuf> = Vec::new();
    let mut images: Vec<PathBuf> = Vec::new();
    for entry in walkdir::WalkDir::new(&root).follow_links(true) {
        let entry = entry.with_context(|| format!("{}: cannot scan", root.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.ends_with(suffix) {
            jsons.push(entry.into_path());
        } else if entry.path().extension().is_some_and(|e| {
            IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
        }) {
            images.push(entry.into_path());
        }
    }
    jsons.sort();
    images.sort();
    if jsons.is_empty() {
        anyhow::bail!(
            "{}: no *{suffix} files found (is this an fMoW root with train/val/test folders?)",
            root.display()
        );
    }
    let root_name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root_split = FMOW_SPLITS
        .contains(&root_name.as_str())
        .then_some(root_name.as_str());
    // A category or location folder inside a split folder holds places
    // whose names recur in the other splits: its rows need the split, which
    // only the path above the root tells; refuse rather than guess.
    let is_split = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .is_some_and(|n| FMOW_SPLITS.contains(&n.to_string_lossy().as_ref()))
    };
    let depth = jsons
        .iter()
        .map(|j| j.strip_prefix(&root).map_or(0, |r| r.components().count()))
        .max()
        .unwrap_or(0);
    if root_split.is_none()
        && ((depth == 2 && is_split(root.parent()))
            || (depth == 1 && is_split(root.parent().and_then(Path::parent))))
    {
        anyhow::bail!(
            "{}: lies inside an fMoW split folder, whose location folders' names recur in \
             the other splits: point at the folder holding train/val/..., or at one split folder",
            root.display()
        );
    }
    let splits: Vec<String> = jsons
        .iter()
        .map(|j| {
            let rel = j.strip_prefix(&root).unwrap_or(j);
            split_of(rel, root_split).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let manifest_dir = manifest_dir
        .canonicalize()
        .unwrap_or_else(|_| manifest_dir.to_path_buf());
    let bar = progress::bar(jsons.len() as u64, "reading fMoW metadata");
    let results: Vec<Result<(MetadataRows, bool), String>> = jsons
        .par_iter()
        .zip(&splits)
        .map(|(json, split)| {
            let r = one_file(json, split, &manifest_dir, options)
                .map_err(|e| format!("{}: {e}", json.display()));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut records = Vec::new();
    let mut report = FmowReport {
        files: jsons.len(),
        ..FmowReport::default()
    };
    for (r, json) in results.into_iter().zip(&jsons) {
        match r {
            Ok((rows, no_boxes)) => {
                records.extend(rows.rows);
                report.boxes_too_small += rows.too_small;
                report.false_detections_dropped += rows.false_detections;
                report.files_without_boxes += usize::from(no_boxes);
                report.boxes_outside.extend(rows.outside.iter().map(|b| {
                    format!(
                        "{}: box [{}, {}, {}, {}] has no pixel inside the image",
                        json.display(),
                        b[0],
                        b[1],
                        b[2],
                        b[3]
                    )
                }));
            }
            Err(e) => report.skipped.push(e),
        }
    }
    report.images_without_metadata = images
        .into_iter()
        .filter(|i| !i.with_extension("json").is_file())
        .collect();
    if !report.skipped.is_empty() && !options.skip_errors {
        let errors = &report.skipped;
        let shown: Vec<&str> = errors.iter().take(20).map(String::as_str).collect();
        let more = if errors.len() > 20 {
            format!("\n... and {} more", errors.len() - 20)
        } else {
            String::new()
        };
        anyhow::bail!(
            "{} of {} metadata files could not be imported (use {} to import the rest):\n{}{more}",
            errors.len(),
            jsons.len(),
            crate::settings::name("skip_errors"),
            shown.join("\n")
        );
    }
    if records.is_empty() {
        anyhow::bail!(
            "{}: no usable bounding boxes in {} metadata files ({})",
            root.display(),
            jsons.len(),
            report.left_out()
        );
    }
    let manifest = Manifest {
        source: PathBuf::new(),
        root: manifest_dir,
        records,
        extra_columns: EXTRA_COLUMNS.iter().map(|s| s.to_string()).collect(),
    };
    Ok((manifest, report))
}

impl FmowReport {
    /// One line: what was left out, by reason.
    pub fn left_out(&self) -> String {
        format!(
            "left out: {} boxes too small (2 px or less), {} boxes outside the image, \
             {} files with no boxes, {} false detections dropped, {} images without metadata, \
             {} metadata files unreadable",
            self.boxes_too_small,
            self.boxes_outside.len(),
            self.files_without_boxes,
            self.false_detections_dropped,
            self.images_without_metadata.len(),
            self.skipped.len()
        )
    }
}

/// The manifest `location_id` of an fMoW location folder: `<split>/<folder>`
/// (e.g. `train/airport_0`), because fMoW numbers the folders of each split
/// (train, val, test, seq) from 0 and the same name in two splits names two
/// places. An empty split (a tree of location folders without split
/// folders) leaves the folder name alone.
pub fn location_id(fmow_split: &str, folder: &str) -> String {
    if fmow_split.is_empty() {
        folder.to_string()
    } else {
        format!("{fmow_split}/{folder}")
    }
}

/// The rows of one metadata file, and whether it had no boxes at all.
fn one_file(
    json: &Path,
    fmow_split: &str,
    manifest_dir: &Path,
    options: &FmowOptions,
) -> Result<(MetadataRows, bool), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("cannot read: {e}"))?;
    let meta: FmowMetadata =
        serde_json::from_str(&text).map_err(|e| format!("invalid metadata JSON: {e}"))?;
    let location_dir = json.parent().ok_or("no parent folder")?;
    let folder = location_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("no location folder")?;
    let location_id = location_id(fmow_split, &folder);
    let stem = json.file_name().unwrap_or_default().to_string_lossy();
    let stem = stem.trim_end_matches(".json");
    let image = IMAGE_EXTENSIONS
        .iter()
        .map(|ext| location_dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no image {stem}.jpg (or .tif/.png) beside it"))?;
    let image = match image.strip_prefix(manifest_dir) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => image.to_string_lossy().into_owned(),
    };
    let rows = rows_for_metadata(
        &meta,
        &image,
        &location_id,
        fmow_split,
        options.keep_false_detection,
    )?;
    Ok((rows, meta.bounding_boxes.is_empty()))
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
        assert_eq!((rows.too_small, rows.false_detections), (1, 1));
        let rows = rows.rows;
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.label.as_deref(), Some("airport"));
        assert_eq!(r.location_id.as_deref(), Some("airport_0"));
        assert_eq!(r.split, Some(Split::Train));
        let p = r.position.unwrap();
        assert!((p.lat - 20.1).abs() < 1e-9 && (p.lon - 10.1).abs() < 1e-9);
        assert_eq!(r.timestamp.unwrap().to_string(), "2015-02-26T16:31:40Z");
        assert_eq!(r.extra, vec!["train", "7", "0.5", "3", "1000", "800"]);
        let kept = rows_for_metadata(&meta, "x", "l", "seq", true)
            .unwrap()
            .rows;
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
        let (m, report) = import(&root, dir.path(), &options).unwrap();
        assert!(report.skipped.is_empty());
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

    /// Pointed at a split folder, the importer takes the split from the
    /// folder's name; pointed at a folder that is neither a release root nor
    /// a split folder, it refuses rather than guess (a wrong guess merges
    /// places of different splits, which reuse folder names).
    #[test]
    fn root_may_be_one_split_folder_but_not_a_category_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fmow");
        view(&root, "train/airport/airport_0", "airport_0_0_rgb", 10.0);
        view(&root, "val/airport/airport_0", "airport_0_0_rgb", 19.4);
        let options = FmowOptions {
            msrgb: false,
            keep_false_detection: false,
            skip_errors: false,
        };
        let ids = |sub: &str| {
            let (m, _) = import(&root.join(sub), dir.path(), &options).unwrap();
            m.records
                .iter()
                .map(|r| (r.location_id.clone().unwrap(), r.split, r.extra[0].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids("train"),
            [(
                "train/airport_0".to_string(),
                Some(Split::Train),
                "train".to_string()
            )]
        );
        assert_eq!(
            ids("val"),
            [(
                "val/airport_0".to_string(),
                Some(Split::Val),
                "val".to_string()
            )]
        );
        for (at, says) in [
            (
                dir.path().to_path_buf(),
                "is not an fMoW split folder (train, val, test, seq)",
            ),
            (
                root.join("train/airport"),
                "lies inside an fMoW split folder",
            ),
            (
                root.join("val/airport/airport_0"),
                "lies inside an fMoW split folder",
            ),
        ] {
            let err = import(&at, dir.path(), &options).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("point at the folder holding train/val/..."),
                "{}: {err}",
                at.display()
            );
        }
        // Location folders right below a split folder take its split too.
        let flat = dir.path().join("test");
        view(&flat, "airport_7", "airport_7_0_rgb", 10.0);
        let (m, _) = import(&flat, dir.path(), &options).unwrap();
        assert_eq!(m.records[0].location_id.as_deref(), Some("test/airport_7"));
        assert_eq!(m.records[0].split, Some(Split::Test));
    }

    /// Everything left out is counted by reason; boxes outside the image are
    /// listed with their file.
    #[test]
    fn left_out_boxes_files_and_images_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fmow");
        let loc = root.join("train/airport/airport_0");
        view(&root, "train/airport/airport_0", "airport_0_0_rgb", 10.0);
        let meta = |boxes: &str| {
            format!(r#"{{"img_width": 400, "img_height": 300, "bounding_boxes": [{boxes}]}}"#)
        };
        for (i, boxes) in [
            r#"{"category": "airport", "box": [10, 10, 2, 2], "ID": 1}"#,
            r#"{"category": "airport", "box": [500, 10, 50, 50], "ID": 2}"#,
            "",
            r#"{"category": "false_detection", "box": [10, 10, 50, 50], "ID": 3}"#,
        ]
        .iter()
        .enumerate()
        {
            let stem = format!("airport_0_{}_rgb", i + 1);
            std::fs::write(loc.join(format!("{stem}.jpg")), "x").unwrap();
            std::fs::write(loc.join(format!("{stem}.json")), meta(boxes)).unwrap();
        }
        std::fs::write(loc.join("airport_0_9_rgb.jpg"), "x").unwrap();
        let options = FmowOptions {
            msrgb: false,
            keep_false_detection: false,
            skip_errors: false,
        };
        let (m, r) = import(&root, dir.path(), &options).unwrap();
        assert_eq!(m.records.len(), 1);
        assert_eq!(r.files, 5);
        assert_eq!(r.boxes_too_small, 1);
        assert_eq!(r.files_without_boxes, 1);
        assert_eq!(r.false_detections_dropped, 1);
        assert_eq!(r.boxes_outside.len(), 1);
        assert!(
            r.boxes_outside[0].ends_with(
                "airport_0_2_rgb.json: box [500, 10, 50, 50] has no pixel inside the image"
            ),
            "{:?}",
            r.boxes_outside
        );
        assert_eq!(r.images_without_metadata, [loc.join("airport_0_9_rgb.jpg")]);
        assert_eq!(
            r.left_out(),
            "left out: 1 boxes too small (2 px or less), 1 boxes outside the image, \
             1 files with no boxes, 1 false detections dropped, 1 images without metadata, \
             0 metadata files unreadable"
        );
        // A box beside the image is outside even when its context reaches in.
        assert_eq!(
            box_crop([101.0, 10.0, 10.0, 10.0], 100, 100),
            Err(BoxFault::Outside)
        );
        assert_eq!(
            box_crop([-20.0, 10.0, 20.0, 10.0], 100, 100),
            Err(BoxFault::Outside)
        );
        assert!(box_crop([-19.0, 10.0, 20.0, 10.0], 100, 100).is_ok());
    }
}
