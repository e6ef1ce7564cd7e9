//! Real image sizes and files that crash a decoder, end to end: the
//! commands finish their work or fail saying why, never in silence.

use std::path::Path;

use predicates::prelude::*;

mod common;
use common::geossl;

/// A band-interleaved tiled TIFF on which the `tiff` crate panics (written
/// and checked by src/data/decode.rs's tests).
fn crashing_tiff() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/testdata/planar_tiled.tif"))
        .unwrap()
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
    let m = manifest(d, 6, 2);
    geossl()
        .args(["bench", "data", "--manifest"])
        .arg(&m)
        .args([
            "--size",
            "224",
            "--pre",
            "448",
            "--batch",
            "4",
            "--threads",
            "2",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("images=8 bad_images=1 "))
        .stderr(predicate::str::contains(
            "crash.tif: the decoder crashed on this file",
        ))
        // The caught panic is reported once, as the error, not by the hook.
        .stderr(predicate::str::contains("panicked at").not());
    let only_bad = tempfile::tempdir().unwrap();
    let m = manifest(only_bad.path(), 0, 4);
    geossl()
        .args(["bench", "data", "--manifest"])
        .arg(&m)
        .args([
            "--size",
            "224",
            "--pre",
            "448",
            "--batch",
            "4",
            "--threads",
            "2",
        ])
        .assert()
        .failure()
        .stdout(predicate::str::contains("BENCH").not())
        .stderr(predicate::str::contains(
            "16 images in a row could not be read",
        ))
        .stderr(predicate::str::contains("crash.tif: the decoder crashed"));
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
        bad.starts_with("path,error\ncrash.tif,") && bad.contains("the decoder crashed"),
        "{bad}"
    );
}
