//! An archive of scenes end to end: dated 3-band uint8 GeoTIFFs of a few
//! places written with GDAL, `geossl index rasters` (scenes and chips),
//! `geossl cluster`, then `geossl pretrain --method moco-tp` on the result,
//! with temporal positives (every place has several dates).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::geossl;
use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::spatial_ref::SpatialRef;
use gdal::{DriverManager, Metadata};
use predicates::prelude::*;

/// WGS84's meridian arc from the equator to latitude `phi` (radians), in
/// metres (Snyder, "Map Projections: A Working Manual", eq. 3-21): on UTM's
/// central meridian, northing = 0.9996 x this arc, so a scene centred there
/// has a position known without PROJ.
fn meridian_arc(phi: f64) -> f64 {
    let a = 6_378_137.0;
    let f = 1.0 / 298.257_223_563;
    let e2: f64 = f * (2.0 - f);
    let (e4, e6) = (e2 * e2, e2 * e2 * e2);
    a * ((1.0 - e2 / 4.0 - 3.0 * e4 / 64.0 - 5.0 * e6 / 256.0) * phi
        - (3.0 * e2 / 8.0 + 3.0 * e4 / 32.0 + 45.0 * e6 / 1024.0) * (2.0 * phi).sin()
        + (15.0 * e4 / 256.0 + 45.0 * e6 / 1024.0) * (4.0 * phi).sin()
        - (35.0 * e6 / 3072.0) * (6.0 * phi).sin())
}

const SIZE: usize = 64;
/// Places: latitudes on UTM 33N's central meridian (15 E).
const LATITUDES: [f64; 3] = [44.0, 45.0, 46.0];
const DATES: [&str; 3] = ["20190610", "20190815", "20200105"];

/// A 64 x 64 3-band Byte GeoTIFF in EPSG:32633 centred at (lat, 15 E):
/// 10 m pixels, a texture that differs by place and date; the date in the
/// file name, and for the first place also in TIFFTAG_DATETIME.
fn write_scene(dir: &Path, place: usize, date: usize) {
    let lat = LATITUDES[place];
    let northing = 0.9996 * meridian_arc(lat.to_radians());
    let half = 5.0 * SIZE as f64;
    let gt = [500_000.0 - half, 10.0, 0.0, northing + half, 0.0, -10.0];
    let mem = DriverManager::get_driver_by_name("MEM").unwrap();
    let mut ds = mem
        .create_with_band_type::<u8, _>("", SIZE, SIZE, 3)
        .unwrap();
    ds.set_geo_transform(&gt).unwrap();
    ds.set_spatial_ref(&SpatialRef::from_epsg(32633).unwrap())
        .unwrap();
    if place == 0 {
        let d = DATES[date];
        let tiff_date = format!("{}:{}:{} 10:30:00", &d[..4], &d[4..6], &d[6..]);
        ds.set_metadata_item("TIFFTAG_DATETIME", &tiff_date, "")
            .unwrap();
    }
    let mut state = (place * 7919 + date * 104_729 + 1) as u64;
    for b in 1..=3 {
        let data: Vec<u8> = (0..SIZE * SIZE)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let noise = (state >> 59) as usize;
                ((i % SIZE) * (place + 1) + (i / SIZE) * b + noise * 4 + date * 20) as u8
            })
            .collect();
        let mut band = ds.rasterband(b).unwrap();
        band.write((0, 0), (SIZE, SIZE), &mut Buffer::new((SIZE, SIZE), data))
            .unwrap();
    }
    let name = if place == 0 {
        format!("place{place}/scene_{date}.tif")
    } else {
        format!("place{place}/S2_{}.tif", DATES[date])
    };
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
    drop(
        ds.create_copy(&gtiff, &path, &RasterCreationOptions::new())
            .unwrap(),
    );
}

/// Great-circle metres (mean Earth radius), as the manifest's positions
/// are compared.
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let h = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((b.1 - a.1).to_radians() / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

/// The rows of a manifest as column -> value maps.
fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

fn pretrain_moco_tp(manifest: &Path, out: &Path, images: usize, places: usize) {
    geossl()
        .args(["pretrain", "--manifest"])
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args([
            "--method",
            "moco-tp",
            "--split",
            "all",
            "--arch",
            "resnet18",
            "--width",
            "8",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--moco-k",
            "32",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "data: {images} images at {places} places (split all); 0 places with a single view"
        )))
        .stderr(predicate::str::contains("reduces to").not());
}

#[test]
fn dated_scenes_become_places_with_temporal_positives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scenes = d.join("scenes");
    for place in 0..LATITUDES.len() {
        for date in 0..DATES.len() {
            write_scene(&scenes, place, date);
        }
    }
    std::fs::write(scenes.join("place1/corrupt.tif"), b"II*\0 truncated").unwrap();

    let m = d.join("m.csv");
    geossl()
        .args(["index", "rasters"])
        .arg(&scenes)
        .arg("--out")
        .arg(&m)
        .args(["--date-regex", r"_(?P<date>\d{8})\.tif$"])
        .assert()
        .success()
        .stderr(predicate::str::contains("skipped: ").and(predicate::str::contains("corrupt.tif")))
        .stdout(predicate::str::contains(
            "10 files with extensions tif,tiff,jp2,j2k,vrt,img,ntf: 9 scenes read, 1 unreadable",
        ))
        .stdout(predicate::str::contains("3 places (same footprint"))
        .stdout(predicate::str::contains(
            "3 dates; 6 scenes dated from the file name, 3 from metadata, 0 undated",
        ))
        .stdout(predicate::str::contains("wrote 9 rows to"));
    let skipped = std::fs::read_to_string(d.join("m.skipped.csv")).unwrap();
    assert!(
        skipped.starts_with("path,error\n") && skipped.contains("corrupt.tif"),
        "{skipped}"
    );

    let table = rows(&m);
    assert_eq!(table.len(), 9);
    let mut places: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in &table {
        let path = &row["path"];
        // scenes/place<N>/...: relative to the manifest's folder.
        assert!(path.starts_with("scenes/place"), "{path}");
        let place: usize = path[12..13].parse().unwrap();
        let (lat, lon) = (row["lat"].parse().unwrap(), row["lon"].parse().unwrap());
        let off = metres((lat, lon), (LATITUDES[place], 15.0));
        assert!(
            off < 1.0,
            "{path}: ({lat}, {lon}) is {off} m from the written centre"
        );
        let date = &row["timestamp"][..10];
        let expected = DATES
            .iter()
            .any(|d| d.replace('-', "") == date.replace('-', ""));
        assert!(expected, "{path}: date {date}");
        if place == 0 {
            assert!(row["timestamp"].ends_with("T10:30:00Z"), "{row:?}");
        }
        assert_eq!(
            (row["bands"].as_str(), row["data_type"].as_str()),
            ("3", "Byte")
        );
        places
            .entry(row["location_id"].clone())
            .or_default()
            .insert(format!("place{place}"));
    }
    // Three places, each the views of one folder.
    assert_eq!(places.len(), 3);
    assert!(places.values().all(|folders| folders.len() == 1));

    let geo = d.join("geo.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(&m)
        .args(["--k", "2", "--out"])
        .arg(&geo)
        .assert()
        .success();
    pretrain_moco_tp(&geo, &d.join("run"), 9, 3);

    // Chips: 64 px scenes in 32 px chips, 4 per scene; chip (r, c) of the
    // three dates of a place is one place.
    let chips = d.join("chips.csv");
    geossl()
        .args(["index", "rasters"])
        .arg(&scenes)
        .arg("--out")
        .arg(&chips)
        .args(["--date-regex", r"_(?P<date>\d{8})\.tif$", "--chip", "32"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "36 chips of 32 x 32 px; 0 partial chips at the right and bottom edges left out",
        ));
    let table = rows(&chips);
    assert_eq!(table.len(), 36);
    let chip_places: BTreeSet<&str> = table.iter().map(|r| r["location_id"].as_str()).collect();
    assert_eq!(chip_places.len(), 12);
    pretrain_moco_tp(&chips, &d.join("run_chips"), 36, 12);
}
