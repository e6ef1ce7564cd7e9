//! Decoded images kept between epochs: evaluation reads the same rows again
//! and again (the linear probe's 100 epochs of RandomCrop views, the
//! pretraining kNN monitor every few epochs), and decoding a full-size
//! satellite JPEG costs far more than the view made from it. A
//! [`DecodedCache`] keeps each row's image after the decode and the view's
//! deterministic first step (torchvision's `Resize`, or `Resize` +
//! `CenterCrop` where nothing random follows), so later epochs only crop and
//! normalise.
//!
//! Each row has its own slot (a [`OnceLock`]): readers of different rows
//! never wait on each other, and a cached row is read without any lock. The
//! bytes held are bounded by a [`CacheBudget`] (by default a quarter of the
//! machine's memory, `GEOSSL_DECODE_CACHE_MB` to change it); once it is
//! spent, the rows that did not fit are decoded on every read, and one line
//! says so.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rand::Rng;

use super::augment::{
    augment_bands_into, augment_into, bands_center_crop, normalize_bands_into, normalize_into,
    random_crop_geometry, resize_bands_box, resize_box, resize_center_crop, shorter_side_size,
    AugConfig, FloatImage, PixelBox, ResampleError, ViewTransform,
};
use super::band_image::{BandImage, SourceImage};
use super::bands::InputSpec;

/// The environment variable that sets the default budget, in MiB.
pub const BUDGET_ENV: &str = "GEOSSL_DECODE_CACHE_MB";

/// Bytes the decoded images of all the caches sharing it may hold.
#[derive(Debug)]
pub struct CacheBudget {
    limit: u64,
    used: AtomicU64,
    /// Whether the "budget spent" line was written.
    reported: AtomicBool,
}

impl CacheBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        })
    }

    /// The process's budget, shared by every cache that does not bring its
    /// own: `GEOSSL_DECODE_CACHE_MB` MiB when set, else a quarter of the
    /// machine's memory (`MemTotal` of /proc/meminfo; 2 GiB where that
    /// cannot be read). A value that is not a whole number is warned about
    /// and the default used.
    pub fn process() -> Arc<Self> {
        static BUDGET: OnceLock<Arc<CacheBudget>> = OnceLock::new();
        BUDGET
            .get_or_init(|| {
                let from_env = std::env::var(BUDGET_ENV).ok().and_then(|v| {
                    let mb = v.trim().parse::<u64>();
                    match mb {
                        Ok(0) => tracing::info!(
                            "{BUDGET_ENV}=0: decoded images are not kept; every epoch decodes them"
                        ),
                        Ok(_) => {}
                        Err(_) => tracing::warn!(
                            "{BUDGET_ENV}={v}: not a whole number of MiB; using the default budget (a quarter of the machine's memory)"
                        ),
                    }
                    mb.ok().map(|mb| mb << 20)
                });
                CacheBudget::new(from_env.unwrap_or_else(|| memory_total().unwrap_or(8 << 30) / 4))
            })
            .clone()
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget if they fit (no lock: a compare and
    /// swap loop).
    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Says once that the budget is spent and what that costs.
    fn report_full(&self, bytes: u64) {
        // A zero budget is the cache turned off (said when it is read).
        if self.limit > 0 && !self.reported.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "decoded-image cache full: {} MiB held of its {} MiB budget, an image of {} KiB does not fit; rows that do not fit are decoded again on every epoch (set {BUDGET_ENV} to change the budget)",
                self.used() >> 20,
                self.limit >> 20,
                bytes >> 10
            );
        }
    }
}

impl Drop for DecodedCache {
    /// A dropped cache gives its bytes back to the budget.
    fn drop(&mut self) {
        let held: u64 = self
            .slots
            .iter()
            .filter_map(|s| s.get())
            .map(|i| image_bytes(i))
            .sum();
        self.budget.release(held);
    }
}

/// `MemTotal` of /proc/meminfo in bytes.
fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Bytes of a decoded image's pixels (and validity mask).
fn image_bytes(img: &SourceImage) -> u64 {
    match img {
        SourceImage::Rgb8(i) => i.as_raw().len() as u64,
        SourceImage::Bands(b) => (b.data.len() * 4 + b.valid.len()) as u64,
    }
}

/// One prepared image per manifest row, shared by the clones of a loader
/// (and, through [`crate::eval::task::Task`], by the loaders of one task):
/// the image after [`prepare_view`].
#[derive(Debug)]
pub struct DecodedCache {
    slots: Vec<OnceLock<Arc<SourceImage>>>,
    budget: Arc<CacheBudget>,
    loads: AtomicUsize,
}

impl DecodedCache {
    /// An empty cache for a manifest of `rows` rows, under `budget`.
    pub fn new(rows: usize, budget: Arc<CacheBudget>) -> Arc<Self> {
        Arc::new(Self {
            slots: (0..rows).map(|_| OnceLock::new()).collect(),
            budget,
            loads: AtomicUsize::new(0),
        })
    }

    /// The image of `row`: the cached one, or `load`'s, kept when the
    /// budget allows. `load`'s error is returned and nothing is kept (an
    /// unreadable row is tried again, and fails again, on its next read).
    /// Panics when `row` is not a row of the manifest the cache was made for.
    pub fn get_or_load<E>(
        &self,
        row: usize,
        load: impl FnOnce() -> Result<SourceImage, E>,
    ) -> Result<Arc<SourceImage>, E> {
        let slot = &self.slots[row];
        if let Some(img) = slot.get() {
            return Ok(img.clone());
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        let img = Arc::new(load()?);
        let bytes = image_bytes(&img);
        if self.budget.reserve(bytes) {
            if slot.set(img.clone()).is_err() {
                // Another reader of the same row was first: its copy stays.
                self.budget.release(bytes);
            }
        } else {
            self.budget.report_full(bytes);
        }
        Ok(img)
    }

    /// How many times an image was loaded (decoded) through the cache.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::Relaxed)
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The deterministic first step of `view` on a decoded image, what the
/// cache keeps: `CenterCrop` views: Resize(size) + CenterCrop(size), the
/// finished geometry (exactly the uncached path's intermediate);
/// `RandomCrop` views: Resize(size) (torchvision's `Resize` of the shorter
/// side, PIL's antialiased bilinear), the random crop comes after;
/// `Augment` with a pre-size: Resize + CenterCrop to it (exactly aug+'s
/// pre-step); `Augment` without: the image itself.
pub fn prepare_view(view: &ViewTransform, img: SourceImage) -> Result<SourceImage, ResampleError> {
    let side = match view {
        ViewTransform::CenterCrop { size } => Some(*size),
        ViewTransform::Augment(a) => a.pre_size,
        ViewTransform::RandomCrop { size } => {
            let (w, h) = img.dimensions();
            let (nw, nh) = shorter_side_size(w, h, *size);
            return Ok(match img {
                SourceImage::Rgb8(rgb) => {
                    SourceImage::Rgb8(resize_box(&rgb, PixelBox::whole(w, h), nw, nh)?)
                }
                SourceImage::Bands(b) => {
                    SourceImage::Bands(resize_bands_box(&b, PixelBox::whole(w, h), nw, nh)?)
                }
            });
        }
    };
    Ok(match (side, img) {
        (None, img) => img,
        (Some(s), SourceImage::Rgb8(rgb)) => SourceImage::Rgb8(resize_center_crop(&rgb, s)?),
        (Some(s), SourceImage::Bands(b)) => SourceImage::Bands(bands_center_crop(&b, s)?),
    })
}

/// `view` applied to an image made by [`prepare_view`] with the same view:
/// writes C x size x size normalised values into `out` and returns the
/// view's valid pixels, as [`ViewTransform::apply_source_into`] does with
/// the same random draws in the same order. `CenterCrop` and `Augment`
/// give exactly the uncached values; `RandomCrop` crops the resized image
/// (torchvision's order, Resize then RandomCrop), where the uncached path
/// resamples the crop's box of the original in one pass: a pixel may differ
/// by one 8-bit level where the two resamplers' fixed-point weights round
/// differently (`cached_random_crop_is_within_one_level`).
pub fn apply_prepared_into<R: Rng>(
    view: &ViewTransform,
    img: &SourceImage,
    spec: &InputSpec,
    rng: &mut R,
    out: &mut [f32],
) -> Result<usize, ResampleError> {
    match view {
        ViewTransform::CenterCrop { .. } => {
            // The prepared image is the finished crop: the uncached path's
            // guard resize (a no-op for it) and normalisation.
            apply_finished(img, view.size(), spec, out)
        }
        ViewTransform::Augment(a) => {
            let a = AugConfig {
                pre_size: None,
                ..*a
            };
            match img {
                SourceImage::Rgb8(rgb) => {
                    augment_into(rgb, &a, rng, out)?;
                    Ok((a.size * a.size) as usize)
                }
                SourceImage::Bands(b) => augment_bands_into(b, &a, spec, rng, out),
            }
        }
        ViewTransform::RandomCrop { size } => {
            let (w, h) = img.dimensions();
            // Resize(size) of the prepared image is itself, so the draws
            // and offsets are those of the uncached geometry.
            let g = random_crop_geometry(w, h, *size, rng);
            let crop = match img {
                SourceImage::Rgb8(rgb) => SourceImage::Rgb8(
                    image::imageops::crop_imm(rgb, g.left, g.top, g.width, g.height).to_image(),
                ),
                SourceImage::Bands(b) => {
                    SourceImage::Bands(crop_bands(b, g.left, g.top, g.width, g.height))
                }
            };
            apply_finished(&crop, *size, spec, out)
        }
    }
}

/// A finished size x size view (resized to it first if it is not, as the
/// uncached path guards), normalised into `out`; returns its valid pixels.
fn apply_finished(
    img: &SourceImage,
    size: u32,
    spec: &InputSpec,
    out: &mut [f32],
) -> Result<usize, ResampleError> {
    let (w, h) = img.dimensions();
    match img {
        SourceImage::Rgb8(rgb) => {
            let resized;
            let view = if (w, h) == (size, size) {
                rgb
            } else {
                resized = resize_box(rgb, PixelBox::whole(w, h), size, size)?;
                &resized
            };
            normalize_into(&FloatImage::from_rgb8(view), out);
            Ok((size * size) as usize)
        }
        SourceImage::Bands(b) => {
            let resized;
            let view = if (w, h) == (size, size) {
                b
            } else {
                resized = resize_bands_box(b, PixelBox::whole(w, h), size, size)?;
                &resized
            };
            Ok(normalize_bands_into(view, spec, out))
        }
    }
}

/// The `width` x `height` window of `img` at (`left`, `top`), every band
/// and the validity mask; the window must lie inside the image.
fn crop_bands(img: &BandImage, left: u32, top: u32, width: u32, height: u32) -> BandImage {
    let (l, t, w, h) = (left as usize, top as usize, width as usize, height as usize);
    let rows = |plane: usize| (t..t + h).map(move |y| (plane * img.height + y) * img.width + l);
    let data: Vec<f32> = (0..img.channels)
        .flat_map(rows)
        .flat_map(|start| img.data[start..start + w].iter().copied())
        .collect();
    let valid: Vec<bool> = rows(0)
        .flat_map(|start| img.valid[start..start + w].iter().copied())
        .collect();
    BandImage {
        width: w,
        height: h,
        channels: img.channels,
        valid_count: valid.iter().filter(|&&v| v).count(),
        data,
        valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::band_image::tests::{manifest_of, write_raster};
    use crate::data::bands::{BandSelection, Radiometry};
    use crate::data::loader::ImageLoader;
    use crate::data::Manifest;
    use tch::Tensor;

    /// Satellite-like noise (high entropy, so resampling differences show)
    /// in PNGs of odd sizes, landscape and portrait.
    fn rgb_world(dir: &std::path::Path) -> Arc<Manifest> {
        let sizes = [(61, 47), (47, 61), (97, 53), (40, 40), (75, 33), (33, 90)];
        let mut csv = String::from("path\n");
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = (x * 7919 + y * 104_729 + i as u32 * 31).wrapping_mul(2_654_435_761);
                image::Rgb([(v >> 24) as u8, (v >> 16) as u8, (x * 5 + y * 3) as u8])
            });
            img.save(dir.join(format!("i{i}.png"))).unwrap();
            csv.push_str(&format!("i{i}.png\n"));
        }
        std::fs::write(dir.join("m.csv"), csv).unwrap();
        Arc::new(Manifest::read(&dir.join("m.csv")).unwrap())
    }

    /// Every epoch's images of `loader`, one tensor per batch.
    fn epochs(loader: &ImageLoader, n: u64) -> Vec<Tensor> {
        (0..n)
            .flat_map(|e| loader.epoch(e).map(|b| b.unwrap().images))
            .collect()
    }

    /// The largest difference between two loaders' epochs, and the share
    /// of values that differ at all.
    fn difference(a: &[Tensor], b: &[Tensor]) -> (f64, f64) {
        assert_eq!(a.len(), b.len());
        let (mut max, mut differ, mut all) = (0f64, 0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.size(), y.size());
            let d = (x - y).abs();
            max = max.max(d.max().double_value(&[]));
            differ += d.gt(0.0).sum(tch::Kind::Float).double_value(&[]);
            all += d.numel() as f64;
        }
        (max, differ / all)
    }

    fn loader(m: &Arc<Manifest>, view: ViewTransform, input: InputSpec) -> ImageLoader {
        let mut l = ImageLoader::new(m.clone(), (0..m.records.len()).collect(), view, 4, input);
        l.seed = 3;
        l
    }

    #[test]
    fn a_probe_like_loader_decodes_each_row_once_and_center_crops_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let m = rgb_world(dir.path());
        let rows = m.records.len();
        for view in [
            ViewTransform::CenterCrop { size: 24 },
            ViewTransform::Augment(AugConfig::aug_plus_pre(16, 30)),
        ] {
            let mut plain = loader(&m, view, InputSpec::rgb());
            plain.shuffle = true;
            let cached = plain.clone().cached();
            let expected = epochs(&plain, 4);
            let got = epochs(&cached, 4);
            let cache = cached.cache.as_ref().unwrap();
            assert_eq!(cache.loads(), rows, "{view:?}: one decode per row");
            assert_eq!(cache.len(), rows);
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    g.equal(e),
                    "{view:?}: the cached views are the uncached ones"
                );
            }
        }
    }

    #[test]
    fn cached_random_crop_is_within_one_level() {
        let dir = tempfile::tempdir().unwrap();
        let m = rgb_world(dir.path());
        let view = ViewTransform::RandomCrop { size: 24 };
        let plain = loader(&m, view, InputSpec::rgb());
        let cached = plain.clone().cached();
        let (expected, got) = (epochs(&plain, 5), epochs(&cached, 5));
        assert_eq!(cached.cache.as_ref().unwrap().loads(), m.records.len());
        let (max, share) = difference(&got, &expected);
        // One 8-bit level after ImageNet's normalisation (smallest std).
        let level = 1.0 / 255.0 / 0.224;
        eprintln!(
            "RandomCrop cached vs fused: max {max:.5} ({:.2} levels), {:.4}% of values differ",
            max / level * 0.224 / 0.224,
            share * 100.0
        );
        assert!(max <= level + 1e-5, "max difference {max}");
        assert!(share < 0.05, "{share} of the values differ");
    }

    #[test]
    fn c_band_views_are_cached_too() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("s{i}.tif")).collect();
        for (i, name) in names.iter().enumerate() {
            write_raster::<u16>(
                &dir.path().join(name),
                (37 + i, 29),
                5,
                Some(0.0),
                &[],
                &[],
                |b, x, y| {
                    if y < 2 && i % 2 == 1 {
                        0
                    } else {
                        (1 + b * 900 + (x * 37 + y * 91) % 700 + i) as u16
                    }
                },
            );
        }
        let files: Vec<&str> = names.iter().map(String::as_str).collect();
        let m = Arc::new(manifest_of(dir.path(), &files));
        let spec = InputSpec::resolve(
            BandSelection::All,
            "scale:10000".parse::<Radiometry>().unwrap(),
            &m,
            None,
        )
        .unwrap();
        let center = loader(&m, ViewTransform::CenterCrop { size: 16 }, spec.clone());
        let (e, g) = (epochs(&center, 2), epochs(&center.clone().cached(), 2));
        assert!(g.iter().zip(&e).all(|(g, e)| g.equal(e)));
        let random = loader(&m, ViewTransform::RandomCrop { size: 16 }, spec);
        let cached = random.clone().cached();
        let (max, _) = difference(&epochs(&cached, 3), &epochs(&random, 3));
        eprintln!("C-band RandomCrop cached vs fused: max {max:e}");
        assert!(max < 1e-4, "{max}");
        let nodata =
            |l: &ImageLoader| -> u64 { l.epoch(0).map(|b| b.unwrap().nodata_pixels).sum() };
        assert_eq!(nodata(&cached), nodata(&random), "the same invalid pixels");
        assert_eq!(cached.cache.as_ref().unwrap().loads(), 4);
    }

    #[test]
    fn past_the_budget_rows_are_decoded_every_time_with_the_same_views() {
        let dir = tempfile::tempdir().unwrap();
        let m = rgb_world(dir.path());
        let view = ViewTransform::CenterCrop { size: 24 };
        let plain = loader(&m, view, InputSpec::rgb());
        // Room for two 24 x 24 RGB crops.
        let budget = CacheBudget::new(2 * 24 * 24 * 3);
        let cache = DecodedCache::new(m.records.len(), budget.clone());
        let cached = plain.clone().with_cache(cache.clone());
        let (e, g) = (epochs(&plain, 3), epochs(&cached, 3));
        assert!(g.iter().zip(&e).all(|(g, e)| g.equal(e)));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.loads(), 2 + 3 * (m.records.len() - 2));
        assert_eq!(budget.used(), budget.limit());
        drop((cached, cache));
        assert_eq!(budget.used(), 0, "a dropped cache gives its bytes back");
    }
}
