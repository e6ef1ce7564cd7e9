//! Interop with PyTorch, checked by PyTorch itself (the project's
//! virtualenv holds torch, torchvision and safetensors): exports load into
//! torchvision and compute what geossl computes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;

use geossl::data::bands::InputSpec;
use geossl::eval::Encoder;
use geossl::formats::npy;
use geossl::interop::export::{add_num_batches_tracked, write_safetensors};
use geossl::model::{Arch, ResNetConfig};
use predicates::prelude::*;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

mod common;
use common::{
    embed, eval_view_batch, four_band_scenes, geossl, json, npy_tensor, python, relative_error,
    run_python, save_npy, world,
};

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
            in_channels: 3,
        };
        let encoder = Encoder::random(cfg, InputSpec::rgb(), size as u32, Device::Cpu);
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
        save_npy(&files[0], &x);
        save_npy(&files[1], &eval);
        save_npy(&files[2], &train);
        let mut args = vec![
            arch.name().into(),
            small.to_string().into(),
            weights.clone(),
        ];
        args.extend(files);
        run_python("torchvision_parity.py", args);
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
    let clusters: serde_json::Value = serde_json::from_str(&meta["geo_clusters"]).unwrap();
    assert_eq!(
        clusters["k"], 3,
        "the centroids of `geossl cluster` travel along"
    );
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

/// Runs `tests/python/<script>` with `args` in the project's virtualenv,
/// prints what it printed, and asserts that it succeeded.
#[test]
fn official_checkpoints_import_with_the_same_features_and_hostile_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_python("official_checkpoint.py", [d]);
    let run = d.join("imported");
    geossl()
        .args(["import", "--pth"])
        .arg(d.join("moco.pth.tar"))
        .arg("--out")
        .arg(&run)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "resnet50, epoch 200, geo head: 100 classes",
        ));
    let encoder = Encoder::load(&run, Device::Cpu).unwrap();
    let x = npy_tensor(&d.join("x.npy"));
    let ours = tch::no_grad(|| encoder.backbone.forward_t(&x, false));
    let err = relative_error(&ours, &d.join("features.npy"));
    println!("imported ResNet-50 features vs torchvision: max relative error {err:.3e}");
    assert!(err <= 1e-4, "{err}");
    let state = json(&run.join("checkpoints/epoch-0200/state.json"));
    assert_eq!(state["queue_ptr"], 256);
    assert_eq!(state["geo_classes"], 100);

    geossl()
        .args(["import", "--pth"])
        .arg(d.join("evil.pth.tar"))
        .arg("--out")
        .arg(d.join("evil"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("refused global posix.system")
                .or(predicate::str::contains("refused global os.system")),
        );
    assert!(!d.join("pwned").exists(), "no code ran");
    geossl()
        .args(["import", "--pth"])
        .arg(d.join("truncated.pth.tar"))
        .arg("--out")
        .arg(d.join("t"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("truncated.pth.tar"))
        .stderr(predicate::str::contains("panicked").not());
    geossl()
        .args(["import", "--pth"])
        .arg(d.join("x.npy"))
        .arg("--out")
        .arg(d.join("n"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a torch.save zip archive"));
}

#[test]
fn infonce_and_geo_loss_match_the_reference_code() {
    use geossl::model::heads::GeoHead;
    use geossl::model::moco::{info_nce, normalize};
    use tch::nn::{self, Module};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tch::manual_seed(7);
    let (n, dim, queue_size, classes, t) = (16, 128, 512, 10, 0.02);
    let opts = (Kind::Float, Device::Cpu);
    let q_raw = Tensor::randn([n, dim], opts);
    let k = normalize(&Tensor::randn([n, dim], opts), 1);
    let queue = normalize(&Tensor::randn([dim, queue_size], opts), 0);
    let labels = Tensor::randint(classes, [n], (Kind::Int64, Device::Cpu));
    let vs = nn::VarStore::new(Device::Cpu);
    let head = GeoHead::new(&(vs.root() / "geo_head"), dim, classes);
    let (moco, _) = info_nce(&normalize(&q_raw, 1), &k, &queue, t);
    let geo = head.forward(&q_raw).cross_entropy_for_logits(&labels);
    let vars = vs.variables();
    for (name, tensor) in [
        ("q_raw.npy", q_raw),
        ("k.npy", k),
        ("queue.npy", queue),
        ("labels.npy", labels.to_kind(Kind::Float)),
        ("geo_w.npy", vars["geo_head.1.weight"].detach()),
        ("geo_b.npy", vars["geo_head.1.bias"].detach()),
        (
            "geossl.npy",
            Tensor::stack(&[moco.detach(), geo.detach()], 0),
        ),
    ] {
        save_npy(&d.join(name), &tensor);
    }
    run_python("loss_reference.py", [d.to_path_buf(), t.to_string().into()]);
}

/// geossl's evaluation view (Resize + CenterCrop through the real decode
/// path) against torchvision's on PIL images, its crop geometry against
/// torchvision's for every image size in a grid, and RandomResizedCrop's
/// fallback against torchvision's get_params (tolerance and why: see
/// tests/python/eval_view_reference.py).
#[test]
fn the_evaluation_view_is_torchvisions() {
    use geossl::data::augment::{center_crop_geometry, random_resized_crop_params, ViewTransform};
    use geossl::data::decode::{decode_file, DecodeOptions};
    use rand::{Rng, SeedableRng};
    use std::fmt::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    // (width, height, size): the reported 815 x 380 at 64, both
    // orientations, odd and even excesses, an upscaled image, the default
    // pre-step (448) on the reported 597 x 478 crop.
    let cases = [
        (815, 380, 64),
        (380, 815, 64),
        (130, 67, 64),
        (67, 131, 64),
        (64, 64, 64),
        (45, 38, 32),
        (37, 50, 32),
        (101, 33, 32),
        (70, 35, 32),
        (20, 27, 32),
        (300, 227, 224),
        (227, 301, 224),
        (480, 225, 224),
        (257, 640, 224),
        (597, 478, 448),
    ];
    let mut views = String::from("png,size,npy\n");
    for (i, &(w, h, size)) in cases.iter().enumerate() {
        // Noise over a gradient: a one-pixel shift changes many values.
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let n: u8 = rng.gen_range(0..64);
            image::Rgb([
                (x * 191 / w) as u8 + n,
                (y * 191 / h) as u8 + n,
                ((x + y) % 64) as u8 * 3 + n,
            ])
        });
        let png = format!("view{i}.png");
        img.save(d.join(&png)).unwrap();
        let decoded = decode_file(&d.join(&png), None, &DecodeOptions::default()).unwrap();
        let mut out = vec![0f32; 3 * (size * size) as usize];
        ViewTransform::CenterCrop { size }
            .apply_into(&decoded, &mut rng, &mut out)
            .unwrap();
        let npy = format!("view{i}.npy");
        npy::write(&d.join(&npy), &[3, size as usize, size as usize], &out).unwrap();
        writeln!(views, "{png},{size},{npy}").unwrap();
    }
    std::fs::write(d.join("views.csv"), views).unwrap();

    let mut boxes = String::from("width,height,size,resized_width,resized_height,left,top\n");
    let others = [1, 2, 7, 31, 100, 223, 380, 478, 815];
    for a in 1..=400u32 {
        for b in others {
            for (w, h) in [(a, b), (b, a)] {
                for size in [32, 64, 224, 448] {
                    let g = center_crop_geometry(w, h, size);
                    let (nw, nh) = g.resized;
                    writeln!(boxes, "{w},{h},{size},{nw},{nh},{},{}", g.left, g.top).unwrap();
                }
            }
        }
    }
    std::fs::write(d.join("boxes.csv"), boxes).unwrap();

    // Ratio ranges no draw can meet: tall images with aspects of 2..2.5 and
    // wide ones with 0.4..0.5 (90 % of the area at that aspect overflows
    // the short side), so both sides take the fallback. From 2 px: on a
    // 1 px side torchvision's fallback rounds 0.5 to an empty crop, which
    // geossl keeps at 1 px.
    let mut rrc = String::from(
        "width,height,scale_lo,scale_hi,ratio_lo,ratio_hi,top,left,crop_height,crop_width\n",
    );
    for a in 2..=40u32 {
        for (w, h, ratio) in [(a, a + 7, (2.0, 2.5)), (a + 7, a, (0.4, 0.5))] {
            let scale = (0.9, 1.0);
            let (top, left, ch, cw) = random_resized_crop_params(w, h, scale, ratio, &mut rng);
            writeln!(
                rrc,
                "{w},{h},{},{},{},{},{top},{left},{ch},{cw}",
                scale.0, scale.1, ratio.0, ratio.1
            )
            .unwrap();
        }
    }
    std::fs::write(d.join("rrc.csv"), rrc).unwrap();
    run_python("eval_view_reference.py", [d]);
}

/// The acceptance of multispectral export: a 4-band run exports conv1 as
/// [64, 4, 7, 7] with its input in the metadata, loads into torchvision
/// (`conv1 = Conv2d(4, 64, 7, 2, 3, bias=False)`) and timm (`in_chans=4`)
/// and gives there the features of `geossl embed` on the same images.
#[test]
fn a_multispectral_export_loads_into_torchvision_and_timm_with_the_features_of_embed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = four_band_scenes(d, 8);
    let run = d.join("run");
    geossl()
        .args(["pretrain", "--manifest"])
        .arg(&manifest)
        .args([
            "--method",
            "moco-tp",
            "--arch",
            "resnet18",
            "--image-size",
            "32",
        ])
        .args(["--bands", "all", "--radiometry", "scale:10000"])
        .args(["--epochs", "1", "--batch-size", "4", "--moco-k", "8"])
        .args(["--bn-groups", "2", "--threads", "2", "--out"])
        .arg(&run)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "input: 4 band(s) 1,2,3,4 (B02, B03, B04, B08), radiometry scale:10000",
        ));
    let out = d.join("encoder.safetensors");
    geossl()
        .args(["export", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let meta = geossl::interop::export::read_metadata(&out).unwrap();
    assert_eq!(meta["in_chans"], "4");
    assert_eq!(meta["bands"], "1,2,3,4");
    assert_eq!(meta["band_names"], r#"["B02","B03","B04","B08"]"#);
    assert_eq!(meta["radiometry"], "scale:10000");
    let spec: InputSpec = serde_json::from_str(&meta["input_spec"]).unwrap();
    assert_eq!(format!("{:?}", spec.mean), meta["normalize_mean"]);
    assert_ne!(spec.mean, InputSpec::rgb().mean, "not ImageNet's");
    let conv1 = &Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "conv1.weight")
        .unwrap()
        .1;
    assert_eq!(conv1.size(), vec![64, 4, 7, 7]);

    let embedded = d.join("emb.npy");
    embed(&run, &manifest, &embedded)
        .assert()
        .success()
        .stdout(predicate::str::contains("input: 4 band(s)"));
    // The images embed read: the checkpoint's input, its evaluation view.
    let encoder = Encoder::load(&run, Device::Cpu).unwrap();
    assert_eq!(encoder.input, spec);
    let images = eval_view_batch(&manifest, (0..8).collect(), 32, &encoder.input);
    assert_eq!(images.size(), vec![8, 4, 32, 32]);
    let x = d.join("x.npy");
    save_npy(&x, &images);
    run_python("multispectral_export.py", [out, x, embedded]);
}

/// timm and torchvision take a 13-band ResNet-50 export too (no training:
/// a random encoder with moved BN statistics, its features in eval mode).
#[test]
fn a_thirteen_band_resnet50_loads_into_torchvision_and_timm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tch::manual_seed(5);
    let mut spec = InputSpec::rgb();
    spec.bands = (1..=13).collect();
    spec.band_names = (1..=13).map(|b| format!("B{b:02}")).collect();
    spec.mean = vec![0.5; 13];
    spec.std = vec![0.25; 13];
    spec.rgb = None;
    let cfg = ResNetConfig {
        arch: Arch::Resnet50,
        width: 64,
        small_input: false,
        in_channels: 13,
    };
    let encoder = Encoder::random(cfg, spec.clone(), 32, Device::Cpu);
    randomise_bn(&encoder);
    let x = Tensor::randn([3, 13, 32, 32], (Kind::Float, Device::Cpu));
    let features = tch::no_grad(|| encoder.backbone.forward_t(&x, false));
    let mut tensors: BTreeMap<String, Tensor> = encoder.vs.variables().into_iter().collect();
    add_num_batches_tracked(&mut tensors, 0);
    let meta: BTreeMap<String, String> = [
        ("arch", "resnet50".to_string()),
        ("small_input", "false".to_string()),
        ("in_chans", "13".to_string()),
        (
            "band_names",
            serde_json::to_string(&spec.band_names).unwrap(),
        ),
        ("normalize_mean", format!("{:?}", spec.mean)),
        ("normalize_std", format!("{:?}", spec.std)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let weights = d.join("w.safetensors");
    write_safetensors(&weights, &tensors, &meta).unwrap();
    let files = ["x.npy", "features.npy"].map(|f| d.join(f));
    save_npy(&files[0], &x);
    save_npy(&files[1], &features);
    let printed = run_python(
        "multispectral_export.py",
        [weights, files[0].clone(), files[1].clone()],
    );
    assert!(printed.contains("resnet50 in_chans=13 timm"), "{printed}");
}
