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
    let (page, out) = match a.runs.as_slice() {
        [run] => {
            let options = crate::report::ReportOptions {
                manifest: a.manifest.clone(),
                pairs: a.pairs,
            };
            let out = a.out.clone().unwrap_or_else(|| run.join("report.html"));
            (crate::report::run_report(run, &options)?, out)
        }
        runs => {
            let Some(out) = a.out.clone() else {
                anyhow::bail!("comparing {} runs needs --out FILE.html", runs.len());
            };
            (crate::report::comparison_report(runs, &out, None)?, out)
        }
    };
    crate::formats::atomic_write::write_string(&out, &page)?;
    println!("wrote {} ({} KB)", out.display(), page.len() / 1024);
    Ok(())
}
