//! Bakes the libtorch folder that torch-sys linked against into every binary's
//! run path, so `geossl` (and the test binaries) start without the user
//! exporting LD_LIBRARY_PATH. torch-sys publishes the folder as
//! `DEP_TCH_LIBTORCH_LIB` because it declares `links = "tch"`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("windows") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
