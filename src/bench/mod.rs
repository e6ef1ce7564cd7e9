//! Benchmarks (`geossl bench ...`): inputs that look like the real thing,
//! timed end to end, printed as one `BENCH ...` line each that
//! `bench/compare.sh` sets beside the PyTorch references. Never run as tests.

pub mod data;
pub mod decode;
pub mod fmow_images;
pub mod kmeans;
pub mod scaled_jpeg;
pub mod step;

/// Peak resident memory of this process so far (VmHWM, the same figure as
/// `getrusage(RUSAGE_SELF).ru_maxrss`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Median and minimum of `xs` (not empty).
pub fn median_min(xs: &[f64]) -> (f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median_min(&[3.0, 1.0, 2.0]), (2.0, 1.0));
        assert_eq!(median_min(&[4.0, 1.0, 3.0, 2.0]), (2.5, 1.0));
    }

    #[test]
    fn peak_memory_counts_a_touched_allocation_in_mib() {
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = peak_rss_mib().unwrap();
        // At least the 64 MiB just written; far below a GiB-for-MiB mix-up.
        assert!((64.0..100_000.0).contains(&peak), "{peak}");
    }
}
