//! The MoCo queue of negative keys (the reference's `queue` and
//! `queue_ptr` buffers; lightly's `MemoryBankModule`): a ring of the most
//! recent `size` normalised keys, the oldest at the pointer.
//!
//! A step's keys are held back ([`KeyQueue::push`]) until the step is
//! committed ([`KeyQueue::commit`]) or dropped ([`KeyQueue::discard`]):
//! the loss reads the queue through `q @ queue`, so autograd refuses a
//! backward pass once the queue has changed in place, and the keys of a
//! step that is not applied (a non-finite loss) must never become
//! negatives.

use tch::{Device, Kind, Tensor};

/// The queue of negative keys and the keys of the step in progress.
pub struct KeyQueue {
    /// [dim, size] normalised keys, the oldest at `ptr`.
    keys: Tensor,
    /// Column where the next keys go.
    ptr: i64,
    /// The keys of the step in progress, [N, dim], until commit or discard.
    pending: Option<Tensor>,
}

impl KeyQueue {
    /// `size` random unit keys of dimension `dim` (as the reference's
    /// `normalize(randn(dim, K), dim=0)`), pointer at 0.
    pub fn new(dim: i64, size: i64, device: Device) -> Self {
        let keys = Tensor::randn([dim, size], (Kind::Float, device));
        Self {
            keys: super::moco::normalize(&keys, 0),
            ptr: 0,
            pending: None,
        }
    }

    /// The keys, [dim, size] (the checkpoint tensor `queue`).
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Column where the next keys go (the checkpoint's `queue_ptr`).
    pub fn ptr(&self) -> i64 {
        self.ptr
    }

    /// Number of keys held, K.
    pub fn size(&self) -> i64 {
        self.keys.size()[1]
    }

    /// Holds `keys` [N, dim] of the step in progress; they join the queue
    /// at [`KeyQueue::commit`]. Keys pushed earlier and never committed are
    /// dropped (their step was not applied).
    pub(super) fn push(&mut self, keys: Tensor) {
        self.pending = Some(keys);
    }

    /// Puts the pushed keys into the queue, replacing the oldest. Call after
    /// the step's backward pass (see the module documentation).
    pub(super) fn commit(&mut self) {
        if let Some(k) = self.pending.take() {
            self.enqueue(&k);
        }
    }

    /// Forgets the pushed keys (the step was not applied).
    pub(super) fn discard(&mut self) {
        self.pending = None;
    }

    /// Replaces the oldest keys with `keys` [N, dim] at once.
    pub(super) fn enqueue(&mut self, keys: &Tensor) {
        let n = keys.size()[0];
        tch::no_grad(|| {
            self.keys
                .narrow(1, self.ptr, n)
                .copy_(&keys.transpose(0, 1).to_kind(self.keys.kind()));
        });
        self.ptr = (self.ptr + n) % self.size();
    }

    /// Sets the keys and the pointer from a checkpoint (`keys` of the
    /// queue's shape [dim, size]; a pointer in 0..size).
    pub fn load(&mut self, keys: Option<&Tensor>, ptr: Option<i64>) -> anyhow::Result<()> {
        if let Some(keys) = keys {
            tch::no_grad(|| self.keys.f_copy_(keys))?;
        }
        if let Some(ptr) = ptr {
            self.ptr = ptr;
        }
        self.pending = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: f64) -> Tensor {
        Tensor::full([2, 8], v, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn enqueue_wraps() {
        let mut q = KeyQueue::new(8, 6, Device::Cpu);
        q.enqueue(&keys(1.0));
        q.enqueue(&keys(2.0));
        q.enqueue(&keys(3.0));
        assert_eq!(q.ptr(), 0);
        q.enqueue(&keys(4.0));
        assert_eq!(q.ptr(), 2);
        let first_row: Vec<f32> = q.keys().get(0).try_into().unwrap();
        assert_eq!(first_row, vec![4.0, 4.0, 2.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn pushed_keys_join_only_when_committed() {
        let mut q = KeyQueue::new(8, 6, Device::Cpu);
        let before = q.keys().copy();
        q.push(keys(1.0));
        assert!(q.keys().equal(&before) && q.ptr() == 0, "pending");
        q.discard();
        q.commit();
        assert!(q.keys().equal(&before) && q.ptr() == 0, "discarded");
        q.push(keys(2.0));
        q.push(keys(3.0));
        q.commit();
        assert_eq!(q.ptr(), 2);
        let first_row: Vec<f32> = q.keys().get(0).try_into().unwrap();
        assert_eq!(&first_row[..2], &[3.0, 3.0], "only the last push");
        q.commit();
        assert_eq!(q.ptr(), 2, "a commit enqueues once");
    }
}
