//! Importing published PyTorch checkpoints: the official MoCo / GASSL layout
//! (`torch.save` of a dict with `epoch`, `arch`, `state_dict` holding
//! `module.encoder_q.*`, `module.encoder_k.*`, `module.queue`,
//! `module.queue_ptr`, optionally a geo head, and `optimizer`) becomes a
//! geossl run folder with one checkpoint, so `probe`, `knn`, `embed`,
//! `export` and `pretrain --resume` work on it.
//!
//! The optimizer state is not carried over: PyTorch keys it by parameter
//! position, not name; a resumed run starts with fresh momentum buffers.
//! BN `num_batches_tracked` counters have no counterpart in geossl and are
//! dropped.
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
use crate::model::{Arch, Moco};
use crate::train::checkpoint::{self, TrainState};
use crate::train::config::{MocoSettings, ModelConfig, OptimizerConfig};
use crate::train::sgd::Sgd;
use crate::train::{Method, PretrainConfig};

#[derive(Debug)]
pub struct Imported {
    pub checkpoint: PathBuf,
    /// What the file was, for messages (e.g. "MoCo checkpoint, legacy
    /// torch.save format", "GASSL checkpoint with geo_dict").
    pub layout: String,
    /// The method the weights were trained with, as far as the file tells.
    pub method: Method,
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

/// `geossl import`: a MoCo / GASSL checkpoint (any file holding
/// `encoder_q.*` tensors) through [`import_moco`], any other `.pth` or a
/// `.safetensors` file as a plain backbone through
/// [`super::backbone::import`].
pub fn import(path: &Path, out: &Path) -> anyhow::Result<Imported> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if !is_safetensors && holds_moco(&TorchFile::read(path)?) {
        import_moco(path, out)
    } else {
        super::backbone::import(path, out)
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

/// Imports `pth` into the run folder `out` (created; must not hold checkpoints).
pub fn import_moco(pth: &Path, out: &Path) -> anyhow::Result<Imported> {
    let file = TorchFile::read(pth)?;
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
    let arch_name = root.get("arch").and_then(Value::as_str).unwrap_or("");
    let arch = arch_named(arch_name).ok_or_else(|| {
        anyhow::anyhow!("{src}: arch {arch_name:?} is not one of resnet18, resnet34, resnet50")
    })?;
    let epoch = match root.get("epoch") {
        Some(Value::Int(e)) if *e >= 0 => *e as usize,
        _ => 0,
    };
    let shape = |name: &str| tensors.get(name).map(Tensor::size);
    let conv1 = shape("encoder_q.conv1.weight")
        .ok_or_else(|| anyhow::anyhow!("{src}: missing encoder_q.conv1.weight"))?;
    let fc_out = shape("encoder_q.fc.2.weight").ok_or_else(|| {
        anyhow::anyhow!("{src}: missing encoder_q.fc.2.weight (the MoCo-v2 MLP head)")
    })?;
    let queue_size = shape("queue").map_or(65536, |s| s[1]);
    let geo_classes = shape("geo_head.1.weight").map(|s| s[0]);
    let config = PretrainConfig {
        method: if geo_classes.is_some() {
            Method::MocoGeo
        } else {
            Method::Moco
        },
        model: ModelConfig {
            arch,
            width: conv1[0],
            small_input: conv1[2] == 3,
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
    anyhow::ensure!(
        conv1.len() == 4 && conv1[1] >= 1,
        "{src}: encoder_q.conv1.weight has shape {conv1:?}, not [width, C, k, k]"
    );
    let input = imported_input(conv1[1] as usize);
    let mut moco = Moco::new(Device::Cpu, config.resnet(&input), config.moco(geo_classes))?;
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
    let mut ignored: Vec<String> = tensors.into_keys().collect();
    ignored.sort();
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
        // Its config is inferred from tensor shapes: a resume may set the rest.
        imported_from: Some(pth.display().to_string()),
        input,
        ..TrainState::at(&config, geo_classes, epoch, 0, moco.queue.ptr())
    };
    let checkpoint = checkpoint::save(out, &moco, &sgd, &state)?;
    crate::formats::atomic_write::write_string(
        &crate::train::RunDir::new(out).config_toml(),
        &config.to_toml()?,
    )?;
    Ok(Imported {
        checkpoint,
        layout: "MoCo checkpoint".into(),
        method: config.method,
        arch,
        epoch,
        geo_classes,
        tensors: used.len(),
        ignored,
    })
}
