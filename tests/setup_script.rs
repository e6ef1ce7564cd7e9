//! scripts/setup.sh, the one installer that `./geossl`, `scripts/test.sh`
//! and CI source: a failed install must stop them (CI once went on to a
//! build that could not find torch, because bash ignores `set -e` inside a
//! subshell whose status is tested, and the stamp of a failed install said
//! it was done), and too little disk must be named before any download.
//!
//! Each test runs a copy of the script whose requirement list is replaced,
//! so that nothing is downloaded: pip fails on a wheel file that does not
//! exist, without asking an index.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of scripts/setup.sh under DIR/scripts/ whose Python requirements
/// are REQUIREMENTS.
fn setup_copy(dir: &Path, requirements: &str) -> PathBuf {
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
    let text = std::fs::read_to_string(&original).unwrap();
    let mut replaced = 0;
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("GEOSSL_PY_REQUIREMENTS=") {
                replaced += 1;
                format!("GEOSSL_PY_REQUIREMENTS=\"{requirements}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_eq!(
        replaced,
        1,
        "one GEOSSL_PY_REQUIREMENTS= line in {}",
        original.display()
    );
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let copy = dir.join("scripts/setup.sh");
    std::fs::write(&copy, text).unwrap();
    copy
}

/// Sources SETUP the way scripts/test.sh and ./geossl do (under `set -e`),
/// then prints a marker; returns (exit status, stdout, stderr).
fn source_under_errexit(setup: &Path, venv: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(r#"set -euo pipefail; . "$1"; echo SOURCED"#)
        .arg("bash")
        .arg(setup)
        .env("GEOSSL_VENV", venv)
        .env_remove("GEOSSL_SETUP_FREE_GIB")
        .env_remove("GEOSSL_SETUP_TMP_FREE_GIB");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A temporary folder holding a copy of setup.sh whose one requirement is a
/// wheel file that does not exist (pip fails without asking an index),
/// and the path of its virtualenv, DIR/venv.
fn setup_whose_pip_fails() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-1.0-py3-none-any.whl");
    let setup = setup_copy(dir.path(), &missing.display().to_string());
    let venv = dir.path().join("venv");
    (dir, setup, venv)
}

#[test]
fn a_failed_pip_install_stops_the_caller_and_leaves_no_stamp() {
    // The folder lives until the end of the test.
    let (_dir, setup, venv) = setup_whose_pip_fails();
    for attempt in 1..=2 {
        let (code, stdout, stderr) = source_under_errexit(&setup, &venv, &[]);
        assert_ne!(
            code, 0,
            "attempt {attempt}: a failed install must fail the caller\n{stderr}"
        );
        assert!(
            !stdout.contains("SOURCED"),
            "attempt {attempt}: the caller went on\n{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "geossl setup: installing into {} failed",
                venv.display()
            )),
            "attempt {attempt}: {stderr}"
        );
        // pip's own reason is shown, not hidden behind --quiet.
        assert!(
            stderr.contains("missing-1.0-py3-none-any.whl"),
            "attempt {attempt}: {stderr}"
        );
        // No stamp: the second attempt installs again rather than skipping.
        assert!(
            !venv.join(".geossl-setup-done").exists(),
            "attempt {attempt}: a failed install wrote the stamp"
        );
        assert!(
            stderr.contains("(large download, once)"),
            "attempt {attempt}: {stderr}"
        );
    }
}

/// The mount point of PATH's file system, as `df -P` gives it.
fn mount_point(path: &Path) -> Option<String> {
    let out = Command::new("df").arg("-P").arg(path).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.lines().nth(1)?.split_whitespace().last()?.to_string())
}

#[test]
fn too_little_free_space_is_named_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let setup = setup_copy(dir.path(), "numpy");
    let venv = dir.path().join("not-yet").join("venv");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // More than any disk has, asked first for the virtualenv, then for
    // pip's download folder: with both on one file system, each counts
    // there, and the refusal names the folder the virtualenv would be made
    // in (the nearest one that exists) and how much is free there.
    for (venv_gib, tmp_gib) in [("100000000", "0"), ("0", "100000000")] {
        let (code, stdout, stderr) = source_under_errexit(
            &setup,
            &venv,
            &[
                ("TMPDIR", tmp.to_str().unwrap()),
                ("GEOSSL_SETUP_FREE_GIB", venv_gib),
                ("GEOSSL_SETUP_TMP_FREE_GIB", tmp_gib),
            ],
        );
        assert_ne!(code, 0, "{stderr}");
        assert!(!stdout.contains("SOURCED"), "{stderr}");
        let expected = format!("geossl setup: {} has ", dir.path().display());
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(
            stderr.contains(
                " MiB free; installing the Python wheels needs about 100000000 GiB there"
            ),
            "{stderr}"
        );
        assert!(!venv.exists(), "nothing is made when the space is missing");
    }
    // pip's download folder on a file system of its own is checked there.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && mount_point(shm).is_some() && mount_point(shm) != mount_point(dir.path()) {
        let (code, _, stderr) = source_under_errexit(
            &setup,
            &venv,
            &[
                ("TMPDIR", "/dev/shm"),
                ("GEOSSL_SETUP_FREE_GIB", "0"),
                ("GEOSSL_SETUP_TMP_FREE_GIB", "100000000"),
            ],
        );
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains("geossl setup: /dev/shm has "), "{stderr}");
        assert!(!venv.exists());
    }
}

#[test]
fn a_changed_list_in_a_virtualenv_with_torch_is_not_held_to_a_fresh_installs_space() {
    // The folder lives until the end of the test.
    let (_dir, setup, venv) = setup_whose_pip_fails();
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    // torch as the wheel lays it out (the stamp is of an older list).
    let lib = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3")
        })
        .unwrap();
    std::fs::create_dir_all(lib.join("site-packages/torch")).unwrap();
    std::fs::write(lib.join("site-packages/torch/__init__.py"), "").unwrap();
    std::fs::write(venv.join(".geossl-setup-done"), "an older list").unwrap();
    let (code, _, stderr) =
        source_under_errexit(&setup, &venv, &[("GEOSSL_SETUP_FREE_GIB", "100000000")]);
    assert_ne!(code, 0, "{stderr}");
    // The space check is skipped; pip runs, and its failure is what stops.
    assert!(!stderr.contains("MiB free"), "{stderr}");
    assert!(stderr.contains("missing-1.0-py3-none-any.whl"), "{stderr}");
    assert!(
        !venv.join(".geossl-setup-done").exists(),
        "the older stamp is gone"
    );
}
