//! Helpers shared by the integration tests: the binary, a small built-in
//! world, and a tiny network for fast runs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use assert_cmd::Command;
use geossl::data::augment::ViewTransform;
use geossl::data::bands::InputSpec;
use geossl::data::loader::ImageLoader;
use geossl::data::Manifest;
use geossl::formats::npy;
use tch::Tensor;

pub fn geossl() -> Command {
    Command::cargo_bin("geossl").expect("binary built")
}

/// A small built-in world with geo clusters; returns the clustered manifest.
pub fn world(dir: &Path, locations: usize, size: usize, k: usize) -> PathBuf {
    let data = dir.join("data");
    geossl()
        .args(["synth", "--out"])
        .arg(&data)
        .args([
            "--locations",
            &locations.to_string(),
            "--max-views",
            "6",
            "--size",
            &size.to_string(),
            "--seed",
            "1",
        ])
        .assert()
        .success();
    let geo = data.join("geo.csv");
    geossl()
        .args(["cluster", "--manifest"])
        .arg(data.join("manifest.csv"))
        .args(["--k", &k.to_string(), "--out"])
        .arg(&geo)
        .assert()
        .success();
    geo
}

/// The JSON document in `path` (a report, a state.json, a config.json).
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `geossl import --pth FILE --out OUT`; its standard output.
pub fn import(file: &Path, out: &Path) -> String {
    let done = geossl()
        .args(["import", "--pth"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
    let stdout = String::from_utf8(done.get_output().stdout.clone()).unwrap();
    println!("{stdout}");
    stdout
}

/// `geossl embed --checkpoint CHECKPOINT --manifest MANIFEST --out OUT`
/// (add flags, then assert).
pub fn embed(checkpoint: &Path, manifest: &Path, out: &Path) -> Command {
    let mut c = geossl();
    c.args(["embed", "--checkpoint"])
        .arg(checkpoint)
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(out);
    c
}

/// The images `embed` reads for `rows` of `manifest`, in one batch: the
/// checkpoint's `input`, its evaluation view (Resize + CenterCrop `size`).
pub fn eval_view_batch(manifest: &Path, rows: Vec<usize>, size: u32, input: &InputSpec) -> Tensor {
    let loader = ImageLoader::new(
        std::sync::Arc::new(Manifest::read(manifest).unwrap()),
        rows.clone(),
        ViewTransform::CenterCrop { size },
        rows.len(),
        input.clone(),
    );
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.rows, rows);
    batch.images
}

/// Writes `t` to `path` as a float32 .npy of its shape.
pub fn save_npy(path: &Path, t: &Tensor) {
    let v: Vec<f32> = Vec::try_from(t.contiguous().flatten(0, -1)).unwrap();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    npy::write(path, &shape, &v).unwrap();
}

/// The float32 .npy in `path` as a tensor of its shape.
pub fn npy_tensor(path: &Path) -> Tensor {
    let (shape, x) = npy::read::<f32>(path).unwrap();
    let dims: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
    Tensor::from_slice(&x).view(dims.as_slice())
}

/// Max |ours - theirs| / max |theirs|, `theirs` being PyTorch's values in
/// the .npy `theirs` (read in `ours`' shape).
pub fn relative_error(ours: &Tensor, theirs: &Path) -> f64 {
    let theirs = npy_tensor(theirs).view_as(ours);
    (ours - &theirs).abs().max().double_value(&[]) / theirs.abs().max().double_value(&[])
}

/// Flags for a tiny, fast network.
pub const TINY: [&str; 16] = [
    "--arch",
    "resnet18",
    "--width",
    "4",
    "--small-input",
    "true",
    "--image-size",
    "16",
    "--batch-size",
    "8",
    "--moco-k",
    "32",
    "--threads",
    "1",
    "--checkpoint-every",
    "1",
];

/// `geossl pretrain` on `manifest` into `out` with the tiny network.
pub fn tiny_pretrain(manifest: &Path, out: &Path) -> Command {
    let mut c = geossl();
    c.arg("pretrain")
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(TINY);
    c
}

/// The project's virtualenv python (torch, torchvision, timm, tensorboard):
/// `$GEOSSL_VENV` when set, as scripts/setup.sh reads it, else `.venv`.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("GEOSSL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let p = venv.join("bin/python");
    assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// Runs `tests/python/<script>` with `args`; fails the test if it fails,
/// else returns its standard output.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = S>,
) -> String {
    let out = Process::new(python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script}: {stdout}{stderr}");
    // Shown with --nocapture (the reference scripts print their figures).
    println!("{stdout}{stderr}");
    stdout
}

/// Writes a uint16 GeoTIFF with GDAL (in memory, then copied as
/// gdal_translate does): one band per name in `names` (its description),
/// `w` x `h` values of `f(band, x, y)`.
pub fn write_geotiff(
    path: &Path,
    (w, h): (usize, usize),
    names: &[&str],
    f: impl Fn(usize, usize, usize) -> u16,
) {
    use gdal::raster::{Buffer, RasterCreationOptions};
    use gdal::{DriverManager, Metadata};
    let mem = DriverManager::get_driver_by_name("MEM").unwrap();
    let ds = mem
        .create_with_band_type::<u16, _>("", w, h, names.len())
        .unwrap();
    for (b, name) in names.iter().enumerate() {
        let mut band = ds.rasterband(b + 1).unwrap();
        band.set_description(name).unwrap();
        let data: Vec<u16> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(b, x, y))
            .collect();
        band.write((0, 0), (w, h), &mut Buffer::new((w, h), data))
            .unwrap();
    }
    let gtiff = DriverManager::get_driver_by_name("GTiff").unwrap();
    drop(
        ds.create_copy(&gtiff, path, &RasterCreationOptions::new())
            .unwrap(),
    );
}

/// A 4-band (B02, B03, B04, B08) uint16 reflectance dataset of `n` scenes
/// in `dir`, two views per place; places alternate between splits train
/// and val, pairs of places between labels `bright` and `dark`
/// (reflectance x 3 and x 1): its manifest.
pub fn four_band_scenes(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from("path,location_id,split,label\n");
    for i in 0..n {
        let name = format!("scene{i}.tif");
        // Reflectance x 10000 with a per-scene pattern, so that the
        // features differ between images and between bands.
        write_geotiff(
            &dir.join(&name),
            (40, 36),
            &["B02", "B03", "B04", "B08"],
            |b, x, y| {
                let v = 100 + 230 * b + 32 * ((x * (i + 1) + 3 * y + 5 * b) % 23);
                (v * if (i / 4) % 2 == 0 { 3 } else { 1 }) as u16
            },
        );
        let place = i / 2;
        let split = if place % 2 == 0 { "train" } else { "val" };
        let label = if (place / 2) % 2 == 0 {
            "bright"
        } else {
            "dark"
        };
        csv += &format!("{name},place{place},{split},{label}\n");
    }
    let manifest = dir.join("scenes.csv");
    std::fs::write(&manifest, csv).unwrap();
    manifest
}
