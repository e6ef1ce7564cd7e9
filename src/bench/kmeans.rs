//! `geossl bench kmeans`: geo-tag-like points and one timed k-means fit.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::data::synth::world;
use crate::geo::kmeans::{self, KMeansConfig};
use crate::geo::{LatLon, UnitVector};

/// `n` geo-tag-like points: 80% scattered (~50 km) around the shipped cities,
/// 20% uniform on the sphere.
pub fn geo_points(n: usize, seed: u64) -> Vec<UnitVector> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cities = world::cities();
    let scatter = Normal::new(0.0, 0.5).expect("valid normal");
    (0..n)
        .map(|_| {
            if rng.gen_bool(0.8) {
                let c = &cities[rng.gen_range(0..cities.len())];
                let lat = (c.lat + scatter.sample(&mut rng)).clamp(-90.0, 90.0);
                let lon = (c.lon + scatter.sample(&mut rng) + 540.0).rem_euclid(360.0) - 180.0;
                LatLon { lat, lon }.to_unit_vector()
            } else {
                let z: f64 = rng.gen_range(-1.0..1.0);
                let t: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
                let r = (1.0 - z * z).sqrt();
                [r * t.cos(), r * t.sin(), z]
            }
        })
        .collect()
}

/// Writes points as a float64 `.npy` array of shape (n, 3).
pub fn write_npy(path: &Path, points: &[UnitVector]) -> anyhow::Result<()> {
    let flat: Vec<f64> = points.iter().flatten().copied().collect();
    crate::formats::npy::write(path, &[points.len(), 3], &flat)
}

pub struct KMeansTiming {
    pub seconds: f64,
    pub iterations: usize,
    pub inertia: f64,
}

/// Times one k-means fit (seeding + Lloyd) on `points`.
pub fn time_kmeans(points: &[UnitVector], k: usize, seed: u64) -> anyhow::Result<KMeansTiming> {
    let t0 = Instant::now();
    let km = kmeans::fit(points, None, &KMeansConfig::new(k, seed))?;
    Ok(KMeansTiming {
        seconds: t0.elapsed().as_secs_f64(),
        iterations: km.iterations,
        inertia: km.inertia,
    })
}

/// `repeat` timed fits (at least one), fastest first: the median is the
/// middle one.
pub fn time_kmeans_repeated(
    points: &[UnitVector],
    k: usize,
    seed: u64,
    repeat: usize,
) -> anyhow::Result<Vec<KMeansTiming>> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(time_kmeans(points, k, seed)?);
    }
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    Ok(runs)
}
