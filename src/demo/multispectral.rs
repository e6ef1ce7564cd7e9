//! `geossl demo --bands 13` (or `--bands 4`): the method on multispectral
//! rasters, end to end. Generates the built-in world as Sentinel-2-like
//! UInt16 GeoTIFFs (`synth --bands N`), computes the per-band statistics
//! (`index stats`), pretrains MoCo-v2 with temporal positives on every band
//! (`--bands all --radiometry stats`: SSL4EO-S12's per-band
//! normalisation), evaluates the encoder (linear probe, kNN) and exports
//! its backbone (conv1 with N input channels) for torchvision and timm.
//! One variant, not the RGB demo's four and baselines: the point is that
//! C bands flow through every stage.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::{evaluate_encoder, fresh_dir, pretrain_config, print_row, DemoBudget, DemoRow};
use crate::data::band_stats::{self, StatsOptions};
use crate::data::bands::{BandSelection, BandStats, Radiometry};
use crate::data::synth::{self, SynthConfig};
use crate::data::Manifest;
use crate::eval::encoder::Encoder;
use crate::eval::task::{Target, Task};
use crate::interop::export::{export, Part};
use crate::train::{Method, RunOptions};

/// What the multispectral demo produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultispectralResult {
    pub seed: u64,
    pub bands: usize,
    pub budget: DemoBudget,
    pub row: DemoRow,
    /// The band statistics beside the manifest.
    pub band_stats: PathBuf,
    /// The exported backbone (safetensors).
    pub export: PathBuf,
    pub total_seconds: f64,
}

/// Runs the multispectral demo with `bands` (4 or 13) per image under
/// `out`, with [`DemoBudget::new`]`(quick)`'s budget.
pub fn run_bands(
    out: &Path,
    quick: bool,
    seed: u64,
    bands: usize,
) -> anyhow::Result<MultispectralResult> {
    let started = Instant::now();
    let budget = DemoBudget::new(quick);
    let data = out.join("data");
    println!(
        "== 1/5 synth --bands {bands}: {} places of the built-in world -> {}",
        budget.locations,
        data.display()
    );
    let config = SynthConfig {
        locations: budget.locations,
        max_views: 8,
        size: 64,
        seed,
        jpeg_quality: 90,
    };
    let m = synth::generate_bands(&data, &config, bands)?;
    println!("wrote {} GeoTIFFs", m.records.len());

    let manifest = m.source.clone();
    println!("\n== 2/5 index stats {}", manifest.display());
    let options = StatsOptions {
        seed,
        quiet: false,
        ..StatsOptions::default()
    };
    let report = band_stats::compute(&m, &manifest.display().to_string(), &options)?;
    print_stats(&report.stats);
    let stats_path = report.stats.save_for(&manifest)?;
    println!("wrote {}", stats_path.display());

    let mut config = pretrain_config(&budget, &manifest, Method::MocoTp, seed);
    config.data.bands = BandSelection::All;
    config.data.radiometry = Radiometry::Stats;
    let run_dir = out.join(format!("pretrain-{bands}band-moco-tp"));
    fresh_dir(&run_dir)?;
    println!(
        "\n== 3/5 pretrain moco-tp --bands all --radiometry stats: ResNet-18 (width {}, small-input stem, conv1 with {bands} channels), {} px, {} epochs -> {}",
        budget.width,
        budget.image_size,
        budget.epochs,
        run_dir.display()
    );
    let t = Instant::now();
    let monitor: &crate::train::BuildMonitor = &crate::eval::knn::KnnMonitor::build;
    crate::train::pretrain(&config, &run_dir, &RunOptions::default(), Some(monitor))?;
    let seconds = t.elapsed().as_secs_f64();

    println!("\n== 4/5 linear probe and kNN on the land-use labels");
    let task = Task::new(
        Arc::new(Manifest::read(&manifest)?),
        Target::Label,
        "train",
        "val",
        None,
    )?;
    let encoder = Encoder::load(&run_dir, Device::Cpu)?;
    anyhow::ensure!(
        encoder.input.channels() == bands,
        "{}: the encoder reads {} channels, not {bands}",
        run_dir.display(),
        encoder.input.channels()
    );
    let row = evaluate_encoder("moco-tp", &encoder, &task, seed, seconds, &run_dir)?;
    print_row(&row);

    let export_path = out.join(format!("encoder-{bands}band.safetensors"));
    println!("\n== 5/5 export -> {}", export_path.display());
    let exported = export(&run_dir, &export_path, Part::Backbone)?;
    // The demo's ResNet-18 is narrow with the small-input stem (to learn on
    // 2 cores), which torchvision's and timm's constructors do not build;
    // say what loads there instead of promising it.
    println!(
        "wrote {} tensors: the demo's ResNet-18 (width {}, small-input stem, conv1 [{}, {bands}, 3, 3]), which geossl's probe, knn, embed and finetune read; \
         torchvision (conv1 = Conv2d({bands}, 64, 7, 2, 3, bias=False)) and timm (in_chans={bands}) load exports of the standard ResNet (`geossl pretrain --bands all --radiometry stats` without --width / --small-input, then `geossl export`)",
        exported.tensors, budget.width, budget.width
    );
    let result = MultispectralResult {
        seed,
        bands,
        budget,
        row,
        band_stats: stats_path,
        export: export_path,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    crate::formats::atomic_write::write_string(
        &out.join("demo.json"),
        &serde_json::to_string_pretty(&result)?,
    )?;
    println!("total {:.0} s", result.total_seconds);
    Ok(result)
}

fn print_stats(stats: &BandStats) {
    for b in &stats.bands {
        println!(
            "band {:>2} {:<4} mean {:>8.1} std {:>8.1} ({} valid pixels)",
            b.band, b.name, b.mean, b.std, b.valid_pixels
        );
    }
}
