//! Importing published PyTorch checkpoints: the official MoCo / GASSL layout
//! (`torch.save` of a dict with `epoch`, `arch`, `state_dict` holding
//! `module.encoder_q.*`, `module.encoder_k.*`, `module.queue`,
//! `module.queue_ptr`, optionally a geo head, and `optimizer`) becomes a
//! geossl run folder with one checkpoint, so `probe`, `knn`, `embed`,
//! `export` and `pretrain --resume` work on it.
//!
//! Both of torch.save's containers are read ([`TorchFile::read`]: the zip
//! format of PyTorch >= 1.6 and the legacy format of the official MoCo-v2
//! weights), through the restricted pickle reader: no code in the file runs.
//!
//! The GASSL checkpoint layout (sustainlab-group/geography-aware-ssl,
//! `moco_fmow/main_moco_geo+tp.py` and `main_moco_fmow_geo.py`) keeps the
//! geo classifier out of the MoCo model, in a top-level `geo_dict`: the
//! state dict of `classifier`, `layers = Sequential(ReLU, Linear(128, K))`
//! applied to the query's projection before normalisation, saved under DDP
//! as `module.layers.1.weight` [K, 128] and `module.layers.1.bias` [K]. It
//! becomes geossl's geo head `geo_head.1.*` (the same function, see
//! [`crate::model::heads::GeoHead`]).
//!
//! The optimizer state is not carried over: PyTorch keys it by parameter
//! position, not name; a resumed run starts with fresh momentum buffers.
//! BN `num_batches_tracked` counters have no counterpart in geossl and are
//! dropped. Both are listed in [`Imported::ignored`], as is any other
//! top-level entry holding tensors: nothing is dropped silently.
//!
//! `conv1` may take any number C of input channels (a multispectral
//! encoder, `Conv2d(C, 64, 7, 2, 3)`). The file does not say which bands
//! they were: C = 3 is taken as RGB ([`InputSpec::rgb`]); other C as
//! bands 1..=C with the documented non-RGB normalisation (see
//! [`imported_input`]). `pretrain --resume` on the import may set the
//! input (`--bands`, `--radiometry`) as any other guessed setting, as long
//! as conv1's shape fits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::pickle::Value;
use super::torch_load::TorchFile;
use crate::data::bands::{BandSelection, InputSpec, Radiometry, STATS_UNIT_MEAN, STATS_UNIT_STD};
use crate::model::weights::copy_named;
use crate::model::{Arch, Moco, ResNetConfig};
use crate::train::checkpoint::{self, TrainState};
use crate::train::config::{MocoSettings, ModelConfig, OptimizerConfig};
use crate::train::sgd::Sgd;
use crate::train::{Method, PretrainConfig};

#[derive(Debug)]
pub struct Imported {
    pub checkpoint: PathBuf,
    /// What the file was, for messages (e.g. "GASSL checkpoint
    /// (state_dict + geo_dict, 100 classes), legacy torch.save format",
    /// "MoCo checkpoint (state_dict), zip torch.save format").
    pub layout: String,
    /// The method of the run folder written: the one the weights were
    /// trained with, as far as the file tells.
    pub method: Method,
    /// What the file tells of the method, for messages ([`method_note`]
    /// for MoCo / GASSL checkpoints).
    pub method_note: String,
    pub arch: Arch,
    pub epoch: usize,
    pub geo_classes: Option<i64>,
    pub tensors: usize,
    /// Tensors of the file that have no place in geossl's model.
    pub ignored: Vec<String>,
}

fn arch_named(name: &str) -> Option<Arch> {
    [Arch::Resnet18, Arch::Resnet34, Arch::Resnet50]
        .into_iter()
        .find(|a| a.name() == name)
}

/// The input recorded for an imported encoder whose conv1 takes
/// `channels` channels: RGB for 3; else bands 1..=C (`band N`), `auto`
/// radiometry, unit mean 0.5 and std 0.25 per channel (the normalisation
/// geossl uses for non-RGB input without dataset statistics).
pub fn imported_input(channels: usize) -> InputSpec {
    if channels == 3 {
        return InputSpec::rgb();
    }
    InputSpec {
        selection: BandSelection::All,
        bands: (1..=channels).collect(),
        band_names: (1..=channels).map(|b| format!("band {b}")).collect(),
        radiometry: Radiometry::Auto,
        mean: vec![STATS_UNIT_MEAN; channels],
        std: vec![STATS_UNIT_STD; channels],
        stats: Vec::new(),
        rgb: None,
    }
}

/// Writes the run folder `out` (which must hold no checkpoints) of an
/// imported model: one checkpoint at `epoch` with fresh optimizer state and
/// `imported_from` set (its config is inferred from tensor shapes and
/// defaults, so the first `--resume` may set the rest), and `config.toml`.
/// Returns the checkpoint folder.
pub(crate) fn write_run(
    out: &Path,
    source: &Path,
    moco: &Moco,
    config: &PretrainConfig,
    geo_classes: Option<i64>,
    epoch: usize,
    input: InputSpec,
) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        checkpoint::latest(out)?.is_none(),
        "{}: already holds checkpoints; import into a new folder",
        out.display()
    );
    let sgd = Sgd::new(
        moco.vs_q.variables(),
        config.optimizer.momentum,
        config.optimizer.weight_decay,
    );
    let state = TrainState {
        imported_from: Some(source.display().to_string()),
        input,
        ..TrainState::at(config, geo_classes, epoch, 0, moco.queue.ptr())
    };
    let checkpoint = checkpoint::save(out, moco, &sgd, &state)?;
    crate::formats::atomic_write::write_string(
        &crate::train::RunDir::new(out).config_toml(),
        &config.to_toml()?,
    )?;
    Ok(checkpoint)
}

/// `geossl import`: a MoCo / GASSL checkpoint (any file holding
/// `encoder_q.*` tensors) through [`import_moco`], any other `.pth` or a
/// `.safetensors` file as a plain backbone through
/// [`super::backbone::import`].
pub fn import(path: &Path, out: &Path) -> anyhow::Result<Imported> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return super::backbone::import(path, out);
    }
    let file = TorchFile::read(path)?;
    if holds_moco(&file) {
        import_moco_file(file, path, out)
    } else {
        super::backbone::import_file(&file, path, out)
    }
}

fn holds_moco(file: &TorchFile) -> bool {
    let state_dict = file.root.get("state_dict").unwrap_or(&file.root);
    match state_dict {
        Value::Dict(items) => items.iter().any(|(k, _)| {
            k.as_str().is_some_and(|n| {
                n.strip_prefix("module.")
                    .unwrap_or(n)
                    .starts_with("encoder_q.")
            })
        }),
        _ => false,
    }
}

/// What the imported weights tell about the method, for messages: the geo
/// head shows the geo task; temporal positives only change which images
/// were paired, so nothing in the weights shows them.
pub fn method_note(method: Method) -> &'static str {
    if method.geo() {
        "a geo head is present; temporal positives leave no trace in the weights, so moco-geo and moco-tp-geo cannot be told apart"
    } else {
        "no geo head; temporal positives leave no trace in the weights, so moco and moco-tp cannot be told apart"
    }
}

/// The top-level entries of the official MoCo / GASSL checkpoints.
const TOP_LEVEL: [&str; 5] = ["epoch", "arch", "state_dict", "optimizer", "geo_dict"];

fn tensor_count(v: &Value) -> usize {
    match v {
        Value::Tensor(_) => 1,
        Value::List(items) | Value::Tuple(items) => items.iter().map(tensor_count).sum(),
        Value::Dict(items) => items
            .iter()
            .map(|(k, v)| tensor_count(k) + tensor_count(v))
            .sum(),
        _ => 0,
    }
}

/// The first data-only object in `v` ([`Value::Opaque`]), by its global.
fn opaque_in(v: &Value) -> Option<&'static str> {
    match v {
        Value::Opaque(kind) => Some(kind),
        Value::List(items) | Value::Tuple(items) => items.iter().find_map(opaque_in),
        Value::Dict(items) => items
            .iter()
            .find_map(|(k, v)| opaque_in(k).or_else(|| opaque_in(v))),
        _ => None,
    }
}

/// How an unused top-level entry `name` is listed in `ignored`: with its
/// tensor count, or the data-only object it is or holds (e.g. "top-level
/// args (argparse.Namespace, not read)"); a plain value (a number, a
/// string) only when `plain`, else None.
pub(crate) fn describe_top_level(name: &str, v: &Value, plain: bool) -> Option<String> {
    match (tensor_count(v), v, opaque_in(v)) {
        (1, ..) => Some(format!("top-level {name} (1 tensor)")),
        (0, Value::Opaque(kind), _) => Some(format!("top-level {name} ({kind}, not read)")),
        (0, _, Some(kind)) => Some(format!("top-level {name} (holds a {kind}, not read)")),
        (0, ..) => plain.then(|| format!("top-level {name} (not read)")),
        (n, ..) => Some(format!("top-level {name} ({n} tensors)")),
    }
}

/// The top-level entries of a checkpoint dict that are not used: the
/// optimizer state, anything unknown that holds tensors (an EMA model, a
/// second head, ...) with its tensor count, and data-only objects
/// (`args`, a numpy `best_acc1`) by their type.
fn top_level_ignored(root: &Value) -> Vec<String> {
    let Value::Dict(items) = root else {
        return Vec::new();
    };
    if root.get("state_dict").is_none() {
        return Vec::new(); // the file is the state dict itself
    }
    let mut out = Vec::new();
    for (k, v) in items {
        let name = k.key_name();
        match (name.as_str(), tensor_count(v)) {
            ("optimizer", n) if n > 0 => out.push(format!(
                "optimizer state ({n} tensor{}; a resumed run starts with fresh momentum)",
                if n == 1 { "" } else { "s" }
            )),
            (known, _) if TOP_LEVEL.contains(&known) && opaque_in(v).is_none() => {}
            _ => out.extend(describe_top_level(&name, v, false)),
        }
    }
    out
}

/// Carries GASSL's `geo_dict` (module documentation) over as
/// `geo_head.1.weight` / `geo_head.1.bias` into `tensors`; its other
/// tensors go to `ignored`. Returns the file's name of the weight (for
/// messages), or None when the file has no `geo_dict`.
fn carry_geo_dict(
    file: &TorchFile,
    pth: &Path,
    tensors: &mut HashMap<String, Tensor>,
    ignored: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    let src = pth.display();
    let Some(geo_dict) = file.root.get("geo_dict") else {
        return Ok(None);
    };
    anyhow::ensure!(
        !tensors.keys().any(|n| n.starts_with("geo_head.")),
        "{src}: both state_dict geo_head.* and a geo_dict: which geo head to use is ambiguous"
    );
    let mut weight = None;
    let mut bias = None;
    for (name, t) in file.tensors_of(geo_dict, "geo_dict")? {
        match name.strip_prefix("module.").unwrap_or(&name) {
            "layers.1.weight" => weight = Some((format!("geo_dict.{name}"), t)),
            "layers.1.bias" => bias = Some((format!("geo_dict.{name}"), t)),
            _ => ignored.push(format!("geo_dict.{name}")),
        }
    }
    let (Some((weight_name, w)), Some((bias_name, b))) = (weight, bias) else {
        anyhow::bail!(
            "{src}: geo_dict lacks layers.1.weight or layers.1.bias (GASSL's classifier: Sequential(ReLU, Linear(128, K)), under DDP as module.layers.*)"
        );
    };
    anyhow::ensure!(
        w.dim() == 2 && b.size() == [w.size()[0]],
        "{src}: {weight_name} {:?} and {bias_name} {:?} are not a Linear's [K, dim] and [K]",
        w.size(),
        b.size()
    );
    tensors.insert("geo_head.1.weight".into(), w);
    tensors.insert("geo_head.1.bias".into(), b);
    Ok(Some(weight_name))
}

/// A file without `encoder_k.*` (weights published with the query encoder
/// only) gets a key encoder that is a copy of `encoder_q`, as MoCo's own
/// initialisation makes it. Returns whether it did so.
fn copy_query_to_key(tensors: &mut HashMap<String, Tensor>) -> bool {
    if tensors.keys().any(|n| n.starts_with("encoder_k.")) {
        return false;
    }
    let copies: Vec<(String, Tensor)> = tensors
        .iter()
        .filter_map(|(n, t)| {
            let rest = n.strip_prefix("encoder_q.")?;
            Some((format!("encoder_k.{rest}"), t.shallow_clone()))
        })
        .collect();
    tensors.extend(copies);
    true
}

/// Imports `pth` (either torch.save format) into the run folder `out`
/// (created; must not hold checkpoints): `state_dict` with `encoder_q.*`,
/// a geo head from `state_dict` `geo_head.*` or GASSL's `geo_dict`.
pub fn import_moco(pth: &Path, out: &Path) -> anyhow::Result<Imported> {
    import_moco_file(TorchFile::read(pth)?, pth, out)
}

/// [`import_moco`] of `file`, already read from `pth`.
fn import_moco_file(file: TorchFile, pth: &Path, out: &Path) -> anyhow::Result<Imported> {
    let src = pth.display();
    let root = &file.root;
    let state_dict = root.get("state_dict").unwrap_or(root);
    let mut tensors: HashMap<String, Tensor> = file
        .tensors_of(state_dict, "state_dict")?
        .into_iter()
        .map(|(n, t)| (n.strip_prefix("module.").unwrap_or(&n).to_string(), t))
        .collect();
    anyhow::ensure!(
        tensors.keys().any(|n| n.starts_with("encoder_q.")),
        "{src}: no encoder_q.* tensors: not a MoCo checkpoint"
    );
    let mut ignored = top_level_ignored(root);
    let geo_dict = carry_geo_dict(&file, pth, &mut tensors, &mut ignored)?;
    let key_copied = copy_query_to_key(&mut tensors);
    let resnet = moco_resnet(pth, root, &tensors)?;
    let arch = resnet.arch;
    let epoch = match root.get("epoch") {
        Some(Value::Int(e)) if *e >= 0 => *e as usize,
        _ => 0,
    };
    let shape = |name: &str| tensors.get(name).map(Tensor::size);
    let fc_out = shape("encoder_q.fc.2.weight").ok_or_else(|| {
        anyhow::anyhow!("{src}: missing encoder_q.fc.2.weight (the MoCo-v2 MLP head)")
    })?;
    let queue_size = shape("queue").map_or(65536, |s| s[1]);
    let geo_classes = shape("geo_head.1.weight").map(|s| s[0]);
    if let (Some(name), Some(w)) = (&geo_dict, shape("geo_head.1.weight")) {
        anyhow::ensure!(
            w[1] == fc_out[0],
            "{src}: {name} has shape {w:?}: it takes {} features, the MoCo projection has {}",
            w[1],
            fc_out[0]
        );
    }
    let mut layout = layout_of(root, geo_dict.is_some(), geo_classes, file.format);
    if key_copied {
        layout.push_str("; no encoder_k: the key encoder starts as a copy of encoder_q");
    }
    let config = PretrainConfig {
        method: if geo_classes.is_some() {
            Method::MocoGeo
        } else {
            Method::Moco
        },
        model: ModelConfig {
            arch,
            width: resnet.width,
            small_input: resnet.small_input,
            ..Default::default()
        },
        optimizer: OptimizerConfig {
            epochs: epoch.max(1),
            batch_size: if queue_size % 256 == 0 {
                256
            } else {
                queue_size as usize
            },
            ..Default::default()
        },
        moco: MocoSettings {
            moco_dim: fc_out[0],
            moco_k: queue_size,
            ..Default::default()
        },
        ..Default::default()
    };
    // moco_resnet checked conv1's rank and kernel, not its input channels.
    anyhow::ensure!(
        resnet.in_channels >= 1,
        "{src}: encoder_q.conv1.weight has shape {:?}, not [width, C, k, k]",
        tensors["encoder_q.conv1.weight"].size()
    );
    let input = imported_input(resnet.in_channels as usize);
    let mut moco = Moco::new(Device::Cpu, resnet, config.moco(geo_classes))?;
    for vs in [&moco.vs_q, &moco.vs_k] {
        copy_named(vs, &tensors, "", pth)?;
    }
    let mut used: Vec<String> = moco
        .vs_q
        .variables()
        .into_keys()
        .chain(moco.vs_k.variables().into_keys())
        .collect();
    if let Some(queue) = tensors.get("queue") {
        moco.queue.load(Some(queue), None)?;
        used.push("queue".into());
    }
    if let Some(ptr) = tensors.get("queue_ptr") {
        let ptr = ptr.int64_value(&[0]).rem_euclid(queue_size);
        moco.queue.load(None, Some(ptr))?;
        used.push("queue_ptr".into());
    }
    for name in &used {
        tensors.remove(name);
    }
    let mut unused: Vec<String> = tensors.into_keys().collect();
    unused.sort();
    ignored.splice(0..0, unused);
    let checkpoint = write_run(out, pth, &moco, &config, geo_classes, epoch, input)?;
    Ok(Imported {
        checkpoint,
        layout,
        method: config.method,
        method_note: method_note(config.method).to_string(),
        arch,
        epoch,
        geo_classes,
        tensors: used.len(),
        ignored,
    })
}

/// The encoder: inferred from the `encoder_q.*` shapes as for a plain
/// backbone ([`super::backbone::infer_resnet`]); the file's `arch` entry,
/// when there is one, must name the same architecture.
fn moco_resnet(
    pth: &Path,
    root: &Value,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<ResNetConfig> {
    let src = pth.display();
    let query: HashMap<String, &Tensor> = tensors
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix("encoder_q.")?.to_string(), t)))
        .collect();
    anyhow::ensure!(
        query.contains_key("conv1.weight"),
        "{src}: missing encoder_q.conv1.weight"
    );
    let resnet = super::backbone::infer_resnet(pth, &query)
        .map_err(|e| anyhow::anyhow!("{e} (in encoder_q.*)"))?;
    let inferred = resnet.arch;
    match root.get("arch") {
        None => Ok(resnet),
        Some(Value::Str(name)) => match arch_named(name) {
            Some(arch) if arch == inferred => Ok(resnet),
            Some(_) => anyhow::bail!(
                "{src}: the file's arch entry {name:?} and its encoder_q tensors (a {}) disagree",
                inferred.name()
            ),
            None => {
                anyhow::bail!("{src}: arch {name:?} is not one of resnet18, resnet34, resnet50")
            }
        },
        Some(other) => anyhow::bail!("{src}: arch entry {other:?} is not a string"),
    }
}

/// What the file was, for [`Imported::layout`]: e.g. "GASSL checkpoint
/// (state_dict + geo_dict, 100 classes), legacy torch.save format".
fn layout_of(
    root: &Value,
    geo_dict: bool,
    geo_classes: Option<i64>,
    format: super::torch_load::Format,
) -> String {
    let what = match (geo_dict, geo_classes) {
        (true, Some(k)) => format!("GASSL checkpoint (state_dict + geo_dict, {k} classes)"),
        (false, Some(k)) => format!("MoCo checkpoint (state_dict with geo_head.*, {k} classes)"),
        _ if root.get("state_dict").is_some() => "MoCo checkpoint (state_dict)".to_string(),
        _ => "MoCo state dict".to_string(),
    };
    format!("{what}, {}", format.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Str(s.into())
    }

    #[test]
    fn unused_top_level_entries_with_tensors_are_named() {
        let tensor = Value::Tensor(super::super::pickle::TensorRef {
            storage: super::super::pickle::StorageRef {
                kind: "FloatStorage".into(),
                key: "0".into(),
                numel: 1,
                view: None,
            },
            offset: 0,
            size: vec![1],
            stride: vec![1],
        });
        let dict = |items: Vec<(&str, Value)>| {
            Value::Dict(items.into_iter().map(|(k, v)| (text(k), v)).collect())
        };
        let root = dict(vec![
            ("epoch", Value::Int(3)),
            ("state_dict", dict(vec![("encoder_q.w", tensor.clone())])),
            (
                "geo_dict",
                dict(vec![("module.layers.1.weight", tensor.clone())]),
            ),
            (
                "optimizer",
                dict(vec![(
                    "state",
                    Value::List(vec![tensor.clone(), tensor.clone()]),
                )]),
            ),
            ("ema", dict(vec![("w", tensor.clone())])),
            ("best_acc1", Value::Float(0.5)),
            ("args", Value::Opaque("argparse.Namespace")),
            (
                "acc",
                Value::List(vec![Value::Opaque("numpy.core.multiarray.scalar")]),
            ),
        ]);
        assert_eq!(
            top_level_ignored(&root),
            [
                "optimizer state (2 tensors; a resumed run starts with fresh momentum)",
                "top-level ema (1 tensor)",
                "top-level args (argparse.Namespace, not read)",
                "top-level acc (holds a numpy.core.multiarray.scalar, not read)",
            ]
        );
        // Backbone files name plain values too.
        assert_eq!(
            describe_top_level("epoch", &Value::Int(3), true).as_deref(),
            Some("top-level epoch (not read)")
        );
        assert_eq!(describe_top_level("epoch", &Value::Int(3), false), None);
        // A bare state dict has no top level of its own.
        assert!(top_level_ignored(&dict(vec![("ema.w", tensor)])).is_empty());
    }
}
