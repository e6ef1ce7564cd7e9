//! The Rust side of the c10d shim (`c10d.cpp`): the rendezvous store and the
//! process group, owned handles over `GeosslStore` / `GeosslGroup` (see
//! `c10d.h`), and the collectives, each waiting for its result.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use super::{Backend, CollectiveError, Rendezvous};

/// `GeosslStore` of `c10d.h`: a TCPStore behind a PrefixStore.
#[repr(C)]
pub(crate) struct GeosslStore {
    _opaque: [u8; 0],
}

/// `GeosslGroup` of `c10d.h`: a c10d Backend with its rank and size.
#[repr(C)]
pub(crate) struct GeosslGroup {
    _opaque: [u8; 0],
}

extern "C" {
    fn geossl_c10d_free_error(e: *mut c_char);
    fn geossl_store_tcp(
        host: *const c_char,
        port: c_int,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut GeosslStore,
    ) -> *mut c_char;
    #[cfg(test)]
    fn geossl_store_port(store: *mut GeosslStore, port: *mut c_int) -> *mut c_char;
    fn geossl_store_free(store: *mut GeosslStore);
    fn geossl_group_gloo(
        store: *mut GeosslStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        loopback_host: *const c_char,
        out: *mut *mut GeosslGroup,
    ) -> *mut c_char;
    fn geossl_group_free(group: *mut GeosslGroup);
    fn geossl_all_reduce_sum(
        group: *mut GeosslGroup,
        ts: *const *mut C_tensor,
        n: c_int,
    ) -> *mut c_char;
    fn geossl_all_gather(
        group: *mut GeosslGroup,
        input: *mut C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn geossl_broadcast(
        group: *mut GeosslGroup,
        ts: *const *mut C_tensor,
        n: c_int,
        root: c_int,
    ) -> *mut c_char;
    fn geossl_barrier(group: *mut GeosslGroup) -> *mut c_char;
}

/// The shim's error message, if `e` holds one (and frees it).
pub(crate) fn shim_error(e: *mut c_char) -> Option<String> {
    if e.is_null() {
        return None;
    }
    // SAFETY: non-null results are NUL-terminated strings malloc'ed by the
    // shim (or the NCCL library, same allocator), freed exactly once here.
    let msg = unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned();
    unsafe { geossl_c10d_free_error(e) };
    Some(msg)
}

fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
}

/// A c10d TCPStore (behind a PrefixStore) the ranks rendezvous on.
pub(crate) struct Store {
    raw: NonNull<GeosslStore>,
}

// SAFETY: c10d stores are used from any thread (their methods lock); the
// handle is only freed by Drop.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// The TCPStore at `host:port`: its server when `is_server` (port 0 picks
    /// a free port, see [`Store::port`]), a client otherwise (retrying for up
    /// to `timeout`), keys prefixed by `prefix`. Matches
    /// `torch.distributed.rendezvous._create_c10d_store`.
    pub(crate) fn tcp(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let c_host = CString::new(host).context("host name with a NUL byte")?;
        let c_prefix = CString::new(prefix).context("store prefix with a NUL byte")?;
        let mut out = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; on success `out` is ours.
        let e = unsafe {
            geossl_store_tcp(
                c_host.as_ptr(),
                c_int::from(port),
                c_int::from(is_server),
                world_size as c_int,
                millis(timeout),
                c_prefix.as_ptr(),
                &mut out,
            )
        };
        if let Some(msg) = shim_error(e) {
            let role = if is_server {
                "starting"
            } else {
                "connecting to"
            };
            bail!("{role} the TCPStore at {host}:{port} failed: {msg}");
        }
        Ok(Self {
            raw: NonNull::new(out).expect("the shim returns a store on success"),
        })
    }

    /// The port the TCPStore listens on (its server) or connects to; the
    /// tests' ranks-as-threads learn rank 0's free port from it.
    #[cfg(test)]
    pub(crate) fn port(&self) -> anyhow::Result<u16> {
        let mut port: c_int = 0;
        // SAFETY: the store is live.
        if let Some(msg) = shim_error(unsafe { geossl_store_port(self.raw.as_ptr(), &mut port) }) {
            bail!("the store's port: {msg}");
        }
        Ok(port as u16)
    }

    /// The `GeosslStore*` for another library's group constructor (NCCL);
    /// valid while `self` lives.
    pub(crate) fn raw(&self) -> *mut GeosslStore {
        self.raw.as_ptr()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: made by geossl_store_tcp, freed once.
        unsafe { geossl_store_free(self.raw.as_ptr()) }
    }
}

/// One rank's membership in a c10d process group (ProcessGroupGloo, or
/// ProcessGroupNCCL from the NCCL library): the collectives of
/// `torch.distributed` that data-parallel training needs.
///
/// Every rank must make the same collective calls in the same order, or the
/// job waits until the timeout and every collective then fails. Calls from
/// several threads at once are safe, but their order across ranks is then
/// unknown: issue a group's collectives from one thread.
pub struct ProcessGroup {
    // Declared before `store` so it is dropped first: the group may still
    // talk to the store while it shuts down.
    raw: NonNull<GeosslGroup>,
    _store: Store,
    rank: usize,
    world_size: usize,
    device: Device,
    /// How long a collective may wait for the other ranks.
    timeout: Duration,
}

// SAFETY: c10d backends accept work from any thread (Gloo queues it to its
// own worker threads); the handle is only freed by Drop.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// Joins the job described by `rdzv`: the TCPStore at MASTER_ADDR:
    /// MASTER_PORT (rank 0 hosts it unless torchrun's agent does), then the
    /// process group, which waits for all ranks (at most `timeout`, which
    /// also bounds every later collective; PyTorch's default is
    /// [`super::DEFAULT_TIMEOUT`]). `device` is where the tensors passed to
    /// collectives live: the CPU for [`Backend::Gloo`], `cuda:LOCAL_RANK` for
    /// [`Backend::Nccl`].
    ///
    /// Errors: a device the backend does not serve, a store that cannot be
    /// started or reached, ranks that do not all join within `timeout`.
    pub fn connect(
        rdzv: &Rendezvous,
        backend: Backend,
        device: Device,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let who = format!(
            "rank {} of {} ({})",
            rdzv.rank, rdzv.world_size, rdzv.launcher
        );
        if backend == Backend::Gloo && device != Device::Cpu {
            bail!("{who}: the Gloo backend serves CPU tensors, not {device:?}; CUDA needs NCCL");
        }
        let store = Store::tcp(
            &rdzv.master_addr,
            rdzv.master_port,
            !rdzv.agent_store && rdzv.rank == 0,
            rdzv.world_size,
            timeout,
            &rdzv.store_prefix,
        )
        .with_context(|| format!("{who}: rendezvous"))?;
        let group = match backend {
            Backend::Gloo => Self::gloo(
                store,
                rdzv.rank,
                rdzv.world_size,
                timeout,
                is_loopback(&rdzv.master_addr),
            ),
            Backend::Nccl => {
                super::nccl::new_group(store, rdzv.rank, rdzv.world_size, device, timeout)
            }
        };
        group.with_context(|| format!("{who}: creating the {backend:?} process group"))
    }

    /// A ProcessGroupGloo over `store` (its transport on loopback when
    /// `loopback`, else chosen as torch.distributed does; see c10d.cpp).
    pub(crate) fn gloo(
        store: Store,
        rank: usize,
        world_size: usize,
        timeout: Duration,
        loopback: bool,
    ) -> anyhow::Result<Self> {
        let host = CString::new("127.0.0.1").expect("no NUL");
        let host_ptr = if loopback {
            host.as_ptr()
        } else {
            std::ptr::null()
        };
        let mut out = std::ptr::null_mut();
        // SAFETY: the store is live; on success `out` is ours.
        let e = unsafe {
            geossl_group_gloo(
                store.raw(),
                rank as c_int,
                world_size as c_int,
                millis(timeout),
                host_ptr,
                &mut out,
            )
        };
        if let Some(msg) = shim_error(e) {
            bail!("{msg}");
        }
        // SAFETY: `out` is a group the shim just made for us.
        Ok(unsafe { Self::from_raw(out, store, rank, world_size, Device::Cpu, timeout) })
    }

    /// Takes ownership of `raw` (a `GeosslGroup*` from the shim or the NCCL
    /// library), keeping `store` alive beside it.
    ///
    /// # Safety
    /// `raw` is a live group made with `new GeosslGroup`, owned by no one
    /// else, over `store`, of rank `rank` in `world_size` on `device`, its
    /// collectives bounded by `timeout`.
    pub(crate) unsafe fn from_raw(
        raw: *mut GeosslGroup,
        store: Store,
        rank: usize,
        world_size: usize,
        device: Device,
        timeout: Duration,
    ) -> Self {
        Self {
            raw: NonNull::new(raw).expect("a non-null GeosslGroup"),
            _store: store,
            rank,
            world_size,
            device,
            timeout,
        }
    }

    /// This process's rank, 0..world_size.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the job.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The device the collectives' tensors live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs one collective through the shim, timing it for the error.
    fn run(
        &self,
        op: &'static str,
        call: impl FnOnce(*mut GeosslGroup) -> *mut c_char,
    ) -> Result<(), CollectiveError> {
        let start = Instant::now();
        match shim_error(call(self.raw.as_ptr())) {
            None => Ok(()),
            Some(message) => Err(CollectiveError {
                op,
                rank: self.rank,
                world_size: self.world_size,
                elapsed: start.elapsed(),
                timeout: self.timeout,
                message,
            }),
        }
    }

    fn check_devices(&self, op: &str, tensors: &[&Tensor]) {
        for t in tensors {
            assert!(
                t.device() == self.device,
                "{op}: a tensor on {:?} given to the process group of {:?}",
                t.device(),
                self.device
            );
        }
    }

    /// Sums each tensor over all ranks, in place (`torch.distributed.
    /// all_reduce(op=SUM)`); all tensors in one coalesced call, one
    /// collective per dtype on a flat buffer, so any dtype mix is fine.
    /// Tensors that require grad are reduced through detached aliases.
    ///
    /// Panics when a tensor is not on the group's device.
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<(), CollectiveError> {
        self.check_devices("all_reduce", &tensors.iter().collect::<Vec<_>>());
        let ptrs = ptrs(tensors);
        // SAFETY: `n` live tensors; the shim writes into them in place.
        self.run("all_reduce", |g| unsafe {
            geossl_all_reduce_sum(g, ptrs.as_ptr(), ptrs.len() as c_int)
        })
    }

    /// Every rank's `t` (`[n, ...]`, the same shape and dtype on every rank)
    /// stacked in rank order: `[world_size * n, ...]`
    /// (`torch.distributed.all_gather_into_tensor`).
    ///
    /// Panics when `t` is not on the group's device.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, CollectiveError> {
        self.check_devices("all_gather", &[t]);
        let mut out = std::ptr::null_mut();
        // SAFETY: `t` is live; on success `out` is a new tensor we own.
        self.run("all_gather", |g| unsafe {
            geossl_all_gather(g, t.as_ptr() as *mut C_tensor, &mut out)
        })?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Overwrites `tensors` on every rank with rank `root`'s, in place
    /// (`torch.distributed.broadcast`, coalesced like DDP's
    /// `_broadcast_coalesced`: one collective per dtype).
    ///
    /// Panics when `root` is not a rank or a tensor is not on the group's
    /// device.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<(), CollectiveError> {
        assert!(
            root < self.world_size,
            "broadcast from rank {root} of {}",
            self.world_size
        );
        self.check_devices("broadcast", &tensors.iter().collect::<Vec<_>>());
        let ptrs = ptrs(tensors);
        // SAFETY: `n` live tensors; the shim writes into them in place.
        self.run("broadcast", |g| unsafe {
            geossl_broadcast(g, ptrs.as_ptr(), ptrs.len() as c_int, root as c_int)
        })
    }

    /// Returns once every rank has called it (`torch.distributed.barrier`).
    pub fn barrier(&self) -> Result<(), CollectiveError> {
        // SAFETY: the group is live.
        self.run("barrier", |g| unsafe { geossl_barrier(g) })
    }

    /// Every rank's `bytes`, in rank order; lengths may differ (empty too).
    /// Two collectives: the lengths, then the bytes padded to the longest
    /// (skipped when all are empty). For rare variable-sized records.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(self.device);
        let lens = Vec::<i64>::try_from(&self.all_gather(&len)?.to_device(Device::Cpu))
            .expect("an int64 tensor of lengths");
        let longest = lens.iter().copied().max().unwrap_or(0) as usize;
        if longest == 0 {
            return Ok(vec![Vec::new(); self.world_size]);
        }
        let mut padded = bytes.to_vec();
        padded.resize(longest, 0);
        let mine = Tensor::from_slice(&padded).to_device(self.device);
        let all = self.all_gather(&mine)?.to_device(Device::Cpu);
        debug_assert_eq!(all.kind(), Kind::Uint8);
        let all = Vec::<u8>::try_from(&all).expect("a uint8 tensor of bytes");
        Ok(all
            .chunks(longest)
            .zip(&lens)
            .map(|(chunk, &n)| chunk[..n as usize].to_vec())
            .collect())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: made by the shim or the NCCL library with `new`, freed once.
        unsafe { geossl_group_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("device", &self.device)
            .finish()
    }
}

fn ptrs(ts: &[Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Whether `host` names this machine's loopback interface (then every rank
/// runs here, and Gloo binds loopback rather than the resolved hostname).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// These run every entry point of the shim on real Gloo groups (ranks as
/// threads of this process, and as two processes): they are what catches a
/// change of the c10d C++ API when the torch pin moves.
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Generous, so a loaded machine passes, yet nothing hangs for long.
    const TIMEOUT: Duration = Duration::from_secs(20);

    /// Runs `body(group)` on `world` ranks, each a thread with its own
    /// ProcessGroupGloo over one TCPStore on a free loopback port; results
    /// in rank order.
    fn on_ranks<T: Send>(world: usize, body: impl Fn(ProcessGroup) -> T + Sync) -> Vec<T> {
        on_ranks_with(world, TIMEOUT, body)
    }

    /// [`on_ranks`] with groups whose collectives time out after `timeout`.
    fn on_ranks_with<T: Send>(
        world: usize,
        timeout: Duration,
        body: impl Fn(ProcessGroup) -> T + Sync,
    ) -> Vec<T> {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let port_rx = std::sync::Mutex::new(port_rx);
        let body = &body;
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|rank| {
                    let (port_tx, port_rx) = (port_tx.clone(), &port_rx);
                    s.spawn(move || {
                        let store = if rank == 0 {
                            let store =
                                Store::tcp("127.0.0.1", 0, true, world, TIMEOUT, "t/").unwrap();
                            let port = store.port().unwrap();
                            (1..world).for_each(|_| port_tx.send(port).unwrap());
                            store
                        } else {
                            let port = port_rx.lock().unwrap().recv().unwrap();
                            Store::tcp("127.0.0.1", port, false, world, TIMEOUT, "t/").unwrap()
                        };
                        body(ProcessGroup::gloo(store, rank, world, timeout, true).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn all_reduce_sums_mixed_dtypes_in_place() {
        let out = on_ranks(2, |pg| {
            let r = pg.rank() as f64 + 1.0;
            let ts = [
                Tensor::full([2, 3], r, (Kind::Float, Device::Cpu)).set_requires_grad(true),
                Tensor::from_slice(&[r, 10.0 * r]),
                Tensor::from_slice(&[pg.rank() as i64, 7]),
                Tensor::full([4], 0.5 * r, (Kind::Float, Device::Cpu)),
                // Alone in its dtype and not contiguous: reduced through a copy.
                Tensor::from_slice(&[pg.rank() as i32 + 1; 6])
                    .view([2, 3])
                    .tr(),
            ];
            pg.all_reduce_sum(&ts).unwrap();
            ts.map(|t| {
                Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).flatten(0, -1)).unwrap()
            })
        });
        for ts in out {
            assert_eq!(ts[0], vec![3.0; 6]);
            assert_eq!(ts[1], vec![3.0, 30.0]);
            assert_eq!(ts[2], vec![1.0, 14.0]);
            assert_eq!(ts[3], vec![1.5; 4]);
            assert_eq!(ts[4], vec![3.0; 6]);
        }
    }

    #[test]
    fn all_gather_stacks_in_rank_order() {
        let out = on_ranks(2, |pg| {
            let r = pg.rank() as i64;
            let g = pg
                .all_gather(&Tensor::from_slice(&[r, 10 * r + 1]).view([1, 2]))
                .unwrap();
            (g.size(), Vec::<i64>::try_from(g.flatten(0, -1)).unwrap())
        });
        for (size, values) in out {
            assert_eq!(size, vec![2, 2]);
            assert_eq!(values, vec![0, 1, 1, 11]);
        }
    }

    #[test]
    fn broadcast_copies_the_roots_tensors() {
        let out = on_ranks(2, |pg| {
            let r = pg.rank() as i64;
            let ts = [
                Tensor::from_slice(&[r as f32 + 0.5; 3]).set_requires_grad(true),
                Tensor::from_slice(&[r, r + 100]),
            ];
            pg.broadcast(&ts, 1).unwrap();
            (
                Vec::<f32>::try_from(&ts[0]).unwrap(),
                Vec::<i64>::try_from(&ts[1]).unwrap(),
            )
        });
        for (floats, ints) in out {
            assert_eq!(floats, vec![1.5; 3]);
            assert_eq!(ints, vec![1, 101]);
        }
    }

    #[test]
    fn barrier_waits_for_the_last_rank() {
        let waited = on_ranks(2, |pg| {
            if pg.rank() == 1 {
                std::thread::sleep(Duration::from_millis(400));
            }
            let start = Instant::now();
            pg.barrier().unwrap();
            start.elapsed()
        });
        assert!(waited[0] >= Duration::from_millis(300), "{waited:?}");
    }

    #[test]
    fn all_gather_bytes_keeps_each_ranks_length() {
        let out = on_ranks(2, |pg| {
            let mine: &[u8] = if pg.rank() == 0 {
                b""
            } else {
                b"bad image: x.tif"
            };
            let uneven = pg.all_gather_bytes(mine).unwrap();
            let empty = pg.all_gather_bytes(b"").unwrap();
            (uneven, empty)
        });
        for (uneven, empty) in out {
            assert_eq!(uneven, vec![b"".to_vec(), b"bad image: x.tif".to_vec()]);
            assert_eq!(empty, vec![Vec::<u8>::new(); 2]);
        }
    }

    #[test]
    fn a_departed_peer_fails_the_collective_instead_of_hanging() {
        let out = on_ranks(2, |pg| {
            pg.barrier().unwrap();
            if pg.rank() == 1 {
                drop(pg);
                return None;
            }
            let start = Instant::now();
            let err = pg.all_reduce_sum(&[Tensor::ones([8], (Kind::Float, Device::Cpu))]);
            Some((err.unwrap_err(), start.elapsed()))
        });
        let (err, took) = out[0].as_ref().unwrap();
        assert!(*took < TIMEOUT, "took {took:?}");
        assert_eq!((err.op, err.rank, err.world_size), ("all_reduce", 0, 2));
        let text = err.to_string();
        assert!(
            text.starts_with("rank 0 of 2: all_reduce failed after "),
            "{text}"
        );
        assert!(text.contains("Another rank has probably exited"), "{text}");
    }

    #[test]
    fn a_rank_that_skips_a_collective_fails_the_others_at_the_timeout() {
        let timeout = Duration::from_secs(2);
        let rank_0_done = std::sync::Barrier::new(2);
        let out = on_ranks_with(2, timeout, |pg| {
            if pg.rank() == 1 {
                // Skips the all-reduce; leaves (drops its group) only after.
                rank_0_done.wait();
                return None;
            }
            let start = Instant::now();
            let err = pg.all_reduce_sum(&[Tensor::ones([8], (Kind::Float, Device::Cpu))]);
            let took = start.elapsed();
            rank_0_done.wait();
            Some((err.unwrap_err(), took))
        });
        let (err, took) = out[0].as_ref().unwrap();
        assert!(*took >= timeout / 2 && *took < 5 * timeout, "took {took:?}");
        let text = err.to_string();
        assert!(text.contains("within the timeout of 2 s"), "{text}");
    }

    /// Marks a child process of the tests below as a rank.
    const CHILD: &str = "GEOSSL_DIST_TEST_RANK_PROCESS";

    /// One rank of the two-process tests: joins from torchrun's variables,
    /// sums its rank + 1 with the other's, and returns (its groups dropped,
    /// then the test harness exits).
    #[test]
    #[ignore = "a child process of the two_processes_* tests"]
    fn rank_process() {
        assert!(
            std::env::var(CHILD).is_ok(),
            "run by the two_processes_* tests"
        );
        let rdzv = Rendezvous::from_env().unwrap().expect("torchrun variables");
        let pg = ProcessGroup::connect(&rdzv, Backend::Gloo, Device::Cpu, TIMEOUT).unwrap();
        let t = Tensor::from_slice(&[rdzv.rank as f32 + 1.0]);
        pg.all_reduce_sum(std::slice::from_ref(&t)).unwrap();
        assert_eq!(f32::try_from(&t).unwrap(), 3.0);
        pg.barrier().unwrap();
    }

    /// Runs [`rank_process`] as ranks 0 and 1 with torchrun's variables
    /// (`extra` added) and checks both pass and exit within a deadline.
    fn two_rank_processes(port: u16, extra: &[(&str, &str)]) {
        let exe = std::env::current_exe().unwrap();
        let mut children: Vec<_> = (0..2)
            .map(|rank| {
                let mut cmd = std::process::Command::new(&exe);
                cmd.args(["dist::c10d::tests::rank_process", "--exact", "--ignored"])
                    .env(CHILD, "1")
                    .env_remove("SLURM_PROCID")
                    .env_remove("GEOSSL_LAUNCHER")
                    .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                    .stdout(std::process::Stdio::piped());
                for (k, v) in [("RANK", rank.to_string()), ("LOCAL_RANK", rank.to_string())] {
                    cmd.env(k, v);
                }
                cmd.envs([("WORLD_SIZE", "2"), ("LOCAL_WORLD_SIZE", "2")])
                    .envs([
                        ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", &port.to_string()),
                    ])
                    .envs(extra.iter().copied());
                cmd.spawn().unwrap()
            })
            .collect();
        let deadline = Instant::now() + 3 * TIMEOUT;
        for (rank, child) in children.iter_mut().enumerate() {
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    panic!("rank {rank} did not exit by the deadline");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(
                status.success() && out.contains("1 passed"),
                "rank {rank}: {status}\n{out}"
            );
        }
    }

    #[test]
    fn two_processes_join_from_the_environment_and_exit() {
        // Rank 0 hosts the store on a port free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        two_rank_processes(port, &[]);
    }

    #[test]
    fn two_processes_join_torchruns_agent_store() {
        // This process plays torchrun's agent, hosting the store.
        let agent = Store::tcp("127.0.0.1", 0, true, 2, TIMEOUT, "").unwrap();
        two_rank_processes(
            agent.port().unwrap(),
            &[("TORCHELASTIC_USE_AGENT_STORE", "True")],
        );
    }
}
