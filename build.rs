//! Four jobs, all needing the libtorch that torch-sys linked against (it
//! publishes its folder as `DEP_TCH_LIBTORCH_LIB`, because it declares
//! `links = "tch"`):
//! - bake that folder into every binary's run path, so `geossl` and the test
//!   binaries start without the user exporting LD_LIBRARY_PATH;
//! - compile `src/model/torch_ext.cpp`, the few libtorch calls tch does not
//!   wrap, against that libtorch's headers and C++ ABI;
//! - compile `src/dist/c10d.cpp`, the shim over PyTorch's c10d (stores,
//!   ProcessGroupGloo, collectives), the same way plus `USE_C10D_GLOO`,
//!   `torch/csrc/api/include` and Gloo's headers (Debian's libgloo-dev,
//!   installed by scripts/setup.sh; the wheel ships Gloo's code, not its
//!   headers);
//! - build `src/dist/nccl.cpp` into its own shared library,
//!   `libgeossl_nccl.so`, loaded at run time (see `nccl_library`).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/model/torch_ext.cpp");
    println!("cargo:rerun-if-changed=src/dist/c10d.cpp");
    println!("cargo:rerun-if-changed=src/dist/c10d.h");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys publishes DEP_TCH_LIBTORCH_LIB"),
    );
    let windows = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows");
    if !windows {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    let include = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .join("include");
    cpp_build(&include, windows)
        .file("src/model/torch_ext.cpp")
        .compile("geossl_torch_ext");
    cpp_build(&include, windows)
        .define("USE_C10D_GLOO", None)
        .include(include.join("torch/csrc/api/include"))
        .file("src/dist/c10d.cpp")
        .compile("geossl_c10d");
    if !windows {
        nccl_library(&lib, &include);
    }
}

/// A C++17 build against libtorch's headers in `include`, with its C++ ABI.
fn cpp_build(include: &std::path::Path, windows: bool) -> cc::Build {
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).warnings(false).include(include);
    if windows {
        build.flag("/std:c++17");
    } else {
        build
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()));
    }
    build
}

/// The C++ ABI libtorch was built with: torch-sys's own rules (explicit
/// LIBTORCH_CXX11_ABI, else ask the PyTorch install, else 1).
fn cxx11_abi() -> String {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if let Ok(abi) = std::env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {python}: {e}"));
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    "1".into()
}

/// Builds `src/dist/nccl.cpp` (PyTorch's ProcessGroupNCCL as a GeosslGroup,
/// see `src/dist/c10d.h`) into its own shared library, `libgeossl_nccl.so`,
/// which `src/dist/nccl.rs` loads at run time: linking ProcessGroupNCCL
/// into the binary would make `libtorch_cuda.so` a hard dependency, and the
/// binary loads CUDA deliberately at run time instead (model::torch_ext).
///
/// Where it goes: next to the binaries of this profile (`target/<profile>/`,
/// three folders above OUT_DIR), where `nccl.rs` looks first; test binaries
/// in `target/<profile>/deps/` look one folder up. It is linked against the
/// wheel's `libtorch_cuda.so`, `libtorch_cpu.so`, `libc10.so` and
/// `libc10_cuda.so`, with that folder as its run path.
///
/// The headers: NCCL's from the wheel's `nvidia/nccl`, the CUDA headers it
/// includes from `nvidia-cuda-runtime`, `nvidia-cuda-crt` and
/// `nvidia-cuda-cccl` (scripts/setup.sh installs the last two). Without
/// them (or without `libtorch_cuda.so`: a CPU-only torch) the library is not
/// built: a cargo warning says why, and the binary reports "NCCL backend not
/// built" with that reason when a job asks for NCCL.
fn nccl_library(lib: &std::path::Path, include: &std::path::Path) {
    println!("cargo:rerun-if-changed=src/dist/nccl.cpp");
    println!("cargo:rerun-if-changed=src/dist/c10d.h");
    println!(
        "cargo:rustc-env=GEOSSL_TORCH_VERSION={}",
        torch_version(include)
    );
    let include_dirs = match nccl_include_dirs(lib) {
        Ok(dirs) => dirs,
        Err(why) => {
            println!("cargo:warning=NCCL backend not built: {why}");
            println!("cargo:rustc-env=GEOSSL_NCCL_NOT_BUILT={why}");
            return;
        }
    };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let built = out_dir.join("libgeossl_nccl.so");
    let mut compile = cc::Build::new()
        .cpp(true)
        .pic(true)
        .get_compiler()
        .to_command();
    compile
        .args(["-std=c++17", "-shared", "-w", "-DUSE_C10D_NCCL"])
        .arg(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .arg(format!("-I{}", include.display()))
        .arg(format!(
            "-I{}",
            include.join("torch/csrc/api/include").display()
        ))
        .args(include_dirs.iter().map(|d| format!("-I{}", d.display())))
        .args(["src/dist/nccl.cpp", "-o"])
        .arg(&built)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args([
            "-Wl,--no-undefined",
            "-ltorch_cuda",
            "-ltorch_cpu",
            "-lc10_cuda",
            "-lc10",
        ]);
    // The header-heavy compile takes ~15 s: skip it when neither the command
    // nor its sources changed since the last build (this script also reruns
    // for the other C++ files).
    let stamp = out_dir.join("libgeossl_nccl.command");
    let command = format!("{compile:?}");
    let sources = ["src/dist/nccl.cpp", "src/dist/c10d.h"];
    if !nccl_up_to_date(&built, &stamp, &command, &sources) {
        let status = compile
            .status()
            .unwrap_or_else(|e| panic!("running {compile:?}: {e}"));
        assert!(
            status.success(),
            "building {}: {compile:?} failed",
            built.display()
        );
        std::fs::write(&stamp, &command).expect("writing the NCCL build stamp");
    }
    // OUT_DIR is target/<profile>/build/geossl-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is 3 folders deep");
    let dest = profile_dir.join("libgeossl_nccl.so");
    // Copy, then rename over: a running process keeps its mapping of the old file.
    let tmp = profile_dir.join("libgeossl_nccl.so.tmp");
    std::fs::copy(&built, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &dest))
        .unwrap_or_else(|e| panic!("placing {} at {}: {e}", built.display(), dest.display()));
}

/// Whether `built` was made by `command` (recorded in `stamp`) after the
/// last change to any of `sources`.
fn nccl_up_to_date(
    built: &std::path::Path,
    stamp: &std::path::Path,
    command: &str,
    sources: &[&str],
) -> bool {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built_at) = modified(built) else {
        return false;
    };
    std::fs::read_to_string(stamp).is_ok_and(|s| s == command)
        && sources
            .iter()
            .all(|s| modified(std::path::Path::new(s)).is_some_and(|t| t <= built_at))
}

/// The include folders of the wheel's `nvidia/*` packages, when they hold
/// every header ProcessGroupNCCL.hpp needs; otherwise which one is missing
/// and the PyPI package that ships it.
fn nccl_include_dirs(lib: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err("the NCCL backend is built on Linux only".into());
    }
    if !lib.join("libtorch_cuda.so").exists() {
        return Err(format!(
            "{} has no libtorch_cuda.so (a CPU-only torch)",
            lib.display()
        ));
    }
    // lib = <site-packages>/torch/lib
    let nvidia = lib
        .ancestors()
        .nth(2)
        .expect("torch/lib has a parent")
        .join("nvidia");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nvidia)
        .map_err(|e| {
            format!(
                "{}: {e} (the torch wheel's nvidia-* packages)",
                nvidia.display()
            )
        })?
        .filter_map(|e| Some(e.ok()?.path().join("include")))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    let needed = [
        ("nccl.h", "nvidia-nccl-cu13"),
        ("cuda_runtime.h", "nvidia-cuda-runtime"),
        ("crt/host_config.h", "nvidia-cuda-crt"),
        ("nv/target", "nvidia-cuda-cccl"),
    ];
    for (header, package) in needed {
        if !dirs.iter().any(|d| d.join(header).exists()) {
            return Err(format!(
                "no {header} under {}/*/include (PyPI's {package}; scripts/setup.sh installs it)",
                nvidia.display()
            ));
        }
    }
    Ok(dirs)
}

/// libtorch's version ("2.11.0") from its headers, for nccl.rs to check the
/// library it loads against.
fn torch_version(include: &std::path::Path) -> String {
    let header = include.join("torch/headeronly/version.h");
    let text = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
    let after = text
        .split("#define TORCH_VERSION ")
        .nth(1)
        .unwrap_or_else(|| panic!("no TORCH_VERSION in {}", header.display()));
    after
        .split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("TORCH_VERSION in {} is not a string", header.display()))
        .to_string()
}
