//! `export` and `import`: weights to and from the PyTorch world.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A pretraining run folder (its latest checkpoint), a checkpoint folder, or a classifier folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// What to export from a pretraining checkpoint.
    #[arg(long, value_parser = super::choice::<crate::interop::export::Part>(), default_value = "backbone")]
    pub part: crate::interop::export::Part,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The checkpoint, e.g. moco_v2_200ep.pth.tar.
    #[arg(long)]
    pub pth: PathBuf,
    /// New run folder that receives checkpoints/epoch-NNNN and config.toml.
    #[arg(long)]
    pub out: PathBuf,
}

pub(super) fn export_cmd(a: &ExportArgs) -> anyhow::Result<()> {
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
    println!(
        "method: {} ({})",
        done.method.name(),
        crate::interop::import::method_note(done.method)
    );
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
