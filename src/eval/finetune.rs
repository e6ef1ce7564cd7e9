//! Training a whole classifier (backbone + `fc`): fine-tuning a pretrained
//! encoder (the paper's protocol: as the linear probe, every weight trained,
//! lr 0.001, BN in train mode), and the paper's baselines trained from a
//! random initialisation: supervised learning on the labels, and
//! geo-location learning (the encoder trained only to classify the geo
//! clusters).
//!
//! The result is a classifier folder: `classifier.safetensors` with
//! torchvision's names (`conv1.weight`, ..., `fc.weight`, `fc.bias`),
//! `classifier.json`, `report.json` on the test split, and TensorBoard
//! scalars (loss, accuracy, lr per epoch) in `tb/finetune/`. `probe`, `knn`
//! and `embed` accept the folder as `--checkpoint`.

use std::path::Path;
use std::time::Instant;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::classification::ClassificationReport;
use super::encoder::Encoder;
use super::features::nothing_read;
use super::probe::probabilities;
use super::task::Task;
use crate::data::augment::{AugConfig, ViewTransform};
use crate::data::loader::BadImage;
use crate::formats::tensorboard::{self, EventWriter};
use crate::model::heads::probe_linear;
use crate::progress;
use crate::train::encoder_source::ClassifierInfo;
use crate::train::schedule::LrSchedule;
use crate::train::sgd::Sgd;
use crate::train::ClassifierDir;

/// The training view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainView {
    /// Resize + RandomCrop (the evaluation protocol).
    RandomCrop,
    /// RandomResizedCrop(scale 0.2-1) + horizontal flip, the usual view for
    /// training from scratch.
    ResizedCropFlip,
}

impl crate::settings::Choice for TrainView {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            TrainView::RandomCrop,
            "random-crop",
            "Resize + RandomCrop (the evaluation protocol)",
        ),
        (
            TrainView::ResizedCropFlip,
            "resized-crop-flip",
            "RandomResizedCrop(scale 0.2-1) + horizontal flip, the usual view for training \
             from scratch",
        ),
    ];
}
crate::settings::choice_by_name!(TrainView);

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinetuneConfig {
    pub lr: f64,
    pub epochs: usize,
    /// Cosine decay; otherwise x0.1 at the milestones.
    pub cosine: bool,
    pub milestones: Vec<usize>,
    pub batch_size: usize,
    pub momentum: f64,
    pub weight_decay: f64,
    pub view: TrainView,
    /// Smallest crop area fraction of `ResizedCropFlip`.
    pub crop_min_scale: f64,
    /// Input side; `None`: the encoder's.
    pub image_size: Option<u32>,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            lr: 0.001,
            epochs: 100,
            cosine: false,
            milestones: vec![60, 80],
            batch_size: 256,
            momentum: 0.9,
            weight_decay: 0.0,
            view: TrainView::RandomCrop,
            crop_min_scale: 0.2,
            image_size: None,
            seed: 0,
        }
    }
}

impl FinetuneConfig {
    /// Settings that train something: at least one epoch and one image per
    /// batch, a positive lr, a crop scale in (0, 1], an input side of at
    /// least [`crate::data::augment::MIN_IMAGE_SIZE`]; the errors name the
    /// setting as the flag does.
    pub fn validate(&self) -> anyhow::Result<()> {
        super::probe::validate_sgd_training(
            self.epochs,
            self.batch_size,
            self.lr,
            self.momentum,
            self.weight_decay,
            self.image_size,
        )?;
        anyhow::ensure!(
            self.crop_min_scale > 0.0 && self.crop_min_scale <= 1.0,
            "crop-min-scale must be in (0, 1], got {}",
            self.crop_min_scale
        );
        Ok(())
    }
}

struct Classifier<'a> {
    encoder: &'a Encoder,
    fc: nn::Linear,
}

impl Classifier<'_> {
    fn logits(&self, images: &Tensor, train: bool) -> Tensor {
        self.encoder
            .backbone
            .forward_t(&images.to_device(self.encoder.vs.device()), train)
            .apply(&self.fc)
    }
}

/// Trains `encoder` (modified in place) with a new `fc` on `task`, writes
/// the classifier folder `out`, and returns the test report.
pub fn train_classifier(
    encoder: &mut Encoder,
    task: &Task,
    config: &FinetuneConfig,
    out: &Path,
    quiet: bool,
) -> anyhow::Result<ClassificationReport> {
    config.validate()?;
    let size = config.image_size.unwrap_or(encoder.image_size);
    let batch = config.batch_size;
    let fc = probe_linear(
        encoder.vs.root() / "fc",
        encoder.feature_dim(),
        task.classes.len() as i64,
    );
    let model = Classifier { encoder, fc };
    let view = match config.view {
        TrainView::RandomCrop => ViewTransform::RandomCrop { size },
        TrainView::ResizedCropFlip => {
            let mut a = AugConfig::aug_plus(size);
            a.pre_size = None;
            a.scale = (config.crop_min_scale, 1.0);
            a.jitter_p = 0.0;
            a.grayscale_p = 0.0;
            a.blur_p = 0.0;
            ViewTransform::Augment(a)
        }
    };
    // Under skip an unreadable row just leaves its batch (labels follow
    // the batch's rows); it is reported once.
    let mut train = task
        .loader(&task.train.rows, view, batch, &model.encoder.input)
        .for_training(config.seed)
        .cached();
    if train.batches_per_epoch() == 0 {
        // Fewer images than one batch: train on them all.
        train.drop_last = false;
    }
    let mut skipped: std::collections::BTreeMap<usize, BadImage> = Default::default();
    let label_of: std::collections::HashMap<usize, i64> = task
        .train
        .rows
        .iter()
        .copied()
        .zip(task.train.labels.iter().copied())
        .collect();
    let mut sgd = Sgd::new(
        model.encoder.vs.variables(),
        config.momentum,
        config.weight_decay,
    );
    let schedule = LrSchedule {
        base_lr: config.lr,
        epochs: config.epochs,
        cosine: config.cosine,
        per_step: false,
        milestones: config.milestones.clone(),
        warmup_epochs: 0,
    };
    let device = model.encoder.vs.device();
    let mut log = EventWriter::create(&ClassifierDir::new(out).tensorboard())?;
    // One bar over the whole run, so its ETA is the run's.
    let bar = progress::bar_unless(
        quiet,
        (train.batches_per_epoch() * config.epochs) as u64,
        "fine-tuning",
    );
    for epoch in 0..config.epochs {
        let started = Instant::now();
        let lr = schedule.lr(epoch, 0, 1);
        bar.set_message(format!("fine-tuning epoch {}/{}", epoch + 1, config.epochs));
        let (mut loss_sum, mut hits, mut seen) = (0.0, 0i64, 0usize);
        for b in train.epoch(epoch as u64) {
            let b = b?;
            for (row, bad) in b.skipped {
                if let std::collections::btree_map::Entry::Vacant(entry) = skipped.entry(row) {
                    bar.suspend(|| {
                        tracing::warn!(
                            "fine-tuning: left out unreadable row {} of {}: {}",
                            row + 2,
                            task.manifest.source.display(),
                            bad.error
                        )
                    });
                    entry.insert(bad);
                }
            }
            bar.inc(1);
            if b.rows.is_empty() {
                continue;
            }
            let labels: Vec<i64> = b.rows.iter().map(|r| label_of[r]).collect();
            let targets = Tensor::from_slice(&labels).to_device(device);
            let logits = model.logits(&b.images, true);
            let loss = logits.cross_entropy_for_logits(&targets);
            let value = loss.double_value(&[]);
            anyhow::ensure!(
                value.is_finite(),
                "loss became {value} at epoch {}; stopped",
                epoch + 1
            );
            sgd.backward_step(&loss, lr, None)?;
            loss_sum += value * labels.len() as f64;
            hits += tch::no_grad(|| {
                logits
                    .argmax(1, false)
                    .eq_tensor(&targets)
                    .sum(tch::Kind::Int64)
            })
            .int64_value(&[]);
            seen += labels.len();
        }
        if seen == 0 {
            bar.finish_and_clear();
            let skipped: Vec<(usize, BadImage)> = skipped.into_iter().collect();
            return Err(nothing_read(
                "fine-tuning",
                &task.manifest,
                train.rows_per_epoch(),
                &skipped,
            ));
        }
        let (loss, accuracy, images_per_s) = (
            loss_sum / seen.max(1) as f64,
            hits as f64 / seen.max(1) as f64,
            seen as f64 / started.elapsed().as_secs_f64(),
        );
        log.scalars(
            epoch as i64 + 1,
            tensorboard::now(),
            &[
                ("finetune/train_loss", loss),
                ("finetune/train_acc", accuracy),
                ("finetune/lr", lr),
                ("finetune/images_per_s", images_per_s),
            ],
        )?;
        log.flush()?;
        if !quiet {
            bar.suspend(|| eprintln!(
                "epoch {}/{}: loss {loss:.4}, train accuracy {accuracy:.3}, lr {lr:.5}, {images_per_s:.1} images/s",
                epoch + 1,
                config.epochs,
            ));
        }
    }
    bar.finish_and_clear();

    let test = task.loader(
        &task.test.rows,
        ViewTransform::CenterCrop { size },
        batch,
        &model.encoder.input,
    );
    let bar = progress::bar_unless(
        quiet,
        test.batches_per_epoch() as u64,
        "fine-tuning test images",
    );
    let mut probs = Vec::with_capacity(task.test.rows.len() * task.classes.len());
    let (mut test_rows, mut test_skipped) = (Vec::new(), Vec::new());
    for b in test.epoch(0) {
        let b = b?;
        bar.inc(1);
        for (row, bad) in &b.skipped {
            bar.suspend(|| {
                tracing::warn!(
                    "fine-tuning test: left out unreadable row {} of {}: {}",
                    row + 2,
                    task.manifest.source.display(),
                    bad.error
                )
            });
        }
        test_skipped.extend(b.skipped);
        if b.rows.is_empty() {
            continue;
        }
        probs.extend(tch::no_grad(|| {
            probabilities(&model.logits(&b.images, false))
        })?);
        test_rows.extend(b.rows);
    }
    bar.finish_and_clear();
    if test_rows.is_empty() {
        return Err(nothing_read(
            "fine-tuning test",
            &task.manifest,
            task.test.rows.len(),
            &test_skipped,
        ));
    }
    let protocol = format!(
        "classifier trained end to end (BN train mode) on {} of split {} ({} images): {} epochs, lr {} ({}), batch {batch}, train view {}, test view Resize({size}) + CenterCrop({size})",
        task.classes.target.name(),
        task.train_split,
        task.train.rows.len(),
        config.epochs,
        config.lr,
        if config.cosine { "cosine".to_string() } else { format!("x0.1 at {:?}", config.milestones) },
        match config.view {
            TrainView::RandomCrop => format!("Resize({size}) + RandomCrop({size})"),
            TrainView::ResizedCropFlip => format!("RandomResizedCrop({size}, scale {}-1) + flip", config.crop_min_scale),
        }
    );
    let skipped: Vec<(usize, BadImage)> = skipped.into_iter().collect();
    let mut listed = task.skipped(&skipped, &task.train_split);
    listed.extend(task.skipped(&test_skipped, &task.test_split));
    let report = task.report(&test_rows, &probs, protocol, &model.encoder.source, listed)?;
    log.scalars(
        config.epochs as i64,
        tensorboard::now(),
        &report.tensorboard_scalars("finetune"),
    )?;

    let info = ClassifierInfo {
        resnet: model.encoder.backbone.config,
        image_size: size,
        classes: task.classes.names.clone(),
        target: task.classes.target.name().to_string(),
        init: model.encoder.source.clone(),
        epochs: config.epochs,
        input: model.encoder.input.clone(),
    };
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    let mut named: Vec<(String, Tensor)> = model.encoder.vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let folder = ClassifierDir::new(out);
    let weights = folder.weights();
    Tensor::write_safetensors(&named, &weights)
        .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", weights.display()))?;
    crate::formats::atomic_write::write_string(
        &folder.info_json(),
        &serde_json::to_string_pretty(&info)?,
    )?;
    report.write_json(&folder.report_json())?;
    Ok(report)
}
