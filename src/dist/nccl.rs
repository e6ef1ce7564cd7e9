//! The NCCL backend, from its own shared library loaded at run time:
//! `libgeossl_nccl.so`, built by build.rs from `nccl.cpp` (PyTorch's
//! c10d::ProcessGroupNCCL returned as a `GeosslGroup`, see `c10d.h`).
//!
//! Why a separate library: calling ProcessGroupNCCL makes `libtorch_cuda.so`
//! a hard link dependency, and the geossl binary loads CUDA deliberately at
//! run time instead (model::torch_ext::load_cuda), so that it starts on
//! machines without CUDA. The library's own dependencies on the wheel's
//! `libtorch_cuda.so`, `libtorch_cpu.so`, `libc10*.so` resolve to the copies
//! already loaded (same sonames) or through its run path / LD_LIBRARY_PATH.
//!
//! Where it is looked for: the file named by `GEOSSL_NCCL_LIB` if set (and
//! only there); else next to the running executable (build.rs places it in
//! `target/<profile>/`, beside `geossl`), and one folder up for test
//! binaries in `target/<profile>/deps/`. To run a carried binary elsewhere,
//! carry the library with it (bench/gpu-prepare.sh packs both into `.gpu/`).

use std::ffi::{c_char, c_int, CStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tch::Device;

use super::c10d::shim_error;
use super::{GeosslGroup, GeosslStore, ProcessGroup, Store};

/// The library's file name (build.rs writes it under this name).
pub const LIBRARY_FILE: &str = "libgeossl_nccl.so";
/// The environment variable that names the library file explicitly.
pub const LIBRARY_ENV: &str = "GEOSSL_NCCL_LIB";
/// The version of the C interface of `nccl.cpp` (its GEOSSL_NCCL_INTERFACE).
const INTERFACE: &str = "1";

/// `geossl_nccl_group_new(store, rank, size, device_index, timeout_ms, out)`:
/// NULL or a malloc'ed error message.
type GroupNew = unsafe extern "C" fn(
    *mut GeosslStore,
    c_int,
    c_int,
    c_int,
    i64,
    *mut *mut GeosslGroup,
) -> *mut c_char;
/// `geossl_nccl_built_for()`: "torch <version>, interface <n>", static.
type BuiltFor = unsafe extern "C" fn() -> *const c_char;

/// The loaded NCCL library.
pub struct NcclLibrary {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// What it was built for: "torch 2.11.0, interface 1".
    pub built_for: String,
    group_new: GroupNew,
}

impl NcclLibrary {
    /// A ProcessGroupNCCL over `store`, this process being `rank` of
    /// `size` on `cuda:device_index`, collectives timing out after
    /// `timeout`: a `GeosslGroup*` (owned by the caller) that c10d.cpp's
    /// collectives drive. Errors: c10d's or NCCL's message (no such CUDA
    /// device, the rendezvous timed out).
    fn group_new(
        &self,
        store: &Store,
        rank: usize,
        size: usize,
        device_index: usize,
        timeout: Duration,
    ) -> Result<*mut GeosslGroup, String> {
        let mut out = std::ptr::null_mut();
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: a live store, ints and an out pointer. The error string is
        // malloc'ed by the library, freed by shim_error (the same C
        // allocator the whole process uses).
        let err = unsafe {
            (self.group_new)(
                store.raw(),
                rank as c_int,
                size as c_int,
                device_index as c_int,
                timeout_ms,
                &mut out,
            )
        };
        match shim_error(err) {
            None => Ok(out),
            Some(msg) => Err(msg),
        }
    }
}

/// A ProcessGroupNCCL over `store` for `device` (`cuda:LOCAL_RANK`), from
/// the NCCL library (loaded on first use), as torch.distributed's
/// `init_process_group("nccl", device_id=device, timeout=timeout)` makes it
/// (see nccl.cpp). Errors: a non-CUDA device, the library missing or not
/// built (naming the files tried), or c10d's / NCCL's message, e.g. when
/// this process sees no such CUDA device.
pub(super) fn new_group(
    store: Store,
    rank: usize,
    world_size: usize,
    device: Device,
    timeout: Duration,
) -> anyhow::Result<ProcessGroup> {
    let Device::Cuda(index) = device else {
        bail!("the NCCL backend serves CUDA tensors, not {device:?}; the CPU needs Gloo");
    };
    let lib = library().map_err(|e| anyhow!(e))?;
    let raw = lib
        .group_new(&store, rank, world_size, index, timeout)
        .map_err(|e| anyhow!("{e} (NCCL backend library {})", lib.path.display()))?;
    // SAFETY: a group the library just made for us with `new GeosslGroup`,
    // over `store`, of this rank and world size on `device`.
    Ok(unsafe { ProcessGroup::from_raw(raw, store, rank, world_size, device, timeout) })
}

/// What this binary expects [`NcclLibrary::built_for`] to be.
fn expected_build() -> String {
    format!(
        "torch {}, interface {INTERFACE}",
        env!("GEOSSL_TORCH_VERSION")
    )
}

/// The NCCL library, loaded on first use (later calls return the first
/// result). Errors say which files were tried and why each failed, or that
/// this binary was built without it (and why, from build.rs).
pub fn library() -> Result<&'static NcclLibrary, String> {
    static LOADED: OnceLock<Result<NcclLibrary, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let explicit = std::env::var_os(LIBRARY_ENV).filter(|v| !v.is_empty());
            if let (None, Some(why)) = (&explicit, option_env!("GEOSSL_NCCL_NOT_BUILT")) {
                return Err(format!(
                    "NCCL backend not built in this binary: {why}; run scripts/setup.sh and \
                     rebuild, or set {LIBRARY_ENV} to a {LIBRARY_FILE} built with the same torch"
                ));
            }
            let exe =
                std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
            load_first(&candidates(explicit, &exe))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Where to look, in order: `explicit` ($GEOSSL_NCCL_LIB) alone if given;
/// else beside `exe`, and one folder up when `exe` sits in a `deps` folder
/// (cargo's test binaries).
fn candidates(explicit: Option<OsString>, exe: &Path) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![PathBuf::from(path)];
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut out = vec![dir.join(LIBRARY_FILE)];
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(up) = dir.parent() {
            out.push(up.join(LIBRARY_FILE));
        }
    }
    out
}

/// Loads the first of `paths` that exists; the error lists every path
/// tried and what went wrong with it.
fn load_first(paths: &[PathBuf]) -> Result<NcclLibrary, String> {
    let mut tried = Vec::new();
    for path in paths {
        if !path.exists() {
            tried.push(format!("{}: no such file", path.display()));
            continue;
        }
        return load(path);
    }
    Err(format!(
        "NCCL backend library not found ({}); set {LIBRARY_ENV} to its path or put {LIBRARY_FILE} \
         next to the geossl binary (bench/gpu-prepare.sh packs both into .gpu/)",
        tried.join("; ")
    ))
}

/// Loads one library file and checks it was built for this binary.
fn load(path: &Path) -> Result<NcclLibrary, String> {
    let failed = |what: String| format!("NCCL backend library {}: {what}", path.display());
    // SAFETY: loading geossl's own NCCL library, which runs no initialisers
    // of its own; its dependency libtorch_cuda.so registers the CUDA backend
    // as model::torch_ext::load_cuda does. It stays loaded for the process's
    // life (ProcessGroupNCCL's watchdog threads run its code).
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| failed(format!("cannot load: {e}")))?;
    // SAFETY: symbols of the signatures declared in nccl.cpp.
    let (built_for, group_new) = unsafe {
        let built_for = lib
            .get::<BuiltFor>(b"geossl_nccl_built_for\0")
            .map_err(|e| failed(format!("not a geossl NCCL library: {e}")))?;
        let group_new = lib
            .get::<GroupNew>(b"geossl_nccl_group_new\0")
            .map_err(|e| failed(format!("not a geossl NCCL library: {e}")))?;
        let text = CStr::from_ptr(built_for()).to_string_lossy().into_owned();
        (text, *group_new)
    };
    if built_for != expected_build() {
        return Err(failed(format!(
            "built for {built_for}, this binary needs {}; carry the library built with this binary",
            expected_build()
        )));
    }
    std::mem::forget(lib);
    Ok(NcclLibrary {
        path: path.to_path_buf(),
        built_for,
        group_new,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Rendezvous;
    use super::*;

    #[test]
    fn the_library_is_found_beside_a_binary_or_one_folder_above_test_binaries() {
        let exe = Path::new("/x/target/release/geossl");
        assert_eq!(
            candidates(None, exe),
            [PathBuf::from("/x/target/release/libgeossl_nccl.so")]
        );
        let test = Path::new("/x/target/release/deps/geossl-0123");
        assert_eq!(
            candidates(None, test),
            [
                PathBuf::from("/x/target/release/deps/libgeossl_nccl.so"),
                PathBuf::from("/x/target/release/libgeossl_nccl.so"),
            ]
        );
        assert_eq!(
            candidates(Some("/elsewhere/lib.so".into()), test),
            [PathBuf::from("/elsewhere/lib.so")]
        );
    }

    #[test]
    fn errors_name_every_file_tried_and_the_override() {
        let err = load_first(&[
            PathBuf::from("/nonexistent/a.so"),
            PathBuf::from("/nonexistent/b.so"),
        ])
        .err()
        .unwrap();
        assert!(err.contains("/nonexistent/a.so: no such file"), "{err}");
        assert!(err.contains("/nonexistent/b.so: no such file"), "{err}");
        assert!(
            err.contains(LIBRARY_ENV) && err.contains("gpu-prepare.sh"),
            "{err}"
        );
        // A file that is not a shared library: the loader's reason.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let err = load_first(std::slice::from_ref(&manifest)).err().unwrap();
        assert!(
            err.contains(&*manifest.to_string_lossy()) && err.contains("cannot load"),
            "{err}"
        );
    }

    #[test]
    fn the_built_library_loads_and_was_built_for_this_binary() {
        if let Some(why) = option_env!("GEOSSL_NCCL_NOT_BUILT") {
            let err = library().err().expect("no library in this build");
            assert!(
                err.contains("NCCL backend not built") && err.contains(why),
                "{err}"
            );
            return;
        }
        let lib = library().unwrap_or_else(|e| panic!("{e}"));
        assert!(lib.path.ends_with(LIBRARY_FILE), "{}", lib.path.display());
        assert_eq!(lib.built_for, expected_build());
    }

    /// A one-rank job on a free loopback port, as torchrun's world size 1.
    fn one_rank() -> Rendezvous {
        Rendezvous {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 0,
            agent_store: false,
            store_prefix: "nccl-test/".into(),
            launcher: "torchrun",
        }
    }

    #[test]
    fn connecting_with_nccl_makes_a_group_on_a_gpu_and_says_why_not_without() {
        use super::super::Backend;
        let timeout = Duration::from_secs(20);
        let connect = |device| ProcessGroup::connect(&one_rank(), Backend::Nccl, device, timeout);
        let Err(err) = connect(Device::Cpu) else {
            panic!("NCCL on the CPU")
        };
        let err = format!("{err:#}");
        assert!(err.contains("serves CUDA tensors, not Cpu"), "{err}");
        // Loading the library loads libtorch_cuda.so, so the count is real.
        let built = library().is_ok();
        let devices = tch::Cuda::device_count();
        match connect(Device::Cuda(0)) {
            Ok(pg) => {
                assert!(built && devices > 0);
                assert_eq!((pg.rank(), pg.world_size()), (0, 1));
                let t = tch::Tensor::from_slice(&[1.0f32, 2.0]).to_device(Device::Cuda(0));
                pg.all_reduce_sum(std::slice::from_ref(&t)).unwrap();
                assert_eq!(
                    Vec::<f32>::try_from(t.to_device(Device::Cpu)).unwrap(),
                    [1.0, 2.0]
                );
            }
            Err(e) => {
                let err = format!("{e:#}");
                assert!(err.contains("rank 0 of 1 (torchrun)"), "{err}");
                if built {
                    assert_eq!(devices, 0, "{err}");
                    assert!(err.contains("NCCL needs the CUDA device cuda:0"), "{err}");
                    assert!(err.contains("sees 0 CUDA device(s)"), "{err}");
                    assert!(err.contains(LIBRARY_FILE), "{err}");
                } else {
                    assert!(err.contains("NCCL backend not built"), "{err}");
                }
            }
        }
    }
}
