//! Linear probe: the backbone frozen with BN in eval mode, a linear
//! classifier trained on its pooled features (the paper's protocol: SGD
//! momentum 0.9, no weight decay, lr x0.1 at the milestones, batch 256;
//! train view Resize + RandomCrop, test view Resize + CenterCrop).
//!
//! Because the backbone is frozen, each epoch only needs the features of
//! that epoch's random crops; they are computed without a graph and the
//! linear layer is trained on them. With `cache_features` the features are
//! computed once from the centre crop and reused every epoch: the same
//! classifier when random crops cannot differ (square images, whose
//! Resize(s) is already s x s), and much faster otherwise; the report says
//! which protocol ran.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::classification::ClassificationReport;
use super::encoder::Encoder;
use super::features::{extract, to_vec};
use super::task::Task;
use crate::data::augment::ViewTransform;
use crate::data::loader::BadImagePolicy;
use crate::formats::tensorboard::{self, EventWriter};
use crate::model::heads::probe_linear;
use crate::train::schedule::LrSchedule;
use crate::train::sgd::Sgd;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeConfig {
    /// Learning rate (the paper: 1; the MoCo code's default: 30).
    pub lr: f64,
    pub epochs: usize,
    /// lr x0.1 at each of these epochs.
    pub milestones: Vec<usize>,
    pub batch_size: usize,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Input side; `None`: the size the encoder was trained at.
    pub image_size: Option<u32>,
    /// Compute features once (centre crop) instead of every epoch.
    pub cache_features: bool,
    /// Standardise each feature with the training features' mean and
    /// standard deviation before the linear layer (MAE's BatchNorm without
    /// affine parameters); the classifier stays linear in the features, and
    /// one learning rate then suits encoders whose features differ in scale
    /// by orders of magnitude (a random initialisation's, say).
    pub standardize: bool,
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            epochs: 100,
            milestones: vec![60, 80],
            batch_size: 256,
            momentum: 0.9,
            weight_decay: 0.0,
            image_size: None,
            cache_features: false,
            standardize: false,
            seed: 0,
        }
    }
}

impl ProbeConfig {
    /// Settings that train something: at least one epoch and one image per
    /// batch, a positive lr, an input side of at least
    /// [`crate::data::augment::MIN_IMAGE_SIZE`]; the errors name the
    /// setting as the flag does.
    pub fn validate(&self) -> anyhow::Result<()> {
        validate_sgd_training(
            self.epochs,
            self.batch_size,
            self.lr,
            self.momentum,
            self.weight_decay,
            self.image_size,
        )
    }
}

/// The checks every SGD-trained evaluation (probe, fine-tuning) makes of
/// its settings: at least one epoch and one image per batch, a positive
/// finite lr, momentum in [0, 1), a non-negative weight decay, an input side
/// of at least [`crate::data::augment::MIN_IMAGE_SIZE`]; the errors name the
/// setting as the flag does.
pub(crate) fn validate_sgd_training(
    epochs: usize,
    batch_size: usize,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    image_size: Option<u32>,
) -> anyhow::Result<()> {
    anyhow::ensure!(epochs >= 1, "epochs must be at least 1");
    anyhow::ensure!(batch_size >= 1, "batch-size must be at least 1");
    anyhow::ensure!(
        lr > 0.0 && lr.is_finite(),
        "lr must be positive and finite, got {lr}"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&momentum),
        "momentum must be in [0, 1), got {momentum}"
    );
    anyhow::ensure!(
        weight_decay >= 0.0 && weight_decay.is_finite(),
        "weight-decay must be 0 or positive, got {weight_decay}"
    );
    if let Some(size) = image_size {
        crate::data::augment::check_image_size(size)?;
    }
    Ok(())
}

/// The trained linear classifier and its test report.
pub struct ProbeOutcome {
    pub report: ClassificationReport,
    /// `fc.weight` [C, D] and `fc.bias` [C].
    pub linear: Vec<(String, Tensor)>,
}

/// Trains a linear classifier on `features` [N, D] with `labels` (one
/// feature matrix per epoch from `features_of_epoch`), logging each epoch's
/// training loss, accuracy and lr to `log` as `probe/...` scalars.
pub fn train_linear(
    mut features_of_epoch: impl FnMut(usize) -> anyhow::Result<Tensor>,
    labels: &[i64],
    dim: i64,
    classes: i64,
    config: &ProbeConfig,
    device: Device,
    mut log: Option<&mut EventWriter>,
) -> anyhow::Result<(nn::VarStore, nn::Linear)> {
    config.validate()?;
    let vs = nn::VarStore::new(device);
    let linear = probe_linear(vs.root() / "fc", dim, classes);
    let mut sgd = Sgd::new(vs.variables(), config.momentum, config.weight_decay);
    let schedule = LrSchedule {
        base_lr: config.lr,
        epochs: config.epochs,
        cosine: false,
        per_step: false,
        milestones: config.milestones.clone(),
        warmup_epochs: 0,
    };
    let n = labels.len();
    let targets = Tensor::from_slice(labels).to_device(device);
    let batch = config.batch_size.max(1);
    for epoch in 0..config.epochs {
        let features = features_of_epoch(epoch)?.to_device(device);
        anyhow::ensure!(
            features.size() == [n as i64, dim],
            "features of epoch {epoch} have shape {:?}, expected [{n}, {dim}]",
            features.size()
        );
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let lr = schedule.lr(epoch, 0, 1);
        // Summed on the device: one host sync per epoch, not per batch.
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut hits = Tensor::zeros([], (Kind::Int64, device));
        for chunk in order.chunks(batch) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let logits = linear.forward(&features.index_select(0, &idx));
            let batch_targets = targets.index_select(0, &idx);
            let loss = logits.cross_entropy_for_logits(&batch_targets);
            sgd.backward_step(&loss, lr, None)?;
            if log.is_some() {
                tch::no_grad(|| {
                    loss_sum += loss.to_kind(Kind::Double) * chunk.len() as f64;
                    hits += logits
                        .argmax(1, false)
                        .eq_tensor(&batch_targets)
                        .sum(Kind::Int64);
                });
            }
        }
        if let Some(log) = log.as_deref_mut() {
            log.scalars(
                epoch as i64 + 1,
                tensorboard::now(),
                &[
                    (
                        "probe/train_loss",
                        loss_sum.double_value(&[]) / n.max(1) as f64,
                    ),
                    (
                        "probe/train_acc",
                        hits.int64_value(&[]) as f64 / n.max(1) as f64,
                    ),
                    ("probe/lr", lr),
                ],
            )?;
            log.flush()?;
        }
    }
    Ok((vs, linear))
}

/// Per-feature mean and standard deviation [1, D] of `features` [N, D]
/// (the deviation floored at 1e-6 for constant features).
pub fn feature_moments(features: &Tensor) -> (Tensor, Tensor) {
    let mean = features.mean_dim([0i64].as_slice(), true, Kind::Float);
    let std = features
        .std_dim([0i64].as_slice(), false, true)
        .clamp_min(1e-6);
    (mean, std)
}

/// Softmax probabilities of `logits`, row-major.
pub fn probabilities(logits: &Tensor) -> anyhow::Result<Vec<f32>> {
    to_vec(&logits.softmax(1, Kind::Float))
}

/// The paper's linear probe of `encoder` on `task`. With `tensorboard_dir`,
/// each epoch's training loss, accuracy and lr and the final test figures
/// go there as TensorBoard scalars.
///
/// Unreadable images follow `task.on_bad_image`: under skip, the training
/// rows are those the first epoch could read (a row that fails later is an
/// error, so every epoch's features line up with the labels), and the test
/// figures are over the test rows that were read; the report lists the
/// rows left out.
pub fn linear_probe(
    encoder: &Encoder,
    task: &Task,
    config: &ProbeConfig,
    quiet: bool,
    tensorboard_dir: Option<&std::path::Path>,
) -> anyhow::Result<ProbeOutcome> {
    config.validate()?;
    let mut log = tensorboard_dir.map(EventWriter::create).transpose()?;
    let size = config.image_size.unwrap_or(encoder.image_size);
    let batch = config.batch_size;
    let loader = |rows: &[usize], view: ViewTransform| {
        let mut l = task.loader(rows, view, batch, &encoder.input);
        l.seed = config.seed;
        l
    };
    let (backbone, device) = (&encoder.backbone, encoder.vs.device());
    let center = ViewTransform::CenterCrop { size };
    let random_view = ViewTransform::RandomCrop { size };
    // The first epoch's features (or the cached ones) under the task's
    // policy: they fix the rows that train.
    let (first, bar, decoded) = if config.cache_features {
        let l = loader(&task.train.rows, center);
        let what = "probe train features";
        let bar = crate::progress::bar_unless(quiet, l.batches_per_epoch() as u64, what);
        let first = extract(backbone, device, &l, 0, what, &bar)?;
        bar.finish_and_clear();
        let bar = crate::progress::bar_unless(quiet, config.epochs as u64, "linear probe");
        (first, bar, None)
    } else {
        // One bar over every epoch's feature batches: the backbone is where
        // the time goes.
        let l = loader(&task.train.rows, random_view).cached();
        let bar = crate::progress::bar_unless(
            quiet,
            (l.batches_per_epoch() * config.epochs.max(1)) as u64,
            "linear probe",
        );
        (
            extract(backbone, device, &l, 0, "probe train features", &bar)?,
            bar,
            l.cache,
        )
    };
    let train_rows = first.rows.clone();
    let train_labels = task.train_labels(&train_rows)?;
    let mut skipped = task.skipped(&first.skipped, &task.train_split);
    // Read on each of the later epochs: each image decoded once, in the
    // first epoch (the same view, so the same cache).
    let random = loader(&train_rows, random_view).on_bad_image(BadImagePolicy::Fail);
    let random = match decoded {
        Some(cache) => random.with_cache(cache),
        None => random,
    };
    if !config.cache_features {
        // Later epochs read only the rows the first could.
        let later = random.batches_per_epoch() * config.epochs.saturating_sub(1);
        bar.set_length(bar.position() + later as u64);
    }
    // Mean and standard deviation of the first epoch's features, fixed for
    // the rest of training and for testing.
    let mut moments: Option<(Tensor, Tensor)> = None;
    let mut features_of_epoch = |epoch: usize| -> anyhow::Result<Tensor> {
        let f = if epoch == 0 || config.cache_features {
            if config.cache_features {
                bar.inc(1);
            }
            first.features.shallow_clone()
        } else {
            extract(
                backbone,
                device,
                &random,
                epoch as u64,
                "probe train features",
                &bar,
            )?
            .features
        };
        if !config.standardize {
            return Ok(f);
        }
        let (mean, std) = moments.get_or_insert_with(|| feature_moments(&f));
        Ok((f - &*mean) / &*std)
    };
    let (vs, linear) = train_linear(
        &mut features_of_epoch,
        &train_labels,
        encoder.feature_dim(),
        task.classes.len() as i64,
        config,
        device,
        log.as_mut(),
    )?;
    bar.finish_and_clear();
    let test_loader = loader(&task.test.rows, center);
    let what = "probe test features";
    let bar = crate::progress::bar_unless(quiet, test_loader.batches_per_epoch() as u64, what);
    let test = extract(backbone, device, &test_loader, 0, what, &bar)?;
    bar.finish_and_clear();
    skipped.extend(task.skipped(&test.skipped, &task.test_split));
    let test_features = match &moments {
        Some((mean, std)) => (&test.features - mean) / std,
        None => test.features.shallow_clone(),
    };
    let probs = tch::no_grad(|| probabilities(&linear.forward(&test_features.to_device(device))))?;
    let protocol = format!(
        "linear probe, frozen backbone (BN eval), {}-d features, {} epochs, lr {} x0.1 at {:?}, batch {batch}, train view Resize({size}) + {}, test view Resize({size}) + CenterCrop({size}){}; trained on split {} ({} images)",
        encoder.feature_dim(),
        config.epochs,
        config.lr,
        config.milestones,
        if config.cache_features {
            "CenterCrop (features cached once)"
        } else {
            "RandomCrop (features recomputed every epoch)"
        },
        if config.standardize { ", features standardised with the training set's mean and std" } else { "" },
        task.train_split,
        train_rows.len()
    );
    let report = task.report(&test.rows, &probs, protocol, &encoder.source, skipped)?;
    if let Some(log) = log.as_mut() {
        log.scalars(
            config.epochs as i64,
            tensorboard::now(),
            &report.tensorboard_scalars("probe"),
        )?;
    }
    let mut weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    if let Some((mean, std)) = moments {
        weights.push(("feature_mean".into(), mean));
        weights.push(("feature_std".into(), std));
    }
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ProbeOutcome {
        report,
        linear: weights,
    })
}

/// [`linear_probe`] with its report written to `report_path` (JSON) and
/// its TensorBoard scalars beside it: in `tb/probe` of the report's folder
/// for a `probe.json`, else in `tb/<report name without .json>` (the
/// `resnet50.probe.json` of a backbone file, a `--out` of its own), so
/// probes that share a folder keep their own curves.
pub fn linear_probe_to(
    encoder: &Encoder,
    task: &Task,
    config: &ProbeConfig,
    quiet: bool,
    report_path: &Path,
) -> anyhow::Result<ProbeOutcome> {
    let folder = report_path.parent().unwrap_or(Path::new("."));
    let name = report_path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "probe.json")
        .map(|n| n.strip_suffix(".json").unwrap_or(n))
        .unwrap_or("probe");
    let tb = tensorboard::log_dir(folder, name);
    let outcome = linear_probe(encoder, task, config, quiet, Some(&tb))?;
    outcome.report.write_json(report_path)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::classification::evaluate;

    #[test]
    fn separable_features_are_learned_perfectly() {
        // Four classes, 64-d features: class k has its mean on axis k
        // (magnitude 3), plus unit Gaussian noise everywhere.
        tch::manual_seed(3);
        let (n, dim, classes) = (400i64, 64i64, 4i64);
        let labels: Vec<i64> = (0..n).map(|i| i % classes).collect();
        let onehot = Tensor::from_slice(&labels)
            .one_hot(dim)
            .to_kind(Kind::Float);
        let features = onehot * 3.0 + Tensor::randn([n, dim], (Kind::Float, Device::Cpu)) * 0.3;
        let config = ProbeConfig {
            epochs: 30,
            milestones: vec![20],
            batch_size: 32,
            lr: 0.1,
            ..Default::default()
        };
        let (_vs, linear) = train_linear(
            |_| Ok(features.shallow_clone()),
            &labels,
            dim,
            classes,
            &config,
            Device::Cpu,
            None,
        )
        .unwrap();
        let test_labels: Vec<i64> = (0..n).map(|i| (i + 1) % classes).collect();
        let test = Tensor::from_slice(&test_labels)
            .one_hot(dim)
            .to_kind(Kind::Float)
            * 3.0
            + Tensor::randn([n, dim], (Kind::Float, Device::Cpu)) * 0.3;
        let probs = tch::no_grad(|| probabilities(&linear.forward(&test))).unwrap();
        let names: Vec<String> = (0..classes).map(|c| c.to_string()).collect();
        let r = evaluate(&probs, &test_labels, &vec![0; n as usize], &names);
        assert!(r.top1 >= 0.99, "top-1 {}", r.top1);
        assert!(r.macro_f1 >= 0.99);
    }
}
