//! The pretraining loop: data, MoCo step, SGD, schedule, logs, checkpoints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::checkpoint::{self, TrainState};
use super::config::{PretrainConfig, SettingChange, CHANGEABLE_ON_RESUME};
use super::metrics::{MetricsLog, MetricsRow};
use super::sgd::Sgd;
use super::step::{train_step, DeviceBatch, NonFiniteLoss, StepSettings};
use crate::data::loader::{BadImagePolicy, PairLoader};
use crate::data::{Manifest, Split};
use crate::eval::knn::{knn_eval, KnnConfig};
use crate::eval::{Target, Task};
use crate::model::{parse_device, torch_ext, Moco};
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
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the newest intact checkpoint; without one (a run
    /// killed before its first checkpoint, or a new folder) start from the
    /// beginning, so that a scheduler can re-run one command line.
    pub resume: bool,
    /// Stop after this many epochs in this invocation (a later `--resume` continues).
    pub stop_after: Option<usize>,
    /// No start-up summary, progress bar or progress lines.
    pub quiet: bool,
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

/// Pretrains `config` into `run_dir` (see the module documentation).
///
/// Errors: bad settings; `--resume` that would change what the run is
/// (every differing setting named, old and new value) or onto a checkpoint
/// whose tensors do not fit the model; a data loader that fails or stops
/// early; a non-finite loss; and an invocation asked to train that ran no
/// optimiser step.
pub fn pretrain(
    config: &PretrainConfig,
    run_dir: &Path,
    options: &RunOptions,
) -> anyhow::Result<PretrainOutcome> {
    config.validate()?;
    anyhow::ensure!(
        options.stop_after != Some(0),
        "{} must be at least 1 (epochs to run in this invocation)",
        settings::name("stop_after")
    );
    // Recorded absolute in config.toml and the checkpoints, so that
    // `--resume`, `report` and `export` find it from any working directory.
    let config = &PretrainConfig {
        manifest: std::path::absolute(&config.manifest)
            .with_context(|| format!("{}: cannot make absolute", config.manifest.display()))?,
        ..config.clone()
    };
    let manifest = Manifest::read(&config.manifest)?;
    let geo_classes = if config.method.geo() {
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
        Some(max as i64 + 1)
    } else {
        None
    };
    // The kNN monitor sees every row of its two splits, whatever the
    // pretraining split.
    let knn_task = if config.monitor.knn_every > 0 {
        let mut task = Task::new(
            std::sync::Arc::new(manifest.clone()),
            Target::Label,
            &config.monitor.knn_train_split,
            &config.monitor.knn_test_split,
            None,
        )
        .context("--knn-every needs labels on the kNN splits")?;
        task.on_bad_image = config.run.on_bad_image;
        Some(task)
    } else {
        None
    };
    let manifest = training_rows(manifest, &config.split)?;
    let rows = TrainingRows {
        count: manifest.records.len(),
        sha256: checkpoint::rows_fingerprint(&manifest),
    };
    if config.run.threads > 0 {
        tch::set_num_threads(config.run.threads as i32);
    }
    let device = parse_device(&config.run.device)
        .map_err(anyhow::Error::msg)?
        .resolve()?;
    tch::manual_seed(config.run.seed as i64);

    let (manifest_source, images) = (manifest.source.clone(), manifest.records.len());
    let loader = PairLoader::new(manifest, config.loader(device.is_cuda()))?;
    let mut moco = Moco::new(device, config.resnet(), config.moco(geo_classes))?;
    if config.run.channels_last {
        moco.to_channels_last()?;
    }
    let mut sgd = Sgd::new(
        moco.vs_q.variables(),
        config.optimizer.momentum,
        config.optimizer.weight_decay,
    );

    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("{}: cannot create", run_dir.display()))?;
    let existing = checkpoint::candidates(run_dir)?;
    let (mut epoch, mut step) = (0usize, 0u64);
    let (mut first_batch, mut resumed_sums) = (0usize, [0.0f64; 5]);
    let mut last_checkpoint = None;
    let mut start_line = format!("{}: starting a new run", run_dir.display());
    match (options.resume, existing.is_empty()) {
        (true, false) => {
            let Resumed {
                dir,
                state,
                changes,
            } = resume_from(run_dir, &existing, config, geo_classes, &rows, &mut moco, &mut sgd)?;
            (epoch, step) = (state.epoch, state.step);
            (first_batch, resumed_sums) = (state.batch_in_epoch, state.epoch_sums);
            let changed = if changes.is_empty() {
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
            start_line = format!(
                "resuming from {} (epoch {epoch}, batch {first_batch}, step {step}){changed}",
                dir.display()
            );
            last_checkpoint = Some(dir);
        }
        (true, true) => {
            // A scheduler's re-run of a job killed before its first
            // checkpoint: what that attempt logged belongs to no checkpoint.
            start_line = format!(
                "{}: no checkpoint to resume from yet; starting from the beginning (the earlier attempt's metrics, TensorBoard events and bad-image list are discarded)",
                run_dir.display()
            );
            discard_attempt(run_dir)?;
            append_resume_log(run_dir, "no checkpoint yet; started from the beginning")?;
        }
        (false, false) => anyhow::bail!(
            "{}: the run folder already has checkpoints ({}); pass --resume to continue it or choose another --out",
            run_dir.display(),
            existing[0].display()
        ),
        (false, true) => discard_attempt(run_dir)?,
    }
    if epoch > config.optimizer.epochs || (epoch == config.optimizer.epochs && first_batch > 0) {
        anyhow::bail!(
            "{}: the checkpoint is past {epochs} {} ({epoch} epochs and {first_batch} batches done); pass {epochs} {} or more to continue it",
            run_dir.display(),
            config.optimizer.epochs,
            epoch + 1,
            epochs = settings::name("epochs")
        );
    }
    if epoch == config.optimizer.epochs {
        if !options.quiet {
            eprintln!(
                "{}: already finished ({epoch} of {} epochs, {step} steps); nothing to train (raise {} to continue it)",
                run_dir.display(),
                config.optimizer.epochs,
                settings::name("epochs")
            );
        }
        return Ok(PretrainOutcome {
            epochs_done: epoch,
            steps_done: step,
            last_checkpoint,
            interrupted_by: None,
            already_finished: true,
        });
    }
    if last_checkpoint.is_some() {
        append_resume_log(run_dir, &start_line)?;
    }
    let mut bad_images = BadImageLog::open(
        run_dir,
        &manifest_source,
        images,
        config.run.max_bad_fraction,
    )?;
    let stop = StopSignal::register()?;
    crate::formats::atomic_write::write_string(&run_dir.join("config.toml"), &config.to_toml()?)?;
    let mut log = MetricsLog::open(run_dir, step)?;
    let schedule = config.schedule();
    let batches = loader.batches_per_epoch();
    let end = options.stop_after.map_or(config.optimizer.epochs, |n| {
        (epoch + n).min(config.optimizer.epochs)
    });
    if !options.quiet {
        eprintln!("{start_line}");
        eprint!(
            "{}",
            startup_summary(config, device, &loader, images, batches, epoch, end)
        );
    }
    let progress_lines = !options.quiet && !std::io::stderr().is_terminal();
    let mut last_progress_line: Option<Instant> = None;
    let (steps_at_start, first_epoch) = (step, epoch);
    let mut last_saved = Instant::now();
    let save_due = |step: u64, last_saved: &Instant| {
        (config.run.checkpoint_every_steps > 0 && step % config.run.checkpoint_every_steps == 0)
            || (config.run.checkpoint_every_minutes > 0.0
                && last_saved.elapsed().as_secs_f64() >= 60.0 * config.run.checkpoint_every_minutes)
    };

    while epoch < end {
        let started = Instant::now();
        let bar = if options.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            progress::bar(
                batches as u64,
                &format!("epoch {}/{}", epoch + 1, config.optimizer.epochs),
            )
        };
        // loss, moco_loss, moco_acc, geo_loss, geo_acc
        let mut sums = std::mem::take(&mut resumed_sums);
        let mut lr = 0.0;
        let first = std::mem::take(&mut first_batch);
        bar.set_position(first as u64);
        // Drawn now and redrawn while the first batch loads (large images
        // take a while), so the bar is there from the start.
        bar.enable_steady_tick(Duration::from_millis(500));
        let mut next_batch = first;
        let mut save_at_epoch_end = false;
        for (b, batch) in (first..).zip(loader.epoch(epoch as u64, first)) {
            if let Some(signal) = stop.received() {
                let state = TrainState {
                    batch_in_epoch: b,
                    epoch_sums: sums,
                    ..TrainState::at(config, geo_classes, epoch, step, moco.queue_ptr)
                };
                let dir = save(run_dir, &moco, &sgd, state, &rows, &mut log)?;
                bar.finish_and_clear();
                eprintln!(
                    "{signal}: stopped at epoch {}, batch {b}/{batches} (step {step}); checkpoint {}; continue with --resume",
                    epoch + 1,
                    dir.display()
                );
                return Ok(PretrainOutcome {
                    epochs_done: epoch,
                    steps_done: step,
                    last_checkpoint: Some(dir),
                    interrupted_by: Some(signal),
                    already_finished: false,
                });
            }
            let batch = batch.with_context(|| {
                format!(
                    "pretraining stopped at epoch {}, batch {b}/{batches}, after {} optimiser step(s) in this invocation",
                    epoch + 1,
                    step - steps_at_start
                )
            })?;
            bad_images.record(&batch.bad)?;
            let step_started = Instant::now();
            lr = schedule.lr(epoch, b, batches);
            let q = to_model_input(&batch.query, device, config.run.channels_last)?;
            let k = to_model_input(&batch.key, device, config.run.channels_last)?;
            let geo = batch
                .geo
                .map(|g| g.to_device_(device, g.kind(), true, false));
            let shuffle_seed = seed_for_step(config.run.seed, step);
            let device_batch = DeviceBatch {
                query: &q,
                key: &k,
                geo: geo.as_ref(),
            };
            let settings = StepSettings {
                lr,
                shuffle_seed,
                amp: config.run.amp,
            };
            let out = match train_step(&mut moco, &mut sgd, &device_batch, settings) {
                Err(e) if e.is::<NonFiniteLoss>() => anyhow::bail!(
                    "{e} at epoch {}, step {}; training stopped. The last good checkpoint is {}",
                    epoch + 1,
                    step + 1,
                    last_checkpoint
                        .as_ref()
                        .map_or("none (no checkpoint yet)".to_string(), |p: &PathBuf| p
                            .display()
                            .to_string())
                ),
                r => r?,
            };
            step += 1;
            next_batch = b + 1;
            let m = MetricsRow {
                kind: "step".into(),
                epoch: epoch + 1,
                step,
                lr,
                loss: out.loss,
                moco_loss: out.moco_loss,
                moco_acc: out.moco_accuracy,
                geo_loss: out.geo_loss,
                geo_acc: out.geo_accuracy,
                pairs_per_s: config.optimizer.batch_size as f64
                    / step_started.elapsed().as_secs_f64(),
                seconds: None,
                knn_top1: None,
                time: Some(crate::formats::tensorboard::now()),
            };
            for (s, v) in sums.iter_mut().zip([
                m.loss,
                m.moco_loss,
                m.moco_acc,
                m.geo_loss.unwrap_or(0.0),
                m.geo_acc.unwrap_or(0.0),
            ]) {
                *s += v;
            }
            log.step(&m)?;
            let done_here = b + 1 - first;
            let epoch_pairs_per_s =
                (done_here * config.optimizer.batch_size) as f64 / started.elapsed().as_secs_f64();
            // Position first: the message's redraw then shows both.
            bar.inc(1);
            bar.set_message(format!(
                "epoch {}/{} loss {:.3} lr {:.4} {:.0} pairs/s",
                epoch + 1,
                config.optimizer.epochs,
                m.loss,
                lr,
                epoch_pairs_per_s
            ));
            if progress_lines
                && last_progress_line.is_none_or(|t| t.elapsed() >= PROGRESS_LINE_EVERY)
            {
                let left = started
                    .elapsed()
                    .mul_f64((batches - b - 1) as f64 / done_here as f64);
                eprintln!(
                    "epoch {}/{} batch {}/{batches} (step {step}): loss {:.4} lr {:.5} {:.1} pairs/s; epoch ends in about {}",
                    epoch + 1,
                    config.optimizer.epochs,
                    b + 1,
                    m.loss,
                    lr,
                    epoch_pairs_per_s,
                    indicatif::HumanDuration(left)
                );
                last_progress_line = Some(Instant::now());
            }
            if save_due(step, &last_saved) {
                if b + 1 < batches {
                    let state = TrainState {
                        batch_in_epoch: b + 1,
                        epoch_sums: sums,
                        ..TrainState::at(config, geo_classes, epoch, step, moco.queue_ptr)
                    };
                    last_checkpoint = Some(save(run_dir, &moco, &sgd, state, &rows, &mut log)?);
                    last_saved = Instant::now();
                } else {
                    save_at_epoch_end = true;
                }
            }
        }
        bar.finish_and_clear();
        // A loader whose producer died (a panic in a worker) ends the
        // stream without an error; an epoch must not pass for complete.
        anyhow::ensure!(
            next_batch == batches,
            "the data loader ended epoch {} after {next_batch} of its {batches} batches without reporting an error (a worker thread stopped; see above); training stopped after {} optimiser step(s) in this invocation. The last checkpoint is {}",
            epoch + 1,
            step - steps_at_start,
            last_checkpoint
                .as_ref()
                .map_or("none".to_string(), |p: &PathBuf| p.display().to_string())
        );
        epoch += 1;
        let n = batches as f64;
        let seconds = started.elapsed().as_secs_f64();
        let em = MetricsRow {
            kind: "epoch".into(),
            epoch,
            step,
            lr,
            loss: sums[0] / n,
            moco_loss: sums[1] / n,
            moco_acc: sums[2] / n,
            geo_loss: geo_classes.map(|_| sums[3] / n),
            geo_acc: geo_classes.map(|_| sums[4] / n),
            pairs_per_s: (batches * config.optimizer.batch_size) as f64 / seconds,
            seconds: Some(seconds),
            knn_top1: None,
            time: Some(crate::formats::tensorboard::now()),
        };
        // The monitor only watches: a figure it cannot compute (every test
        // image unreadable, say) is a warning and a missing value, never
        // the end of the epochs trained. Under --on-bad-image fail it stops
        // the run, but only once this epoch's checkpoint is saved, so that
        // a scheduler's re-run of the same --resume line moves on.
        let mut monitor_failed = None;
        let em = MetricsRow {
            knn_top1: match &knn_task {
                Some(task) if epoch % config.monitor.knn_every == 0 || epoch == end => {
                    let knn = KnnConfig {
                        k: config.monitor.knn_k,
                        temperature: config.monitor.knn_t,
                    };
                    let backbone = &moco.encoder_q.backbone;
                    let size = config.data.image_size;
                    match knn_eval(backbone, device, task, size, 256, &knn, true) {
                        Ok(report) => Some(report.top1),
                        Err(e) if config.run.on_bad_image == BadImagePolicy::Fail => {
                            monitor_failed = Some(e);
                            None
                        }
                        Err(e) => {
                            tracing::warn!(
                                "epoch {epoch}: the kNN monitor gave no figure, none is recorded for this epoch: {e:#}"
                            );
                            None
                        }
                    }
                }
                _ => None,
            },
            ..em
        };
        log.epoch(&em)?;
        if !options.quiet {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} (InfoNCE {:.4}, acc {:.3}{}) lr {:.5} {:.1} pairs/s",
                config.optimizer.epochs,
                em.loss,
                em.moco_loss,
                em.moco_acc,
                em.geo_loss.map_or(String::new(), |g| format!(
                    "; geo {:.4}, acc {:.3}",
                    g,
                    em.geo_acc.unwrap_or(0.0)
                )),
                lr,
                em.pairs_per_s
            );
            if let Some(k) = em.knn_top1 {
                eprintln!("epoch {epoch}: kNN top-1 {:.2}%", 100.0 * k);
            }
        }
        if epoch % config.run.checkpoint_every == 0
            || epoch == config.optimizer.epochs
            || epoch == end
            || save_at_epoch_end
            || save_due(step, &last_saved)
            || monitor_failed.is_some()
        {
            let state = TrainState::at(config, geo_classes, epoch, step, moco.queue_ptr);
            last_checkpoint = Some(save(run_dir, &moco, &sgd, state, &rows, &mut log)?);
            last_saved = Instant::now();
        }
        if let Some(e) = monitor_failed {
            bad_images.summarise();
            return Err(e.context(format!(
                "the kNN monitor of epoch {epoch} failed (--on-bad-image fail); the epoch's checkpoint is saved ({}), so --resume goes on after it",
                last_checkpoint
                    .as_ref()
                    .map_or("none".to_string(), |p: &PathBuf| p.display().to_string()),
            )));
        }
    }
    // A net under the checks above: an invocation asked to train that
    // trained nothing must not look like a success.
    anyhow::ensure!(
        step > steps_at_start,
        "no optimiser step ran (epochs {}..{end} of {}, {batches} batches each); nothing was trained",
        first_epoch + 1,
        config.optimizer.epochs
    );
    bad_images.summarise();
    Ok(PretrainOutcome {
        epochs_done: epoch,
        steps_done: step,
        last_checkpoint,
        interrupted_by: None,
        already_finished: false,
    })
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
    for name in ["metrics.jsonl", "metrics.csv", "bad_images.csv"] {
        let path = run_dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("{}: cannot remove", path.display()))
            }
            _ => {}
        }
    }
    let tb = crate::formats::tensorboard::log_dir(run_dir, "pretrain");
    if tb.exists() {
        std::fs::remove_dir_all(&tb).with_context(|| format!("{}: cannot remove", tb.display()))?;
    }
    checkpoint::prune(run_dir, None)
}

/// Appends a dated line to `RUN_DIR/resumes.log`: each `--resume`, where it
/// continued from and which settings it changed.
fn append_resume_log(run_dir: &Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let path = run_dir.join("resumes.log");
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
    use std::fmt::Write;
    let mut s = String::new();
    let device_name = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
        Device::Cpu => "cpu".to_string(),
    };
    let threads = if config.run.threads > 0 {
        config.run.threads.to_string()
    } else {
        format!("{} (libtorch's default)", tch::get_num_threads())
    };
    let _ = writeln!(
        s,
        "pretrain {}: {} width {}{}, {} px crops of {} px, on {device_name}, {threads} CPU threads",
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
    );
    let places = &loader.index().locations;
    let single = places.iter().filter(|l| l.views.len() < 2).count();
    let _ = writeln!(
        s,
        "data: {} images at {} places (split {}){}",
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
    let schedule = config.schedule();
    let _ = writeln!(
        s,
        "steps: {batches} per epoch, epochs {}..{end} of {} ({} steps in this invocation); global batch {}, lr {} ({} x {}/256, {})",
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
    let _ = writeln!(s, "checkpoints: {}", every.join(", "));
    if config.method.temporal() && single == places.len() {
        let _ = writeln!(
            s,
            "warning: no place has two views (location_id with several images), so temporal positives never occur and {} reduces to {}",
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
}

impl BadImageLog {
    /// The log of `run_dir` for a run over `total` images of the manifest
    /// read from `manifest_source`.
    fn open(
        run_dir: &Path,
        manifest_source: &Path,
        total: usize,
        max_fraction: f64,
    ) -> anyhow::Result<Self> {
        let path = run_dir.join("bad_images.csv");
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
        })
    }

    fn record(&mut self, bad: &[crate::data::loader::BadImage]) -> anyhow::Result<()> {
        for b in bad {
            if !self.seen.insert(b.path.clone()) {
                continue;
            }
            self.new_this_run += 1;
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
            "{} of the {} images of {} could not be read ({:.2}%, more than --max-bad-fraction {}); they are listed in {}",
            self.seen.len(),
            self.total,
            self.manifest_source.display(),
            100.0 * self.seen.len() as f64 / self.total as f64,
            self.max_fraction,
            self.path.display()
        );
        Ok(())
    }

    fn summarise(&self) {
        if !self.seen.is_empty() {
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
    geo_classes: Option<i64>,
    rows: &TrainingRows,
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
        if !diff.refused.is_empty() {
            anyhow::bail!(
                "{}: --resume would change what this run is; these settings differ from those of its checkpoint {}:\n  {}\nResume with the checkpoint's values (drop these flags: the run's config.toml supplies them), or start a new run in another --out. Only these may change on --resume: {}",
                run_dir.display(),
                dir.display(),
                diff.refused
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("\n  "),
                CHANGEABLE_ON_RESUME
                    .iter()
                    .map(|k| format!("--{}", k.replace('_', "-")))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
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
