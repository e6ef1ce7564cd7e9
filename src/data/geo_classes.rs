//! Geo-location classes for a manifest: cluster its locations with
//! [`crate::geo::kmeans`] and give every view of a location its cluster.
//!
//! We cluster LOCATIONS, weighted by their number of images (views). The
//! paper clusters the images' coordinates; all views of a place share one
//! coordinate, so clustering images equals clustering locations weighted by
//! view count, and that is what the weights reproduce, on N_locations points
//! instead of N_images, and with the guarantee that views of one place share
//! a cluster. Unweighted clustering (`weighted = false`) treats every place
//! alike instead (useful when a few places have very many views).
//!
//! [`write_geo_classes`] puts them on disk: the manifest with its
//! `geo_cluster` column and the clustering (centroids, sizes, convergence)
//! as JSON beside it, which `pretrain`, `export` and `report` read back;
//! `geossl cluster` and `geossl demo` both write them there.

use std::path::Path;

use super::manifest::manifest_dir;
use super::{LocationIndex, Manifest};
use crate::geo::kmeans::{self, KMeansConfig};
use crate::geo::locations::{ClusterSummary, GeoClustering};
use crate::geo::LatLon;

/// Ids of the locations none of whose views has a position, in manifest
/// order: [`assign_geo_clusters`] refuses a manifest with any.
pub fn unpositioned_locations(manifest: &Manifest) -> Vec<String> {
    LocationIndex::build(manifest)
        .locations
        .into_iter()
        .filter(|l| {
            l.views
                .iter()
                .all(|&r| manifest.records[r].position.is_none())
        })
        .map(|l| l.id)
        .collect()
}

/// Removes the rows of [`unpositioned_locations`] (a location with one
/// positioned view keeps all its views: its position is theirs); returns
/// how many rows went.
pub fn drop_unpositioned(manifest: &mut Manifest) -> usize {
    let index = LocationIndex::build(manifest);
    let mut keep = vec![true; manifest.records.len()];
    for l in &index.locations {
        if l.views
            .iter()
            .all(|&r| manifest.records[r].position.is_none())
        {
            for &r in &l.views {
                keep[r] = false;
            }
        }
    }
    let before = manifest.records.len();
    let mut keep = keep.into_iter();
    manifest.records.retain(|_| keep.next().unwrap_or(true));
    before - manifest.records.len()
}

/// Clusters the manifest's locations and writes `geo_cluster` into every row.
pub fn assign_geo_clusters(
    manifest: &mut Manifest,
    k: usize,
    seed: u64,
    weighted: bool,
) -> anyhow::Result<GeoClustering> {
    let index = LocationIndex::build(manifest);
    let mut points = Vec::with_capacity(index.len());
    let mut weights = Vec::with_capacity(index.len());
    let mut unpositioned = Vec::new();
    for loc in &index.locations {
        let positions = loc
            .views
            .iter()
            .filter_map(|&r| manifest.records[r].position);
        match LatLon::spherical_mean(positions) {
            Some(p) => {
                points.push(p.to_unit_vector());
                weights.push(if weighted {
                    loc.views.len() as f64
                } else {
                    1.0
                });
            }
            None => unpositioned.push(loc.id.clone()),
        }
    }
    if !unpositioned.is_empty() {
        let shown: Vec<&str> = unpositioned.iter().take(5).map(String::as_str).collect();
        anyhow::bail!(
            "{}: {} of {} locations have no lat/lon (e.g. {}); geo clustering needs a position for every location",
            manifest.source.display(),
            unpositioned.len(),
            index.len(),
            shown.join(", ")
        );
    }
    if k > index.len() {
        anyhow::bail!(
            "{}: k = {k} is larger than the number of distinct locations ({}); choose k <= {}",
            manifest.source.display(),
            index.len(),
            index.len()
        );
    }
    let km = kmeans::fit(&points, Some(&weights), &KMeansConfig::new(k, seed))
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest.source.display()))?;
    for (loc, &cluster) in index.locations.iter().zip(&km.assignments) {
        for &row in &loc.views {
            manifest.records[row].geo_cluster = Some(cluster);
        }
    }
    let clusters = km
        .centroids
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let p = LatLon::from_vector(*c).unwrap_or(LatLon { lat: 0.0, lon: 0.0 });
            ClusterSummary {
                id: j as u32,
                lat: p.lat,
                lon: p.lon,
                locations: km.cluster_points[j],
                images: if weighted { km.cluster_weight[j] } else { 0.0 },
            }
        })
        .collect::<Vec<_>>();
    let mut clusters = clusters;
    if !weighted {
        // Images per cluster still helps a reader; count them from the rows.
        for r in &manifest.records {
            if let Some(c) = r.geo_cluster {
                clusters[c as usize].images += 1.0;
            }
        }
    }
    Ok(GeoClustering {
        k,
        seed,
        weighted_by_images: weighted,
        locations: index.len(),
        iterations: km.iterations,
        converged: km.converged,
        inertia: km.inertia,
        clusters,
    })
}

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
    use std::path::Path;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text.as_bytes(), "m.csv", Path::new(".")).unwrap()
    }

    #[test]
    fn views_share_their_location_cluster() {
        // Location A's two views have slightly different positions (as fMoW
        // footprints do); they must still share one cluster.
        let mut m = manifest(
            "path,lat,lon,location_id\n\
             a0,-17.0,179.9,A\na1,-17.01,-179.95,A\n\
             b0,-17.2,179.7,B\n\
             c0,48.8,2.3,C\nc1,48.8,2.3,C\n\
             d0,48.9,2.4,D\n",
        );
        let g = assign_geo_clusters(&mut m, 2, 0, true).unwrap();
        let c: Vec<u32> = m.records.iter().map(|r| r.geo_cluster.unwrap()).collect();
        assert_eq!(c[0], c[1]);
        assert_eq!(c[0], c[2], "both sides of the antimeridian together");
        assert_eq!(c[3], c[4]);
        assert_eq!(c[3], c[5]);
        assert_ne!(c[0], c[3]);
        assert_eq!(g.locations, 4);
        let images: f64 = g.clusters.iter().map(|c| c.images).sum();
        assert_eq!(images, 6.0);
        let pacific = &g.clusters[c[0] as usize];
        assert!(
            pacific.lon.abs() > 179.0,
            "centroid near the antimeridian: {}",
            pacific.lon
        );
    }

    #[test]
    fn refuses_k_above_locations_and_missing_positions() {
        let mut m = manifest("path,lat,lon,location_id\na,1,1,A\nb,1,1,A\nc,2,2,C\n");
        let err = assign_geo_clusters(&mut m, 3, 0, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            ": k = 3 is larger than the number of distinct locations (2); choose k <= 2"
        );
        let mut m = manifest("path,lat,lon\na,1,1\nb,,\n");
        let err = assign_geo_clusters(&mut m, 1, 0, true)
            .unwrap_err()
            .to_string();
        assert_eq!(err, ": 1 of 2 locations have no lat/lon (e.g. b); geo clustering needs a position for every location");
    }

    #[test]
    fn unpositioned_locations_can_be_left_out() {
        // B has no position at all; C has one positioned view of two.
        let mut m = manifest(
            "path,lat,lon,location_id
             a,1,1,A
b0,,,B
c0,,,C
c1,2,2,C
b1,,,B
d,3,3,D
",
        );
        assert_eq!(unpositioned_locations(&m), ["B"]);
        assert_eq!(drop_unpositioned(&mut m), 2);
        let paths: Vec<&str> = m.records.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["a", "c0", "c1", "d"]);
        assert!(unpositioned_locations(&m).is_empty());
        let g = assign_geo_clusters(&mut m, 2, 0, true).unwrap();
        assert_eq!(g.locations, 3);
        assert_eq!(m.records[1].geo_cluster, m.records[2].geo_cluster);
    }

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
