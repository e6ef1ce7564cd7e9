//! What tch 0.24 does not wrap, from libtorch directly (`torch_ext.cpp`):
//! PyTorch's fused SGD kernel, the multi-tensor lerp used for the momentum
//! update, bf16 autocast on a chosen device, channels-last layouts, pinned
//! host memory; the deliberate loading of `libtorch_cuda.so`; and the
//! allocator settings libtorch's CPU tensors run best with.
//!
//! Why load CUDA by hand: the binary is linked "as needed", and nothing in
//! it calls into `libtorch_cuda.so` directly, so the linker drops it and
//! libtorch then reports no CUDA device even on a GPU machine. Loading the
//! library that sits next to the `libtorch_cpu.so` in use registers its
//! CUDA hooks before the first device query.

use std::ffi::{c_char, c_int, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

use tch::{Device, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn geossl_free_error(e: *mut c_char);
    fn geossl_fused_sgd(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: c_int,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        first_step: c_int,
        found_inf: *mut C_tensor,
    ) -> *mut c_char;
    fn geossl_foreach_lerp(
        this: *const *mut C_tensor,
        end: *const *mut C_tensor,
        n: c_int,
        weight: f64,
    ) -> *mut c_char;
    fn geossl_foreach_copy(
        dst: *const *mut C_tensor,
        src: *const *mut C_tensor,
        n: c_int,
    ) -> *mut c_char;
    fn geossl_autocast_enter(cuda: c_int, previous: *mut c_int) -> *mut c_char;
    fn geossl_autocast_exit(cuda: c_int, previous: c_int) -> *mut c_char;
    fn geossl_contiguous(
        t: *mut C_tensor,
        channels_last: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn geossl_empty_pinned(sizes: *const i64, ndim: c_int, out: *mut *mut C_tensor) -> *mut c_char;
    fn geossl_is_channels_last(t: *mut C_tensor, out: *mut c_int) -> *mut c_char;
}

/// A libtorch exception, with libtorch's message.
#[derive(Debug, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct TorchError(String);

fn check(e: *mut c_char) -> Result<(), TorchError> {
    if e.is_null() {
        return Ok(());
    }
    // SAFETY: non-null results are NUL-terminated strings malloc'ed by the
    // shim, freed exactly once here.
    let msg = unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned();
    unsafe { geossl_free_error(e) };
    Err(TorchError(msg))
}

fn ptrs(ts: &[Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Settings of one [`fused_sgd`] call.
#[derive(Debug, Clone, Copy)]
pub struct SgdUpdate {
    pub weight_decay: f64,
    pub momentum: f64,
    pub lr: f64,
    /// Sets each buffer to the decayed gradient instead of accumulating.
    pub first_step: bool,
}

/// PyTorch's SGD update (momentum, weight decay, no dampening/Nesterov) for
/// all `params` in one fused kernel. With `skip_if` (a float scalar tensor
/// on the parameters' device) holding a non-zero value, nothing changes;
/// the decision is taken on the device, so no host sync is needed.
pub fn fused_sgd(
    params: &[Tensor],
    grads: &[Tensor],
    buffers: &[Tensor],
    update: SgdUpdate,
    skip_if: Option<&Tensor>,
) -> Result<(), TorchError> {
    let SgdUpdate {
        weight_decay,
        momentum,
        lr,
        first_step,
    } = update;
    assert!(params.len() == grads.len() && params.len() == buffers.len());
    let (p, g, b) = (ptrs(params), ptrs(grads), ptrs(buffers));
    // SAFETY: three arrays of `n` live tensors; the shim only reads them.
    check(unsafe {
        geossl_fused_sgd(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            p.len() as c_int,
            weight_decay,
            momentum,
            lr,
            c_int::from(first_step),
            skip_if.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut C_tensor),
        )
    })
}

/// `this[i] += weight * (end[i] - this[i])` for all i, one multi-tensor op.
pub fn foreach_lerp(this: &[Tensor], end: &[Tensor], weight: f64) -> Result<(), TorchError> {
    assert_eq!(this.len(), end.len());
    let (a, b) = (ptrs(this), ptrs(end));
    // SAFETY: two arrays of `n` live tensors.
    check(unsafe { geossl_foreach_lerp(a.as_ptr(), b.as_ptr(), a.len() as c_int, weight) })
}

/// `dst[i].copy_(src[i])` for all i, one multi-tensor op.
pub fn foreach_copy(dst: &[Tensor], src: &[Tensor]) -> Result<(), TorchError> {
    assert_eq!(dst.len(), src.len());
    let (a, b) = (ptrs(dst), ptrs(src));
    // SAFETY: two arrays of `n` live tensors.
    check(unsafe { geossl_foreach_copy(a.as_ptr(), b.as_ptr(), a.len() as c_int) })
}

/// Runs `f` with bf16 autocast on `device`'s type when `enabled` (PyTorch's
/// `torch.autocast(device, dtype=torch.bfloat16)`); plain `f()` otherwise.
pub fn autocast_bf16<T>(
    device: Device,
    enabled: bool,
    f: impl FnOnce() -> T,
) -> Result<T, TorchError> {
    if !enabled {
        return Ok(f());
    }
    let cuda = c_int::from(device.is_cuda());
    let mut previous: c_int = 0;
    // SAFETY: plain ints.
    check(unsafe { geossl_autocast_enter(cuda, &mut previous) })?;
    struct Exit(c_int, c_int);
    impl Drop for Exit {
        fn drop(&mut self) {
            // SAFETY: plain ints; leaving cannot fail in a way worth reporting
            // from a destructor, so a message is logged and dropped.
            if let Err(e) = check(unsafe { geossl_autocast_exit(self.0, self.1) }) {
                tracing::warn!("leaving autocast: {e}");
            }
        }
    }
    let _exit = Exit(cuda, previous);
    Ok(f())
}

/// `t` in channels-last (`true`) or contiguous NCHW layout (PyTorch's
/// `t.contiguous(memory_format=...)`).
pub fn contiguous(t: &Tensor, channels_last: bool) -> Result<Tensor, TorchError> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: `t` is live; on success `out` is a new tensor we own.
    check(unsafe {
        geossl_contiguous(
            t.as_ptr() as *mut C_tensor,
            c_int::from(channels_last),
            &mut out,
        )
    })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// An uninitialised f32 tensor of `sizes` in page-locked (pinned) host
/// memory; needs CUDA.
pub fn empty_pinned(sizes: &[i64]) -> Result<Tensor, TorchError> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: `sizes` outlives the call; on success `out` is ours.
    check(unsafe { geossl_empty_pinned(sizes.as_ptr(), sizes.len() as c_int, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

pub fn is_channels_last(t: &Tensor) -> Result<bool, TorchError> {
    let mut out: c_int = 0;
    // SAFETY: `t` is live.
    check(unsafe { geossl_is_channels_last(t.as_ptr() as *mut C_tensor, &mut out) })?;
    Ok(out != 0)
}

/// Converts every 4-D parameter and buffer to channels-last in place (conv
/// weights), so convolutions run NHWC end to end.
pub fn vars_to_channels_last(vs: &tch::nn::VarStore) -> Result<(), TorchError> {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let cl = contiguous(&v, true)?;
                v.set_data(&cl);
            }
        }
        Ok(())
    })
}

/// Makes glibc keep freed memory for reuse instead of handing it back to
/// the kernel. libtorch's CPU allocator is plain malloc, and a training
/// step frees and re-allocates the same activation-sized blocks every
/// step; with glibc's defaults the large ones are mmap'ed and unmapped each
/// time, so every step page-faults them in again and the kernel zeroes
/// them (~10% of a ResNet-18 step on 2 cores, in `perf`). All blocks now
/// come from the heap and the heap is never trimmed: steady-state memory is
/// the peak, which does not grow. Call once, before any tensor exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before
    // other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The folder of the `libtorch_cpu.so` this process runs on, from
/// `/proc/self/maps`.
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
}

/// Loads `libtorch_cuda.so` from the folder of the libtorch in use, once.
/// `Ok(None)` when that libtorch has no CUDA library (a CPU-only build);
/// an error when it has one that fails to load (e.g. a missing driver).
pub fn load_cuda() -> Result<Option<PathBuf>, String> {
    static LOADED: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let Some(dir) = libtorch_dir() else {
                return Err("cannot find libtorch_cpu.so in /proc/self/maps".into());
            };
            let lib = dir.join("libtorch_cuda.so");
            if !lib.exists() {
                return Ok(None);
            }
            // SAFETY: loading libtorch's own CUDA part, built with the
            // libtorch already loaded; its initialisers register the CUDA
            // backend. The handle is kept for the life of the process.
            match unsafe { libloading::Library::new(&lib) } {
                Ok(handle) => {
                    std::mem::forget(handle);
                    Ok(Some(lib))
                }
                Err(e) => Err(format!("{}: {e}", lib.display())),
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn fused_sgd_matches_the_pytorch_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]);
        let g = Tensor::from_slice(&[0.5f32, 0.25]);
        let b = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let run = |first_step: bool, skip: Option<&Tensor>| {
            let update = SgdUpdate {
                weight_decay: 0.1,
                momentum: 0.9,
                lr: 0.5,
                first_step,
            };
            fused_sgd(
                &[p.shallow_clone()],
                &[g.shallow_clone()],
                &[b.shallow_clone()],
                update,
                skip,
            )
            .unwrap();
        };
        // First step: buf = g + 0.1 p = [0.6, 0.05]; p -= 0.5 buf.
        run(true, None);
        let buf: Vec<f32> = b.shallow_clone().try_into().unwrap();
        assert!(
            (buf[0] - 0.6).abs() < 1e-6 && (buf[1] - 0.05).abs() < 1e-6,
            "{buf:?}"
        );
        let pv: Vec<f32> = p.shallow_clone().try_into().unwrap();
        assert!(
            (pv[0] - 0.7).abs() < 1e-6 && (pv[1] + 2.025).abs() < 1e-6,
            "{pv:?}"
        );
        // A set skip flag changes nothing.
        run(false, Some(&Tensor::from(1.0f32)));
        let unchanged: Vec<f32> = p.shallow_clone().try_into().unwrap();
        assert_eq!(unchanged, pv);
        // Second step: buf = 0.9 buf + g + 0.1 p.
        run(false, Some(&Tensor::from(0.0f32)));
        let buf2: Vec<f32> = b.shallow_clone().try_into().unwrap();
        let expect = [0.9 * 0.6 + 0.5 + 0.07, 0.9 * 0.05 + 0.25 - 0.2025];
        assert!((buf2[0] - expect[0]).abs() < 1e-6 && (buf2[1] - expect[1]).abs() < 1e-6);
    }

    #[test]
    fn foreach_lerp_moves_towards_the_target() {
        let a = Tensor::from_slice(&[0.0f32, 10.0]);
        let b = Tensor::from_slice(&[1.0f32, 0.0]);
        foreach_lerp(&[a.shallow_clone()], &[b], 0.25).unwrap();
        let v: Vec<f32> = a.try_into().unwrap();
        assert_eq!(v, vec![0.25, 7.5]);
    }

    #[test]
    fn foreach_copy_copies_every_tensor() {
        let dst = [
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        ];
        let src = [
            Tensor::from_slice(&[1.0f32, 2.0]),
            Tensor::from_slice(&[3.0f32]),
        ];
        foreach_copy(&dst, &src).unwrap();
        assert!(dst[0].equal(&src[0]) && dst[1].equal(&src[1]));
    }

    #[test]
    fn libtorch_errors_become_messages() {
        let a = Tensor::from_slice(&[0.0f32, 10.0]);
        let b = Tensor::from_slice(&[1.0f32, 0.0, 3.0]);
        let err = foreach_lerp(&[a], &[b], 0.5).unwrap_err().to_string();
        assert!(err.starts_with("libtorch: "), "{err}");
    }

    #[test]
    fn channels_last_round_trip_keeps_values() {
        let x = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert!(!is_channels_last(&x).unwrap());
        let cl = contiguous(&x, true).unwrap();
        assert!(is_channels_last(&cl).unwrap());
        assert!(cl.equal(&x));
        assert_eq!(cl.stride(), vec![60, 1, 15, 3]);
    }

    #[test]
    fn cpu_autocast_runs_matmuls_in_bf16() {
        let a = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        let inside = autocast_bf16(Device::Cpu, true, || a.matmul(&a)).unwrap();
        assert_eq!(inside.kind(), Kind::BFloat16);
        assert_eq!(a.matmul(&a).kind(), Kind::Float, "autocast left on");
        let off = autocast_bf16(Device::Cpu, false, || a.matmul(&a)).unwrap();
        assert_eq!(off.kind(), Kind::Float);
    }

    #[test]
    fn cuda_library_is_loaded_from_the_libtorch_in_use() {
        let dir = libtorch_dir().expect("libtorch_cpu.so is mapped");
        match load_cuda() {
            Ok(Some(lib)) => {
                assert_eq!(lib, dir.join("libtorch_cuda.so"));
                let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
                assert!(maps.contains(lib.to_str().unwrap()), "mapped after loading");
            }
            Ok(None) => assert!(!dir.join("libtorch_cuda.so").exists()),
            Err(e) => panic!("{e}"),
        }
    }
}
