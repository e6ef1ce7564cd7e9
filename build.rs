//! Three jobs, all needing the libtorch that torch-sys linked against (it
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
//!   headers).
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
