//! `geossl export --format hf`: a folder laid out as a Hugging Face model
//! repository of timm, so that it can be pushed as it is
//! (`huggingface-cli upload USER/REPO DIR`) or loaded from disk:
//!
//! - `model.safetensors`: the query encoder's backbone in torchvision/timm
//!   names without `fc` (the `--part backbone` export, metadata included);
//! - `config.json`: what timm's `save_for_hf` writes (`architecture`,
//!   `num_classes` 0, `num_features`, `global_pool`, `model_args`,
//!   `pretrained_cfg` with `input_size`, `mean`, `std`, `interpolation`,
//!   `crop_pct`, `crop_mode`, `first_conv`, `classifier`), which
//!   `timm.create_model("hf-hub:USER/REPO" | "local-dir:DIR",
//!   pretrained=True)` reads (timm's `_hub._parse_model_cfg`), plus a
//!   `torchvision` section (builder, `in_chans`, what `load_state_dict`
//!   leaves missing) and a `geossl` section (the run's facts);
//! - `README.md`: the model card ([`super::model_card`]).
//!
//! Only encoders that torchvision's and timm's `resnet18/34/50` builders can
//! hold are exported: width 64 and the standard 7x7 stride-2 stem with
//! max-pool. timm's `num_classes=0` builds the backbone without `fc`, which
//! the file then fills exactly (with timm's default 1000 classes and a
//! `file=` overlay its strict load fails on the missing `fc.weight`).
//!
//! The folder is written whole or not at all: into a hidden sibling
//! folder, renamed into place. An existing `DIR` is replaced only when it
//! is empty or a previous geossl hub export (nothing but the three files,
//! a `config.json` with a `geossl` section); anything else is refused, so a
//! clone of a hub repository (`.git/`) or any other folder is never lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::export::{checkpoint_tensors, write_safetensors, Part};
use super::model_card::{self, RunFacts};
use crate::formats::atomic_write::write_string;
use crate::model::resnet::ResNetConfig;
use crate::train::encoder_source::EncoderSource;

/// The weights file of a hub repository (timm's `HF_SAFE_WEIGHTS_NAME`).
pub const WEIGHTS: &str = "model.safetensors";
/// The model configuration (timm's `HF_CONFIG_NAME`... `config.json`).
pub const CONFIG: &str = "config.json";
/// The model card.
pub const CARD: &str = "README.md";

/// The file layout of `geossl export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One `.safetensors` file ([`super::export::export`]).
    Safetensors,
    /// A Hugging Face model repository folder ([`export_hf`]).
    Hf,
}

impl crate::settings::Choice for ExportFormat {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            ExportFormat::Safetensors,
            "safetensors",
            "One .safetensors file (torchvision names, metadata in its header)",
        ),
        (
            ExportFormat::Hf,
            "hf",
            "A Hugging Face model repository folder: model.safetensors, timm's config.json, \
             a model card README.md (the backbone; width 64, 7x7 stem only)",
        ),
    ];
}
crate::settings::choice_by_name!(ExportFormat);

/// What the user adds to the export.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The card's `license:` (an SPDX id or a Hub license name, e.g.
    /// `apache-2.0`); left as a comment to fill in when `None`.
    pub license: Option<String>,
    /// Classifier folders of `geossl finetune` outside the run folder whose
    /// `report.json` the card lists (those inside it are found anyway).
    pub finetune: Vec<PathBuf>,
}

/// What was written.
#[derive(Debug)]
pub struct HubExport {
    pub dir: PathBuf,
    pub tensors: usize,
    pub arch: String,
    /// Pooled feature size (`num_features`).
    pub num_features: i64,
    pub in_chans: usize,
    /// Evaluation reports the card lists.
    pub results: usize,
}

/// Exports the backbone of a pretraining checkpoint (a run folder or a
/// checkpoint folder) as a hub repository folder `out`.
///
/// Errors: a classifier folder, an encoder no torchvision/timm builder can
/// hold ([`check_buildable`]), an `out` that is neither new, empty nor a
/// previous export, and any read or write failure (naming the file).
pub fn export_hf(checkpoint: &Path, out: &Path, options: &HubOptions) -> anyhow::Result<HubExport> {
    let (dir, state) = match EncoderSource::resolve(checkpoint)? {
        EncoderSource::Checkpoint { dir, state } => (dir, state),
        EncoderSource::Classifier { .. } => anyhow::bail!(
            "{}: a classifier folder; --format hf exports a pretraining checkpoint's backbone \
             (export the classifier with --format safetensors)",
            checkpoint.display()
        ),
        EncoderSource::Backbone { .. } => anyhow::bail!(
            "{}: a backbone file, with no run to describe; --format hf exports a pretraining \
             checkpoint (`geossl import --pth FILE --out RUN` makes a run folder of it)",
            checkpoint.display()
        ),
    };
    let resnet = state.config.resnet(&state.input);
    check_buildable(&resnet)
        .with_context(|| format!("{}: cannot export --format hf", checkpoint.display()))?;
    check_target(out)?;
    let (tensors, meta) = checkpoint_tensors(&dir, &state, Part::Backbone)?;
    let facts = RunFacts::gather(&dir, &state, &meta, &options.finetune)?;
    let config = hf_config(&resnet, &facts, &meta, options.license.as_deref());
    let card = model_card::render(&facts, &resnet, options.license.as_deref());
    write_folder(out, |tmp| {
        write_safetensors(&tmp.join(WEIGHTS), &tensors, &meta)?;
        write_string(&tmp.join(CONFIG), &serde_json::to_string_pretty(&config)?)?;
        write_string(&tmp.join(CARD), &card)
    })?;
    Ok(HubExport {
        dir: out.to_path_buf(),
        tensors: tensors.len(),
        arch: resnet.arch.name().to_string(),
        num_features: resnet.feature_dim(),
        in_chans: state.input.channels(),
        results: facts.evaluations.len(),
    })
}

/// Refuses an encoder that torchvision's and timm's `resnet18/34/50`
/// cannot build: their stem is `Conv2d(C, 64, 7, 2, 3)` + max-pool and
/// their stage widths are 64, 128, 256, 512 (x4 for Bottleneck), while
/// geossl's `--width` scales every stage and `--small-input` swaps the stem
/// for a 3x3 stride-1 conv without max-pool.
pub fn check_buildable(resnet: &ResNetConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        resnet.width == 64,
        "the encoder is {} at width {} (conv1 has {} output channels); torchvision's and timm's \
         {} have width 64 and no setting to scale every stage, so no model they build holds \
         these weights (--format safetensors exports them as they are)",
        resnet.arch.name(),
        resnet.width,
        resnet.width,
        resnet.arch.name()
    );
    anyhow::ensure!(
        !resnet.small_input,
        "the encoder has geossl's small-input stem (3x3 stride-1 conv1, no max-pool: \
         --small-input true); torchvision's and timm's {} have the 7x7 stride-2 stem with \
         max-pool, so their model would compute other features from these weights \
         (--format safetensors exports them as they are)",
        resnet.arch.name()
    );
    Ok(())
}

/// timm's `config.json` for the backbone (the keys `save_config_for_hf`
/// writes for `timm.create_model(arch, num_classes=0, in_chans=C)`), plus
/// the `torchvision` and `geossl` sections timm ignores.
///
/// The evaluation view is geossl's (and torchvision's reference eval):
/// `Resize(side)` + `CenterCrop(side)`, bilinear, so `crop_pct` is 1.0.
fn hf_config(
    resnet: &ResNetConfig,
    facts: &RunFacts,
    meta: &BTreeMap<String, String>,
    license: Option<&str>,
) -> serde_json::Value {
    let input = &facts.input;
    let c = input.channels();
    let side = facts.image_size;
    let mut pretrained_cfg = json!({
        "custom_load": false,
        "input_size": [c, side, side],
        "fixed_input_size": false,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": input.mean,
        "std": input.std,
        "num_classes": 0,
        "first_conv": "conv1",
        "classifier": "fc",
        "origin_url": "https://arxiv.org/abs/2011.09980",
        "paper_ids": "arXiv:2011.09980",
        "paper_name": model_card::PAPER,
    });
    if let Some(l) = license {
        pretrained_cfg["license"] = json!(l);
    }
    let arch = resnet.arch.name();
    json!({
        "architecture": arch,
        "num_classes": 0,
        "num_features": resnet.feature_dim(),
        "global_pool": "avg",
        "model_args": {"num_classes": 0, "in_chans": c, "global_pool": "avg"},
        "pretrained_cfg": pretrained_cfg,
        "torchvision": {
            "builder": format!("torchvision.models.{arch}"),
            "in_chans": c,
            "conv1": format!("torch.nn.Conv2d({c}, 64, kernel_size=7, stride=2, padding=3, bias=False)"),
            "missing_keys": ["fc.weight", "fc.bias"],
        },
        "geossl": geossl_section(facts, meta),
    })
}

/// The `geossl` section: the export's metadata, plus where the weights
/// came from: `imported_from` (a `geossl import` run: its `manifest` is a
/// default, not the data, and is left out; a backbone file's `method` is
/// `unknown`) or `init` (`pretrain --init FILE`).
fn geossl_section(facts: &RunFacts, meta: &BTreeMap<String, String>) -> serde_json::Value {
    let mut section = meta_json(meta);
    if let Some(file) = &facts.imported_from {
        section["imported_from"] = json!(file);
        if let Some(map) = section.as_object_mut() {
            map.remove("manifest");
        }
        if facts.method_unknown() {
            section["method"] = json!("unknown");
        }
    }
    if let Some(file) = &facts.init {
        section["init"] = json!(file);
    }
    section
}

/// The safetensors metadata as JSON, its JSON-valued entries parsed (the
/// input spec, band names, normalisation, geo clusters stay structured).
fn meta_json(meta: &BTreeMap<String, String>) -> serde_json::Value {
    let map = meta
        .iter()
        .filter(|(k, _)| k.as_str() != "format")
        .map(|(k, v)| {
            let structured = [
                "input_spec",
                "band_names",
                "normalize_mean",
                "normalize_std",
                "geo_clusters",
            ];
            let value = match serde_json::from_str(v) {
                Ok(parsed) if structured.contains(&k.as_str()) => parsed,
                _ => json!(v),
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Whether `dir` holds nothing but a previous geossl hub export.
fn is_previous_export(dir: &Path, names: &[String]) -> bool {
    names
        .iter()
        .all(|n| [WEIGHTS, CONFIG, CARD].contains(&n.as_str()))
        && std::fs::read_to_string(dir.join(CONFIG))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v.get("geossl").is_some_and(|g| g.is_object()))
}

/// Refuses an `out` that exists and is neither an empty folder nor a
/// previous export (see the module doc).
fn check_target(out: &Path) -> anyhow::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    anyhow::ensure!(
        out.is_dir(),
        "{}: exists and is not a folder (--out names the repository folder to write)",
        out.display()
    );
    let names: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("{}: cannot list", out.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}: cannot list", out.display()))?;
    anyhow::ensure!(
        names.is_empty() || is_previous_export(out, &names),
        "{}: not empty and not a previous geossl hub export (it holds {}); geossl replaces only \
         its own exports: choose a new or empty folder",
        out.display(),
        names.join(", ")
    );
    Ok(())
}

/// Fills a hidden sibling folder of `out` through `fill`, then renames it
/// into place (replacing a previous export), so a crash leaves the old
/// folder or the new one.
fn write_folder(out: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a folder path", out.display()))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("{}: cannot create folder", parent.display()))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let result = fill(&tmp).and_then(|()| {
        if out.exists() {
            std::fs::rename(out, &old)
                .with_context(|| format!("{}: cannot move aside", out.display()))?;
        }
        std::fs::rename(&tmp, out).with_context(|| format!("{}: cannot create", out.display()))
    });
    let _ = std::fs::remove_dir_all(if result.is_ok() { &old } else { &tmp });
    if result.is_err() && old.exists() && !out.exists() {
        let _ = std::fs::rename(&old, out);
    }
    if let Ok(d) = std::fs::File::open(&parent) {
        let _ = d.sync_all();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resnet::Arch;

    fn resnet(width: i64, small_input: bool) -> ResNetConfig {
        ResNetConfig {
            arch: Arch::Resnet18,
            width,
            small_input,
            in_channels: 3,
        }
    }

    #[test]
    fn only_torchvision_shaped_encoders_are_buildable() {
        assert!(check_buildable(&resnet(64, false)).is_ok());
        let narrow = check_buildable(&resnet(8, false)).unwrap_err().to_string();
        assert!(narrow.contains("width 8"), "{narrow}");
        let stem = check_buildable(&resnet(64, true)).unwrap_err().to_string();
        assert!(stem.contains("small-input stem"), "{stem}");
    }

    #[test]
    fn replaces_only_empty_folders_and_previous_exports() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("repo");
        assert!(check_target(&out).is_ok());
        std::fs::create_dir(&out).unwrap();
        assert!(check_target(&out).is_ok());
        std::fs::write(out.join(CONFIG), r#"{"geossl": {"arch": "resnet18"}}"#).unwrap();
        std::fs::write(out.join(CARD), "# card").unwrap();
        assert!(check_target(&out).is_ok());
        std::fs::create_dir(out.join(".git")).unwrap();
        let e = check_target(&out).unwrap_err().to_string();
        assert!(e.contains("not a previous geossl hub export"), "{e}");
        std::fs::remove_dir(out.join(".git")).unwrap();
        std::fs::write(out.join(CONFIG), r#"{"architecture": "resnet18"}"#).unwrap();
        assert!(check_target(&out).is_err());
    }

    #[test]
    fn a_failed_fill_leaves_the_previous_folder() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("repo");
        write_folder(&out, |t| write_string(&t.join(CARD), "first")).unwrap();
        let e = write_folder(&out, |_| anyhow::bail!("disk full"));
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(out.join(CARD)).unwrap(), "first");
        write_folder(&out, |t| write_string(&t.join(CARD), "second")).unwrap();
        assert_eq!(std::fs::read_to_string(out.join(CARD)).unwrap(), "second");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary folders left");
    }
}
