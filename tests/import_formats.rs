//! `geossl import` of the published checkpoint layouts in both torch.save
//! containers, with files written by PyTorch in the test
//! (tests/python/legacy_checkpoints.py): GASSL's `geo_dict`, the legacy
//! format of PyTorch < 1.6, and damaged or hostile legacy files.

mod common;

use std::collections::HashMap;
use std::path::Path;

use geossl::formats::safetensors::read_safetensors;
use geossl::model::Moco;
use geossl::train::checkpoint;
use geossl::train::sgd::Sgd;
use predicates::prelude::*;
use tch::{Device, Tensor};

use common::{geossl, import, npy_tensor, relative_error, run_python};

fn imported_tensors(run: &Path) -> HashMap<String, Tensor> {
    let ckpt = checkpoint::latest(run).unwrap().unwrap();
    read_safetensors(&ckpt.join("model.safetensors")).unwrap()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (imported_tensors(a), imported_tensors(b));
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    assert_eq!(names.len(), b.len());
    for name in names {
        assert!(a[name].equal(&b[name]), "{name} differs");
    }
}

/// The geo logits of the imported run on `x.npy`: query encoder (eval
/// mode), projection, geo head, as geossl's library computes them.
fn geo_logits(run: &Path, x: &Path) -> Tensor {
    let ckpt = checkpoint::latest(run).unwrap().unwrap();
    let state = checkpoint::read_state(&ckpt).unwrap();
    let mut moco = Moco::new(
        Device::Cpu,
        state.config.resnet(&state.input),
        state.config.moco(state.geo_classes),
    )
    .unwrap();
    let mut sgd = Sgd::new(moco.vs_q.variables(), 0.9, 1e-4);
    checkpoint::load(&ckpt, &mut moco, &mut sgd).unwrap();
    let x = npy_tensor(x);
    tch::no_grad(|| moco.geo_logits(&moco.encoder_q.forward_t(&x, false))).expect("a geo head")
}

#[test]
fn gassl_and_moco_checkpoints_import_from_both_containers_with_pytorchs_geo_logits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("legacy_checkpoints.py", [d]);

    let gassl = d.join("gassl-legacy");
    let printed = import(&d.join("gassl_legacy.pth.tar"), &gassl);
    for expected in [
        "resnet18, epoch 3, geo head: 10 classes",
        "file: GASSL checkpoint (state_dict + geo_dict, 10 classes), legacy torch.save format",
        "method: moco-geo (a geo head is present; temporal positives leave no trace",
        "optimizer state (",
        "BN num_batches_tracked counters",
    ] {
        assert!(printed.contains(expected), "{expected:?} not in {printed}");
    }
    // GASSL's classifier on the query projection, as PyTorch computed it.
    let ours = geo_logits(&gassl, &d.join("x.npy"));
    let err = relative_error(&ours, &d.join("geo_logits.npy"));
    println!("imported GASSL geo logits vs PyTorch: max relative error {err:.3e}");
    // float32 through a ResNet-18 and two heads: rounding only.
    assert!(err <= 1e-5, "{err}");

    let gassl_zip = d.join("gassl-zip");
    let printed = import(&d.join("gassl_zip.pth.tar"), &gassl_zip);
    assert!(printed.contains("geo_dict, 10 classes), zip torch.save format"));
    assert_same_tensors(&gassl, &gassl_zip);

    let (moco, moco_zip) = (d.join("moco-legacy"), d.join("moco-zip"));
    let printed = import(&d.join("moco_legacy.pth.tar"), &moco);
    for expected in [
        "geo head: none",
        "file: MoCo checkpoint (state_dict), legacy torch.save format",
        "method: moco (no geo head;",
        "top-level ema (2 tensors)",
    ] {
        assert!(printed.contains(expected), "{expected:?} not in {printed}");
    }
    import(&d.join("moco_zip.pth.tar"), &moco_zip);
    assert_same_tensors(&moco, &moco_zip);

    // Without encoder_k.*, the key encoder starts as a copy of encoder_q.
    let query_only = d.join("query-only");
    let printed = import(&d.join("query_only_legacy.pth.tar"), &query_only);
    assert!(printed.contains("no encoder_k: the key encoder starts as a copy of encoder_q"));
    let tensors = imported_tensors(&query_only);
    let from_file = imported_tensors(&moco);
    let mut keys = 0;
    for (name, t) in &tensors {
        if let Some(rest) = name.strip_prefix("encoder_k.") {
            assert!(t.equal(&tensors[&format!("encoder_q.{rest}")]), "{name}");
            assert!(t.equal(&from_file[&format!("encoder_q.{rest}")]), "{name}");
            keys += 1;
        }
    }
    assert!(keys > 60, "{keys} key encoder tensors");
}

/// MoCo checkpoints as main_moco.py and others save them: data-only
/// objects beside the weights (a numpy `best_acc1`, `args`) are named and
/// skipped; without `arch` it comes from the encoder_q shapes; a wrong
/// `arch` or a numpy array inside the state dict is refused by name.
#[test]
fn moco_files_with_numpy_args_or_no_arch_import_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("legacy_checkpoints.py", [d]);
    let reference = d.join("moco-zip");
    import(&d.join("moco_zip.pth.tar"), &reference);
    let run = d.join("best-acc1");
    let printed = import(&d.join("moco_best_acc1.pth.tar"), &run);
    for expected in [
        "resnet18, epoch 3",
        "top-level best_acc1 (numpy._core.multiarray.scalar, not read)",
        "top-level args (argparse.Namespace, not read)",
        "top-level ema (2 tensors)",
    ] {
        assert!(printed.contains(expected), "{expected:?} not in {printed}");
    }
    assert_same_tensors(&reference, &run);
    for (file, epoch) in [("moco_bare", "epoch 0"), ("moco_no_arch", "epoch 3")] {
        let run = d.join(file);
        let printed = import(&d.join(format!("{file}.pth.tar")), &run);
        assert!(
            printed.contains(&format!("resnet18, {epoch}")),
            "{file}: {printed}"
        );
        assert_same_tensors(&reference, &run);
    }
    for (file, message) in [
        (
            "moco_wrong_arch",
            "the file's arch entry \"resnet50\" and its encoder_q tensors (a resnet18) disagree",
        ),
        (
            "moco_numpy_in_state_dict",
            "state_dict entry module.extra is a numpy._core.multiarray._reconstruct, not a tensor",
        ),
    ] {
        let out = d.join(file);
        geossl()
            .args(["import", "--pth"])
            .arg(d.join(format!("{file}.pth.tar")))
            .arg("--out")
            .arg(&out)
            .assert()
            .failure()
            .stderr(predicate::str::contains(message))
            .stderr(predicate::str::contains("panicked").not());
        assert!(!out.exists(), "{file}: no run folder for a refused file");
    }
}

#[test]
fn hostile_truncated_and_forged_legacy_files_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("legacy_checkpoints.py", [d]);
    for (file, message) in [
        ("evil_object.pth.tar", "refused global posix.system"),
        ("evil_sys_info.pth.tar", "refused global builtins.eval"),
        (
            "truncated_pickle.pth.tar",
            "object pickle: truncated at byte",
        ),
        (
            "truncated_storages.pth.tar",
            "reach past the end of the file",
        ),
        ("forged_size.pth.tar", "says 4611686018427387904 elements"),
    ] {
        let out = d.join(file.replace(".pth.tar", ""));
        geossl()
            .args(["import", "--pth"])
            .arg(d.join(file))
            .arg("--out")
            .arg(&out)
            .assert()
            .failure()
            .stderr(predicate::str::contains(d.join(file).display().to_string()))
            .stderr(predicate::str::contains(message))
            .stderr(predicate::str::contains("panicked").not());
        assert!(!out.exists(), "{file}: no run folder for a refused file");
    }
    assert!(!d.join("pwned").exists(), "no code ran");
}
