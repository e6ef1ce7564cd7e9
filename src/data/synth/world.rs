//! The synthetic world's geography: real cities (a shipped table of 120
//! places on every continent, including both sides of the antimeridian in
//! the Pacific), their climate zone (biome), and which land uses are common
//! in which region.

use std::sync::OnceLock;

use rand::Rng;

/// Climate zones: they set palettes and how seasons look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Biome {
    /// Green all year, wet/dry season.
    Tropical,
    /// Sand and rock, little vegetation.
    Arid,
    /// Green summers, bare winters, rare snow.
    Temperate,
    /// Hot summers, snowy winters.
    Continental,
    /// Conifers, long snowy winters.
    Boreal,
    /// Green winters, dry golden summers.
    Mediterranean,
}

impl Biome {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tropical" => Biome::Tropical,
            "arid" => Biome::Arid,
            "temperate" => Biome::Temperate,
            "continental" => Biome::Continental,
            "boreal" => Biome::Boreal,
            "mediterranean" => Biome::Mediterranean,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Biome::Tropical => "tropical",
            Biome::Arid => "arid",
            Biome::Temperate => "temperate",
            Biome::Continental => "continental",
            Biome::Boreal => "boreal",
            Biome::Mediterranean => "mediterranean",
        }
    }
}

/// Land-use classes, each with a distinct spatial layout (see `scene`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LandUse {
    Residential,
    Industrial,
    Farmland,
    Airport,
    Lake,
    Highway,
    Forest,
    Stadium,
}

pub const LAND_USES: [LandUse; 8] = [
    LandUse::Residential,
    LandUse::Industrial,
    LandUse::Farmland,
    LandUse::Airport,
    LandUse::Lake,
    LandUse::Highway,
    LandUse::Forest,
    LandUse::Stadium,
];

impl LandUse {
    pub fn name(self) -> &'static str {
        match self {
            LandUse::Residential => "residential",
            LandUse::Industrial => "industrial",
            LandUse::Farmland => "farmland",
            LandUse::Airport => "airport",
            LandUse::Lake => "lake",
            LandUse::Highway => "highway",
            LandUse::Forest => "forest",
            LandUse::Stadium => "stadium",
        }
    }
}

#[derive(Debug, Clone)]
pub struct City {
    pub name: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub region: String,
    pub biome: Biome,
}

/// The shipped city table, parsed once.
pub fn cities() -> &'static [City] {
    static CITIES: OnceLock<Vec<City>> = OnceLock::new();
    CITIES.get_or_init(|| {
        let mut r = csv::Reader::from_reader(include_str!("cities.csv").as_bytes());
        r.records()
            .map(|rec| {
                let rec = rec.expect("shipped cities.csv is valid");
                City {
                    name: rec[0].to_string(),
                    country: rec[1].to_string(),
                    lat: rec[2].parse().expect("lat"),
                    lon: rec[3].parse().expect("lon"),
                    region: rec[4].to_string(),
                    biome: Biome::parse(&rec[5]).expect("known biome"),
                }
            })
            .collect()
    })
}

/// Relative frequency of each land use (in [`LAND_USES`] order) by region:
/// farmland and forest dominate some continents, industry and highways
/// others, as in fMoW's class-by-country imbalance.
fn land_use_weights(region: &str, biome: Biome) -> [f64; 8] {
    let mut w = match region {
        "africa" => [3.0, 1.0, 3.0, 1.0, 1.0, 1.0, 2.0, 1.0],
        "europe" => [3.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 2.0],
        "asia" => [4.0, 3.0, 3.0, 1.0, 1.0, 2.0, 1.0, 1.0],
        "middle_east" => [3.0, 3.0, 1.0, 2.0, 0.3, 2.0, 0.2, 1.0],
        "north_america" => [3.0, 2.0, 3.0, 2.0, 2.0, 3.0, 2.0, 2.0],
        "south_america" => [3.0, 1.0, 2.0, 1.0, 1.0, 1.0, 3.0, 2.0],
        _ => [2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 2.0],
    };
    // Deserts have little forest or open water.
    if biome == Biome::Arid {
        w[4] *= 0.3;
        w[6] *= 0.2;
    }
    w
}

/// Draws a land use for a place in `city`.
pub fn draw_land_use<R: Rng>(city: &City, rng: &mut R) -> LandUse {
    let w = land_use_weights(&city.region, city.biome);
    let total: f64 = w.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, wi) in w.iter().enumerate() {
        if u < *wi {
            return LAND_USES[i];
        }
        u -= wi;
    }
    LAND_USES[LAND_USES.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn city_table_is_sane() {
        let c = cities();
        assert!(c.len() >= 100);
        assert!(c
            .iter()
            .all(|c| (-90.0..=90.0).contains(&c.lat) && (-180.0..=180.0).contains(&c.lon)));
        // Both sides of the antimeridian are populated.
        assert!(c.iter().any(|c| c.lon > 175.0) && c.iter().any(|c| c.lon < -170.0));
        for region in [
            "africa",
            "europe",
            "asia",
            "north_america",
            "south_america",
            "oceania",
        ] {
            assert!(
                c.iter().filter(|c| c.region == region).count() >= 5,
                "{region}"
            );
        }
    }
}
