//! The built-in dataset: a synthetic, geo-temporal world of satellite-like
//! scenes that every user and test has without a download.
//!
//! # Generative factors
//!
//! What a place IS (fixed across its views; what a good representation keeps):
//! - **land use** (the label): one of eight classes with distinct spatial
//!   layouts: residential road grid with houses, industrial halls with a
//!   parking lot, farmland parcels with furrows, airport runway with taxiway
//!   and apron, lake with shore, highway interchange, forest canopy, stadium
//!   with track. Class frequencies depend on the region (as fMoW's do).
//! - **layout details**: orientation, spacing, sizes, roof colours, crop
//!   types per parcel: random per place, identical in every view of it.
//! - **position**: near one of 120 real cities (shipped table, `cities.csv`),
//!   scattered by ~30 km, so clusters and continents behave as in fMoW.
//! - **biome** of the city (tropical, arid, temperate, continental, boreal,
//!   mediterranean): soil, vegetation and water palettes.
//! - **region** (continent): roofing materials, as building styles differ
//!   by region in real imagery.
//!
//! How a place LOOKS at a moment (changes between views; nuisances):
//! - **season** from the date and hemisphere: vegetation greenness follows
//!   the biome (mediterranean green in winter, golden in summer), autumn
//!   colours in temperate and continental forests, every farm parcel on its
//!   own crop cycle (soil, green, ripe, harvested).
//! - **snow** in continental, boreal and (rarely) temperate winters: covers
//!   open ground, partly trees and roofs, barely roads; lakes freeze.
//! - **sun** position from latitude, date and local time: brightness, and
//!   shadow length and direction of buildings, trees and planes.
//! - **atmosphere and sensor**: haze, occasional clouds with their shadows,
//!   per-band gains (different satellites), noise, JPEG compression.
//! - **geometry**: misregistration (a shift of up to ~2 px at 64 px) and a
//!   +-5% ground-sampling-distance change.
//! - **change**: buildings under construction appear between views (bare
//!   site before), parked cars and planes differ in every view.
//!
//! Why temporal positives help here, beyond augmentation: colour jitter
//! changes all pixels alike, but seasons, snow and sun change *materials*
//! differently (fields but not roads, ground but not roofs) and move
//! shadows, clouds occlude, and objects come and go. Two views of one place
//! share only the layout, so an encoder trained to match them must encode
//! the layout, which is what the land-use label depends on. Two augmentations
//! of one image also share the season, the sun and the sensor, which an
//! encoder can match on instead.
//!
//! Views per place are skewed like fMoW's (many places with few views, a tail
//! up to `max_views`), dated 2002..2017 with a first-to-last span of 0.5-5.5
//! years, at a local morning-to-noon overpass time. Splits are by location
//! (80/10/10), so no place leaks across splits. Output is deterministic for a
//! seed, whatever the thread count.

mod render;
mod scene;
pub mod spectral;
pub mod world;

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{Datelike, Timelike};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use super::manifest::{ImageRecord, Manifest, Split, Timestamp};
use crate::geo::LatLon;
use crate::progress;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub locations: usize,
    pub max_views: usize,
    pub size: usize,
    pub seed: u64,
    /// JPEG quality (1-100); 0 writes PNG instead. Only for 3 bands.
    pub jpeg_quality: u8,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            locations: 1000,
            max_views: 8,
            size: 64,
            seed: 0,
            jpeg_quality: 90,
        }
    }
}

/// The band counts [`SynthConfig::bands`] accepts.
pub const BAND_COUNTS: [usize; 3] = [3, 4, 13];

/// Extra manifest columns the generator writes.
pub const EXTRA_COLUMNS: [&str; 4] = ["city", "country", "biome", "cloudy"];

/// Seconds since 1970 for 2002-01-01 and 2015-01-01: the window first views fall in.
const FIRST_VIEW_WINDOW: (f64, f64) = (32.0, 45.0);
const SECONDS_PER_YEAR: f64 = 365.25 * 86_400.0;

/// Number of views of a place: P(T = t) proportional to exp(-0.3 (t - 1)),
/// t = 1..max_views (mean 3.06 for max 8; fMoW's is about 4.4 with a
/// longer tail).
fn draw_view_count<R: Rng>(max_views: usize, rng: &mut R) -> usize {
    let w: Vec<f64> = (0..max_views).map(|t| (-0.3 * t as f64).exp()).collect();
    let mut u = rng.gen::<f64>() * w.iter().sum::<f64>();
    for (t, wt) in w.iter().enumerate() {
        if u < *wt {
            return t + 1;
        }
        u -= wt;
    }
    max_views
}

/// One generated place, before rendering.
struct Place {
    id: String,
    land_use: world::LandUse,
    city: &'static world::City,
    position: LatLon,
    split: Split,
    /// Seconds since 1970, sorted.
    times: Vec<f64>,
    rng_seed: u64,
}

fn plan_place(index: usize, config: &SynthConfig) -> Place {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(index as u64);
    let cities = world::cities();
    let city = &cities[rng.gen_range(0..cities.len())];
    let land_use = world::draw_land_use(city, &mut rng);
    let scatter = Normal::new(0.0, 0.27).expect("valid normal");
    let lat = (city.lat + scatter.sample(&mut rng)).clamp(-89.9, 89.9);
    let lon_spread = 1.0 / lat.to_radians().cos().max(0.2);
    let mut lon = city.lon + scatter.sample(&mut rng) * lon_spread;
    if lon > 180.0 {
        lon -= 360.0;
    }
    if lon < -180.0 {
        lon += 360.0;
    }
    let position = LatLon::new(lat, lon).expect("clamped into range");
    let views = draw_view_count(config.max_views.max(1), &mut rng);
    let start = rng.gen_range(FIRST_VIEW_WINDOW.0..FIRST_VIEW_WINDOW.1);
    let span = rng.gen_range(0.5..5.5);
    let mut years: Vec<f64> = (0..views)
        .map(|i| {
            if i == 0 {
                start
            } else {
                start + rng.gen_range(0.0..span)
            }
        })
        .collect();
    years.sort_by(f64::total_cmp);
    // Local solar time 9:00-13:00 (sun-synchronous morning overpass) -> UTC.
    let times = years
        .iter()
        .map(|&y| {
            let day = (y * 365.25).floor() * 86_400.0;
            let local_hour: f64 = rng.gen_range(9.0..13.0);
            (day + (local_hour - lon / 15.0) * 3600.0).round()
        })
        .collect();
    let split = match rng.gen_range(0..10) {
        0 => Split::Val,
        1 => Split::Test,
        _ => Split::Train,
    };
    Place {
        id: format!("{}_{index}", land_use.name()),
        land_use,
        city,
        position,
        split,
        times,
        rng_seed: rng.gen(),
    }
}

/// Generates the dataset under `out`: `images/<class>/<location>/<location>_<view>.jpg`
/// and `manifest.csv`. Returns the manifest.
pub fn generate(out: &Path, config: &SynthConfig) -> anyhow::Result<Manifest> {
    generate_bands(out, config, 3)
}

/// [`generate`] with `bands` per image: 3 is [`generate`]'s 8-bit RGB
/// JPEG/PNG; 4 or 13 write UInt16 GeoTIFFs of surface reflectance
/// (`<location>_<view>.tif`, see [`spectral`]) of the same places, views
/// and manifest rows.
pub fn generate_bands(out: &Path, config: &SynthConfig, bands: usize) -> anyhow::Result<Manifest> {
    let name = crate::settings::name;
    anyhow::ensure!(
        config.locations > 0,
        "{} must be at least 1",
        name("locations")
    );
    anyhow::ensure!(
        config.max_views > 0,
        "{} must be at least 1",
        name("max_views")
    );
    anyhow::ensure!(
        (8..=4096).contains(&config.size),
        "{} must be between 8 and 4096 pixels",
        name("size")
    );
    anyhow::ensure!(
        BAND_COUNTS.contains(&bands),
        "{} must be 3 (RGB), 4 (blue, green, red, NIR) or 13 (Sentinel-2), not {bands}",
        name("bands"),
    );
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let places: Vec<Place> = (0..config.locations)
        .map(|i| plan_place(i, config))
        .collect();
    let total_views: usize = places.iter().map(|p| p.times.len()).sum();
    let bar = progress::bar(total_views as u64, "rendering scenes");
    let ext = if bands != 3 {
        "tif"
    } else if config.jpeg_quality == 0 {
        "png"
    } else {
        "jpg"
    };
    let rows: Vec<Vec<ImageRecord>> =
        crate::data::collect_in_order(places.par_iter().map(|place| {
            let rows = render_place(place, out, ext, config, bands);
            bar.inc(place.times.len() as u64);
            rows
        }))?;
    bar.finish_and_clear();
    let manifest = Manifest {
        source: out.join("manifest.csv"),
        root: out.to_path_buf(),
        records: rows.into_iter().flatten().collect(),
        extra_columns: EXTRA_COLUMNS.iter().map(|s| s.to_string()).collect(),
    };
    manifest.write(&manifest.source)?;
    Ok(manifest)
}

fn render_place(
    place: &Place,
    out: &Path,
    ext: &str,
    config: &SynthConfig,
    bands: usize,
) -> anyhow::Result<Vec<ImageRecord>> {
    let mut rng = ChaCha8Rng::seed_from_u64(place.rng_seed);
    let years = |t: f64| t / SECONDS_PER_YEAR;
    let span = (
        years(place.times[0]),
        years(*place.times.last().expect("at least one view")),
    );
    let layout = scene::layout(place.land_use, &place.city.region, span, &mut rng);
    let rel_dir = PathBuf::from("images")
        .join(place.land_use.name())
        .join(&place.id);
    std::fs::create_dir_all(out.join(&rel_dir))
        .with_context(|| format!("{}: cannot create", out.join(&rel_dir).display()))?;
    let mut rows = Vec::with_capacity(place.times.len());
    for (view, &t) in place.times.iter().enumerate() {
        let millis = (t * 1000.0).round() as i64;
        let ts = Timestamp { millis };
        let utc = ts.datetime();
        let local_hour = utc.hour() as f64 + utc.minute() as f64 / 60.0 + place.position.lon / 15.0;
        let local_day = utc.date() + chrono::Duration::days(local_hour.div_euclid(24.0) as i64);
        let doy = local_day.ordinal0() as f64 + 0.5;
        let cond = scene::conditions(
            place.city.biome,
            place.position.lat,
            doy,
            local_hour.rem_euclid(24.0),
            years(t),
            &mut rng,
        );
        let rel = rel_dir.join(format!("{}_{view}.{ext}", place.id));
        let path = out.join(&rel);
        if bands == 3 {
            let pixels = scene::render(&layout, place.city.biome, &cond, config.size, &mut rng);
            let img = image::RgbImage::from_raw(config.size as u32, config.size as u32, pixels)
                .expect("size matches");
            save(&img, &path, config.jpeg_quality)
        } else {
            let view_seed = place.rng_seed ^ (view as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let planes =
                render_multispectral(&layout, place, &cond, config, bands, &mut rng, view_seed);
            write_geotiff(&path, &planes, config, place.position, utc)
        }
        .with_context(|| format!("{}: cannot write", path.display()))?;
        rows.push(ImageRecord {
            path: rel.to_string_lossy().into_owned(),
            position: Some(place.position),
            timestamp: Some(ts),
            location_id: Some(place.id.clone()),
            label: Some(place.land_use.name().to_string()),
            split: Some(place.split),
            crop: None,
            geo_cluster: None,
            extra: vec![
                place.city.name.clone(),
                place.city.country.clone(),
                place.city.biome.name().to_string(),
                u8::from(!cond.clouds.is_empty()).to_string(),
            ],
        });
    }
    Ok(rows)
}

/// The stored UInt16 planes of one multispectral view: the configured
/// bands, NoData (0) in the view's strip if it has one.
fn render_multispectral(
    layout: &scene::Layout,
    place: &Place,
    cond: &scene::Conditions,
    config: &SynthConfig,
    bands: usize,
    rng: &mut ChaCha8Rng,
    view_seed: u64,
) -> Vec<(String, Vec<u16>)> {
    let (indices, names): (Vec<usize>, Vec<String>) = if bands == 4 {
        let names = spectral::FOUR_BAND_NAMES.iter().map(|s| s.to_string());
        (spectral::FOUR_BANDS.to_vec(), names.collect())
    } else {
        let names = spectral::SENTINEL2_BANDS.iter().map(|b| b.0.to_string());
        ((0..13).collect(), names.collect())
    };
    let planes = spectral::render_bands(layout, place.city.biome, cond, config.size, rng, &indices);
    let strip = spectral::nodata_strip(config.size, view_seed);
    names
        .into_iter()
        .zip(planes)
        .map(|(name, plane)| {
            let stored = plane
                .iter()
                .enumerate()
                .map(|(i, &r)| match &strip {
                    Some(mask) if mask[i] => spectral::NODATA,
                    _ => spectral::to_stored(r),
                })
                .collect();
            (name, stored)
        })
        .collect()
}

/// Writes named UInt16 planes as a Deflate GeoTIFF georeferenced in
/// EPSG:4326 (pixels of [`spectral::GSD_M`] metres, centred on
/// `position`), NoData 0, the acquisition time in `TIFFTAG_DATETIME`, and
/// GDAL's red, green and blue colour interpretation on B04, B03, B02 (or
/// `red`, `green`, `blue`).
fn write_geotiff(
    path: &Path,
    bands: &[(String, Vec<u16>)],
    config: &SynthConfig,
    position: LatLon,
    utc: chrono::NaiveDateTime,
) -> anyhow::Result<()> {
    use gdal::raster::{Buffer, ColorInterpretation, RasterCreationOptions};
    use gdal::Metadata as _;
    let size = config.size;
    let gtiff = gdal::DriverManager::get_driver_by_name("GTiff")?;
    let options = RasterCreationOptions::from_iter(["COMPRESS=DEFLATE", "PREDICTOR=2"]);
    let mut ds = gtiff.create_with_band_type_with_options::<u16, _>(
        path,
        size,
        size,
        bands.len(),
        &options,
    )?;
    let dlat = spectral::GSD_M / 111_320.0;
    let dlon = dlat / position.lat.to_radians().cos().max(0.05);
    let half = size as f64 / 2.0;
    ds.set_geo_transform(&[
        position.lon - half * dlon,
        dlon,
        0.0,
        position.lat + half * dlat,
        0.0,
        -dlat,
    ])?;
    ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(4326)?)?;
    ds.set_metadata_item(
        "TIFFTAG_DATETIME",
        &utc.format("%Y:%m:%d %H:%M:%S").to_string(),
        "",
    )?;
    for (i, (name, data)) in bands.iter().enumerate() {
        let mut band = ds.rasterband(i + 1)?;
        band.set_description(name)?;
        band.set_no_data_value(Some(spectral::NODATA as f64))?;
        let interp = match name.as_str() {
            "B04" | "red" => ColorInterpretation::RedBand,
            "B03" | "green" => ColorInterpretation::GreenBand,
            "B02" | "blue" => ColorInterpretation::BlueBand,
            _ => ColorInterpretation::Undefined,
        };
        band.set_color_interpretation(interp)?;
        band.write(
            (0, 0),
            (size, size),
            &mut Buffer::new((size, size), data.clone()),
        )?;
    }
    Ok(())
}

fn save(img: &image::RgbImage, path: &Path, quality: u8) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    if quality == 0 {
        img.write_with_encoder(image::codecs::png::PngEncoder::new(file))?;
    } else {
        img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            file,
            quality.min(100),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::location_index::LocationIndex;

    fn small(seed: u64) -> SynthConfig {
        SynthConfig {
            locations: 40,
            max_views: 5,
            size: 32,
            seed,
            jpeg_quality: 0,
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ma = generate(a.path(), &small(3)).unwrap();
        let mb = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| generate(b.path(), &small(3)).unwrap());
        assert_eq!(ma.records, mb.records);
        for r in ma.records.iter().take(20) {
            let pa = std::fs::read(a.path().join(&r.path)).unwrap();
            let pb = std::fs::read(b.path().join(&r.path)).unwrap();
            assert_eq!(pa, pb, "{}", r.path);
        }
        let c = tempfile::tempdir().unwrap();
        let mc = generate(c.path(), &small(4)).unwrap();
        assert_ne!(ma.records, mc.records);
    }

    #[test]
    fn structure_of_the_world() {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            locations: 300,
            max_views: 6,
            size: 16,
            seed: 1,
            jpeg_quality: 80,
        };
        let m = generate(dir.path(), &config).unwrap();
        let again = Manifest::read(&dir.path().join("manifest.csv")).unwrap();
        assert_eq!(again.records.len(), m.records.len());
        let idx = LocationIndex::build(&m);
        assert_eq!(idx.len(), 300);
        let views: Vec<usize> = idx.locations.iter().map(|l| l.views.len()).collect();
        assert!(views.iter().all(|&v| (1..=6).contains(&v)));
        let singles = views.iter().filter(|&&v| v == 1).count();
        let multi = views.iter().filter(|&&v| v >= 4).count();
        assert!(
            singles > 30 && multi > 30,
            "skewed view counts: {singles} single, {multi} with 4+"
        );
        // Every class occurs; splits are by location.
        let classes: std::collections::HashSet<_> =
            m.records.iter().map(|r| r.label.clone().unwrap()).collect();
        assert_eq!(classes.len(), 8);
        for loc in &idx.locations {
            let splits: std::collections::HashSet<_> =
                loc.views.iter().map(|&r| m.records[r].split).collect();
            assert_eq!(splits.len(), 1);
            let times: Vec<_> = loc
                .views
                .iter()
                .map(|&r| m.records[r].timestamp.unwrap())
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
        }
        // Every image decodes at the requested size.
        for r in m.records.iter().step_by(37) {
            let img = image::open(dir.path().join(&r.path)).unwrap();
            assert_eq!((img.width(), img.height()), (16, 16));
        }
    }

    #[test]
    fn views_of_a_place_differ() {
        // Temporal change is real: two views of one place are not the same image.
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            locations: 60,
            max_views: 8,
            size: 32,
            seed: 5,
            jpeg_quality: 0,
        };
        let m = generate(dir.path(), &config).unwrap();
        let idx = LocationIndex::build(&m);
        let load = |r: usize| {
            image::open(dir.path().join(&m.records[r].path))
                .unwrap()
                .to_rgb8()
                .into_raw()
        };
        let multi = idx.locations.iter().find(|l| l.views.len() >= 2).unwrap();
        let (a, b) = (load(multi.views[0]), load(multi.views[1]));
        assert_ne!(a, b);
    }

    /// SHA-256 of the manifest and then every image, in manifest order.
    fn digest(dir: &Path) -> String {
        use sha2::{Digest, Sha256};
        let manifest = std::fs::read(dir.join("manifest.csv")).unwrap();
        let mut h = Sha256::new();
        h.update(&manifest);
        for r in Manifest::read(&dir.join("manifest.csv")).unwrap().records {
            h.update(std::fs::read(dir.join(&r.path)).unwrap());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_rgb_world_is_unchanged() {
        // Digests of `geossl synth --locations 12 --max-views 3 --size 24
        // --seed 7 --format jpg|png` by geossl a2e6917, before the
        // multispectral mode.
        for (quality, want) in [
            (
                90,
                "4a3463ac43bb2c12ce97ea3fcd90c53b788bd9aa21b4f3a1bcd7f58d382803ef",
            ),
            (
                0,
                "bf8b96d56738c06c32aa5e0c5ad480c9eec9f112c0f17c4033f6fb78aea9c659",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = SynthConfig {
                locations: 12,
                max_views: 3,
                size: 24,
                seed: 7,
                jpeg_quality: quality,
            };
            let m = generate_bands(dir.path(), &config, 3).unwrap();
            assert_eq!(m.records.len(), 25);
            assert_eq!(digest(dir.path()), want, "quality {quality}");
        }
    }

    /// Per image: the mean of each band over valid pixels, and whether the
    /// image has NoData pixels.
    fn band_means(dir: &Path, m: &Manifest) -> Vec<(String, Vec<f64>, bool)> {
        use crate::data::decode::DecodeOptions;
        use crate::data::raster::{RasterReader, Resampling, Window};
        m.records
            .iter()
            .map(|r| {
                let reader = RasterReader::open(&dir.join(&r.path)).unwrap();
                let info = reader.info().clone();
                let bands: Vec<usize> = (1..=info.bands.len()).collect();
                let window = Window {
                    x: 0,
                    y: 0,
                    width: info.width,
                    height: info.height,
                };
                let read = reader
                    .read(
                        &bands,
                        window,
                        (info.width, info.height),
                        Resampling::Nearest,
                        &DecodeOptions::default(),
                    )
                    .unwrap();
                let plane = read.width * read.height;
                let means = (0..read.bands)
                    .map(|c| {
                        let values = &read.data[c * plane..(c + 1) * plane];
                        let valid: Vec<f64> = values
                            .iter()
                            .zip(&read.valid)
                            .filter(|(_, &ok)| ok)
                            .map(|(&v, _)| v as f64)
                            .collect();
                        assert!(
                            valid.iter().all(|&v| (1.0..=15000.0).contains(&v)),
                            "{} band {}",
                            r.path,
                            c + 1
                        );
                        valid.iter().sum::<f64>() / valid.len().max(1) as f64
                    })
                    .collect();
                (r.label.clone().unwrap(), means, read.valid_count < plane)
            })
            .collect()
    }

    #[test]
    fn thirteen_band_world_is_sentinel2_like() {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            locations: 80,
            max_views: 3,
            size: 16,
            seed: 2,
            jpeg_quality: 90,
        };
        let m = generate_bands(dir.path(), &config, 13).unwrap();
        let rgb = tempfile::tempdir().unwrap();
        let m3 = generate(rgb.path(), &config).unwrap();
        // The same places, views and times as the RGB world.
        assert_eq!(m.records.len(), m3.records.len());
        for (a, b) in m.records.iter().zip(&m3.records) {
            assert_eq!(a.path.replace(".tif", ".jpg"), b.path);
            assert_eq!(
                (a.position, a.timestamp, &a.label, a.split),
                (b.position, b.timestamp, &b.label, b.split)
            );
        }
        let first = dir.path().join(&m.records[0].path);
        let reader = crate::data::raster::RasterReader::open(&first).unwrap();
        let names: Vec<&str> = reader
            .info()
            .bands
            .iter()
            .map(|b| b.description.as_str())
            .collect();
        let want: Vec<&str> = spectral::SENTINEL2_BANDS.iter().map(|b| b.0).collect();
        assert_eq!(names, want);
        for b in &reader.info().bands {
            assert_eq!((b.data_type.as_str(), b.nodata), ("UInt16", Some(0.0)));
        }
        let ds = gdal::Dataset::open(&first).unwrap();
        assert_eq!(ds.spatial_ref().unwrap().auth_code().unwrap(), 4326);
        let gt = ds.geo_transform().unwrap();
        let p = m.records[0].position.unwrap();
        assert!(
            (gt[0] + 8.0 * gt[1] - p.lon).abs() < 1e-9
                && (gt[3] + 8.0 * gt[5] - p.lat).abs() < 1e-9
        );
        use gdal::Metadata;
        assert!(ds.metadata_item("TIFFTAG_DATETIME", "").is_some());
        assert_eq!(
            ds.rasterband(4).unwrap().color_interpretation(),
            gdal::raster::ColorInterpretation::RedBand
        );

        let images = band_means(dir.path(), &m);
        let class_mean = |label: &str, f: &dyn Fn(&[f64]) -> f64| {
            let v: Vec<f64> = images
                .iter()
                .filter(|i| i.0 == label)
                .map(|i| f(&i.1))
                .collect();
            assert!(!v.is_empty(), "no {label} images");
            v.iter().sum::<f64>() / v.len() as f64
        };
        // B08 (index 7) is NIR, B04 (3) red, B11 (11) SWIR.
        let nir = |b: &[f64]| b[7];
        let ndvi = |b: &[f64]| (b[7] - b[3]) / (b[7] + b[3]);
        let swir_over_nir = |b: &[f64]| b[11] / b[7];
        assert!(class_mean("lake", &nir) < class_mean("forest", &nir));
        assert!(class_mean("forest", &ndvi) > class_mean("industrial", &ndvi) + 0.1);
        assert!(class_mean("industrial", &swir_over_nir) > class_mean("forest", &swir_over_nir));
        // A NoData strip on about NODATA_BORDER_FRACTION of the views.
        let with_nodata = images.iter().filter(|i| i.2).count() as f64 / images.len() as f64;
        assert!((0.08..0.35).contains(&with_nodata), "{with_nodata}");
    }

    #[test]
    fn four_band_world_is_blue_green_red_nir() {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            locations: 3,
            max_views: 2,
            size: 12,
            seed: 1,
            jpeg_quality: 90,
        };
        let m = generate_bands(dir.path(), &config, 4).unwrap();
        let reader =
            crate::data::raster::RasterReader::open(&dir.path().join(&m.records[0].path)).unwrap();
        let names: Vec<&str> = reader
            .info()
            .bands
            .iter()
            .map(|b| b.description.as_str())
            .collect();
        assert_eq!(names, ["blue", "green", "red", "nir"]);
        let err = generate_bands(dir.path(), &config, 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bands must be 3"), "{err}");
    }

    #[test]
    fn nodata_strips_are_seeded_and_partial() {
        let strips: Vec<_> = (0..200u64).map(|s| spectral::nodata_strip(20, s)).collect();
        let again: Vec<_> = (0..200u64).map(|s| spectral::nodata_strip(20, s)).collect();
        assert_eq!(strips, again);
        let some: Vec<&Vec<bool>> = strips.iter().flatten().collect();
        assert!((20..70).contains(&some.len()), "{}", some.len());
        for mask in some {
            let n = mask.iter().filter(|&&m| m).count();
            assert!(n > 0 && n < 400 / 2, "{n} of 400 pixels NoData");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(
            dir.path(),
            &SynthConfig {
                size: 4,
                ..small(0)
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "size must be between 8 and 4096 pixels");
    }
}
