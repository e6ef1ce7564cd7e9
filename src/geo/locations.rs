//! The geo-location classes of a clustering of locations: their centroids
//! and sizes, and the centroids file `geossl cluster` writes beside a
//! manifest. Giving a manifest's rows their classes is
//! `crate::data::geo_classes` (it knows manifests; geo does not).

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub id: u32,
    pub lat: f64,
    pub lon: f64,
    pub locations: usize,
    pub images: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeoClustering {
    pub k: usize,
    pub seed: u64,
    pub weighted_by_images: bool,
    pub locations: usize,
    pub iterations: usize,
    pub converged: bool,
    /// Weighted sum of squared chord distances (unit sphere) to the centroids.
    pub inertia: f64,
    pub clusters: Vec<ClusterSummary>,
}

impl GeoClustering {
    /// Reads a centroids file written by `geossl cluster`.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a geossl clusters file", path.display()))
    }
}

/// Where `geossl cluster` puts the centroids of manifest `path`:
/// `<stem>.clusters.json` beside it.
pub fn centroids_path(path: &std::path::Path) -> std::path::PathBuf {
    path.with_file_name(format!(
        "{}.clusters.json",
        path.file_stem().unwrap_or_default().to_string_lossy()
    ))
}
