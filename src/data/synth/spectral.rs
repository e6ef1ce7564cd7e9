//! The multispectral mode of the built-in world (`geossl synth --bands 13`
//! or `--bands 4`): Sentinel-2-like surface reflectance whose spectra
//! differ by land cover, written as UInt16 GeoTIFFs (reflectance x 10000,
//! NoData = 0, as Sentinel-2 L2A before processing baseline 04.00 added its
//! offset), georeferenced in EPSG:4326 at the place's position.
//!
//! # Bands
//! `--bands 13`: the 13 bands of the Sentinel-2 MSI (Level-1C), in ESA's
//! order and with ESA's names as band descriptions: B01 (443 nm, coastal
//! aerosol), B02 (490, blue), B03 (560, green), B04 (665, red), B05 (705),
//! B06 (740), B07 (783, the red edge), B08 (842, NIR), B8A (865, narrow
//! NIR), B09 (945, water vapour), B10 (1375, cirrus), B11 (1610, SWIR),
//! B12 (2190, SWIR). B04, B03 and B02 carry GDAL's red, green and blue
//! colour interpretation, so `--bands rgb` picks them.
//!
//! `--bands 4`: PlanetScope's 4-band analytic order, blue, green, red, NIR
//! (B02, B03, B04, B08 here), with descriptions `blue`, `green`, `red`,
//! `nir`.
//!
//! # Spectra
//! B02, B03 and B04 come from the same renderer and random draws as the
//! 8-bit RGB world (layout, season, snow, sun, haze, clouds, cars), its
//! display colours linearised (`v^2.2`, the sRGB gamma) into reflectance;
//! so a 13-band view shows what the RGB view of the same seed shows. The
//! other bands render the same scene with each material's reflectance from
//! [`ENDMEMBERS`]: typical values of the USGS Spectral Library (splib07,
//! Kokaly et al. 2017) and ESA's Sentinel-2 user handbook resampled to the
//! band centres and rounded: water dark beyond the red (NIR < 0.02),
//! green vegetation with the red edge (B04 ~0.04 -> B07 ~0.40) and high
//! NIR, dry vegetation and soils rising through the SWIR, impervious
//! surfaces flat and dark (asphalt) or flat and bright (concrete), snow
//! bright in the visible and dark in the SWIR (the NDSI contrast), clouds
//! bright everywhere including the SWIR and the cirrus band. Mixtures
//! (seasonal greenness, crop stages, snow cover) mix the endmembers as the
//! RGB world mixes its colours. Haze adds path reflectance that falls with
//! wavelength (weight `(490 nm / lambda)^1.5`).
//!
//! # NoData
//! [`NODATA_BORDER_FRACTION`] of the views (drawn per view with the
//! place's seed) lose a strip of 10-40% of the image beyond a slanted
//! edge, as at the edge of a Sentinel-2 swath: every band is 0 (NoData)
//! there.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::render::Rgb;
use super::scene::{self, Conditions, Layout, Material};
use super::world::Biome;

/// The Sentinel-2 MSI bands: name and central wavelength (nm, S2A).
pub const SENTINEL2_BANDS: [(&str, f32); 13] = [
    ("B01", 443.0),
    ("B02", 490.0),
    ("B03", 560.0),
    ("B04", 665.0),
    ("B05", 705.0),
    ("B06", 740.0),
    ("B07", 783.0),
    ("B08", 842.0),
    ("B8A", 865.0),
    ("B09", 945.0),
    ("B10", 1375.0),
    ("B11", 1610.0),
    ("B12", 2190.0),
];

/// Indices into [`SENTINEL2_BANDS`] of the 4-band output (blue, green,
/// red, NIR: PlanetScope's analytic order) and its band descriptions.
pub const FOUR_BANDS: [usize; 4] = [1, 2, 3, 7];
pub const FOUR_BAND_NAMES: [&str; 4] = ["blue", "green", "red", "nir"];

/// Fraction of views with a NoData strip.
pub const NODATA_BORDER_FRACTION: f64 = 0.2;
/// Stored value of NoData (Sentinel-2 L2A's).
pub const NODATA: u16 = 0;
/// Stored value per unit reflectance.
pub const REFLECTANCE_SCALE: f32 = 10000.0;
/// Ground sampling distance of the georeferencing, metres (Sentinel-2's
/// 10 m bands).
pub const GSD_M: f64 = 10.0;

/// Reflectance of the surface types at the 13 band centres (B01..B12 as in
/// [`SENTINEL2_BANDS`]); see the module documentation for the source.
pub struct Endmembers {
    pub water: [f32; 13],
    pub green_vegetation: [f32; 13],
    pub dry_vegetation: [f32; 13],
    pub soil: [f32; 13],
    pub sand: [f32; 13],
    pub asphalt: [f32; 13],
    pub concrete: [f32; 13],
    pub roof: [f32; 13],
    pub snow: [f32; 13],
    pub ice: [f32; 13],
    pub cloud: [f32; 13],
    /// Path reflectance of haze (scattered light, falls with wavelength).
    pub haze: [f32; 13],
}

/// See [`Endmembers`].
#[rustfmt::skip]
pub const ENDMEMBERS: Endmembers = Endmembers {
    //                  B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B10    B11   B12
    water:            [0.06, 0.055, 0.05, 0.03, 0.025, 0.015, 0.012, 0.010, 0.009, 0.005, 0.001, 0.003, 0.002],
    green_vegetation: [0.03, 0.04, 0.08, 0.04, 0.12, 0.30, 0.40, 0.45, 0.46, 0.44, 0.005, 0.22, 0.10],
    dry_vegetation:   [0.06, 0.07, 0.10, 0.14, 0.17, 0.20, 0.23, 0.25, 0.26, 0.26, 0.005, 0.34, 0.25],
    soil:             [0.08, 0.10, 0.15, 0.21, 0.24, 0.26, 0.28, 0.30, 0.31, 0.31, 0.01, 0.38, 0.32],
    sand:             [0.15, 0.19, 0.28, 0.36, 0.40, 0.42, 0.44, 0.46, 0.47, 0.47, 0.01, 0.55, 0.48],
    asphalt:          [0.06, 0.07, 0.08, 0.09, 0.10, 0.10, 0.11, 0.11, 0.11, 0.12, 0.005, 0.14, 0.13],
    concrete:         [0.20, 0.24, 0.28, 0.30, 0.31, 0.32, 0.32, 0.33, 0.33, 0.33, 0.01, 0.34, 0.30],
    roof:             [0.12, 0.14, 0.16, 0.20, 0.22, 0.23, 0.24, 0.25, 0.25, 0.25, 0.01, 0.30, 0.27],
    snow:             [0.90, 0.90, 0.89, 0.87, 0.85, 0.83, 0.80, 0.75, 0.73, 0.60, 0.02, 0.10, 0.05],
    ice:              [0.70, 0.70, 0.66, 0.58, 0.52, 0.45, 0.40, 0.32, 0.30, 0.22, 0.01, 0.04, 0.02],
    cloud:            [0.80, 0.80, 0.80, 0.79, 0.79, 0.78, 0.78, 0.77, 0.77, 0.70, 0.40, 0.55, 0.40],
    haze:             [0.35, 0.30, 0.24, 0.18, 0.16, 0.15, 0.14, 0.13, 0.13, 0.12, 0.02, 0.08, 0.05],
};

/// Which bands a spectral rendering pass produces: three indices into
/// [`SENTINEL2_BANDS`] (the renderer's canvas has three channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass(pub [usize; 3]);

/// The passes that, with the visible (RGB) rendering, make all 13 bands.
pub const PASSES: [Pass; 4] = [
    Pass([0, 4, 5]),
    Pass([6, 7, 8]),
    Pass([9, 10, 11]),
    Pass([12, 12, 12]),
];

fn mix13(a: &[f32; 13], b: &[f32; 13], t: f32) -> [f32; 13] {
    std::array::from_fn(|i| a[i] + (b[i] - a[i]) * t)
}

fn scale13(a: &[f32; 13], f: f32) -> [f32; 13] {
    a.map(|v| v * f)
}

impl Pass {
    /// The pass's three bands of a 13-band spectrum.
    pub fn pick(self, s: &[f32; 13]) -> Rgb {
        self.0.map(|i| s[i])
    }

    /// Weight of haze in each of the pass's bands, relative to the visible
    /// rendering's: `(490 nm / lambda)^1.5`.
    pub fn haze_weight(self) -> [f32; 3] {
        self.0
            .map(|i| (490.0 / SENTINEL2_BANDS[i].1).powf(1.5).min(1.0))
    }
}

/// Brightness of a display colour relative to `reference`: carries the
/// biome's and region's palettes (darker soils, lighter roofs) into the
/// other bands.
fn brightness(c: Rgb, reference: f32) -> f32 {
    ((c[0] + c[1] + c[2]) / 3.0 / reference).clamp(0.4, 2.0)
}

/// Vegetation of greenness `g` (0 dormant .. 1 green).
fn vegetation(g: f32) -> [f32; 13] {
    mix13(&ENDMEMBERS.dry_vegetation, &ENDMEMBERS.green_vegetation, g)
}

/// The spectrum of a crop parcel at `phase` of its cycle: soil, green,
/// ripe (dry), soil again (the RGB world's stages).
fn crop(phase: f32, soil: &[f32; 13]) -> [f32; 13] {
    let (green, dry) = (&ENDMEMBERS.green_vegetation, &ENDMEMBERS.dry_vegetation);
    if phase < 0.35 {
        mix13(soil, green, phase / 0.35)
    } else if phase < 0.75 {
        mix13(green, dry, (phase - 0.35) / 0.4)
    } else {
        mix13(dry, soil, (phase - 0.75) / 0.25)
    }
}

/// What the spectral pass needs of a moment: the biome's soil colour,
/// seasonal greenness, snow, autumn, season.
pub struct Surface {
    pub soil_colour: Rgb,
    pub greenness: f32,
    pub snow: f32,
    pub autumn: bool,
    pub season: f32,
    pub biome: Biome,
}

impl Surface {
    fn soil(&self) -> [f32; 13] {
        scale13(&ENDMEMBERS.soil, brightness(self.soil_colour, 0.5))
    }

    /// Open ground between the objects (the RGB world's mix of soil and
    /// vegetation), under its snow.
    pub fn ground(&self) -> [f32; 13] {
        let ground = mix13(&self.soil(), &vegetation(self.greenness), 0.55);
        mix13(&ground, &ENDMEMBERS.snow, self.snow)
    }

    /// A bare construction site.
    pub fn construction(&self) -> [f32; 13] {
        mix13(&self.soil(), &ENDMEMBERS.sand, 0.5)
    }

    /// The reflectance of material `m` (textured by `tex`, as the RGB
    /// world's colours are).
    pub fn material(&self, m: Material, layout: &Layout, x: f32, y: f32, tex: f32) -> [f32; 13] {
        let e = &ENDMEMBERS;
        let snowy = |s: [f32; 13], f: f32| mix13(&s, &e.snow, self.snow * f);
        let base = match m {
            Material::Grass => snowy(vegetation(self.greenness), 1.0),
            Material::Crop(i) => {
                let c = layout.crops[i];
                let phase = ((self.season + 1.0) / 2.0 + c.phase).clamp(0.0, 1.0);
                let (s, co) = c.furrow_angle.sin_cos();
                let furrow = ((x * co + y * s) * 260.0).sin() * 0.05;
                snowy(scale13(&crop(phase, &self.soil()), 1.0 + furrow), 1.0)
            }
            Material::Tree => {
                let g = self.greenness.max(if self.biome == Biome::Boreal {
                    0.8
                } else {
                    0.0
                });
                let mut t = mix13(
                    &scale13(&e.dry_vegetation, 0.7),
                    &scale13(&e.green_vegetation, 0.8),
                    g,
                );
                if self.autumn && matches!(self.biome, Biome::Temperate | Biome::Continental) {
                    t = mix13(&t, &e.dry_vegetation, 0.6);
                }
                snowy(t, 0.45)
            }
            Material::Water if self.snow > 0.5 => e.ice,
            Material::Water => e.water,
            Material::Sand => snowy(mix13(&self.soil(), &e.sand, 0.5), 1.0),
            Material::Soil => snowy(self.soil(), 0.8),
            Material::Asphalt => snowy(e.asphalt, 0.15),
            Material::Concrete => snowy(e.concrete, 0.3),
            Material::Roof(i) => snowy(scale13(&e.roof, brightness(layout.roofs[i], 0.5)), 0.8),
            Material::Track => mix13(&self.soil(), &e.asphalt, 0.5),
            Material::Marking => scale13(&e.concrete, 2.5),
        };
        scale13(&base, 1.0 + tex)
    }
}

/// A flat spectrum of a display colour's linearised mean brightness (cars:
/// paint is roughly flat beyond the visible).
pub fn flat(colour: Rgb) -> [f32; 13] {
    let v = ((colour[0] + colour[1] + colour[2]) / 3.0).powf(2.2);
    [v; 13]
}

/// Display value (the RGB world's 0..1 colour) to reflectance: the sRGB
/// gamma, `v^2.2`.
pub fn linearise(v: f32) -> f32 {
    v.max(0.0).powf(2.2)
}

/// Reflectance to the stored UInt16 value: `round(r x 10000)`, at least 1
/// (0 is NoData).
pub fn to_stored(r: f32) -> u16 {
    (r * REFLECTANCE_SCALE).round().clamp(1.0, 65535.0) as u16
}

/// Renders bands `bands` (indices into [`SENTINEL2_BANDS`]) of one view as
/// reflectance planes (`size` x `size`, row-major, one per band, in the
/// order asked). B02-B04 come from the visible rendering (linearised), the
/// others from the spectral passes that contain them, each with a clone of
/// `rng` as it was before the visible rendering; `rng` ends where the RGB
/// world's would.
pub fn render_bands<R: Rng + Clone>(
    layout: &Layout,
    biome: Biome,
    c: &Conditions,
    size: usize,
    rng: &mut R,
    bands: &[usize],
) -> Vec<Vec<f32>> {
    let before = rng.clone();
    let visible = scene::render_canvas(layout, biome, c, size, rng, None);
    let mut planes: Vec<Option<Vec<f32>>> = vec![None; bands.len()];
    for (slot, &b) in bands.iter().enumerate() {
        // B02, B03, B04 are the canvas' blue, green and red.
        if let Some(ch) = [3usize, 2, 1].iter().position(|&v| v == b) {
            let plane = visible.pixels.iter().map(|p| linearise(p[ch])).collect();
            planes[slot] = Some(plane);
        }
    }
    for pass in PASSES {
        if !bands
            .iter()
            .any(|b| pass.0.contains(b) && ![1, 2, 3].contains(b))
        {
            continue;
        }
        let mut r = before.clone();
        let canvas = scene::render_canvas(layout, biome, c, size, &mut r, Some(pass));
        for (slot, &b) in bands.iter().enumerate() {
            if let (None, Some(ch)) = (&planes[slot], pass.0.iter().position(|&v| v == b)) {
                planes[slot] = Some(canvas.pixels.iter().map(|p| p[ch].max(0.0)).collect());
            }
        }
    }
    planes
        .into_iter()
        .map(|p| p.expect("every Sentinel-2 band is in the visible rendering or a pass"))
        .collect()
}

/// The NoData strip of a view, if it has one ([`NODATA_BORDER_FRACTION`]
/// of views, drawn from `seed`): a `size` x `size` mask, true where the
/// pixel is NoData (beyond a slanted edge 10-40% into the image from a
/// random side).
pub fn nodata_strip(size: usize, seed: u64) -> Option<Vec<bool>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if !rng.gen_bool(NODATA_BORDER_FRACTION) {
        return None;
    }
    let depth = rng.gen_range(0.1f32..0.4);
    let slant = rng.gen_range(-0.2f32..0.2);
    let side = rng.gen_range(0..4);
    let s = size as f32;
    let mask = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 + 0.5, (i / size) as f32 + 0.5);
            // Distance into the image from the chosen side, and position along it.
            let (into, along) = match side {
                0 => (x, y),
                1 => (s - x, y),
                2 => (y, x),
                _ => (s - y, x),
            };
            into / s < depth + slant * (along / s - 0.5)
        })
        .collect();
    Some(mask)
}
