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
        .args(["--batch-size", "512", "--moco-k", "512", "--epochs", "1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("fewer than one batch of 512"));
    tiny_pretrain(&geo, &run)
        .args(["--epochs", "1", "--stop-after", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--stop-after must be at least 1"));
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
    // An absurd learning rate makes the weights, then the loss, overflow;
    // a checkpoint after every step keeps the last one before.
    let assert = tiny_pretrain(&geo, &run)
        .args([
            "--epochs",
            "3",
            "--lr",
            "1e30",
            "--checkpoint-every-steps",
            "1",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("loss became"))
        .stderr(predicate::str::contains(
            "training stopped. The last good checkpoint is",
        ));
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert!(stderr.contains(latest.as_str()), "{latest}: {stderr}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints").join(&latest).join("state.json")).unwrap(),
    )
    .unwrap();
    let failed_step = stderr
        .split(", step ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the failing step is named");
    assert_eq!(state["step"].as_u64().unwrap() + 1, failed_step, "{stderr}");
}

/// Resuming with settings that define the run (model, objective, batch,
/// temperature, geo classes, training rows) is refused with every
/// difference named; settings that may change are applied and recorded; the
/// run folder works from any working directory; a finished run says so.
#[test]
fn resume_refuses_what_changes_the_run_and_records_what_may_change() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 30, 16, 3);
    // The first start names its manifest and folder relative to `dir`.
    geossl()
        .current_dir(dir.path())
        .args(["pretrain", "--manifest", "data/geo.csv", "--out", "run"])
        .args(common::TINY)
        .args(["--epochs", "2", "--stop-after", "1"])
        .assert()
        .success();
    let run = dir.path().join("run");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let manifest_line = format!("manifest = {:?}", geo.display().to_string());
    assert!(config.contains(&manifest_line), "absolute: {config}");

    let refused = tiny_pretrain(&geo, &run)
        .args([
            "--resume",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--width",
            "8",
        ])
        .args(["--moco-t", "0.2", "--method", "moco-tp"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    for line in [
        "--resume would change what this run is",
        "--batch-size: 8 -> 16",
        "--width: 4 -> 8",
        "--moco-t: 0.02 -> 0.2",
        "--method: moco-tp-geo -> moco-tp",
        "geo classes (largest geo_cluster of the manifest + 1): 3 -> none",
    ] {
        assert!(stderr.contains(line), "{line} missing:\n{stderr}");
    }
    assert!(!stderr.contains("--epochs:"), "epochs may change: {stderr}");

    // Other geo clusters in a manifest elsewhere: the path may change, the
    // classes and rows may not.
    let geo4 = dir.path().join("data/geo4.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(dir.path().join("data/manifest.csv"))
        .args(["--k", "4", "--out"])
        .arg(&geo4)
        .assert()
        .success();
    let refused = tiny_pretrain(&geo4, &run)
        .arg("--resume")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        stderr.contains("geo classes (largest geo_cluster of the manifest + 1): 3 -> 4"),
        "{stderr}"
    );
    assert!(
        stderr.contains("training rows of the manifest (split train):"),
        "{stderr}"
    );

    // From another working directory, no --manifest: the run's config
    // supplies everything; --epochs and --threads may change.
    let elsewhere = tempfile::tempdir().unwrap();
    let resumed = geossl()
        .current_dir(elsewhere.path())
        .args(["pretrain", "--out"])
        .arg(&run)
        .args(["--resume", "--epochs", "3", "--threads", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("3 epochs"));
    let stderr = String::from_utf8_lossy(&resumed.get_output().stderr).into_owned();
    assert!(
        stderr.contains("changed: --epochs: 2 -> 3, --threads: 1 -> 2"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(run.join("resumes.log")).unwrap();
    assert!(
        log.contains("epoch-0001 (epoch 1, batch 0, step")
            && log.contains("changed: --epochs: 2 -> 3, --threads: 1 -> 2"),
        "{log}"
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("epochs = 3") && config.contains(&manifest_line),
        "{config}"
    );
    // `report` from there finds the manifest too (map, histograms, pairs).
    geossl()
        .current_dir(elsewhere.path())
        .arg("report")
        .arg(&run)
        .args(["--pairs", "2"])
        .assert()
        .success();
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        !page.contains("manifest could not be read"),
        "the report lacks its data"
    );

    // Finished: the same command again is no error, and says so.
    geossl()
        .args(["pretrain", "--out"])
        .arg(&run)
        .arg("--resume")
        .assert()
        .success()
        .stderr(predicate::str::contains("already finished (3 of 3 epochs"))
        .stdout(predicate::str::contains(
            "already finished before this invocation",
        ));
    geossl()
        .args(["pretrain", "--out"])
        .arg(&run)
        .args(["--resume", "--epochs", "2"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("past --epochs 2"));
}

/// The start-up summary's figures come from the data: images, places,
/// places with a single view, steps per epoch, batch and scaled lr; and a
/// progress line appears from the first step when stderr is a log file.
#[test]
fn pretrain_starts_with_a_summary_and_shows_progress_from_the_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 30, 16, 3);
    let mut reader = csv::Reader::from_path(&geo).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (split, place) = (col("split"), col("location_id"));
    let mut views: BTreeMap<String, usize> = BTreeMap::new();
    let mut images = 0;
    for r in reader.records().map(|r| r.unwrap()) {
        if &r[split] == "train" {
            images += 1;
            *views.entry(r[place].to_string()).or_default() += 1;
        }
    }
    let single = views.values().filter(|&&n| n == 1).count();
    assert!(
        views.len() > single,
        "the world has places with several views"
    );
    let steps = images / 8;
    let out = tiny_pretrain(&geo, &dir.path().join("run"))
        .args([
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--method",
            "moco-tp-geo",
        ])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    for line in [
        "pretrain moco-tp-geo: resnet18 width 4 (small-input stem), 16 px crops of 32 px, on cpu, 1 CPU threads".to_string(),
        format!(
            "data: {images} images at {} places (split train); {single} places with a single view",
            views.len()
        ),
        format!(
            "steps: {steps} per epoch, epochs 1..1 of 1 ({steps} steps in this invocation); global batch 8, lr {} (0.03 x 8/256, cosine)",
            0.03 * 8.0 / 256.0
        ),
        format!("epoch 1/1 batch 1/{steps} (step 1): loss "),
    ] {
        assert!(stderr.contains(&line), "{line} missing:\n{stderr}");
    }
    assert!(!stderr.contains("reduces to"), "{stderr}");

    // Every place seen once: temporal positives cannot occur.
    let mut reader = csv::Reader::from_path(&geo).unwrap();
    let once = dir.path().join("data/once.csv");
    let mut writer = csv::Writer::from_path(&once).unwrap();
    writer.write_record(reader.headers().unwrap()).unwrap();
    for (i, r) in reader.records().enumerate() {
        let mut r: Vec<String> = r.unwrap().iter().map(str::to_string).collect();
        r[place] = format!("place-{i}");
        writer.write_record(&r).unwrap();
    }
    writer.flush().unwrap();
    tiny_pretrain(&once, &dir.path().join("once"))
        .args(["--epochs", "1", "--method", "moco-tp"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{images} places (split train); {images} places with a single view"
        )))
        .stderr(predicate::str::contains(
            "warning: no place has two views (location_id with several images), so temporal positives never occur and moco-tp reduces to MoCo-v2 (moco)",
        ));
}

/// `pretrain --init RUN` starts both encoders from another run's query
/// encoder (the way to start from a MoCo checkpoint: `geossl import` it,
/// then pass the run folder). With lr 0 nothing moves, so after one epoch
/// every backbone weight of both encoders is the source run's query
/// encoder's, bit for bit.
#[test]
fn pretrain_init_from_a_run_folder_starts_from_its_query_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = world(dir.path(), 8, 16, 2);
    let source = dir.path().join("source");
    tiny_pretrain(&manifest, &source)
        .args(["--epochs", "1"])
        .assert()
        .success();
    let run = dir.path().join("init");
    tiny_pretrain(&manifest, &run)
        .args(["--epochs", "1", "--lr", "0", "--init"])
        .arg(&source)
        .assert()
        .success()
        .stderr(predicate::str::contains("the query encoder of"));
    let from = checkpoint_tensors(&source, "epoch-0001");
    let to = checkpoint_tensors(&run, "epoch-0001");
    let mut compared = 0;
    for (name, t) in &from {
        let Some(rest) = name.strip_prefix("encoder_q.") else {
            continue;
        };
        // BN running statistics move in every training-mode pass, and the
        // MLP head starts fresh.
        if rest.starts_with("fc.")
            || rest.contains("running_")
            || rest.ends_with("num_batches_tracked")
        {
            continue;
        }
        for encoder in ["encoder_q.", "encoder_k."] {
            assert!(t.equal(&to[&format!("{encoder}{rest}")]), "{encoder}{rest}");
            compared += 1;
        }
    }
    assert!(compared >= 40, "{compared} tensors compared");
    let fresh = &from["encoder_q.fc.0.weight"];
    assert!(
        !fresh.equal(&to["encoder_q.fc.0.weight"]),
        "the MLP head starts fresh"
    );
}
