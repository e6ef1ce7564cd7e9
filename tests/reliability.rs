//! Crash safety of `geossl pretrain`: a run stopped by SIGTERM, SIGINT and
//! repeated SIGKILLs at random moments (one of them while a checkpoint is
//! being written) and resumed each time ends bit-identical to an
//! uninterrupted run, metrics history included; a damaged newest
//! checkpoint is detected and the previous one is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

mod common;
use common::{tiny_pretrain, world, TINY};

const EPOCHS: &str = "5";

fn pretrain_process(manifest: &Path, out: &Path, resume: bool) -> Child {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("geossl"));
    c.arg("pretrain")
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(TINY)
        .args(["--epochs", EPOCHS])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c.spawn().expect("geossl starts")
}

fn final_tensors(run: &Path) -> BTreeMap<String, tch::Tensor> {
    let dir = run.join("checkpoints").join(format!("epoch-{EPOCHS:0>4}"));
    tch::Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// Every metrics row without its wall-clock fields.
fn history(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("pairs_per_s");
            o.remove("seconds");
            o.remove("time");
            o.remove("time");
            v
        })
        .collect()
}

fn has_checkpoint(run: &Path) -> bool {
    run.join("checkpoints").join("latest").exists()
}

fn writing_checkpoint(run: &Path) -> bool {
    std::fs::read_dir(run.join("checkpoints")).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
    })
}

fn step_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("\"step\"")).count())
        .unwrap_or(0)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn interrupted_runs_end_exactly_like_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 40, 16, 3);
    let straight = dir.path().join("straight");
    tiny_pretrain(&geo, &straight)
        .args(["--epochs", EPOCHS])
        .assert()
        .success();

    let run = dir.path().join("interrupted");
    // 1. SIGTERM and 2. SIGINT in the middle of an epoch: a checkpoint
    // there, a clean exit, and the message saying how to go on.
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let before = step_rows(&run);
        let child = pretrain_process(&geo, &run, has_checkpoint(&run));
        let t0 = Instant::now();
        while step_rows(&run) < before + 7 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: stopped at epoch")),
            "{stderr}"
        );
        assert!(
            stderr.contains("-batch-"),
            "a mid-epoch checkpoint: {stderr}"
        );
    }
    // 3. SIGKILL while a checkpoint is being written.
    let mut killed_in_write = 0;
    for _ in 0..5 {
        let mut child = pretrain_process(&geo, &run, true);
        let t0 = Instant::now();
        loop {
            if writing_checkpoint(&run) {
                child.kill().unwrap();
                killed_in_write += 1;
                break;
            }
            if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.wait();
        if killed_in_write > 0 {
            break;
        }
    }
    assert!(
        killed_in_write > 0,
        "never caught a checkpoint being written"
    );
    // 4. SIGKILLs at random moments until a run finishes on its own.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut kills = 0;
    loop {
        let mut child = pretrain_process(&geo, &run, true);
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(300..2500));
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            Some(s) => {
                let out = child.wait_with_output().unwrap();
                assert!(s.success(), "{}", String::from_utf8_lossy(&out.stderr));
                break;
            }
            None => kills += 1,
        }
        assert!(kills < 60, "the run never finished");
    }
    assert!(kills > 0, "at least one random SIGKILL");

    let (a, b) = (final_tensors(&straight), final_tensors(&run));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after {kills} kills");
    }
    assert_eq!(history(&straight), history(&run));
}

/// The stderr of a finished `geossl` run that must succeed (or fail).
fn stderr_of(mut cmd: assert_cmd::Command, succeed: bool) -> String {
    let assert = cmd.assert();
    let assert = if succeed {
        assert.success()
    } else {
        assert.failure()
    };
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

fn flip_a_byte(path: &PathBuf) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_newest_checkpoint_is_reported_and_the_previous_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 30, 16, 3);
    let run = dir.path().join("run");
    tiny_pretrain(&geo, &run)
        .args(["--epochs", "2"])
        .assert()
        .success();
    let checkpoints = run.join("checkpoints");
    flip_a_byte(&checkpoints.join("epoch-0002").join("model.safetensors"));
    let mut cmd = tiny_pretrain(&geo, &run);
    cmd.args(["--epochs", "3", "--resume"]);
    let stderr = stderr_of(cmd, true);
    assert!(
        stderr.contains("epoch-0002/model.safetensors: damaged (SHA-256"),
        "{stderr}"
    );
    assert!(
        stderr.contains("resuming from") && stderr.contains("epoch-0001, the newest intact"),
        "{stderr}"
    );
    // Truncated too, and nothing intact left: a clear refusal.
    for name in ["epoch-0001", "epoch-0002", "epoch-0003"] {
        let f = checkpoints.join(name).join("model.safetensors");
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
    }
    let mut cmd = tiny_pretrain(&geo, &run);
    cmd.args(["--epochs", "4", "--resume"]);
    let stderr = stderr_of(cmd, false);
    assert!(
        stderr.contains("no intact checkpoint to resume from"),
        "{stderr}"
    );
}

/// Four kinds of broken files in the archive: a truncated JPEG, an empty
/// file, text with a .jpg name, a missing file.
fn break_four_training_images(manifest: &Path) -> Vec<String> {
    let root = manifest.parent().unwrap();
    let mut reader = csv::Reader::from_path(manifest).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (path_col, split_col) = (col("path"), col("split"));
    let paths: Vec<String> = reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[split_col] == "train")
        .map(|r| r[path_col].to_string())
        .step_by(7)
        .take(4)
        .collect();
    let file = |i: usize| root.join(&paths[i]);
    let bytes = std::fs::read(file(0)).unwrap();
    std::fs::write(file(0), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(file(1), b"").unwrap();
    std::fs::write(file(2), b"this is not a JPEG").unwrap();
    std::fs::remove_file(file(3)).unwrap();
    paths
}

#[test]
fn unreadable_images_are_skipped_listed_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 40, 16, 3);
    let broken = break_four_training_images(&geo);

    let run = dir.path().join("skip");
    let mut cmd = tiny_pretrain(&geo, &run);
    cmd.args(["--epochs", "3", "--max-bad-fraction", "0.2"]);
    let stderr = stderr_of(cmd, true);
    assert!(stderr.contains("skipped 4 unreadable image(s)"), "{stderr}");
    let mut listed = csv::Reader::from_path(run.join("bad_images.csv")).unwrap();
    let mut rows: Vec<(String, String)> = listed
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    rows.sort();
    let mut expect = broken.clone();
    expect.sort();
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), expect);
    let errors: String = rows
        .iter()
        .map(|r| r.1.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for what in [
        "corrupt or truncated",
        "empty file",
        "not a recognised image",
        "cannot read",
    ] {
        assert!(errors.contains(what), "{what} missing in\n{errors}");
    }

    let mut cmd = tiny_pretrain(&geo, &dir.path().join("fail"));
    cmd.args(["--epochs", "1", "--on-bad-image", "fail"]);
    let stderr = stderr_of(cmd, false);
    assert!(
        broken.iter().any(|p| stderr.contains(p.as_str())),
        "{stderr}"
    );

    let mut cmd = tiny_pretrain(&geo, &dir.path().join("bounded"));
    cmd.args(["--epochs", "3", "--max-bad-fraction", "0.02"]);
    let stderr = stderr_of(cmd, false);
    assert!(
        stderr.contains("could not be read")
            && stderr.contains("more than --max-bad-fraction 0.02"),
        "{stderr}"
    );
}
