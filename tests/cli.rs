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
    assert_eq!(a0["location_id"], "train/airport_0");
    assert_eq!(a0["label"], "airport");
    assert_eq!(a0["split"], "train");
    // Box 150x100 in 400x300: ratios 0.375 and 0.333 -> context 0.3 each:
    // pad w = int(150*0.3/2) = 22, pad h = int(100*0.3/2) = 15.
    assert_eq!(a0["crop"], "78,35,194,130");
    assert_eq!(a0["timestamp"], "2015-03-02T10:11:12Z");
    assert!((a0["lat"].parse::<f64>().unwrap() - 48.805).abs() < 1e-6);
    let dam = &rows[2];
    assert_eq!(dam["split"], "val");
    assert_eq!(dam["location_id"], "val/dam_4");
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

/// Pointed at a split folder, `index fmow` qualifies places by that split;
/// pointed at a category folder, it refuses; what it leaves out is counted
/// and boxes outside the image are listed with their file.
#[test]
fn fmow_import_of_one_split_folder_and_what_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fmow-rgb");
    let good = r#"{"category": "airport", "box": [100, 50, 150, 100], "ID": 11}"#;
    let outside = r#"{"category": "airport", "box": [900, 50, 50, 50], "ID": 12}"#;
    let json = |b: &str| fmow_json("2015-03-02T10:11:12Z", 2.3, 48.8, b);
    fmow_view(
        &root,
        "train",
        "airport",
        0,
        0,
        &json(&format!("{good}, {outside}")),
    );
    fmow_view(&root, "val", "airport", 0, 0, &json(good));
    let out = dir.path().join("train.csv");
    geossl()
        .args(["index", "fmow"])
        .arg(root.join("train"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "airport_0_0_rgb.json: box [900, 50, 50, 50] has no pixel inside the image",
        ))
        .stdout(predicate::str::contains(
            "1 metadata files; left out: 0 boxes too small (2 px or less), 1 boxes outside the image",
        ))
        .stdout(predicate::str::contains("wrote 1 rows"));
    let rows = read_manifest(&out);
    assert_eq!(rows[0]["location_id"], "train/airport_0");
    assert_eq!(rows[0]["split"], "train");
    geossl()
        .args(["index", "fmow"])
        .arg(root.join("val/airport"))
        .arg("--out")
        .arg(dir.path().join("x.csv"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "point at the folder holding train/val/..., or at one split folder",
        ));
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
        ("n02102040", "2002"),
        ("n02102040", "2003"),
    ] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .save(images.join(class).join(format!("{id}.jpg")))
            .unwrap();
    }
    // 2002 has no position (both cells empty); 2003's row is malformed.
    let meta = dir.path().join("meta.csv");
    std::fs::write(&meta, "id,lat,lon,locality,country,region,county\n1001,40.7,-74.0,NYC,US,NY,\n1002,51.5,-0.1,London,GB,,\n2001,35.7,139.7,Tokyo,JP,,\n2002,,,,FR,,\n2003,,2.3,Paris,FR,,\n").unwrap();
    let out = dir.path().join("gin.csv");
    let import = |extra: &[&str]| {
        geossl()
            .args(["index", "csv", "--format", "geoimagenet"])
            .arg(&meta)
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .assert()
    };
    import(&["--split", "train"])
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}:6:lat: lat is empty but lon is 2.3; give both or neither (value \"\")",
            meta.display()
        )));
    import(&["--split", "train", "--skip-errors"])
        .success()
        .stdout(predicate::str::contains(
            "4 images; 0 without a metadata row and 1 with empty lat/lon (both kept without position); 1 left out with their metadata row",
        ))
        .stderr(predicate::str::contains(format!(
            "skipped: {}:6:lat: lat is empty",
            meta.display()
        )));
    let rows = read_manifest(&out);
    assert_eq!(rows.len(), 4);
    // Relative to the manifest, as `index fmow` writes them.
    assert_eq!(rows[0]["path"], "images/n01440764/1001.jpg");
    assert_eq!(rows[2]["label"], "n02102040");
    assert_eq!(rows[2]["country"], "JP");
    assert_eq!(rows[3]["location_id"], "2002");
    assert_eq!(rows[3]["lat"], "");
    check_ok(&out);

    // The unpositioned image stops `cluster`, which says how to proceed.
    let clustered = dir.path().join("clustered.csv");
    geossl()
        .args(["cluster", "--k", "2", "--manifest"])
        .arg(&out)
        .arg("--out")
        .arg(&clustered)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "1 locations have no lat/lon (e.g. 2002); geo clustering needs a position for every location: add them, or pass --drop-unpositioned",
        ));
    geossl()
        .args(["cluster", "--k", "2", "--drop-unpositioned", "--manifest"])
        .arg(&out)
        .arg("--out")
        .arg(&clustered)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "left out 1 rows of 1 locations without lat/lon",
        ))
        .stdout(predicate::str::contains("3 locations in 2 clusters"));
    assert_eq!(read_manifest(&clustered).len(), 3);

    // Split by location, deterministically.
    let split_column = |extra: &[&str]| -> Vec<String> {
        import(extra).success();
        read_manifest(&out)
            .iter()
            .map(|r| r["split"].clone())
            .collect()
    };
    let a = split_column(&["--skip-errors", "--val-fraction", "0.5", "--seed", "3"]);
    assert_eq!(a.iter().filter(|s| *s == "val").count(), 2, "{a:?}");
    assert_eq!(a.iter().filter(|s| *s == "train").count(), 2, "{a:?}");
    let b = split_column(&["--skip-errors", "--val-fraction", "0.5", "--seed", "3"]);
    assert_eq!(a, b);
    import(&["--split", "train", "--val-fraction", "0.5"])
        .failure()
        .stderr(predicate::str::contains("cannot be used with"));
}

/// Real fMoW numbers location folders per split: `train/airport/airport_0`
/// and `val/airport/airport_0` are two places and stay two.
#[test]
fn fmow_places_are_per_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fmow-rgb");
    let airport_box = r#"{"category": "airport", "box": [100, 50, 150, 100], "ID": 11}"#;
    for (split, img, lon, lat) in [
        ("train", 0, 2.3, 48.8),
        ("train", 1, 2.3, 48.8),
        ("val", 0, -74.0, 40.7),
        ("val", 1, -74.0, 40.7),
    ] {
        fmow_view(
            &root,
            split,
            "airport",
            0,
            img,
            &fmow_json("2015-03-02T10:11:12+0000", lon, lat, airport_box),
        );
    }
    let out = dir.path().join("fmow.csv");
    geossl()
        .args(["index", "fmow"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let ids: Vec<String> = read_manifest(&out)
        .iter()
        .map(|r| r["location_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            "train/airport_0",
            "train/airport_0",
            "val/airport_0",
            "val/airport_0"
        ]
    );
    check_ok(&out).stdout(
        predicate::str::contains("locations         2")
            .and(predicate::str::contains("spread-out places 0"))
            .and(predicate::str::contains("WARNING").not()),
    );

    // The same rows under the folder name alone (what the importers wrote
    // before): one id for Paris and New York is a problem, named.
    let text = std::fs::read_to_string(&out)
        .unwrap()
        .replace("train/airport_0", "airport_0")
        .replace("val/airport_0", "airport_0");
    let merged = dir.path().join("merged.csv");
    std::fs::write(&merged, text).unwrap();
    let assert = geossl()
        .args(["index", "--check"])
        .arg(&merged)
        .assert()
        .failure();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stdout.contains("airport_0: 58")
            && stdout.contains(" km between line 2 (fmow-rgb/train/airport/airport_0/airport_0_0_rgb.jpg) and line 4 (fmow-rgb/val/airport/airport_0/airport_0_0_rgb.jpg)"),
        "{stdout}"
    );
    assert!(stdout.contains("WARNING"), "{stdout}");
    assert!(
        stderr.contains("1 locations have views more than 5 km apart"),
        "{stderr}"
    );
    // The threshold is a flag; JSON carries the location.
    let assert = geossl()
        .args(["index", "--check"])
        .arg(&merged)
        .args(["--json", "--max-spread-km", "1"])
        .assert()
        .failure();
    let json: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let spread = &json["spread_out_locations"][0];
    assert_eq!(spread["location_id"], "airport_0");
    assert_eq!(spread["rows"][0]["line"], 2);
    assert_eq!(spread["rows"][1]["line"], 4);
    assert!((spread["km"].as_f64().unwrap() - 5837.0).abs() < 10.0);
    assert_eq!(json["problems"].as_array().unwrap().len(), 1);
    geossl()
        .args(["index", "--check"])
        .arg(&merged)
        .args(["--max-spread-km", "10000"])
        .assert()
        .success();
}

/// `index --check --decode` decodes every image and lists each unreadable
/// one; a missing file is listed too; both fail the check. `--no-files`
/// leaves the files alone.
#[test]
fn check_decode_lists_unreadable_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
    for name in ["a.png", "b.jpg", "d.png"] {
        img.save(dir.path().join(name)).unwrap();
    }
    // A PNG cut in half: its checksums make it an error for every decoder
    // (a JPEG decoder may fill a cut tail with grey).
    img.save(dir.path().join("full.png")).unwrap();
    let png = std::fs::read(dir.path().join("full.png")).unwrap();
    std::fs::write(dir.path().join("cut.png"), &png[..png.len() / 2]).unwrap();
    let m = dir.path().join("m.csv");
    std::fs::write(
        &m,
        "path\na.png\nb.jpg\ncut.png\nd.png\nmissing.jpg\na.png\n",
    )
    .unwrap();
    let d = dir.path().display();

    // Without --decode, the cut file exists and passes; the missing one fails.
    geossl()
        .args(["index", "--check"])
        .arg(&m)
        .assert()
        .failure()
        .stdout(predicate::str::contains("unreadable files").not());
    let assert = geossl()
        .args(["index", "--check"])
        .arg(&m)
        .args(["--decode"])
        .assert()
        .failure();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stdout.contains(&format!(
            "missing files     1\n                  {d}/missing.jpg"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "unreadable files  1\n                  {d}/cut.png: corrupt or truncated image"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 image files are missing; 1 image files cannot be decoded"),
        "{stderr}"
    );
    // No ANSI colour or progress-bar residue when stderr is not a terminal.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let assert = geossl()
        .args(["index", "--check"])
        .arg(&m)
        .args(["--decode", "--json"])
        .assert()
        .failure();
    let json: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let unreadable = json["unreadable_files"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0]["path"], format!("{d}/cut.png"));
    assert_eq!(json["missing_files"], 1);
    assert_eq!(json["files_checked"], "decode");
    assert_eq!(json["problems"].as_array().unwrap().len(), 2);

    // Without the two bad rows the manifest passes, decoded.
    std::fs::write(&m, "path\na.png\nb.jpg\nd.png\n").unwrap();
    geossl()
        .args(["index", "--check"])
        .arg(&m)
        .args(["--decode"])
        .assert()
        .success()
        .stdout(predicate::str::contains("unreadable files  0"));

    // --no-files: files that are not there do not matter.
    std::fs::write(&m, "path\ns3/bucket/x.jpg\ns3/bucket/y.jpg\n").unwrap();
    geossl()
        .args(["index", "--check"])
        .arg(&m)
        .args(["--no-files"])
        .assert()
        .success()
        .stdout(predicate::str::contains("missing files     not checked"));
    geossl()
        .args(["index", "--check"])
        .arg(&m)
        .args(["--no-files", "--decode"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot be used with"));
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
    // build.rs places libgeossl_nccl.so beside the binary, where it is found.
    let nccl = match option_env!("GEOSSL_NCCL_NOT_BUILT") {
        None => "NCCL backend       loaded ",
        Some(_) => "NCCL backend       unavailable: NCCL backend not built",
    };
    geossl()
        .arg("info")
        .env_remove("GEOSSL_NCCL_LIB")
        .assert()
        .success()
        .stdout(predicate::str::contains(nccl));
    geossl()
        .arg("index")
        .assert()
        .failure()
        .stderr(predicate::str::contains("say what to index"));
}
