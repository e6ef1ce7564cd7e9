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
}

pub(super) fn demo_cmd(a: &DemoArgs) -> anyhow::Result<()> {
    crate::demo::run(&a.out, a.quick, a.seed).map(|_| ())
}
