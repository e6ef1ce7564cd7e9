//! Helpers shared by the integration tests: the binary, a small built-in
//! world, and a tiny network for fast runs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use assert_cmd::Command;

pub fn geossl() -> Command {
    Command::cargo_bin("geossl").expect("binary built")
}

/// A small built-in world with geo clusters; returns the clustered manifest.
pub fn world(dir: &Path, locations: usize, size: usize, k: usize) -> PathBuf {
    let data = dir.join("data");
    geossl()
        .args(["synth", "--out"])
        .arg(&data)
        .args([
            "--locations",
            &locations.to_string(),
            "--max-views",
            "6",
            "--size",
            &size.to_string(),
            "--seed",
            "1",
        ])
        .assert()
        .success();
    let geo = data.join("geo.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(data.join("manifest.csv"))
        .args(["--k", &k.to_string(), "--out"])
        .arg(&geo)
        .assert()
        .success();
    geo
}

/// Flags for a tiny, fast network.
pub const TINY: [&str; 16] = [
    "--arch",
    "resnet18",
    "--width",
    "4",
    "--small-input",
    "true",
    "--image-size",
    "16",
    "--batch-size",
    "8",
    "--moco-k",
    "32",
    "--threads",
    "1",
    "--checkpoint-every",
    "1",
];

/// `geossl pretrain` on `manifest` into `out` with the tiny network.
pub fn tiny_pretrain(manifest: &Path, out: &Path) -> Command {
    let mut c = geossl();
    c.arg("pretrain")
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(TINY);
    c
}

/// The project's virtualenv python (torch, torchvision, tensorboard).
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// Runs `tests/python/<script>` with `args`; fails the test if it fails,
/// else returns its standard output.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = S>,
) -> String {
    let out = Process::new(python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script}: {stdout}{stderr}");
    // Shown with --nocapture (the reference scripts print their figures).
    println!("{stdout}{stderr}");
    stdout
}
