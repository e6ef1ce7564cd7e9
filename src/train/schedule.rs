//! Learning-rate schedules of the MoCo code: cosine decay per epoch (the
//! reference), optionally per step, or step decay at milestones; with an
//! optional linear warm-up.

use std::f64::consts::PI;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    /// Learning rate at the start (after warm-up).
    pub base_lr: f64,
    pub epochs: usize,
    /// Cosine decay lr0 * 0.5 * (1 + cos(pi * e / E)); otherwise step decay.
    pub cosine: bool,
    /// Evaluate the cosine at every step instead of once per epoch.
    pub per_step: bool,
    /// Step decay: multiply by 0.1 at each of these epochs.
    pub milestones: Vec<usize>,
    /// Linear warm-up from 0 over this many epochs (per step).
    pub warmup_epochs: usize,
}

impl LrSchedule {
    /// Learning rate for `step` (0-based) of `steps_per_epoch` in `epoch`.
    pub fn lr(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
        let steps = steps_per_epoch.max(1) as f64;
        let progress = epoch as f64 + step as f64 / steps;
        if (progress as usize) < self.warmup_epochs
            || (self.warmup_epochs > 0 && progress < self.warmup_epochs as f64)
        {
            return self.base_lr * (progress + 1.0 / steps) / self.warmup_epochs as f64;
        }
        if self.cosine {
            let e = if self.per_step {
                progress
            } else {
                epoch as f64
            };
            self.base_lr * 0.5 * (1.0 + (PI * e / self.epochs.max(1) as f64).cos())
        } else {
            let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
            self.base_lr * 0.1f64.powi(passed as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(per_step: bool, warmup: usize) -> LrSchedule {
        LrSchedule {
            base_lr: 0.03,
            epochs: 200,
            cosine: true,
            per_step,
            milestones: vec![],
            warmup_epochs: warmup,
        }
    }

    #[test]
    fn cosine_per_epoch_as_reference() {
        let s = cosine(false, 0);
        assert_eq!(s.lr(0, 0, 10), 0.03);
        assert_eq!(s.lr(0, 9, 10), 0.03, "constant within an epoch");
        assert!((s.lr(100, 0, 10) - 0.015).abs() < 1e-12);
        assert!((s.lr(50, 3, 10) - 0.03 * 0.5 * (1.0 + (PI / 4.0).cos())).abs() < 1e-12);
    }

    #[test]
    fn cosine_per_step_moves_within_epoch() {
        let s = cosine(true, 0);
        assert!(s.lr(100, 5, 10) < s.lr(100, 0, 10));
        assert!((s.lr(100, 0, 10) - 0.015).abs() < 1e-12);
    }

    #[test]
    fn warmup_then_cosine() {
        let s = cosine(false, 2);
        assert!((s.lr(0, 0, 4) - 0.03 * 0.25 / 2.0).abs() < 1e-12);
        assert!(
            (s.lr(1, 3, 4) - 0.03).abs() < 1e-12,
            "reaches the base at the end of warm-up"
        );
        assert_eq!(s.lr(2, 0, 4), 0.03 * 0.5 * (1.0 + (PI * 2.0 / 200.0).cos()));
    }

    #[test]
    fn step_decay_at_milestones() {
        let s = LrSchedule {
            base_lr: 0.03,
            epochs: 200,
            cosine: false,
            per_step: false,
            milestones: vec![120, 160],
            warmup_epochs: 0,
        };
        assert_eq!(s.lr(119, 0, 1), 0.03);
        assert!((s.lr(120, 0, 1) - 0.003).abs() < 1e-12);
        assert!((s.lr(199, 0, 1) - 0.0003).abs() < 1e-12);
    }
}
