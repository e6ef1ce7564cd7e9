//! Geo-tagged image collections: manifests, importers, the location index,
//! geo-location classes, bounded decoding, raster reading through GDAL,
//! archives of scenes (`index rasters`), summaries and the built-in synthetic dataset.

pub mod augment;
pub mod band_image;
pub mod band_stats;
pub mod bands;
pub(crate) mod csv_lines;
pub mod decode;
pub mod decoded_cache;
pub mod fmow;
pub mod geo_classes;
pub mod import_csv;
pub(crate) mod jpeg;
pub mod loader;
pub mod location_index;
pub mod manifest;
pub mod pack;
pub mod raster;
pub mod scenes;
pub mod source;
pub mod summary;
pub mod synth;

pub use location_index::LocationIndex;
pub use manifest::{ImageRecord, Manifest, ManifestError, Split};

/// Runs a parallel iterator of fallible items to the end and returns their
/// values in order, or the error of the *first* failing item in the
/// iterator's order.
///
/// rayon's own `collect::<Result<_, _>>()` stops at whichever error a thread
/// meets first, so the row a failed run names (`--on-bad-image fail`, a
/// batch with two bad images) would change from run to run and with the
/// thread count. Every item is still run, so the cost of a failure is one
/// batch's work; successes cost nothing extra.
pub fn collect_in_order<T, I>(items: I) -> anyhow::Result<Vec<T>>
where
    T: Send,
    I: rayon::iter::IndexedParallelIterator<Item = anyhow::Result<T>>,
{
    let results: Vec<anyhow::Result<T>> = items.collect();
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    #[test]
    fn the_first_failing_item_in_order_is_reported_whatever_the_threads_do() {
        // Item 3 sleeps so that, on any thread count, item 7 fails first in
        // time; the error must still be item 3's.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for _ in 0..5 {
            let err = pool
                .install(|| {
                    super::collect_in_order((0..10usize).into_par_iter().map(|i| {
                        if i == 3 {
                            std::thread::sleep(std::time::Duration::from_millis(30));
                            anyhow::bail!("item 3")
                        }
                        if i == 7 {
                            anyhow::bail!("item 7")
                        }
                        Ok(i)
                    }))
                })
                .unwrap_err();
            assert_eq!(err.to_string(), "item 3");
        }
        let ok = super::collect_in_order((0..10usize).into_par_iter().map(anyhow::Ok)).unwrap();
        assert_eq!(ok, (0..10).collect::<Vec<_>>());
    }
}
