//! The layout of the folders geossl writes, spelled in one place:
//!
//! - a pretraining run folder ([`RunDir`]): `config.toml`, `metrics.jsonl`
//!   and `metrics.csv`, `bad_images.csv`, `resumes.log`, `run.json` (how
//!   and when each invocation ran), `checkpoints/`
//!   (one [`CheckpointDir`] each, and the `latest` pointer), `tb/`
//!   (TensorBoard), and what evaluation and reports add: `probe.json`,
//!   `knn.json`, `report.html`;
//! - a checkpoint folder ([`CheckpointDir`]): `model.safetensors` and
//!   `state.json`;
//! - a classifier folder from `geossl finetune` ([`ClassifierDir`]):
//!   `classifier.json`, `classifier.safetensors`, `report.json`, `tb/`.
//!
//! The names are a contract with runs already on disk (and with the tests,
//! which check them from outside): change none without a migration.

use std::path::{Path, PathBuf};

/// A pretraining run folder (`geossl pretrain --out`, `geossl import --out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The run's resolved configuration (TOML).
    pub fn config_toml(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// One JSON object per step and per epoch.
    pub fn metrics_jsonl(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// The epoch rows of [`Self::metrics_jsonl`] as CSV.
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }

    /// The images replaced as unreadable during pretraining.
    pub fn bad_images_csv(&self) -> PathBuf {
        self.root.join("bad_images.csv")
    }

    /// A dated line per `--resume`.
    pub fn resumes_log(&self) -> PathBuf {
        self.root.join("resumes.log")
    }

    /// Each pretraining invocation: command line, device, start and end
    /// (`launches::RunRecord`).
    pub fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// The folder of checkpoint folders and of their `latest` pointer.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The file naming the newest complete checkpoint folder.
    pub fn latest_pointer(&self) -> PathBuf {
        self.checkpoints().join("latest")
    }

    /// The checkpoint folder called `name` (`epoch-0003`).
    pub fn checkpoint(&self, name: &str) -> CheckpointDir {
        CheckpointDir::new(self.checkpoints().join(name))
    }

    /// The TensorBoard events of `command` (`pretrain`, `probe`).
    pub fn tensorboard(&self, command: &str) -> PathBuf {
        crate::formats::tensorboard::log_dir(&self.root, command)
    }

    /// `geossl probe`'s report.
    pub fn probe_json(&self) -> PathBuf {
        self.root.join("probe.json")
    }

    /// `geossl knn`'s report.
    pub fn knn_json(&self) -> PathBuf {
        self.root.join("knn.json")
    }

    /// `geossl report`'s page of the run.
    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }

    /// The classifier folders directly in the run folder (`geossl finetune
    /// --out RUN/NAME`): those holding a `classifier.json`, sorted.
    /// Unreadable entries are passed over. Errors: the run folder cannot
    /// be listed.
    pub fn classifier_dirs(&self) -> std::io::Result<Vec<ClassifierDir>> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.root)?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| ClassifierDir::new(p).info_json().is_file())
            .collect();
        found.sort();
        Ok(found.into_iter().map(ClassifierDir::new).collect())
    }
}

/// One checkpoint folder (`RUN/checkpoints/epoch-NNNN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDir {
    root: PathBuf,
}

impl CheckpointDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The model (both encoders, heads, queue) and optimiser tensors.
    pub fn model_safetensors(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }

    /// The training state (`TrainState` as JSON); marks a checkpoint folder.
    pub fn state_json(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// The run folder the checkpoint lies in (`RUN/checkpoints/<name>`).
    pub fn run_dir(&self) -> Option<RunDir> {
        self.root.parent().and_then(Path::parent).map(RunDir::new)
    }
}

/// A classifier folder written by `geossl finetune --out`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierDir {
    root: PathBuf,
}

impl ClassifierDir {
    /// The file that marks a classifier folder.
    pub const INFO_JSON: &'static str = "classifier.json";

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// What the classifier is (`ClassifierInfo`); marks a classifier folder.
    pub fn info_json(&self) -> PathBuf {
        self.root.join(Self::INFO_JSON)
    }

    /// Backbone and `fc`, torchvision names.
    pub fn weights(&self) -> PathBuf {
        self.root.join("classifier.safetensors")
    }

    /// The test split's classification report.
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// The TensorBoard events of the classifier's training.
    pub fn tensorboard(&self) -> PathBuf {
        crate::formats::tensorboard::log_dir(&self.root, "finetune")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_one_runs_on_disk_have() {
        // Runs written by earlier versions must keep loading: these names
        // are a file format.
        let run = RunDir::new("r");
        let names = [
            (run.config_toml(), "r/config.toml"),
            (run.metrics_jsonl(), "r/metrics.jsonl"),
            (run.metrics_csv(), "r/metrics.csv"),
            (run.bad_images_csv(), "r/bad_images.csv"),
            (run.resumes_log(), "r/resumes.log"),
            (run.run_json(), "r/run.json"),
            (run.latest_pointer(), "r/checkpoints/latest"),
            (run.tensorboard("probe"), "r/tb/probe"),
            (run.probe_json(), "r/probe.json"),
            (run.knn_json(), "r/knn.json"),
            (run.report_html(), "r/report.html"),
        ];
        for (path, expected) in names {
            assert_eq!(path, Path::new(expected));
        }
        let checkpoint = run.checkpoint("epoch-0002");
        assert_eq!(
            checkpoint.model_safetensors(),
            Path::new("r/checkpoints/epoch-0002/model.safetensors")
        );
        assert_eq!(
            checkpoint.state_json(),
            Path::new("r/checkpoints/epoch-0002/state.json")
        );
        assert_eq!(checkpoint.run_dir(), Some(run));
        let classifier = ClassifierDir::new("c");
        assert_eq!(classifier.info_json(), Path::new("c/classifier.json"));
        assert_eq!(classifier.weights(), Path::new("c/classifier.safetensors"));
        assert_eq!(classifier.report_json(), Path::new("c/report.json"));
        assert_eq!(classifier.tensorboard(), Path::new("c/tb/finetune"));
    }
}
