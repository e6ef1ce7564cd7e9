//! The `geossl` command line: argument parsing and dispatch, nothing more.
//! Each command lives in the library module of its concept.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod choice;
mod data;
mod demo;
mod eval;
mod interop;
mod pretrain;
mod report;

pub use bench::*;
pub use choice::{choice, thread_count};
pub use data::*;
pub use demo::*;
pub use eval::*;
pub use interop::*;
pub use pretrain::*;
pub use report::*;

#[derive(Parser, Debug)]
#[command(
    name = "geossl",
    version,
    about = "Geography-aware self-supervised learning on satellite imagery"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate the built-in synthetic geo-temporal dataset (images + manifest.csv).
    Synth(SynthArgs),
    /// Validate and summarise a manifest (--check), or build one from fMoW or CSV metadata.
    Index(IndexArgs),
    /// k-means the manifest's locations on the sphere and write a `geo_cluster` column.
    Cluster(ClusterArgs),
    /// Pack a manifest's crops, pre-resized, into WebDataset tar shards with an index, for training at speed (`--packed DIR`).
    Pack(PackArgs),
    /// Pretrain an encoder: MoCo-v2, +TP (temporal positives), +Geo (geo-location head), +TP+Geo.
    Pretrain(Box<PretrainArgs>),
    /// Linear probe of a frozen encoder (the paper's protocol); prints and writes a report.
    Probe(ProbeArgs),
    /// Train a whole classifier: fine-tune an encoder, or train from scratch (baselines).
    Finetune(FinetuneArgs),
    /// Weighted kNN classification on the encoder's normalised features.
    Knn(KnnArgs),
    /// Write the encoder's pooled feature of every row to .npy, with the rows as CSV beside it (or both in one Parquet table: --format parquet).
    Embed(EmbedArgs),
    /// Write an encoder as safetensors with torchvision's names (loads into torchvision.models.resnet*), or (--format hf) as a Hugging Face model repository folder.
    Export(ExportArgs),
    /// Import a PyTorch MoCo/GASSL checkpoint (torch.save, zip or legacy) or a torchvision/timm backbone file as a geossl run; no pickle code is executed.
    Import(ImportArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The method on the built-in dataset: synth, cluster, pretrain the four variants, evaluate them beside the baselines.
    Demo(DemoArgs),
    /// A run as one self-contained HTML page (curves, evaluation, world map of the geo clusters, sample pairs); several runs: a comparison page.
    Report(ReportArgs),
    /// Show the libtorch build, threads and visible CUDA devices.
    Info,
}

pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // tracing-subscriber colours by default, even into a pipe or file.
        .with_ansi(colour_stderr())
        .with_target(false)
        .without_time()
        .try_init();
    // Messages below the CLI name config fields; here they are flags.
    crate::settings::set_namer(|field| format!("--{}", field.replace('_', "-")));
    // Evaluation and pretraining (below interop) read backbone files with it.
    crate::interop::backbone::register();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated as anyhow's `{:#}`, but leaving
/// out a cause whose text the message already holds (errors that name the
/// file and quote their I/O error printed it twice: "m.csv: No such file
/// or directory (os error 2): No such file or directory (os error 2)").
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Colour codes on stderr: only on a terminal, and not when `NO_COLOR` is
/// set (<https://no-color.org>).
fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Synth(a) => synth_cmd(&a),
        Command::Index(a) => index_cmd(a),
        Command::Cluster(a) => cluster_cmd(&a),
        Command::Pack(a) => pack_cmd(&a),
        Command::Pretrain(a) => pretrain_cmd(&a),
        Command::Probe(a) => probe_cmd(&a),
        Command::Finetune(a) => finetune_cmd(&a),
        Command::Knn(a) => knn_cmd(&a),
        Command::Embed(a) => embed_cmd(&a),
        Command::Export(a) => export_cmd(&a),
        Command::Import(a) => import_cmd(&a),
        Command::Bench(b) => bench_cmd(b),
        Command::Demo(a) => demo_cmd(&a),
        Command::Report(a) => report_cmd(&a),
        Command::Info => info_cmd(),
    }
}

fn info_cmd() -> anyhow::Result<()> {
    println!("geossl {}", env!("CARGO_PKG_VERSION"));
    let cuda_library = match crate::model::torch_ext::load_cuda() {
        Ok(Some(lib)) => lib.display().to_string(),
        Ok(None) => "none (a CPU-only libtorch)".to_string(),
        Err(e) => format!("failed to load: {e}"),
    };
    println!("libtorch CUDA lib  {cuda_library}");
    // After CUDA: the NCCL library links libtorch_cuda.so (bench/gpu_ddp.sh
    // checks this line before training).
    let nccl = match crate::dist::nccl::library() {
        Ok(lib) => format!("loaded {} ({})", lib.path.display(), lib.built_for),
        Err(e) => format!("unavailable: {e}"),
    };
    println!("NCCL backend       {nccl}");
    println!("libtorch threads   {}", tch::get_num_threads());
    println!("CUDA devices       {}", tch::Cuda::device_count());
    println!("cuDNN available    {}", tch::Cuda::cudnn_is_available());
    println!("rayon threads      {}", rayon::current_num_threads());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let read = crate::data::Manifest::read(std::path::Path::new("/nonexistent/m.csv"));
        let e = anyhow::Error::from(read.unwrap_err());
        assert_eq!(
            error_text(&e),
            "/nonexistent/m.csv: No such file or directory (os error 2)"
        );
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::from(io).context("writing m.csv");
        assert_eq!(error_text(&e), "writing m.csv: disk on fire");
    }
}
