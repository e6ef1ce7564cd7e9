//! k-means on the unit sphere: the geo-location pretext classes.
//!
//! Points are 3-D unit vectors (see [`super::coords`]), so Euclidean k-means
//! here is chord-distance k-means on the globe: no seam at +-180 degrees and
//! no polar distortion. Initialisation is greedy k-means++ (weighted D^2
//! sampling), followed by Lloyd iterations with Hamerly's bounds until the centroids move less than `tol`
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

    /// Scores p.c - |c|^2/2 of every (padded) centroid; larger is nearer.
    #[inline]
    fn scores(&self, p: [f32; 3], out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = p[0] * self.x[j] + p[1] * self.y[j] + p[2] * self.z[j] - self.half_norm2[j];
        }
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
    let mut bounds = Bounds::new(pts.len());
    let mut iterations = 0;
    let mut converged = false;
    while iterations < config.max_iter {
        iterations += 1;
        let stats = assign_bounded(&pts, &weights, &centroids, &mut assignments, &mut bounds);
        let (updated, relocated) = update_centroids(&pts, &stats, &assignments, &centroids);
        let moves: Vec<f64> = centroids
            .iter()
            .zip(&updated)
            .map(|(a, b)| (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>())
            .collect();
        let shift: f64 = moves.iter().sum();
        centroids = updated;
        if stats.changed == 0 || shift <= tol {
            converged = true;
            break;
        }
        if relocated {
            bounds = Bounds::new(pts.len());
        } else {
            bounds.centroids_moved(&assignments, &moves);
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

/// Weighted greedy k-means++ seeding (as scikit-learn's): the first centre
/// with probability proportional to weight; for each next one, draw
/// `2 + ln k` candidates proportionally to weight x squared distance to the
/// nearest centre so far, and keep the candidate that lowers the total
/// (the potential) most. Greedy seeding starts Lloyd closer to a good
/// optimum than plain k-means++.
fn kmeans_plus_plus(
    pts: &[[f32; 3]],
    w: &[f64],
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<[f64; 3]>, KMeansError> {
    let to64 = |p: [f32; 3]| [p[0] as f64, p[1] as f64, p[2] as f64];
    let trials = 2 + (k as f64).ln() as usize;
    let mut centres = Vec::with_capacity(k);
    let first = sample_proportional(w, rng.gen::<f64>()).expect("positive total weight");
    centres.push(to64(pts[first]));
    let mut d2 = vec![f64::INFINITY; pts.len()];
    let mut chunk_sums = vec![0.0f64; pts.len().div_ceil(CHUNK)];
    update_nearest(pts, w, centres[0], &mut d2, &mut chunk_sums);
    while centres.len() < k {
        let mut candidates = Vec::with_capacity(trials);
        for _ in 0..trials {
            match sample_by(d2.len(), &chunk_sums, rng.gen::<f64>(), |i| d2[i] * w[i]) {
                Some(i) => candidates.push(to64(pts[i])),
                None => {
                    // Every point with weight sits on a chosen centre already.
                    let distinct = centres.len() + count_unreached_positions(pts, &d2);
                    return Err(KMeansError::TooManyClusters { k, distinct });
                }
            }
        }
        // Potential after adding each candidate, chunk sums combined in order.
        let partial: Vec<Vec<f64>> = pts
            .par_chunks(CHUNK)
            .zip(w.par_chunks(CHUNK))
            .zip(d2.par_chunks(CHUNK))
            .map(|((p, w), d)| {
                let mut sums = vec![0.0; candidates.len()];
                for ((&pi, &wi), &di) in p.iter().zip(w).zip(d) {
                    for (s, &c) in sums.iter_mut().zip(&candidates) {
                        *s += wi * di.min(squared_distance(pi, c));
                    }
                }
                sums
            })
            .collect();
        let potential = |t: usize| partial.iter().map(|s| s[t]).sum::<f64>();
        let best =
            (1..candidates.len()).fold(0, |b, t| if potential(t) < potential(b) { t } else { b });
        centres.push(candidates[best]);
        update_nearest(pts, w, candidates[best], &mut d2, &mut chunk_sums);
    }
    Ok(centres)
}

/// Lowers each point's squared distance to the nearest centre with centre
/// `c`, and refreshes the per-chunk sums of weight x distance.
fn update_nearest(
    pts: &[[f32; 3]],
    w: &[f64],
    c: [f64; 3],
    d2: &mut [f64],
    chunk_sums: &mut [f64],
) {
    d2.par_chunks_mut(CHUNK)
        .zip(pts.par_chunks(CHUNK))
        .zip(w.par_chunks(CHUNK))
        .zip(chunk_sums.par_iter_mut())
        .for_each(|(((d, p), w), sum)| {
            let mut s = 0.0;
            for ((di, &pi), &wi) in d.iter_mut().zip(p).zip(w) {
                *di = di.min(squared_distance(pi, c));
                s += *di * wi;
            }
            *sum = s;
        });
}

/// Index `i` with probability `value(i) / total`, given the per-chunk sums
/// of `value` over `0..len` and `u` uniform in [0, 1). Only the chunk the
/// draw falls in is scanned.
fn sample_by(
    len: usize,
    chunk_sums: &[f64],
    u: f64,
    value: impl Fn(usize) -> f64,
) -> Option<usize> {
    let total: f64 = chunk_sums.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut target = u * total;
    let mut last_positive = None;
    for (ci, &s) in chunk_sums.iter().enumerate() {
        if s <= 0.0 {
            continue;
        }
        if target >= s && ci + 1 < chunk_sums.len() {
            target -= s;
            continue;
        }
        let start = ci * CHUNK;
        for i in start..(start + CHUNK).min(len) {
            let v = value(i);
            if v > 0.0 {
                last_positive = Some(i);
                if target < v {
                    return Some(i);
                }
                target -= v;
            }
        }
        // Rounding left a sliver: take the last candidate of this chunk.
        if last_positive.is_some() {
            return last_positive;
        }
    }
    last_positive
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
    sample_by(scores.len(), &chunk_sums, u, |i| scores[i])
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

/// Hamerly's bounds, per point: an upper bound on the distance to its own
/// centroid and a lower bound on the distance to any other. A point whose
/// upper bound is below both its lower bound and half the distance from its
/// centroid to the nearest other centroid cannot change cluster, so most
/// points skip the k-way scan after the first few iterations.
struct Bounds {
    upper: Vec<f32>,
    lower: Vec<f32>,
}

/// Slack on bound comparisons so f32 rounding never skips a needed scan.
const BOUND_SLACK: f32 = 1e-5;

impl Bounds {
    /// Unknown bounds: every point gets a full scan.
    fn new(n: usize) -> Self {
        Self {
            upper: vec![f32::INFINITY; n],
            lower: vec![0.0; n],
        }
    }

    /// Loosens the bounds after centroid `j` moved by `sqrt(moves2[j])`.
    fn centroids_moved(&mut self, assignments: &[u32], moves2: &[f64]) {
        let moves: Vec<f32> = moves2.iter().map(|m| m.sqrt() as f32).collect();
        let max_move = moves.iter().copied().fold(0.0f32, f32::max);
        self.upper
            .par_chunks_mut(CHUNK)
            .zip(self.lower.par_chunks_mut(CHUNK))
            .zip(assignments.par_chunks(CHUNK))
            .for_each(|((u, l), a)| {
                for ((ui, li), &ai) in u.iter_mut().zip(l.iter_mut()).zip(a) {
                    *ui += moves[ai as usize];
                    *li = (*li - max_move).max(0.0);
                }
            });
    }
}

fn distance_f32(p: [f32; 3], c: [f32; 3]) -> f32 {
    let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

/// One Lloyd assignment with Hamerly's pruning; returns the same per-cluster
/// sums as [`assign`], reduced in chunk order.
fn assign_bounded(
    pts: &[[f32; 3]],
    w: &[f64],
    centroids: &[[f64; 3]],
    assignments: &mut [u32],
    bounds: &mut Bounds,
) -> PassStats {
    let k = centroids.len();
    let table = CentroidTable::new(centroids);
    let c32: Vec<[f32; 3]> = centroids
        .iter()
        .map(|c| [c[0] as f32, c[1] as f32, c[2] as f32])
        .collect();
    // Half the distance from each centroid to its nearest other centroid.
    let half_gap: Vec<f32> = (0..k)
        .map(|j| {
            (0..k)
                .filter(|&o| o != j)
                .map(|o| distance_f32(c32[j], c32[o]))
                .fold(f32::INFINITY, f32::min)
                / 2.0
        })
        .collect();
    let partials: Vec<PassStats> = pts
        .par_chunks(CHUNK)
        .zip(w.par_chunks(CHUNK))
        .zip(assignments.par_chunks_mut(CHUNK))
        .zip(bounds.upper.par_chunks_mut(CHUNK))
        .zip(bounds.lower.par_chunks_mut(CHUNK))
        .map(|((((p, w), a), upper), lower)| {
            let mut s = PassStats::zero(k);
            let mut scores = vec![0.0f32; table.x.len()];
            for i in 0..p.len() {
                let (pi, wi) = (p[i], w[i]);
                let own = a[i];
                let mut j = own;
                let known = own != u32::MAX;
                let limit = if known {
                    half_gap[own as usize].max(lower[i])
                } else {
                    0.0
                };
                let mut skip = known && upper[i] + BOUND_SLACK <= limit;
                if known && !skip {
                    upper[i] = distance_f32(pi, c32[own as usize]);
                    skip = upper[i] + BOUND_SLACK <= limit;
                }
                if !skip {
                    table.scores(pi, &mut scores);
                    let (best, second) = top_two(&scores[..k]);
                    j = best as u32;
                    upper[i] = distance_f32(pi, c32[best]);
                    lower[i] = second.map_or(f32::INFINITY, |o| distance_f32(pi, c32[o]));
                    if j != own {
                        s.changed += 1;
                        a[i] = j;
                    }
                }
                let ju = j as usize;
                for (acc, &x) in s.sum[ju].iter_mut().zip(&pi) {
                    *acc += wi * x as f64;
                }
                s.weight[ju] += wi;
                s.count[ju] += 1;
            }
            s
        })
        .collect();
    partials
        .into_iter()
        .fold(PassStats::zero(k), PassStats::merge)
}

/// Indices of the largest and second-largest scores (ties: lowest index).
fn top_two(scores: &[f32]) -> (usize, Option<usize>) {
    let (mut b, mut s) = (0usize, None::<usize>);
    for j in 1..scores.len() {
        if scores[j] > scores[b] {
            s = Some(b);
            b = j;
        } else if s.is_none_or(|t| scores[j] > scores[t]) {
            s = Some(j);
        }
    }
    (b, s)
}

/// New centroids as weighted means; a cluster left without weight is moved
/// to the point farthest from its own centroid (as scikit-learn does), so no
/// cluster stays empty while distinct points remain.
fn update_centroids(
    pts: &[[f32; 3]],
    stats: &PassStats,
    assignments: &[u32],
    old: &[[f64; 3]],
) -> (Vec<[f64; 3]>, bool) {
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
    let relocated = !taken.is_empty();
    (out, relocated)
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
    fn hamerly_pruning_matches_plain_lloyd() {
        let centres: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64 * 7.0 - 70.0, i as f64 * 17.0 - 170.0))
            .collect();
        let (pts, _) = blobs(&centres, 500, 12.0, 21);
        let config = KMeansConfig::new(15, 4);
        let fast = fit(&pts, None, &config).unwrap();
        // The same loop without bounds: full scan of every point every time.
        let p32: Vec<[f32; 3]> = pts
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect();
        let w = vec![1.0; p32.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut c = kmeans_plus_plus(&p32, &w, config.k, &mut rng).unwrap();
        let tol = config.tol * mean_axis_variance(&p32, &w);
        let mut a = vec![u32::MAX; p32.len()];
        let mut iterations = 0;
        loop {
            iterations += 1;
            let stats = assign(&p32, &w, &c, &mut a);
            let (updated, _) = update_centroids(&p32, &stats, &a, &c);
            let shift: f64 = c
                .iter()
                .zip(&updated)
                .map(|(x, y)| (0..3).map(|i| (x[i] - y[i]).powi(2)).sum::<f64>())
                .sum();
            c = updated;
            if stats.changed == 0 || shift <= tol || iterations == config.max_iter {
                break;
            }
        }
        assign(&p32, &w, &c, &mut a);
        assert_eq!(fast.iterations, iterations);
        assert_eq!(fast.assignments, a);
    }

    #[test]
    fn top_two_scores() {
        assert_eq!(top_two(&[0.1, 0.5, 0.3]), (1, Some(2)));
        assert_eq!(top_two(&[0.9, 0.5, 0.7]), (0, Some(2)));
        assert_eq!(top_two(&[0.4]), (0, None));
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
        let (updated, relocated) = update_centroids(&p32, &stats, &a, &centroids);
        assert!(relocated);
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
