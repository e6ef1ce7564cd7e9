//! The NCCL backend's entry point. ProcessGroupNCCL lives in
//! `libtorch_cuda.so`, which geossl loads at run time only; it is reached
//! through a separately built library that returns a `GeosslGroup*`
//! (see `c10d.h`). This binary is built without it.

use std::time::Duration;

use tch::Device;

use super::{ProcessGroup, Store};

/// A ProcessGroupNCCL over `store` for `device` (`cuda:LOCAL_RANK`).
pub(super) fn new_group(
    store: Store,
    rank: usize,
    world_size: usize,
    device: Device,
    timeout: Duration,
) -> anyhow::Result<ProcessGroup> {
    let _ = (store, rank, world_size, device, timeout);
    not_built()
}

fn not_built() -> anyhow::Result<ProcessGroup> {
    anyhow::bail!("NCCL backend not built in this binary")
}
