//! `demo`: the method on the built-in dataset.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the dataset and outputs go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// A smaller budget that finishes in a few minutes on 2 CPU cores.
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bands of the built-in world: 3 (RGB, the four variants and the baselines), or 4 / 13 (multispectral GeoTIFFs: band statistics, moco-tp on every band, probe, kNN, export).
    #[arg(long, default_value_t = 3, value_parser = super::data::parse_band_count)]
    pub bands: usize,
}

pub(super) fn demo_cmd(a: &DemoArgs) -> anyhow::Result<()> {
    if a.bands == 3 {
        crate::demo::run(&a.out, a.quick, a.seed).map(|_| ())
    } else {
        crate::demo::multispectral::run_bands(&a.out, a.quick, a.seed, a.bands).map(|_| ())
    }
}
