//! Plain backbone files of the rest of the field (torchvision, timm,
//! torchgeo), written by PyTorch in the test (tests/python/backbone_files.py):
//! read to PyTorch's tensors and features, and used where an encoder is
//! expected (probe, knn, embed, finetune --init, pretrain --init, import).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{
    embed, geossl, import, json, npy_tensor, relative_error, run_python, tiny_pretrain, world,
};
use geossl::eval::Encoder;
use geossl::formats::npy;
use geossl::formats::safetensors::read_safetensors;
use geossl::interop::backbone;
use geossl::model::{Arch, ResNetConfig};
use predicates::prelude::*;
use tch::nn::ModuleT;
use tch::{Device, Tensor};

/// Largest |ours - PyTorch's| / max |PyTorch's| allowed for features: the
/// same libtorch on the same CPU runs the same kernels, so what is left
/// is the order of floating-point sums.
const FEATURE_TOLERANCE: f64 = 1e-5;

fn resnet18() -> ResNetConfig {
    ResNetConfig {
        arch: Arch::Resnet18,
        width: 64,
        small_input: false,
        in_channels: 3,
    }
}

/// The pooled eval-mode features of the encoder geossl reads from `path`
/// on `x.npy`, and their max relative error against `theirs` (a .npy).
fn feature_error(path: &Path, dir: &Path, theirs: &str) -> f64 {
    let encoder = Encoder::load(path, Device::Cpu).unwrap();
    assert_eq!(encoder.image_size, 224, "a backbone file is read at 224");
    let x = npy_tensor(&dir.join("x.npy"));
    let ours = tch::no_grad(|| encoder.backbone.forward_t(&x, false));
    relative_error(&ours, &dir.join(theirs))
}

/// Asserts that `b` holds exactly `reference`'s backbone tensors (every
/// name but `fc.*` and the BN counters) and ignores exactly the rest of
/// the state dict (the top-level entries beside it are checked apart).
fn assert_same_backbone(b: &backbone::Backbone, reference: &HashMap<String, Tensor>, what: &str) {
    let expected: Vec<&String> = reference
        .keys()
        .filter(|n| !n.starts_with("fc.") && !n.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(b.tensors.len(), expected.len(), "{what}");
    for name in expected {
        assert!(b.tensors[name].equal(&reference[name]), "{what}: {name}");
    }
    let counters = b
        .ignored
        .iter()
        .filter(|n| n.ends_with(".num_batches_tracked"));
    let fc = b
        .ignored
        .iter()
        .filter(|n| n.ends_with("fc.weight") || n.ends_with("fc.bias"));
    assert_eq!(counters.count(), 20, "{what}: {:?}", b.ignored);
    assert_eq!(fc.count(), 2, "{what}: {:?}", b.ignored);
    let in_state_dict = b.ignored.iter().filter(|n| !n.starts_with("top-level "));
    assert_eq!(in_state_dict.count(), 22, "{what}: {:?}", b.ignored);
}

#[test]
fn torchvision_timm_and_torchgeo_files_read_to_pytorchs_tensors_and_features() {
    backbone::register();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("backbone_files.py", [d.as_os_str(), "all".as_ref()]);
    let mut worst: f64 = 0.0;
    for lib in ["torchvision", "timm"] {
        let reference = read_safetensors(&d.join(format!("{lib}_plain.safetensors"))).unwrap();
        for (tag, prefix) in [
            ("plain", "no prefix"),
            ("module", "prefix module."),
            ("backbone", "prefix backbone."),
            ("encoder", "prefix encoder."),
        ] {
            for (ext, format) in [
                ("pth", "state dict (zip torch.save format)"),
                ("safetensors", "safetensors"),
            ] {
                let path = d.join(format!("{lib}_{tag}.{ext}"));
                let b = backbone::read(&path).unwrap();
                let what = path.display().to_string();
                assert_eq!(b.resnet, resnet18(), "{what}");
                assert_eq!(b.input, geossl::data::bands::InputSpec::rgb(), "{what}");
                assert_eq!(
                    b.layout,
                    format!("torchvision/timm ResNet-18 {format} (bare, {prefix})")
                );
                assert_same_backbone(&b, &reference, &what);
                let err = feature_error(&path, d, &format!("{lib}_features.npy"));
                worst = worst.max(err);
                assert!(
                    err <= FEATURE_TOLERANCE,
                    "{what}: features off by {err:.3e}"
                );
            }
        }
    }
    println!("torchvision and timm resnet18 features, 16 files: max relative error {worst:.3e}");

    wrapped_files_name_their_other_top_level_entries(d);

    // torchgeo's ResNet50_Weights.FMOW_RGB_GASSL layout: bare, no fc.
    let gassl = d.join("resnet50_fmow_rgb_gassl.pth");
    let b = backbone::read(&gassl).unwrap();
    assert_eq!(
        b.resnet,
        ResNetConfig {
            arch: Arch::Resnet50,
            ..resnet18()
        }
    );
    assert_eq!(
        b.layout,
        "torchvision/timm ResNet-50 state dict (zip torch.save format) (bare, no prefix)"
    );
    assert_eq!(b.ignored.len(), 53, "the BN counters only: {:?}", b.ignored);
    assert!(b
        .ignored
        .iter()
        .all(|n| n.ends_with(".num_batches_tracked")));
    let err = feature_error(&gassl, d, "gassl_features.npy");
    println!("GASSL-layout timm resnet50 features: max relative error {err:.3e}");
    assert!(err <= FEATURE_TOLERANCE, "{err}");

    // A file that is no backbone says what it holds.
    let other = d.join("not_a_backbone.pth");
    let e = backbone::read(&other).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: neither a ResNet backbone (no conv1.weight, bn1.weight and layer1.0.conv1.weight, bare or under module., backbone., encoder., model.) nor a MoCo checkpoint (no encoder_q.*); it holds head.weight, pos_embed",
            other.display()
        )
    );
}

const EVAL: [&str; 6] = ["--image-size", "32", "--batch-size", "8", "--device", "cpu"];

#[test]
fn finetune_init_probe_knn_embed_and_import_run_on_a_torchvision_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("backbone_files.py", [d.as_os_str(), "e2e".as_ref()]);
    let manifest = world(d, 12, 32, 3);
    let file = d.join("torchvision_module.pth");
    // `geossl CMD SOURCE PATH --manifest M EVAL EXTRA`; its stdout.
    let eval = |cmd: &str, source: &str, path: &Path, extra: &[&str]| {
        let out = geossl()
            .args([cmd, source])
            .arg(path)
            .arg("--manifest")
            .arg(&manifest)
            .args(EVAL)
            .args(extra)
            .assert()
            .success();
        String::from_utf8_lossy(&out.get_output().stdout).to_string()
    };

    // The paper's ImageNet-init supervised baseline: fine-tune from the file.
    let classifier = d.join("classifier");
    let out = eval(
        "finetune",
        "--init",
        &file,
        &["--epochs", "1", "--out", classifier.to_str().unwrap()],
    );
    assert!(out.contains("trained end to end"), "{out}");
    let info = json(&classifier.join("classifier.json"));
    let init = info["init"].as_str().unwrap();
    assert!(init.starts_with(file.to_str().unwrap()), "{init}");
    assert!(
        init.contains("ResNet-18 state dict (zip torch.save format) (bare, prefix module.)"),
        "{init}"
    );
    assert_eq!(info["resnet"]["width"], 64);
    assert_eq!(info["image_size"], 32);

    // Frozen evaluations of the file: reports beside it, named after it.
    let out = eval(
        "probe",
        "--checkpoint",
        &file,
        &["--epochs", "2", "--cache-features"],
    );
    assert!(out.contains("torchvision_module.probe.json"), "{out}");
    let probe = json(&d.join("torchvision_module.probe.json"));
    assert!(probe["top1"].as_f64().is_some(), "{probe}");
    assert!(
        probe.to_string().contains("torchvision_module.pth"),
        "{probe}"
    );
    eval("knn", "--checkpoint", &file, &["--k", "3"]);
    assert!(d.join("torchvision_module.knn.json").is_file());
    let npy_out = d.join("features.npy");
    embed(&file, &manifest, &npy_out)
        .args(["--image-size", "32", "--device", "cpu"])
        .assert()
        .success();
    let (shape, _) = npy::read::<f32>(&npy_out).unwrap();
    assert_eq!(shape[1], 512, "resnet18's pooled features");

    // --init and --checkpoint name the same thing: one of them.
    geossl()
        .args(["finetune", "--init"])
        .arg(&file)
        .arg("--checkpoint")
        .arg(&file)
        .args(["--manifest", "m.csv", "--out", "o"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--checkpoint"));

    // export converts the file to geossl's safetensors (torchvision names,
    // BN counters, metadata): the same backbone tensors.
    let exported = d.join("exported.safetensors");
    geossl()
        .args(["export", "--checkpoint"])
        .arg(&file)
        .arg("--out")
        .arg(&exported)
        .assert()
        .success();
    let reference = read_safetensors(&d.join("torchvision_plain.safetensors")).unwrap();
    let back = read_safetensors(&exported).unwrap();
    assert_eq!(back.len(), reference.len() - 2, "all but fc");
    for (name, t) in &back {
        if !name.ends_with("num_batches_tracked") {
            assert!(t.equal(&reference[name]), "{name}");
        }
    }
    let meta = geossl::interop::export::read_metadata(&exported).unwrap();
    assert_eq!(meta["arch"], "resnet18");
    assert!(meta["source_layout"].contains("prefix module."), "{meta:?}");

    // import: a run folder whose encoders are the file's backbone.
    let run = d.join("imported");
    let out = import(&d.join("torchvision_plain.safetensors"), &run);
    assert!(out.contains("resnet18, epoch 0"), "{out}");
    backbone::register();
    let from_run = Encoder::load(&run, Device::Cpu).unwrap();
    let from_file = Encoder::load(&file, Device::Cpu).unwrap();
    let (a, b) = (from_run.vs.variables(), from_file.vs.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name}");
    }
    let state = json(&run.join("checkpoints/epoch-0000/state.json"));
    assert_eq!(state["config"]["method"], "moco");
    assert!(state["imported_from"]
        .as_str()
        .unwrap()
        .ends_with("torchvision_plain.safetensors"));
    eval(
        "probe",
        "--checkpoint",
        &run,
        &["--epochs", "1", "--cache-features"],
    );
    assert!(run.join("probe.json").is_file());
}

/// The tiny pretraining of these tests (common's, then MoCo) at resnet18
/// width 64 without the small-input stem (the file's).
fn pretrain(manifest: &Path, out: &Path) -> assert_cmd::Command {
    let mut c = tiny_pretrain(manifest, out);
    c.args([
        "--width",
        "64",
        "--small-input",
        "false",
        "--method",
        "moco",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]);
    c
}

/// encoder_q's and encoder_k's tensors of a checkpoint, names without the
/// encoder prefix, BN running statistics left out (train-mode forward
/// passes update them whatever the learning rate).
fn trained_backbones(checkpoint: &Path) -> [HashMap<String, Tensor>; 2] {
    let all = read_safetensors(&checkpoint.join("model.safetensors")).unwrap();
    ["encoder_q.", "encoder_k."].map(|prefix| {
        all.iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_string(), t.shallow_clone())))
            .filter(|(n, _)| !n.starts_with("fc.") && !n.contains("running_"))
            .collect()
    })
}

#[test]
fn pretrain_init_starts_both_encoders_from_the_file_and_refuses_another_arch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("backbone_files.py", [d.as_os_str(), "e2e".as_ref()]);
    let manifest = world(d, 12, 32, 3);
    let file = d.join("torchvision_module.pth");
    let reference = read_safetensors(&d.join("torchvision_plain.safetensors")).unwrap();

    // lr 0: SGD leaves every parameter as it started (p - 0 * buf) and the
    // momentum update k + (1 - m) (q - k) leaves k = q, so after one epoch
    // both encoders' parameters must still be the file's, bit for bit.
    let run = d.join("run");
    pretrain(&manifest, &run)
        .args(["--lr", "0", "--init"])
        .arg(&file)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "init: both encoders' backbones from",
        ));
    let first = run.join("checkpoints/epoch-0001");
    for (which, tensors) in ["encoder_q", "encoder_k"]
        .iter()
        .zip(trained_backbones(&first))
    {
        assert_eq!(
            tensors.len(),
            60,
            "{which}: 20 conv weights, 20 BN weights and biases"
        );
        for (name, t) in &tensors {
            assert!(
                t.equal(&reference[name]),
                "{which}.{name} is not the file's"
            );
        }
    }
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains(&format!("init = \"{}\"", file.display())),
        "recorded absolute: {config}"
    );
    // Without --init the same run starts elsewhere: the check above can fail.
    let random = d.join("random");
    pretrain(&manifest, &random)
        .args(["--lr", "0"])
        .assert()
        .success();
    let [q, _] = trained_backbones(&random.join("checkpoints/epoch-0001"));
    assert!(!q["conv1.weight"].equal(&reference["conv1.weight"]));

    // --resume does not read the file again (the checkpoint holds the weights).
    let moved = d.join("moved.pth");
    std::fs::rename(&file, &moved).unwrap();
    pretrain(&manifest, &run)
        .args(["--lr", "0", "--resume", "--epochs", "2", "--init"])
        .arg(&file)
        .assert()
        .success();
    assert!(run.join("checkpoints/epoch-0002").is_dir());

    // Another architecture than the run's is refused, naming the flags.
    pretrain(&manifest, &d.join("r34"))
        .args(["--arch", "resnet34", "--init"])
        .arg(&moved)
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}: --init holds --arch resnet18 --width 64 --small-input false, 3 input channel(s) (torchvision/timm ResNet-18 state dict (zip torch.save format) (bare, prefix module.)); the run is --arch resnet34 --width 64 --small-input false, 3 input channel(s)",
            moved.display()
        )));
    assert!(!d.join("r34/checkpoints").exists());
}

/// The wrappers of Lightning, torchvision's reference scripts and timm's
/// train.py, with the data-only objects they save beside the weights
/// (`args`, a numpy `metric`): read, usable, and every other top-level
/// entry named in `ignored`; a file of EMA weights alone reads those.
fn wrapped_files_name_their_other_top_level_entries(d: &Path) {
    let torchvision = read_safetensors(&d.join("torchvision_plain.safetensors")).unwrap();
    let timm = read_safetensors(&d.join("timm_plain.safetensors")).unwrap();
    let ema = read_safetensors(&d.join("timm_ema.safetensors")).unwrap();
    let namespace = "(argparse.Namespace, not read)";
    let metric = "top-level metric (numpy._core.multiarray.scalar, not read)";
    for (file, reference, layout, top_level, features) in [
        (
            "torchvision_lightning.pth",
            &torchvision,
            "wrapped in 'state_dict', prefix model.",
            vec![
                "top-level epoch (not read)".to_string(),
                "top-level global_step (not read)".into(),
            ],
            None,
        ),
        (
            "torchvision_reference.pth.tar",
            &torchvision,
            "wrapped in 'model', prefix module.",
            vec![
                format!("top-level args {namespace}"),
                "top-level epoch (not read)".into(),
            ],
            Some("torchvision_features.npy"),
        ),
        (
            "timm_train.pth.tar",
            &timm,
            "wrapped in 'state_dict', no prefix",
            vec![
                "top-level epoch (not read)".to_string(),
                "top-level arch (not read)".into(),
                "top-level optimizer (62 tensors)".into(),
                "top-level version (not read)".into(),
                format!("top-level args {namespace}"),
                "top-level state_dict_ema (122 tensors)".into(),
                metric.into(),
            ],
            Some("timm_features.npy"),
        ),
        (
            "timm_ema_only.pth",
            &ema,
            "wrapped in 'state_dict_ema': timm's EMA weights, no prefix",
            vec![],
            None,
        ),
    ] {
        let path = d.join(file);
        let b = backbone::read(&path).unwrap();
        assert!(b.layout.ends_with(&format!("({layout})")), "{}", b.layout);
        assert_same_backbone(&b, reference, file);
        let named: Vec<&String> = b
            .ignored
            .iter()
            .filter(|n| n.starts_with("top-level "))
            .collect();
        assert_eq!(named, top_level.iter().collect::<Vec<_>>(), "{file}");
        if let Some(features) = features {
            let err = feature_error(&path, d, features);
            assert!(
                err <= FEATURE_TOLERANCE,
                "{file}: features off by {err:.3e}"
            );
        }
    }
}
