//! Reading files written by `torch.save` (the zip format of PyTorch >= 1.6:
//! `<name>/data.pkl` plus one file per storage under `<name>/data/`) with
//! the restricted pickle reader: tensors become `tch` tensors, checked
//! against their storages' sizes; everything else stays a plain value.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

use super::pickle::{self, StorageRef, TensorRef, Value};

/// A loaded `torch.save` file: its object tree and the storages it uses.
pub struct TorchFile {
    pub root: Value,
    storages: HashMap<String, Vec<u8>>,
    source: String,
}

fn kind_of(storage: &str) -> Option<(Kind, usize)> {
    Some(match storage {
        "FloatStorage" => (Kind::Float, 4),
        "DoubleStorage" => (Kind::Double, 8),
        "HalfStorage" => (Kind::Half, 2),
        "BFloat16Storage" => (Kind::BFloat16, 2),
        "LongStorage" => (Kind::Int64, 8),
        "IntStorage" => (Kind::Int, 4),
        "ShortStorage" => (Kind::Int16, 2),
        "ByteStorage" => (Kind::Uint8, 1),
        "BoolStorage" => (Kind::Bool, 1),
        _ => return None,
    })
}

const MAX_ENTRY_BYTES: u64 = 1 << 34;

impl TorchFile {
    /// Reads `path`; every problem is an error naming the file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let source = path.display().to_string();
        let file =
            std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{source}: cannot open: {e}"))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| {
            anyhow::anyhow!(
                "{source}: not a torch.save zip archive ({e}); files from PyTorch < 1.6 (legacy format) must be re-saved with a current torch.save"
            )
        })?;
        let names: Vec<String> = archive.file_names().map(str::to_string).collect();
        let pkl = names
            .iter()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{source}: no <name>/data.pkl in the archive"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let mut read_entry = |name: &str| -> anyhow::Result<Vec<u8>> {
            let mut entry = archive
                .by_name(name)
                .map_err(|e| anyhow::anyhow!("{source}: {name}: {e}"))?;
            anyhow::ensure!(
                entry.size() <= MAX_ENTRY_BYTES,
                "{source}: {name}: entry of {} bytes is too large",
                entry.size()
            );
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| anyhow::anyhow!("{source}: {name}: {e}"))?;
            Ok(buf)
        };
        if let Ok(order) = read_entry(&format!("{prefix}byteorder")) {
            anyhow::ensure!(
                order == b"little",
                "{source}: big-endian checkpoints are not supported"
            );
        }
        let root = pickle::load(&read_entry(&pkl)?)
            .map_err(|e| anyhow::anyhow!("{source}: {pkl}: {e}"))?;
        let mut keys = Vec::new();
        collect_storages(&root, &mut keys);
        keys.sort();
        keys.dedup();
        let mut storages = HashMap::new();
        for key in keys {
            let bytes = read_entry(&format!("{prefix}data/{key}"))?;
            storages.insert(key, bytes);
        }
        Ok(Self {
            root,
            storages,
            source,
        })
    }

    /// The tensor `t` refers to, as an owned contiguous tensor.
    pub fn tensor(&self, name: &str, t: &TensorRef) -> anyhow::Result<Tensor> {
        let src = &self.source;
        let StorageRef { kind, key, numel } = &t.storage;
        let (kind, elem) = kind_of(kind)
            .ok_or_else(|| anyhow::anyhow!("{src}: {name}: storage type {kind} unsupported"))?;
        let bytes = &self.storages[key];
        anyhow::ensure!(
            bytes.len() == numel * elem,
            "{src}: {name}: storage {key} holds {} bytes, {numel} elements of {elem} bytes expected",
            bytes.len()
        );
        let elements: usize = t.size.iter().product();
        if elements > 0 {
            let last = t
                .size
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&s, &st)| {
                    acc.checked_add((s - 1).checked_mul(st)?)
                })
                .ok_or_else(|| anyhow::anyhow!("{src}: {name}: tensor extent overflows"))?;
            anyhow::ensure!(
                last < *numel,
                "{src}: {name}: tensor view (offset {}, size {:?}, stride {:?}) reaches past its storage of {numel} elements",
                t.offset,
                t.size,
                t.stride
            );
        }
        let i64s = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        let storage = Tensor::f_from_data_size(bytes, &[*numel as i64], kind)?;
        Ok(storage
            .f_as_strided(i64s(&t.size), i64s(&t.stride), t.offset as i64)?
            .contiguous())
    }

    /// Every tensor of a string-keyed dict, by key.
    pub fn tensors_of(&self, dict: &Value, what: &str) -> anyhow::Result<Vec<(String, Tensor)>> {
        let Value::Dict(items) = dict else {
            anyhow::bail!("{}: {what} is not a dict", self.source);
        };
        let mut out = Vec::new();
        for (k, v) in items {
            let Some(name) = k.as_str() else {
                anyhow::bail!("{}: {what} has a non-string key {k:?}", self.source);
            };
            if let Value::Tensor(t) = v {
                out.push((name.to_string(), self.tensor(name, t)?));
            }
        }
        Ok(out)
    }
}

fn collect_storages(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Tensor(t) => out.push(t.storage.key.clone()),
        Value::Storage(s) => out.push(s.key.clone()),
        Value::List(items) | Value::Tuple(items) => {
            items.iter().for_each(|i| collect_storages(i, out))
        }
        Value::Dict(items) => items.iter().for_each(|(k, v)| {
            collect_storages(k, out);
            collect_storages(v, out);
        }),
        _ => {}
    }
}
