//! `report`: a run, or several, as an HTML page.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A pretraining run folder; with several, a page comparing them.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output HTML file [default: report.html in the run folder; required for several runs].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Manifest to show instead of the one named in the run's config.toml (e.g. after moving the data).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Query/key pairs to show (0: none).
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
}

pub(super) fn report_cmd(a: &ReportArgs) -> anyhow::Result<()> {
    let (bytes, out) = match a.runs.as_slice() {
        [run] => {
            let options = crate::report::ReportOptions {
                manifest: a.manifest.clone(),
                pairs: a.pairs,
            };
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| crate::train::RunDir::new(run).report_html());
            (crate::report::write_run_report(run, &options, &out)?, out)
        }
        runs => {
            let Some(out) = a.out.clone() else {
                anyhow::bail!("comparing {} runs needs --out FILE.html", runs.len());
            };
            (
                crate::report::write_comparison_report(runs, &out, None)?,
                out,
            )
        }
    };
    println!("wrote {} ({} KB)", out.display(), bytes / 1024);
    Ok(())
}
