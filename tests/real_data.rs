//! Real data at real sizes, end to end: an fMoW-shaped tree (both splits
//! reusing the same location folder names, JPEGs of odd sizes up to
//! 3001 x 2999, boxes touching the image edges) imported, checked, clustered
//! and pretrained on at the DEFAULT image and pre sizes (224 from 448), and
//! files that crash a decoder. The commands finish their work or fail saying
//! why, never in silence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::geossl;
use image::{Rgb, RgbImage};
use predicates::prelude::*;

/// One fMoW image: split, category, location number, view number, size,
/// position (lon, lat) and bounding boxes (x, y, w, h).
struct View {
    split: &'static str,
    category: &'static str,
    location: u32,
    view: u32,
    size: (u32, u32),
    lon_lat: (f64, f64),
    boxes: Vec<[u32; 4]>,
}

/// The tree: `train/airport/airport_0` and `val/airport/airport_0` (and
/// likewise for farm) are different places, thousands of km apart, as in
/// the real fMoW where location folders are numbered per split.
fn views() -> Vec<View> {
    let v =
        |split, category, location, view, size: (u32, u32), lon_lat, boxes: Vec<[u32; 4]>| View {
            split,
            category,
            location,
            view,
            size,
            lon_lat,
            boxes,
        };
    vec![
        // Boxes touching the top-left, the bottom-right, and the whole image.
        v(
            "train",
            "airport",
            0,
            0,
            (1201, 899),
            (2.35, 48.85),
            vec![[0, 0, 400, 300], [801, 599, 400, 300]],
        ),
        v(
            "train",
            "airport",
            0,
            1,
            (3001, 2999),
            (2.35, 48.85),
            vec![[2600, 0, 401, 2999], [1000, 1000, 120, 90]],
        ),
        v(
            "train",
            "airport",
            1,
            0,
            (597, 478),
            (-74.0, 40.7),
            vec![[0, 0, 597, 478], [355, 0, 242, 478]],
        ),
        v(
            "train",
            "airport",
            1,
            1,
            (899, 1201),
            (-74.0, 40.7),
            vec![[0, 1000, 899, 201], [450, 600, 449, 601]],
        ),
        v(
            "train",
            "farm",
            0,
            0,
            (1600, 1201),
            (-93.6, 41.6),
            vec![[0, 0, 1600, 1201], [1599, 1200, 1, 1], [1, 1, 1598, 150]],
        ),
        v(
            "train",
            "farm",
            0,
            1,
            (2001, 1499),
            (-93.6, 41.6),
            vec![[0, 749, 2001, 750], [17, 0, 333, 1499]],
        ),
        v(
            "train",
            "farm",
            1,
            0,
            (1023, 1025),
            (31.2, 30.0),
            vec![[0, 0, 1023, 1025], [511, 0, 512, 513]],
        ),
        v(
            "train",
            "farm",
            1,
            1,
            (1201, 899),
            (31.2, 30.0),
            vec![[600, 450, 601, 449], [0, 0, 1201, 899]],
        ),
        // The same folder names in val: other places.
        v(
            "val",
            "airport",
            0,
            0,
            (1201, 899),
            (139.7, 35.7),
            vec![[0, 0, 1201, 899], [100, 100, 300, 300]],
        ),
        v(
            "val",
            "airport",
            0,
            1,
            (3001, 2999),
            (139.7, 35.7),
            vec![[0, 2000, 3001, 999]],
        ),
        v(
            "val",
            "farm",
            0,
            0,
            (1023, 1025),
            (151.2, -33.9),
            vec![[0, 0, 1023, 1025]],
        ),
    ]
}

/// A textured image (a JPEG of a flat colour would hide resampling faults).
fn texture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed).wrapping_mul(97);
        Rgb([
            ((x * 255) / w) as u8 ^ (n >> 27) as u8,
            ((y * 255) / h) as u8,
            ((x + y + seed) % 251) as u8,
        ])
    })
}

/// A WKT square of about 200 m around (lon, lat), as fMoW's `raw_location`.
fn footprint(lon: f64, lat: f64) -> String {
    let d = 0.001;
    format!(
        "POLYGON (({} {}, {} {}, {} {}, {} {}, {} {}))",
        lon - d,
        lat - d,
        lon + d,
        lat - d,
        lon + d,
        lat + d,
        lon - d,
        lat + d,
        lon - d,
        lat - d
    )
}

/// Writes the tree below `root` in fMoW's layout:
/// `split/category/category_loc/category_loc_view_rgb.{jpg,json}`.
fn write_fmow_tree(root: &Path) -> usize {
    let mut boxes = 0;
    for (i, v) in views().iter().enumerate() {
        let name = format!("{}_{}", v.category, v.location);
        let dir = root.join(v.split).join(v.category).join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let stem = format!("{name}_{}_rgb", v.view);
        texture(v.size.0, v.size.1, i as u32)
            .save(dir.join(format!("{stem}.jpg")))
            .unwrap();
        let meta = serde_json::json!({
            "timestamp": format!("201{}-0{}-1{}T10:2{}:00Z", 5 + v.view, 1 + v.view, v.location, i % 10),
            "img_width": v.size.0,
            "img_height": v.size.1,
            "gsd": 0.5,
            "cloud_cover": 0,
            "raw_location": footprint(v.lon_lat.0, v.lon_lat.1),
            "bounding_boxes": v.boxes.iter().enumerate().map(|(b, bx)| serde_json::json!({
                "category": v.category,
                "box": bx,
                "ID": b,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join(format!("{stem}.json")), meta.to_string()).unwrap();
        boxes += v.boxes.len();
    }
    boxes
}

fn read_rows(manifest: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(manifest).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn fmow_shaped_tree_pretrains_at_the_default_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fmow");
    let boxes = write_fmow_tree(&root);
    let manifest = dir.path().join("fmow.csv");
    geossl()
        .args(["index", "fmow"])
        .arg(&root)
        .arg("--out")
        .arg(&manifest)
        .assert()
        .success();

    // Places are per split: no location id is shared by train and val, and
    // each place's views keep the position of their own split's place.
    let rows = read_rows(&manifest);
    assert!(
        rows.len() >= boxes - 2,
        "{} rows of {boxes} boxes",
        rows.len()
    );
    let places = |split: &str| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| r["split"] == split)
            .map(|r| r["location_id"].clone())
            .collect()
    };
    let (train, val) = (places("train"), places("val"));
    assert_eq!((train.len(), val.len()), (4, 2), "{train:?} {val:?}");
    assert!(train.is_disjoint(&val), "{train:?} / {val:?}");

    // The check finds nothing wrong: no split leak, no place spread out.
    let check = geossl()
        .args(["index", "--check"])
        .arg(&manifest)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&check.get_output().stdout).to_string()
        + &String::from_utf8_lossy(&check.get_output().stderr);
    assert!(!text.contains("leaks between splits"), "{text}");

    let clustered = dir.path().join("fmow-geo.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(&manifest)
        .args(["--k", "3", "--out"])
        .arg(&clustered)
        .assert()
        .success();

    // The DEFAULT image and pre sizes (224 from 448); only the network is tiny.
    let run = dir.path().join("run");
    let batch = 4;
    let train_rows = rows.iter().filter(|r| r["split"] == "train").count();
    geossl()
        .arg("pretrain")
        .arg("--manifest")
        .arg(&clustered)
        .arg("--out")
        .arg(&run)
        .args([
            "--method",
            "moco-tp-geo",
            "--arch",
            "resnet18",
            "--width",
            "4",
        ])
        .args(["--epochs", "1", "--batch-size", &batch.to_string()])
        .args(["--moco-k", "16", "--threads", "2", "--on-bad-image", "fail"])
        .assert()
        .success();
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "step")
        .collect();
    assert_eq!(steps.len(), train_rows / batch, "every step ran");
    assert!(steps
        .iter()
        .all(|s| s["loss"].as_f64().unwrap().is_finite()));
    assert!(!run.join("bad_images.csv").exists(), "no bad image");
    assert!(run
        .join("checkpoints/epoch-0001/model.safetensors")
        .is_file());
}

/// A TIFF header followed by junk: GDAL cannot open it. (The
/// band-interleaved tiled TIFF on which the `tiff` crate panicked,
/// src/data/testdata/planar_tiled.tif, is read through GDAL now.)
fn crashing_tiff() -> Vec<u8> {
    b"II*\0junk, not a raster".to_vec()
}

/// `good` JPEGs cut from a 1000 x 478 scene by the reported manifest crop
/// `355,0,597,478` (Resize(448) + CenterCrop(448) of the 597 x 478 crop once
/// asked the resampler for 478.00000000000006 rows), `bad` crashing TIFFs,
/// two views per place.
fn manifest(dir: &Path, good: usize, bad: usize) -> std::path::PathBuf {
    let scene = image::RgbImage::from_fn(1000, 478, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    scene.save(dir.join("scene.jpg")).unwrap();
    std::fs::write(dir.join("crash.tif"), crashing_tiff()).unwrap();
    let mut csv = String::from("path,location_id,crop\n");
    for i in 0..good {
        csv.push_str(&format!("scene.jpg,place{},\"355,0,597,478\"\n", i / 2));
    }
    for i in 0..bad {
        csv.push_str(&format!("crash.tif,bad{i},\n"));
    }
    let path = dir.join("manifest.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn bench_data_counts_crashing_files_and_fails_without_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // At the default sizes, 224 from 448.
    let bench = |m: &Path| {
        let mut c = geossl();
        c.args(["bench", "data", "--manifest"]).arg(m).args([
            "--size",
            "224",
            "--pre",
            "448",
            "--batch",
            "4",
            "--threads",
            "2",
        ]);
        c
    };
    bench(&manifest(d, 6, 2))
        .assert()
        .success()
        .stdout(predicate::str::contains("images=8 bad_images=1 "))
        .stderr(predicate::str::contains(
            "crash.tif: not a raster GDAL can read",
        ))
        // The caught panic is reported once, as the error, not by the hook.
        .stderr(predicate::str::contains("panicked at").not());
    let only_bad = tempfile::tempdir().unwrap();
    bench(&manifest(only_bad.path(), 0, 4))
        .assert()
        .failure()
        .stdout(predicate::str::contains("BENCH").not())
        .stderr(predicate::str::contains(
            "16 images in a row could not be read",
        ))
        .stderr(predicate::str::contains(
            "crash.tif: not a raster GDAL can read",
        ));
}

#[test]
fn pretraining_at_the_default_sizes_runs_every_step_on_the_reported_crop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 15 + 1 rows in batches of 8: the crashing row is one of the anchors.
    let m = manifest(d, 15, 1);
    let run = d.join("run");
    geossl()
        .args(["pretrain", "--manifest"])
        .arg(&m)
        .args([
            "--split",
            "all",
            "--method",
            "moco-tp",
            "--arch",
            "resnet18",
            "--width",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--moco-k",
            "64",
            "--max-bad-fraction",
            "0.1",
            "--out",
        ])
        .arg(&run)
        .assert()
        .success()
        .stdout(predicate::str::contains("1 epochs, 2 steps done"));
    let bad = std::fs::read_to_string(run.join("bad_images.csv")).unwrap();
    assert!(
        bad.starts_with("path,error\ncrash.tif,") && bad.contains("not a raster GDAL can read"),
        "{bad}"
    );
}

/// Six readable training rows of two classes and a val split of `bad`
/// unreadable rows (an empty file, a missing file, a crashing TIFF), the
/// tester's `valbad.csv`.
fn unreadable_val_split(dir: &Path) -> std::path::PathBuf {
    for i in 0..6u32 {
        texture(24, 24, i)
            .save(dir.join(format!("img{i}.jpg")))
            .unwrap();
    }
    std::fs::write(dir.join("zero.jpg"), b"").unwrap();
    std::fs::write(dir.join("crash.tif"), crashing_tiff()).unwrap();
    let mut csv = String::from("path,lat,lon,location_id,label,split\n");
    for i in 0..6 {
        csv.push_str(&format!(
            "img{i}.jpg,10.{i},20.{i},loc{},{},train\n",
            i / 2,
            ["a", "b"][i % 2]
        ));
    }
    for name in ["zero.jpg", "missing.jpg", "crash.tif"] {
        csv.push_str(&format!("{name},11,21,bad-{name},b,val\n"));
    }
    let path = dir.join("valbad.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn monitored_pretrain(manifest: &Path, run: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut c = geossl();
    c.args(["pretrain", "--manifest"])
        .arg(manifest)
        .arg("--out")
        .arg(run)
        .args([
            "--arch",
            "resnet18",
            "--width",
            "8",
            "--small-input",
            "true",
            "--image-size",
            "16",
            "--epochs",
            "3",
            "--batch-size",
            "2",
            "--moco-k",
            "8",
            "--threads",
            "1",
            "--method",
            "moco",
            "--knn-every",
            "2",
            "--knn-k",
            "3",
        ])
        .args(extra);
    c
}

#[test]
fn a_knn_monitor_without_readable_test_rows_never_loses_training() {
    let dir = tempfile::tempdir().unwrap();
    let m = unreadable_val_split(dir.path());
    // Skip (the default): every epoch trained and saved, the monitor's
    // epochs (2 and the last) warn and record no figure, and each
    // unreadable row is named once, not once per monitored epoch.
    let run = dir.path().join("skip");
    let out = monitored_pretrain(&m, &run, &[]).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    for line in [8, 9, 10] {
        let named = stderr
            .matches(&format!("left out unreadable row {line} of"))
            .count();
        assert_eq!(named, 1, "line {line} named {named} times:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("the kNN monitor gave no figure").count(),
        2,
        "{stderr}"
    );
    assert!(stderr.contains("none of the 3 rows"), "{stderr}");
    assert!(run.join("checkpoints/epoch-0003").is_dir());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 3, "{metrics}");
    assert!(
        epochs.iter().all(|r| r.get("knn_top1").is_none()),
        "{metrics}"
    );

    // Fail: the run stops at the monitor, after the epoch's checkpoint, and
    // the same --resume line moves on each time until the run is done.
    let run = dir.path().join("fail");
    let fail = ["--on-bad-image", "fail", "--resume"];
    monitored_pretrain(&m, &run, &fail)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "the kNN monitor of epoch 2 failed (--on-bad-image fail)",
        ))
        // The first unreadable row in order (line 8), whichever thread
        // met its error first.
        .stderr(predicate::str::contains("valbad.csv:8: "))
        .stderr(predicate::str::contains("zero.jpg"));
    assert!(run.join("checkpoints/epoch-0002").is_dir());
    monitored_pretrain(&m, &run, &fail)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "the kNN monitor of epoch 3 failed",
        ));
    assert!(run.join("checkpoints/epoch-0003").is_dir());
    monitored_pretrain(&m, &run, &fail).assert().success();
}
