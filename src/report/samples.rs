//! What the network is shown: the first query/key pairs of a run's first
//! epoch, made by the run's own loader and augmentation (same seed, same
//! pairing: with temporal positives the key is another view of the place),
//! turned back into pictures for the report.

use base64::Engine;
use image::RgbImage;
use tch::Tensor;

use crate::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
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

/// Up to `n` pairs, exactly as pretraining with `config` draws them first
/// (an unreadable image is replaced or stops the drawing, as the run's
/// `on_bad_image` says).
pub fn augmented_pairs(
    config: &PretrainConfig,
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
    let loader = PairLoader::new(
        manifest.clone(),
        LoaderConfig {
            batch: n,
            prefetch: 1,
            geo_labels: false,
            ..config.loader(false)
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
                query_png: png_data_uri(&to_rgb(&batch.query.get(i as i64))?)?,
                key_png: png_data_uri(&to_rgb(&batch.key.get(i as i64))?)?,
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

/// A normalised [3, H, W] image back to 8-bit RGB.
pub fn to_rgb(t: &Tensor) -> anyhow::Result<RgbImage> {
    let size = t.size();
    anyhow::ensure!(
        size.len() == 3 && size[0] == 3,
        "expected a [3, H, W] image, got {size:?}"
    );
    let (h, w) = (size[1] as usize, size[2] as usize);
    let values: Vec<f32> = Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).contiguous().view(-1))?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let v = values[c * plane + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
            px.0[c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
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
        assert_eq!(to_rgb(&t).unwrap(), img);
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
        let drawn = augmented_pairs(&config, m.clone(), n).unwrap();
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
}
