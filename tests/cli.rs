//! End-to-end tests of the `geossl` command line on real files.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn geossl() -> Command {
    Command::cargo_bin("geossl").expect("binary built")
}

/// `geossl index --check PATH`, asserted to succeed.
fn check_ok(path: &Path) -> assert_cmd::assert::Assert {
    geossl()
        .args(["index", "--check"])
        .arg(path)
        .assert()
        .success()
}

fn read_manifest(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            headers
                .iter()
                .zip(rec.unwrap().iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn synth_check_cluster_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("world");
    geossl()
        .args(["synth", "--out"])
        .arg(&data)
        .args([
            "--locations",
            "120",
            "--max-views",
            "5",
            "--size",
            "24",
            "--seed",
            "9",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("of 120 locations"));
    let manifest = data.join("manifest.csv");
    check_ok(&manifest).stdout(
        predicate::str::contains("locations         120")
            .and(predicate::str::contains("missing files     0")),
    );

    // Clustered manifest written elsewhere: image paths must still resolve.
    let out = dir.path().join("elsewhere/clustered.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(&manifest)
        .args(["--k", "12", "--seed", "3", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("120 locations in 12 clusters"));
    let rows = read_manifest(&out);
    let mut by_location = std::collections::HashMap::new();
    for r in &rows {
        let c: u32 = r["geo_cluster"].parse().unwrap();
        assert!(c < 12);
        let prev = by_location.insert(r["location_id"].clone(), c);
        assert!(
            prev.is_none() || prev == Some(c),
            "views of a location share a cluster"
        );
    }
    assert_eq!(by_location.len(), 120);
    let centroids: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("elsewhere/clustered.clusters.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(centroids["clusters"].as_array().unwrap().len(), 12);
    let images: f64 = centroids["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["images"].as_f64().unwrap())
        .sum();
    assert_eq!(images as usize, rows.len());
    check_ok(&out).stdout(predicate::str::contains("geo clusters      12"));

    // Same seed, same clusters.
    let again = dir.path().join("again.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(&manifest)
        .args(["--k", "12", "--seed", "3", "--out"])
        .arg(&again)
        .assert()
        .success();
    let a: Vec<String> = read_manifest(&out)
        .iter()
        .map(|r| r["geo_cluster"].clone())
        .collect();
    let b: Vec<String> = read_manifest(&again)
        .iter()
        .map(|r| r["geo_cluster"].clone())
        .collect();
    assert_eq!(a, b);

    geossl()
        .args(["cluster", "--manifest"])
        .arg(&manifest)
        .args(["--k", "500", "--out"])
        .arg(dir.path().join("x.csv"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "k = 500 is larger than the number of distinct locations (120); choose k <= 120",
        ));
}

#[test]
fn check_reports_bad_rows_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("bad.csv");
    std::fs::write(
        &m,
        "path,lat,lon,split\na.jpg,95,10,train\nb.jpg,1,2,later\n",
    )
    .unwrap();
    geossl()
        .args(["index", "--check"])
        .arg(&m)
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}:2:lat: lat is outside [-90, 90] (value \"95\")",
            m.display()
        )))
        .stderr(predicate::str::contains(format!(
            "{}:3:split: split must be one of train, val, test (value \"later\")",
            m.display()
        )));
    std::fs::write(&m, "path,lat,lon\nmissing.jpg,1,2\n").unwrap();
    geossl()
        .args(["index", "--check"])
        .arg(&m)
        .assert()
        .failure()
        .stdout(predicate::str::contains("missing.jpg"))
        .stderr(predicate::str::contains("1 image files are missing"));
}

/// Writes one fMoW image + metadata pair in the real layout.
fn fmow_view(root: &Path, split: &str, category: &str, loc: u32, img: u32, json: &str) {
    let dir = root
        .join(split)
        .join(category)
        .join(format!("{category}_{loc}"));
    std::fs::create_dir_all(&dir).unwrap();
    let stem = format!("{category}_{loc}_{img}_rgb");
    image::RgbImage::from_pixel(400, 300, image::Rgb([90, 120, 60]))
        .save(dir.join(format!("{stem}.jpg")))
        .unwrap();
    std::fs::write(dir.join(format!("{stem}.json")), json).unwrap();
}

fn fmow_json(timestamp: &str, lon: f64, lat: f64, boxes: &str) -> String {
    format!(
        r#"{{"gsd": 0.5, "img_width": 400, "img_height": 300, "cloud_cover": 0,
        "timestamp": "{timestamp}", "sun_azimuth_dbl": 150.2, "off_nadir_angle_dbl": 12.0,
        "raw_location": "POLYGON (({lon} {lat}, {lon1} {lat}, {lon1} {lat1}, {lon} {lat1}, {lon} {lat}))",
        "bounding_boxes": [{boxes}]}}"#,
        lon1 = lon + 0.01,
        lat1 = lat + 0.01
    )
}

#[test]
fn fmow_import_on_a_fake_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fmow-rgb");
    let airport_box = r#"{"category": "airport", "box": [100, 50, 150, 100], "ID": 11}"#;
    fmow_view(
        &root,
        "train",
        "airport",
        0,
        0,
        &fmow_json("2015-03-02T10:11:12Z", 2.3, 48.8, airport_box),
    );
    fmow_view(
        &root,
        "train",
        "airport",
        0,
        1,
        &fmow_json("2016-07-01T10:00:00Z", 2.3, 48.8, airport_box),
    );
    fmow_view(
        &root,
        "val",
        "dam",
        4,
        0,
        &fmow_json(
            "2014-01-01T00:00:00Z",
            179.995,
            -17.0,
            r#"{"category": "dam", "box": [10, 10, 20, 20], "ID": 3}, {"category": "false_detection", "box": [200, 200, 50, 50], "ID": 4}"#,
        ),
    );
    let out = dir.path().join("fmow.csv");
    geossl()
        .args(["index", "fmow"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote 3 rows"));
    let rows = read_manifest(&out);
    assert_eq!(rows.len(), 3);
    let a0 = &rows[0];
    assert_eq!(
        a0["path"],
        "fmow-rgb/train/airport/airport_0/airport_0_0_rgb.jpg"
    );
    assert_eq!(a0["location_id"], "airport_0");
    assert_eq!(a0["label"], "airport");
    assert_eq!(a0["split"], "train");
    // Box 150x100 in 400x300: ratios 0.375 and 0.333 -> context 0.3 each:
    // pad w = int(150*0.3/2) = 22, pad h = int(100*0.3/2) = 15.
    assert_eq!(a0["crop"], "78,35,194,130");
    assert_eq!(a0["timestamp"], "2015-03-02T10:11:12Z");
    assert!((a0["lat"].parse::<f64>().unwrap() - 48.805).abs() < 1e-6);
    let dam = &rows[2];
    assert_eq!(dam["split"], "val");
    assert_eq!(dam["location_id"], "dam_4");
    assert!(rows.iter().all(|r| r["label"] != "false_detection"));
    check_ok(&out).stdout(predicate::str::contains("locations         2"));

    // --keep-false-detection keeps the extra box.
    let kept = dir.path().join("kept.csv");
    geossl()
        .args(["index", "fmow"])
        .arg(&root)
        .arg("--out")
        .arg(&kept)
        .arg("--keep-false-detection")
        .assert()
        .success();
    assert_eq!(read_manifest(&kept).len(), 4);

    // A broken JSON stops the import and is named; --skip-errors imports the rest.
    let bad = root.join("train/airport/airport_0/airport_0_2_rgb.json");
    std::fs::write(&bad, "{\"img_width\": 400,").unwrap();
    std::fs::copy(
        root.join("train/airport/airport_0/airport_0_0_rgb.jpg"),
        root.join("train/airport/airport_0/airport_0_2_rgb.jpg"),
    )
    .unwrap();
    geossl()
        .args(["index", "fmow"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "airport_0_2_rgb.json: invalid metadata JSON",
        ));
    geossl()
        .args(["index", "fmow"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .arg("--skip-errors")
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote 3 rows"))
        .stdout(predicate::str::contains("1 metadata files skipped"));
}

/// `index fmow`'s error paths, each with its message naming the file.
#[test]
fn fmow_import_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fmow.csv");
    let import = |root: &Path| {
        let assert = geossl()
            .args(["index", "fmow"])
            .arg(root)
            .arg("--out")
            .arg(&out)
            .assert()
            .failure();
        String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
    };
    // No such folder.
    let missing = dir.path().join("nowhere");
    let err = import(&missing);
    assert!(
        err.contains(&format!("{}: cannot open fMoW root", missing.display())),
        "{err}"
    );
    // A folder without metadata.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("train")).unwrap();
    let err = import(&empty);
    assert!(
        err.contains(&format!(
            "{}: no *_rgb.json files found (is this an fMoW root with train/val/test folders?)",
            empty.display()
        )),
        "{err}"
    );
    // Metadata whose only box is unusable (a tiny box): nothing to import.
    let root = dir.path().join("fmow-rgb");
    let tiny = r#"{"category": "airport", "box": [10, 10, 1, 1], "ID": 1}"#;
    fmow_view(
        &root,
        "train",
        "airport",
        0,
        0,
        &fmow_json("2015-03-02T10:11:12Z", 2.3, 48.8, tiny),
    );
    let err = import(&root);
    assert!(
        err.contains(&format!(
            "{}: no usable bounding boxes in 1 metadata files",
            root.display()
        )),
        "{err}"
    );
    // A JSON without its image, and a box with a non-finite value.
    let good = r#"{"category": "airport", "box": [100, 50, 150, 100], "ID": 11}"#;
    fmow_view(
        &root,
        "train",
        "airport",
        0,
        1,
        &fmow_json("2015-03-02T10:11:12Z", 2.3, 48.8, good),
    );
    let lonely = root.join("train/airport/airport_0/airport_0_1_rgb.jpg");
    std::fs::remove_file(&lonely).unwrap();
    let err = import(&root);
    assert!(
        err.contains("airport_0_1_rgb.json: no image airport_0_1_rgb.jpg (or .tif/.png) beside it"),
        "{err}"
    );
    let nan_box = r#"{"category": "airport", "box": [1e999, 50, 150, 100], "ID": 11}"#;
    fmow_view(
        &root,
        "train",
        "airport",
        0,
        1,
        &fmow_json("2015-03-02T10:11:12Z", 2.3, 48.8, nan_box),
    );
    // serde_json refuses an infinite number, so a non-finite box never
    // gets past the JSON reader.
    let err = import(&root);
    assert!(
        err.contains("airport_0_1_rgb.json: invalid metadata JSON: number out of range"),
        "{err}"
    );
}

#[test]
fn geoimagenet_csv_import() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    for (class, id) in [
        ("n01440764", "1001"),
        ("n01440764", "1002"),
        ("n02102040", "2001"),
    ] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .save(images.join(class).join(format!("{id}.jpg")))
            .unwrap();
    }
    let meta = dir.path().join("meta.csv");
    std::fs::write(&meta, "id,lat,lon,locality,country,region,county\n1001,40.7,-74.0,NYC,US,NY,\n1002,51.5,-0.1,London,GB,,\n2001,35.7,139.7,Tokyo,JP,,\n").unwrap();
    let out = dir.path().join("gin.csv");
    geossl()
        .args(["index", "csv", "--format", "geoimagenet"])
        .arg(&meta)
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&out)
        .args(["--split", "train"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "3 images; 0 without a metadata row",
        ));
    let rows = read_manifest(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["label"], "n02102040");
    assert_eq!(rows[2]["country"], "JP");
    check_ok(&out);
}

#[test]
fn help_and_info() {
    geossl()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("cluster"));
    geossl()
        .args(["cluster", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[default: 100]"));
    geossl()
        .arg("info")
        .assert()
        .success()
        .stdout(predicate::str::contains("libtorch threads"));
    geossl()
        .arg("index")
        .assert()
        .failure()
        .stderr(predicate::str::contains("say what to index"));
}
