//! `geossl bench step`: geossl's whole pretraining step (momentum update,
//! shuffled key pass, InfoNCE + geo loss, backward, SGD), set up exactly as
//! `../shared/bench/torch_reference.py` sets up PyTorch's: torchvision
//! ResNet with the MLP head, queue 4096, dim 128, T 0.02, 100 geo classes,
//! SGD (lr 0.03, momentum 0.9, wd 1e-4), random inputs already on the
//! device, one BN group (the reference has no shuffle-BN emulation).

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::model::resnet::Arch;
use crate::model::Moco;
use crate::train::pretrain::to_model_input;
use crate::train::sgd::Sgd;
use crate::train::step::{train_step, DeviceBatch, StepSettings};
use crate::train::PretrainConfig;

/// The settings of `geossl bench step` (the reference's; the CLI holds its
/// defaults).
#[derive(Debug, Clone)]
pub struct StepBenchConfig {
    pub arch: Arch,
    pub batch: i64,
    /// Input side in pixels.
    pub size: i64,
    /// cpu, cuda or cuda:N.
    pub device: String,
    /// bf16 autocast.
    pub amp: bool,
    pub channels_last: bool,
    pub queue: i64,
    pub dim: i64,
    pub geo_classes: i64,
    pub temperature: f64,
    /// Shuffle-BN groups (1: none, as the reference).
    pub bn_groups: i64,
    /// Untimed steps first.
    pub warmup: usize,
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: usize,
    pub seed: u64,
}

impl StepBenchConfig {
    /// The pretraining config that this bench times: the defaults, with
    /// the bench's model and MoCo settings.
    pub fn pretrain_config(&self) -> PretrainConfig {
        let mut run = PretrainConfig::default();
        run.model.arch = self.arch;
        let m = &mut run.moco;
        (m.moco_dim, m.moco_k, m.moco_t) = (self.dim, self.queue, self.temperature);
        m.bn_groups = self.bn_groups;
        run
    }
}

#[derive(Debug, Clone)]
pub struct StepTiming {
    pub median_ms: f64,
    pub min_ms: f64,
    pub last_loss: f64,
    pub peak_rss_mib: Option<f64>,
}

pub fn run(c: &StepBenchConfig) -> anyhow::Result<StepTiming> {
    if c.threads > 0 {
        tch::set_num_threads(c.threads as i32);
    }
    let device = crate::model::parse_device(&c.device)
        .map_err(anyhow::Error::msg)?
        .resolve()?;
    tch::manual_seed(c.seed as i64);
    let run = c.pretrain_config();
    let input = crate::data::bands::InputSpec::rgb();
    let mut moco = Moco::new(device, run.resnet(&input), run.moco(Some(c.geo_classes)))?;
    if c.channels_last {
        moco.to_channels_last()?;
    }
    let o = &run.optimizer;
    let mut sgd = Sgd::new(moco.vs_q.variables(), o.momentum, o.weight_decay);
    let dims = [c.batch, 3, c.size, c.size];
    let query = to_model_input(
        &Tensor::randn(dims, (Kind::Float, Device::Cpu)),
        device,
        c.channels_last,
    )?;
    let key = to_model_input(
        &Tensor::randn(dims, (Kind::Float, Device::Cpu)),
        device,
        c.channels_last,
    )?;
    let geo = Tensor::randint(c.geo_classes, [c.batch], (Kind::Int64, device));
    let batch = DeviceBatch {
        query: &query,
        key: &key,
        geo: Some(&geo),
    };
    let steps = c.steps.max(1);
    let mut times = Vec::with_capacity(steps);
    let mut last_loss = f64::NAN;
    for step in 0..c.warmup + steps {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        let started = Instant::now();
        let settings = StepSettings {
            // The reference's lr: unscaled by the batch.
            lr: o.lr,
            shuffle_seed: c.seed.wrapping_add(step as u64),
            amp: c.amp,
        };
        // Ends with the scalars on the host: the step's one sync, as the
        // reference's loss.item().
        last_loss = train_step(&mut moco, &mut sgd, &batch, settings)?.loss;
        if step >= c.warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (median_ms, min_ms) = super::median_min(&times);
    Ok(StepTiming {
        median_ms,
        min_ms,
        last_loss,
        peak_rss_mib: super::peak_rss_mib(),
    })
}
