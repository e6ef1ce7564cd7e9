//! Data-parallel runs on PyTorch's own distributed engine, c10d: who this
//! process is in the job ([`Rendezvous`], from torchrun's, SLURM's or
//! `geossl pretrain --nproc`'s environment), its process group
//! ([`ProcessGroup`]: Gloo for CPU tensors, NCCL for CUDA tensors) and the
//! collectives training needs (all-reduce, all-gather, broadcast, barrier).
//!
//! The C++ side is `c10d.cpp` (+ `c10d.h`, shared with the separately built
//! NCCL library), compiled by build.rs against the wheel's c10d headers and
//! Debian's Gloo headers. The c10d C++ API is not a stable public API: it
//! matches torch==2.11.0, the pin in scripts/setup.sh, and the tests of this
//! module (which run every entry point of the shim on real ranks) are what
//! catch a change when the pin moves.

mod c10d;
pub mod launch;
pub mod nccl;
mod rendezvous;

use std::time::Duration;

pub use c10d::ProcessGroup;
// The seam for the NCCL library's binding (nccl.rs): raw handles in and out.
pub(crate) use c10d::Store;
pub(crate) use c10d::{GeosslGroup, GeosslStore};
pub use rendezvous::{Rendezvous, NPROC_LAUNCHER};

/// PyTorch's default process-group timeout (`torch.distributed.constants.
/// default_pg_timeout`, 30 minutes): how long joining the group, and then
/// each collective, may wait for the other ranks before failing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The c10d backend a process group runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ProcessGroupGloo, over TCP: CPU tensors.
    Gloo,
    /// ProcessGroupNCCL: CUDA tensors, from the NCCL library loaded at run
    /// time.
    Nccl,
}

/// A failed collective: which op, this rank and the world size, how long it
/// waited, c10d's message, and what it usually means. c10d fails a
/// collective when a peer's connection closes (another rank exited) or when
/// the group's timeout passes (another rank is stuck, or took a different
/// path and makes other collective calls).
#[derive(Debug, thiserror::Error)]
#[error(
    "rank {rank} of {world_size}: {op} failed after {:.1} s: {message}. {}",
    elapsed.as_secs_f64(),
    self.meaning()
)]
pub struct CollectiveError {
    /// "all_reduce", "all_gather", "broadcast" or "barrier".
    pub op: &'static str,
    pub rank: usize,
    pub world_size: usize,
    /// From the call to its failure.
    pub elapsed: Duration,
    /// The group's timeout.
    pub timeout: Duration,
    /// c10d's (Gloo's, NCCL's) message.
    pub message: String,
}

impl CollectiveError {
    /// What the failure usually means, by whether the timeout passed (90%
    /// of it: Gloo may start its clock a little before the call's).
    fn meaning(&self) -> String {
        if self.elapsed.as_secs_f64() >= 0.9 * self.timeout.as_secs_f64() {
            format!(
                "No other rank answered within the timeout of {} s: another rank is probably \
                 stuck or took a different path (every rank must make the same collective \
                 calls); the job stops.",
                self.timeout.as_secs_f64()
            )
        } else {
            "Another rank has probably exited (see its log) or the network failed; the job \
             stops."
                .into()
        }
    }
}
