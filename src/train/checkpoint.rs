//! Checkpoints: everything needed to continue a run exactly.
//!
//! `RUN_DIR/checkpoints/epoch-NNNN/` holds `model.safetensors` (query and
//! key encoders and heads under their reference names, the queue, and the
//! optimizer's momentum buffers as `optimizer.momentum_buffer.<param>`) and
//! `state.json` (epochs and steps done, queue pointer, seed, resolved
//! config). A checkpoint is written into a temporary folder, fsynced, and
//! renamed into place; `RUN_DIR/checkpoints/latest` (written atomically
//! last) names the newest complete one. A crash at any moment leaves the
//! previous checkpoint intact and named by `latest`.
//!
//! `state.json` carries the SHA-256 of `model.safetensors`; a checkpoint
//! whose file does not match (truncated, bit-flipped, half-copied) is
//! refused by [`load`], and `--resume` then falls back to the newest older
//! checkpoint that loads ([`candidates`]). A run stopped by SIGINT/SIGTERM
//! is checkpointed mid-epoch (`epoch-NNNN-batch-BBBBBB`), with the epoch's
//! partial sums, so that resuming it is exact.
//!
//! A checkpoint whose file is intact but whose tensors do not fit the model
//! being resumed is a [`Mismatch`], not damage: it names each tensor with
//! the expected and the found shape, and `--resume` stops there instead of
//! passing over it.
//!
//! Mid-epoch checkpoints are also written every `checkpoint_every_steps`
//! steps or `checkpoint_every_minutes` minutes, so that a SIGKILL loses
//! bounded work; only the newest mid-epoch checkpoint is kept ([`prune`]).
//!
//! No RNG state needs saving: the data order and augmentations derive from
//! (seed, epoch, position) and the shuffle-BN permutations from (seed, step).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::config::PretrainConfig;
use super::metrics::EpochMeter;
use super::run_dir::{CheckpointDir, RunDir};
use super::sgd::Sgd;
use crate::data::bands::InputSpec;
use crate::formats::atomic_write::write_string;
use crate::formats::safetensors::read_safetensors;
use crate::model::weights::copy_named;
use crate::model::Moco;

const OPTIMIZER_PREFIX: &str = "optimizer.momentum_buffer.";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed.
    pub step: u64,
    pub queue_ptr: i64,
    pub seed: u64,
    pub geo_classes: Option<i64>,
    pub config: PretrainConfig,
    /// Batches of the next epoch already done (a mid-epoch checkpoint).
    #[serde(default)]
    pub batch_in_epoch: usize,
    /// Running sums of that epoch's step metrics, for its epoch row (older
    /// checkpoints store them as an array, which loads too).
    #[serde(default)]
    pub epoch_sums: EpochMeter,
    /// SHA-256 of `model.safetensors`, hex; set by [`save`].
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// The training rows (count and [`rows_fingerprint`]) the run iterates
    /// over; a resume on other rows would follow another data order.
    /// Absent in checkpoints of older geossl and of `import`.
    #[serde(default)]
    pub rows: Option<usize>,
    #[serde(default)]
    pub rows_sha256: Option<String>,
    /// The PyTorch checkpoint `geossl import` made this one from: its
    /// config is inferred from tensor shapes and defaults, so the first
    /// `--resume` may set any setting (the tensors must still fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// Ranks of the data-parallel job that wrote it (1: a single process,
    /// and every checkpoint written before geossl trained on several).
    #[serde(default = "one_rank")]
    pub world_size: usize,
    /// The model's input as resolved against the run's dataset (bands,
    /// radiometry, normalisation): what evaluation and export reuse.
    /// Checkpoints of older geossl and of `import` have none: RGB
    /// ([`InputSpec::rgb`]).
    #[serde(default)]
    pub input: InputSpec,
}

fn one_rank() -> usize {
    1
}

/// Hex SHA-256 of what the loader takes from each training row (path,
/// place, time, crop, geo cluster) in order: equal for the same rows of a
/// manifest that moved, different once rows are added, removed, reordered
/// or relabelled.
pub fn rows_fingerprint(manifest: &crate::data::Manifest) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for r in &manifest.records {
        hasher.update(
            format!(
                "{}\t{:?}\t{:?}\t{:?}\t{:?}\n",
                r.path, r.location_id, r.timestamp, r.crop, r.geo_cluster
            )
            .as_bytes(),
        );
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An intact checkpoint whose tensors do not fit the model it is loaded
/// into (another width, arch, queue or number of geo classes).
#[derive(Debug)]
pub struct Mismatch {
    pub file: PathBuf,
    /// One line per tensor: missing, or its expected and found shapes.
    pub tensors: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 8;
        write!(
            f,
            "{}: does not fit the requested model ({} tensor(s)): {}",
            self.file.display(),
            self.tensors.len(),
            self.tensors[..self.tensors.len().min(SHOWN)].join("; ")
        )?;
        if self.tensors.len() > SHOWN {
            write!(f, "; and {} more", self.tensors.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

impl TrainState {
    /// The state after `epoch` whole epochs and `step` steps (no mid-epoch
    /// position; set `batch_in_epoch` and `epoch_sums` for one).
    pub fn at(
        config: &PretrainConfig,
        geo_classes: Option<i64>,
        epoch: usize,
        step: u64,
        queue_ptr: i64,
    ) -> Self {
        Self {
            epoch,
            step,
            queue_ptr,
            seed: config.run.seed,
            geo_classes,
            config: config.clone(),
            batch_in_epoch: 0,
            epoch_sums: EpochMeter::default(),
            model_sha256: None,
            rows: None,
            rows_sha256: None,
            imported_from: None,
            world_size: 1,
            input: InputSpec::rgb(),
        }
    }
}

/// The folder name of a checkpoint: sorts by training progress.
pub fn checkpoint_name(state: &TrainState) -> String {
    if state.batch_in_epoch == 0 {
        format!("epoch-{:04}", state.epoch)
    } else {
        format!("epoch-{:04}-batch-{:06}", state.epoch, state.batch_in_epoch)
    }
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checkpoints to try on `--resume`, newest first: the one `latest` names,
/// then every other complete checkpoint folder by decreasing progress.
pub fn candidates(run_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("epoch-"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot list", dir.display())),
    };
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut out: Vec<PathBuf> = Vec::new();
    if let Ok(Some(l)) = latest(run_dir) {
        out.push(l);
    }
    for n in names {
        let p = dir.join(n);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    RunDir::new(run_dir).checkpoints()
}

/// The newest complete checkpoint, if any.
pub fn latest(run_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let pointer = RunDir::new(run_dir).latest_pointer();
    match std::fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = checkpoints_dir(run_dir).join(name.trim());
            anyhow::ensure!(
                dir.is_dir(),
                "{}: names {}, which does not exist",
                pointer.display(),
                dir.display()
            );
            Ok(Some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", pointer.display())),
    }
}

fn fsync(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("{}: fsync failed", path.display()))
}

/// Writes a checkpoint for `state` and points `latest` at it.
pub fn save(run_dir: &Path, moco: &Moco, sgd: &Sgd, state: &TrainState) -> anyhow::Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let name = checkpoint_name(state);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for vs in [&moco.vs_q, &moco.vs_k] {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        named.extend(vars);
    }
    named.push(("queue".to_string(), moco.queue.keys().shallow_clone()));
    for (n, t) in sgd.state() {
        named.push((format!("{OPTIMIZER_PREFIX}{n}"), t.shallow_clone()));
    }
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let tensors_path = CheckpointDir::new(&tmp).model_safetensors();
    Tensor::write_safetensors(&named, &tensors_path)
        .with_context(|| format!("{}: cannot write", tensors_path.display()))?;
    fsync(&tensors_path)?;
    let mut state = state.clone();
    state.model_sha256 = Some(sha256_file(&tensors_path)?);
    let state_path = CheckpointDir::new(&tmp).state_json();
    std::fs::write(&state_path, serde_json::to_string_pretty(&state)?)?;
    fsync(&state_path)?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("{}: cannot rename into place", final_dir.display()))?;
    fsync(&dir)?;
    write_string(&RunDir::new(run_dir).latest_pointer(), &name)?;
    Ok(final_dir)
}

/// The `state.json` of checkpoint folder `dir`.
pub fn read_state(dir: &Path) -> anyhow::Result<TrainState> {
    let state_path = CheckpointDir::new(dir).state_json();
    serde_json::from_str(
        &std::fs::read_to_string(&state_path)
            .with_context(|| format!("{}: cannot read", state_path.display()))?,
    )
    .with_context(|| format!("{}: invalid checkpoint state", state_path.display()))
}

/// Fails with a [`Mismatch`] listing every tensor of `moco` (both encoders
/// and the queue) that `tensors` lacks or holds with another shape.
fn check_fits(
    tensors: &std::collections::HashMap<String, Tensor>,
    moco: &Moco,
    file: &Path,
) -> anyhow::Result<()> {
    let mut wanted: Vec<(String, Vec<i64>)> = [&moco.vs_q, &moco.vs_k]
        .iter()
        .flat_map(|vs| vs.variables())
        .map(|(n, t)| (n, t.size()))
        .collect();
    wanted.sort();
    wanted.push(("queue".to_string(), moco.queue.keys().size()));
    let trained: std::collections::HashSet<String> = moco.vs_q.variables().into_keys().collect();
    let mut problems: Vec<String> = wanted
        .iter()
        .filter_map(|(name, shape)| match tensors.get(name) {
            None => Some(format!("{name}: expected {shape:?}, missing")),
            Some(t) if &t.size() != shape => {
                Some(format!("{name}: expected {shape:?}, found {:?}", t.size()))
            }
            Some(_) => None,
        })
        .collect();
    let mut extra: Vec<String> = tensors
        .iter()
        .filter(|(name, _)| match name.strip_prefix(OPTIMIZER_PREFIX) {
            Some(param) => !trained.contains(param),
            None => !wanted.iter().any(|(w, _)| w == *name),
        })
        .map(|(name, t)| format!("{name}: not in the model, found {:?}", t.size()))
        .collect();
    extra.sort();
    problems.extend(extra);
    if problems.is_empty() {
        return Ok(());
    }
    Err(Mismatch {
        file: file.to_path_buf(),
        tensors: problems,
    }
    .into())
}

/// Removes what older checkpoints leave behind once a newer one is
/// complete: every mid-epoch checkpoint other than `keep`, and temporary
/// folders and files of writers that were killed (another process id). Epoch
/// checkpoints stay (one every `checkpoint_every` epochs).
pub fn prune(run_dir: &Path, keep: Option<&Path>) -> anyhow::Result<()> {
    let dir = checkpoints_dir(run_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let own_tmp = format!(".tmp-{}", std::process::id());
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mid_epoch = name.starts_with("epoch-") && name.contains("-batch-");
        let stale_tmp =
            name.starts_with('.') && name.contains(".tmp-") && !name.ends_with(&own_tmp);
        let removed = if path.is_dir() && (stale_tmp || (mid_epoch && Some(path.as_path()) != keep))
        {
            std::fs::remove_dir_all(&path)
        } else if stale_tmp {
            // A killed writer's `latest` (see crate::formats::atomic_write).
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.with_context(|| format!("{}: cannot remove", path.display()))?;
    }
    Ok(())
}

/// Loads a checkpoint into `moco` and `sgd` (built with the same config).
/// Errors: damage (unreadable, SHA-256 mismatch), or a [`Mismatch`] when
/// the intact tensors do not fit `moco`.
pub fn load(dir: &Path, moco: &mut Moco, sgd: &mut Sgd) -> anyhow::Result<TrainState> {
    let state = read_state(dir)?;
    let tensors_path = CheckpointDir::new(dir).model_safetensors();
    if let Some(expected) = &state.model_sha256 {
        let actual = sha256_file(&tensors_path)?;
        anyhow::ensure!(
            &actual == expected,
            "{}: damaged (SHA-256 {actual}, state.json expects {expected})",
            tensors_path.display()
        );
    }
    let tensors = read_safetensors(&tensors_path)?;
    check_fits(&tensors, moco, &tensors_path)?;
    let file = tensors_path.display().to_string();
    let take = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{file}: missing tensor {name}"))
    };
    for vs in [&moco.vs_q, &moco.vs_k] {
        copy_named(vs, &tensors, "", &tensors_path)?;
    }
    let queue = take("queue")?;
    anyhow::ensure!(
        queue.size() == moco.queue.keys().size(),
        "{file}: queue has shape {:?}, the model {:?}",
        queue.size(),
        moco.queue.keys().size()
    );
    moco.queue.load(Some(queue), Some(state.queue_ptr))?;
    sgd.load_state(tensors.iter().filter_map(|(n, t)| {
        n.strip_prefix(OPTIMIZER_PREFIX)
            .map(|p| (p.to_string(), t.shallow_clone()))
    }))
    .with_context(|| file.clone())?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(run: &Path, geo: Option<i64>, batch_in_epoch: usize) -> PathBuf {
        let moco = crate::model::moco::tiny_for_tests(geo, 16);
        let sgd = Sgd::new(moco.vs_q.variables(), 0.9, 1e-4);
        let state = TrainState {
            batch_in_epoch,
            ..TrainState::at(&PretrainConfig::default(), geo, 1, 5, 0)
        };
        save(run, &moco, &sgd, &state).unwrap()
    }

    #[test]
    fn a_checkpoint_of_another_model_is_a_mismatch_naming_tensors_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = saved(dir.path(), Some(3), 0);
        let mut moco = crate::model::moco::tiny_for_tests(Some(5), 16);
        let mut sgd = Sgd::new(moco.vs_q.variables(), 0.9, 1e-4);
        let err = load(&ckpt, &mut moco, &mut sgd).unwrap_err();
        let mismatch = err
            .downcast_ref::<Mismatch>()
            .expect("a mismatch, not damage");
        assert!(
            mismatch
                .tensors
                .iter()
                .any(|t| t.contains("expected [5,") && t.contains("found [3,")),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("does not fit the requested model"), "{text}");
        // No geo head at all: the head's tensors are missing.
        let mut plain = crate::model::moco::tiny_for_tests(None, 16);
        let mut sgd = Sgd::new(plain.vs_q.variables(), 0.9, 1e-4);
        let err = load(&ckpt, &mut plain, &mut sgd).unwrap_err();
        let mismatch = err.downcast_ref::<Mismatch>().expect("a mismatch");
        assert!(
            mismatch
                .tensors
                .iter()
                .any(|t| t.contains("not in the model")),
            "{err}"
        );
        let mut same = crate::model::moco::tiny_for_tests(Some(3), 16);
        let mut sgd = Sgd::new(same.vs_q.variables(), 0.9, 1e-4);
        assert_eq!(load(&ckpt, &mut same, &mut sgd).unwrap().step, 5);
    }

    #[test]
    fn an_old_state_with_positional_epoch_sums_loads_into_named_fields() {
        // state.json as geossl wrote it before the named meter (2246f0d).
        let config = serde_json::to_string(&PretrainConfig::default()).unwrap();
        let old = format!(
            r#"{{
  "epoch": 1,
  "step": 7,
  "queue_ptr": 24,
  "seed": 0,
  "geo_classes": 4,
  "config": {config},
  "batch_in_epoch": 3,
  "epoch_sums": [
    20.25,
    18.5,
    0.0625,
    1.75,
    0.3333333333333333
  ],
  "model_sha256": "00",
  "rows": 40,
  "rows_sha256": "11"
}}"#
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), old).unwrap();
        let state = read_state(dir.path()).unwrap();
        assert_eq!((state.epoch, state.step, state.batch_in_epoch), (1, 7, 3));
        let sums = state.epoch_sums;
        assert_eq!(
            (sums.loss, sums.moco_loss, sums.moco_acc, sums.geo_loss),
            (20.25, 18.5, 0.0625, 1.75)
        );
        assert_eq!(sums.geo_acc, 1.0 / 3.0);
        assert_eq!(state.world_size, 1, "written by a single process");
    }

    #[test]
    fn a_mid_epoch_state_round_trips_its_named_epoch_sums() {
        let dir = tempfile::tempdir().unwrap();
        let moco = crate::model::moco::tiny_for_tests(None, 16);
        let sgd = Sgd::new(moco.vs_q.variables(), 0.9, 1e-4);
        let sums = EpochMeter {
            loss: 0.1 + 0.2,
            moco_loss: 2.5,
            moco_acc: 1.0 / 7.0,
            geo_loss: 0.0,
            geo_acc: 0.0,
        };
        let state = TrainState {
            batch_in_epoch: 2,
            epoch_sums: sums,
            world_size: 4,
            ..TrainState::at(&PretrainConfig::default(), None, 0, 2, 8)
        };
        let ckpt = save(dir.path(), &moco, &sgd, &state).unwrap();
        let text = std::fs::read_to_string(ckpt.join("state.json")).unwrap();
        assert!(text.contains("\"moco_loss\": 2.5"), "named: {text}");
        let back = read_state(&ckpt).unwrap();
        assert_eq!(back.epoch_sums, sums);
        assert_eq!((back.batch_in_epoch, back.queue_ptr), (2, 8));
        assert_eq!(back.world_size, 4);
    }

    #[test]
    fn prune_keeps_epoch_checkpoints_and_the_newest_mid_epoch_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let epoch = saved(run, None, 0);
        let old_mid = saved(run, None, 3);
        let new_mid = saved(run, None, 7);
        let stale = checkpoints_dir(run).join(".epoch-0002.tmp-999999999");
        std::fs::create_dir(&stale).unwrap();
        let stale_latest = checkpoints_dir(run).join(".latest.tmp-999999999");
        std::fs::write(&stale_latest, "epoch-0002").unwrap();
        prune(run, Some(&new_mid)).unwrap();
        assert!(epoch.is_dir() && new_mid.is_dir());
        assert!(!old_mid.exists() && !stale.exists() && !stale_latest.exists());
        assert_eq!(latest(run).unwrap(), Some(new_mid));
    }
}
