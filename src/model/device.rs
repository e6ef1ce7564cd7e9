//! Choosing the libtorch device from a `--device` string.

use tch::Device;

/// What the user asked for: `auto` picks CUDA device 0 when libtorch sees
/// one, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    match s {
        "auto" => Ok(DeviceSpec::Auto),
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| {
                format!("unknown device '{other}' (expected auto, cpu, cuda or cuda:N)")
            }),
    }
}

/// `cpu`, `cuda:0`, as `--device` spells it (what run records and the
/// training summary print).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
        Device::Cpu => "cpu".to_string(),
    }
}

impl DeviceSpec {
    /// Resolves to a device libtorch can use; asking for CUDA where there is
    /// none is an error rather than a silent fallback.
    /// `auto` and `cuda` load CUDA deliberately first (see
    /// [`super::torch_ext`]); `cpu` never touches it. A failure to load it
    /// is an error when CUDA was asked for by name. On a GPU, cuDNN's
    /// autotuner is switched on (fixed input sizes).
    pub fn resolve(self) -> anyhow::Result<Device> {
        let device = match self {
            DeviceSpec::Cpu => return Ok(Device::Cpu),
            // Without a loadable CUDA library `auto` is simply the CPU.
            DeviceSpec::Auto => {
                let _ = super::torch_ext::load_cuda();
                if tch::Cuda::device_count() > 0 {
                    Device::Cuda(0)
                } else {
                    Device::Cpu
                }
            }
            DeviceSpec::Cuda(n) => {
                let lib = super::torch_ext::load_cuda().map_err(|e| {
                    anyhow::anyhow!(
                        "{} cuda asked for, but libtorch's CUDA library does not load: {e}",
                        crate::settings::name("device")
                    )
                })?;
                let cuda_devices = tch::Cuda::device_count() as usize;
                if n >= cuda_devices {
                    let why = match lib {
                        Some(lib) => format!("{} is loaded", lib.display()),
                        None => "this libtorch has no CUDA library (a CPU-only build)".to_string(),
                    };
                    anyhow::bail!(
                        "{} cuda:{n} asked for, but libtorch sees {cuda_devices} CUDA device(s) in this process ({why})",
                        crate::settings::name("device")
                    );
                }
                Device::Cuda(n)
            }
        };
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        Ok(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_device("auto"), Ok(DeviceSpec::Auto));
        assert_eq!(parse_device("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(parse_device("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn cpu_resolves_and_computes() {
        // The smoke test that libtorch is linked and works: a real op on CPU.
        let device = DeviceSpec::Cpu.resolve().unwrap();
        let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0])
            .reshape([2, 2])
            .to_device(device);
        let b = a.matmul(&a.transpose(0, 1));
        let v: Vec<f32> = b.flatten(0, 1).try_into().unwrap();
        assert_eq!(v, vec![5.0, 11.0, 11.0, 25.0]);
        assert_eq!(
            DeviceSpec::Auto.resolve().unwrap() == Device::Cpu,
            tch::Cuda::device_count() == 0
        );
    }
}
