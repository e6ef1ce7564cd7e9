//! Latitude/longitude and their embedding on the unit sphere.
//!
//! Clustering and averaging happen on 3-D unit vectors rather than on raw
//! degrees: Euclidean distance between unit vectors (the chord) is a monotone
//! function of the great-circle distance, so there is no seam at +-180 degrees
//! and no shrinking of longitude degrees towards the poles.

use std::fmt;

/// A WGS84 position in degrees, validated: latitude in [-90, 90], longitude
/// in [-180, 180], both finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// Why a coordinate pair was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoordError {
    #[error("latitude {0} is outside [-90, 90]")]
    LatitudeOutOfRange(f64),
    #[error("longitude {0} is outside [-180, 180]")]
    LongitudeOutOfRange(f64),
}

/// A point on the unit sphere: x towards (0N, 0E), y towards (0N, 90E), z to
/// the north pole.
pub type UnitVector = [f64; 3];

impl LatLon {
    pub fn new(lat: f64, lon: f64) -> Result<Self, CoordError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(CoordError::LatitudeOutOfRange(lat));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(CoordError::LongitudeOutOfRange(lon));
        }
        Ok(Self { lat, lon })
    }

    pub fn to_unit_vector(self) -> UnitVector {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }

    /// The position a (not necessarily unit, non-zero) 3-D vector points at.
    /// Returns `None` for the zero vector, which points nowhere.
    pub fn from_vector(v: [f64; 3]) -> Option<Self> {
        let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if norm.is_nan() || norm <= 1e-12 {
            return None;
        }
        let lat = (v[2] / norm).clamp(-1.0, 1.0).asin().to_degrees();
        let lon = v[1].atan2(v[0]).to_degrees();
        Some(Self { lat, lon })
    }

    /// Great-circle distance in kilometres (mean Earth radius 6371.0088 km).
    pub fn haversine_km(self, other: LatLon) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0088;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    /// Mean position of several positions, taken on the sphere (the
    /// normalised mean of their unit vectors). `None` when empty or when the
    /// positions cancel out (e.g. two antipodes).
    pub fn spherical_mean(points: impl IntoIterator<Item = LatLon>) -> Option<LatLon> {
        let mut sum = [0.0; 3];
        for p in points {
            let v = p.to_unit_vector();
            for (s, x) in sum.iter_mut().zip(v) {
                *s += x;
            }
        }
        LatLon::from_vector(sum)
    }
}

impl fmt::Display for LatLon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:.5}, {:.5})", self.lat, self.lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ranges() {
        assert!(LatLon::new(90.0, 180.0).is_ok());
        assert!(LatLon::new(-90.0, -180.0).is_ok());
        assert_eq!(
            LatLon::new(90.5, 0.0),
            Err(CoordError::LatitudeOutOfRange(90.5))
        );
        assert_eq!(
            LatLon::new(0.0, -180.1),
            Err(CoordError::LongitudeOutOfRange(-180.1))
        );
        assert!(LatLon::new(f64::NAN, 0.0).is_err());
        assert!(LatLon::new(0.0, f64::INFINITY).is_err());
    }

    #[test]
    fn unit_vector_round_trips() {
        for &(lat, lon) in &[(0.0, 0.0), (45.0, 90.0), (-33.9, 151.2), (89.0, -179.5)] {
            let p = LatLon::new(lat, lon).unwrap();
            let v = p.to_unit_vector();
            let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            assert!((norm - 1.0).abs() < 1e-12);
            let back = LatLon::from_vector(v).unwrap();
            assert!((back.lat - lat).abs() < 1e-9 && (back.lon - lon).abs() < 1e-9);
        }
        assert_eq!(LatLon::from_vector([0.0, 0.0, 0.0]), None);
    }

    #[test]
    fn haversine_known_distance() {
        // Paris to London is about 344 km.
        let paris = LatLon::new(48.8566, 2.3522).unwrap();
        let london = LatLon::new(51.5074, -0.1278).unwrap();
        let d = paris.haversine_km(london);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        // Across the antimeridian: 1 degree of longitude on the equator.
        let a = LatLon::new(0.0, 179.5).unwrap();
        let b = LatLon::new(0.0, -179.5).unwrap();
        assert!((a.haversine_km(b) - 111.2).abs() < 0.5);
    }

    #[test]
    fn spherical_mean_across_antimeridian() {
        let m = LatLon::spherical_mean([
            LatLon::new(10.0, 179.0).unwrap(),
            LatLon::new(10.0, -179.0).unwrap(),
        ])
        .unwrap();
        // The naive degree mean would be longitude 0, on the other side of
        // the planet.
        assert!((m.lon.abs() - 180.0).abs() < 1e-6, "{m}");
        assert!((m.lat - 10.0).abs() < 0.01);
    }
}
