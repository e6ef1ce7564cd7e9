//! Crash safety of `geossl pretrain`: a run stopped by SIGKILL before its
//! first checkpoint, by SIGTERM, SIGINT and repeated SIGKILLs at random
//! moments (one of them while a checkpoint is being written), re-started
//! each time with the one command line a scheduler repeats (always with
//! `--resume`), ends bit-identical to an uninterrupted run, metrics history
//! included; each SIGKILL loses at most `--checkpoint-every-steps` steps; a
//! damaged newest checkpoint is detected and the previous one is used; an
//! invocation that trains nothing fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

mod common;
use common::{tiny_pretrain, world, TINY};

const EPOCHS: &str = "5";
/// Mid-epoch checkpoints of the interrupted run: the most steps a SIGKILL
/// may cost.
const EVERY_STEPS: u64 = 8;

/// The scheduler's command line: the same every time, `--resume` included.
fn pretrain_process(manifest: &Path, out: &Path) -> Child {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("geossl"));
    c.arg("pretrain")
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(TINY)
        .args(["--epochs", EPOCHS, "--resume"])
        .args(["--checkpoint-every-steps", &EVERY_STEPS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c.spawn().expect("geossl starts")
}

/// The step a run's stderr says it resumed from.
fn resumed_step(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.starts_with("resuming from"))?;
    let at = line.find(", step ")? + ", step ".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
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
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"kind\":\"step\""))
                .count()
        })
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
    // 0. SIGKILL before the first checkpoint: the folder keeps that
    // attempt's partial metrics, and the same command line starts over.
    let mut child = pretrain_process(&geo, &run);
    let t0 = Instant::now();
    while step_rows(&run) < 2 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(step_rows(&run) >= 2, "the first attempt logged steps");
    assert!(
        !has_checkpoint(&run),
        "killed before the first checkpoint (step {EVERY_STEPS})"
    );
    // 1. SIGTERM and 2. SIGINT in the middle of an epoch: a checkpoint
    // there, a clean exit, and the message saying how to go on.
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let fresh = !has_checkpoint(&run);
        let before = if fresh { 0 } else { step_rows(&run) };
        let child = pretrain_process(&geo, &run);
        let t0 = Instant::now();
        while step_rows(&run) < before + 7 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        if fresh {
            assert!(
                stderr.contains("no checkpoint to resume from yet; starting from the beginning"),
                "{stderr}"
            );
        }
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
        let mut child = pretrain_process(&geo, &run);
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
    // 4. SIGKILLs at random moments until a run finishes on its own; each
    // loses at most EVERY_STEPS steps.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut kills = 0;
    let mut logged_at_kill: Option<usize> = None;
    let mut most_lost = 0;
    loop {
        let mut child = pretrain_process(&geo, &run);
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(300..2500));
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                child.kill().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let (Some(logged), Some(from)) = (logged_at_kill, resumed_step(&stderr)) {
            let lost = logged.saturating_sub(from as usize);
            most_lost = most_lost.max(lost);
            assert!(
                lost as u64 <= EVERY_STEPS,
                "a SIGKILL cost {lost} steps (logged {logged}, resumed at {from})"
            );
        }
        match status {
            Some(s) => {
                assert!(s.success(), "{stderr}");
                break;
            }
            None => {
                kills += 1;
                logged_at_kill = Some(step_rows(&run));
            }
        }
        assert!(kills < 60, "the run never finished");
    }
    assert!(kills > 0, "at least one random SIGKILL");
    eprintln!("{kills} random kills, at most {most_lost} steps lost by one");

    let (a, b) = (final_tensors(&straight), final_tensors(&run));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after {kills} kills");
    }
    assert_eq!(history(&straight), history(&run));
    // Mid-epoch checkpoints and killed writers' temporary folders are
    // pruned once a newer checkpoint is complete; epoch ones stay.
    let mut left: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expect: Vec<String> = (1..=5).map(|e| format!("epoch-{e:04}")).collect();
    expect.push("latest".into());
    assert_eq!(left, expect);
}

/// `--checkpoint-every-minutes` checkpoints mid-epoch by the clock, with
/// no epoch checkpoint due, keeping only the newest mid-epoch one; the
/// same command line then continues from it.
#[test]
fn checkpoints_by_the_clock_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 40, 16, 3);
    let run = dir.path().join("run");
    let command = || {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("geossl"));
        c.arg("pretrain")
            .arg("--manifest")
            .arg(&geo)
            .arg("--out")
            .arg(&run)
            .args(TINY)
            .args(["--epochs", "3", "--checkpoint-every", "100", "--resume"])
            .args(["--checkpoint-every-minutes", "0.003"]);
        c
    };
    let mut child = command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while step_rows(&run) < 12 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    while !has_checkpoint(&run) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let entries = || -> Vec<String> {
        std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // The kill may land while a checkpoint is being written: its staging
    // folder (`.NAME.tmp-PID`) is not a checkpoint, and the next run
    // removes it (checked below).
    let names: Vec<String> = entries()
        .into_iter()
        .filter(|n| n.starts_with("epoch-") && n.contains("-batch-"))
        .collect();
    assert!(
        names.len() <= 1,
        "older mid-epoch checkpoints pruned: {names:?}"
    );
    let out = command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let staging: Vec<String> = entries()
        .into_iter()
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        staging.is_empty(),
        "the killed writer's staging removed: {staging:?}"
    );
    assert!(
        stderr.contains(&format!(
            "resuming from {}",
            run.join("checkpoints").join(&latest).display()
        )),
        "{latest}: {stderr}"
    );
    assert!(resumed_step(&stderr).unwrap() > 0, "{stderr}");
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

/// Every image unreadable, under `--on-bad-image skip` with no limit: the
/// run fails before its first optimiser step and says why, instead of
/// ending "0 steps done" with success.
#[test]
fn a_run_that_cannot_train_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let geo = world(dir.path(), 20, 16, 3);
    let mut rows = csv::Reader::from_path(&geo).unwrap();
    let path_col = rows.headers().unwrap().iter().position(|h| h == "path");
    for r in rows.records() {
        let path = geo.parent().unwrap().join(&r.unwrap()[path_col.unwrap()]);
        std::fs::write(path, b"not an image").unwrap();
    }
    let run = dir.path().join("run");
    let mut cmd = tiny_pretrain(&geo, &run);
    cmd.args(["--epochs", "1", "--max-bad-fraction", "1", "--resume"]);
    let assert = cmd.assert().failure();
    let out = assert.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The input's bands are found on the first image that opens; when none
    // does, the run stops before building anything and says so.
    assert!(
        stderr.contains("images opens, so the input's bands cannot be found")
            && stderr.contains("not a raster format GDAL reads"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("steps done"),
        "no success line"
    );
    assert!(!has_checkpoint(&run));
}
