//! `geossl export --format hf` (a Hugging Face model repository folder) and
//! `geossl embed --format parquet`, checked by their readers: timm,
//! torchvision, pandas and pyarrow in the project's virtualenv
//! (tests/python/hub_export.py).

use std::path::{Path, PathBuf};

use geossl::eval::Encoder;
use geossl::formats::npy;
use predicates::prelude::*;
use tch::Device;

mod common;
use common::{
    embed, eval_view_batch, geossl, import, json, run_python, save_npy, tiny_pretrain, world,
};

fn export_hf(run: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    geossl()
        .args(["export", "--format", "hf", "--checkpoint"])
        .arg(run)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

/// A resnet18 at width 64 with the 7x7 stem (what timm and torchvision
/// build), 1 epoch of MoCo-v2+TP+Geo at 32 px on a small synthetic world,
/// probed, kNN-evaluated and fine-tuned.
fn hub_run(d: &Path) -> (PathBuf, PathBuf) {
    let manifest = world(d, 12, 40, 3);
    let run = d.join("run");
    pretrain(&manifest, &run)
        .args(["--epochs", "1"])
        .assert()
        .success();
    for (cmd, extra) in [
        ("probe", &["--cache-features", "--epochs", "2"][..]),
        ("knn", &["--k", "5"][..]),
    ] {
        geossl()
            .args([cmd, "--checkpoint"])
            .arg(&run)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--device", "cpu"])
            .args(extra)
            .assert()
            .success();
    }
    // A finetune folder inside the run folder: the card finds it.
    finetune(&run, &manifest, &run.join("ft"), &[]);
    (manifest, run)
}

/// `geossl pretrain` of [`hub_run`] into `run`, without `--epochs`.
fn pretrain(manifest: &Path, run: &Path) -> assert_cmd::Command {
    let mut cmd = geossl();
    cmd.args(["pretrain", "--manifest"])
        .arg(manifest)
        .args([
            "--method",
            "moco-tp-geo",
            "--arch",
            "resnet18",
            "--image-size",
            "32",
        ])
        .args(["--batch-size", "4", "--moco-k", "8"])
        .args(["--bn-groups", "2", "--threads", "2", "--out"])
        .arg(run);
    cmd
}

/// `geossl finetune` of `checkpoint` for 1 epoch into `out`.
fn finetune(checkpoint: &Path, manifest: &Path, out: &Path, extra: &[&str]) {
    geossl()
        .args(["finetune", "--checkpoint"])
        .arg(checkpoint)
        .arg("--manifest")
        .arg(manifest)
        .args(["--epochs", "1", "--device", "cpu", "--out"])
        .arg(out)
        .args(extra)
        .assert()
        .success();
}

/// The export loads in timm (file overlay and `local-dir:`) and torchvision
/// with identical features, equal to `geossl embed`'s within 1e-4 x the
/// largest feature; its card names the method and holds the run's figures.
#[test]
fn a_hub_export_loads_in_timm_and_torchvision_and_its_card_holds_the_runs_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (manifest, run) = hub_run(d);
    let repo = d.join("repo");
    export_hf(&run, &repo, &["--license", "cc-by-4.0"])
        .success()
        .stdout(predicate::str::contains("with 3 evaluation result(s)"));
    let mut names: Vec<String> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["README.md", "config.json", "model.safetensors"]);

    // geossl's own features of the first 8 images, and those images as the
    // evaluation view gives them (Resize + CenterCrop 32, ImageNet's mean/std).
    let embedded = d.join("emb.npy");
    embed(&run, &manifest, &embedded).assert().success();
    let (shape, values) = npy::read::<f32>(&embedded).unwrap();
    let first8 = d.join("first8.npy");
    npy::write(&first8, &[8, shape[1]], &values[..8 * shape[1]]).unwrap();
    let encoder = Encoder::load(&run, Device::Cpu).unwrap();
    let images = eval_view_batch(&manifest, (0..8).collect(), 32, &encoder.input);
    let x = d.join("x.npy");
    save_npy(&x, &images);
    let repo_arg = repo.clone().into_os_string();
    run_python(
        "hub_export.py",
        ["repo".into(), repo_arg, x.into(), first8.into()],
    );

    // The card: front matter, the method, and the run's own figures.
    let card = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let front = card.split("---\n").nth(1).unwrap();
    for line in ["license: cc-by-4.0", "library_name: timm", "- moco-tp-geo"] {
        assert!(front.lines().any(|l| l == line), "{line} not in\n{front}");
    }
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let state = json(
        &run.join("checkpoints")
            .join(latest.trim())
            .join("state.json"),
    );
    let m = geossl::data::Manifest::read(&manifest).unwrap();
    let train = m
        .records
        .iter()
        .filter(|r| r.split == Some(geossl::data::Split::Train));
    let places: std::collections::BTreeSet<_> = train.map(|r| r.location_id.clone()).collect();
    let pct = |v: &serde_json::Value| format!("{:.2}%", 100.0 * v.as_f64().unwrap());
    let expected = [
        "MoCo-v2+TP+Geo".to_string(),
        "Geography-Aware Self-Supervised Learning".to_string(),
        format!("1 of 1 epoch, {} steps, batch size 4", state["step"]),
        "lr 0.03 x 4/256 = 0.00046875".to_string(),
        "from scratch".to_string(),
        "| linear probe | epoch 1 |".to_string(),
        "**Geo-location classes:** 3".to_string(),
        format!("**Images:** {};", state["rows"]),
        format!("**places:** {}", places.len()),
        "0.485, 0.456, 0.406".to_string(),
        pct(&json(&run.join("probe.json"))["top1"]),
        pct(&json(&run.join("knn.json"))["top1"]),
        format!(
            "| fine-tuned (1 epoch) | epoch 1 | val | {} |",
            json(&run.join("ft/report.json"))["test_images"]
        ),
        "num_classes=0".to_string(),
        "s, the sum of the durations of 1 epoch in metrics.jsonl".to_string(),
        "s over 1 launch (run.json".to_string(),
    ];
    for want in &expected {
        assert!(
            card.contains(want.as_str()),
            "{want} not in the card:\n{card}"
        );
    }

    // Exporting again replaces the previous export; a foreign folder is
    // refused and left as it was.
    export_hf(&run, &repo, &[]).success();
    let card = std::fs::read_to_string(repo.join("README.md")).unwrap();
    assert!(card.contains("# license: fill in"), "{card}");
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    export_hf(&run, &other, &[])
        .failure()
        .stderr(predicate::str::contains(
            "not a previous geossl hub export (it holds notes.txt)",
        ));
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "mine"
    );
    provenance(d, &manifest, &run);
}

/// Only fine-tunes of this run count; evaluations of another epoch say so;
/// imported and `--init` runs say where their weights came from.
fn provenance(d: &Path, manifest: &Path, run: &Path) {
    let repo = d.join("repo");
    let card = || std::fs::read_to_string(repo.join("README.md")).unwrap();
    // A from-scratch fine-tune inside the run folder is skipped, named on
    // stderr; passed with --finetune it is refused.
    let scratch = run.join("scratch");
    finetune(run, manifest, &scratch, &["--from-scratch"]);
    export_hf(run, &repo, &[])
        .success()
        .stderr(predicate::str::contains(format!(
            "{}: skipped, fine-tuned from random initialisation",
            scratch.display()
        )));
    let text = card();
    assert!(!text.contains(&scratch.display().to_string()), "{text}");
    let outside = d.join("scratch");
    std::fs::rename(&scratch, &outside).unwrap();
    export_hf(run, &repo, &["--finetune", outside.to_str().unwrap()])
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}: fine-tuned from random initialisation (classifier.json init), not from this run",
            outside.display()
        )));

    // A second epoch: the epoch-1 evaluations are marked, with a warning;
    // a fine-tune of this run outside its folder counts.
    let ft = d.join("ft");
    std::fs::rename(run.join("ft"), &ft).unwrap();
    pretrain(manifest, run)
        .args(["--resume", "--epochs", "2"])
        .assert()
        .success();
    let stale = "epoch 1; the exported checkpoint is epoch 2";
    export_hf(run, &repo, &["--finetune", ft.to_str().unwrap()])
        .success()
        .stderr(predicate::str::contains(format!(
            "warning: {}: evaluated the checkpoint of epoch 1; the exported checkpoint is epoch 2",
            run.join("probe.json").display()
        )));
    for want in [
        format!("| linear probe | {stale} |"),
        format!("| kNN | {stale} |"),
        format!("| fine-tuned (1 epoch) | {stale} |"),
        "2 of 2 epochs".to_string(),
        "of 2 epochs in metrics.jsonl".to_string(),
        "over 2 launches".to_string(),
    ] {
        assert!(card().contains(&want), "{want} not in\n{}", card());
    }

    // An import of the run's backbone: no training details, method unknown.
    let file = d.join("backbone.safetensors");
    geossl()
        .args(["export", "--checkpoint"])
        .arg(run)
        .arg("--out")
        .arg(&file)
        .assert()
        .success();
    let imported = d.join("imported");
    import(&file, &imported);
    export_hf(&imported, &repo, &["--finetune", ft.to_str().unwrap()])
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}: fine-tuned from {}",
            ft.display(),
            run.display()
        )));
    export_hf(&imported, &repo, &[]).success();
    let text = card();
    let from = format!("imported from `{}` by geossl import", file.display());
    for want in [
        from.as_str(),
        "method it was trained with is unknown",
        "not recorded in the file",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    for absent in [
        "pretrained with",
        "pretrained by",
        "**Data:**",
        "**Budget:**",
        "**MoCo:**",
        "- moco\n",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    let geo = &json(&repo.join("config.json"))["geossl"];
    assert_eq!(geo["imported_from"], file.display().to_string());
    assert_eq!(geo["method"], "unknown");
    assert!(geo.get("manifest").is_none(), "{geo}");

    // A run started with --init FILE says so.
    let init = d.join("init");
    pretrain(manifest, &init)
        .args(["--epochs", "1", "--init"])
        .arg(&file)
        .assert()
        .success();
    export_hf(&init, &repo, &[]).success();
    let text = card();
    let from = format!("initialised from `{}` (pretrain --init)", file.display());
    assert!(
        text.contains(&from) && !text.contains("from scratch"),
        "{text}"
    );
    let geo = &json(&repo.join("config.json"))["geossl"];
    assert_eq!(geo["init"], file.display().to_string());
}

/// A built-in world in `d` and a tiny one-epoch pretraining of it,
/// `d/run`: (manifest, run).
fn one_epoch_run(d: &Path) -> (PathBuf, PathBuf) {
    let manifest = world(d, 6, 24, 2);
    let run = d.join("run");
    tiny_pretrain(&manifest, &run)
        .args(["--epochs", "1"])
        .assert()
        .success();
    (manifest, run)
}

/// Encoders no timm/torchvision builder holds, and parts other than the
/// backbone, are refused for --format hf, writing nothing.
#[test]
fn hub_export_refuses_what_timm_and_torchvision_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (manifest, run) = one_epoch_run(d);
    let repo = d.join("repo");
    export_hf(&run, &repo, &[]).failure().stderr(
        predicate::str::contains("cannot export --format hf")
            .and(predicate::str::contains("resnet18 at width 4")),
    );
    let wide = d.join("wide");
    tiny_pretrain(&manifest, &wide)
        .args(["--epochs", "1", "--width", "64"])
        .assert()
        .success();
    export_hf(&wide, &repo, &[])
        .failure()
        .stderr(predicate::str::contains("small-input stem"));
    export_hf(&wide, &repo, &["--part", "query"])
        .failure()
        .stderr(predicate::str::contains("--format hf exports the backbone"));
    assert!(!repo.exists());
    let file = d.join("w.safetensors");
    geossl()
        .args(["export", "--checkpoint"])
        .arg(&run)
        .arg("--out")
        .arg(&file)
        .args(["--license", "mit"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("go with --format hf"));
}

/// `embed --format parquet` holds the rows and features of the default
/// `.npy` + `.csv` output, as pandas and pyarrow read them.
#[test]
fn embed_parquet_equals_the_npy_and_csv_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (manifest, run) = one_epoch_run(d);
    let embed = |out: &Path, extra: &[&str]| embed(&run, &manifest, out).args(extra).assert();
    let npy = d.join("out/emb.npy");
    embed(&npy, &[]).success();
    let parquet = d.join("out/emb.parquet");
    embed(&parquet, &["--format", "parquet"])
        .success()
        .stdout(predicate::str::contains("(column embedding) to"));
    assert!(!d.join("out/emb.skipped.csv").exists());
    run_python(
        "hub_export.py",
        [
            "parquet".into(),
            parquet.into_os_string(),
            npy.clone().into(),
            d.join("out/emb.csv").into(),
        ],
    );
    embed(&npy, &["--format", "parquet"])
        .failure()
        .stderr(predicate::str::contains(
            "must end in .parquet with --format parquet",
        ));
}
