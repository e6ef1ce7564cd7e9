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
//! No RNG state needs saving: the data order and augmentations derive from
//! (seed, epoch, position) and the shuffle-BN permutations from (seed, step).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::config::PretrainConfig;
use super::sgd::Sgd;
use crate::atomic_write::write_string;
use crate::model::weights::{copy_named, read_safetensors};
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
    /// Running sums of that epoch's step metrics (loss, InfoNCE, accuracy,
    /// geo loss, geo accuracy), for its epoch row.
    #[serde(default)]
    pub epoch_sums: [f64; 5],
    /// SHA-256 of `model.safetensors`, hex; set by [`save`].
    #[serde(default)]
    pub model_sha256: Option<String>,
}

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
            seed: config.seed,
            geo_classes,
            config: config.clone(),
            batch_in_epoch: 0,
            epoch_sums: [0.0; 5],
            model_sha256: None,
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
    run_dir.join("checkpoints")
}

/// The newest complete checkpoint, if any.
pub fn latest(run_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run_dir).join("latest");
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
    named.push(("queue".to_string(), moco.queue.shallow_clone()));
    for (n, t) in sgd.state() {
        named.push((format!("{OPTIMIZER_PREFIX}{n}"), t.shallow_clone()));
    }
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let tensors_path = tmp.join("model.safetensors");
    Tensor::write_safetensors(&named, &tensors_path)
        .with_context(|| format!("{}: cannot write", tensors_path.display()))?;
    fsync(&tensors_path)?;
    let mut state = state.clone();
    state.model_sha256 = Some(sha256_file(&tensors_path)?);
    let state_path = tmp.join("state.json");
    std::fs::write(&state_path, serde_json::to_string_pretty(&state)?)?;
    fsync(&state_path)?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("{}: cannot rename into place", final_dir.display()))?;
    fsync(&dir)?;
    write_string(&dir.join("latest"), &name)?;
    Ok(final_dir)
}

/// The `state.json` of checkpoint folder `dir`.
pub fn read_state(dir: &Path) -> anyhow::Result<TrainState> {
    let state_path = dir.join("state.json");
    serde_json::from_str(
        &std::fs::read_to_string(&state_path)
            .with_context(|| format!("{}: cannot read", state_path.display()))?,
    )
    .with_context(|| format!("{}: invalid checkpoint state", state_path.display()))
}

/// Loads a checkpoint into `moco` and `sgd` (built with the same config).
pub fn load(dir: &Path, moco: &mut Moco, sgd: &mut Sgd) -> anyhow::Result<TrainState> {
    let state = read_state(dir)?;
    let tensors_path = dir.join("model.safetensors");
    if let Some(expected) = &state.model_sha256 {
        let actual = sha256_file(&tensors_path)?;
        anyhow::ensure!(
            &actual == expected,
            "{}: damaged (SHA-256 {actual}, state.json expects {expected})",
            tensors_path.display()
        );
    }
    let tensors = read_safetensors(&tensors_path)?;
    let file = tensors_path.display().to_string();
    let take = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{file}: missing tensor {name}"))
    };
    for vs in [&moco.vs_q, &moco.vs_k] {
        copy_named(vs, &tensors, "", &tensors_path)?;
    }
    tch::no_grad(|| -> anyhow::Result<()> {
        let queue = take("queue")?;
        anyhow::ensure!(
            queue.size() == moco.queue.size(),
            "{file}: queue has shape {:?}, the model {:?}",
            queue.size(),
            moco.queue.size()
        );
        moco.queue.f_copy_(queue)?;
        Ok(())
    })?;
    moco.queue_ptr = state.queue_ptr;
    sgd.load_state(tensors.iter().filter_map(|(n, t)| {
        n.strip_prefix(OPTIMIZER_PREFIX)
            .map(|p| (p.to_string(), t.shallow_clone()))
    }))
    .with_context(|| file.clone())?;
    Ok(state)
}
