//! Evaluation end to end: probe, kNN, fine-tuning, embeddings and the kNN
//! monitor during pretraining, on a tiny pretrained encoder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use geossl::data::Manifest;
use geossl::eval::probe::{linear_probe, ProbeConfig};
use geossl::eval::{Encoder, Target, Task};
use predicates::prelude::*;

mod common;
use common::{four_band_scenes, geossl, json, tiny_pretrain, world};

/// A tiny world and an encoder pretrained on it for 2 epochs (with the kNN
/// monitor every epoch): (clustered manifest, run folder).
fn pretrained(dir: &Path) -> (PathBuf, PathBuf) {
    let manifest = world(dir, 60, 16, 4);
    let run = dir.join("run");
    tiny_pretrain(&manifest, &run)
        .args(["--epochs", "2", "--knn-every", "1", "--knn-k", "5"])
        .assert()
        .success();
    (manifest, run)
}

fn fraction(v: &serde_json::Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{x}");
    x
}

#[test]
fn probe_knn_finetune_and_embed_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, run) = pretrained(dir.path());

    // The kNN monitor wrote its figure into every epoch row.
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        fraction(&e["knn_top1"]);
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",knn_top1"), "{csv}");

    let report = dir.path().join("probe.json");
    geossl()
        .args(["probe", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .args([
            "--cache-features",
            "--epochs",
            "5",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&report)
        .assert()
        .success()
        .stdout(predicate::str::contains("per-location top-1"))
        .stdout(predicate::str::contains("features cached once"));
    let r = json(&report);
    fraction(&r["top1"]);
    fraction(&r["macro_f1"]);
    fraction(&r["per_location"]["top1"]);
    assert!(r["top5"].is_number(), "8 land-use classes -> top-5");
    let classes = r["per_class"].as_array().unwrap();
    assert!(classes.len() >= 2);
    let images: u64 = classes.iter().map(|c| c["images"].as_u64().unwrap()).sum();
    assert_eq!(images, r["test_images"].as_u64().unwrap());

    geossl()
        .args(["knn", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--k", "5", "--device", "cpu"])
        .assert()
        .success()
        .stdout(predicate::str::contains("weighted kNN (k 5, t 0.07)"));
    fraction(&json(&run.join("knn.json"))["top1"]);

    // Settings under which nothing would be learnt or compared (k 0 once
    // reported a top-1 of 50%, probe --epochs 0 an untrained layer, image
    // size 0 an internal loader error) are refused, naming the setting,
    // and write no report.
    let refused = dir.path().join("refused.json");
    for (command, args, message) in [
        (
            "knn",
            &["--k", "0"][..],
            "k (neighbours that vote) must be at least 1",
        ),
        ("knn", &["--t", "0"], "t (temperature) must be positive"),
        ("knn", &["--t=-1"], "t (temperature) must be positive"),
        (
            "knn",
            &["--image-size", "1"],
            "image-size must be at least 8 pixels, got 1",
        ),
        (
            "knn",
            &["--batch-size", "0"],
            "batch-size must be at least 1",
        ),
        ("probe", &["--epochs", "0"], "epochs must be at least 1"),
        ("probe", &["--lr", "0"], "lr must be positive"),
        (
            "probe",
            &["--batch-size", "0"],
            "batch-size must be at least 1",
        ),
        (
            "probe",
            &["--image-size", "0"],
            "image-size must be at least 8 pixels, got 0",
        ),
        ("finetune", &["--lr=-0.1"], "lr must be positive"),
        (
            "finetune",
            &["--batch-size", "0"],
            "batch-size must be at least 1",
        ),
        (
            "finetune",
            &["--image-size", "4"],
            "image-size must be at least 8 pixels, got 4",
        ),
    ] {
        geossl()
            .arg(command)
            .arg("--checkpoint")
            .arg(&run)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--device", "cpu", "--out"])
            .arg(&refused)
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(message));
        assert!(!refused.exists(), "{command} {args:?}");
    }
    let refused = dir.path().join("refused.npy");
    for (args, message) in [
        (
            ["--image-size", "0"],
            "image-size must be at least 8 pixels, got 0",
        ),
        (["--batch-size", "0"], "batch-size must be at least 1"),
    ] {
        geossl()
            .args(["embed", "--checkpoint"])
            .arg(&run)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--device", "cpu", "--out"])
            .arg(&refused)
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(message));
        assert!(!refused.exists(), "embed {args:?}");
    }

    // A test class that no training row has is named (it cannot be
    // predicted; its images all count as errors).
    let mut m = Manifest::read(&manifest).unwrap();
    let val = m
        .records
        .iter()
        .position(|r| r.split.map(|s| s.to_string()).as_deref() == Some("val"))
        .unwrap();
    m.records[val].label = Some("never-trained".into());
    let held_out = manifest.parent().unwrap().join("held-out.csv");
    m.write(&held_out).unwrap();
    geossl()
        .args(["knn", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&held_out)
        .args(["--k", "5", "--device", "cpu", "--out"])
        .arg(dir.path().join("held-out.json"))
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "1 class(es) of split val have no row in split train, so no classifier trained there can predict them and their 1 test image(s) all count as errors: never-trained",
        ));

    // Fine-tuning writes a classifier folder that the other commands accept.
    let classifier = dir.path().join("classifier");
    geossl()
        .args(["finetune", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .args([
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&classifier)
        .assert()
        .success()
        .stdout(predicate::str::contains("trained end to end"));
    let info = json(&classifier.join("classifier.json"));
    assert_eq!(info["target"], "label");
    let weights = tch::Tensor::read_safetensors(classifier.join("classifier.safetensors")).unwrap();
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    for n in [
        "conv1.weight",
        "bn1.running_var",
        "layer4.1.bn2.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    geossl()
        .args(["probe", "--checkpoint"])
        .arg(&classifier)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--cache-features", "--epochs", "2", "--device", "cpu"])
        .assert()
        .success()
        .stdout(predicate::str::contains("classifier on label"));

    // Embeddings: one float32 row per manifest row, and the rows as a CSV
    // that is itself a manifest of the same images.
    let npy = dir.path().join("out").join("features.npy");
    geossl()
        .args(["embed", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--device", "cpu", "--out"])
        .arg(&npy)
        .assert()
        .success();
    let original = Manifest::read(&manifest).unwrap();
    let (shape, values) = geossl::formats::npy::read::<f32>(&npy).unwrap();
    assert_eq!(shape, vec![original.records.len(), 32], "width 4 -> 32-d");
    assert!(values.iter().all(|v| v.is_finite()));
    let rows = Manifest::read(&npy.with_extension("csv")).unwrap();
    assert_eq!(rows.records.len(), original.records.len());
    for (a, b) in rows.records.iter().zip(&original.records) {
        assert_eq!(
            rows.resolve(a).canonicalize().unwrap(),
            original.resolve(b).canonicalize().unwrap()
        );
        let strip = |r: &geossl::data::ImageRecord| geossl::data::ImageRecord {
            path: String::new(),
            ..r.clone()
        };
        assert_eq!(strip(a), strip(b), "every column but the path verbatim");
    }
    assert_eq!(rows.extra_columns, original.extra_columns);
    // The same image gives the same feature as the probe's extractor.
    let encoder = Encoder::load(&run, tch::Device::Cpu).unwrap();
    assert_eq!(encoder.backbone.config.feature_dim(), 32);

    geossl()
        .args(["embed", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--out", "features.bin"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("must end in .npy"));
    geossl()
        .args(["probe", "--checkpoint"])
        .arg(dir.path().join("nothing"))
        .arg("--manifest")
        .arg(&manifest)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "no such run, checkpoint or classifier folder",
        ));
}

#[test]
fn the_probe_keeps_the_backbone_and_its_bn_statistics_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, run) = pretrained(dir.path());
    let encoder = Encoder::load(&run, tch::Device::Cpu).unwrap();
    let before: Vec<(String, tch::Tensor)> = encoder
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    assert!(before.iter().any(|(n, _)| n.ends_with("running_mean")));
    let task = Task::new(
        Arc::new(Manifest::read(&manifest).unwrap()),
        Target::Label,
        "train",
        "val",
        None,
    )
    .unwrap();
    // Random crops recomputed every epoch: the backbone runs every epoch.
    let config = ProbeConfig {
        epochs: 3,
        batch_size: 16,
        cache_features: false,
        ..Default::default()
    };
    let outcome = linear_probe(&encoder, &task, &config, true, None).unwrap();
    assert!(outcome
        .report
        .protocol
        .contains("RandomCrop (features recomputed every epoch)"));
    let after = encoder.vs.variables();
    for (name, t) in &before {
        assert!(t.equal(&after[name]), "{name} changed during the probe");
    }
    let fc: Vec<&str> = outcome.linear.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(fc, ["fc.bias", "fc.weight"]);
}

/// Runs `cmd` (stdout and stderr piped, as in any log) and returns its
/// output, after checking that neither carries an ANSI escape (0x1b).
fn piped(cmd: &mut assert_cmd::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.contains(&0x1b),
            "ESC in the {name} of a piped command: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    out
}

fn succeeded(cmd: &mut assert_cmd::Command) -> (String, String) {
    let out = piped(cmd);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

fn failed(cmd: &mut assert_cmd::Command) -> String {
    let out = piped(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "should fail: {stderr}");
    stderr
}

/// `manifest` with undecodable rows inserted: before each original row
/// of `at`, a copy of it whose image is a `broken-N.jpg` of text and whose
/// place is `broken-place-N` (N counting from the top). Written as `name`
/// beside it, so every other path still resolves. Returns the new file and
/// the positions of the broken rows in it, in order.
fn with_broken_rows(manifest: &Path, name: &str, at: &[usize]) -> (PathBuf, Vec<usize>) {
    let mut m = Manifest::read(manifest).unwrap();
    let folder = manifest.parent().unwrap();
    let mut at = at.to_vec();
    at.sort_unstable();
    for (i, &pos) in at.iter().enumerate().rev() {
        let file = format!("broken-{i}.jpg");
        std::fs::write(folder.join(&file), b"this is not a JPEG").unwrap();
        let mut r = m.records[pos].clone();
        r.path = file;
        r.location_id = Some(format!("broken-place-{i}"));
        m.records.insert(pos, r);
    }
    let out = folder.join(name);
    m.write(&out).unwrap();
    (out, at.iter().enumerate().map(|(i, p)| p + i).collect())
}

/// Rows of `split` in `manifest`, by position.
fn rows_of(manifest: &Path, split: &str) -> Vec<usize> {
    let m = Manifest::read(manifest).unwrap();
    (0..m.records.len())
        .filter(|&i| m.records[i].split.map(|s| s.to_string()).as_deref() == Some(split))
        .collect()
}

fn cli(command: &str, run: &Path, manifest: &Path) -> assert_cmd::Command {
    let mut c = geossl();
    c.args([command, "--checkpoint"])
        .arg(run)
        .arg("--manifest")
        .arg(manifest)
        .args(["--device", "cpu"]);
    c
}

/// Point 3 of issue 13: an undecodable row in the middle of the manifest
/// leaves every per-row output of embed, probe, kNN, finetune and the
/// report's sample pairs aligned with its rows: the row is left out of all
/// of them, and they equal the outputs of the manifest without it.
#[test]
fn unreadable_rows_are_left_out_of_every_output_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, run) = pretrained(dir.path());
    let train = rows_of(&clean, "train");
    let val = rows_of(&clean, "val");
    // One broken row in the middle of each split.
    let (t, v) = (train[train.len() / 2], val[val.len() / 2]);
    let (bad, at) = with_broken_rows(&clean, "bad.csv", &[t, v]);
    // (manifest line, split) of the broken rows, top to bottom, and the
    // file names of the train and val ones.
    let expected_skipped: Vec<(u64, String)> = at
        .iter()
        .zip(if t < v {
            ["train", "val"]
        } else {
            ["val", "train"]
        })
        .map(|(p, s)| (*p as u64 + 2, s.to_string()))
        .collect();
    let (train_broken, val_broken) = if t < v { (0, 1) } else { (1, 0) };
    let original = Manifest::read(&clean).unwrap();

    // embed: the .npy and the .csv have the same rows, the features of the
    // readable rows, in order; the list names the rows left out.
    let embed = |manifest: &Path, out: &Path, extra: &[&str]| {
        let mut c = cli("embed", &run, manifest);
        c.args(["--batch-size", "4", "--out"]).arg(out).args(extra);
        c
    };
    let clean_npy = dir.path().join("clean").join("f.npy");
    succeeded(&mut embed(&clean, &clean_npy, &[]));
    let npy = dir.path().join("bad").join("f.npy");
    let (stdout, stderr) = succeeded(&mut embed(&bad, &npy, &[]));
    assert!(
        stdout.contains("left out 2 unreadable row(s)") && stdout.contains("f.skipped.csv"),
        "{stdout}"
    );
    assert!(stderr.contains("broken-0.jpg"), "warned: {stderr}");
    let (shape, values) = geossl::formats::npy::read::<f32>(&npy).unwrap();
    let (clean_shape, clean_values) = geossl::formats::npy::read::<f32>(&clean_npy).unwrap();
    let rows = Manifest::read(&npy.with_extension("csv")).unwrap();
    assert_eq!(shape, clean_shape);
    assert_eq!(shape[0], original.records.len());
    assert_eq!(rows.records.len(), shape[0], ".npy and .csv rows");
    for (i, (a, b)) in rows.records.iter().zip(&original.records).enumerate() {
        assert_eq!(
            rows.resolve(a).canonicalize().unwrap(),
            original.resolve(b).canonicalize().unwrap(),
            "csv row {i}"
        );
    }
    // Row i of the .npy is the feature of row i of the .csv (batches of 4
    // are made of other rows than in the clean run: float tolerance).
    let dim = shape[1];
    for i in 0..shape[0] {
        let (a, b) = (
            &values[i * dim..(i + 1) * dim],
            &clean_values[i * dim..(i + 1) * dim],
        );
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "feature row {i} differs by {worst}");
    }
    let list = std::fs::read_to_string(npy.with_extension("skipped.csv")).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "line,path,error");
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[1].starts_with(&format!("{},broken-0.jpg,", at[0] + 2)),
        "{list}"
    );
    assert!(
        lines[2].starts_with(&format!("{},broken-1.jpg,", at[1] + 2)),
        "{list}"
    );
    // A clean rerun into the same place drops the stale list.
    succeeded(&mut embed(&clean, &npy, &[]));
    assert!(!npy.with_extension("skipped.csv").exists());
    // fail stops at the first unreadable row, naming it.
    let err = failed(&mut embed(&bad, &npy, &["--on-bad-image", "fail"]));
    assert!(
        err.contains(&format!("bad.csv:{}: ", at[0] + 2)) && err.contains("broken-0.jpg"),
        "{err}"
    );
    // Nothing readable: an error that says why, not "no images".
    let only_broken = dir.path().join("data").join("only-broken.csv");
    let mut m = Manifest::read(&with_broken_rows(&clean, "all-bad.csv", &[0, 0]).0).unwrap();
    m.records.truncate(2);
    m.write(&only_broken).unwrap();
    let err = failed(&mut embed(&only_broken, &npy, &[]));
    assert!(
        err.contains("none of the 2 rows")
            && err.contains("2 unreadable")
            && err.contains("line 2"),
        "{err}"
    );

    // probe and kNN: the report of the bad manifest is that of the clean
    // one (same figures per class and per location), plus the list of the
    // rows left out. Batches of 1, so the features are bit for bit the same.
    let figures = |r: &serde_json::Value| {
        let mut r = r.clone();
        let o = r.as_object_mut().unwrap();
        for k in ["skipped", "protocol", "encoder"] {
            o.remove(k);
        }
        r
    };
    let skipped_lines = |r: &serde_json::Value| -> Vec<(u64, String)> {
        r["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["line"].as_u64().unwrap(),
                    s["split"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    for command in ["probe", "knn"] {
        let report = |manifest: &Path, name: &str| {
            let out = dir.path().join(format!("{command}-{name}.json"));
            let mut c = cli(command, &run, manifest);
            c.args(["--batch-size", "1", "--out"]).arg(&out);
            if command == "probe" {
                c.args(["--cache-features", "--epochs", "3"]);
            } else {
                c.args(["--k", "5"]);
            }
            let (stdout, _) = succeeded(&mut c);
            (json(&out), stdout)
        };
        let (clean_report, _) = report(&clean, "clean");
        let (bad_report, stdout) = report(&bad, "bad");
        assert_eq!(figures(&bad_report), figures(&clean_report), "{command}");
        assert_eq!(skipped_lines(&clean_report), vec![]);
        assert_eq!(skipped_lines(&bad_report), expected_skipped, "{command}");
        assert!(
            stdout.contains("skipped   2 unreadable images (1 of the test split)"),
            "{command}: {stdout}"
        );
        // A test split with nothing readable is an error that says so.
        let mut m = Manifest::read(&bad).unwrap();
        let val_file = format!("broken-{val_broken}.jpg");
        m.records.retain(|r| {
            r.split.map(|s| s.to_string()).as_deref() != Some("val") || r.path == val_file
        });
        let val_only_broken = dir.path().join("data").join("val-only-broken.csv");
        m.write(&val_only_broken).unwrap();
        let mut c = cli(command, &run, &val_only_broken);
        if command == "probe" {
            c.args(["--epochs", "1", "--cache-features"]);
        }
        let err = failed(&mut c);
        assert!(
            err.contains("none of the 1 rows") && err.contains(&val_file),
            "{command}: {err}"
        );
    }

    // finetune: the test figures are over the readable rows (as many as
    // the clean manifest has), and the report lists both rows left out.
    let classifier = dir.path().join("classifier");
    succeeded(
        cli("finetune", &run, &bad)
            .args(["--epochs", "1", "--batch-size", "16", "--out"])
            .arg(&classifier),
    );
    let r = json(&classifier.join("report.json"));
    assert_eq!(r["test_images"].as_u64().unwrap() as usize, val.len());
    assert_eq!(skipped_lines(&r), expected_skipped);
    let err = failed(
        cli(
            "finetune",
            &run,
            &dir.path().join("data").join("val-only-broken.csv"),
        )
        .args(["--epochs", "1", "--batch-size", "16", "--out"])
        .arg(dir.path().join("classifier-none")),
    );
    assert!(
        err.contains("fine-tuning test: none of the 1 rows")
            && err.contains(&format!("broken-{val_broken}.jpg")),
        "{err}"
    );

    // report: the sample pairs of every training row (one batch), drawn as
    // the run's loader does; the broken row is replaced, so no pair is
    // captioned with its place, and the page says what was replaced.
    let page = dir.path().join("report.html");
    succeeded(
        geossl()
            .arg("report")
            .arg(&run)
            .arg("--manifest")
            .arg(&bad)
            .args(["--pairs", "100000", "--out"])
            .arg(&page),
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html.matches("<div class=\"pair\">").count(),
        train.len() + 1,
        "one pair per training row"
    );
    assert!(
        !html.contains(&format!("broken-place-{train_broken}")),
        "a caption names the broken row"
    );
    assert!(
        html.contains("1 unreadable image(s) were replaced by other samples")
            && html.contains(&format!("broken-{train_broken}.jpg")),
        "the page names the replaced image"
    );
}

/// Point 8 of issue 13: with stdout and stderr piped (a log, CI), no
/// command writes colour codes or cursor movement, warnings included, and
/// long work still reports its progress as plain lines (here at every
/// update, GEOSSL_PROGRESS_SECS=0).
#[test]
fn piped_output_has_no_ansi_codes_and_plain_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    succeeded(geossl().args(["synth", "--out"]).arg(&data).args([
        "--locations",
        "20",
        "--size",
        "16",
        "--seed",
        "2",
    ]));
    let manifest = data.join("manifest.csv");
    succeeded(geossl().args(["index", "--check"]).arg(&manifest));
    // A broken row makes pretraining and evaluation warn (tracing's level
    // names are where colour crept in).
    let (bad, _) = with_broken_rows(&manifest, "bad.csv", &[rows_of(&manifest, "train")[3]]);
    let run = dir.path().join("run");
    let (_, stderr) = succeeded(
        tiny_pretrain(&bad, &run)
            .env("GEOSSL_PROGRESS_SECS", "0")
            .args(["--method", "moco-tp", "--epochs", "1"])
            .args(["--max-bad-fraction", "0.5"]),
    );
    assert!(stderr.contains("WARN"), "a warning was logged: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("epoch 1/1: ") && l.contains(" ETA ")),
        "plain progress lines: {stderr}"
    );
    let npy = dir.path().join("f.npy");
    let (_, stderr) = succeeded(
        cli("embed", &run, &bad)
            .env("GEOSSL_PROGRESS_SECS", "0")
            .args(["--batch-size", "4", "--out"])
            .arg(&npy),
    );
    assert!(
        stderr.contains("WARN") && stderr.contains("broken-0.jpg"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("embedding: ") && l.contains(" ETA ")),
        "{stderr}"
    );
    assert!(!stderr.contains('\r'), "no redraws in a log: {stderr:?}");
    let (_, stderr) = succeeded(
        cli("probe", &run, &bad)
            .env("GEOSSL_PROGRESS_SECS", "0")
            .args([
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--test-split",
                "train",
            ])
            .arg("--out")
            .arg(dir.path().join("probe.json")),
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("linear probe: ") && l.contains(" ETA ")),
        "{stderr}"
    );
    // Without the variable, short work prints no progress line at all.
    let (_, stderr) = succeeded(
        cli("knn", &run, &manifest)
            .env_remove("GEOSSL_PROGRESS_SECS")
            .args(["--k", "3", "--test-split", "train"]),
    );
    assert!(!stderr.contains(" ETA "), "{stderr}");
    failed(
        geossl()
            .args(["probe", "--checkpoint", "nowhere", "--manifest"])
            .arg(&bad),
    );
}

/// A 4-band run (issue 16): probe, kNN, embed and fine-tuning read the
/// images with the checkpoint's bands and radiometry without any flag and
/// say so; a from-scratch classifier may choose other bands, a pretrained
/// one may not; the kNN monitor of pretraining runs on the 4 bands.
#[test]
fn a_multispectral_run_is_evaluated_with_its_own_bands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = four_band_scenes(d, 16);
    let run = d.join("run");
    let note = "input: 4 band(s) 4,3,2,1 (B08, B04, B03, B02), radiometry scale:10000";
    tiny_pretrain(&manifest, &run)
        .args([
            "--epochs",
            "1",
            "--method",
            "moco-tp",
            "--bands",
            "B08,B04,B03,B02",
        ])
        .args([
            "--radiometry",
            "scale:10000",
            "--knn-every",
            "1",
            "--knn-k",
            "3",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(note));
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 1);
    fraction(&epochs[0]["knn_top1"]);
    let encoder = Encoder::load(&run, tch::Device::Cpu).unwrap();
    assert_eq!(encoder.input.bands, [4, 3, 2, 1]);
    assert_eq!(
        encoder.backbone.config.in_channels, 4,
        "conv1 of the checkpoint"
    );
    for (command, extra) in [("probe", vec!["--epochs", "2"]), ("knn", vec!["--k", "3"])] {
        let out = d.join(format!("{command}.json"));
        cli(command, &run, &manifest)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .success()
            .stdout(predicate::str::contains(note));
        fraction(&json(&out)["top1"]);
    }
    let tuned = d.join("tuned");
    cli("finetune", &run, &manifest)
        .args(["--epochs", "1", "--batch-size", "4", "--out"])
        .arg(&tuned)
        .assert()
        .success()
        .stdout(predicate::str::contains(note));
    // The classifier keeps the input: evaluating it needs no flag either.
    cli("knn", &tuned, &manifest)
        .args(["--k", "3", "--out"])
        .arg(d.join("tuned-knn.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains(note));
    cli("finetune", &run, &manifest)
        .args(["--bands", "2,3", "--epochs", "1", "--out"])
        .arg(d.join("refused"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--bands and --radiometry apply to --from-scratch only",
        ));
    let scratch = d.join("scratch");
    cli("finetune", &run, &manifest)
        .args(["--from-scratch", "--bands", "B04,B03", "--epochs", "1"])
        .args(["--batch-size", "4", "--out"])
        .arg(&scratch)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "input: 2 band(s) 3,2 (B04, B03), radiometry scale:10000",
        ));
    let info = json(&scratch.join("classifier.json"));
    assert_eq!(info["resnet"]["in_channels"], 2);
    assert_eq!(info["input"]["bands"], serde_json::json!([3, 2]));
    // The report's sample pairs: a colour-infrared composite, named.
    let html = d.join("report.html");
    geossl()
        .arg("report")
        .arg(&run)
        .arg("--out")
        .arg(&html)
        .args(["--pairs", "2"])
        .assert()
        .success();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("False-colour composites (R = B08, G = B04, B = B03)."),
        "no composite named in the report"
    );
    assert!(!page.contains("could not be drawn"), "pairs drawn");
}
