//! Plain backbone weights from the rest of the field: a torchvision or timm
//! ResNet state dict (`.pth` written by `torch.save`, zip or legacy format,
//! or `.safetensors`), with or without the `module.`, `backbone.`,
//! `encoder.` or `model.` prefixes that DDP, torchgeo and Lightning
//! wrappers add.
//!
//! What is read, in order:
//! - the file: `.safetensors` through the safetensors format; anything
//!   else through the restricted `torch.save` reader ([`TorchFile`]);
//! - the state dict: the file's top-level dict, or the dict under its
//!   `state_dict` key (Lightning, timm's training script) or `model` key
//!   (torchvision's reference scripts, DeiT);
//! - the backbone: the names `conv1.weight`, `bn1.*`, `layerN.M.*` of
//!   torchvision's ResNet (timm's ResNet uses the same names), bare or
//!   under one chain of the prefixes above (`module.backbone.` too);
//!   `fc.*`, `num_batches_tracked` and every tensor outside the prefix are
//!   ignored and listed;
//! - the architecture from the shapes: a `conv3` in the blocks makes a
//!   ResNet-50 (Bottleneck), else the block count of `layer3` (2 or 6) a
//!   ResNet-18 or -34; the width is conv1's output channels, the input
//!   channels its input channels, a 3x3 conv1 geossl's small-input stem.
//!
//! torchgeo's published GASSL fMoW backbone (`ResNet50_Weights.FMOW_RGB_GASSL`,
//! `resnet50_fmow_rgb_gassl-da43d987.pth`) is such a file: torchgeo loads it
//! with `timm.create_model("resnet50").load_state_dict(sd, strict=False)`
//! and asserts that only `fc.weight` and `fc.bias` are missing and nothing
//! is unexpected, so it is a bare state dict in timm's (= torchvision's)
//! names without `fc`; its input is RGB with ImageNet's normalisation, as
//! the GASSL code's.
//!
//! A MoCo checkpoint (`encoder_q.*`, as the official MoCo and GASSL code
//! save it) is not a backbone file: `geossl import` turns it into a run
//! folder ([`super::import::import_moco`]) and the error here says so.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use super::import::{describe_top_level, imported_input, Imported};
use super::pickle::Value;
use super::torch_load::TorchFile;
use crate::model::{Arch, Moco, ResNet, ResNetConfig};
use crate::train::config::{ModelConfig, OptimizerConfig};
use crate::train::{Method, PretrainConfig};

pub use crate::train::encoder_source::Backbone;

/// The prefixes a backbone may sit under, alone or chained
/// (`module.backbone.`): DDP's `module.`, torchgeo's and Lightning's
/// `backbone.`, `encoder.` and `model.`.
pub const PREFIXES: [&str; 4] = ["module.", "backbone.", "encoder.", "model."];

/// Lets the layers below `interop` (`eval::Encoder::load`, `pretrain` with
/// `init`) read backbone files with [`read`]. The command line calls it at
/// start-up; library callers call it once before passing a backbone file.
pub fn register() {
    crate::train::encoder_source::set_backbone_reader(read);
}

/// Reads a backbone file (see the module documentation). Errors name the
/// file and say which tensors were missing or of the wrong shape; a file
/// that holds no backbone names what it holds (its first keys), and a
/// MoCo checkpoint is sent to `geossl import`.
pub fn read(path: &Path) -> anyhow::Result<Backbone> {
    backbone_in(path, named_tensors(path)?)
}

/// [`read`] after the file is read: the backbone in `named` (what
/// [`named_tensors`] found in `path`).
fn backbone_in(path: &Path, named: Named) -> anyhow::Result<Backbone> {
    let src = path.display();
    let (named, wrapper, format, top_level) = named;
    let prefix = find_prefix(path, &named)?;
    let stripped: HashMap<String, &Tensor> = named
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(prefix.as_str())?.to_string(), t)))
        .collect();
    let resnet = infer_resnet(path, &stripped)?;
    // The variables of geossl's ResNet of that shape: the names and shapes
    // the file must hold.
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = ResNet::new(&vs.root(), resnet);
    let mut tensors = BTreeMap::new();
    for (name, var) in vs.variables() {
        let file_name = format!("{prefix}{name}");
        let t = stripped.get(&name).ok_or_else(|| {
            anyhow::anyhow!(
                "{src}: missing tensor {file_name} (a {} at width {} has it)",
                resnet.arch.name(),
                resnet.width
            )
        })?;
        anyhow::ensure!(
            t.size() == var.size(),
            "{src}: {file_name} has shape {:?}; a {} at width {} with {} input channel(s) has {:?}",
            t.size(),
            resnet.arch.name(),
            resnet.width,
            resnet.in_channels,
            var.size()
        );
        tensors.insert(name, t.to_kind(Kind::Float).contiguous());
    }
    // The file's other tensors, in name order (`named` is a BTreeMap).
    let mut ignored: Vec<String> = named
        .keys()
        .filter(|n| {
            !n.strip_prefix(prefix.as_str())
                .is_some_and(|rest| tensors.contains_key(rest))
        })
        .cloned()
        .collect();
    ignored.extend(top_level);
    let layout = format!(
        "torchvision/timm ResNet-{} {format} ({}, {})",
        &resnet.arch.name()["resnet".len()..],
        match wrapper {
            None => "bare".to_string(),
            Some(w @ "state_dict_ema") => format!("wrapped in '{w}': timm's EMA weights"),
            Some(w) => format!("wrapped in '{w}'"),
        },
        if prefix.is_empty() {
            "no prefix".to_string()
        } else {
            format!("prefix {prefix}")
        }
    );
    Ok(Backbone {
        tensors,
        resnet,
        input: imported_input(resnet.in_channels as usize),
        layout,
        ignored,
    })
}

/// What [`named_tensors`] returns: every tensor of the state dict by name,
/// the wrapper key it was under, the file format (for the layout) and the
/// other top-level entries of a wrapped file, as `ignored` lists them.
type Named = (
    BTreeMap<String, Tensor>,
    Option<&'static str>,
    String,
    Vec<String>,
);

/// The keys a state dict may be wrapped under, in order of preference:
/// Lightning's and timm's `state_dict`, torchvision's reference scripts'
/// and DeiT's `model`, and timm's `state_dict_ema` (the EMA weights, the
/// ones timm publishes) when the file holds only those.
const WRAPPERS: [&str; 3] = ["state_dict", "model", "state_dict_ema"];

/// Every tensor of the file's state dict by name (see [`Named`]).
fn named_tensors(path: &Path) -> anyhow::Result<Named> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        let tensors = crate::formats::safetensors::read_safetensors(path)?;
        return Ok((
            tensors.into_iter().collect(),
            None,
            "safetensors".into(),
            Vec::new(),
        ));
    }
    torch_named_tensors(&TorchFile::read(path)?, path)
}

/// [`named_tensors`] of a `torch.save` file already read from `path`.
fn torch_named_tensors(file: &TorchFile, path: &Path) -> anyhow::Result<Named> {
    let root = &file.root;
    let Value::Dict(_) = root else {
        anyhow::bail!(
            "{}: holds no state dict (its top level is {}, not a dict of tensors)",
            path.display(),
            value_kind(root)
        );
    };
    let (dict, wrapper) = match WRAPPERS
        .into_iter()
        .find(|k| matches!(root.get(k), Some(Value::Dict(_))))
    {
        Some(key) => (root.get(key).expect("found above"), Some(key)),
        None => (root, None),
    };
    let what = wrapper.unwrap_or("the state dict");
    let tensors = file.tensors_of(dict, what)?;
    if tensors.is_empty() {
        anyhow::bail!(
            "{}: holds no tensors{}; its keys: {}",
            path.display(),
            wrapper.map_or(String::new(), |w| format!(" under '{w}'")),
            first_keys(dict_keys(dict).into_iter())
        );
    }
    let mut top_level = Vec::new();
    if let (Some(w), Value::Dict(items)) = (wrapper, root) {
        for (k, v) in items.iter().filter(|(k, _)| k.as_str() != Some(w)) {
            let name = k.key_name();
            top_level.extend(describe_top_level(&name, v, true));
        }
    }
    Ok((
        tensors.into_iter().collect(),
        wrapper,
        format!("state dict ({})", file.format.describe()),
        top_level,
    ))
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Tensor(_) => "a single tensor",
        Value::Str(_) => "a string",
        Value::None => "None",
        _ => "a plain value",
    }
}

fn dict_keys(dict: &Value) -> Vec<String> {
    match dict {
        Value::Dict(items) => items.iter().map(|(k, _)| k.key_name()).collect(),
        _ => Vec::new(),
    }
}

/// `a, b, c, d, e, ... (N in all)`: what an error shows of a file's names.
fn first_keys(keys: impl ExactSizeIterator<Item = String>) -> String {
    let n = keys.len();
    let shown: Vec<String> = keys.take(5).collect();
    let more = if n > shown.len() {
        format!(", ... ({n} in all)")
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// The prefix under which the backbone's `conv1.weight`, `bn1.weight` and
/// `layer1.0.conv1.weight` lie: empty or a chain of [`PREFIXES`].
fn find_prefix(path: &Path, named: &BTreeMap<String, Tensor>) -> anyhow::Result<String> {
    let src = path.display();
    let found: Vec<&str> = named
        .keys()
        .filter_map(|n| n.strip_suffix("conv1.weight"))
        .filter(|p| {
            named.contains_key(&format!("{p}bn1.weight"))
                && named.contains_key(&format!("{p}layer1.0.conv1.weight"))
        })
        .collect();
    if let Some(moco) = found.iter().find(|p| p.contains("encoder_q.")) {
        anyhow::bail!(
            "{src}: a MoCo checkpoint (the query encoder under {moco}), not a backbone file: import it first with `geossl import --pth {src} --out RUN` and pass RUN"
        );
    }
    let known: Vec<&str> = found.iter().copied().filter(|p| known_chain(p)).collect();
    match known.as_slice() {
        [one] => Ok(one.to_string()),
        [] if found.is_empty() => anyhow::bail!(
            "{src}: neither a ResNet backbone (no conv1.weight, bn1.weight and layer1.0.conv1.weight, bare or under {}) nor a MoCo checkpoint (no encoder_q.*); it holds {}",
            PREFIXES.join(", "),
            first_keys(named.keys().cloned())
        ),
        [] => anyhow::bail!(
            "{src}: a ResNet backbone under the unknown prefix(es) {}; known: none, {}",
            found.join(", "),
            PREFIXES.join(", ")
        ),
        several => anyhow::bail!(
            "{src}: several ResNet backbones (prefixes {}); which one is meant is not clear",
            several
                .iter()
                .map(|p| if p.is_empty() { "none" } else { p })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether `prefix` is empty or a chain of [`PREFIXES`].
fn known_chain(prefix: &str) -> bool {
    let mut rest = prefix;
    while !rest.is_empty() {
        match PREFIXES.iter().find_map(|p| rest.strip_prefix(p)) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    true
}

/// The ResNet whose tensors `stripped` holds (names without the prefix;
/// `conv1.weight` must be among them). `import_moco` uses it on
/// `encoder_q.*` too.
pub(crate) fn infer_resnet(
    path: &Path,
    stripped: &HashMap<String, &Tensor>,
) -> anyhow::Result<ResNetConfig> {
    let src = path.display();
    let conv1 = stripped["conv1.weight"].size();
    anyhow::ensure!(
        conv1.len() == 4 && conv1[2] == conv1[3] && (conv1[2] == 7 || conv1[2] == 3),
        "{src}: conv1.weight has shape {conv1:?}, not [width, C, 7, 7] (torchvision's stem) or [width, C, 3, 3] (geossl's small-input stem)"
    );
    let blocks = |layer: usize| {
        let head = format!("layer{layer}.");
        let mut seen: Vec<&str> = stripped
            .keys()
            .filter_map(|n| n.strip_prefix(&head)?.split('.').next())
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    let counts = [1, 2, 3, 4].map(blocks);
    let bottleneck = stripped.contains_key("layer1.0.conv3.weight");
    let arch = match (bottleneck, counts) {
        (true, [3, 4, 6, 3]) => Arch::Resnet50,
        (false, [2, 2, 2, 2]) => Arch::Resnet18,
        (false, [3, 4, 6, 3]) => Arch::Resnet34,
        _ => anyhow::bail!(
            "{src}: a ResNet with {} blocks of {counts:?} per stage: not one of resnet18 ([2, 2, 2, 2] basic), resnet34 ([3, 4, 6, 3] basic), resnet50 ([3, 4, 6, 3] bottleneck)",
            if bottleneck { "bottleneck" } else { "basic" }
        ),
    };
    Ok(ResNetConfig {
        arch,
        width: conv1[0],
        small_input: conv1[2] == 3,
        in_channels: conv1[1],
    })
}

/// `geossl import` of a backbone file: a run folder `out` whose epoch-0
/// checkpoint holds the backbone as both MoCo encoders (fresh MLP head,
/// like `pretrain --init`), so every command that takes a run folder works.
/// Its config is MoCo-v2's defaults (method moco) with the file's
/// architecture; `imported_from` lets the first `--resume` set the rest.
pub fn import(path: &Path, out: &Path) -> anyhow::Result<Imported> {
    import_backbone(path, out, read(path)?)
}

/// [`import`] of a `torch.save` file already read from `path` (`geossl
/// import` reads it once to tell a MoCo checkpoint from a backbone).
pub(crate) fn import_file(file: &TorchFile, path: &Path, out: &Path) -> anyhow::Result<Imported> {
    import_backbone(
        path,
        out,
        backbone_in(path, torch_named_tensors(file, path)?)?,
    )
}

/// [`import`] of the backbone read from `path`; the output folder's check
/// that it holds no checkpoints is [`super::import::write_run`]'s, before
/// it writes anything.
fn import_backbone(path: &Path, out: &Path, backbone: Backbone) -> anyhow::Result<Imported> {
    let r = backbone.resnet;
    let config = PretrainConfig {
        method: Method::Moco,
        model: ModelConfig {
            arch: r.arch,
            width: r.width,
            small_input: r.small_input,
            ..Default::default()
        },
        optimizer: OptimizerConfig {
            epochs: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let moco = Moco::new(Device::Cpu, r, config.moco(None))?;
    let copied = backbone.copy_into_moco(&moco, path)?;
    let checkpoint =
        super::import::write_run(out, path, &moco, &config, None, 0, backbone.input.clone())?;
    Ok(Imported {
        checkpoint,
        layout: backbone.layout,
        method: Method::Moco,
        method_note: "a backbone file holds no MoCo or geo head, so it does not say how it was \
                      trained; the run folder is set up as moco with a fresh MLP head, as \
                      `pretrain --init` starts"
            .into(),
        arch: r.arch,
        epoch: 0,
        geo_classes: None,
        // Each backbone tensor went into both encoders.
        tensors: copied / 2,
        ignored: backbone.ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint;

    /// A geossl ResNet's variables (= torchvision's names) for `resnet`.
    fn weights(resnet: ResNetConfig) -> Vec<(String, Tensor)> {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = ResNet::new(&vs.root(), resnet);
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    fn tiny(arch: Arch) -> ResNetConfig {
        ResNetConfig {
            arch,
            width: 4,
            small_input: false,
            in_channels: 3,
        }
    }

    /// Writes `named` under `prefix` with a torchvision `fc` and
    /// `num_batches_tracked` counters, as a safetensors file.
    fn write(path: &Path, named: &[(String, Tensor)], prefix: &str) {
        let mut all: Vec<(String, Tensor)> = named
            .iter()
            .map(|(n, t)| (format!("{prefix}{n}"), t.shallow_clone()))
            .collect();
        all.push((
            format!("{prefix}fc.weight"),
            Tensor::zeros([10, 32], (Kind::Float, Device::Cpu)),
        ));
        all.push((
            format!("{prefix}fc.bias"),
            Tensor::zeros([10], (Kind::Float, Device::Cpu)),
        ));
        all.push((
            format!("{prefix}bn1.num_batches_tracked"),
            Tensor::from(7i64),
        ));
        Tensor::write_safetensors(&all, path).unwrap();
    }

    fn error(path: &Path) -> String {
        read(path).unwrap_err().to_string()
    }

    #[test]
    fn every_prefix_chain_reads_to_the_same_tensors_and_the_rest_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let named = weights(tiny(Arch::Resnet18));
        for prefix in [
            "",
            "module.",
            "backbone.",
            "encoder.",
            "model.",
            "module.backbone.",
        ] {
            let path = dir.path().join("r18.safetensors");
            write(&path, &named, prefix);
            let b = read(&path).unwrap();
            assert_eq!(b.resnet, tiny(Arch::Resnet18), "{prefix}");
            assert_eq!(b.tensors.len(), named.len());
            for (n, t) in &named {
                assert!(b.tensors[n].equal(t), "{prefix}{n}");
            }
            let mut ignored = ["bn1.num_batches_tracked", "fc.bias", "fc.weight"]
                .map(|n| format!("{prefix}{n}"))
                .to_vec();
            ignored.sort();
            assert_eq!(b.ignored, ignored);
            assert_eq!(b.input, crate::data::bands::InputSpec::rgb());
            let shown = if prefix.is_empty() {
                "no prefix".to_string()
            } else {
                format!("prefix {prefix}")
            };
            assert_eq!(
                b.layout,
                format!("torchvision/timm ResNet-18 safetensors (bare, {shown})")
            );
        }
    }

    #[test]
    fn the_architecture_comes_from_the_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let cases = [
            tiny(Arch::Resnet34),
            tiny(Arch::Resnet50),
            ResNetConfig {
                small_input: true,
                in_channels: 4,
                width: 8,
                ..tiny(Arch::Resnet18)
            },
        ];
        for resnet in cases {
            write(&path, &weights(resnet), "");
            let b = read(&path).unwrap();
            assert_eq!(b.resnet, resnet);
            assert_eq!(b.input.channels(), resnet.in_channels as usize);
        }
    }

    #[test]
    fn missing_misshapen_moco_and_foreign_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let src = path.display().to_string();
        let named = weights(tiny(Arch::Resnet18));
        let without: Vec<_> = named
            .iter()
            .filter(|(n, _)| n != "layer4.1.bn2.running_var")
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        write(&path, &without, "module.");
        assert_eq!(
            error(&path),
            format!("{src}: missing tensor module.layer4.1.bn2.running_var (a resnet18 at width 4 has it)")
        );
        let mut misshapen: Vec<_> = named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let at = misshapen
            .iter()
            .position(|(n, _)| n == "layer2.0.conv1.weight")
            .unwrap();
        misshapen[at].1 = Tensor::zeros([8, 4, 1, 1], (Kind::Float, Device::Cpu));
        write(&path, &misshapen, "");
        assert_eq!(
            error(&path),
            format!("{src}: layer2.0.conv1.weight has shape [8, 4, 1, 1]; a resnet18 at width 4 with 3 input channel(s) has [8, 4, 3, 3]")
        );
        write(&path, &named, "module.encoder_q.");
        let moco = error(&path);
        assert!(
            moco.contains("a MoCo checkpoint (the query encoder under module.encoder_q.)"),
            "{moco}"
        );
        assert!(moco.contains("geossl import --pth"), "{moco}");
        write(&path, &named, "teacher.");
        let unknown = error(&path);
        assert!(
            unknown.contains("under the unknown prefix(es) teacher."),
            "{unknown}"
        );
        let other = [("head.weight", 2), ("pos_embed", 3)].map(|(n, k)| {
            (
                n.to_string(),
                Tensor::zeros([k], (Kind::Float, Device::Cpu)),
            )
        });
        Tensor::write_safetensors(&other, &path).unwrap();
        assert_eq!(
            error(&path),
            format!("{src}: neither a ResNet backbone (no conv1.weight, bn1.weight and layer1.0.conv1.weight, bare or under module., backbone., encoder., model.) nor a MoCo checkpoint (no encoder_q.*); it holds head.weight, pos_embed")
        );
    }

    #[test]
    fn an_import_holds_the_backbone_in_both_encoders_and_a_fresh_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r18.safetensors");
        let named = weights(tiny(Arch::Resnet18));
        write(&path, &named, "backbone.");
        let run = dir.path().join("run");
        let done = import(&path, &run).unwrap();
        assert_eq!(
            (done.method, done.arch, done.epoch),
            (Method::Moco, Arch::Resnet18, 0)
        );
        assert_eq!(done.tensors, named.len());
        assert_eq!(done.ignored.len(), 3);
        let state = checkpoint::read_state(&done.checkpoint).unwrap();
        assert_eq!(state.imported_from.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(state.config.model.width, 4);
        let saved = crate::formats::safetensors::read_safetensors(
            &crate::train::CheckpointDir::new(&done.checkpoint).model_safetensors(),
        )
        .unwrap();
        for (n, t) in &named {
            assert!(saved[&format!("encoder_q.{n}")].equal(t), "{n}");
            assert!(saved[&format!("encoder_k.{n}")].equal(t), "{n}");
        }
        assert!(saved.contains_key("encoder_q.fc.0.weight"), "the MLP head");
        assert!(saved[&"encoder_q.fc.2.weight".to_string()].equal(&saved["encoder_k.fc.2.weight"]));
        let again = import(&path, &run).unwrap_err().to_string();
        assert!(again.contains("already holds checkpoints"), "{again}");
    }
}
