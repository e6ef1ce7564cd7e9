//! `export` and `import`: weights to and from the PyTorch world.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A pretraining run folder (its latest checkpoint), a checkpoint folder, a classifier folder, or (--format safetensors) a torchvision/timm backbone file (.pth, .safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output .safetensors file, or (--format hf) the repository folder: new, empty, or a previous hf export (replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// What to export from a pretraining checkpoint (--format hf: backbone only).
    #[arg(long, value_parser = super::choice::<crate::interop::export::Part>(), default_value = "backbone")]
    pub part: crate::interop::export::Part,
    /// The file layout.
    #[arg(long, value_parser = super::choice::<crate::interop::hub::ExportFormat>(), default_value = "safetensors")]
    pub format: crate::interop::hub::ExportFormat,
    /// --format hf: the model card's license (an SPDX id or Hub license name, e.g. apache-2.0) [default: left for you to fill in].
    #[arg(long)]
    pub license: Option<String>,
    /// --format hf: a `geossl finetune` folder outside the run folder whose test results the card lists (repeatable; those inside the run folder are found anyway).
    #[arg(long)]
    pub finetune: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A MoCo/GASSL checkpoint (torch.save, zip or legacy format, e.g. moco_v2_800ep_pretrain.pth.tar) or a torchvision/timm/torchgeo backbone file (.pth, .safetensors).
    #[arg(long)]
    pub pth: PathBuf,
    /// New run folder that receives checkpoints/epoch-NNNN and config.toml.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn export_cmd(a: &ExportArgs) -> anyhow::Result<()> {
    use crate::interop::hub::ExportFormat;
    if a.format == ExportFormat::Hf {
        return export_hf_cmd(a);
    }
    anyhow::ensure!(
        a.license.is_none() && a.finetune.is_empty(),
        "--license and --finetune describe a model card: they go with --format hf"
    );
    let done = crate::interop::export::export(&a.checkpoint, &a.out, a.part)?;
    println!(
        "wrote {} tensors to {} ({})",
        done.tensors,
        a.out.display(),
        done.metadata
            .iter()
            .filter(|(k, _)| ["part", "method", "arch", "epochs"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // What a multispectral export reads (the metadata holds it all).
    let input: Option<crate::data::bands::InputSpec> = done
        .metadata
        .get("input_spec")
        .and_then(|s| serde_json::from_str(s).ok());
    if let Some(note) = input.as_ref().and_then(crate::train::config::input_note) {
        println!(
            "{note}; conv1 takes {} channels",
            input.as_ref().map_or(3, |i| i.channels())
        );
    }
    Ok(())
}

fn export_hf_cmd(a: &ExportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.part == crate::interop::export::Part::Backbone,
        "--format hf exports the backbone (what timm and torchvision build); --part {} goes with --format safetensors",
        crate::settings::choice_name(a.part)
    );
    let options = crate::interop::hub::HubOptions {
        license: a.license.clone(),
        finetune: a.finetune.clone(),
    };
    let done = crate::interop::hub::export_hf(&a.checkpoint, &a.out, &options)?;
    println!(
        "wrote a Hugging Face model repository to {}: {} ({} tensors, {} input channels, {}-d features), {}, {} with {} evaluation result(s)",
        done.dir.display(),
        crate::interop::hub::WEIGHTS,
        done.tensors,
        done.in_chans,
        done.num_features,
        crate::interop::hub::CONFIG,
        crate::interop::hub::CARD,
        done.results
    );
    println!(
        "timm: timm.create_model(\"local-dir:{}\", pretrained=True), or \"{}\" with num_classes=0 and pretrained_cfg_overlay=dict(file=...)",
        done.dir.display(),
        done.arch
    );
    Ok(())
}

pub(super) fn import_cmd(a: &ImportArgs) -> anyhow::Result<()> {
    let done = crate::interop::import::import(&a.pth, &a.out)?;
    println!(
        "imported {} tensors ({}, epoch {}, geo head: {}) into {}",
        done.tensors,
        done.arch.name(),
        done.epoch,
        done.geo_classes
            .map_or("none".to_string(), |k| format!("{k} classes")),
        done.checkpoint.display(),
    );
    println!("file: {}", done.layout);
    println!("method: {} ({})", done.method.name(), done.method_note);
    println!("ignored: {}", ignored_note(&done.ignored));
    Ok(())
}

/// BN step counters are expected to be dropped and are counted; anything
/// else is named.
fn ignored_note(ignored: &[String]) -> String {
    let (counters, other): (Vec<&String>, Vec<&String>) = ignored
        .iter()
        .partition(|n| n.ends_with("num_batches_tracked"));
    let mut parts: Vec<String> = other.iter().map(|s| s.to_string()).collect();
    if !counters.is_empty() {
        parts.push(format!(
            "{} BN num_batches_tracked counters (no counterpart in geossl)",
            counters.len()
        ));
    }
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join("; ")
    }
}
