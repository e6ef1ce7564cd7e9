//! A manifest's geo classes on disk: its locations clustered, the manifest
//! written with its `geo_cluster` column, and the clustering (centroids,
//! sizes, convergence) as JSON beside it, which `pretrain`, `export` and
//! `report` read back. `geossl cluster` and `geossl demo` both write them
//! here.

use std::path::Path;

use super::manifest::{manifest_dir, Manifest};
use crate::geo::locations::{assign_geo_clusters, GeoClustering};

/// How the locations are clustered.
#[derive(Debug, Clone, Copy)]
pub struct GeoClassOptions {
    /// Number of geo clusters (the paper uses 100).
    pub k: usize,
    pub seed: u64,
    /// Weight each location by its number of images (else all alike).
    pub weighted: bool,
}

/// Clusters `manifest`'s locations, writes it with its `geo_cluster`
/// column to `out` (relative image paths rebased to `out`'s folder) and the
/// clustering to `centroids` (JSON), both atomically.
///
/// Errors: locations without a position, `k` above the number of
/// locations, or a file that cannot be written (each names the file).
pub fn write_geo_classes(
    manifest: &mut Manifest,
    options: &GeoClassOptions,
    out: &Path,
    centroids: &Path,
) -> anyhow::Result<GeoClustering> {
    let clustering = assign_geo_clusters(manifest, options.k, options.seed, options.weighted)?;
    manifest.rebase(&manifest_dir(out))?;
    manifest.write(out)?;
    crate::formats::atomic_write::write_string(
        centroids,
        &serde_json::to_string_pretty(&clustering)?,
    )?;
    Ok(clustering)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_and_its_centroids_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.csv");
        std::fs::write(
            &src,
            "path,lat,lon,location_id\na0,1,1,A\na1,1,1,A\nb,40,40,B\n",
        )
        .unwrap();
        let mut m = Manifest::read(&src).unwrap();
        // Written one folder down: the image paths must still find a0, a1, b.
        let out = dir.path().join("sub").join("out.csv");
        let centroids = dir.path().join("c.json");
        let options = GeoClassOptions {
            k: 2,
            seed: 0,
            weighted: true,
        };
        let g = write_geo_classes(&mut m, &options, &out, &centroids).unwrap();
        let back = Manifest::read(&out).unwrap();
        let clusters: Vec<Option<u32>> = back.records.iter().map(|r| r.geo_cluster).collect();
        assert_eq!(clusters[0], clusters[1], "views of A share a class");
        assert_ne!(clusters[0], clusters[2]);
        assert_eq!(
            back.resolve(&back.records[2]),
            dir.path().canonicalize().unwrap().join("b")
        );
        let read = GeoClustering::read(&centroids).unwrap();
        assert_eq!((read.k, read.locations), (g.k, 2));
    }
}
