//! `RUN_DIR/run.json`: how each pretraining invocation that trained in a run
//! folder was launched (command line, device, ranks) and when it started
//! and ended, for the report and anyone who must say how a result was made.
//!
//! Kept apart from `metrics.jsonl` on purpose: those rows are what a
//! resumed run must reproduce bit for bit, while launches differ by nature
//! (another day, another machine). Rank 0 rewrites the whole file
//! atomically at the start of an invocation, at each checkpoint and at its
//! end, so a crash leaves the record as of the last checkpoint. Nothing
//! reads it back during training.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::Device;

use super::run_dir::RunDir;

/// One `geossl pretrain` (or `geossl demo`) invocation that trained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Launch {
    /// The process's arguments, program first, as the shell passed them.
    pub command_line: Vec<String>,
    /// The working directory the command line's relative paths start from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// What trained: `cpu`, `cuda:N` (rank 0's device when data-parallel).
    pub device: String,
    /// Ranks of a data-parallel job (1 alone).
    pub world_size: usize,
    /// Who started the ranks (`torchrun`, `SLURM`); empty alone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub launcher: String,
    /// The geossl version that ran.
    pub version: String,
    /// Start, RFC 3339 UTC.
    pub started: String,
    /// The last checkpoint's or the end's time, RFC 3339 UTC.
    pub updated: String,
    /// Epochs and optimiser steps done when the invocation started.
    pub start_epoch: usize,
    pub start_step: u64,
    /// Epochs and steps done at `updated`.
    pub end_epoch: usize,
    pub end_step: u64,
    /// `finished`, `stopped by SIGTERM`, `failed: ...`; absent while it
    /// runs, and after a crash or a kill that left no word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl Launch {
    /// Seconds from `started` to `updated` (`None` if either does not
    /// parse).
    pub fn seconds(&self) -> Option<f64> {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
        let ms = (t(&self.updated)? - t(&self.started)?).num_milliseconds();
        Some(ms as f64 / 1000.0)
    }
}

/// The contents of `run.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Oldest first; an attempt whose metrics were discarded (no checkpoint
    /// yet when it stopped) stays listed: its time was spent.
    pub launches: Vec<Launch>,
}

impl RunRecord {
    /// `run.json` of `run_dir`; empty for runs written before it existed.
    /// Errors: a file that cannot be read or is not a record (named).
    pub fn read(run_dir: &Path) -> anyhow::Result<Self> {
        let path = RunDir::new(run_dir).run_json();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a geossl run record", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// This invocation's entry in `run.json`, kept up to date (rank 0).
pub struct LaunchLog {
    path: PathBuf,
    record: RunRecord,
}

impl LaunchLog {
    /// Appends this process's launch (command line from the environment,
    /// `started` when the invocation began, before its setup) at `epoch`
    /// and `step` to the run's record and writes it. Errors: an unreadable
    /// `run.json`, or one that cannot be written.
    pub fn begin(
        run_dir: &Path,
        started: chrono::DateTime<chrono::Utc>,
        device: Device,
        world_size: usize,
        launcher: &str,
        epoch: usize,
        step: u64,
    ) -> anyhow::Result<Self> {
        let mut record = RunRecord::read(run_dir)?;
        let started = started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        record.launches.push(Launch {
            command_line: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            working_dir: std::env::current_dir()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            device: crate::model::device::device_name(device),
            world_size,
            launcher: launcher.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            updated: now(),
            started,
            start_epoch: epoch,
            start_step: step,
            end_epoch: epoch,
            end_step: step,
            outcome: None,
        });
        let log = Self {
            path: RunDir::new(run_dir).run_json(),
            record,
        };
        log.write()?;
        Ok(log)
    }

    /// Notes that `epoch` epochs and `step` steps are done (at a
    /// checkpoint).
    pub fn progress(&mut self, epoch: usize, step: u64) -> anyhow::Result<()> {
        let launch = self.current();
        launch.end_epoch = epoch;
        launch.end_step = step;
        launch.updated = now();
        self.write()
    }

    /// Notes how the invocation ended.
    pub fn end(&mut self, outcome: &str) -> anyhow::Result<()> {
        let launch = self.current();
        launch.outcome = Some(outcome.to_string());
        launch.updated = now();
        self.write()
    }

    fn current(&mut self) -> &mut Launch {
        self.record
            .launches
            .last_mut()
            .expect("begin pushed this launch")
    }

    fn write(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.record)?;
        crate::formats::atomic_write::write_string(&self.path, &(text + "\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_accumulate_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunRecord::read(dir.path()).unwrap().launches.is_empty());
        let t = chrono::Utc::now();
        let mut log = LaunchLog::begin(dir.path(), t, Device::Cpu, 1, "", 0, 0).unwrap();
        log.progress(2, 40).unwrap();
        log.end("stopped by SIGTERM").unwrap();
        let mut log =
            LaunchLog::begin(dir.path(), t, Device::Cuda(1), 4, "torchrun", 2, 40).unwrap();
        log.progress(3, 60).unwrap();
        let record = RunRecord::read(dir.path()).unwrap();
        assert_eq!(record.launches.len(), 2);
        let (a, b) = (&record.launches[0], &record.launches[1]);
        assert_eq!((a.end_epoch, a.end_step), (2, 40));
        assert_eq!(a.outcome.as_deref(), Some("stopped by SIGTERM"));
        assert_eq!((b.device.as_str(), b.world_size), ("cuda:1", 4));
        assert_eq!(
            (b.start_epoch, b.end_epoch, b.outcome.as_ref()),
            (2, 3, None)
        );
        assert!(
            !a.command_line.is_empty(),
            "the test binary's own arguments"
        );
        assert!(!a.working_dir.is_empty());
        assert!(a.seconds().unwrap() >= 0.0);
        std::fs::write(RunDir::new(dir.path()).run_json(), "{").unwrap();
        let e = RunRecord::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("run.json") && e.contains("not a geossl run record"),
            "{e}"
        );
    }
}
