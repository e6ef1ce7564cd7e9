//! Interop with PyTorch, checked by PyTorch itself (the project's
//! virtualenv holds torch, torchvision and safetensors): exports load into
//! torchvision and compute what geossl computes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use geossl::eval::Encoder;
use geossl::interop::export::{add_num_batches_tracked, write_safetensors};
use geossl::interop::npy;
use geossl::model::{Arch, ResNetConfig};
use predicates::prelude::*;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

mod common;
use common::{geossl, world};

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
    p
}

fn save(path: &Path, t: &Tensor) {
    let v: Vec<f32> = Vec::try_from(t.contiguous().flatten(0, -1)).unwrap();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    npy::write(path, &shape, &v).unwrap();
}

/// Moves BN away from its initial state (weight 1, bias 0, mean 0, var 1),
/// so that a mix-up of any two of them would show.
fn randomise_bn(encoder: &Encoder) {
    tch::no_grad(|| {
        for (name, t) in encoder.vs.variables() {
            if t.dim() != 1 {
                continue;
            }
            let mut t = t.shallow_clone();
            if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand_like(&t) + 0.5));
            } else {
                let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.1));
            }
        }
    });
}

#[test]
fn torchvision_computes_what_geossl_computes() {
    let dir = tempfile::tempdir().unwrap();
    // The paper's ResNet-50, and the small-input stem used for small images.
    for (arch, small, size) in [(Arch::Resnet50, false, 64), (Arch::Resnet18, true, 16)] {
        tch::manual_seed(1);
        let cfg = ResNetConfig {
            arch,
            width: 64,
            small_input: small,
        };
        let encoder = Encoder::random(cfg, size as u32, Device::Cpu);
        randomise_bn(&encoder);
        let x = Tensor::randn([4, 3, size, size], (Kind::Float, Device::Cpu));
        let eval = tch::no_grad(|| encoder.backbone.forward_t(&x, false));
        // Export before the train-mode pass, which updates running statistics.
        let mut tensors: BTreeMap<String, Tensor> = encoder.vs.variables().into_iter().collect();
        add_num_batches_tracked(&mut tensors, 0);
        let weights = dir.path().join("w.safetensors");
        write_safetensors(&weights, &tensors, &BTreeMap::new()).unwrap();
        let train = tch::no_grad(|| encoder.backbone.forward_t(&x, true));
        let files = ["x.npy", "eval.npy", "train.npy"].map(|f| dir.path().join(f));
        save(&files[0], &x);
        save(&files[1], &eval);
        save(&files[2], &train);
        let out = Process::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/torchvision_parity.py"))
            .arg(arch.name())
            .arg(small.to_string())
            .arg(&weights)
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        assert!(out.status.success(), "{arch:?}: {text}");
    }
}

/// The Python block after `<!-- export-snippet -->` in the README.
fn readme_snippet() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = readme
        .split("<!-- export-snippet -->")
        .nth(1)
        .expect("README has the export snippet");
    let code = after.split("```python\n").nth(1).unwrap();
    code.split("```").next().unwrap().to_string()
}

#[test]
fn the_readme_snippet_loads_an_exported_run_into_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = world(dir.path(), 40, 32, 3);
    let run = dir.path().join("run");
    // A few steps of the paper's ResNet-50 on the val rows only, to be quick.
    geossl()
        .args(["pretrain", "--manifest"])
        .arg(&manifest)
        .args([
            "--split",
            "val",
            "--method",
            "moco-tp-geo",
            "--arch",
            "resnet50",
            "--image-size",
            "32",
        ])
        .args([
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--moco-k",
            "8",
            "--threads",
            "2",
            "--out",
        ])
        .arg(&run)
        .assert()
        .success();
    let out = dir.path().join("encoder.safetensors");
    geossl()
        .args(["export", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("part backbone"));
    let meta = geossl::interop::export::read_metadata(&out).unwrap();
    assert_eq!(meta["arch"], "resnet50");
    assert_eq!(meta["method"], "moco-tp-geo");
    assert_eq!(meta["geo_classes"], "3");
    let status = Process::new(python())
        .arg("-c")
        .arg(readme_snippet())
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the README's snippet failed");

    // The query part carries the heads under names torchvision ignores.
    let query = dir.path().join("query.safetensors");
    geossl()
        .args(["export", "--part", "query", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(&query)
        .assert()
        .success();
    let names: Vec<String> = Tensor::read_safetensors(&query)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in [
        "projection_head.0.weight",
        "projection_head.2.bias",
        "geo_head.1.weight",
        "layer4.2.bn3.num_batches_tracked",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing");
    }
}
