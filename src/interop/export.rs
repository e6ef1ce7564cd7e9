//! Export to the PyTorch world: safetensors files whose names and shapes are
//! torchvision's, so that
//!
//! ```python
//! m = torchvision.models.resnet50()
//! m.load_state_dict(safetensors.torch.load_file("encoder.safetensors"), strict=False)
//! ```
//!
//! loads every backbone tensor (BN running statistics and
//! `num_batches_tracked` included) and leaves only `fc` untouched. The MoCo
//! projection MLP travels as `projection_head.{0,2}.*` and the geo head as
//! `geo_head.1.*`, names torchvision ignores under `strict=False`. The
//! header's metadata says what the weights are (method, epochs, arch, input
//! size, geo classes) and what they read: `in_chans` (C, conv1's input
//! channels, `[64, C, 7, 7]`: torchvision's `conv1 = nn.Conv2d(C, 64, 7, 2,
//! 3, bias=False)`, timm's `in_chans=C`), the bands and their names, the
//! radiometry and the per-channel normalisation (`normalize_mean`,
//! `normalize_std`: ImageNet's for RGB, the run's own for other input).
//! `input_spec` holds the whole resolved input as JSON.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use tch::{Device, Kind, Tensor};

use crate::data::bands::InputSpec;
use crate::formats::safetensors::read_safetensors;
use crate::model::moco::bn_groups_for;
use crate::train::checkpoint::TrainState;
use crate::train::encoder_source::{ClassifierInfo, EncoderSource};
use crate::train::{CheckpointDir, ClassifierDir};

/// What to export from a pretraining checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The query encoder's backbone, torchvision names (what the paper transfers).
    Backbone,
    /// The query backbone plus the projection MLP and geo head.
    Query,
    /// The momentum (key) encoder's backbone plus its projection MLP.
    Key,
    /// Everything of the model as in the checkpoint (`encoder_q.*`,
    /// `encoder_k.*`, `geo_head.*`, `queue`), without optimiser state.
    Full,
}

impl crate::settings::Choice for Part {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            Part::Backbone,
            "backbone",
            "The query encoder's backbone, torchvision names (what the paper transfers)",
        ),
        (
            Part::Query,
            "query",
            "The query backbone plus the projection MLP and geo head",
        ),
        (
            Part::Key,
            "key",
            "The momentum (key) encoder's backbone plus its projection MLP",
        ),
        (
            Part::Full,
            "full",
            "Everything of the model as in the checkpoint (`encoder_q.*`, `encoder_k.*`, \
             `geo_head.*`, `queue`), without optimiser state",
        ),
    ];
}
crate::settings::choice_by_name!(Part);

/// What was written.
#[derive(Debug)]
pub struct Exported {
    pub tensors: usize,
    pub metadata: BTreeMap<String, String>,
}

/// Renames a checkpoint tensor for `part`; `None` leaves it out.
fn export_name(name: &str, part: Part) -> Option<String> {
    if name.starts_with("optimizer.") {
        return None;
    }
    let encoder = match part {
        Part::Full => return Some(name.to_string()),
        Part::Backbone | Part::Query => "encoder_q.",
        Part::Key => "encoder_k.",
    };
    if let Some(rest) = name.strip_prefix(encoder) {
        return match rest.strip_prefix("fc.") {
            None => Some(rest.to_string()),
            Some(_) if part == Part::Backbone => None,
            Some(head) => Some(format!("projection_head.{head}")),
        };
    }
    (part == Part::Query && name.starts_with("geo_head.")).then(|| name.to_string())
}

/// Adds torchvision's `num_batches_tracked` (int64 scalar) beside every BN
/// layer's running statistics: the number of training-mode forward passes
/// the layer has seen.
pub fn add_num_batches_tracked(tensors: &mut BTreeMap<String, Tensor>, batches: i64) {
    let layers: Vec<String> = tensors
        .keys()
        .filter_map(|n| n.strip_suffix(".running_var").map(str::to_string))
        .collect();
    for layer in layers {
        tensors.insert(
            format!("{layer}.num_batches_tracked"),
            Tensor::from(batches),
        );
    }
}

/// Writes `tensors` with `metadata` into a safetensors file (atomically).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut buffers: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let (dtype, bytes) = match t.kind() {
            Kind::Float => {
                let v: Vec<f32> = Vec::try_from(t.flatten(0, -1))?;
                (
                    safetensors::Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }
            Kind::Int64 => {
                let v: Vec<i64> = Vec::try_from(t.flatten(0, -1))?;
                (
                    safetensors::Dtype::I64,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }
            other => anyhow::bail!("{name}: cannot export tensors of kind {other:?}"),
        };
        let shape = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype, shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    let info: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::tensor::serialize(views, &Some(info))
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    crate::formats::atomic_write::write_atomically(path, |w| {
        use std::io::Write;
        Ok(w.write_all(&bytes)?)
    })
}

/// The metadata of a safetensors file (its `__metadata__`).
pub fn read_metadata(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e:?})", path.display()))?;
    Ok(meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// The input side of the metadata: image size, channels, bands, band
/// names, radiometry and the per-channel normalisation of `input`
/// (`[0.485, 0.456, 0.406]` style lists, as before for RGB).
fn input_metadata(
    meta: &mut BTreeMap<String, String>,
    image_size: u32,
    input: &InputSpec,
) -> anyhow::Result<()> {
    meta.insert("format".into(), "pt".into());
    meta.insert("geossl_version".into(), env!("CARGO_PKG_VERSION").into());
    meta.insert("image_size".into(), image_size.to_string());
    meta.insert("normalize_mean".into(), format!("{:?}", input.mean));
    meta.insert("normalize_std".into(), format!("{:?}", input.std));
    meta.insert("in_chans".into(), input.channels().to_string());
    let bands: Vec<String> = input.bands.iter().map(usize::to_string).collect();
    meta.insert("bands".into(), bands.join(","));
    meta.insert(
        "band_names".into(),
        serde_json::to_string(&input.band_names)?,
    );
    meta.insert("radiometry".into(), input.radiometry.to_string());
    meta.insert("input_transform".into(), input.transform_formula());
    meta.insert("input_spec".into(), serde_json::to_string(input)?);
    Ok(())
}

/// Exports `part` of the checkpoint (a run folder, a checkpoint folder or a
/// classifier folder from `finetune`) to `out`.
pub fn export(checkpoint_path: &Path, out: &Path, part: Part) -> anyhow::Result<Exported> {
    let (tensors, meta) = match EncoderSource::resolve(checkpoint_path)? {
        EncoderSource::Classifier { dir, info } => classifier_tensors(&dir, &info)?,
        EncoderSource::Checkpoint { dir, state } => checkpoint_tensors(&dir, &state, part)?,
        EncoderSource::Backbone { path } => backbone_tensors(&path, part)?,
    };
    anyhow::ensure!(
        !tensors.is_empty(),
        "{}: nothing to export",
        checkpoint_path.display()
    );
    write_safetensors(out, &tensors, &meta)?;
    Ok(Exported {
        tensors: tensors.len(),
        metadata: meta,
    })
}

pub(crate) type TensorsAndMetadata = (BTreeMap<String, Tensor>, BTreeMap<String, String>);

/// A classifier is a torchvision model already: backbone and fc.
fn classifier_tensors(
    dir: &ClassifierDir,
    info: &ClassifierInfo,
) -> anyhow::Result<TensorsAndMetadata> {
    let mut meta = BTreeMap::new();
    let mut tensors: BTreeMap<String, Tensor> =
        read_safetensors(&dir.weights())?.into_iter().collect();
    add_num_batches_tracked(&mut tensors, 0);
    meta.insert("part".into(), "classifier".into());
    meta.insert("arch".into(), info.resnet.arch.name().into());
    meta.insert("width".into(), info.resnet.width.to_string());
    meta.insert("small_input".into(), info.resnet.small_input.to_string());
    meta.insert("classes".into(), serde_json::to_string(&info.classes)?);
    meta.insert("target".into(), info.target.clone());
    meta.insert("epochs".into(), info.epochs.to_string());
    input_metadata(&mut meta, info.image_size, &info.input)?;
    Ok((tensors, meta))
}

/// `part` of a pretraining checkpoint, described by its training state.
pub(crate) fn checkpoint_tensors(
    dir: &CheckpointDir,
    state: &TrainState,
    part: Part,
) -> anyhow::Result<TensorsAndMetadata> {
    let mut meta = BTreeMap::new();
    let mut tensors: BTreeMap<String, Tensor> = read_safetensors(&dir.model_safetensors())?
        .into_iter()
        .filter_map(|(n, t)| export_name(&n, part).map(|n| (n, t)))
        .collect();
    // Each step ran every BN layer once per BN group in training mode.
    let groups = bn_groups_for(
        state.config.moco.bn_groups,
        state.config.optimizer.batch_size as i64,
    );
    add_num_batches_tracked(&mut tensors, state.step as i64 * groups);
    let c = &state.config;
    meta.insert("part".into(), format!("{part:?}").to_lowercase());
    meta.insert("method".into(), c.method.name().into());
    meta.insert("epochs".into(), state.epoch.to_string());
    meta.insert("steps".into(), state.step.to_string());
    meta.insert("arch".into(), c.model.arch.name().into());
    meta.insert("width".into(), c.model.width.to_string());
    meta.insert("small_input".into(), c.model.small_input.to_string());
    meta.insert("moco_dim".into(), c.moco.moco_dim.to_string());
    meta.insert(
        "geo_classes".into(),
        state.geo_classes.map_or("none".into(), |k| k.to_string()),
    );
    let manifest = dir
        .run_dir()
        .map_or_else(|| c.manifest.clone(), |run| c.manifest_in(run.path()));
    meta.insert("manifest".into(), manifest.display().to_string());
    // `geossl cluster` writes the centroids beside the manifest.
    let clusters = crate::geo::locations::centroids_path(&manifest);
    if state.geo_classes.is_some() {
        if let Ok(text) = std::fs::read_to_string(&clusters) {
            meta.insert("geo_clusters".into(), text);
        }
    }
    meta.insert("checkpoint".into(), dir.path().display().to_string());
    input_metadata(&mut meta, c.data.image_size, &state.input)?;
    Ok((tensors, meta))
}

/// A plain backbone file (torchvision / timm / torchgeo state dict): its
/// backbone, the only part it has, with `num_batches_tracked` 0 (the file's
/// counters are not kept) and the input side of the paper (224).
fn backbone_tensors(path: &Path, part: Part) -> anyhow::Result<TensorsAndMetadata> {
    anyhow::ensure!(
        part == Part::Backbone,
        "{}: a backbone file holds only a backbone; export --part backbone",
        path.display()
    );
    let backbone = super::backbone::read(path)?;
    let mut tensors = backbone.tensors;
    add_num_batches_tracked(&mut tensors, 0);
    let r = backbone.resnet;
    let mut meta = BTreeMap::new();
    meta.insert("part".into(), "backbone".into());
    meta.insert("arch".into(), r.arch.name().into());
    meta.insert("width".into(), r.width.to_string());
    meta.insert("small_input".into(), r.small_input.to_string());
    meta.insert("checkpoint".into(), path.display().to_string());
    meta.insert("source_layout".into(), backbone.layout);
    let size = crate::train::config::DataConfig::default().image_size;
    input_metadata(&mut meta, size, &backbone.input)?;
    Ok((tensors, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_part() {
        let n = |s, p| export_name(s, p);
        assert_eq!(
            n("encoder_q.layer1.0.conv1.weight", Part::Backbone).as_deref(),
            Some("layer1.0.conv1.weight")
        );
        assert_eq!(n("encoder_q.fc.0.weight", Part::Backbone), None);
        assert_eq!(
            n("encoder_q.fc.2.bias", Part::Query).as_deref(),
            Some("projection_head.2.bias")
        );
        assert_eq!(
            n("geo_head.1.weight", Part::Query).as_deref(),
            Some("geo_head.1.weight")
        );
        assert_eq!(n("geo_head.1.weight", Part::Backbone), None);
        assert_eq!(
            n("encoder_k.bn1.running_mean", Part::Key).as_deref(),
            Some("bn1.running_mean")
        );
        assert_eq!(n("encoder_k.bn1.running_mean", Part::Query), None);
        assert_eq!(n("queue", Part::Full).as_deref(), Some("queue"));
        assert_eq!(
            n(
                "optimizer.momentum_buffer.encoder_q.conv1.weight",
                Part::Full
            ),
            None
        );
    }

    #[test]
    fn writes_scalars_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let mut t = BTreeMap::new();
        t.insert(
            "bn1.running_var".to_string(),
            Tensor::ones([4], (Kind::Float, Device::Cpu)),
        );
        add_num_batches_tracked(&mut t, 7);
        let mut meta = BTreeMap::new();
        meta.insert("arch".to_string(), "resnet50".to_string());
        write_safetensors(&p, &t, &meta).unwrap();
        let back = read_safetensors(&p).unwrap();
        let nbt = &back["bn1.num_batches_tracked"];
        assert_eq!(
            (nbt.size(), nbt.kind(), nbt.int64_value(&[])),
            (vec![], Kind::Int64, 7)
        );
        assert_eq!(read_metadata(&p).unwrap()["arch"], "resnet50");
    }
}
