//! The pretraining loop: data, MoCo step, SGD, schedule, logs, checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::checkpoint::{self, TrainState};
use super::config::PretrainConfig;
use super::metrics::{MetricsLog, MetricsRow};
use super::sgd::Sgd;
use super::step::{train_step, DeviceBatch, NonFiniteLoss, StepSettings};
use crate::data::loader::PairLoader;
use crate::data::{Manifest, Split};
use crate::eval::knn::{knn_eval, KnnConfig};
use crate::eval::{Target, Task};
use crate::model::{parse_device, torch_ext, Moco};
use crate::progress;
use tch::{Device, Tensor};

/// What a finished (or stopped) invocation did.
#[derive(Debug)]
pub struct PretrainOutcome {
    pub epochs_done: usize,
    pub steps_done: u64,
    pub last_checkpoint: Option<PathBuf>,
    /// The signal that stopped the run early, after a checkpoint.
    pub interrupted_by: Option<&'static str>,
}

/// Options of one invocation that are not part of the run's config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// Stop after this many epochs in this invocation (a later `--resume` continues).
    pub stop_after: Option<usize>,
    pub quiet: bool,
}

/// Rows used for pretraining.
pub fn training_rows(mut manifest: Manifest, split: &str) -> anyhow::Result<Manifest> {
    if split == "all" {
        return Ok(manifest);
    }
    let wanted: Split = split
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--split {split}: {e} (or all)"))?;
    let total = manifest.records.len();
    manifest.records.retain(|r| r.split == Some(wanted));
    anyhow::ensure!(
        !manifest.records.is_empty(),
        "{}: none of the {total} rows has split = {split} (use --split all to train on every row)",
        manifest.source.display()
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

pub fn pretrain(
    config: &PretrainConfig,
    run_dir: &Path,
    options: &RunOptions,
) -> anyhow::Result<PretrainOutcome> {
    config.validate()?;
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
    let knn_task = if config.knn_every > 0 {
        Some(
            Task::new(
                std::sync::Arc::new(manifest.clone()),
                Target::Label,
                &config.knn_train_split,
                &config.knn_test_split,
                None,
            )
            .context("--knn-every needs labels on the kNN splits")?,
        )
    } else {
        None
    };
    let manifest = training_rows(manifest, &config.split)?;
    let mut bad_images = BadImageLog::open(run_dir, &manifest, config.max_bad_fraction)?;
    if config.threads > 0 {
        tch::set_num_threads(config.threads as i32);
    }
    let device = parse_device(&config.device)
        .map_err(anyhow::Error::msg)?
        .resolve()?;
    tch::manual_seed(config.seed as i64);

    let loader = PairLoader::new(manifest, config.loader(device.is_cuda()))?;
    let mut moco = Moco::new(device, config.resnet(), config.moco(geo_classes))?;
    if config.channels_last {
        moco.to_channels_last()?;
    }
    let mut sgd = Sgd::new(moco.vs_q.variables(), config.momentum, config.weight_decay);

    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("{}: cannot create", run_dir.display()))?;
    let existing = checkpoint::candidates(run_dir)?;
    let (mut epoch, mut step) = (0usize, 0u64);
    let (mut first_batch, mut resumed_sums) = (0usize, [0.0f64; 5]);
    let mut last_checkpoint = None;
    match (options.resume, existing.first()) {
        (true, Some(_)) => {
            let Resumed { dir, state } = resume_from(&existing, &mut moco, &mut sgd)?;
            anyhow::ensure!(
                state.config.resnet() == config.resnet() && state.geo_classes == geo_classes && state.config.moco_k == config.moco_k,
                "{}: the checkpoint's model (arch, width, queue, geo classes) differs from this run's config",
                dir.display()
            );
            (epoch, step) = (state.epoch, state.step);
            (first_batch, resumed_sums) = (state.batch_in_epoch, state.epoch_sums);
            tracing::info!("resuming from {} (epoch {epoch}, step {step})", dir.display());
            last_checkpoint = Some(dir);
        }
        (true, None) => anyhow::bail!("{}: no checkpoint to resume from; start without --resume", run_dir.display()),
        (false, Some(dir)) => anyhow::bail!(
            "{}: the run folder already has checkpoints ({}); pass --resume to continue it or choose another --out",
            run_dir.display(),
            dir.display()
        ),
        (false, None) => {}
    }
    let stop = StopSignal::register()?;
    crate::atomic_write::write_string(&run_dir.join("config.toml"), &config.to_toml()?)?;
    let mut log = MetricsLog::open(run_dir, step)?;
    let schedule = config.schedule();
    let batches = loader.batches_per_epoch();
    let end = options
        .stop_after
        .map_or(config.epochs, |n| (epoch + n).min(config.epochs));

    while epoch < end {
        let started = Instant::now();
        let bar = if options.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            progress::bar(
                batches as u64,
                &format!("epoch {}/{}", epoch + 1, config.epochs),
            )
        };
        // loss, moco_loss, moco_acc, geo_loss, geo_acc
        let mut sums = std::mem::take(&mut resumed_sums);
        let mut lr = 0.0;
        let first = std::mem::take(&mut first_batch);
        bar.set_position(first as u64);
        for (b, batch) in (first..).zip(loader.epoch(epoch as u64, first)) {
            if let Some(signal) = stop.received() {
                let state = TrainState {
                    batch_in_epoch: b,
                    epoch_sums: sums,
                    ..TrainState::at(config, geo_classes, epoch, step, moco.queue_ptr)
                };
                let dir = checkpoint::save(run_dir, &moco, &sgd, &state)?;
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
                });
            }
            let batch = batch?;
            bad_images.record(&batch.bad)?;
            let step_started = Instant::now();
            lr = schedule.lr(epoch, b, batches);
            let q = to_model_input(&batch.query, device, config.channels_last)?;
            let k = to_model_input(&batch.key, device, config.channels_last)?;
            let geo = batch
                .geo
                .map(|g| g.to_device_(device, g.kind(), true, false));
            let shuffle_seed = seed_for_step(config.seed, step);
            let device_batch = DeviceBatch {
                query: &q,
                key: &k,
                geo: geo.as_ref(),
            };
            let settings = StepSettings {
                lr,
                shuffle_seed,
                amp: config.amp,
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
                pairs_per_s: config.batch_size as f64 / step_started.elapsed().as_secs_f64(),
                seconds: None,
                knn_top1: None,
                time: Some(crate::tensorboard::now()),
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
            let epoch_pairs_per_s =
                ((b + 1) * config.batch_size) as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "epoch {}/{} loss {:.3} lr {:.4} {:.0} pairs/s",
                epoch + 1,
                config.epochs,
                m.loss,
                lr,
                epoch_pairs_per_s
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
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
            pairs_per_s: (batches * config.batch_size) as f64 / seconds,
            seconds: Some(seconds),
            knn_top1: match &knn_task {
                Some(task) if epoch % config.knn_every == 0 || epoch == end => {
                    let knn = KnnConfig {
                        k: config.knn_k,
                        temperature: config.knn_t,
                    };
                    let backbone = &moco.encoder_q.backbone;
                    let size = config.image_size;
                    Some(knn_eval(backbone, device, task, size, 256, &knn, true)?.top1)
                }
                _ => None,
            },
            time: Some(crate::tensorboard::now()),
        };
        log.epoch(&em)?;
        if !options.quiet {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} (InfoNCE {:.4}, acc {:.3}{}) lr {:.5} {:.1} pairs/s",
                config.epochs,
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
        if epoch % config.checkpoint_every == 0 || epoch == config.epochs || epoch == end {
            let state = TrainState::at(config, geo_classes, epoch, step, moco.queue_ptr);
            last_checkpoint = Some(checkpoint::save(run_dir, &moco, &sgd, &state)?);
        }
    }
    bad_images.summarise();
    Ok(PretrainOutcome {
        epochs_done: epoch,
        steps_done: step,
        last_checkpoint,
        interrupted_by: None,
    })
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
    fn open(
        run_dir: &Path,
        manifest: &crate::data::Manifest,
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
            manifest_source: manifest.source.clone(),
            seen,
            total: manifest.records.len(),
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
}

/// Loads the newest checkpoint of `candidates` that is intact, reporting
/// each damaged one it passes over.
fn resume_from(candidates: &[PathBuf], moco: &mut Moco, sgd: &mut Sgd) -> anyhow::Result<Resumed> {
    let mut damaged = Vec::new();
    for dir in candidates {
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
                });
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
