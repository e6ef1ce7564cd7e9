//! The image decoding entry point (JPEG, PNG, TIFF by content), with the
//! default pixel limit and with a crop.
#![no_main]
use libfuzzer_sys::fuzz_target;

use geossl::data::decode::{decode_bytes, DecodeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let _ = decode_bytes(data, "fuzz.img", None, &limits);
});
