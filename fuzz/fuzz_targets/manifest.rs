//! The manifest CSV parser: any bytes give a manifest or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = geossl::data::Manifest::parse(data, "fuzz.csv", std::path::Path::new("/data"));
});
