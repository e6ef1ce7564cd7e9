//! k-means on the unit sphere: the geo-location pretext classes.
//!
//! Points are 3-D unit vectors (see [`super::coords`]), so Euclidean k-means
//! here is chord-distance k-means on the globe: no seam at +-180 degrees and
//! no polar distortion. Initialisation is k-means++ (D^2 sampling, weighted),
//! followed by Lloyd iterations until the centroids move less than `tol`
//! (relative to the data's variance, as scikit-learn defines it) or
//! `max_iter` is reached.
//!
//! Determinism: every pass over the points works on fixed-size chunks whose
//! partial sums are combined in chunk order, so the result depends on the
//! seed only, not on the number of threads or on scheduling.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::coords::UnitVector;

/// Points per unit of parallel work; also the unit of deterministic reduction.
const CHUNK: usize = 8192;
/// Centroids are scored eight at a time so the inner loop vectorises.
const LANES: usize = 8;

#[derive(Debug, Clone)]
pub struct KMeansConfig {
    pub k: usize,
    pub seed: u64,
    pub max_iter: usize,
    /// Convergence threshold on the summed squared centroid shift, relative to
    /// the mean per-axis variance of the points (scikit-learn's `tol`).
    pub tol: f64,
}

impl KMeansConfig {
    pub fn new(k: usize, seed: u64) -> Self {
        Self {
            k,
            seed,
            max_iter: 300,
            tol: 1e-4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KMeansError {
    #[error("k must be at least 1")]
    ZeroClusters,
    #[error("no points to cluster")]
    NoPoints,
    #[error("k = {k} is larger than the number of distinct positions ({distinct}); choose k <= {distinct}")]
    TooManyClusters { k: usize, distinct: usize },
    #[error("weights: expected {expected} values, got {got}")]
    WeightCount { expected: usize, got: usize },
    #[error(
        "weight of point {index} is {value}; weights must be finite and >= 0 with a positive sum"
    )]
    BadWeight { index: usize, value: f64 },
}

/// A fitted clustering.
#[derive(Debug, Clone)]
pub struct KMeans {
    /// Cluster means in 3-D (inside the ball; normalise for a position).
    pub centroids: Vec<[f64; 3]>,
    /// Cluster of each input point.
    pub assignments: Vec<u32>,
    /// Summed weight of the points in each cluster.
    pub cluster_weight: Vec<f64>,
    /// Number of points in each cluster.
    pub cluster_points: Vec<usize>,
    /// Weighted sum of squared chord distances to the assigned centroid.
    pub inertia: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
    pub converged: bool,
}

/// Centroids laid out axis by axis (structure of arrays), padded to a multiple
/// of [`LANES`] with entries that can never win.
struct CentroidTable {
    x: Vec<f32>,
    y: Vec<f32>,
    z: Vec<f32>,
    /// Half the squared norm: argmin |p-c|^2 = argmax (p.c - |c|^2/2) for unit p.
    half_norm2: Vec<f32>,
}

impl CentroidTable {
    fn new(centroids: &[[f64; 3]]) -> Self {
        let padded = centroids.len().div_ceil(LANES) * LANES;
        let mut t = CentroidTable {
            x: vec![0.0; padded],
            y: vec![0.0; padded],
            z: vec![0.0; padded],
            half_norm2: vec![f32::INFINITY; padded],
        };
        for (j, c) in centroids.iter().enumerate() {
            t.x[j] = c[0] as f32;
            t.y[j] = c[1] as f32;
            t.z[j] = c[2] as f32;
            t.half_norm2[j] = (0.5 * (c[0] * c[0] + c[1] * c[1] + c[2] * c[2])) as f32;
        }
        t
    }

    /// Index of the nearest centroid and the squared distance to it.
    #[inline]
    fn nearest(&self, p: [f32; 3]) -> (u32, f32) {
        let mut best = [f32::NEG_INFINITY; LANES];
        let mut best_j = [0u32; LANES];
        for block in 0..self.x.len() / LANES {
            let o = block * LANES;
            for l in 0..LANES {
                let s = p[0] * self.x[o + l] + p[1] * self.y[o + l] + p[2] * self.z[o + l]
                    - self.half_norm2[o + l];
                if s > best[l] {
                    best[l] = s;
                    best_j[l] = (o + l) as u32;
                }
            }
        }
        let mut j = 0;
        for l in 1..LANES {
            if best[l] > best[j] || (best[l] == best[j] && best_j[l] < best_j[j]) {
                j = l;
            }
        }
        (best_j[j], (1.0 - 2.0 * best[j]).max(0.0))
    }
}

fn squared_distance(a: [f32; 3], b: [f64; 3]) -> f64 {
    let d = [a[0] as f64 - b[0], a[1] as f64 - b[1], a[2] as f64 - b[2]];
    d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
}

/// Clusters `points` (unit vectors) into `config.k` clusters. `weights`, when
/// given, counts each point that many times (e.g. images per location).
pub fn fit(
    points: &[UnitVector],
    weights: Option<&[f64]>,
    config: &KMeansConfig,
) -> Result<KMeans, KMeansError> {
    let k = config.k;
    if k == 0 {
        return Err(KMeansError::ZeroClusters);
    }
    if points.is_empty() {
        return Err(KMeansError::NoPoints);
    }
    let weights: Vec<f64> = match weights {
        Some(w) if w.len() != points.len() => {
            return Err(KMeansError::WeightCount {
                expected: points.len(),
                got: w.len(),
            })
        }
        Some(w) => w.to_vec(),
        None => vec![1.0; points.len()],
    };
    if let Some((index, &value)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
    {
        return Err(KMeansError::BadWeight { index, value });
    }
    let total_weight: f64 = weights.iter().sum();
    if total_weight.is_nan() || total_weight <= 0.0 {
        return Err(KMeansError::BadWeight {
            index: 0,
            value: 0.0,
        });
    }
    let pts: Vec<[f32; 3]> = points
        .iter()
        .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
        .collect();

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut centroids = kmeans_plus_plus(&pts, &weights, k, &mut rng)?;
    let tol = config.tol * mean_axis_variance(&pts, &weights);

    let mut assignments = vec![u32::MAX; pts.len()];
    let mut iterations = 0;
    let mut converged = false;
    while iterations < config.max_iter {
        iterations += 1;
        let stats = assign(&pts, &weights, &centroids, &mut assignments);
        let updated = update_centroids(&pts, &stats, &assignments, &centroids);
        let shift: f64 = centroids
            .iter()
            .zip(&updated)
            .map(|(a, b)| (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>())
            .sum();
        centroids = updated;
        if stats.changed == 0 || shift <= tol {
            converged = true;
            break;
        }
    }
    // Final assignment so that labels agree with the returned centroids.
    let stats = assign(&pts, &weights, &centroids, &mut assignments);
    Ok(KMeans {
        centroids,
        assignments,
        cluster_weight: stats.weight,
        cluster_points: stats.count,
        inertia: stats.inertia,
        iterations,
        converged,
    })
}

fn mean_axis_variance(pts: &[[f32; 3]], w: &[f64]) -> f64 {
    let total: f64 = w.iter().sum();
    let mut mean = [0.0; 3];
    for (p, &wi) in pts.iter().zip(w) {
        for a in 0..3 {
            mean[a] += wi * p[a] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= total);
    let mut var = 0.0;
    for (p, &wi) in pts.iter().zip(w) {
        var += wi * squared_distance(*p, mean);
    }
    var / total / 3.0
}

/// Weighted k-means++ seeding: the first centre with probability proportional
/// to weight, each next one proportional to weight x squared distance to the
/// nearest centre chosen so far.
fn kmeans_plus_plus(
    pts: &[[f32; 3]],
    w: &[f64],
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<[f64; 3]>, KMeansError> {
    let to64 = |p: [f32; 3]| [p[0] as f64, p[1] as f64, p[2] as f64];
    let mut centres = Vec::with_capacity(k);
    let first = sample_proportional(w, rng.gen::<f64>()).expect("positive total weight");
    centres.push(to64(pts[first]));
    let mut d2: Vec<f64> = pts
        .iter()
        .map(|&p| squared_distance(p, centres[0]))
        .collect();
    while centres.len() < k {
        let scores: Vec<f64> = d2.iter().zip(w).map(|(d, wi)| d * wi).collect();
        let Some(next) = sample_proportional(&scores, rng.gen::<f64>()) else {
            // Every point with weight sits on a chosen centre already.
            let distinct = centres.len() + count_unreached_positions(pts, &d2);
            return Err(KMeansError::TooManyClusters { k, distinct });
        };
        let c = to64(pts[next]);
        centres.push(c);
        d2.par_chunks_mut(CHUNK)
            .zip(pts.par_chunks(CHUNK))
            .for_each(|(d, p)| {
                for (di, &pi) in d.iter_mut().zip(p) {
                    *di = di.min(squared_distance(pi, c));
                }
            });
    }
    Ok(centres)
}

/// Positions not yet covered by a centre (zero-weight points only, since all
/// weighted ones are covered when sampling fails), counted exactly.
fn count_unreached_positions(pts: &[[f32; 3]], d2: &[f64]) -> usize {
    let mut seen: Vec<[u32; 3]> = pts
        .iter()
        .zip(d2)
        .filter(|(_, &d)| d > 0.0)
        .map(|(p, _)| [p[0].to_bits(), p[1].to_bits(), p[2].to_bits()])
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// Index `i` with probability `scores[i] / sum`, given `u` uniform in [0, 1).
/// Chunk sums are computed in parallel and combined in order (deterministic).
fn sample_proportional(scores: &[f64], u: f64) -> Option<usize> {
    let chunk_sums: Vec<f64> = scores.par_chunks(CHUNK).map(|c| c.iter().sum()).collect();
    let total: f64 = chunk_sums.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut target = u * total;
    for (ci, &s) in chunk_sums.iter().enumerate() {
        if target < s || ci == chunk_sums.len() - 1 {
            let start = ci * CHUNK;
            let chunk = &scores[start..(start + CHUNK).min(scores.len())];
            let mut last_positive = None;
            for (i, &v) in chunk.iter().enumerate() {
                if v > 0.0 {
                    last_positive = Some(start + i);
                    if target < v {
                        return Some(start + i);
                    }
                    target -= v;
                }
            }
            // Rounding left a sliver: take the last candidate seen.
            if last_positive.is_some() {
                return last_positive;
            }
        } else {
            target -= s;
        }
    }
    scores.iter().rposition(|&v| v > 0.0)
}

/// Per-cluster sums of one assignment pass.
struct PassStats {
    sum: Vec<[f64; 3]>,
    weight: Vec<f64>,
    count: Vec<usize>,
    inertia: f64,
    changed: usize,
}

impl PassStats {
    fn zero(k: usize) -> Self {
        Self {
            sum: vec![[0.0; 3]; k],
            weight: vec![0.0; k],
            count: vec![0; k],
            inertia: 0.0,
            changed: 0,
        }
    }

    fn merge(mut self, other: PassStats) -> Self {
        for j in 0..self.sum.len() {
            for a in 0..3 {
                self.sum[j][a] += other.sum[j][a];
            }
            self.weight[j] += other.weight[j];
            self.count[j] += other.count[j];
        }
        self.inertia += other.inertia;
        self.changed += other.changed;
        self
    }
}

/// Assigns every point to its nearest centroid (parallel over chunks) and
/// returns the per-cluster sums, reduced in chunk order.
fn assign(
    pts: &[[f32; 3]],
    w: &[f64],
    centroids: &[[f64; 3]],
    assignments: &mut [u32],
) -> PassStats {
    let k = centroids.len();
    let table = CentroidTable::new(centroids);
    let partials: Vec<PassStats> = pts
        .par_chunks(CHUNK)
        .zip(w.par_chunks(CHUNK))
        .zip(assignments.par_chunks_mut(CHUNK))
        .map(|((p, w), a)| {
            let mut s = PassStats::zero(k);
            for ((&pi, &wi), ai) in p.iter().zip(w).zip(a.iter_mut()) {
                let (j, d2) = table.nearest(pi);
                if *ai != j {
                    s.changed += 1;
                    *ai = j;
                }
                let j = j as usize;
                for (acc, &x) in s.sum[j].iter_mut().zip(&pi) {
                    *acc += wi * x as f64;
                }
                s.weight[j] += wi;
                s.count[j] += 1;
                s.inertia += wi * d2 as f64;
            }
            s
        })
        .collect();
    partials
        .into_iter()
        .fold(PassStats::zero(k), PassStats::merge)
}

/// New centroids as weighted means; a cluster left without weight is moved
/// to the point farthest from its own centroid (as scikit-learn does), so no
/// cluster stays empty while distinct points remain.
fn update_centroids(
    pts: &[[f32; 3]],
    stats: &PassStats,
    assignments: &[u32],
    old: &[[f64; 3]],
) -> Vec<[f64; 3]> {
    let mut taken: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(old.len());
    for j in 0..old.len() {
        if stats.weight[j] > 0.0 {
            let s = stats.sum[j];
            let wj = stats.weight[j];
            out.push([s[0] / wj, s[1] / wj, s[2] / wj]);
            continue;
        }
        let farthest = pts
            .iter()
            .enumerate()
            .filter(|(i, _)| !taken.contains(i))
            .map(|(i, &p)| (i, squared_distance(p, old[assignments[i] as usize])))
            .fold(None::<(usize, f64)>, |best, cur| match best {
                Some(b) if b.1 >= cur.1 => Some(b),
                _ => Some(cur),
            });
        match farthest {
            Some((i, _)) => {
                taken.push(i);
                let p = pts[i];
                out.push([p[0] as f64, p[1] as f64, p[2] as f64]);
            }
            None => out.push(old[j]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::LatLon;

    fn unit(lat: f64, lon: f64) -> UnitVector {
        LatLon::new(lat, lon).unwrap().to_unit_vector()
    }

    /// Points scattered around a few centres on the globe.
    fn blobs(
        centres: &[(f64, f64)],
        per: usize,
        spread_deg: f64,
        seed: u64,
    ) -> (Vec<UnitVector>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pts = Vec::new();
        let mut truth = Vec::new();
        for (c, &(lat, lon)) in centres.iter().enumerate() {
            for _ in 0..per {
                let la = (lat + rng.gen_range(-spread_deg..spread_deg)).clamp(-90.0, 90.0);
                let mut lo = lon + rng.gen_range(-spread_deg..spread_deg);
                if lo > 180.0 {
                    lo -= 360.0;
                }
                if lo < -180.0 {
                    lo += 360.0;
                }
                pts.push(unit(la, lo));
                truth.push(c);
            }
        }
        (pts, truth)
    }

    #[test]
    fn recovers_separated_blobs() {
        let centres = [(48.0, 2.0), (-33.0, 151.0), (40.0, -74.0), (35.0, 139.0)];
        let (pts, truth) = blobs(&centres, 200, 2.0, 1);
        let km = fit(&pts, None, &KMeansConfig::new(4, 7)).unwrap();
        assert!(km.converged);
        // Same partition up to relabelling.
        for i in 0..pts.len() {
            for j in 0..pts.len() {
                assert_eq!(truth[i] == truth[j], km.assignments[i] == km.assignments[j]);
            }
        }
        assert_eq!(km.cluster_points.iter().sum::<usize>(), 800);
    }

    #[test]
    fn antimeridian_neighbours_share_a_cluster() {
        // A blob straddling +-180 (Fiji) and one far away. In degree space the
        // Fiji points would split into two far-apart halves.
        let mut pts = Vec::new();
        for i in 0..50 {
            let d = i as f64 * 0.02;
            pts.push(unit(-17.0 + d, 179.5 + d * 0.4));
            pts.push(unit(-17.0 - d, -179.5 - d * 0.4));
        }
        let (far, _) = blobs(&[(0.0, 0.0)], 100, 1.0, 3);
        pts.extend(far);
        let km = fit(&pts, None, &KMeansConfig::new(2, 0)).unwrap();
        let fiji = km.assignments[0];
        assert!(km.assignments[..100].iter().all(|&a| a == fiji));
        assert!(km.assignments[100..].iter().all(|&a| a != fiji));
    }

    #[test]
    fn deterministic_for_seed_and_independent_of_threads() {
        let centres: Vec<(f64, f64)> = (0..12)
            .map(|i| (i as f64 * 13.0 - 70.0, i as f64 * 29.0 - 170.0))
            .collect();
        let (pts, _) = blobs(&centres, 3000, 8.0, 11);
        let run = |threads: usize, seed: u64| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| fit(&pts, None, &KMeansConfig::new(10, seed)).unwrap())
        };
        let a = run(1, 5);
        let b = run(2, 5);
        let c = run(2, 5);
        assert_eq!(a.assignments, b.assignments);
        assert_eq!(a.centroids, b.centroids);
        assert_eq!(b.assignments, c.assignments);
        assert_eq!(a.inertia.to_bits(), b.inertia.to_bits());
        let d = run(2, 6);
        assert_ne!(
            a.centroids, d.centroids,
            "a different seed should start elsewhere"
        );
    }

    #[test]
    fn weights_pull_centroids() {
        // Two points; with k=1 the centroid sits near the heavy one.
        let pts = [unit(0.0, 0.0), unit(0.0, 10.0)];
        let km = fit(&pts, Some(&[9.0, 1.0]), &KMeansConfig::new(1, 0)).unwrap();
        let c = LatLon::from_vector(km.centroids[0]).unwrap();
        assert!((c.lon - 1.0).abs() < 0.05, "{c}");
        assert_eq!(km.cluster_weight, vec![10.0]);
    }

    #[test]
    fn too_many_clusters_for_distinct_positions() {
        let pts = vec![unit(10.0, 10.0); 5]
            .into_iter()
            .chain(vec![unit(-10.0, 50.0); 5])
            .collect::<Vec<_>>();
        let err = fit(&pts, None, &KMeansConfig::new(3, 0)).unwrap_err();
        assert_eq!(err, KMeansError::TooManyClusters { k: 3, distinct: 2 });
        assert!(fit(&pts, None, &KMeansConfig::new(2, 0)).is_ok());
    }

    #[test]
    fn input_errors() {
        let pts = [unit(0.0, 0.0)];
        assert_eq!(
            fit(&pts, None, &KMeansConfig::new(0, 0)).unwrap_err(),
            KMeansError::ZeroClusters
        );
        assert_eq!(
            fit(&[], None, &KMeansConfig::new(1, 0)).unwrap_err(),
            KMeansError::NoPoints
        );
        assert_eq!(
            fit(&pts, Some(&[1.0, 2.0]), &KMeansConfig::new(1, 0)).unwrap_err(),
            KMeansError::WeightCount {
                expected: 1,
                got: 2
            }
        );
        assert!(matches!(
            fit(&pts, Some(&[f64::NAN]), &KMeansConfig::new(1, 0)).unwrap_err(),
            KMeansError::BadWeight { index: 0, .. }
        ));
    }

    #[test]
    fn empty_cluster_is_relocated() {
        // Force a start where one centroid has no points: after update it must
        // take the farthest point, leaving every cluster populated.
        let (pts, _) = blobs(&[(0.0, 0.0), (0.0, 90.0), (60.0, 45.0)], 50, 1.0, 2);
        let p32: Vec<[f32; 3]> = pts
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect();
        let w = vec![1.0; p32.len()];
        let far_away = unit(-80.0, -120.0);
        let centroids = vec![pts[0], pts[60], far_away];
        let mut a = vec![u32::MAX; p32.len()];
        let stats = assign(&p32, &w, &centroids, &mut a);
        assert_eq!(stats.count[2], 0);
        let updated = update_centroids(&p32, &stats, &a, &centroids);
        let mut a2 = vec![u32::MAX; p32.len()];
        let stats2 = assign(&p32, &w, &updated, &mut a2);
        assert!(stats2.count.iter().all(|&c| c > 0), "{:?}", stats2.count);
    }

    #[test]
    fn proportional_sampling_respects_zero_scores() {
        let scores = [0.0, 2.0, 0.0, 1.0];
        assert_eq!(sample_proportional(&scores, 0.0), Some(1));
        assert_eq!(sample_proportional(&scores, 0.66), Some(1));
        assert_eq!(sample_proportional(&scores, 0.67), Some(3));
        assert_eq!(sample_proportional(&scores, 0.999_999), Some(3));
        assert_eq!(sample_proportional(&[0.0, 0.0], 0.5), None);
    }
}
