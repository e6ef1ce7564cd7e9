//! End-to-end pretraining through the CLI: learning on the built-in world,
//! exact resume, and the errors a user meets first.

use std::collections::BTreeMap;
use std::path::Path;

use predicates::prelude::*;

mod common;
use common::{geossl, tiny_pretrain, world};

fn step_losses(run: &Path) -> Vec<(u64, String, String, String)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].to_string(),
                v["geo_loss"].to_string(),
                v["lr"].to_string(),
            )
        })
        .collect()
}

fn checkpoint_tensors(run: &Path, name: &str) -> BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(run.join("checkpoints").join(name).join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn epochs(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .collect()
}

/// MoCo-v2+TP+Geo on the built-in world learns: its losses fall, and end
/// clearly below those of the same run with a learning rate of 0 (the
/// untrained network on exactly the same batches), which is what a broken
/// model would score.
#[test]
fn moco_tp_geo_learns_on_the_built_in_world() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 300, 32, 6);
    let run = |out: &Path, lr: &str| {
        geossl()
            .arg("pretrain")
            .arg("--manifest")
            .arg(&geo)
            .arg("--out")
            .arg(out)
            .args([
                "--method",
                "moco-tp-geo",
                "--arch",
                "resnet18",
                "--width",
                "8",
                "--small-input",
                "--image-size",
                "16",
            ])
            .args([
                "--batch-size",
                "32",
                "--moco-k",
                "128",
                "--moco-m",
                "0.99",
                "--moco-t",
                "0.2",
                "--bn-groups",
                "2",
            ])
            .args([
                "--crop-min-scale",
                "0.8",
                "--epochs",
                "24",
                "--threads",
                "2",
                "--checkpoint-every",
                "24",
                "--lr",
                lr,
            ])
            .assert()
            .success();
        epochs(out)
    };
    let trained = run(&dir.path().join("trained"), "0.24");
    let control = run(&dir.path().join("control"), "0");
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let (t, c) = (trained.last().unwrap(), control.last().unwrap());
    eprintln!("trained {t}\ncontrol {c}\nfirst {}", trained[0]);
    let early_peak = trained[..3]
        .iter()
        .map(|e| f(e, "moco_loss"))
        .fold(f64::MIN, f64::max);
    assert!(
        f(t, "moco_loss") < early_peak - 0.15,
        "InfoNCE falls: {} -> {}",
        early_peak,
        f(t, "moco_loss")
    );
    assert!(
        f(t, "geo_loss") < f(&trained[0], "geo_loss") - 0.08,
        "geo loss falls"
    );
    assert!(
        f(t, "moco_loss") < f(c, "moco_loss") - 0.15,
        "InfoNCE below the untrained network's"
    );
    assert!(
        f(t, "geo_loss") < f(c, "geo_loss") - 0.08,
        "geo loss below the untrained network's"
    );
    assert!(
        f(t, "geo_acc") > f(c, "geo_acc") + 0.04,
        "geo accuracy above the untrained network's"
    );
    assert!(dir
        .path()
        .join("trained/checkpoints/epoch-0024/model.safetensors")
        .is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("trained/checkpoints/latest")).unwrap(),
        "epoch-0024"
    );
}

#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 40, 16, 3);
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    let base = |out: &Path| {
        let mut c = tiny_pretrain(&geo, out);
        c.args(["--epochs", "2", "--method", "moco-tp-geo"]);
        c
    };
    base(&straight)
        .assert()
        .success()
        .stdout(predicate::str::contains("2 epochs"));
    base(&resumed)
        .args(["--stop-after", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 epochs"));
    base(&resumed)
        .arg("--resume")
        .assert()
        .success()
        .stdout(predicate::str::contains("2 epochs"));

    let (a, b) = (step_losses(&straight), step_losses(&resumed));
    assert!(a.len() >= 4, "two epochs of steps");
    assert_eq!(a, b, "every step's loss and lr, bit for bit");
    let (ta, tb) = (
        checkpoint_tensors(&straight, "epoch-0002"),
        checkpoint_tensors(&resumed, "epoch-0002"),
    );
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    assert!(ta.contains_key("queue") && ta.contains_key("encoder_k.layer1.0.conv1.weight"));
    assert!(ta
        .keys()
        .any(|k| k.starts_with("optimizer.momentum_buffer.")));
    for (name, t) in &ta {
        assert!(t.equal(&tb[name]), "{name} differs after resume");
    }
    let csv = std::fs::read_to_string(resumed.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "header + one row per epoch, no duplicates:\n{csv}"
    );
}

#[test]
fn user_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 30, 16, 3);
    let plain = dir.path().join("data/manifest.csv");
    let run = dir.path().join("run");
    tiny_pretrain(&plain, &run)
        .args(["--method", "moco-geo", "--epochs", "1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "needs the geo_cluster column on every row; run `geossl cluster",
        ));
    tiny_pretrain(&geo, &run)
        .args(["--moco-k", "30", "--epochs", "1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "moco-k (queue size) 30 must be a positive multiple of batch-size 8",
        ));
    tiny_pretrain(&geo, &run)
        .args(["--epochs", "1", "--method", "moco"])
        .assert()
        .success();
    tiny_pretrain(&geo, &run)
        .args(["--epochs", "1"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("already has checkpoints")
                .and(predicate::str::contains("pass --resume")),
        );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("method = \"moco\"") && config.contains("moco_k = 32"),
        "{config}"
    );
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let out = geossl()
        .args(["pretrain", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).unwrap();
    for flag in [
        "--method",
        "--arch",
        "--epochs",
        "--batch-size",
        "--lr",
        "--moco-k",
        "--moco-m",
        "--moco-t",
        "--bn-groups",
        "--image-size",
        "--device",
        "--seed",
        "--resume",
        "--config",
        "--cos-per-step",
        "--sample-by",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for default in [
        "[default: moco-tp-geo]",
        "[default: 65536]",
        "[default: 0.999]",
        "[default: 0.02]",
        "[default: 200]",
        "[default: 256]",
        "[default: 0.03]",
    ] {
        assert!(help.contains(default), "{default} missing from --help");
    }
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 30, 16, 3);
    let run = dir.path().join("run");
    let pretrain = || {
        let mut c = tiny_pretrain(&geo, &run);
        c.args(["--epochs", "3"]);
        c
    };
    pretrain().args(["--stop-after", "1"]).assert().success();
    let good = std::fs::read(run.join("checkpoints/epoch-0001/model.safetensors")).unwrap();
    // An absurd learning rate makes the weights, then the loss, overflow.
    pretrain()
        .args(["--resume", "--lr", "1e30"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("loss became"))
        .stderr(predicate::str::contains(
            "training stopped. The last good checkpoint is",
        ))
        .stderr(predicate::str::contains("epoch-0001"));
    assert_eq!(
        std::fs::read_to_string(run.join("checkpoints/latest")).unwrap(),
        "epoch-0001"
    );
    assert_eq!(
        std::fs::read(run.join("checkpoints/epoch-0001/model.safetensors")).unwrap(),
        good
    );
}
