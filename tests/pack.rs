//! `geossl pack` end to end on the built-in world: the pack read by
//! Python's `tarfile` and `sha256sum`, pretraining and evaluation reading
//! it with the image files gone, a corrupt shard caught by its checksum,
//! a resumed pack, and a multispectral pack of raw arrays.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use geossl::data::bands::InputSpec;
use geossl::data::loader::PairLoader;
use geossl::data::pack::PackedRows;
use geossl::data::source::ImageSource;
use geossl::data::Manifest;
use geossl::train::{Method, PretrainConfig};
use predicates::prelude::*;

mod common;
use common::{geossl, run_python, tiny_pretrain, world};

/// `geossl pack MANIFEST --out OUT --size 32 --shard-size 0.02` (a few
/// samples a shard) with `extra` flags; its standard output.
fn pack(manifest: &Path, out: &Path, extra: &[&str]) -> String {
    let done = geossl()
        .arg("pack")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(["--size", "32", "--shard-size", "0.02"])
        .args(extra)
        .assert()
        .success();
    String::from_utf8_lossy(&done.get_output().stdout).to_string()
}

/// Whether `sha256sum -c SHA256SUMS` passes in the pack `dir`.
fn sha256sum_passes(dir: &Path) -> bool {
    Process::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

/// Every shard file of `dir` (name, bytes), sorted.
fn shards(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The `data: N images at P places ...` line of a pretraining run's log.
fn data_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find(|l| l.starts_with("data: "))
        .unwrap_or_else(|| panic!("no data line in {text}"))
        .to_string()
}

/// The rows, key rows and geo labels of every batch of epoch 0 of the
/// moco-tp-geo loader on `manifest`'s training rows, reading `source`.
fn loader_draws(manifest: &Path, packed: Option<&Path>) -> Vec<(Vec<usize>, Vec<usize>, Vec<i64>)> {
    let mut config = PretrainConfig {
        method: Method::MocoTpGeo,
        ..Default::default()
    };
    config.data.image_size = 16;
    config.optimizer.batch_size = 8;
    let m =
        geossl::train::pretrain::training_rows(Manifest::read(manifest).unwrap(), "train").unwrap();
    let source = ImageSource::open(packed, &m).unwrap();
    let loader_config = geossl::data::loader::LoaderConfig {
        source,
        ..config.loader(false, &InputSpec::rgb())
    };
    let loader = PairLoader::new(m, loader_config).unwrap();
    loader
        .epoch(0, 0)
        .map(|b| {
            let b = b.unwrap();
            assert!(b.bad.is_empty(), "{:?}", b.bad);
            let geo: Vec<i64> = b.geo.unwrap().try_into().unwrap();
            (b.rows, b.key_rows, geo)
        })
        .collect()
}

/// Mean absolute difference of two RGB8 images of one size.
fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| x.abs_diff(y) as u64)
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Each row's packed image is its own crop (JPEG at quality 95 of the
/// raw Resize + CenterCrop), not another row's.
fn assert_rows_hold_their_images(manifest: &Path, pack_dir: &Path) {
    use geossl::data::band_image::SourceImage;
    use geossl::data::decode::DecodeOptions;
    let m = Manifest::read(manifest).unwrap();
    let packed = PackedRows::open(pack_dir, &m).unwrap();
    let spec = InputSpec::rgb();
    let rgb = |img: SourceImage| match img {
        SourceImage::Rgb8(i) => i,
        other => panic!("{other:?}"),
    };
    let raw: Vec<image::RgbImage> = (0..m.records.len())
        .map(|r| {
            let img = ImageSource::Files
                .load(&m, r, &spec, &DecodeOptions::default(), Some(32))
                .unwrap();
            geossl::data::augment::resize_center_crop(&rgb(img), 32).unwrap()
        })
        .collect();
    let mut other_place = Vec::new();
    for r in 0..m.records.len() {
        let img = rgb(packed
            .load(r, &spec, &DecodeOptions::default(), None)
            .unwrap());
        let own = mean_abs_diff(&img, &raw[r]);
        assert!(own < 3.0, "row {r}: mean |packed - raw| = {own}");
        let next = (r + 1) % m.records.len();
        if m.records[next].location_id != m.records[r].location_id {
            other_place.push(mean_abs_diff(&img, &raw[next]));
        }
    }
    let mean = other_place.iter().sum::<f64>() / other_place.len() as f64;
    assert!(
        mean > 10.0,
        "the images of other places differ by only {mean}"
    );
}

#[test]
fn packed_pretraining_and_evaluation_match_the_raw_path_without_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = world(d, 24, 32, 4);
    let pk = d.join("pack");
    let out = pack(&manifest, &pk, &[]);
    assert!(out.contains("(JPEG quality 95)"), "{out}");
    let figures = run_python("read_pack.py", [pk.as_os_str(), manifest.as_os_str()]);
    let shard_count = shards(&pk).len();
    assert!(
        figures.contains(&format!("in {shard_count} shards")),
        "{figures}"
    );
    assert!(shard_count > 3, "{figures}");
    assert!(sha256sum_passes(&pk));
    assert_rows_hold_their_images(&manifest, &pk);
    // The same rows, key rows (temporal positives: other views of the
    // place) and geo labels as the files give, batch after batch.
    assert_eq!(
        loader_draws(&manifest, Some(&pk)),
        loader_draws(&manifest, None)
    );

    // With the kNN monitor, which reads the pack too.
    let method = [
        "--method",
        "moco-tp-geo",
        "--epochs",
        "1",
        "--knn-every",
        "1",
        "--knn-k",
        "3",
    ];
    let raw = tiny_pretrain(&manifest, &d.join("raw"))
        .args(method)
        .assert()
        .success();
    let raw_data = data_line(&raw.get_output().stderr);
    let embed = |run: &Path, out: &str, packed: Option<&Path>| {
        let mut c = geossl();
        c.args(["embed", "--checkpoint"])
            .arg(run)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--device", "cpu", "--out"])
            .arg(d.join(out));
        if let Some(p) = packed {
            c.arg("--packed").arg(p);
        }
        c.assert().success();
        std::fs::read_to_string(d.join(out).with_extension("csv")).unwrap()
    };
    let raw_rows = embed(&d.join("raw"), "raw_embed.npy", None);

    // The files gone, as on a training machine with only the pack.
    let images = manifest.parent().unwrap().join("images");
    std::fs::rename(&images, d.join("images.away")).unwrap();
    let run = d.join("packed");
    let packed = tiny_pretrain(&manifest, &run)
        .args(method)
        .arg("--packed")
        .arg(&pk)
        .assert()
        .success();
    assert_eq!(data_line(&packed.get_output().stderr), raw_data);
    let stderr = String::from_utf8_lossy(&packed.get_output().stderr).to_string();
    assert!(stderr.contains("kNN top-1"), "{stderr}");
    assert!(!run.join("bad_images.csv").exists());
    assert_eq!(embed(&run, "packed_embed.npy", Some(&pk)), raw_rows);
    for (command, extra) in [
        ("probe", &["--cache-features", "--epochs", "2"][..]),
        ("knn", &["--k", "3"][..]),
    ] {
        geossl()
            .arg(command)
            .arg("--checkpoint")
            .arg(&run)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--device", "cpu", "--packed"])
            .arg(&pk)
            .args(extra)
            .assert()
            .success()
            .stdout(predicate::str::contains("top-1").or(predicate::str::contains("kNN")));
    }
    // The report's sample pairs come from the pack too.
    geossl()
        .arg("report")
        .arg(&run)
        .assert()
        .success()
        .stderr(predicate::str::contains("could not be drawn").not());
    // Without the pack the files are missing: the run says so.
    tiny_pretrain(&manifest, &d.join("nofiles"))
        .args(method)
        .args(["--on-bad-image", "fail"])
        .assert()
        .failure();

    // Resumable: a re-run rewrites only the missing shard, byte for byte.
    std::fs::rename(d.join("images.away"), &images).unwrap();
    let before = shards(&pk);
    std::fs::remove_file(pk.join("shard-000001.tar")).unwrap();
    let again = pack(&manifest, &pk, &[]);
    let kept = format!(
        "(1 written, {} complete from an earlier run)",
        shard_count - 1
    );
    assert!(again.contains(&kept), "{again}");
    assert_eq!(shards(&pk), before);
    assert!(sha256sum_passes(&pk));
}

/// Flips 4 bytes in the middle of the image member of the first sample
/// of the training split; returns (shard path, the row's manifest path).
fn corrupt_a_training_sample(pk: &Path, manifest: &Path) -> (PathBuf, String) {
    let m = Manifest::read(manifest).unwrap();
    let mut index = csv::Reader::from_path(pk.join("index.csv")).unwrap();
    let train = |row: &csv::StringRecord| {
        let r: usize = row[1].parse().unwrap();
        m.records[r].split == Some(geossl::data::Split::Train)
    };
    let row = index.records().map(|r| r.unwrap()).find(train).unwrap();
    let shard = pk.join(&row[5]);
    let (offset, size): (usize, usize) = (row[7].parse().unwrap(), row[8].parse().unwrap());
    let mut bytes = std::fs::read(&shard).unwrap();
    for b in &mut bytes[offset + size / 2..offset + size / 2 + 4] {
        *b ^= 0xff;
    }
    std::fs::write(&shard, bytes).unwrap();
    (shard, row[2].to_string())
}

#[test]
fn a_corrupt_shard_is_a_bad_image_and_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = world(d, 12, 32, 2);
    let pk = d.join("pack");
    pack(&manifest, &pk, &[]);
    let (shard, path) = corrupt_a_training_sample(&pk, &manifest);
    assert!(!sha256sum_passes(&pk));
    let pretrain = |out: &str, policy: &str| {
        let mut c = tiny_pretrain(&manifest, &d.join(out));
        c.args(["--method", "moco-tp", "--epochs", "1", "--packed"])
            .arg(&pk)
            .args(["--on-bad-image", policy, "--max-bad-fraction", "1"]);
        c
    };
    let checksum = "checksum mismatch: the shard is corrupt; run sha256sum -c SHA256SUMS in";
    // skip: the sample is replaced, and listed naming the shard.
    pretrain("skip", "skip").assert().success();
    let bad = std::fs::read_to_string(d.join("skip/bad_images.csv")).unwrap();
    assert!(bad.contains(&path), "{bad}");
    assert!(bad.contains(&shard.display().to_string()), "{bad}");
    assert!(bad.contains(checksum), "{bad}");
    // fail: the run stops with that message.
    pretrain("fail", "fail")
        .assert()
        .failure()
        .stderr(predicate::str::contains(checksum))
        .stderr(predicate::str::contains(shard.display().to_string()));
}

#[test]
fn a_multispectral_pack_stores_float_arrays_and_pretrains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    geossl()
        .args(["synth", "--bands", "4", "--out"])
        .arg(&data)
        .args(["--locations", "12", "--max-views", "3", "--size", "16"])
        .assert()
        .success();
    let manifest = data.join("manifest.csv");
    let pk = dir.path().join("pack");
    let out = pack(&manifest, &pk, &["--bands", "all", "--quality", "80"]);
    assert!(out.contains("input: 4 band(s)"), "{out}");
    assert!(
        out.contains("note: --quality applies to RGB JPEGs"),
        "{out}"
    );
    assert!(out.contains("(raw .npy)"), "{out}");
    let index = std::fs::read_to_string(pk.join("index.csv")).unwrap();
    assert!(
        index.contains(".npy,") && !index.contains(".jpg"),
        "{index}"
    );
    // synth's 4-band views have NoData on part of them: masks are stored.
    let with_mask = index.lines().skip(1).filter(|l| !l.ends_with(",,")).count();
    assert!(with_mask > 0, "{index}");
    run_python("read_pack.py", [pk.as_os_str(), manifest.as_os_str()]);
    std::fs::remove_dir_all(data.join("images")).unwrap();
    let pretrain = |bands: &str, out: &str| {
        let mut c = geossl();
        c.args(["pretrain", "--manifest"])
            .arg(&manifest)
            .args(["--method", "moco-tp", "--bands", bands, "--packed"])
            .arg(&pk)
            .args([
                "--arch",
                "resnet18",
                "--width",
                "4",
                "--small-input",
                "true",
            ])
            .args(["--image-size", "16", "--batch-size", "8", "--moco-k", "16"])
            .args(["--threads", "1", "--epochs", "1", "--out"])
            .arg(dir.path().join(out));
        c
    };
    pretrain("all", "run")
        .assert()
        .success()
        .stderr(predicate::str::contains("input: 4 band(s)"));
    // Another input than the pack's is refused before training.
    pretrain("rgb", "rgb")
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "the pack holds --bands all --radiometry auto, but the run reads --bands rgb",
        ));
}
