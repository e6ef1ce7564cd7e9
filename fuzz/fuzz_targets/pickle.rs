//! The restricted pickle reader behind `geossl import --pth`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = geossl::interop::pickle::load(data);
});
