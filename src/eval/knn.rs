//! Weighted k-nearest-neighbour classification on L2-normalised features
//! (Wu et al. 2018, the usual self-supervised monitor): each test feature's
//! k most cosine-similar training features vote for their class with weight
//! exp(similarity / t); the class scores, normalised to sum 1, serve as the
//! probabilities of the report (and of per-location aggregation).

use tch::{Device, Kind, Tensor};

use super::classification::ClassificationReport;
use super::encoder::Encoder;
use super::features::{extract_warning_once, to_vec};
use super::task::Task;
use crate::data::augment::ViewTransform;
use crate::data::bands::InputSpec;
use crate::data::Manifest;
use crate::model::moco::normalize;
use crate::model::ResNet;
use crate::progress;
use crate::train::monitor::EpochMonitor;
use crate::train::PretrainConfig;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnConfig {
    /// Neighbours that vote (20).
    pub k: usize,
    /// Temperature of the vote weights (0.07).
    pub temperature: f64,
}

impl KnnConfig {
    /// At least one neighbour and a positive, finite temperature; the
    /// errors name the setting (`k`, `t`).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.k >= 1, "k (neighbours that vote) must be at least 1");
        anyhow::ensure!(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "t (temperature) must be positive and finite, got {}",
            self.temperature
        );
        Ok(())
    }
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: 20,
            temperature: 0.07,
        }
    }
}

/// The kNN monitor of pretraining (`knn_every`): weighted kNN top-1 of the
/// query encoder's backbone, the manifest's `knn_train_split` rows as the
/// bank and its `knn_test_split` rows as the queries (center crops at the
/// pretraining image size, batches of 256).
pub struct KnnMonitor {
    task: Task,
    knn: KnnConfig,
    image_size: u32,
    /// The run's input: the monitor reads images as pretraining does.
    input: InputSpec,
}

impl KnnMonitor {
    /// The monitor of a run with `config` over `manifest` (every row,
    /// whatever the pretraining split); unreadable images follow the run's
    /// `on_bad_image`; images are read as `input` (the run's resolved
    /// input). Errors: the kNN splits lack labels (or rows).
    pub fn new(
        manifest: &Manifest,
        config: &PretrainConfig,
        input: &InputSpec,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut task = Task::new(
            std::sync::Arc::new(manifest.clone()),
            super::Target::Label,
            &config.monitor.knn_train_split,
            &config.monitor.knn_test_split,
            None,
        )
        .with_context(|| {
            format!(
                "{} needs labels on the kNN splits",
                crate::settings::name("knn_every")
            )
        })?;
        task.on_bad_image = config.run.on_bad_image;
        // Read every `knn_every` epochs: decode each image once.
        task.cache_images = true;
        task.source =
            crate::data::source::ImageSource::open(Some(&config.run.packed), &task.manifest)?;
        task.decode = crate::data::decode::DecodeOptions {
            scale: config.data.decode_scale,
            ..Default::default()
        };
        Ok(Self {
            task,
            knn: KnnConfig {
                k: config.monitor.knn_k,
                temperature: config.monitor.knn_t,
            },
            image_size: config.data.image_size,
            input: input.clone(),
        })
    }

    /// [`KnnMonitor::new`] boxed, as `pretrain` builds its monitor (a
    /// [`crate::train::monitor::BuildMonitor`]).
    pub fn build(
        manifest: &Manifest,
        config: &PretrainConfig,
        input: &InputSpec,
    ) -> anyhow::Result<Box<dyn EpochMonitor>> {
        Ok(Box::new(Self::new(manifest, config, input)?))
    }
}

impl EpochMonitor for KnnMonitor {
    fn evaluate(
        &mut self,
        backbone: &ResNet,
        device: Device,
        _epoch: usize,
    ) -> anyhow::Result<f64> {
        let report = knn_eval(
            backbone,
            &self.input,
            device,
            &self.task,
            self.image_size,
            256,
            &self.knn,
            true,
        )?;
        Ok(report.top1)
    }
}

/// Class probabilities [M, classes] of `test` [M, D] from the labelled bank
/// `train` [N, D] with `train_labels` [N] (int64).
pub fn knn_probabilities(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    classes: i64,
    config: &KnnConfig,
) -> anyhow::Result<Tensor> {
    let n = train.size()[0];
    anyhow::ensure!(n > 0, "kNN needs at least one training feature");
    config.validate()?;
    let k = (config.k as i64).min(n);
    let bank = normalize(train, 1).transpose(0, 1);
    let labels = train_labels.to_device(train.device()).to_kind(Kind::Int64);
    let parts: Vec<Tensor> = tch::no_grad(|| {
        normalize(test, 1)
            .split(1024, 0)
            .iter()
            .map(|chunk| {
                let similarity = chunk.mm(&bank);
                let (values, indices) = similarity.topk(k, 1, true, true);
                let weights = (values / config.temperature).exp();
                let votes = labels
                    .index_select(0, &indices.flatten(0, -1))
                    .view_as(&indices);
                let scores =
                    Tensor::zeros([chunk.size()[0], classes], (Kind::Float, chunk.device()))
                        .scatter_add(1, &votes, &weights);
                &scores / scores.sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
            })
            .collect()
    });
    Ok(Tensor::cat(&parts, 0))
}

/// kNN top-1 etc. of `backbone` on `task`: the train split is the bank,
/// the test split is classified. Both read as `input` (the backbone's)
/// through Resize + CenterCrop at `image_size`. The report's `encoder` is left for the caller to name.
/// Unreadable images follow `task.on_bad_image`; under skip, the bank and
/// the figures are over the rows that were read, and the report lists the
/// rows left out. Each skipped row is warned about once per `task`.
///
/// Errors: `config` invalid ([`KnnConfig::validate`]), `batch` 0 or
/// `image_size` below [`crate::data::augment::MIN_IMAGE_SIZE`], before any
/// image is read.
// The backbone and the input it reads travel apart: the pretraining
// monitor has a bare backbone, not an `Encoder`.
#[allow(clippy::too_many_arguments)]
pub fn knn_eval(
    backbone: &ResNet,
    input: &InputSpec,
    device: Device,
    task: &Task,
    image_size: u32,
    batch: usize,
    config: &KnnConfig,
    quiet: bool,
) -> anyhow::Result<ClassificationReport> {
    config.validate()?;
    anyhow::ensure!(batch >= 1, "batch-size must be at least 1");
    crate::data::augment::check_image_size(image_size)?;
    let view = ViewTransform::CenterCrop { size: image_size };
    let features = |rows: &[usize], what: &str| {
        let loader = task.loader(rows, view, batch, input);
        let bar = progress::bar_unless(quiet, loader.batches_per_epoch() as u64, what);
        let f = extract_warning_once(
            backbone,
            device,
            &loader,
            0,
            what,
            &bar,
            &task.skip_warnings,
        );
        bar.finish_and_clear();
        f
    };
    let bank = features(&task.train.rows, "kNN bank features")?;
    let test = features(&task.test.rows, "kNN test features")?;
    let probs = knn_probabilities(
        &bank.features,
        &Tensor::from_slice(&task.train_labels(&bank.rows)?),
        &test.features,
        task.classes.len() as i64,
        config,
    )?;
    let protocol = format!(
        "weighted kNN (k {}, t {}) on L2-normalised {}-d features, bank = split {} ({} images), Resize({image_size}) + CenterCrop({image_size})",
        config.k,
        config.temperature,
        bank.features.size()[1],
        task.train_split,
        bank.rows.len()
    );
    let mut skipped = task.skipped(&bank.skipped, &task.train_split);
    skipped.extend(task.skipped(&test.skipped, &task.test_split));
    task.report(&test.rows, &to_vec(&probs)?, protocol, "", skipped)
}

/// [`knn_eval`] of `encoder` at `image_size` (default: the size it was
/// trained at), the report naming the encoder by its source.
pub fn knn_eval_encoder(
    encoder: &Encoder,
    task: &Task,
    image_size: Option<u32>,
    batch: usize,
    config: &KnnConfig,
    quiet: bool,
) -> anyhow::Result<ClassificationReport> {
    let mut report = knn_eval(
        &encoder.backbone,
        &encoder.input,
        encoder.vs.device(),
        task,
        image_size.unwrap_or(encoder.image_size),
        batch,
        config,
        quiet,
    )?;
    report.encoder = encoder.source.clone();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_on_a_tiny_labelled_set() {
        // Two classes on two rays, a third far away.
        let train = Tensor::from_slice(&[
            1.0f32, 0.1, 0.0, //
            2.0, 0.0, 0.1, //
            0.0, 1.0, 0.1, //
            0.1, 3.0, 0.0, //
            0.0, 0.0, 1.0,
        ])
        .view([5, 3]);
        let labels = Tensor::from_slice(&[0i64, 0, 1, 1, 2]);
        let test =
            Tensor::from_slice(&[5.0f32, 0.2, 0.0, 0.1, 0.5, 0.0, 0.0, 0.1, 0.2]).view([3, 3]);
        let cfg = KnnConfig {
            k: 2,
            temperature: 0.07,
        };
        let p = knn_probabilities(&train, &labels, &test, 3, &cfg).unwrap();
        let predicted: Vec<i64> = p.argmax(1, false).try_into().unwrap();
        assert_eq!(predicted, vec![0, 1, 2]);
        let sums: Vec<f32> = p
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            .try_into()
            .unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        // With k = 1 the vote is the nearest neighbour's class alone.
        let one = knn_probabilities(&train, &labels, &test, 3, &KnnConfig { k: 1, ..cfg }).unwrap();
        let v: Vec<f32> = one.get(0).try_into().unwrap();
        assert_eq!(v, vec![1.0, 0.0, 0.0]);
        // k larger than the bank uses the whole bank.
        assert!(knn_probabilities(&train, &labels, &test, 3, &KnnConfig { k: 50, ..cfg }).is_ok());
        // k 0 once voted with one neighbour anyway; t <= 0 or NaN divides
        // by nothing sensible.
        for (bad, message) in [
            (
                KnnConfig { k: 0, ..cfg },
                "k (neighbours that vote) must be at least 1",
            ),
            (
                KnnConfig {
                    temperature: 0.0,
                    ..cfg
                },
                "t (temperature) must be positive and finite, got 0",
            ),
            (
                KnnConfig {
                    temperature: -1.0,
                    ..cfg
                },
                "t (temperature) must be positive and finite, got -1",
            ),
            (
                KnnConfig {
                    temperature: f64::NAN,
                    ..cfg
                },
                "t (temperature) must be positive and finite, got NaN",
            ),
        ] {
            let err = knn_probabilities(&train, &labels, &test, 3, &bad).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }
}
