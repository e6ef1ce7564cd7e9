//! What the network is shown: the first query/key pairs of a run's first
//! epoch, made by the run's own loader and augmentation (same seed, same
//! pairing: with temporal positives the key is another view of the place),
//! turned back into pictures for the report.

use base64::Engine;
use image::RgbImage;
use tch::Tensor;

use crate::data::bands::InputSpec;
use crate::data::loader::{BadImage, LoaderConfig, PairLoader};
use crate::data::Manifest;
use crate::train::PretrainConfig;

/// One pair as PNG data URIs, with where and when its views were taken.
#[derive(Debug, Clone)]
pub struct SamplePair {
    pub query_png: String,
    pub key_png: String,
    pub location: String,
    pub query_time: Option<String>,
    pub key_time: Option<String>,
    /// Whether the key was cut from the query's own image (no other view,
    /// or a method without temporal positives).
    pub same_image: bool,
    /// Manifest rows of the query and the key images (the caption's).
    pub query_row: usize,
    pub key_row: usize,
}

/// The pairs of [`augmented_pairs`], and the unreadable images that the
/// run's `--on-bad-image skip` replaced while drawing them (as pretraining
/// would: each pair shows, and is captioned with, the rows it was drawn
/// from).
#[derive(Debug, Clone)]
pub struct SamplePairs {
    pub pairs: Vec<SamplePair>,
    pub replaced: Vec<BadImage>,
}

/// The three input channels a picture of an image shows (as red, green,
/// blue) and how the report names them: the input's own red, green and
/// blue bands when it has them ([`InputSpec::rgb`]); else a false-colour
/// composite: colour infrared (near infrared, red, green as red, green,
/// blue, the usual false-colour view of vegetation) when bands named
/// B08/B8, B04/B4 and B03/B3 (Sentinel-2, Landsat 4-7 names) are there,
/// else the first three channels; one or two channels repeat the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Composite {
    /// Channel indices (0-based, into the input's C) shown as red, green
    /// and blue.
    pub channels: [usize; 3],
    /// False colour (not the input's own red, green and blue).
    pub false_colour: bool,
    /// `R = B08, G = B04, B = B03` (band names) for the report's text.
    pub label: String,
}

impl Composite {
    /// The composite of `input` (see the type's documentation).
    pub fn of(input: &InputSpec) -> Self {
        let named = |names: &[&str]| {
            input
                .band_names
                .iter()
                .position(|n| names.iter().any(|w| n.eq_ignore_ascii_case(w)))
        };
        let (channels, false_colour) = match input.rgb {
            Some(rgb) => (rgb, false),
            None => match (
                named(&["B08", "B8"]),
                named(&["B04", "B4"]),
                named(&["B03", "B3"]),
            ) {
                (Some(n), Some(r), Some(g)) => ([n, r, g], true),
                _ => {
                    let last = input.channels().max(1) - 1;
                    ([0, 1.min(last), 2.min(last)], true)
                }
            },
        };
        let name = |c: usize| {
            input
                .band_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("channel {c}"))
        };
        let label = format!(
            "R = {}, G = {}, B = {}",
            name(channels[0]),
            name(channels[1]),
            name(channels[2])
        );
        Self {
            channels,
            false_colour,
            label,
        }
    }
}

/// Up to `n` pairs, exactly as pretraining with `config` draws them first
/// (an unreadable image is replaced or stops the drawing, as the run's
/// `on_bad_image` says).
/// `input` is the run's (from its checkpoint); the pictures are the
/// [`Composite::of`] it.
pub fn augmented_pairs(
    config: &PretrainConfig,
    input: &InputSpec,
    manifest: Manifest,
    n: usize,
) -> anyhow::Result<SamplePairs> {
    let manifest = crate::train::pretrain::training_rows(manifest, &config.split)?;
    let n = n.min(manifest.records.len());
    anyhow::ensure!(
        n > 0,
        "{}: no images to draw pairs from",
        manifest.source.display()
    );
    // The run's loader, one batch of the pairs to show; no geo labels
    // needed to look at them.
    // The run's images: its pack when it read one.
    let source = crate::data::source::ImageSource::open(Some(&config.run.packed), &manifest)?;
    let loader = PairLoader::new(
        manifest.clone(),
        LoaderConfig {
            batch: n,
            prefetch: 1,
            geo_labels: false,
            source,
            ..config.loader(false, input)
        },
    )?;
    let batch = loader
        .epoch(0, 0)
        .next()
        .ok_or_else(|| anyhow::anyhow!("the loader produced no batch"))??;
    let time = |row: usize| manifest.records[row].timestamp.map(|t| t.to_string());
    let pairs = (0..batch.rows.len())
        .map(|i| {
            let (q, k) = (batch.rows[i], batch.key_rows[i]);
            let record = &manifest.records[q];
            Ok(SamplePair {
                query_png: png_data_uri(&to_rgb(&batch.query.get(i as i64), input)?)?,
                key_png: png_data_uri(&to_rgb(&batch.key.get(i as i64), input)?)?,
                location: record
                    .location_id
                    .clone()
                    .unwrap_or_else(|| record.path.clone()),
                query_time: time(q),
                key_time: time(k),
                same_image: q == k,
                query_row: q,
                key_row: k,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(SamplePairs {
        pairs,
        replaced: batch.bad,
    })
}

/// A normalised [C, H, W] image of `input` back to an 8-bit picture: the
/// [`Composite::of`] `input`, each channel de-normalised with the input's
/// own mean and std (`u = x * std + mean`, the unit values in [0, 1]) and
/// scaled by 255.
pub fn to_rgb(t: &Tensor, input: &InputSpec) -> anyhow::Result<RgbImage> {
    let size = t.size();
    let c_in = input.channels();
    anyhow::ensure!(
        size.len() == 3 && size[0] == c_in as i64,
        "expected a [{c_in}, H, W] image, got {size:?}"
    );
    let (h, w) = (size[1] as usize, size[2] as usize);
    let values: Vec<f32> = Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).contiguous().view(-1))?;
    let plane = h * w;
    let shown = Composite::of(input).channels;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for (out, &c) in shown.iter().enumerate() {
            let v = values[c * plane + i] * input.std[c] + input.mean[c];
            px.0[out] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(img)
}

/// `data:image/png;base64,...` of `img`.
pub fn png_data_uri(img: &RgbImage) -> anyhow::Result<String> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_images_come_back_as_their_pixels() {
        let img = RgbImage::from_fn(5, 4, |x, y| {
            image::Rgb([(x * 50) as u8, (y * 60) as u8, 77])
        });
        let mut chw = vec![0f32; 3 * 20];
        crate::data::augment::normalize_into(
            &crate::data::augment::FloatImage::from_rgb8(&img),
            &mut chw,
        );
        let t = Tensor::from_slice(&chw).view([3, 4, 5]);
        assert_eq!(to_rgb(&t, &InputSpec::rgb()).unwrap(), img);
        let uri = png_data_uri(&img).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(uri.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8(), img);
    }

    #[test]
    fn pairs_are_captioned_with_the_rows_they_were_drawn_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = crate::data::synth::generate(
            dir.path(),
            &crate::data::synth::SynthConfig {
                locations: 12,
                max_views: 3,
                size: 16,
                seed: 4,
                jpeg_quality: 0,
            },
        )
        .unwrap();
        for r in &mut m.records {
            r.split = Some(crate::data::Split::Train);
        }
        // A row in the middle with an undecodable image and a place of its own.
        std::fs::write(dir.path().join("broken.jpg"), b"not a JPEG").unwrap();
        let broken = m.records.len() / 2;
        m.records[broken].path = "broken.jpg".into();
        m.records[broken].location_id = Some("broken-place".into());
        let mut config = PretrainConfig {
            method: crate::train::Method::MocoTp,
            ..Default::default()
        };
        config.data.image_size = 16;
        let n = m.records.len();
        let drawn = augmented_pairs(&config, &InputSpec::rgb(), m.clone(), n).unwrap();
        assert_eq!(
            drawn.pairs.len(),
            n,
            "every row drawn once, the broken one replaced"
        );
        assert!(drawn.replaced.iter().all(|b| b.path == "broken.jpg"));
        assert!(!drawn.replaced.is_empty());
        for p in &drawn.pairs {
            assert_ne!(p.query_row, broken);
            assert_ne!(p.key_row, broken);
            let record = &m.records[p.query_row];
            assert_eq!(Some(&p.location), record.location_id.as_ref());
            assert_eq!(p.query_time, record.timestamp.map(|t| t.to_string()));
            assert_eq!(
                m.records[p.key_row].location_id, record.location_id,
                "temporal key from the same place"
            );
        }
    }

    /// A 4-band input without colour bands: channels (B08, B04, B03) as a
    /// colour-infrared composite, de-normalised with the input's own
    /// statistics (not ImageNet's).
    fn four_bands(rgb: Option<[usize; 3]>) -> InputSpec {
        InputSpec {
            selection: crate::data::bands::BandSelection::All,
            bands: vec![1, 2, 3, 4],
            band_names: ["B02", "B03", "B04", "B08"].map(String::from).to_vec(),
            radiometry: crate::data::bands::Radiometry::Scale(vec![10000.0]),
            mean: vec![0.1, 0.2, 0.3, 0.4],
            std: vec![0.05, 0.1, 0.15, 0.2],
            stats: Vec::new(),
            rgb,
        }
    }

    #[test]
    fn c_band_images_show_as_rgb_or_named_false_colour_composites() {
        let cir = four_bands(None);
        let c = Composite::of(&cir);
        assert_eq!((c.channels, c.false_colour), ([3, 2, 1], true));
        assert_eq!(c.label, "R = B08, G = B04, B = B03");
        let true_colour = Composite::of(&four_bands(Some([2, 1, 0])));
        assert_eq!(
            (true_colour.channels, true_colour.false_colour),
            ([2, 1, 0], false)
        );
        let mut unnamed = four_bands(None);
        unnamed.band_names = (1..=4).map(|b| format!("band {b}")).collect();
        assert_eq!(Composite::of(&unnamed).channels, [0, 1, 2]);
        unnamed.bands.truncate(1);
        assert_eq!(Composite::of(&unnamed).channels, [0, 0, 0]);
        // Unit values 0.2 (B03), 0.6 (B04), 1.0 (B08) everywhere, normalised
        // per channel; channel 0 (B02) is not shown.
        let unit = [0.9f32, 0.2, 0.6, 1.0];
        let mut chw = Vec::new();
        for (u, (m, s)) in unit.iter().zip(cir.mean.iter().zip(&cir.std)) {
            chw.extend(std::iter::repeat_n((u - m) / s, 6));
        }
        let img = to_rgb(&Tensor::from_slice(&chw).view([4, 2, 3]), &cir).unwrap();
        assert!(
            img.pixels().all(|p| p.0 == [255, 153, 51]),
            "{:?}",
            img.get_pixel(0, 0)
        );
        let wrong = to_rgb(
            &Tensor::zeros([3, 2, 3], (tch::Kind::Float, tch::Device::Cpu)),
            &cir,
        );
        assert!(wrong
            .unwrap_err()
            .to_string()
            .contains("expected a [4, H, W] image"));
    }
}
