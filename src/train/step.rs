//! One pretraining step, the unit that `pretrain` repeats and `geossl bench
//! step` times: MoCo forward (momentum update, shuffled key pass, losses),
//! backward, SGD update. [`Moco::train_step`] holds the MoCo side (BN
//! statistics, when keys join the queue); this adds the optimiser.
//!
//! The step never waits for the device in the middle: a NaN/inf loss is
//! detected on the device and makes the fused SGD kernel skip its update,
//! and the scalars (losses, accuracies) come back in one transfer at the
//! end, the step's only sync, as `loss.item()` is the reference's.
//!
//! In data-parallel training (a [`Moco`] with a process group) the
//! gradients, the step's scalars and each rank's [`StepFlags`] go through
//! ONE coalesced all-reduce after the backward pass (DDP's gradient
//! averaging without the Reducer, whose hooks the `autograd.grad`-style
//! backward would bypass); the gradients are then divided by the world
//! size, the NaN/inf check reads the reduced loss (so every rank skips or
//! applies the same step), and the scalars reported are the ranks' means.

use tch::{Device, Kind, Tensor};

use super::sgd::Sgd;
use crate::dist::ProcessGroup;
use crate::model::moco::StepOutput;
use crate::model::Moco;
pub use crate::model::NonFiniteLoss;

/// Scalars of one step.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f64,
    pub moco_loss: f64,
    pub moco_accuracy: f64,
    pub geo_loss: Option<f64>,
    pub geo_accuracy: Option<f64>,
}

/// A batch on the model's device.
pub struct DeviceBatch<'a> {
    pub query: &'a Tensor,
    pub key: &'a Tensor,
    /// Geo-cluster labels, for the geo variants.
    pub geo: Option<&'a Tensor>,
}

/// How the step runs, beside the batch.
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    pub lr: f64,
    /// Seed of the key-shuffle permutation.
    pub shuffle_seed: u64,
    /// bf16 autocast for the forward pass.
    pub amp: bool,
}

/// What each rank says at a step of a data-parallel run; summed over the
/// ranks in the step's all-reduce, so that every rank takes the same
/// decision after the same step. Small counts, exact in the f64 they
/// travel as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepFlags {
    /// Ranks that have received SIGINT since the run began.
    pub sigint: u32,
    /// Ranks that have received SIGTERM since the run began.
    pub sigterm: u32,
    /// A time-based checkpoint is due (set on rank 0 alone: its clock decides).
    pub checkpoint_due: u32,
    /// Unreadable images replaced in this step's batch.
    pub bad_images: u32,
}

impl StepFlags {
    const LEN: usize = 4;

    fn to_values(self) -> [f64; Self::LEN] {
        [
            self.sigint,
            self.sigterm,
            self.checkpoint_due,
            self.bad_images,
        ]
        .map(f64::from)
    }

    fn from_values(v: &[f64]) -> Self {
        Self {
            sigint: v[0] as u32,
            sigterm: v[1] as u32,
            checkpoint_due: v[2] as u32,
            bad_images: v[3] as u32,
        }
    }
}

/// One step of `moco` and `sgd` on `batch`: its scalars, or a
/// [`NonFiniteLoss`] error after which nothing trained has changed (the
/// fused SGD kernel skips its update on the device-side check below).
pub fn train_step(
    moco: &mut Moco,
    sgd: &mut Sgd,
    batch: &DeviceBatch,
    settings: StepSettings,
) -> anyhow::Result<StepStats> {
    train_step_with_flags(moco, sgd, batch, settings, StepFlags::default()).map(|(s, _)| s)
}

/// [`train_step`] that also hands this rank's `flags` to the step's
/// all-reduce and returns them summed over the ranks (as given in a single
/// process). With a process group, `batch` is this rank's part of the
/// global batch and the scalars are the ranks' means. Errors also: a
/// failed collective ([`crate::dist::CollectiveError`]).
pub fn train_step_with_flags(
    moco: &mut Moco,
    sgd: &mut Sgd,
    batch: &DeviceBatch,
    settings: StepSettings,
    flags: StepFlags,
) -> anyhow::Result<(StepStats, StepFlags)> {
    let group = moco.process_group().cloned();
    moco.train_step(
        batch.query,
        batch.key,
        batch.geo,
        settings.shuffle_seed,
        settings.amp,
        |out| match group {
            None => {
                let found_inf =
                    tch::no_grad(|| out.loss.isfinite().logical_not().to_kind(Kind::Float));
                sgd.backward_step(&out.loss, settings.lr, Some(&found_inf))?;
                let host: Vec<f64> = Tensor::stack(&step_scalars(&out), 0)
                    .to_device(Device::Cpu)
                    .try_into()?;
                let stats = StepStats::from_values(&host, 1.0);
                Ok((stats.loss, (stats, flags)))
            }
            Some(group) => optimise_across_ranks(&group, sgd, &out, settings.lr, flags),
        },
    )
}

/// The step's scalars as f64 device scalars: loss, InfoNCE, its accuracy,
/// and the geo loss and accuracy for the geo variants.
fn step_scalars(out: &StepOutput) -> Vec<Tensor> {
    let mut scalars = vec![
        out.loss.detach(),
        out.moco_loss.detach(),
        out.moco_accuracy.shallow_clone(),
    ];
    if let (Some(l), Some(a)) = (&out.geo_loss, &out.geo_accuracy) {
        scalars.push(l.detach());
        scalars.push(a.shallow_clone());
    }
    scalars.iter().map(|t| t.to_kind(Kind::Double)).collect()
}

impl StepStats {
    /// From [`step_scalars`] read back, summed over `ranks` ranks.
    fn from_values(host: &[f64], ranks: f64) -> Self {
        Self {
            loss: host[0] / ranks,
            moco_loss: host[1] / ranks,
            moco_accuracy: host[2] / ranks,
            geo_loss: host.get(3).map(|v| v / ranks),
            geo_accuracy: host.get(4).map(|v| v / ranks),
        }
    }
}

/// Backward, then one all-reduce of [gradients..., scalars and flags],
/// gradients divided by the world size, the SGD step skipped on every rank
/// when the reduced loss is not finite, and the reduced scalars read back
/// (the step's one sync). Returns the mean loss and (mean scalars, summed
/// flags).
fn optimise_across_ranks(
    group: &ProcessGroup,
    sgd: &mut Sgd,
    out: &StepOutput,
    lr: f64,
    flags: StepFlags,
) -> anyhow::Result<(f64, (StepStats, StepFlags))> {
    let grads = sgd.gradients(&out.loss)?;
    let mut scalars = step_scalars(out);
    let stats_len = scalars.len();
    let device = out.loss.device();
    scalars.extend(flags.to_values().map(|v| Tensor::from(v).to_device(device)));
    let packed = Tensor::stack(&scalars, 0);
    // Channels-last gradients travel as contiguous copies, copied back.
    let dense: Vec<Tensor> = grads
        .iter()
        .map(|g| match g.is_contiguous() {
            true => g.shallow_clone(),
            false => g.contiguous(),
        })
        .chain([packed.shallow_clone()])
        .collect();
    group.all_reduce_sum(&dense)?;
    let world = group.world_size() as f64;
    tch::no_grad(|| -> anyhow::Result<()> {
        for (g, d) in grads.iter().zip(&dense) {
            if !g.is_contiguous() {
                g.shallow_clone().f_copy_(d)?;
            }
            let _ = g.shallow_clone().f_div_scalar_(world)?;
        }
        Ok(())
    })?;
    let found_inf = tch::no_grad(|| packed.get(0).isfinite().logical_not().to_kind(Kind::Float));
    sgd.step(lr, &grads, Some(&found_inf))?;
    let host: Vec<f64> = packed.to_device(Device::Cpu).try_into()?;
    let stats = StepStats::from_values(&host[..stats_len], world);
    let flags = StepFlags::from_values(&host[stats_len..]);
    Ok((stats.loss, (stats, flags)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Moco, Sgd) {
        let moco = crate::model::moco::tiny_for_tests(Some(3), 16);
        let sgd = Sgd::new(moco.vs_q.variables(), 0.9, 1e-4);
        (moco, sgd)
    }

    fn snapshot(moco: &Moco) -> Vec<Tensor> {
        let mut vars: Vec<_> = moco.vs_q.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.into_iter().map(|(_, t)| t.copy()).collect()
    }

    #[test]
    fn a_step_updates_weights_and_queue() {
        let (mut moco, mut sgd) = tiny();
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let geo = Tensor::from_slice(&[0i64, 1, 2, 0]);
        let before = snapshot(&moco);
        let batch = DeviceBatch {
            query: &x,
            key: &x,
            geo: Some(&geo),
        };
        let settings = StepSettings {
            lr: 0.1,
            shuffle_seed: 1,
            amp: false,
        };
        let stats = train_step(&mut moco, &mut sgd, &batch, settings).unwrap();
        assert!(stats.loss.is_finite() && stats.geo_loss.is_some());
        assert!((stats.loss - stats.moco_loss - stats.geo_loss.unwrap()).abs() < 1e-5);
        assert_eq!(moco.queue.ptr(), 4);
        let changed = before
            .iter()
            .zip(snapshot(&moco))
            .filter(|(a, b)| !a.equal(b))
            .count();
        assert_eq!(changed, before.len(), "every trained parameter moved");
    }

    /// The tiny model of these tests with `bn_groups` BatchNorm groups.
    fn tiny_with_groups(bn_groups: i64) -> (Moco, Sgd) {
        let (mut moco, sgd) = tiny();
        moco.config.bn_groups = bn_groups;
        (moco, sgd)
    }

    /// A copy of `moco`'s whole state by name: both encoders' variables
    /// (weights and BatchNorm statistics) and the queue keys.
    fn model_state(moco: &Moco) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> = [&moco.vs_q, &moco.vs_k]
            .iter()
            .flat_map(|vs| vs.variables())
            .map(|(name, t)| (name, t.copy()))
            .collect();
        state.push(("queue".into(), moco.queue.keys().copy()));
        state
    }

    /// Sets `moco` to `state` (from [`model_state`]). How models here share
    /// a start: not by seeding libtorch's generator, which is global, and
    /// which the other tests of this binary draw from at the same time.
    fn set_model_state(moco: &Moco, state: &[(String, Tensor)]) {
        let mut vars = moco.vs_q.variables();
        vars.extend(moco.vs_k.variables());
        vars.insert("queue".into(), moco.queue.keys().shallow_clone());
        assert_eq!(vars.len(), state.len());
        tch::no_grad(|| {
            for (name, value) in state {
                vars[name].shallow_clone().copy_(value);
            }
        });
    }

    /// Two steps of `moco` on `x` [N, 3, 16, 16]: the scalars of each and
    /// the trained weights, queue and SGD momentum buffers after them.
    fn two_steps(
        moco: &mut Moco,
        sgd: &mut Sgd,
        x: &Tensor,
        geo: &Tensor,
    ) -> (Vec<StepStats>, Vec<Tensor>) {
        let batch = DeviceBatch {
            query: x,
            key: &x.flip([3]),
            geo: Some(geo),
        };
        let stats = (0..2)
            .map(|step| {
                let settings = StepSettings {
                    lr: 0.1,
                    shuffle_seed: step,
                    amp: false,
                };
                train_step(moco, sgd, &batch, settings).unwrap()
            })
            .collect();
        // Trained weights only: each rank keeps BatchNorm running
        // statistics of its own samples (no SyncBN), unlike the one
        // process whose groups update them one after the other.
        let mut vars: Vec<_> = moco.vs_q.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut state: Vec<Tensor> = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t.copy())
            .collect();
        state.push(moco.queue.keys().copy());
        state.extend(sgd.state().map(|(_, t)| t.copy()));
        (stats, state)
    }

    #[test]
    fn two_ranks_in_threads_step_like_one_process_with_two_bn_groups() {
        let x = Tensor::randn([8, 3, 16, 16], (Kind::Float, Device::Cpu));
        let geo = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 1, 2, 0]);
        let (mut moco, mut sgd) = tiny_with_groups(2);
        let start = model_state(&moco);
        let (expected, expected_state) = two_steps(&mut moco, &mut sgd, &x, &geo);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ranks: Vec<_> = (0..2usize)
            .map(|rank| {
                let (x, geo) = (
                    x.narrow(0, 4 * rank as i64, 4),
                    geo.narrow(0, 4 * rank as i64, 4),
                );
                // Rank 1 starts elsewhere (every value + 1): the broadcast
                // must bring it rank 0's start.
                let start: Vec<(String, Tensor)> = start
                    .iter()
                    .map(|(n, t)| (n.clone(), if rank == 0 { t.copy() } else { t + 1.0 }))
                    .collect();
                std::thread::spawn(move || {
                    let rdzv = crate::dist::Rendezvous {
                        rank,
                        world_size: 2,
                        local_rank: rank,
                        local_world_size: 2,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        agent_store: false,
                        store_prefix: String::new(),
                        launcher: "a unit test",
                    };
                    let timeout = std::time::Duration::from_secs(60);
                    let group = crate::dist::ProcessGroup::connect(
                        &rdzv,
                        crate::dist::Backend::Gloo,
                        Device::Cpu,
                        timeout,
                    )
                    .unwrap();
                    let (mut moco, mut sgd) = tiny_with_groups(1);
                    set_model_state(&moco, &start);
                    moco.set_process_group(std::sync::Arc::new(group));
                    moco.broadcast_from(0).unwrap();
                    two_steps(&mut moco, &mut sgd, &x, &geo)
                })
            })
            .collect();
        let ranks: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
        for (stats, state) in &ranks {
            for (a, b) in expected.iter().zip(stats) {
                assert!((a.loss - b.loss).abs() < 1e-5, "{a:?} {b:?}");
                assert!((a.moco_accuracy - b.moco_accuracy).abs() < 1e-9);
                assert!((a.geo_loss.unwrap() - b.geo_loss.unwrap()).abs() < 1e-5);
            }
            for (a, b) in expected_state.iter().zip(state) {
                assert!(a.allclose(b, 1e-4, 1e-5, false), "{a:?} {b:?}");
            }
        }
        // The ranks' weights, queue and buffers are identical: every rank
        // applied the same reduced gradients.
        for (a, b) in ranks[0].1.iter().zip(&ranks[1].1) {
            assert!(a.equal(b));
        }
    }

    #[test]
    fn a_bad_batch_changes_nothing_and_is_reported() {
        let (mut moco, mut sgd) = tiny();
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let geo = Tensor::from_slice(&[0i64, 1, 2, 0]);
        let settings = StepSettings {
            lr: 0.1,
            shuffle_seed: 1,
            amp: false,
        };
        let good = DeviceBatch {
            query: &x,
            key: &x,
            geo: Some(&geo),
        };
        train_step(&mut moco, &mut sgd, &good, settings).unwrap();
        let weights = snapshot(&moco);
        let buffers: Vec<Tensor> = sgd.state().map(|(_, t)| t.copy()).collect();
        let queue = moco.queue.keys().copy();
        // One NaN pixel poisons the batch statistics and so the loss.
        let bad = x.copy();
        let _ = bad.get(0).get(0).get(0).get(0).fill_(f64::NAN);
        let batch = DeviceBatch {
            query: &bad,
            key: &x,
            geo: Some(&geo),
        };
        let err = train_step(&mut moco, &mut sgd, &batch, settings).unwrap_err();
        assert!(err.is::<NonFiniteLoss>(), "{err}");
        assert_eq!(err.to_string(), "loss became NaN");
        for (a, b) in weights.iter().zip(snapshot(&moco)) {
            assert!(a.equal(&b), "weights unchanged");
        }
        for (a, (_, b)) in buffers.iter().zip(sgd.state()) {
            assert!(a.equal(b), "momentum buffers unchanged");
        }
        assert!(
            queue.equal(moco.queue.keys()) && moco.queue.ptr() == 4,
            "queue unchanged"
        );
        // Training goes on from there.
        train_step(&mut moco, &mut sgd, &good, settings).unwrap();
        assert_eq!(moco.queue.ptr(), 8);
    }
}
