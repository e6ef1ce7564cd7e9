//! The multispectral chain end to end, as `geossl demo --bands 13` runs it
//! at a test's size: `synth --bands 13`, `index stats`, `pretrain --bands
//! all --radiometry stats`, `probe`, `export` of a 13-band encoder, which
//! then loads into torchvision and timm with 13 input channels and gives
//! there the features of `geossl embed`.

mod common;

use common::{embed, eval_view_batch, geossl, run_python, save_npy};
use geossl::data::Manifest;
use geossl::eval::Encoder;
use predicates::prelude::*;

#[test]
fn thirteen_band_world_pretrains_probes_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    geossl()
        .args(["synth", "--bands", "13", "--out"])
        .arg(&data)
        .args(["--locations", "40", "--max-views", "3", "--size", "16"])
        .assert()
        .success()
        .stdout(predicate::str::contains("(13 bands)"));
    let manifest = data.join("manifest.csv");
    geossl()
        .args(["index", "stats"])
        .arg(&manifest)
        .assert()
        .success()
        .stdout(predicate::str::contains("B8A").and(predicate::str::contains("B12")));
    let stats = geossl::data::bands::BandStats::load_for(&manifest)
        .unwrap()
        .expect("index stats writes beside the manifest");
    assert_eq!(stats.bands.len(), 13);
    // Water, vegetation and soil alike: NIR (B08) above the blue (B02) on
    // average, the cirrus band (B10) darkest.
    let mean = |name: &str| stats.bands.iter().find(|b| b.name == name).unwrap().mean;
    assert!(mean("B08") > mean("B02"), "{stats:?}");
    assert!(stats.bands.iter().all(|b| b.mean >= mean("B10")));

    let run = d.join("run");
    // Tiny moco-tp on every band with the stats radiometry, `epochs` long.
    let pretrain = |epochs: &str| {
        let mut cmd = geossl();
        cmd.args(["pretrain", "--manifest"])
            .arg(&manifest)
            .args([
                "--method",
                "moco-tp",
                "--arch",
                "resnet18",
                "--image-size",
                "16",
            ])
            .args(["--bands", "all", "--radiometry", "stats"])
            .args(["--epochs", epochs, "--batch-size", "8", "--moco-k", "16"])
            .args(["--bn-groups", "2", "--threads", "2", "--out"])
            .arg(&run);
        cmd
    };
    pretrain("1")
        .assert()
        .success()
        .stderr(predicate::str::contains("input: 13 band(s)"));
    // Band statistics recomputed since (another sample) do not stop the
    // run's resume: it reads images with the input it recorded.
    geossl()
        .args(["index", "stats", "--sample", "7"])
        .arg(&manifest)
        .assert()
        .success();
    assert_ne!(
        geossl::data::bands::BandStats::load_for(&manifest).unwrap(),
        Some(stats.clone())
    );
    pretrain("2").arg("--resume").assert().success();
    geossl()
        .args(["probe", "--checkpoint"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .args([
            "--cache-features",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(d.join("probe.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains("top-1"));
    let out = d.join("encoder.safetensors");
    geossl()
        .args(["export", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let meta = geossl::interop::export::read_metadata(&out).unwrap();
    assert_eq!(meta["in_chans"], "13");
    assert_eq!(meta["radiometry"], "stats");
    assert!(meta["band_names"].contains("B8A"), "{}", meta["band_names"]);
    let conv1 = tch::Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "conv1.weight")
        .unwrap()
        .1;
    assert_eq!(conv1.size(), vec![64, 13, 7, 7]);

    // torchvision (conv1 = Conv2d(13, 64, 7, 2, 3)) and timm (in_chans=13)
    // on the images `embed` reads (the checkpoint's input, its evaluation
    // view) give `embed`'s features.
    let embedded = d.join("emb.npy");
    embed(&run, &manifest, &embedded).assert().success();
    let encoder = Encoder::load(&run, tch::Device::Cpu).unwrap();
    assert_eq!(encoder.input.channels(), 13);
    let rows: Vec<usize> = (0..Manifest::read(&manifest).unwrap().records.len()).collect();
    let images = eval_view_batch(&manifest, rows, 16, &encoder.input);
    let x = d.join("x.npy");
    let shape: Vec<usize> = images.size().iter().map(|&n| n as usize).collect();
    assert_eq!(shape[1], 13);
    save_npy(&x, &images);
    let printed = run_python("multispectral_export.py", [&out, &x, &embedded]);
    assert!(printed.contains("in_chans=13 timm"), "{printed}");
}
