//! Evaluation end to end: probe, kNN, fine-tuning, embeddings and the kNN
//! monitor during pretraining, on a tiny pretrained encoder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use geossl::data::Manifest;
use geossl::eval::probe::{linear_probe, ProbeConfig};
use geossl::eval::{Encoder, Target, Task};
use predicates::prelude::*;

mod common;
use common::{geossl, tiny_pretrain, world};

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

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
    let (shape, values) = geossl::interop::npy::read::<f32>(&npy).unwrap();
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
