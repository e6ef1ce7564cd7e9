//! MoCo-v2 with the geo-location head: encoders, queue, momentum update,
//! loss. Mirrors the reference builder (`moco/builder.py`), plus the geo
//! head of the geography-aware variant.
//!
//! Shuffle-BN on one device: the reference runs the key encoder on a batch
//! shuffled across GPUs, so the keys' BatchNorm statistics come from other
//! samples than the queries' and the network cannot "cheat" by matching
//! batch statistics. With one device we split the batch into `bn_groups`
//! groups and run each group through the encoder on its own (per-group BN
//! statistics, as each GPU of a 4-GPU run has); the queries are grouped in
//! batch order, the keys after a random permutation that is undone
//! afterwards. This is the SplitBatchNorm emulation of the MoCo authors'
//! single-GPU demo, applied to both encoders as DDP does.
//!
//! Across processes (data-parallel training, see [`Moco::set_process_group`])
//! the key pass is the reference's own `_batch_shuffle_ddp` /
//! `_batch_unshuffle_ddp`: the key images of every rank are gathered, rank
//! 0's permutation of the global batch is broadcast, each rank encodes its
//! slice of the shuffled batch (in `bn_groups` groups of its own), the keys
//! are gathered and unshuffled, and each rank takes its own slice as
//! positives while the queue receives every rank's keys. So W ranks with
//! `bn_groups` g compute what one process with `bn_groups` W*g does.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

use super::heads::{GeoHead, ProjectionHead};
use super::queue::KeyQueue;
use super::resnet::{ResNet, ResNetConfig};
use super::torch_ext;
use crate::dist::ProcessGroup;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MocoConfig {
    /// Output dimension of the projection (128).
    pub dim: i64,
    /// Number of negative keys kept (65536).
    pub queue_size: i64,
    /// Key encoder momentum m (0.999).
    pub momentum: f64,
    /// Softmax temperature T (0.02 as published).
    pub temperature: f64,
    /// Groups for shuffle-BN emulation (1 disables it).
    pub bn_groups: i64,
    /// Number of geo clusters; `None` without the geo task.
    pub geo_classes: Option<i64>,
    /// Weights of the contrastive and the geo loss.
    pub alpha: f64,
    pub beta: f64,
}

/// Backbone + projection head, named as torchvision's resnet with `fc`
/// replaced by the MLP.
#[derive(Debug)]
pub struct Encoder {
    pub backbone: ResNet,
    pub head: ProjectionHead,
}

impl Encoder {
    pub fn new(p: &nn::Path, resnet: ResNetConfig, dim: i64) -> Self {
        let backbone = ResNet::new(p, resnet);
        let head = ProjectionHead::new(&(p / "fc"), resnet.feature_dim(), dim);
        Self { backbone, head }
    }

    /// Projection before L2 normalisation, [N, dim].
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.backbone.forward_t(xs, train))
    }

    /// Runs the batch in `groups` contiguous groups (per-group BN statistics).
    fn forward_grouped(&self, xs: &Tensor, groups: i64, train: bool) -> Tensor {
        if groups <= 1 {
            return self.forward_t(xs, train);
        }
        let parts: Vec<Tensor> = xs
            .chunk(groups, 0)
            .iter()
            .map(|g| self.forward_t(g, train))
            .collect();
        Tensor::cat(&parts, 0)
    }
}

/// Losses and accuracies of one step.
pub struct StepOutput {
    /// alpha * L_moco + beta * L_geo, with its graph.
    pub loss: Tensor,
    pub moco_loss: Tensor,
    pub geo_loss: Option<Tensor>,
    /// Fraction of queries whose positive key wins among all logits (a
    /// scalar tensor, read back with the losses in one transfer).
    pub moco_accuracy: Tensor,
    pub geo_accuracy: Option<Tensor>,
}

/// The loss was NaN or infinite; the query encoder, the BatchNorm
/// statistics, the optimiser state and the queue were left as they were
/// (the key encoder had already taken its momentum step towards the
/// unchanged query encoder).
#[derive(Debug, thiserror::Error)]
#[error("loss became {0}")]
pub struct NonFiniteLoss(pub f64);

pub struct Moco {
    pub config: MocoConfig,
    pub resnet: ResNetConfig,
    /// Trainable: `encoder_q.*` and `geo_head.*`.
    pub vs_q: nn::VarStore,
    /// Momentum copy: `encoder_k.*` (no gradients).
    pub vs_k: nn::VarStore,
    pub encoder_q: Encoder,
    encoder_k: Encoder,
    geo_head: Option<GeoHead>,
    /// The negative keys; a step's keys join it when the step is
    /// committed (see [`Moco::train_step`]).
    pub queue: KeyQueue,
    /// Key and query parameters, pairwise, for the momentum update;
    /// trainable parameters only, BN running statistics stay the key
    /// encoder's own (as in the reference).
    momentum_k: Vec<Tensor>,
    momentum_q: Vec<Tensor>,
    /// Both encoders' BatchNorm running statistics, and a same-shaped copy
    /// of them from before the last step (see [`Moco::save_bn_stats`]).
    bn_stats: Vec<Tensor>,
    bn_stats_saved: Vec<Tensor>,
    /// The ranks of a data-parallel run; `None` in a single process.
    group: Option<Arc<ProcessGroup>>,
}

impl Moco {
    pub fn new(device: Device, resnet: ResNetConfig, config: MocoConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.queue_size > 0 && config.dim > 0,
            "queue size and dim must be positive"
        );
        let vs_q = nn::VarStore::new(device);
        let encoder_q = Encoder::new(&(vs_q.root() / "encoder_q"), resnet, config.dim);
        let geo_head = config
            .geo_classes
            .map(|k| GeoHead::new(&(vs_q.root() / "geo_head"), config.dim, k));
        let mut vs_k = nn::VarStore::new(device);
        let encoder_k = Encoder::new(&(vs_k.root() / "encoder_k"), resnet, config.dim);
        let q_vars = vs_q.variables();
        let k_vars = vs_k.variables();
        let mut momentum_pairs = Vec::new();
        tch::no_grad(|| -> anyhow::Result<()> {
            for (name, k) in &k_vars {
                let q_name = format!("encoder_q{}", &name["encoder_k".len()..]);
                let q = q_vars.get(&q_name).ok_or_else(|| {
                    anyhow::anyhow!("key encoder variable {name} has no query twin")
                })?;
                k.shallow_clone().f_copy_(q)?;
                if q.requires_grad() {
                    momentum_pairs.push((k.shallow_clone(), q.shallow_clone()));
                }
            }
            Ok(())
        })?;
        vs_k.freeze();
        let (momentum_k, momentum_q) = momentum_pairs.into_iter().unzip();
        let bn_stats: Vec<Tensor> = [&vs_q, &vs_k]
            .iter()
            .flat_map(|vs| vs.variables().into_values())
            .filter(|t| !t.requires_grad() && t.kind() == Kind::Float)
            .collect();
        let bn_stats_saved = bn_stats.iter().map(Tensor::zeros_like).collect();
        let queue = KeyQueue::new(config.dim, config.queue_size, device);
        Ok(Self {
            config,
            resnet,
            vs_q,
            vs_k,
            encoder_q,
            encoder_k,
            geo_head,
            queue,
            momentum_k,
            momentum_q,
            bn_stats,
            bn_stats_saved,
            group: None,
        })
    }

    /// Makes this model one rank of a data-parallel run: the key pass then
    /// shuffles across the ranks (see the module documentation), the
    /// batches given to [`Moco::train_step`] are this rank's part of the
    /// global batch, and the queue takes the keys of every rank.
    pub fn set_process_group(&mut self, group: Arc<ProcessGroup>) {
        self.group = Some(group);
    }

    /// The process group of a data-parallel run, `None` in a single process.
    pub fn process_group(&self) -> Option<&Arc<ProcessGroup>> {
        self.group.as_ref()
    }

    /// Copies root's parameters, BatchNorm statistics (both encoders and
    /// the geo head) and queue keys into every rank, as DDP's start-up
    /// broadcast of the module state. Does nothing in a single process.
    pub fn broadcast_from(&self, root: usize) -> anyhow::Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let mut tensors: Vec<Tensor> = Vec::new();
        for vs in [&self.vs_q, &self.vs_k] {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            tensors.extend(vars.into_iter().map(|(_, t)| t));
        }
        tensors.push(self.queue.keys().shallow_clone());
        broadcast_in_place(group, &tensors, root)
    }

    /// theta_k <- m theta_k + (1 - m) theta_q, for every trainable parameter.
    /// One multi-tensor lerp over all parameters.
    pub fn momentum_update(&self) -> anyhow::Result<()> {
        let w = 1.0 - self.config.momentum;
        tch::no_grad(|| torch_ext::foreach_lerp(&self.momentum_k, &self.momentum_q, w))?;
        Ok(())
    }

    /// Both encoders' convolution weights (and the geo head's, had it any)
    /// to channels-last, so the convolutions run NHWC (inputs must follow).
    pub fn to_channels_last(&mut self) -> anyhow::Result<()> {
        torch_ext::vars_to_channels_last(&self.vs_q)?;
        torch_ext::vars_to_channels_last(&self.vs_k)?;
        Ok(())
    }

    /// Effective number of BN groups for a batch (see [`bn_groups_for`]).
    pub fn groups_for(&self, batch: i64) -> i64 {
        bn_groups_for(self.config.bn_groups, batch)
    }

    /// One training step, the whole MoCo protocol in order: keeps the
    /// BatchNorm statistics ([`Moco::save_bn_stats`]), runs [`Moco::step`]
    /// (under bf16 autocast with `amp`), hands its output to `optimise`
    /// (backward pass and optimiser step; it returns the loss read back on
    /// the host, and what the caller wants of the step), and then commits
    /// the step's keys to the queue. A non-finite loss instead discards the
    /// keys, restores the BN statistics and fails with [`NonFiniteLoss`]
    /// (`optimise` must then leave the weights alone itself).
    pub fn train_step<T>(
        &mut self,
        im_q: &Tensor,
        im_k: &Tensor,
        geo_labels: Option<&Tensor>,
        shuffle_seed: u64,
        amp: bool,
        optimise: impl FnOnce(StepOutput) -> anyhow::Result<(f64, T)>,
    ) -> anyhow::Result<T> {
        self.save_bn_stats()?;
        let out = torch_ext::autocast_bf16(im_q.device(), amp, || {
            self.step(im_q, im_k, geo_labels, shuffle_seed)
        })??;
        let (loss, applied) = optimise(out).inspect_err(|_| self.queue.discard())?;
        if !loss.is_finite() {
            self.queue.discard();
            self.restore_bn_stats()?;
            return Err(NonFiniteLoss(loss).into());
        }
        self.queue.commit();
        Ok(applied)
    }

    /// One training forward: query and key images [N, 3, H, W], geo labels
    /// [N] (for the geo variants), a seed for the shuffle permutation.
    /// Updates the key encoder (before computing keys); the keys are
    /// pushed to the queue, to join it when the step is committed, after
    /// the backward pass (see [`Moco::train_step`], the only way in).
    fn step(
        &mut self,
        im_q: &Tensor,
        im_k: &Tensor,
        geo_labels: Option<&Tensor>,
        shuffle_seed: u64,
    ) -> anyhow::Result<StepOutput> {
        let n = im_q.size()[0];
        let global = n * self.group.as_ref().map_or(1, |g| g.world_size() as i64);
        anyhow::ensure!(
            self.config.queue_size % global == 0,
            "queue size {} is not a multiple of the {}batch size {global}",
            self.config.queue_size,
            if self.group.is_some() { "global " } else { "" }
        );
        let groups = self.groups_for(n);
        let q_raw = self.encoder_q.forward_grouped(im_q, groups, true);
        let q = normalize(&q_raw, 1);
        self.momentum_update()?;
        // `keys`: what joins the queue; `k`: this rank's positives.
        let (keys, k) = match &self.group {
            None => {
                let k = tch::no_grad(|| {
                    let (perm, inverse) = shuffle_permutation(n, shuffle_seed, im_k.device());
                    let shuffled = im_k.index_select(0, &perm);
                    let k = normalize(&self.encoder_k.forward_grouped(&shuffled, groups, true), 1);
                    k.index_select(0, &inverse)
                });
                (k.shallow_clone(), k)
            }
            Some(group) => {
                let keys = tch::no_grad(|| {
                    keys_across_ranks(group, &self.encoder_k, im_k, groups, shuffle_seed)
                })?;
                let k = keys.narrow(0, group.rank() as i64 * n, n);
                (keys, k)
            }
        };
        // The queue as it is, no copy (the reference clones it, 32 MB at the
        // paper's K = 65536): the keys are enqueued after the backward pass.
        let (moco_loss, logits) = info_nce(&q, &k, self.queue.keys(), self.config.temperature);
        let moco_accuracy = top1(&logits, &Tensor::zeros([n], (Kind::Int64, logits.device())));
        let (geo_loss, geo_accuracy) = match &self.geo_head {
            Some(head) => {
                let labels =
                    geo_labels.ok_or_else(|| anyhow::anyhow!("the geo head needs geo labels"))?;
                let geo_logits = head.forward(&q_raw);
                let l = geo_logits.f_cross_entropy_loss::<Tensor>(
                    labels,
                    None,
                    tch::Reduction::Mean,
                    -100,
                    0.0,
                )?;
                (Some(l), Some(top1(&geo_logits, labels)))
            }
            None => (None, None),
        };
        let loss = match &geo_loss {
            Some(l) => &moco_loss * self.config.alpha + l * self.config.beta,
            None => &moco_loss * self.config.alpha,
        };
        self.queue.push(keys);
        Ok(StepOutput {
            loss,
            moco_loss,
            geo_loss,
            moco_accuracy,
            geo_accuracy,
        })
    }

    /// Keeps a copy of the BatchNorm running statistics (one multi-tensor
    /// copy), so that a step whose batch turns out bad (a NaN loss) can be
    /// undone completely: the forward pass updates them before anyone knows.
    fn save_bn_stats(&mut self) -> anyhow::Result<()> {
        tch::no_grad(|| torch_ext::foreach_copy(&self.bn_stats_saved, &self.bn_stats))?;
        Ok(())
    }

    /// Puts back the statistics of [`Moco::save_bn_stats`].
    fn restore_bn_stats(&mut self) -> anyhow::Result<()> {
        tch::no_grad(|| torch_ext::foreach_copy(&self.bn_stats, &self.bn_stats_saved))?;
        Ok(())
    }

    /// The geo head's logits for a query projection (before normalisation).
    pub fn geo_logits(&self, q_raw: &Tensor) -> Option<Tensor> {
        self.geo_head.as_ref().map(|h| h.forward(q_raw))
    }
}

/// The normalised keys [W*n, dim] of the global batch, in batch order
/// (rank r's samples at r*n..(r+1)*n), from this rank's key images `im_k`
/// [n, 3, H, W]: the reference's `_batch_shuffle_ddp` (gather the images,
/// rank 0's permutation of the global batch, this rank's slice of the
/// shuffled batch through the key encoder in `groups` BN groups) and
/// `_batch_unshuffle_ddp` (gather the keys, undo the permutation).
/// Rank 0's permutation is the one a single process would draw from
/// `shuffle_seed` for the global batch.
fn keys_across_ranks(
    group: &ProcessGroup,
    encoder_k: &Encoder,
    im_k: &Tensor,
    groups: i64,
    shuffle_seed: u64,
) -> anyhow::Result<Tensor> {
    let (rank, world, n) = (
        group.rank() as i64,
        group.world_size() as i64,
        im_k.size()[0],
    );
    let channels_last = !im_k.is_contiguous();
    let gathered = group.all_gather(&im_k.contiguous())?;
    let images = match channels_last {
        true => torch_ext::contiguous(&gathered, true)?,
        false => gathered,
    };
    let (perm, _) = shuffle_permutation(n * world, shuffle_seed, im_k.device());
    group.broadcast(std::slice::from_ref(&perm), 0)?;
    let mine = images.index_select(0, &perm.narrow(0, rank * n, n));
    let k = normalize(&encoder_k.forward_grouped(&mine, groups, true), 1);
    let keys = group.all_gather(&k.contiguous())?;
    Ok(keys.index_select(0, &perm.argsort(0, false)))
}

/// Broadcasts `tensors` from `root` in place, in one coalesced call;
/// those not contiguous (channels-last weights) travel as contiguous
/// copies that are copied back.
pub fn broadcast_in_place(
    group: &ProcessGroup,
    tensors: &[Tensor],
    root: usize,
) -> anyhow::Result<()> {
    let dense: Vec<Tensor> = tensors
        .iter()
        .map(|t| match t.is_contiguous() {
            true => t.shallow_clone(),
            false => t.contiguous(),
        })
        .collect();
    group.broadcast(&dense, root)?;
    tch::no_grad(|| -> anyhow::Result<()> {
        for (t, d) in tensors.iter().zip(&dense) {
            if !t.is_contiguous() {
                t.shallow_clone().f_copy_(d)?;
            }
        }
        Ok(())
    })
}

/// Effective number of BN groups for a batch: at most `bn_groups`, with at
/// least 2 samples per group and equal group sizes.
pub fn bn_groups_for(bn_groups: i64, batch: i64) -> i64 {
    let mut g = bn_groups.clamp(1, (batch / 2).max(1));
    while batch % g != 0 {
        g -= 1;
    }
    g
}

/// L2 normalisation along `dim` (as `F.normalize`, eps 1e-12).
pub fn normalize(x: &Tensor, dim: i64) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [dim], true).clamp_min(1e-12);
    x / norm
}

/// InfoNCE: logits = [q.k, q.queue] / T, cross-entropy with the positive at
/// index 0. Returns the loss and the logits [N, 1 + K].
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> (Tensor, Tensor) {
    let l_pos = (q * k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let l_neg = q.matmul(queue);
    let logits = Tensor::cat(&[l_pos, l_neg], 1) / temperature;
    let target = Tensor::zeros([logits.size()[0]], (Kind::Int64, logits.device()));
    (logits.cross_entropy_for_logits(&target), logits)
}

/// Top-1 accuracy as a scalar tensor (no device sync).
fn top1(logits: &Tensor, target: &Tensor) -> Tensor {
    tch::no_grad(|| {
        logits
            .argmax(1, false)
            .eq_tensor(target)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
    })
}

/// A random permutation of 0..n from `seed`, and its inverse, as index tensors.
pub fn shuffle_permutation(n: i64, seed: u64, device: Device) -> (Tensor, Tensor) {
    let mut perm: Vec<i64> = (0..n).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut inverse = vec![0i64; n as usize];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p as usize] = i as i64;
    }
    (
        Tensor::from_slice(&perm).to_device(device),
        Tensor::from_slice(&inverse).to_device(device),
    )
}

/// A ResNet-18 of width 4 on 16 px inputs with a dim-8 projection, for
/// unit tests here and in `train`.
#[cfg(test)]
pub(crate) fn tiny_for_tests(geo: Option<i64>, queue: i64) -> Moco {
    tch::manual_seed(0);
    let resnet = ResNetConfig {
        arch: super::resnet::Arch::Resnet18,
        width: 4,
        small_input: true,
        in_channels: 3,
    };
    let config = MocoConfig {
        dim: 8,
        queue_size: queue,
        momentum: 0.9,
        temperature: 0.2,
        bn_groups: 2,
        geo_classes: geo,
        alpha: 1.0,
        beta: 1.0,
    };
    Moco::new(Device::Cpu, resnet, config).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(geo: Option<i64>, queue: i64) -> Moco {
        tiny_for_tests(geo, queue)
    }

    #[test]
    fn info_nce_matches_hand_computation() {
        // q = [1, 0], k = [0.6, 0.8], queue columns [1, 0] and [0, 1], T = 0.5:
        // logits = [0.6, 1, 0] / 0.5 = [1.2, 2, 0];
        // loss = -1.2 + ln(e^1.2 + e^2 + e^0).
        let q = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let k = Tensor::from_slice(&[0.6f32, 0.8]).view([1, 2]);
        let queue = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let (loss, logits) = info_nce(&q, &k, &queue, 0.5);
        let expect = -1.2f64 + (1.2f64.exp() + 2f64.exp() + 1.0).ln();
        assert!((loss.double_value(&[]) - expect).abs() < 1e-6);
        let l: Vec<f32> = logits.flatten(0, -1).try_into().unwrap();
        assert!((l[0] - 1.2).abs() < 1e-6 && (l[1] - 2.0).abs() < 1e-6 && l[2].abs() < 1e-6);
    }

    #[test]
    fn key_encoder_starts_as_copy_and_follows_by_momentum() {
        let m = tiny(None, 16);
        let q = m.vs_q.variables();
        let k = m.vs_k.variables();
        let name = "layer1.0.conv1.weight";
        let (qw, kw) = (
            &q[&format!("encoder_q.{name}")],
            &k[&format!("encoder_k.{name}")],
        );
        assert!(qw.equal(kw));
        assert!(!kw.requires_grad());
        // Move the query weights, update, check the formula.
        tch::no_grad(|| {
            let _ = qw.shallow_clone().fill_(1.0);
        });
        let before = kw.copy();
        m.momentum_update().unwrap();
        let expect = &before * 0.9 + 0.1;
        assert!(kw.allclose(&expect, 1e-6, 1e-7, false));
        // Buffers are not averaged.
        let rm = "layer1.0.bn1.running_mean";
        let _ = q[&format!("encoder_q.{rm}")].shallow_clone().fill_(5.0);
        m.momentum_update().unwrap();
        assert_eq!(
            k[&format!("encoder_k.{rm}")]
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
    }

    #[test]
    fn permutation_round_trips() {
        for seed in 0..20 {
            let x = Tensor::arange(10, (Kind::Int64, Device::Cpu));
            let (perm, inverse) = shuffle_permutation(10, seed, Device::Cpu);
            let back = x.index_select(0, &perm).index_select(0, &inverse);
            assert!(back.equal(&x));
            if seed == 1 {
                assert!(!x.index_select(0, &perm).equal(&x), "a real shuffle");
            }
        }
    }

    #[test]
    fn geo_head_reads_the_unnormalised_projection() {
        let m = tiny(Some(5), 16);
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let q_raw = m.encoder_q.forward_t(&x, false);
        let scaled = &q_raw * 3.0;
        let a = m.geo_logits(&q_raw).unwrap();
        let b = m.geo_logits(&scaled).unwrap();
        // Normalisation would make these equal; on the raw projection the
        // logits (minus bias) scale with it, as ReLU is positively homogeneous.
        let bias = &m.vs_q.variables()["geo_head.1.bias"];
        assert!((&b - bias).allclose(&((&a - bias) * 3.0), 1e-4, 1e-5, false));
        assert!(!a.allclose(&b, 1e-3, 1e-3, false));
    }

    #[test]
    fn step_computes_both_losses_and_checks_queue_multiple() {
        let mut m = tiny(Some(3), 8);
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 2, 0]);
        let out = m.step(&x, &x, Some(&labels), 7).unwrap();
        let total = out.loss.double_value(&[]);
        let parts = out.moco_loss.double_value(&[]) + out.geo_loss.unwrap().double_value(&[]);
        assert!((total - parts).abs() < 1e-5);
        assert_eq!(m.queue.ptr(), 0, "keys wait for the backward pass");
        out.loss.backward();
        m.queue.commit();
        assert_eq!(m.queue.ptr(), 4);
        let err = m
            .step(
                &x.narrow(0, 0, 3),
                &x.narrow(0, 0, 3),
                Some(&labels.narrow(0, 0, 3)),
                1,
            )
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "queue size 8 is not a multiple of the batch size 3"
        );
        assert_eq!(m.groups_for(32), 2);
        assert_eq!(m.groups_for(2), 1);
    }
}
