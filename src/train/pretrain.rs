//! The pretraining loop: data, MoCo step, SGD, schedule, logs, checkpoints.
//!
//! [`pretrain`] is setup ([`load`], [`start_point`], [`Run::open`]), then
//! [`Run::run_epoch`] per epoch (as the reference's `train()`), then
//! [`Run::finish`].
//!
//! Data-parallel (a [`RunOptions::rendezvous`]): every rank runs this loop
//! on its part of each global batch ([`Shard`]); the step's all-reduce
//! carries each rank's [`StepFlags`], so that a stop signal on any rank, a
//! checkpoint due on rank 0's clock or an unreadable image acts on every
//! rank after the same step. Rank 0 alone writes the run folder (config,
//! metrics, TensorBoard, checkpoints, resumes.log, bad_images.csv) and
//! talks; the others wait at a barrier after each checkpoint and at the
//! end. Every rank reads the same checkpoint on `--resume`; rank 0's
//! state is then broadcast, before anyone writes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::checkpoint::{self, TrainState};
use super::config::{PretrainConfig, SettingChange, CHANGEABLE_ON_RESUME};
use super::launches::LaunchLog;
use super::metrics::{EpochMeter, MetricsLog, MetricsRow};
use super::monitor::{BuildMonitor, EpochMonitor};
use super::run_dir::RunDir;
use super::schedule::LrSchedule;
use super::sgd::Sgd;
use super::step::{train_step_with_flags, DeviceBatch, NonFiniteLoss, StepFlags, StepSettings};
use crate::data::bands::{BandStats, InputSpec};
use crate::data::loader::{BadImage, BadImagePolicy, PairBatch, PairLoader, Shard};
use crate::data::{Manifest, Split};
use crate::dist::{Backend, CollectiveError, ProcessGroup, Rendezvous};
use crate::model::{parse_device, torch_ext, DeviceSpec, Moco};
use crate::progress;
use crate::settings;
use tch::{Device, Tensor};

/// What a finished (or stopped) invocation did.
#[derive(Debug)]
pub struct PretrainOutcome {
    pub epochs_done: usize,
    pub steps_done: u64,
    pub last_checkpoint: Option<PathBuf>,
    /// The signal that stopped the run early, after a checkpoint.
    pub interrupted_by: Option<&'static str>,
    /// `--resume` of a run that had already done all its epochs: nothing ran.
    pub already_finished: bool,
}

/// Options of one invocation that are not part of the run's config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from the newest intact checkpoint; without one (a run
    /// killed before its first checkpoint, or a new folder) start from the
    /// beginning, so that a scheduler can re-run one command line.
    pub resume: bool,
    /// Stop after this many epochs in this invocation (a later `--resume` continues).
    pub stop_after: Option<usize>,
    /// No start-up summary, progress bar or progress lines.
    pub quiet: bool,
    /// This process's place in a data-parallel job, from the launcher's
    /// environment ([`Rendezvous::from_env`]); `None`: a single process.
    /// Rank 0 alone writes the run folder and talks; every rank trains its
    /// part of each global batch (see the module documentation).
    pub rendezvous: Option<Rendezvous>,
    /// How long a collective waits for the other ranks before it fails
    /// (c10d's process-group timeout).
    pub dist_timeout: Duration,
}

impl Default for RunOptions {
    /// A single-process run, from the beginning, with every message.
    fn default() -> Self {
        Self {
            resume: false,
            stop_after: None,
            quiet: false,
            rendezvous: None,
            dist_timeout: crate::dist::DEFAULT_TIMEOUT,
        }
    }
}

/// How often a run whose stderr is not a terminal (a batch job's log)
/// prints a progress line, after the one of its first step.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(60);

/// Rows used for pretraining.
pub fn training_rows(mut manifest: Manifest, split: &str) -> anyhow::Result<Manifest> {
    if split == "all" {
        return Ok(manifest);
    }
    let wanted: Split = split.parse().map_err(|e: String| {
        anyhow::anyhow!("{} {split}: {e} (or all)", settings::name("split"))
    })?;
    let total = manifest.records.len();
    manifest.records.retain(|r| r.split == Some(wanted));
    anyhow::ensure!(
        !manifest.records.is_empty(),
        "{}: none of the {total} rows has split = {split} (use {} all to train on every row)",
        manifest.source.display(),
        settings::name("split")
    );
    Ok(manifest)
}

/// A batch tensor on `device` in the model's layout. From pinned memory the
/// copy to a GPU is asynchronous (ordered on the stream before the step).
pub fn to_model_input(t: &Tensor, device: Device, channels_last: bool) -> anyhow::Result<Tensor> {
    let on_device = t.to_device_(device, t.kind(), true, false);
    Ok(if channels_last {
        torch_ext::contiguous(&on_device, true)?
    } else {
        on_device
    })
}

fn seed_for_step(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ step.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Pretrains `config` into `run_dir` (see the module documentation),
/// asking `monitor` (built by the caller, see [`BuildMonitor`]) for a
/// figure at the end of the epochs `knn_every` selects.
///
/// Errors: bad settings; `knn_every > 0` without a monitor; `--resume`
/// that would change what the run is (every differing setting named, old
/// and new value) or onto a checkpoint whose tensors do not fit the model;
/// a data loader that fails or stops early; a non-finite loss; and an
/// invocation asked to train that ran no optimiser step.
pub fn pretrain(
    config: &PretrainConfig,
    run_dir: &Path,
    options: &RunOptions,
    monitor: Option<&BuildMonitor>,
) -> anyhow::Result<PretrainOutcome> {
    // The launch's wall time counts the setup (data, model) too.
    let launched = chrono::Utc::now();
    config.validate()?;
    anyhow::ensure!(
        options.stop_after != Some(0),
        "{} must be at least 1 (epochs to run in this invocation)",
        settings::name("stop_after")
    );
    // Recorded absolute in config.toml and the checkpoints, so that
    // `--resume`, `report` and `export` find it from any working directory.
    let mut config = PretrainConfig {
        manifest: std::path::absolute(&config.manifest)
            .with_context(|| format!("{}: cannot make absolute", config.manifest.display()))?,
        ..config.clone()
    };
    // The pack likewise (`report` draws its sample pairs from it).
    if !config.run.packed.as_os_str().is_empty() {
        config.run.packed = std::path::absolute(&config.run.packed)
            .with_context(|| format!("{}: cannot make absolute", config.run.packed.display()))?;
    }
    // The init file likewise, so that a resume's repeated `--init` is the same setting.
    if !config.model.init.as_os_str().is_empty() {
        config.model.init = std::path::absolute(&config.model.init)
            .with_context(|| format!("{}: cannot make absolute", config.model.init.display()))?;
    }
    let mut loaded = load(&config, run_dir, monitor, options)?;
    let start = start_point(&config, run_dir, options, &mut loaded)?;
    loaded.ranks.agree_on_start(&start, run_dir)?;
    let quiet = options.quiet || !loaded.ranks.writes();
    if let Some(finished) = already_finished(&config, run_dir, &start, quiet)? {
        return Ok(finished);
    }
    // Every rank has read its checkpoint: from here rank 0 may write.
    loaded.sync_from_rank0()?;
    if loaded.ranks.writes() {
        start.prepare_folder(run_dir)?;
    }
    let mut run = Run::open(config, run_dir, options, loaded, start, launched)?;
    let outcome = run.train();
    run.record_end(outcome)
}

/// A pretraining invocation under way: the model, optimiser, data, logs,
/// and where training stands.
struct Run<'a> {
    /// The run's config, manifest path absolute.
    config: PretrainConfig,
    run_dir: &'a Path,
    /// No bar, lines or summary (asked for, or a rank other than 0).
    quiet: bool,
    ranks: Ranks,
    device: Device,
    geo_classes: Option<i64>,
    rows: TrainingRows,
    /// The resolved input, recorded in every checkpoint.
    input: InputSpec,
    loader: PairLoader,
    moco: Moco,
    sgd: Sgd,
    monitor: Option<Box<dyn EpochMonitor>>,
    schedule: LrSchedule,
    /// Batches (optimiser steps) per epoch.
    batches: usize,
    /// Epochs done; the invocation stops at `end`.
    epoch: usize,
    end: usize,
    /// Optimiser steps done.
    step: u64,
    /// Where a resumed mid-epoch checkpoint left its epoch.
    first_batch: usize,
    resumed_sums: EpochMeter,
    last_checkpoint: Option<PathBuf>,
    last_saved: Instant,
    /// Data-parallel: the last step's reduced flag saying that a
    /// time-based checkpoint is due on rank 0's clock.
    time_due: bool,
    /// Data-parallel: a stop signal met at an epoch's last step, acted on
    /// once the epoch is complete.
    stop_at_epoch_end: Option<&'static str>,
    /// Where this invocation started, for its messages.
    steps_at_start: u64,
    first_epoch: usize,
    /// The metrics files; rank 0's alone.
    log: Option<MetricsLog>,
    /// This invocation in `run.json`; rank 0's alone.
    launch: Option<LaunchLog>,
    bad_images: BadImageLog,
    stop: StopSignal,
    progress_lines: ProgressLines,
}

/// This process's place in the run: alone, or one rank of a data-parallel
/// job.
#[derive(Clone)]
struct Ranks {
    group: Option<Arc<ProcessGroup>>,
    /// Who started the job, for messages ("torchrun", "SLURM", ...).
    launcher: &'static str,
}

impl Ranks {
    fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank())
    }

    fn world(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world_size())
    }

    /// Whether this process writes the run folder and talks (rank 0).
    fn writes(&self) -> bool {
        self.rank() == 0
    }

    /// Checks that every rank starts where rank 0 does (the same
    /// checkpoint, epoch, batch and step), before any collective whose
    /// count depends on it: ranks that read different run folders (an
    /// `--out` on node-local disks) would otherwise train different epochs
    /// in silence or wait for each other until the timeout. Every rank sees
    /// every rank's start (one all-gather), so all fail together.
    fn agree_on_start(&self, start: &StartPoint, run_dir: &Path) -> anyhow::Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let checkpoint = start
            .last_checkpoint
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        // The checkpoint's folder name holds its epoch and batch; its hash
        // tells two different checkpoints at one position apart.
        let name_hash = checkpoint.as_deref().map_or(0, |n| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            n.hash(&mut h);
            h.finish() as i64
        });
        let mine = [
            start.epoch as i64,
            start.first_batch as i64,
            start.step as i64,
            i64::from(checkpoint.is_some()),
            name_hash,
        ];
        let all: Vec<i64> = group
            .all_gather(&Tensor::from_slice(&mine))
            .context("comparing where each rank starts")?
            .try_into()?;
        let starts: Vec<&[i64]> = all.chunks(mine.len()).collect();
        let Some(other) = starts.iter().position(|s| *s != starts[0]) else {
            return Ok(());
        };
        let describe = |s: &[i64]| match s[3] {
            0 => "a new run (no checkpoint)".to_string(),
            _ => format!("epoch {}, batch {}, step {}", s[0], s[1], s[2]),
        };
        anyhow::bail!(
            "rank {other} starts at {} but rank 0 at {} in {}: every rank must see the same run folder (put {} on a file system that all ranks share)",
            describe(starts[other]),
            describe(starts[0]),
            run_dir.display(),
            settings::name("out")
        )
    }

    /// Waits for every rank (nothing in a single process); `why` names
    /// what they wait for in the error.
    fn barrier(&self, why: &str) -> anyhow::Result<()> {
        if let Some(group) = &self.group {
            group
                .barrier()
                .with_context(|| format!("waiting for {why}"))?;
        }
        Ok(())
    }
}

/// The model's input of a run with `config` on `manifest` (every row):
/// its `--bands` and `--radiometry` resolved against the manifest's first
/// image and the band statistics beside the manifest
/// (`M.band_stats.json`, when `geossl index stats` wrote them); with
/// `--packed`, the input the pack was made with (its values are that
/// input's; the files and statistics need not be on this machine).
pub fn resolve_input(config: &PretrainConfig, manifest: &Manifest) -> anyhow::Result<InputSpec> {
    if !config.run.packed.as_os_str().is_empty() {
        return crate::data::pack::packed_input(
            &config.run.packed,
            &config.data.bands,
            &config.data.radiometry,
        );
    }
    let stats = BandStats::load_for(&config.manifest)?;
    InputSpec::resolve(
        config.data.bands.clone(),
        config.data.radiometry.clone(),
        manifest,
        stats.as_ref(),
    )
}

/// The input recorded in the newest readable checkpoint of `run_dir` when
/// resuming with the same `--bands` and `--radiometry`: a resumed run
/// reads images as it started, even when the band statistics beside the
/// manifest were recomputed (or appeared) since. `None` for a new run, a
/// run without readable checkpoints, an imported checkpoint, or changed
/// flags (which the resume then refuses, naming them).
fn recorded_input(config: &PretrainConfig, run_dir: &Path, resume: bool) -> Option<InputSpec> {
    if !resume {
        return None;
    }
    let state = checkpoint::candidates(run_dir)
        .ok()?
        .iter()
        .find_map(|dir| checkpoint::read_state(dir).ok())?;
    let same_flags = state.input.selection == config.data.bands
        && state.input.radiometry == config.data.radiometry;
    (same_flags && state.imported_from.is_none()).then_some(state.input)
}

/// What [`load`] prepares before it knows where the run starts.
struct Loaded {
    ranks: Ranks,
    device: Device,
    geo_classes: Option<i64>,
    rows: TrainingRows,
    /// The resolved input, recorded in every checkpoint.
    input: InputSpec,
    manifest_source: PathBuf,
    images: usize,
    loader: PairLoader,
    moco: Moco,
    sgd: Sgd,
    monitor: Option<Box<dyn EpochMonitor>>,
}

/// Where a run starts: a new run, or its newest intact checkpoint.
struct StartPoint {
    epoch: usize,
    step: u64,
    first_batch: usize,
    sums: EpochMeter,
    last_checkpoint: Option<PathBuf>,
    line: String,
    /// What an earlier attempt without a checkpoint left is to be removed
    /// ([`StartPoint::prepare_folder`]), with this line for `resumes.log`.
    discard: Option<Option<&'static str>>,
}

/// Reads the manifest, builds the monitor, the data loader, the model and
/// the optimiser of `config` (manifest path absolute); sets libtorch's
/// threads and seed; joins the data-parallel job of `options` (its
/// process group, this rank's device and part of each batch).
fn load(
    config: &PretrainConfig,
    run_dir: &Path,
    monitor: Option<&BuildMonitor>,
    options: &RunOptions,
) -> anyhow::Result<Loaded> {
    let manifest = Manifest::read(&config.manifest)?;
    let geo_classes = geo_class_count(config, &manifest)?;
    let input = match recorded_input(config, run_dir, options.resume) {
        Some(input) => input,
        None => resolve_input(config, &manifest)?,
    };
    // The kNN monitor sees every row of its two splits, whatever the
    // pretraining split; only rank 0 runs it.
    let writes = options.rendezvous.as_ref().is_none_or(|r| r.rank == 0);
    let monitor = match writes {
        true => build_monitor(config, &manifest, &input, monitor)?,
        false => None,
    };
    let manifest = training_rows(manifest, &config.split)?;
    let rows = TrainingRows {
        count: manifest.records.len(),
        sha256: checkpoint::rows_fingerprint(&manifest),
    };
    if config.run.threads > 0 {
        tch::set_num_threads(config.run.threads as i32);
    }
    let spec = parse_device(&config.run.device).map_err(anyhow::Error::msg)?;
    let (device, ranks) = match &options.rendezvous {
        None => (
            spec.resolve()?,
            Ranks {
                group: None,
                launcher: "",
            },
        ),
        Some(rdzv) => join(config, spec, rdzv, options.dist_timeout, options.quiet)?,
    };
    tch::manual_seed(config.run.seed as i64);

    let (manifest_source, images) = (manifest.source.clone(), manifest.records.len());
    let shard = Shard {
        rank: ranks.rank(),
        world: ranks.world(),
    };
    let source = crate::data::source::ImageSource::open(Some(&config.run.packed), &manifest)?;
    source.check_input(&input)?;
    warn_small_pack(config, &source);
    let loader_config = crate::data::loader::LoaderConfig {
        shard,
        source,
        ..config.loader(device.is_cuda(), &input)
    };
    let loader = PairLoader::new(manifest, loader_config)?;
    let mut moco = Moco::new(device, config.resnet(&input), config.moco(geo_classes))?;
    init_from_backbone(config, run_dir, options, &moco)?;
    if config.run.channels_last {
        moco.to_channels_last()?;
    }
    if let Some(group) = &ranks.group {
        moco.set_process_group(group.clone());
    }
    let sgd = Sgd::new(
        moco.vs_q.variables(),
        config.optimizer.momentum,
        config.optimizer.weight_decay,
    );
    Ok(Loaded {
        ranks,
        device,
        geo_classes,
        rows,
        input,
        manifest_source,
        images,
        loader,
        moco,
        sgd,
        monitor,
    })
}

/// `pretrain --init FILE`: copies the backbone file's weights into both
/// encoders of a run that starts from the beginning (the MLP and geo heads
/// stay freshly initialised, as MoCo's); nothing when `init` is empty or a
/// `--resume` finds a checkpoint (which holds the weights). Every rank
/// reads the same file. Errors: the file's
/// ([`super::encoder_source::read_backbone`]), and an
/// architecture, width, stem or number of input channels other than the
/// run's, naming the flags that would fit.
fn init_from_backbone(
    config: &PretrainConfig,
    run_dir: &Path,
    options: &RunOptions,
    moco: &Moco,
) -> anyhow::Result<()> {
    let path = &config.model.init;
    if path.as_os_str().is_empty()
        || (options.resume && !checkpoint::candidates(run_dir)?.is_empty())
    {
        return Ok(());
    }
    let backbone = super::encoder_source::backbone_of(path)?;
    let (file, run) = (backbone.resnet, moco.resnet);
    if file != run {
        let show = |r: crate::model::ResNetConfig| {
            format!(
                "{} {} {} {} {} {}, {} input channel(s)",
                settings::name("arch"),
                r.arch.name(),
                settings::name("width"),
                r.width,
                settings::name("small_input"),
                r.small_input,
                r.in_channels
            )
        };
        anyhow::bail!(
            "{}: {} holds {} ({}); the run is {}: pass the file's values (the input channels are those of {})",
            path.display(),
            settings::name("init"),
            show(file),
            backbone.layout,
            show(run),
            settings::name("bands")
        );
    }
    backbone.copy_into_moco(moco, path)?;
    let writes = options.rendezvous.as_ref().is_none_or(|r| r.rank == 0);
    if writes && !options.quiet {
        eprintln!(
            "init: both encoders' backbones from {} ({}); fresh MLP head",
            path.display(),
            backbone.layout
        );
    }
    Ok(())
}

/// Warns when the pack's images are smaller than the run resizes them to
/// (its pre-size, else its input size): they are then upsampled.
fn warn_small_pack(config: &PretrainConfig, source: &crate::data::source::ImageSource) {
    let aug = config.aug();
    source.warn_if_smaller(aug.pre_size.unwrap_or(aug.size));
}

/// Joins the data-parallel job of `rdzv`: this rank's device (for `cuda`,
/// and `auto` on a machine with CUDA, see [`rank_cuda_device`]), and its process group (Gloo
/// on the CPU, NCCL on CUDA, collectives failing after `timeout`).
/// Errors: a global batch that does not split over the ranks; a failed
/// rendezvous.
fn join(
    config: &PretrainConfig,
    spec: DeviceSpec,
    rdzv: &Rendezvous,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<(Device, Ranks)> {
    check_batch_split(config, rdzv.world_size, rdzv.launcher)?;
    let device = match spec {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(_) => rank_cuda_device(rdzv)?,
        DeviceSpec::Auto => match DeviceSpec::Auto.resolve()? {
            Device::Cuda(_) => rank_cuda_device(rdzv)?,
            other => other,
        },
    };
    let backend = match device {
        Device::Cuda(_) => Backend::Nccl,
        _ => Backend::Gloo,
    };
    if rdzv.rank == 0 && !quiet {
        eprintln!(
            "rank 0: waiting for {} rank(s) at {}:{} ({} {} s)",
            rdzv.world_size,
            rdzv.master_addr,
            rdzv.master_port,
            settings::name("dist_timeout"),
            timeout.as_secs()
        );
    }
    let group = ProcessGroup::connect(rdzv, backend, device, timeout)?;
    let ranks = Ranks {
        group: Some(Arc::new(group)),
        launcher: rdzv.launcher,
    };
    Ok((device, ranks))
}

/// Checks that `config`'s global batch splits evenly over `world` ranks
/// started by `launcher` (named in the error), as each rank trains on
/// batch / world samples. Called by each rank, and by a launcher before it
/// starts them so that the error is said once.
pub fn check_batch_split(
    config: &PretrainConfig,
    world: usize,
    launcher: &str,
) -> anyhow::Result<()> {
    let batch = config.optimizer.batch_size;
    anyhow::ensure!(
        batch % world == 0,
        "{} {batch} is the global batch, split over the {world} ranks of this {launcher} job: it must be a multiple of the world size {world}",
        settings::name("batch_size"),
    );
    Ok(())
}

/// The CUDA device of the rank `rdzv` describes: `cuda:LOCAL_RANK`
/// (torchrun's one process per GPU), except where the process sees a single
/// GPU, which is then its own (SLURM's `--gpus-per-task=1` or a per-task
/// `CUDA_VISIBLE_DEVICES` bind one GPU to each task, as `cuda:0`).
/// A `--device cuda:K` index is not used: the rank decides. Errors: no
/// CUDA device, fewer than LOCAL_RANK + 1 of them, or several ranks of
/// this machine all seeing the same single GPU (NCCL refuses that).
fn rank_cuda_device(rdzv: &Rendezvous) -> anyhow::Result<Device> {
    // Loads libtorch's CUDA library (and fails without a device) before
    // counting the devices.
    DeviceSpec::Cuda(0).resolve()?;
    let visible = tch::Cuda::device_count() as usize;
    let index = match visible {
        1 => 0,
        _ => rdzv.local_rank,
    };
    anyhow::ensure!(
        visible > 1 || rdzv.local_world_size == 1 || one_gpu_per_task(),
        "{} ranks on this machine (LOCAL_WORLD_SIZE) but this rank sees a single CUDA device: give each rank its own GPU (fewer ranks, or CUDA_VISIBLE_DEVICES per rank)",
        rdzv.local_world_size
    );
    DeviceSpec::Cuda(index).resolve()
}

/// Whether the launcher bound one GPU to each task (SLURM's
/// `--gpus-per-task=1`, or a CUDA_VISIBLE_DEVICES naming one device):
/// then each rank's single visible GPU is a different one.
fn one_gpu_per_task() -> bool {
    let one = |var: &str| std::env::var(var).is_ok_and(|v| v.trim() == "1");
    one("SLURM_GPUS_PER_TASK")
        || std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.contains(',') && !v.is_empty())
}

impl Loaded {
    /// Copies rank 0's model (parameters, BatchNorm statistics, queue) and
    /// SGD momentum buffers into every rank, once each rank has built or
    /// resumed its own (as DDP's start-up broadcast): the ranks then start
    /// identical whatever their initialisation. Nothing in a single process.
    fn sync_from_rank0(&self) -> anyhow::Result<()> {
        let Some(group) = &self.ranks.group else {
            return Ok(());
        };
        let synced = || -> anyhow::Result<()> {
            self.moco.broadcast_from(0)?;
            let buffers: Vec<Tensor> = self.sgd.state().map(|(_, t)| t.shallow_clone()).collect();
            match buffers.is_empty() {
                true => Ok(()),
                false => crate::model::moco::broadcast_in_place(group, &buffers, 0),
            }
        };
        synced().context("copying rank 0's model to every rank at the start")
    }
}

/// Classes of the geo head (largest `geo_cluster` + 1) for the geo
/// variants, `None` for the others. Errors: a row without a cluster.
fn geo_class_count(config: &PretrainConfig, manifest: &Manifest) -> anyhow::Result<Option<i64>> {
    if !config.method.geo() {
        return Ok(None);
    }
    let max = manifest
        .records
        .iter()
        .map(|r| r.geo_cluster)
        .try_fold(0u32, |m, c| c.map(|c| m.max(c)));
    let Some(max) = max else {
        anyhow::bail!(
            "{}: method {:?} needs the geo_cluster column on every row; run `geossl cluster --manifest {} --out ...` first",
            config.manifest.display(),
            config.method,
            config.manifest.display()
        );
    };
    Ok(Some(max as i64 + 1))
}

/// The run's epoch monitor, built by `build` when `knn_every > 0`.
fn build_monitor(
    config: &PretrainConfig,
    manifest: &Manifest,
    input: &InputSpec,
    build: Option<&BuildMonitor>,
) -> anyhow::Result<Option<Box<dyn EpochMonitor>>> {
    if config.monitor.knn_every == 0 {
        return Ok(None);
    }
    let build = build.ok_or_else(|| {
        anyhow::anyhow!(
            "knn_every is {} but pretrain was given no epoch monitor to run (the caller must pass one, e.g. eval::knn::KnnMonitor::build)",
            config.monitor.knn_every
        )
    })?;
    build(manifest, config, input).map(Some)
}

/// Where the run starts: from the newest intact checkpoint with
/// `--resume`, else from the beginning (what an attempt without a
/// checkpoint left is cleared by [`StartPoint::prepare_folder`]). Reads
/// only (every rank of a data-parallel job reads the same checkpoint).
/// Errors: checkpoints there without `--resume`, and those of
/// [`resume_from`].
fn start_point(
    config: &PretrainConfig,
    run_dir: &Path,
    options: &RunOptions,
    loaded: &mut Loaded,
) -> anyhow::Result<StartPoint> {
    if loaded.ranks.writes() {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("{}: cannot create", run_dir.display()))?;
    }
    let existing = checkpoint::candidates(run_dir)?;
    let mut start = StartPoint {
        epoch: 0,
        step: 0,
        first_batch: 0,
        sums: EpochMeter::default(),
        last_checkpoint: None,
        line: format!("{}: starting a new run", run_dir.display()),
        discard: None,
    };
    match (options.resume, existing.is_empty()) {
        (true, false) => {
            let expected = Expected {
                geo_classes: loaded.geo_classes,
                rows: &loaded.rows,
                input: &loaded.input,
            };
            let (moco, sgd) = (&mut loaded.moco, &mut loaded.sgd);
            let resumed = resume_from(run_dir, &existing, config, &expected, moco, sgd)?;
            start = StartPoint::resumed(resumed, loaded.ranks.world());
        }
        (true, true) => {
            // A scheduler's re-run of a job killed before its first
            // checkpoint: what that attempt logged belongs to no checkpoint.
            start.line = format!(
                "{}: no checkpoint to resume from yet; starting from the beginning (the earlier attempt's metrics, TensorBoard events and bad-image list are discarded)",
                run_dir.display()
            );
            start.discard = Some(Some("no checkpoint yet; started from the beginning"));
        }
        (false, false) => anyhow::bail!(
            "{}: the run folder already has checkpoints ({}); pass --resume to continue it or choose another --out",
            run_dir.display(),
            existing[0].display()
        ),
        (false, true) => start.discard = Some(None),
    }
    Ok(start)
}

impl StartPoint {
    /// Clears what an attempt without a checkpoint left, when the run
    /// starts from the beginning, noting a `--resume` that found nothing
    /// in `resumes.log` (rank 0's part of [`start_point`]).
    fn prepare_folder(&self, run_dir: &Path) -> anyhow::Result<()> {
        if let Some(note) = self.discard {
            discard_attempt(run_dir)?;
            if let Some(note) = note {
                append_resume_log(run_dir, note)?;
            }
        }
        Ok(())
    }

    /// The start at a resumed checkpoint, with its line for the console
    /// and `resumes.log` (the settings changed on this resume, and the
    /// number of ranks when it is not the checkpoint's `world_size`).
    fn resumed(resumed: Resumed, world_size: usize) -> Self {
        let Resumed {
            dir,
            state,
            changes,
        } = resumed;
        let (epoch, first_batch, step) = (state.epoch, state.batch_in_epoch, state.step);
        let mut changed = if changes.is_empty() {
            String::new()
        } else {
            format!(
                "; changed: {}",
                changes
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if state.world_size != world_size {
            // Allowed: the global batch, so the optimisation, is the same;
            // only how it is split over the ranks (and their BN groups) differs.
            changed += &format!(
                "; world size {} -> {world_size} (the global batch is split over {world_size} rank(s) now)",
                state.world_size
            );
        }
        Self {
            epoch,
            step,
            first_batch,
            sums: state.epoch_sums,
            line: format!(
                "resuming from {} (epoch {epoch}, batch {first_batch}, step {step}){changed}",
                dir.display()
            ),
            last_checkpoint: Some(dir),
            discard: None,
        }
    }
}

/// The outcome of a resume whose checkpoint has done every epoch (said on
/// stderr unless `quiet`), `None` when there is training to do. Errors: a
/// checkpoint past `epochs`.
fn already_finished(
    config: &PretrainConfig,
    run_dir: &Path,
    start: &StartPoint,
    quiet: bool,
) -> anyhow::Result<Option<PretrainOutcome>> {
    let (epoch, first_batch, step) = (start.epoch, start.first_batch, start.step);
    if epoch > config.optimizer.epochs || (epoch == config.optimizer.epochs && first_batch > 0) {
        anyhow::bail!(
            "{}: the checkpoint is past {epochs} {} ({epoch} epochs and {first_batch} batches done); pass {epochs} {} or more to continue it",
            run_dir.display(),
            config.optimizer.epochs,
            epoch + 1,
            epochs = settings::name("epochs")
        );
    }
    if epoch < config.optimizer.epochs {
        return Ok(None);
    }
    if !quiet {
        eprintln!(
            "{}: already finished ({epoch} of {} epochs, {step} steps); nothing to train (raise {} to continue it)",
            run_dir.display(),
            config.optimizer.epochs,
            settings::name("epochs")
        );
    }
    Ok(Some(PretrainOutcome {
        epochs_done: epoch,
        steps_done: step,
        last_checkpoint: start.last_checkpoint.clone(),
        interrupted_by: None,
        already_finished: true,
    }))
}

impl<'a> Run<'a> {
    /// Opens the run's logs from `start` (a resume is noted in
    /// `resumes.log`, the launch, begun at `launched`, in `run.json`),
    /// writes `config.toml`, registers the stop signals
    /// and says what the run is about to do; rank 0 alone writes and talks
    /// while the others wait, then every rank reads the bad-image list.
    fn open(
        config: PretrainConfig,
        run_dir: &'a Path,
        options: &RunOptions,
        l: Loaded,
        start: StartPoint,
        launched: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Self> {
        let writes = l.ranks.writes();
        if writes && start.last_checkpoint.is_some() {
            append_resume_log(run_dir, &start.line)?;
        }
        let stop = StopSignal::register()?;
        let (log, launch) = match writes {
            true => {
                crate::formats::atomic_write::write_string(
                    &RunDir::new(run_dir).config_toml(),
                    &config.to_toml()?,
                )?;
                let (world, epoch, step) = (l.ranks.world(), start.epoch, start.step);
                let launcher = l.ranks.launcher;
                let launch =
                    LaunchLog::begin(run_dir, launched, l.device, world, launcher, epoch, step)?;
                (Some(MetricsLog::open(run_dir, start.step)?), Some(launch))
            }
            false => (None, None),
        };
        // The list as rank 0 left it (an attempt without a checkpoint
        // discarded): every rank counts the same unreadable images.
        l.ranks.barrier("rank 0 to prepare the run folder")?;
        let bad_images = BadImageLog::open(
            run_dir,
            &l.manifest_source,
            l.images,
            config.run.max_bad_fraction,
            writes,
        )?;
        let batches = l.loader.batches_per_epoch();
        let (epoch, step) = (start.epoch, start.step);
        let end = options.stop_after.map_or(config.optimizer.epochs, |n| {
            (epoch + n).min(config.optimizer.epochs)
        });
        let quiet = options.quiet || !writes;
        if !quiet {
            eprintln!("{}", start.line);
            let mut summary =
                startup_summary(&config, l.device, &l.loader, l.images, batches, epoch, end);
            if let Some(note) = super::config::input_note(&l.input) {
                summary += &format!("{note}\n");
            }
            summary += &ranks_line(&l.ranks, &config, l.device);
            eprint!("{summary}");
        }
        Ok(Self {
            schedule: config.schedule(),
            run_dir,
            quiet,
            ranks: l.ranks,
            device: l.device,
            geo_classes: l.geo_classes,
            rows: l.rows,
            input: l.input,
            loader: l.loader,
            moco: l.moco,
            sgd: l.sgd,
            monitor: l.monitor,
            batches,
            epoch,
            end,
            step,
            first_batch: start.first_batch,
            resumed_sums: start.sums,
            last_checkpoint: start.last_checkpoint,
            last_saved: Instant::now(),
            time_due: false,
            stop_at_epoch_end: None,
            steps_at_start: step,
            first_epoch: epoch,
            log,
            launch,
            bad_images,
            stop,
            progress_lines: ProgressLines::new(!quiet && !std::io::stderr().is_terminal()),
            config,
        })
    }

    /// Every epoch of the invocation (or until a stop signal), then
    /// [`Self::finish`]; a failed collective's error says where training
    /// stood.
    fn train(&mut self) -> anyhow::Result<PretrainOutcome> {
        while self.epoch < self.end {
            match self.run_epoch() {
                Ok(Some(interrupted)) => return Ok(interrupted),
                Ok(None) => {}
                Err(e) => return Err(self.explain_collective_failure(e)),
            }
        }
        self.finish()
            .map_err(|e| self.explain_collective_failure(e))
    }

    /// Notes in `run.json` how the invocation ended (rank 0), and passes
    /// `outcome` on. A record that cannot be written fails a run that
    /// succeeded, and only warns on one that failed (its own error first).
    fn record_end(
        &mut self,
        outcome: anyhow::Result<PretrainOutcome>,
    ) -> anyhow::Result<PretrainOutcome> {
        let Some(launch) = &mut self.launch else {
            return outcome;
        };
        let said = match &outcome {
            Ok(o) => match o.interrupted_by {
                Some(signal) => format!("stopped by {signal}"),
                None if o.epochs_done < self.config.optimizer.epochs => format!(
                    "paused after {} of {} epochs ({})",
                    o.epochs_done,
                    self.config.optimizer.epochs,
                    settings::name("stop_after")
                ),
                None => "finished".to_string(),
            },
            Err(e) => format!("failed: {e:#}"),
        };
        match (launch.end(&said), outcome) {
            (Err(e), Ok(_)) => Err(e),
            (Err(e), Err(failed)) => {
                tracing::warn!("{e:#}");
                Err(failed)
            }
            (Ok(()), outcome) => outcome,
        }
    }

    /// One epoch, from where a resumed checkpoint left it: a step per
    /// batch (step rows, progress, mid-epoch checkpoints when due), then
    /// the epoch row, the monitor and the epoch's checkpoint. Stops between
    /// steps on SIGINT/SIGTERM after a checkpoint (its outcome returned);
    /// data-parallel, after the step in whose all-reduce a rank said so
    /// (after the epoch's end when that was its last step).
    fn run_epoch(&mut self) -> anyhow::Result<Option<PretrainOutcome>> {
        let started = Instant::now();
        let bar = self.epoch_bar();
        let mut meter = std::mem::take(&mut self.resumed_sums);
        let mut lr = 0.0;
        let first = std::mem::take(&mut self.first_batch);
        bar.set_position(first as u64);
        // Drawn now and redrawn while the first batch loads (large images
        // take a while), so the bar is there from the start.
        bar.enable_steady_tick(Duration::from_millis(500));
        let mut next_batch = first;
        let mut save_at_epoch_end = false;
        for (b, batch) in (first..).zip(self.loader.epoch(self.epoch as u64, first)) {
            let alone = self.ranks.group.is_none();
            if let Some(signal) = self.stop.received().filter(|_| alone) {
                return self.interrupt(signal, b, meter, &bar).map(Some);
            }
            let mut batch = batch.with_context(|| {
                format!(
                    "pretraining stopped at epoch {}, batch {b}/{}, after {} optimiser step(s) in this invocation",
                    self.epoch + 1,
                    self.batches,
                    self.step - self.steps_at_start
                )
            })?;
            let bad = std::mem::take(&mut batch.bad);
            if alone {
                self.bad_images.record(&bad)?;
            }
            let (row, flags) = self.train_batch(batch, b, self.flags(bad.len()))?;
            (lr, next_batch) = (row.lr, b + 1);
            meter.add(&row);
            if let Some(log) = &mut self.log {
                log.step(&row)?;
            }
            self.show_step(&bar, &row, (b, first), started);
            if !alone {
                self.after_step_of_all_ranks(flags, &bad)?;
            }
            if let Some(signal) = stop_signal_of_any_rank(flags).filter(|_| !alone) {
                if b + 1 < self.batches {
                    return self.interrupt(signal, b + 1, meter, &bar).map(Some);
                }
                self.stop_at_epoch_end = Some(signal);
                save_at_epoch_end = true;
            } else if self.save_due() {
                if b + 1 < self.batches {
                    self.save_checkpoint(b + 1, meter)?;
                } else {
                    save_at_epoch_end = true;
                }
            }
        }
        bar.finish_and_clear();
        self.check_epoch_complete(next_batch)?;
        self.epoch += 1;
        self.end_epoch(meter, lr, started, save_at_epoch_end)?;
        Ok(self.stop_at_epoch_end.take().map(|signal| {
            self.stop_message(signal, 0);
            self.outcome(Some(signal))
        }))
    }

    /// This rank's flags for the step's all-reduce: its stop signal, a
    /// time-based checkpoint due (rank 0's clock alone decides), and the
    /// unreadable images replaced in its part of the batch.
    fn flags(&self, bad_images: usize) -> StepFlags {
        let signal = self.stop.received();
        StepFlags {
            sigint: u32::from(signal == Some("SIGINT")),
            sigterm: u32::from(signal == Some("SIGTERM")),
            checkpoint_due: u32::from(self.ranks.writes() && self.minutes_due()),
            bad_images: bad_images as u32,
        }
    }

    /// Data-parallel, after each step: the checkpoint flag of rank 0's
    /// clock, and the unreadable images of every rank (gathered only when
    /// some rank met one), which rank 0 lists and every rank counts against
    /// `max_bad_fraction`. `bad`: this rank's, in this step's batch.
    fn after_step_of_all_ranks(
        &mut self,
        flags: StepFlags,
        bad: &[BadImage],
    ) -> anyhow::Result<()> {
        self.time_due = flags.checkpoint_due > 0;
        let Some(group) = self.ranks.group.as_ref().filter(|_| flags.bad_images > 0) else {
            return Ok(());
        };
        let mine: Vec<(&str, &str)> = bad
            .iter()
            .map(|b| (b.path.as_str(), b.error.as_str()))
            .collect();
        let gathered = group
            .all_gather_bytes(&serde_json::to_vec(&mine)?)
            .context("gathering the unreadable images of every rank")?;
        let mut all = Vec::new();
        for bytes in gathered {
            let records: Vec<(String, String)> = serde_json::from_slice(&bytes)?;
            all.extend(
                records
                    .into_iter()
                    .map(|(path, error)| BadImage { path, error }),
            );
        }
        self.bad_images.record(&all)
    }

    /// The epoch's progress bar (hidden when quiet).
    fn epoch_bar(&self) -> indicatif::ProgressBar {
        if self.quiet {
            return indicatif::ProgressBar::hidden();
        }
        progress::bar(
            self.batches as u64,
            &format!("epoch {}/{}", self.epoch + 1, self.config.optimizer.epochs),
        )
    }

    /// One optimiser step on batch `b` of the epoch, with this rank's
    /// `flags`; its step row and the flags summed over the ranks. Errors: a
    /// non-finite loss or a failed collective (naming the last good
    /// checkpoint).
    fn train_batch(
        &mut self,
        batch: PairBatch,
        b: usize,
        flags: StepFlags,
    ) -> anyhow::Result<(MetricsRow, StepFlags)> {
        let step_started = Instant::now();
        let (config, device) = (&self.config, self.device);
        let lr = self.schedule.lr(self.epoch, b, self.batches);
        let q = to_model_input(&batch.query, device, config.run.channels_last)?;
        let k = to_model_input(&batch.key, device, config.run.channels_last)?;
        let geo = batch
            .geo
            .map(|g| g.to_device_(device, g.kind(), true, false));
        let device_batch = DeviceBatch {
            query: &q,
            key: &k,
            geo: geo.as_ref(),
        };
        let settings = StepSettings {
            lr,
            shuffle_seed: seed_for_step(config.run.seed, self.step),
            amp: config.run.amp,
        };
        let step = train_step_with_flags(
            &mut self.moco,
            &mut self.sgd,
            &device_batch,
            settings,
            flags,
        );
        let (out, flags) = match step {
            Err(e) if e.is::<NonFiniteLoss>() => anyhow::bail!(
                "{e} at epoch {}, step {}; training stopped. The last good checkpoint is {}",
                self.epoch + 1,
                self.step + 1,
                self.last_checkpoint_named("none (no checkpoint yet)")
            ),
            r => r?,
        };
        self.step += 1;
        let row = MetricsRow {
            kind: "step".into(),
            epoch: self.epoch + 1,
            step: self.step,
            lr,
            loss: out.loss,
            moco_loss: out.moco_loss,
            moco_acc: out.moco_accuracy,
            geo_loss: out.geo_loss,
            geo_acc: out.geo_accuracy,
            pairs_per_s: self.config.optimizer.batch_size as f64
                / step_started.elapsed().as_secs_f64(),
            seconds: None,
            knn_top1: None,
            time: Some(crate::formats::tensorboard::now()),
        };
        Ok((row, flags))
    }

    /// The bar's position and message after the step of batch `b` (this
    /// invocation began the epoch at batch `first`), and a progress line
    /// when one is due.
    fn show_step(
        &mut self,
        bar: &indicatif::ProgressBar,
        row: &MetricsRow,
        (b, first): (usize, usize),
        started: Instant,
    ) {
        let (epochs, done_here) = (self.config.optimizer.epochs, b + 1 - first);
        let epoch_pairs_per_s =
            (done_here * self.config.optimizer.batch_size) as f64 / started.elapsed().as_secs_f64();
        // Position first: the message's redraw then shows both.
        bar.inc(1);
        bar.set_message(format!(
            "epoch {}/{epochs} loss {:.3} lr {:.4} {:.0} pairs/s",
            self.epoch + 1,
            row.loss,
            row.lr,
            epoch_pairs_per_s
        ));
        if !self.progress_lines.due() {
            return;
        }
        let (batch, batches) = (b + 1, self.batches);
        let left = started
            .elapsed()
            .mul_f64((batches - batch) as f64 / done_here as f64);
        eprintln!(
            "epoch {}/{epochs} batch {batch}/{batches} (step {}): loss {:.4} lr {:.5} {:.1} pairs/s; epoch ends in about {}",
            self.epoch + 1,
            self.step,
            row.loss,
            row.lr,
            epoch_pairs_per_s,
            indicatif::HumanDuration(left)
        );
        self.progress_lines.printed();
    }

    /// Whether a mid-epoch checkpoint is due after this step (every
    /// `checkpoint_every_steps` steps or `checkpoint_every_minutes`; the
    /// minutes on rank 0's clock, as the last step's all-reduce said, in a
    /// data-parallel run, so that every rank decides alike).
    fn save_due(&self) -> bool {
        let config = &self.config;
        (config.run.checkpoint_every_steps > 0
            && self.step % config.run.checkpoint_every_steps == 0)
            || match self.ranks.group {
                None => self.minutes_due(),
                Some(_) => self.time_due,
            }
    }

    /// Whether `checkpoint_every_minutes` have passed on this process's
    /// clock since the last checkpoint.
    fn minutes_due(&self) -> bool {
        let minutes = self.config.run.checkpoint_every_minutes;
        minutes > 0.0 && self.last_saved.elapsed().as_secs_f64() >= 60.0 * minutes
    }

    /// Saves a checkpoint at `batch_in_epoch` batches into the current epoch
    /// (0: at the epoch's start) with the epoch's sums so far: rank 0
    /// writes it while the others wait for it at a barrier.
    fn save_checkpoint(
        &mut self,
        batch_in_epoch: usize,
        epoch_sums: EpochMeter,
    ) -> anyhow::Result<PathBuf> {
        let state = TrainState {
            batch_in_epoch,
            epoch_sums,
            world_size: self.ranks.world(),
            input: self.input.clone(),
            ..TrainState::at(
                &self.config,
                self.geo_classes,
                self.epoch,
                self.step,
                self.moco.queue.ptr(),
            )
        };
        let (moco, sgd) = (&self.moco, &self.sgd);
        let dir = match &mut self.log {
            Some(log) => {
                let dir = save(self.run_dir, moco, sgd, state, &self.rows, log)?;
                if let Some(launch) = &mut self.launch {
                    launch.progress(self.epoch, self.step)?;
                }
                // Complete on disk: the last good one even when another
                // rank fails at the barrier below.
                self.last_checkpoint = Some(dir.clone());
                dir
            }
            None => {
                checkpoint::checkpoints_dir(self.run_dir).join(checkpoint::checkpoint_name(&state))
            }
        };
        self.ranks
            .barrier(&format!("every rank after checkpoint {}", dir.display()))?;
        self.last_checkpoint = Some(dir.clone());
        self.last_saved = Instant::now();
        self.time_due = false;
        Ok(dir)
    }

    /// A stop signal before batch `b`: a checkpoint there, and the outcome.
    fn interrupt(
        &mut self,
        signal: &'static str,
        b: usize,
        sums: EpochMeter,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<PretrainOutcome> {
        self.save_checkpoint(b, sums)?;
        bar.finish_and_clear();
        self.stop_message(signal, b);
        Ok(self.outcome(Some(signal)))
    }

    /// Says (rank 0) where a stop signal stopped the run: before batch `b`
    /// of the current epoch, at its last checkpoint.
    fn stop_message(&self, signal: &str, b: usize) {
        if !self.ranks.writes() {
            return;
        }
        // After an epoch's end (b = 0), `epoch` is already the next one's.
        let epoch = self.epoch + 1;
        let received = match (self.ranks.group.is_some(), self.stop.received()) {
            (true, None) => " (received by another rank)",
            _ => "",
        };
        eprintln!(
            "{signal}{received}: stopped at epoch {epoch}, batch {b}/{} (step {}); checkpoint {}; continue with --resume",
            self.batches,
            self.step,
            self.last_checkpoint_named("none")
        );
    }

    /// What this invocation did, stopped by `interrupted_by` or not.
    fn outcome(&self, interrupted_by: Option<&'static str>) -> PretrainOutcome {
        PretrainOutcome {
            epochs_done: self.epoch,
            steps_done: self.step,
            last_checkpoint: self.last_checkpoint.clone(),
            interrupted_by,
            already_finished: false,
        }
    }

    /// `e` with where training stopped and the last good checkpoint, when
    /// a collective failed (another rank exited, or the timeout passed);
    /// other errors say so themselves.
    fn explain_collective_failure(&self, e: anyhow::Error) -> anyhow::Error {
        if !e.chain().any(|c| c.is::<CollectiveError>()) {
            return e;
        }
        let context = format!(
            "rank {} of {}: training stopped at epoch {} after step {}. The last good checkpoint is {}",
            self.ranks.rank(),
            self.ranks.world(),
            self.epoch + 1,
            self.step,
            self.last_checkpoint_named("none (no checkpoint yet)")
        );
        e.context(context)
    }

    /// The last checkpoint's folder, or `none` when there is none yet.
    fn last_checkpoint_named(&self, none: &str) -> String {
        self.last_checkpoint
            .as_ref()
            .map_or(none.to_string(), |p| p.display().to_string())
    }

    /// Fails when the loader ended the epoch early without an error.
    fn check_epoch_complete(&self, next_batch: usize) -> anyhow::Result<()> {
        // A loader whose producer died (a panic in a worker) ends the
        // stream without an error; an epoch must not pass for complete.
        anyhow::ensure!(
            next_batch == self.batches,
            "the data loader ended epoch {} after {next_batch} of its {} batches without reporting an error (a worker thread stopped; see above); training stopped after {} optimiser step(s) in this invocation. The last checkpoint is {}",
            self.epoch + 1,
            self.batches,
            self.step - self.steps_at_start,
            self.last_checkpoint_named("none")
        );
        Ok(())
    }

    /// After an epoch (already counted in `self.epoch`): its row with the
    /// monitor's figure, the console lines, the epoch's checkpoint when due.
    /// Errors: a monitor failure under `on_bad_image = fail`, once the
    /// epoch's checkpoint is saved.
    fn end_epoch(
        &mut self,
        sums: EpochMeter,
        lr: f64,
        started: Instant,
        save_at_epoch_end: bool,
    ) -> anyhow::Result<()> {
        let row = self.epoch_row(sums, lr, started);
        let (knn_top1, monitor_failed) = self.monitor_epoch()?;
        let row = MetricsRow { knn_top1, ..row };
        if let Some(log) = &mut self.log {
            log.epoch(&row)?;
        }
        if !self.quiet {
            self.print_epoch(&row);
        }
        let (epoch, config) = (self.epoch, &self.config);
        if epoch % config.run.checkpoint_every == 0
            || epoch == config.optimizer.epochs
            || epoch == self.end
            || save_at_epoch_end
            || self.save_due()
            || monitor_failed.is_some()
        {
            self.save_checkpoint(0, EpochMeter::default())?;
        }
        if let Some(e) = monitor_failed {
            self.bad_images.summarise();
            return Err(e.context(format!(
                "the kNN monitor of epoch {epoch} failed ({} fail); the epoch's checkpoint is saved ({}), so --resume goes on after it",
                settings::name("on_bad_image"),
                self.last_checkpoint_named("none"),
            )));
        }
        Ok(())
    }

    /// The epoch row: means of the step metrics, the last step's lr, the
    /// epoch's throughput and duration (no monitor figure yet).
    fn epoch_row(&self, sums: EpochMeter, lr: f64, started: Instant) -> MetricsRow {
        let mean = sums.mean(self.batches);
        let seconds = started.elapsed().as_secs_f64();
        MetricsRow {
            kind: "epoch".into(),
            epoch: self.epoch,
            step: self.step,
            lr,
            loss: mean.loss,
            moco_loss: mean.moco_loss,
            moco_acc: mean.moco_acc,
            geo_loss: self.geo_classes.map(|_| mean.geo_loss),
            geo_acc: self.geo_classes.map(|_| mean.geo_acc),
            pairs_per_s: (self.batches * self.config.optimizer.batch_size) as f64 / seconds,
            seconds: Some(seconds),
            knn_top1: None,
            time: Some(crate::formats::tensorboard::now()),
        }
    }

    /// The monitor's figure when this epoch is one it runs at, and its
    /// error when that must stop the run (`on_bad_image = fail`). Rank 0
    /// alone runs it; the others wait for its outcome (a broadcast), so
    /// that every rank saves and stops alike. Errors: a failed collective.
    fn monitor_epoch(&mut self) -> anyhow::Result<(Option<f64>, Option<anyhow::Error>)> {
        let (epoch, every) = (self.epoch, self.config.monitor.knn_every);
        if every == 0 || !(epoch % every == 0 || epoch == self.end) {
            return Ok((None, None));
        }
        let outcome = self.run_monitor(epoch);
        match &self.ranks.group {
            None => Ok(outcome),
            Some(group) => share_monitor_outcome(group, outcome, self.device),
        }
    }

    /// The monitor's figure at `epoch` (none on a rank without the
    /// monitor), and its error when that must stop the run.
    fn run_monitor(&mut self, epoch: usize) -> (Option<f64>, Option<anyhow::Error>) {
        let Some(monitor) = self.monitor.as_mut() else {
            return (None, None);
        };
        // The monitor only watches: a figure it cannot compute (every test
        // image unreadable, say) is a warning and a missing value, never
        // the end of the epochs trained. Under --on-bad-image fail it stops
        // the run, but only once this epoch's checkpoint is saved, so that
        // a scheduler's re-run of the same --resume line moves on.
        match monitor.evaluate(&self.moco.encoder_q.backbone, self.device, epoch) {
            Ok(top1) => (Some(top1), None),
            Err(e) if self.config.run.on_bad_image == BadImagePolicy::Fail => (None, Some(e)),
            Err(e) => {
                tracing::warn!(
                    "epoch {epoch}: the kNN monitor gave no figure, none is recorded for this epoch: {e:#}"
                );
                (None, None)
            }
        }
    }

    /// The epoch's console lines: means, lr and throughput; the monitor's
    /// figure.
    fn print_epoch(&self, row: &MetricsRow) {
        let epoch = self.epoch;
        eprintln!(
            "epoch {epoch}/{}: loss {:.4} (InfoNCE {:.4}, acc {:.3}{}) lr {:.5} {:.1} pairs/s",
            self.config.optimizer.epochs,
            row.loss,
            row.moco_loss,
            row.moco_acc,
            row.geo_loss.map_or(String::new(), |g| format!(
                "; geo {:.4}, acc {:.3}",
                g,
                row.geo_acc.unwrap_or(0.0)
            )),
            row.lr,
            row.pairs_per_s
        );
        if let Some(k) = row.knn_top1 {
            eprintln!("epoch {epoch}: kNN top-1 {:.2}%", 100.0 * k);
        }
    }

    /// The outcome once every epoch of the invocation ran. Errors: no
    /// optimiser step ran.
    fn finish(&self) -> anyhow::Result<PretrainOutcome> {
        // A net under the checks above: an invocation asked to train that
        // trained nothing must not look like a success.
        self.ranks.barrier("every rank to finish")?;
        anyhow::ensure!(
            self.step > self.steps_at_start,
            "no optimiser step ran (epochs {}..{} of {}, {} batches each); nothing was trained",
            self.first_epoch + 1,
            self.end,
            self.config.optimizer.epochs,
            self.batches
        );
        self.bad_images.summarise();
        Ok(self.outcome(None))
    }
}

/// The stop signal some rank received, from a step's reduced flags.
fn stop_signal_of_any_rank(flags: StepFlags) -> Option<&'static str> {
    match (flags.sigint, flags.sigterm) {
        (0, 0) => None,
        (0, _) => Some("SIGTERM"),
        _ => Some("SIGINT"),
    }
}

/// Rank 0's monitor `outcome` on every rank (a broadcast of [figure or
/// NaN, failed]): the others learn whether it failed, to save and stop
/// alike. Errors: a failed collective.
fn share_monitor_outcome(
    group: &ProcessGroup,
    (top1, failed): (Option<f64>, Option<anyhow::Error>),
    device: Device,
) -> anyhow::Result<(Option<f64>, Option<anyhow::Error>)> {
    let values = [
        top1.unwrap_or(f64::NAN),
        f64::from(u8::from(failed.is_some())),
    ];
    let shared = Tensor::from_slice(&values).to_device(device);
    group
        .broadcast(std::slice::from_ref(&shared), 0)
        .context("waiting for rank 0's kNN monitor")?;
    if group.rank() == 0 {
        return Ok((top1, failed));
    }
    let v: Vec<f64> = shared.to_device(Device::Cpu).try_into()?;
    let failed = (v[1] > 0.0).then(|| anyhow::anyhow!("rank 0's kNN monitor failed (see its log)"));
    Ok((v[0].is_finite().then_some(v[0]), failed))
}

/// The start-up summary's line of a data-parallel run: ranks, launcher,
/// backend, and how the global batch splits; nothing in a single process.
fn ranks_line(ranks: &Ranks, config: &PretrainConfig, device: Device) -> String {
    if ranks.group.is_none() {
        return String::new();
    }
    let world = ranks.world();
    let batch = config.optimizer.batch_size;
    let per_rank = (batch / world) as i64;
    let groups = crate::model::moco::bn_groups_for(config.moco.bn_groups, per_rank);
    format!(
        "data-parallel: {world} rank{} started by {} ({} on {}), global batch {batch} = {world} x {} per rank, BatchNorm over {} groups of {} (--bn-groups {groups} per rank); rank 0 writes the run folder\n",
        if world == 1 { "" } else { "s" },
        ranks.launcher,
        if device.is_cuda() { "NCCL" } else { "Gloo" },
        match device {
            Device::Cuda(i) => format!("cuda:{i} on rank 0"),
            _ => "cpu".to_string(),
        },
        batch / world,
        world as i64 * groups,
        per_rank / groups
    )
}

/// Progress lines for a job log (stderr not a terminal): the first step's,
/// then one every [`PROGRESS_LINE_EVERY`].
struct ProgressLines {
    enabled: bool,
    last: Option<Instant>,
}

impl ProgressLines {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: None,
        }
    }

    fn due(&self) -> bool {
        self.enabled && self.last.is_none_or(|t| t.elapsed() >= PROGRESS_LINE_EVERY)
    }

    fn printed(&mut self) {
        self.last = Some(Instant::now());
    }
}

/// What a checkpoint records of the training rows (see
/// [`checkpoint::rows_fingerprint`]).
struct TrainingRows {
    count: usize,
    sha256: String,
}

/// Saves a checkpoint of `state` (with the training rows), after making the
/// metrics it covers durable, and prunes what it supersedes.
fn save(
    run_dir: &Path,
    moco: &Moco,
    sgd: &Sgd,
    state: TrainState,
    rows: &TrainingRows,
    log: &mut MetricsLog,
) -> anyhow::Result<PathBuf> {
    log.sync()?;
    let state = TrainState {
        rows: Some(rows.count),
        rows_sha256: Some(rows.sha256.clone()),
        ..state
    };
    let dir = checkpoint::save(run_dir, moco, sgd, &state)?;
    checkpoint::prune(run_dir, Some(&dir))?;
    Ok(dir)
}

/// Removes what an attempt that left no checkpoint wrote (metrics, the
/// pretraining TensorBoard events, the bad-image list), so that the run
/// starting now is the folder's only history.
fn discard_attempt(run_dir: &Path) -> anyhow::Result<()> {
    let layout = RunDir::new(run_dir);
    for path in [
        layout.metrics_jsonl(),
        layout.metrics_csv(),
        layout.bad_images_csv(),
    ] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("{}: cannot remove", path.display()))
            }
            _ => {}
        }
    }
    let tb = layout.tensorboard("pretrain");
    if tb.exists() {
        std::fs::remove_dir_all(&tb).with_context(|| format!("{}: cannot remove", tb.display()))?;
    }
    checkpoint::prune(run_dir, None)
}

/// Appends a dated line to `RUN_DIR/resumes.log`: each `--resume`, where it
/// continued from and which settings it changed.
fn append_resume_log(run_dir: &Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let path = RunDir::new(run_dir).resumes_log();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    writeln!(
        f,
        "{} {line}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .with_context(|| format!("{}: cannot write", path.display()))
}

/// What the run is about to do, for the terminal or the job log: device and
/// threads, model, data (images, places and, with temporal positives, the
/// places with a single view), steps, batch, learning rate and checkpoints;
/// and a warning when temporal positives cannot occur.
fn startup_summary(
    config: &PretrainConfig,
    device: Device,
    loader: &PairLoader,
    images: usize,
    batches: usize,
    epoch: usize,
    end: usize,
) -> String {
    let places = &loader.index().locations;
    let single = places.iter().filter(|l| l.views.len() < 2).count();
    let mut s = model_line(config, device);
    s += &format!(
        "data: {} images at {} places (split {}){}\n",
        images,
        places.len(),
        config.split,
        if config.method.temporal() {
            format!(
                "; {single} places with a single view (their positive pairs are two crops of one image)"
            )
        } else {
            String::new()
        }
    );
    s += &steps_lines(config, batches, epoch, end);
    if config.method.temporal() && single == places.len() {
        s += &format!(
            "warning: no place has two views (location_id with several images), so temporal positives never occur and {} reduces to {}\n",
            config.method.name(),
            if config.method.geo() {
                "MoCo-v2 + Geo (moco-geo)"
            } else {
                "MoCo-v2 (moco)"
            }
        );
    }
    s
}

/// The summary's first line: method, model, crops, device and threads.
fn model_line(config: &PretrainConfig, device: Device) -> String {
    let device_name = crate::model::device::device_name(device);
    let threads = if config.run.threads > 0 {
        config.run.threads.to_string()
    } else {
        format!("{} (libtorch's default)", tch::get_num_threads())
    };
    format!(
        "pretrain {}: {} width {}{}, {} px crops of {} px, on {device_name}, {threads} CPU threads\n",
        config.method.name(),
        config.model.arch.name(),
        config.model.width,
        if config.model.small_input {
            " (small-input stem)"
        } else {
            ""
        },
        config.data.image_size,
        config.aug().pre_size.unwrap_or(config.data.image_size),
    )
}

/// The summary's steps (schedule, batch, learning rate) and checkpoints lines.
fn steps_lines(config: &PretrainConfig, batches: usize, epoch: usize, end: usize) -> String {
    let schedule = config.schedule();
    let mut s = format!(
        "steps: {batches} per epoch, epochs {}..{end} of {} ({} steps in this invocation); global batch {}, lr {} ({} x {}/256, {})\n",
        epoch + 1,
        config.optimizer.epochs,
        (end - epoch) * batches,
        config.optimizer.batch_size,
        schedule.base_lr,
        config.optimizer.lr,
        config.optimizer.batch_size,
        if config.optimizer.cos { "cosine" } else { "step decay" }
    );
    let mut every = vec![format!("every {} epochs", config.run.checkpoint_every)];
    if config.run.checkpoint_every_steps > 0 {
        every.push(format!("every {} steps", config.run.checkpoint_every_steps));
    }
    if config.run.checkpoint_every_minutes > 0.0 {
        every.push(format!(
            "every {} minutes",
            config.run.checkpoint_every_minutes
        ));
    }
    s += &format!("checkpoints: {}\n", every.join(", "));
    s
}

/// The unreadable images a run met: `RUN_DIR/bad_images.csv` (path, error;
/// each image once, across resumes), a count, and the stop once there are
/// too many.
struct BadImageLog {
    path: PathBuf,
    manifest_source: PathBuf,
    /// Manifest paths of the images listed so far.
    seen: std::collections::BTreeSet<String>,
    /// Images in the manifest.
    total: usize,
    max_fraction: f64,
    new_this_run: usize,
    /// Write the list and warn (rank 0), or only count.
    writes: bool,
}

impl BadImageLog {
    /// The log of `run_dir` for a run over `total` images of the manifest
    /// read from `manifest_source`; only counted, not written, unless
    /// `writes` (rank 0).
    fn open(
        run_dir: &Path,
        manifest_source: &Path,
        total: usize,
        max_fraction: f64,
        writes: bool,
    ) -> anyhow::Result<Self> {
        let path = RunDir::new(run_dir).bad_images_csv();
        let mut seen = std::collections::BTreeSet::new();
        if let Ok(mut r) = csv::Reader::from_path(&path) {
            for rec in r.records().flatten() {
                if let Some(p) = rec.get(0) {
                    seen.insert(p.to_string());
                }
            }
        }
        Ok(Self {
            path,
            manifest_source: manifest_source.to_path_buf(),
            seen,
            total,
            max_fraction,
            new_this_run: 0,
            writes,
        })
    }

    fn record(&mut self, bad: &[crate::data::loader::BadImage]) -> anyhow::Result<()> {
        for b in bad {
            if !self.seen.insert(b.path.clone()) {
                continue;
            }
            self.new_this_run += 1;
            if !self.writes {
                continue;
            }
            let fresh = !self.path.exists();
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("{}: cannot open", self.path.display()))?;
            let mut w = csv::Writer::from_writer(file);
            if fresh {
                w.write_record(["path", "error"])?;
            }
            w.write_record([b.path.as_str(), b.error.as_str()])?;
            w.flush()?;
            tracing::warn!("skipped unreadable image: {}", b.error);
        }
        let limit = self.max_fraction * self.total as f64;
        anyhow::ensure!(
            (self.seen.len() as f64) <= limit,
            "{} of the {} images of {} could not be read ({:.2}%, more than {} {}); they are listed in {}",
            self.seen.len(),
            self.total,
            self.manifest_source.display(),
            100.0 * self.seen.len() as f64 / self.total as f64,
            settings::name("max_bad_fraction"),
            self.max_fraction,
            self.path.display()
        );
        Ok(())
    }

    /// Says how many images were skipped (rank 0 alone).
    fn summarise(&self) {
        if self.writes && !self.seen.is_empty() {
            eprintln!(
                "skipped {} unreadable image(s) ({} new in this invocation), each replaced by another sample; listed in {}",
                self.seen.len(),
                self.new_this_run,
                self.path.display()
            );
        }
    }
}

struct Resumed {
    dir: PathBuf,
    state: TrainState,
    /// Settings of [`CHANGEABLE_ON_RESUME`] that differ from the checkpoint's.
    changes: Vec<SettingChange>,
}

/// Loads the newest checkpoint of `candidates` that is intact, reporting
/// each damaged one it passes over. Refuses, naming every difference, a
/// requested run that differs from the checkpoint's in a setting that
/// defines the run, in its geo classes or in its training rows; and stops
/// at a checkpoint whose tensors do not fit the model (a
/// [`checkpoint::Mismatch`]), which is no damage to pass over.
fn resume_from(
    run_dir: &Path,
    candidates: &[PathBuf],
    config: &PretrainConfig,
    expected: &Expected,
    moco: &mut Moco,
    sgd: &mut Sgd,
) -> anyhow::Result<Resumed> {
    let mut damaged = Vec::new();
    for dir in candidates {
        let state = match checkpoint::read_state(dir) {
            Ok(state) => state,
            Err(e) => {
                eprintln!(
                    "warning: checkpoint {} cannot be used: {e:#}",
                    dir.display()
                );
                damaged.push(format!("{} ({e:#})", dir.display()));
                continue;
            }
        };
        let diff = resume_diff(config, &state, expected)?;
        if !diff.refused.is_empty() {
            return Err(refused_resume(run_dir, dir, &diff.refused));
        }
        match checkpoint::load(dir, moco, sgd) {
            Ok(state) => {
                if !damaged.is_empty() {
                    eprintln!(
                        "warning: resuming from {}, the newest intact checkpoint; skipped: {}",
                        dir.display(),
                        damaged.join("; ")
                    );
                }
                return Ok(Resumed {
                    dir: dir.clone(),
                    state,
                    changes: diff.allowed,
                });
            }
            Err(e) if e.is::<checkpoint::Mismatch>() => {
                return Err(e.context(format!(
                    "{}: cannot resume: the checkpoint is intact but holds another model than the one requested",
                    run_dir.display()
                )))
            }
            Err(e) => {
                eprintln!(
                    "warning: checkpoint {} cannot be used: {e:#}",
                    dir.display()
                );
                damaged.push(format!("{} ({e:#})", dir.display()));
            }
        }
    }
    anyhow::bail!(
        "no intact checkpoint to resume from: {}",
        damaged.join("; ")
    )
}

/// What a checkpoint must hold besides its config for a resume: the
/// requested run's geo classes, training rows and resolved input.
struct Expected<'a> {
    geo_classes: Option<i64>,
    rows: &'a TrainingRows,
    input: &'a InputSpec,
}

/// How the requested run differs from checkpoint `state`'s: the settings
/// that may change on `--resume` and those that may not (including the
/// geo classes, the training rows and the resolved input: bands,
/// radiometry and normalisation, which band statistics recomputed since
/// would change).
fn resume_diff(
    config: &PretrainConfig,
    state: &TrainState,
    expected: &Expected,
) -> anyhow::Result<super::config::ResumeDiff> {
    let Expected {
        geo_classes,
        rows,
        input,
    } = *expected;
    let mut diff = config.resume_diff(&state.config)?;
    if state.imported_from.is_some() {
        // The config of an imported checkpoint is a guess; what must
        // hold (the model's shapes) is checked on its tensors below.
        let guessed = std::mem::take(&mut diff.refused);
        diff.allowed.extend(guessed);
    }
    if state.geo_classes != geo_classes {
        let show = |g: Option<i64>| g.map_or("none".to_string(), |k| k.to_string());
        diff.refused.push(SettingChange {
            key: "geo classes (largest geo_cluster of the manifest + 1)".into(),
            old: show(state.geo_classes),
            new: show(geo_classes),
        });
    }
    if state.input != *input && state.imported_from.is_none() {
        diff.refused.push(SettingChange {
            key: "input (resolved bands, radiometry and normalisation)".into(),
            old: input_summary(&state.input),
            new: input_summary(input),
        });
    }
    if let Some(sha) = state.rows_sha256.as_ref().filter(|s| **s != rows.sha256) {
        let show = |n: Option<usize>, sha: &str| {
            format!(
                "{} rows (fingerprint {})",
                n.map_or("?".to_string(), |n| n.to_string()),
                &sha[..12.min(sha.len())]
            )
        };
        diff.refused.push(SettingChange {
            key: format!("training rows of the manifest (split {})", config.split),
            old: show(state.rows, sha),
            new: show(Some(rows.count), &rows.sha256),
        });
    }
    Ok(diff)
}

/// `bands 1,2,3 (red, green, blue), radiometry auto, mean [..], std [..]`:
/// what a refused resume shows of an input.
fn input_summary(input: &InputSpec) -> String {
    let bands: Vec<String> = input.bands.iter().map(usize::to_string).collect();
    format!(
        "bands {} ({}), radiometry {}, mean {:?}, std {:?}",
        bands.join(","),
        input.band_names.join(", "),
        input.radiometry,
        input.mean,
        input.std
    )
}

/// The refusal of a `--resume` onto checkpoint `dir` that would change
/// the `refused` settings.
fn refused_resume(run_dir: &Path, dir: &Path, refused: &[SettingChange]) -> anyhow::Error {
    anyhow::anyhow!(
"{}: --resume would change what this run is; these settings differ from those of its checkpoint {}:\n  {}\nResume with the checkpoint's values (drop these flags: the run's config.toml supplies them), or start a new run in another --out. Only these may change on --resume: {}",
run_dir.display(),
dir.display(),
refused
    .iter()
    .map(|c| c.to_string())
    .collect::<Vec<_>>()
    .join("\n  "),
CHANGEABLE_ON_RESUME
    .iter()
    .map(|k| settings::name(k))
    .collect::<Vec<_>>()
    .join(", ")
    )
}

/// SIGINT/SIGTERM while pretraining: noted, and acted on between steps
/// (checkpoint, clean exit). Unregistered when dropped, so the signals'
/// usual meaning returns once the loop is over.
struct StopSignal {
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl StopSignal {
    fn register() -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM] {
            ids.push(signal_hook::flag::register_usize(
                sig,
                received.clone(),
                sig as usize,
            )?);
        }
        Ok(Self { received, ids })
    }

    /// The name of the signal received, if any.
    fn received(&self) -> Option<&'static str> {
        match self.received.load(std::sync::atomic::Ordering::SeqCst) as i32 {
            0 => None,
            signal_hook::consts::SIGINT => Some("SIGINT"),
            _ => Some("SIGTERM"),
        }
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor builder that must not be reached, or that fails visibly.
    fn failing_build(
        _: &Manifest,
        _: &PretrainConfig,
        _: &InputSpec,
    ) -> anyhow::Result<Box<dyn EpochMonitor>> {
        anyhow::bail!("the builder ran")
    }

    #[test]
    fn a_resume_on_another_number_of_ranks_is_noted() {
        let resumed = |written_by: usize, now: usize| {
            let state = TrainState {
                batch_in_epoch: 3,
                world_size: written_by,
                ..TrainState::at(&PretrainConfig::default(), None, 1, 9, 0)
            };
            let dir = PathBuf::from("run/checkpoints/epoch-0001-batch-000003");
            let changes = Vec::new();
            StartPoint::resumed(
                Resumed {
                    dir,
                    state,
                    changes,
                },
                now,
            )
            .line
        };
        assert_eq!(
            resumed(2, 2),
            "resuming from run/checkpoints/epoch-0001-batch-000003 (epoch 1, batch 3, step 9)"
        );
        assert_eq!(
            resumed(1, 2),
            "resuming from run/checkpoints/epoch-0001-batch-000003 (epoch 1, batch 3, step 9); world size 1 -> 2 (the global batch is split over 2 rank(s) now)"
        );
    }

    #[test]
    fn a_monitor_is_built_only_for_knn_every_and_its_absence_is_an_error() {
        let manifest = Manifest::default();
        let mut off = PretrainConfig::default();
        off.monitor.knn_every = 0;
        let built =
            build_monitor(&off, &manifest, &InputSpec::rgb(), Some(&failing_build)).unwrap();
        assert!(built.is_none(), "knn_every 0 builds nothing");
        let mut on = PretrainConfig::default();
        on.monitor.knn_every = 2;
        let err = build_monitor(&on, &manifest, &InputSpec::rgb(), Some(&failing_build))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "the builder ran");
        let err = build_monitor(&on, &manifest, &InputSpec::rgb(), None)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("knn_every is 2 but pretrain was given no epoch monitor"),
            "{err}"
        );
    }
}
