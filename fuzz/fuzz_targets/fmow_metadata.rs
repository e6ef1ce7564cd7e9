//! fMoW metadata: the JSON document, its WKT footprint and timestamp, and
//! the rows made of them.
#![no_main]
use libfuzzer_sys::fuzz_target;

use geossl::data::fmow::{rows_for_metadata, FmowMetadata};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = geossl::geo::wkt::centroid(text);
    }
    if let Ok(meta) = serde_json::from_slice::<FmowMetadata>(data) {
        let _ = rows_for_metadata(&meta, "a/b.jpg", "loc_1", "train", false);
        let _ = rows_for_metadata(&meta, "a/b.jpg", "loc_1", "val", true);
    }
});
