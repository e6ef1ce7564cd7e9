//! Geography: coordinates on the sphere, WKT footprints, and the k-means
//! clustering of locations that defines the geo-location pretext classes.

pub mod coords;
pub mod kmeans;
pub mod locations;
pub mod wkt;

pub use coords::{LatLon, UnitVector};
pub use kmeans::{KMeans, KMeansConfig, KMeansError};
