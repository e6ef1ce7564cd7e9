//! The little WKT that geo-tagged image metadata uses: fMoW's `raw_location`
//! and the `polygon` column of the derived fMoW CSVs are `POLYGON ((lon lat,
//! ...))` footprints; `POINT (lon lat)` and `MULTIPOLYGON` also occur. We need
//! only one thing from them: the footprint's centroid as the image's position.

use super::coords::LatLon;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WktError {
    #[error("empty WKT")]
    Empty,
    #[error("unsupported WKT geometry '{0}' (expected POINT, POLYGON or MULTIPOLYGON)")]
    UnsupportedGeometry(String),
    #[error("malformed WKT: {0}")]
    Malformed(String),
    #[error("WKT vertex {0}")]
    BadCoordinate(String),
}

/// Centroid of a WKT footprint, in lon/lat order as WKT writes it.
///
/// For polygons this is the area centroid of the outer ring(s) (shoelace
/// formula in degrees, which is accurate for the few-kilometre footprints of
/// satellite scenes), falling back to the vertex mean for degenerate rings.
/// Rings that cross the antimeridian are unwrapped before averaging.
pub fn centroid(wkt: &str) -> Result<LatLon, WktError> {
    let text = wkt.trim();
    if text.is_empty() {
        return Err(WktError::Empty);
    }
    let open = text
        .find('(')
        .ok_or_else(|| WktError::Malformed(format!("no '(' in {}", abbreviate(text))))?;
    let kind = text[..open].trim().to_ascii_uppercase();
    let body = &text[open..];
    let rings: Vec<Vec<(f64, f64)>> = match kind.as_str() {
        "POINT" => vec![parse_ring(strip_parens(body, 1)?)?],
        "POLYGON" => vec![outer_ring(strip_parens(body, 1)?)?],
        "MULTIPOLYGON" => split_top_level(strip_parens(body, 1)?)?
            .into_iter()
            .map(|poly| outer_ring(strip_parens(poly, 1)?))
            .collect::<Result<_, _>>()?,
        other => return Err(WktError::UnsupportedGeometry(other.to_string())),
    };
    let reference_lon = rings[0][0].0;
    let mut weighted = (0.0, 0.0, 0.0); // (sum area*cx, sum area*cy, sum area)
    let mut plain = (0.0, 0.0, 0usize);
    for ring in &rings {
        let ring: Vec<(f64, f64)> = ring
            .iter()
            .map(|&(lon, lat)| (unwrap_lon(lon, reference_lon), lat))
            .collect();
        for &(x, y) in &ring {
            plain.0 += x;
            plain.1 += y;
            plain.2 += 1;
        }
        let (area, cx, cy) = ring_area_centroid(&ring);
        weighted.0 += area * cx;
        weighted.1 += area * cy;
        weighted.2 += area;
    }
    let (lon, lat) = if weighted.2.abs() > 1e-18 {
        (weighted.0 / weighted.2, weighted.1 / weighted.2)
    } else {
        (plain.0 / plain.2 as f64, plain.1 / plain.2 as f64)
    };
    let lon = ((lon + 180.0).rem_euclid(360.0)) - 180.0;
    LatLon::new(lat, lon).map_err(|e| WktError::BadCoordinate(e.to_string()))
}

fn abbreviate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Brings `lon` within 180 degrees of `reference` (in constant time: a
/// loop of 360-degree steps hung on a fuzzed 1e100-degree longitude).
fn unwrap_lon(lon: f64, reference: f64) -> f64 {
    reference + (lon - reference + 180.0).rem_euclid(360.0) - 180.0
}

/// Signed area and centroid of a closed or open ring (shoelace formula).
fn ring_area_centroid(ring: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = ring.len();
    let (mut a, mut cx, mut cy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x0, y0) = ring[i];
        let (x1, y1) = ring[(i + 1) % n];
        let cross = x0 * y1 - x1 * y0;
        a += cross;
        cx += (x0 + x1) * cross;
        cy += (y0 + y1) * cross;
    }
    if a.abs() < 1e-18 {
        return (0.0, 0.0, 0.0);
    }
    let area = a / 2.0;
    (area, cx / (6.0 * area), cy / (6.0 * area))
}

/// Removes `depth` levels of matching outer parentheses.
fn strip_parens(s: &str, depth: usize) -> Result<&str, WktError> {
    let mut s = s.trim();
    for _ in 0..depth {
        s = s
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| {
                WktError::Malformed(format!("unbalanced parentheses in '{}'", abbreviate(s)))
            })?
            .trim();
    }
    Ok(s)
}

/// Splits "(a), (b), (c)" at the commas that sit outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, WktError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(WktError::Malformed("unbalanced parentheses".into()));
                }
            }
            ',' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(WktError::Malformed("unbalanced parentheses".into()));
    }
    parts.push(s[start..].trim());
    if parts.iter().any(|p| p.is_empty()) {
        return Err(WktError::Malformed("empty member".into()));
    }
    Ok(parts)
}

/// The first ring of "(ring), (hole), ..." (holes do not move a footprint's
/// centroid enough to matter for geo-tagging).
fn outer_ring(s: &str) -> Result<Vec<(f64, f64)>, WktError> {
    let rings = split_top_level(s)?;
    parse_ring(strip_parens(rings[0], 1)?)
}

fn parse_ring(s: &str) -> Result<Vec<(f64, f64)>, WktError> {
    let mut out = Vec::new();
    for vertex in s.split(',') {
        let mut nums = vertex.split_whitespace();
        let (Some(x), Some(y)) = (nums.next(), nums.next()) else {
            return Err(WktError::BadCoordinate(format!(
                "'{}' needs two numbers",
                vertex.trim()
            )));
        };
        // A third (elevation) value may follow and is ignored.
        let parse = |t: &str| -> Result<f64, WktError> {
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| WktError::BadCoordinate(format!("'{t}' is not a number")))
        };
        let (lon, lat) = (parse(x)?, parse(y)?);
        // Footprints that cross the antimeridian may run a little past 180
        // degrees (e.g. 180.005); anything beyond a full turn is an error.
        if !(-360.0..=360.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
            return Err(WktError::BadCoordinate(format!(
                "'{}' is outside lon [-360, 360], lat [-90, 90]",
                abbreviate(vertex.trim())
            )));
        }
        out.push((lon, lat));
    }
    if out.is_empty() {
        return Err(WktError::Malformed("no vertices".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_coordinates_are_errors_not_hangs() {
        // Found by `cargo fuzz run fmow_metadata`: a huge longitude made the
        // antimeridian unwrapping loop for ever.
        let wkt = format!(
            "MULTIPOLYGON (((179.9 1, -179.9 0,9{}9. 2, 179.9 2, 179 0 1)))",
            "2".repeat(100)
        );
        let err = centroid(&wkt).unwrap_err().to_string();
        assert!(
            err.contains("is outside lon [-360, 360], lat [-90, 90]"),
            "{err}"
        );
        assert!(centroid("POINT (10 91)").is_err());
        // A footprint across the antimeridian may pass 180 a little.
        let c = centroid(
            "POLYGON ((179.995 -17, 180.005 -17, 180.005 -16.99, 179.995 -16.99, 179.995 -17))",
        )
        .unwrap();
        assert!((c.lon.abs() - 180.0).abs() < 1e-6, "{c:?}");
        assert_eq!(unwrap_lon(-179.0, 179.0), 181.0);
        assert_eq!(unwrap_lon(179.0, -179.0), -181.0);
        assert_eq!(unwrap_lon(10.0, 20.0), 10.0);
    }

    #[test]
    fn square_polygon_centroid() {
        let c = centroid("POLYGON ((10 20, 12 20, 12 22, 10 22, 10 20))").unwrap();
        assert!((c.lon - 11.0).abs() < 1e-12 && (c.lat - 21.0).abs() < 1e-12);
    }

    #[test]
    fn area_weighted_not_vertex_mean() {
        // An L-shape's vertex mean differs from its area centroid.
        let c = centroid("POLYGON ((0 0, 4 0, 4 1, 1 1, 1 4, 0 4, 0 0))").unwrap();
        // Area 7: 4x1 bar centroid (2,0.5) area 4, 1x3 bar centroid (0.5,2.5) area 3.
        assert!((c.lon - (4.0 * 2.0 + 3.0 * 0.5) / 7.0).abs() < 1e-12);
        assert!((c.lat - (4.0 * 0.5 + 3.0 * 2.5) / 7.0).abs() < 1e-12);
    }

    #[test]
    fn point_and_multipolygon() {
        let p = centroid("point (-73.5 40.25)").unwrap();
        assert_eq!((p.lat, p.lon), (40.25, -73.5));
        let m = centroid(
            "MULTIPOLYGON (((0 0, 2 0, 2 2, 0 2, 0 0)), ((10 0, 12 0, 12 2, 10 2, 10 0)))",
        )
        .unwrap();
        assert!((m.lon - 6.0).abs() < 1e-12 && (m.lat - 1.0).abs() < 1e-12);
    }

    #[test]
    fn polygon_across_antimeridian() {
        let c = centroid("POLYGON ((179 0, -179 0, -179 2, 179 2, 179 0))").unwrap();
        assert!((c.lon.abs() - 180.0).abs() < 1e-9, "{c}");
        assert!((c.lat - 1.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_ring_falls_back_to_vertex_mean() {
        let c = centroid("POLYGON ((1 1, 3 3, 1 1))").unwrap();
        assert!((c.lon - 5.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        assert_eq!(centroid("  "), Err(WktError::Empty));
        assert!(matches!(
            centroid("LINESTRING (0 0, 1 1)"),
            Err(WktError::UnsupportedGeometry(_))
        ));
        assert!(matches!(
            centroid("POLYGON ((0 0, 1 1)"),
            Err(WktError::Malformed(_))
        ));
        assert!(matches!(
            centroid("POLYGON ((0 0, 1 x))"),
            Err(WktError::BadCoordinate(_))
        ));
        assert!(matches!(
            centroid("POLYGON ((0 95, 1 95, 1 96, 0 95))"),
            Err(WktError::BadCoordinate(_))
        ));
        assert!(matches!(
            centroid("POLYGON ((0 0, 1))"),
            Err(WktError::BadCoordinate(_))
        ));
        assert!(centroid("POLYGON").is_err());
        assert!(centroid("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)),)").is_err());
        assert!(centroid(")(").is_err());
    }
}
