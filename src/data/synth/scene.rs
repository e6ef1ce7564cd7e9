//! Scenes: what a place IS (its layout, fixed for the location) and how it
//! LOOKS at a given moment (season, sun, snow, haze, clouds, sensor, small
//! misregistration, construction progress, parked cars and planes).

use std::f32::consts::PI;

use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::render::{mix, scale, value_noise, Canvas, Rgb, Shape, ViewTransform};
use super::spectral::{flat, Pass, Surface, ENDMEMBERS};
use super::world::{Biome, LandUse};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Material {
    Grass,
    /// A field parcel: index into [`Layout::crops`].
    Crop(usize),
    Tree,
    Water,
    Sand,
    Soil,
    Asphalt,
    Concrete,
    /// Index into [`Layout::roofs`].
    Roof(usize),
    Track,
    Marking,
}

#[derive(Debug, Clone)]
pub struct Element {
    pub shape: Shape,
    pub material: Material,
    /// Height in shadow units; 0 for flat things.
    pub height: f32,
    /// Construction: the element exists from this time on (years since
    /// 1970); before, its footprint is a bare construction site.
    pub appears: Option<f64>,
}

/// A crop type: colour at peak growth and where in the year it peaks.
#[derive(Debug, Clone, Copy)]
pub struct Crop {
    pub green: Rgb,
    pub ripe: Rgb,
    /// Fraction of a year by which this crop's cycle is offset.
    pub phase: f32,
    pub furrow_angle: f32,
}

/// What stays the same at a place across all of its views.
#[derive(Debug, Clone)]
pub struct Layout {
    pub elements: Vec<Element>,
    pub roofs: Vec<Rgb>,
    pub crops: Vec<Crop>,
    /// Where cars may park (rectangles) and planes may stand.
    pub parking: Vec<Shape>,
    pub aprons: Vec<(f32, f32, f32)>,
    pub texture_seed: u32,
}

fn el(shape: Shape, material: Material, height: f32) -> Element {
    Element {
        shape,
        material,
        height,
        appears: None,
    }
}

/// Maps local coordinates (centred, rotated by `angle`) to scene coordinates.
struct Frame {
    cos: f32,
    sin: f32,
    angle: f32,
}

impl Frame {
    fn new(angle: f32) -> Self {
        Self {
            cos: angle.cos(),
            sin: angle.sin(),
            angle,
        }
    }
    fn at(&self, u: f32, v: f32) -> (f32, f32) {
        (
            0.5 + u * self.cos - v * self.sin,
            0.5 + u * self.sin + v * self.cos,
        )
    }
    fn rect(&self, u: f32, v: f32, w: f32, h: f32) -> Shape {
        let (x, y) = self.at(u, v);
        Shape::rect(x, y, w, h, self.angle)
    }
    fn segment(&self, u0: f32, v0: f32, u1: f32, v1: f32, width: f32) -> Shape {
        let (x0, y0) = self.at(u0, v0);
        let (x1, y1) = self.at(u1, v1);
        Shape::segment(x0, y0, x1, y1, width)
    }
}

const TERRACOTTA: Rgb = [0.62, 0.27, 0.20];
const GREY_METAL: Rgb = [0.55, 0.55, 0.56];
const DARK_SHINGLE: Rgb = [0.30, 0.30, 0.33];
const LIGHT_CONCRETE: Rgb = [0.78, 0.78, 0.75];
const BLUE_METAL: Rgb = [0.35, 0.42, 0.55];
const BROWN: Rgb = [0.50, 0.36, 0.26];
const WHITE: Rgb = [0.85, 0.85, 0.86];
const RUSTED_METAL: Rgb = [0.55, 0.38, 0.28];

/// Roofing materials common in a region, most common first: building
/// styles are among the strongest regional cues in real imagery (clay
/// tiles around the Mediterranean and in Latin America, corrugated metal in
/// much of Africa and South Asia, flat light concrete in the Middle East,
/// asphalt shingles in North America, blue and grey metal in East Asia).
fn roof_palette(region: &str) -> &'static [Rgb] {
    match region {
        "europe" => &[TERRACOTTA, DARK_SHINGLE, GREY_METAL],
        "africa" => &[RUSTED_METAL, GREY_METAL, TERRACOTTA],
        "middle_east" => &[LIGHT_CONCRETE, WHITE, BROWN],
        "asia" => &[BLUE_METAL, GREY_METAL, RUSTED_METAL],
        "north_america" => &[DARK_SHINGLE, BROWN, LIGHT_CONCRETE],
        "south_america" => &[TERRACOTTA, BROWN, GREY_METAL],
        _ => &[WHITE, GREY_METAL, TERRACOTTA],
    }
}

/// Builds the layout of a place of the given land use. `time_span` (years
/// since 1970, first and last view) places construction events.
pub fn layout<R: Rng>(
    land_use: LandUse,
    region: &str,
    time_span: (f64, f64),
    rng: &mut R,
) -> Layout {
    let palette = roof_palette(region);
    let f = Frame::new(rng.gen_range(0.0..PI));
    let mut l = Layout {
        elements: Vec::new(),
        // Mostly the region's main material, sometimes its others.
        roofs: (0..3)
            .map(|_| palette[[0, 0, 0, 1, 2][rng.gen_range(0..5)]])
            .collect(),
        crops: Vec::new(),
        parking: Vec::new(),
        aprons: Vec::new(),
        texture_seed: rng.gen(),
    };
    let construction = |e: &mut Element, rng: &mut R, p: f64| {
        if rng.gen_bool(p) {
            e.appears = Some(rng.gen_range(time_span.0 - 1.0..time_span.1 + 1.0));
        }
    };
    match land_use {
        LandUse::Residential => {
            let spacing = rng.gen_range(0.24..0.32);
            let offset = rng.gen_range(0.0..spacing);
            let roads: Vec<f32> = (-4..=4)
                .map(|i| i as f32 * spacing + offset - spacing / 2.0)
                .collect();
            for &r in &roads {
                l.elements.push(el(
                    f.segment(r, -0.9, r, 0.9, 0.028),
                    Material::Asphalt,
                    0.0,
                ));
                l.elements.push(el(
                    f.segment(-0.9, r, 0.9, r, 0.028),
                    Material::Asphalt,
                    0.0,
                ));
            }
            let house = rng.gen_range(0.05..0.075);
            for w in roads.windows(2) {
                for v in roads.windows(2) {
                    let (u0, v0) = (w[0] + 0.03, v[0] + 0.03);
                    let cell = (spacing - 0.06) / 2.0;
                    for (a, b) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let cu = u0 + cell * (a as f32 + 0.5);
                        let cv = v0 + cell * (b as f32 + 0.5);
                        if cu.abs() > 0.8 || cv.abs() > 0.8 {
                            continue;
                        }
                        let roof = Material::Roof(rng.gen_range(0..l.roofs.len()));
                        let mut e = el(
                            f.rect(cu, cv, house, house * rng.gen_range(0.8..1.3)),
                            roof,
                            1.0,
                        );
                        construction(&mut e, rng, 0.25);
                        l.elements.push(e);
                    }
                }
            }
        }
        LandUse::Industrial => {
            l.elements.push(el(
                f.segment(-0.9, 0.38, 0.9, 0.38, 0.05),
                Material::Asphalt,
                0.0,
            ));
            let mut u = -0.42;
            while u < 0.35 {
                let w = rng.gen_range(0.16..0.3);
                let h = rng.gen_range(0.22..0.45);
                let roof = Material::Roof(rng.gen_range(0..l.roofs.len()));
                let mut e = el(f.rect(u + w / 2.0, -0.05, w, h), roof, 2.2);
                construction(&mut e, rng, 0.3);
                l.elements.push(e);
                u += w + rng.gen_range(0.04..0.1);
            }
            let lot = f.rect(0.0, 0.26, 0.8, 0.12);
            l.elements.push(el(lot, Material::Asphalt, 0.0));
            l.parking.push(lot);
        }
        LandUse::Farmland => {
            let mut u = -0.85;
            while u < 0.85 {
                let w = rng.gen_range(0.15..0.4);
                let split = rng.gen_range(-0.4..0.4);
                for (v0, v1) in [(-0.85, split), (split, 0.85)] {
                    let crop = Crop {
                        green: mix([0.18, 0.42, 0.12], [0.35, 0.5, 0.15], rng.gen()),
                        ripe: mix([0.72, 0.62, 0.3], [0.55, 0.42, 0.25], rng.gen()),
                        phase: rng.gen_range(-0.2..0.2),
                        furrow_angle: f.angle + if rng.gen_bool(0.5) { 0.0 } else { PI / 2.0 },
                    };
                    l.crops.push(crop);
                    let shape = f.rect(u + w / 2.0, (v0 + v1) / 2.0, w - 0.012, v1 - v0 - 0.012);
                    l.elements
                        .push(el(shape, Material::Crop(l.crops.len() - 1), 0.0));
                }
                u += w;
            }
            l.elements.push(el(
                f.segment(-0.9, -0.02, 0.9, 0.03, 0.018),
                Material::Soil,
                0.0,
            ));
            let mut farm = el(
                f.rect(rng.gen_range(-0.3..0.3), 0.0, 0.07, 0.05),
                Material::Roof(0),
                1.0,
            );
            farm.appears = None;
            l.elements.push(farm);
        }
        LandUse::Airport => {
            l.elements
                .push(el(f.rect(0.0, 0.0, 1.8, 0.08), Material::Asphalt, 0.0));
            for i in -8..=8 {
                l.elements.push(el(
                    f.rect(i as f32 * 0.1, 0.0, 0.045, 0.006),
                    Material::Marking,
                    0.0,
                ));
            }
            l.elements
                .push(el(f.rect(0.0, 0.16, 1.8, 0.03), Material::Asphalt, 0.0));
            for u in [-0.5f32, 0.0, 0.5] {
                l.elements.push(el(
                    f.segment(u, 0.0, u, 0.16, 0.025),
                    Material::Asphalt,
                    0.0,
                ));
            }
            l.elements
                .push(el(f.rect(0.0, 0.32, 0.9, 0.2), Material::Concrete, 0.0));
            l.elements
                .push(el(f.rect(0.0, 0.5, 0.7, 0.1), Material::Roof(1), 2.0));
            for i in 0..4 {
                let (x, y) = f.at(-0.33 + i as f32 * 0.22, 0.32);
                l.aprons.push((x, y, f.angle));
            }
        }
        LandUse::Lake => {
            let blobs: Vec<(f32, f32, f32, f32, f32)> = (0..rng.gen_range(3..6))
                .map(|_| {
                    (
                        rng.gen_range(-0.15..0.15),
                        rng.gen_range(-0.15..0.15),
                        rng.gen_range(0.15..0.3),
                        rng.gen_range(0.1..0.22),
                        rng.gen_range(0.0..PI),
                    )
                })
                .collect();
            for &(u, v, rx, ry, a) in &blobs {
                let (x, y) = f.at(u, v);
                l.elements.push(el(
                    Shape::ellipse(x, y, rx + 0.025, ry + 0.025, a),
                    Material::Sand,
                    0.0,
                ));
            }
            for &(u, v, rx, ry, a) in &blobs {
                let (x, y) = f.at(u, v);
                l.elements
                    .push(el(Shape::ellipse(x, y, rx, ry, a), Material::Water, 0.0));
            }
            l.elements.push(el(
                f.segment(-0.9, 0.42, 0.9, 0.45, 0.025),
                Material::Asphalt,
                0.0,
            ));
        }
        LandUse::Highway => {
            let cross = rng.gen_range(PI / 3.0..PI / 2.0);
            let g = Frame::new(f.angle + cross);
            for fr in [&f, &g] {
                l.elements.push(el(
                    fr.segment(-0.9, 0.0, 0.9, 0.0, 0.085),
                    Material::Asphalt,
                    0.0,
                ));
                for i in -9..=9 {
                    l.elements.push(el(
                        fr.rect(i as f32 * 0.1, 0.0, 0.04, 0.005),
                        Material::Marking,
                        0.0,
                    ));
                }
            }
            for (su, sv) in [(1.0f32, 1.0f32), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)] {
                let (x, y) = f.at(su * 0.15, sv * 0.15);
                l.elements.push(el(
                    Shape::ring(x, y, 0.11, 0.11, 0.025, 0.0),
                    Material::Asphalt,
                    0.0,
                ));
            }
        }
        LandUse::Forest => {
            l.elements.push(el(
                f.segment(
                    -0.9,
                    rng.gen_range(-0.3..0.3),
                    0.9,
                    rng.gen_range(-0.3..0.3),
                    0.02,
                ),
                Material::Soil,
                0.0,
            ));
            for _ in 0..260 {
                let (x, y) = (rng.gen_range(-0.05..1.05), rng.gen_range(-0.05..1.05));
                let r = rng.gen_range(0.022..0.04);
                l.elements.push(el(
                    Shape::ellipse(
                        x,
                        y,
                        r,
                        r * rng.gen_range(0.85..1.0),
                        rng.gen_range(0.0..PI),
                    ),
                    Material::Tree,
                    1.4,
                ));
            }
        }
        LandUse::Stadium => {
            l.elements
                .push(el(f.rect(0.0, 0.0, 0.84, 0.6), Material::Concrete, 0.0));
            let (cx, cy) = f.at(0.0, 0.0);
            l.elements.push(el(
                Shape::ring(cx, cy, 0.34, 0.24, 0.07, f.angle),
                Material::Roof(1),
                2.0,
            ));
            l.elements.push(el(
                Shape::ellipse(cx, cy, 0.29, 0.19, f.angle),
                Material::Track,
                0.0,
            ));
            l.elements.push(el(
                Shape::ellipse(cx, cy, 0.23, 0.13, f.angle),
                Material::Grass,
                0.0,
            ));
            l.elements.push(el(
                f.segment(0.0, -0.12, 0.0, 0.12, 0.006),
                Material::Marking,
                0.0,
            ));
            for v in [-0.42f32, 0.42] {
                let lot = f.rect(0.0, v, 0.9, 0.16);
                l.elements.push(el(lot, Material::Asphalt, 0.0));
                l.parking.push(lot);
            }
        }
    }
    l
}

/// How a place looks at one moment.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// Years since 1970 (for construction).
    pub time: f64,
    /// +1 at local midsummer, -1 at midwinter.
    pub season: f32,
    pub autumn: bool,
    /// Fraction of snow on open ground.
    pub snow: f32,
    /// Sun elevation (radians) and shadow displacement per unit height.
    pub sun_elevation: f32,
    pub shadow: (f32, f32),
    pub haze: f32,
    pub gains: [f32; 3],
    pub clouds: Vec<Shape>,
    pub cloud_shadow: (f32, f32),
    pub view: ViewTransform,
    pub noise_sigma: f32,
    /// How many parking spots / aprons are occupied, in [0, 1].
    pub occupancy: f32,
}

/// Computes the moment's conditions at latitude `lat` for a local solar
/// time `local_hour` on day-of-year `doy` of a year; random parts come from `rng`.
pub fn conditions<R: Rng>(
    biome: Biome,
    lat: f64,
    doy: f64,
    local_hour: f64,
    time: f64,
    rng: &mut R,
) -> Conditions {
    let year_frac = (doy / 365.25) as f32;
    let north = lat >= 0.0;
    let season_nh = (2.0 * PI * (year_frac - 0.55)).cos();
    let season = if north { season_nh } else { -season_nh };
    let autumn = if north {
        (0.7..0.88).contains(&year_frac)
    } else {
        (0.2..0.38).contains(&year_frac)
    };
    let winter_depth = (-season).max(0.0);
    let snow = match biome {
        Biome::Boreal => ((winter_depth * 1.8 - 0.2) * rng.gen_range(0.8..1.2)).clamp(0.0, 1.0),
        Biome::Continental => {
            ((winter_depth * 1.6 - 0.5) * rng.gen_range(0.5..1.3)).clamp(0.0, 1.0)
        }
        Biome::Temperate if winter_depth > 0.8 && rng.gen_bool(0.15) => rng.gen_range(0.3..0.8),
        _ => 0.0,
    };

    // Solar position (declination approximation, hour angle from local solar time).
    let phi = (lat as f32).to_radians();
    let decl = (23.44f32).to_radians() * (2.0 * PI * (doy as f32 - 81.0) / 365.0).sin();
    let hour_angle = (15.0 * (local_hour as f32 - 12.0)).to_radians();
    let sin_elev =
        (phi.sin() * decl.sin() + phi.cos() * decl.cos() * hour_angle.cos()).clamp(0.12, 1.0);
    let elev = sin_elev.asin();
    let cos_az =
        ((decl.sin() - sin_elev * phi.sin()) / (elev.cos() * phi.cos()).max(1e-4)).clamp(-1.0, 1.0);
    let mut azimuth = cos_az.acos();
    if hour_angle > 0.0 {
        azimuth = 2.0 * PI - azimuth;
    }
    // Sun direction in the image (east = +x, north = -y); shadows point away.
    let length = (1.0 / elev.tan()).min(4.0) * 0.011;
    let shadow = (-azimuth.sin() * length, azimuth.cos() * length);

    let haze = rng.gen::<f32>().powi(3) * 0.45;
    let sensor = Normal::new(1.0f32, 0.06).expect("valid normal");
    let gains =
        [sensor.sample(rng), sensor.sample(rng), sensor.sample(rng)].map(|g| g.clamp(0.8, 1.2));
    let clouds = if rng.gen_bool(0.15) {
        let (cx, cy) = (rng.gen_range(0.0..1.0), rng.gen_range(0.0..1.0));
        (0..rng.gen_range(2..5))
            .map(|_| {
                let r = rng.gen_range(0.08..0.2);
                Shape::ellipse(
                    cx + rng.gen_range(-0.15..0.15),
                    cy + rng.gen_range(-0.15..0.15),
                    r,
                    r * rng.gen_range(0.6..1.0),
                    rng.gen_range(0.0..PI),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    Conditions {
        time,
        season,
        autumn,
        snow,
        sun_elevation: elev,
        shadow,
        haze,
        gains,
        clouds,
        cloud_shadow: (shadow.0 * 6.0, shadow.1 * 6.0),
        view: ViewTransform {
            shift_x: rng.gen_range(-0.03..0.03),
            shift_y: rng.gen_range(-0.03..0.03),
            zoom: rng.gen_range(0.95..1.05),
        },
        noise_sigma: rng.gen_range(0.006..0.02),
        occupancy: rng.gen(),
    }
}

struct Palette {
    soil: Rgb,
    green: Rgb,
    dormant: Rgb,
    water: Rgb,
}

fn palette(biome: Biome) -> Palette {
    match biome {
        Biome::Tropical => Palette {
            soil: [0.50, 0.36, 0.26],
            green: [0.12, 0.36, 0.12],
            dormant: [0.30, 0.38, 0.18],
            water: [0.10, 0.25, 0.28],
        },
        Biome::Arid => Palette {
            soil: [0.78, 0.67, 0.50],
            green: [0.42, 0.44, 0.26],
            dormant: [0.62, 0.56, 0.40],
            water: [0.12, 0.28, 0.38],
        },
        Biome::Temperate => Palette {
            soil: [0.46, 0.40, 0.32],
            green: [0.22, 0.45, 0.18],
            dormant: [0.46, 0.42, 0.30],
            water: [0.12, 0.22, 0.30],
        },
        Biome::Continental => Palette {
            soil: [0.48, 0.42, 0.33],
            green: [0.25, 0.46, 0.17],
            dormant: [0.47, 0.42, 0.30],
            water: [0.10, 0.20, 0.28],
        },
        Biome::Boreal => Palette {
            soil: [0.36, 0.34, 0.28],
            green: [0.13, 0.30, 0.15],
            dormant: [0.22, 0.27, 0.19],
            water: [0.08, 0.16, 0.22],
        },
        Biome::Mediterranean => Palette {
            soil: [0.64, 0.53, 0.38],
            green: [0.33, 0.42, 0.20],
            dormant: [0.72, 0.62, 0.36],
            water: [0.10, 0.26, 0.38],
        },
    }
}

/// How green vegetation is, in [0, 1], for a biome at a point in the seasons.
fn greenness(biome: Biome, season: f32) -> f32 {
    let summer = (season + 1.0) / 2.0;
    match biome {
        Biome::Tropical => 0.75 + 0.25 * summer,
        Biome::Arid => 0.1 + 0.15 * summer,
        Biome::Temperate => summer.powf(0.7),
        Biome::Continental => summer.powf(0.5),
        Biome::Boreal => summer,
        // Rain falls in winter: green winters, golden summers.
        Biome::Mediterranean => 0.2 + 0.8 * (1.0 - summer),
    }
}

const SNOW: Rgb = [0.92, 0.93, 0.96];
const ICE: Rgb = [0.78, 0.84, 0.9];
const CONSTRUCTION: Rgb = [0.70, 0.60, 0.48];

fn material_colour(
    m: Material,
    layout: &Layout,
    biome: Biome,
    c: &Conditions,
    x: f32,
    y: f32,
) -> Rgb {
    let p = palette(biome);
    let g = greenness(biome, c.season);
    let vegetation = mix(p.dormant, p.green, g);
    let tex = value_noise(x, y, 24.0, layout.texture_seed) * 0.06;
    let base = match m {
        Material::Grass => mix(vegetation, SNOW, c.snow),
        Material::Crop(i) => {
            let crop = layout.crops[i];
            // Each parcel follows its own cycle: green, ripe, then bare soil.
            let phase = ((c.season + 1.0) / 2.0 + crop.phase).clamp(0.0, 1.0);
            let colour = if phase < 0.35 {
                mix(p.soil, crop.green, phase / 0.35)
            } else if phase < 0.75 {
                mix(crop.green, crop.ripe, (phase - 0.35) / 0.4)
            } else {
                mix(crop.ripe, p.soil, (phase - 0.75) / 0.25)
            };
            let (s, co) = crop.furrow_angle.sin_cos();
            let furrow = ((x * co + y * s) * 260.0).sin() * 0.05;
            mix(scale(colour, 1.0 + furrow), SNOW, c.snow)
        }
        Material::Tree => {
            let mut t = mix(
                scale(p.dormant, 0.7),
                scale(p.green, 0.8),
                g.max(if biome == Biome::Boreal { 0.8 } else { 0.0 }),
            );
            if c.autumn && matches!(biome, Biome::Temperate | Biome::Continental) {
                t = mix(t, [0.62, 0.38, 0.14], 0.6);
            }
            mix(t, SNOW, c.snow * 0.45)
        }
        Material::Water => {
            if c.snow > 0.5 {
                ICE
            } else {
                p.water
            }
        }
        Material::Sand => mix(mix(p.soil, [0.8, 0.74, 0.6], 0.5), SNOW, c.snow),
        Material::Soil => mix(p.soil, SNOW, c.snow * 0.8),
        Material::Asphalt => mix([0.22, 0.22, 0.24], SNOW, c.snow * 0.15),
        Material::Concrete => mix([0.62, 0.61, 0.58], SNOW, c.snow * 0.3),
        Material::Roof(i) => mix(layout.roofs[i], SNOW, c.snow * 0.8),
        Material::Track => [0.62, 0.30, 0.22],
        Material::Marking => [0.9, 0.9, 0.88],
    };
    scale(base, 1.0 + tex)
}

/// Renders one view of a place at `size` x `size` pixels, 8-bit RGB.
pub fn render<R: Rng>(
    layout: &Layout,
    biome: Biome,
    c: &Conditions,
    size: usize,
    rng: &mut R,
) -> Vec<u8> {
    render_canvas(layout, biome, c, size, rng, None).to_rgb8()
}

/// The moment's surface as the spectral passes see it.
fn surface(biome: Biome, c: &Conditions) -> Surface {
    Surface {
        soil_colour: palette(biome).soil,
        greenness: greenness(biome, c.season),
        snow: c.snow,
        autumn: c.autumn,
        season: c.season,
        biome,
    }
}

/// Renders one view: the RGB world's display colours (`pass` None, what
/// [`render`] quantises) or, for a spectral pass, the reflectance of the
/// pass's three bands. Every pass draws the same random numbers, so a
/// clone of `rng` per pass renders the same cars, noise and clouds.
pub fn render_canvas<R: Rng>(
    layout: &Layout,
    biome: Biome,
    c: &Conditions,
    size: usize,
    rng: &mut R,
    pass: Option<Pass>,
) -> Canvas {
    let sf = surface(biome, c);
    let colour = |m: Material, x: f32, y: f32| match pass {
        None => material_colour(m, layout, biome, c, x, y),
        Some(pass) => {
            let tex = value_noise(x, y, 24.0, layout.texture_seed) * 0.06;
            pass.pick(&sf.material(m, layout, x, y, tex))
        }
    };
    let spectral = |visible: Rgb, spectrum: [f32; 13]| match pass {
        None => visible,
        Some(pass) => pass.pick(&spectrum),
    };
    let p = palette(biome);
    let visible_ground = mix(
        mix(
            p.soil,
            mix(p.dormant, p.green, greenness(biome, c.season)),
            0.55,
        ),
        SNOW,
        c.snow,
    );
    let ground = spectral(visible_ground, sf.ground());
    let mut canvas = Canvas::new(size, c.view, ground);
    let seed = layout.texture_seed;
    canvas.map(|x, y, col| {
        scale(
            col,
            1.0 + value_noise(x, y, 6.0, seed ^ 0x55) * 0.12 + value_noise(x, y, 30.0, seed) * 0.05,
        )
    });

    let present = |e: &Element| e.appears.is_none_or(|t| c.time >= t);
    // Flat things first, then shadows of raised things, then raised things.
    for e in layout.elements.iter().filter(|e| e.height == 0.0) {
        canvas.paint(&e.shape, 1.0, |x, y| colour(e.material, x, y));
    }
    for e in layout
        .elements
        .iter()
        .filter(|e| e.height > 0.0 && present(e))
    {
        let (dx, dy) = (c.shadow.0 * e.height, c.shadow.1 * e.height);
        canvas.darken(&e.shape.translated(dx, dy), 0.5);
    }
    for e in layout.elements.iter().filter(|e| e.height > 0.0) {
        if present(e) {
            canvas.paint(&e.shape, 1.0, |x, y| colour(e.material, x, y));
        } else {
            canvas.fill(&e.shape, spectral(CONSTRUCTION, sf.construction()));
        }
    }
    // Things that move between views: cars and planes.
    for lot in &layout.parking {
        if let Shape::Rect {
            cx,
            cy,
            hw,
            hh,
            cos,
            sin,
        } = *lot
        {
            let car = 0.016;
            let cols = (2.0 * hw / (car * 1.6)) as i32;
            for row in [-1.0f32, 1.0] {
                for i in 0..cols {
                    if !rng.gen_bool(c.occupancy as f64 * 0.9) {
                        continue;
                    }
                    let u = -hw + (i as f32 + 0.5) * car * 1.6;
                    let v = row * hh * 0.5;
                    let (x, y) = (cx + u * cos - v * sin, cy + u * sin + v * cos);
                    let paint = [
                        rng.gen_range(0.1..0.9),
                        rng.gen_range(0.1..0.9),
                        rng.gen_range(0.1..0.9),
                    ];
                    canvas.fill(
                        &Shape::rect(x, y, car * 0.8, car * 1.8, cos.atan2(sin)),
                        spectral(paint, flat(paint)),
                    );
                }
            }
        }
    }
    for &(x, y, angle) in &layout.aprons {
        if rng.gen_bool(c.occupancy as f64 * 0.8) {
            let a = angle + PI / 2.0 + rng.gen_range(-0.3..0.3);
            let (x, y) = (
                x + rng.gen_range(-0.03..0.03),
                y + rng.gen_range(-0.03..0.03),
            );
            let white = spectral([0.92, 0.92, 0.94], flat([0.92, 0.92, 0.94]));
            canvas.darken(
                &Shape::rect(x + c.shadow.0, y + c.shadow.1, 0.02, 0.1, a),
                0.6,
            );
            canvas.fill(&Shape::rect(x, y, 0.02, 0.1, a), white);
            canvas.fill(&Shape::rect(x, y, 0.1, 0.018, a + PI / 2.0), white);
        }
    }
    // Atmosphere and sensor.
    for cloud in &c.clouds {
        canvas.darken(&cloud.translated(c.cloud_shadow.0, c.cloud_shadow.1), 0.7);
    }
    let cloud = spectral([0.95, 0.95, 0.96], ENDMEMBERS.cloud);
    for shape in &c.clouds {
        canvas.paint(shape, 0.85, |_, _| cloud);
    }
    let light = 0.5 + 0.5 * c.sun_elevation.sin();
    let haze_colour = spectral([0.72, 0.75, 0.8], ENDMEMBERS.haze);
    let noise = Normal::new(0.0f32, c.noise_sigma).expect("valid normal");
    match pass {
        None => canvas.map(|_, _, col| {
            let lit = scale(col, light * 1.15);
            let hazy = mix(lit, haze_colour, c.haze);
            [0, 1, 2].map(|i| hazy[i] * c.gains[i] + noise.sample(rng))
        }),
        // Reflectance: haze weighs less at longer wavelengths; the noise
        // (in display units above) is halved, about its size in reflectance.
        Some(pass) => {
            let weight = pass.haze_weight();
            canvas.map(|_, _, col| {
                let lit = scale(col, light * 1.15);
                [0, 1, 2].map(|i| {
                    let hazy = lit[i] + (haze_colour[i] - lit[i]) * c.haze * weight[i];
                    hazy * c.gains[i] + 0.5 * noise.sample(rng)
                })
            })
        }
    }
    canvas
}
