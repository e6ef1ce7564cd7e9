//! One pretraining step, the unit that `pretrain` repeats and `geossl bench
//! step` times: MoCo forward (momentum update, shuffled key pass, losses),
//! backward, SGD update. [`Moco::train_step`] holds the MoCo side (BN
//! statistics, when keys join the queue); this adds the optimiser.
//!
//! The step never waits for the device in the middle: a NaN/inf loss is
//! detected on the device and makes the fused SGD kernel skip its update,
//! and the scalars (losses, accuracies) come back in one transfer at the
//! end, the step's only sync, as `loss.item()` is the reference's.

use tch::{Device, Kind, Tensor};

use super::sgd::Sgd;
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

/// One step of `moco` and `sgd` on `batch`: its scalars, or a
/// [`NonFiniteLoss`] error after which nothing trained has changed (the
/// fused SGD kernel skips its update on the device-side check below).
pub fn train_step(
    moco: &mut Moco,
    sgd: &mut Sgd,
    batch: &DeviceBatch,
    settings: StepSettings,
) -> anyhow::Result<StepStats> {
    moco.train_step(
        batch.query,
        batch.key,
        batch.geo,
        settings.shuffle_seed,
        settings.amp,
        |out| {
            let found_inf = tch::no_grad(|| out.loss.isfinite().logical_not().to_kind(Kind::Float));
            sgd.backward_step(&out.loss, settings.lr, Some(&found_inf))?;
            let mut scalars = vec![out.loss.detach(), out.moco_loss.detach(), out.moco_accuracy];
            if let (Some(l), Some(a)) = (&out.geo_loss, &out.geo_accuracy) {
                scalars.push(l.detach());
                scalars.push(a.shallow_clone());
            }
            let scalars: Vec<Tensor> = scalars.iter().map(|t| t.to_kind(Kind::Double)).collect();
            let host: Vec<f64> = Tensor::stack(&scalars, 0)
                .to_device(Device::Cpu)
                .try_into()?;
            let stats = StepStats {
                loss: host[0],
                moco_loss: host[1],
                moco_accuracy: host[2],
                geo_loss: host.get(3).copied(),
                geo_accuracy: host.get(4).copied(),
            };
            Ok((stats.loss, stats))
        },
    )
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
