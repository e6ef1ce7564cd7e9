//! Reading files written by `torch.save`, in either of its two containers,
//! with the restricted pickle reader: tensors become `tch` tensors, checked
//! against their storages' sizes; everything else stays a plain value.
//!
//! - The zip format of PyTorch >= 1.6: `<name>/data.pkl` plus one file per
//!   storage under `<name>/data/`.
//! - The legacy format of PyTorch < 1.6 (and of later versions with
//!   `_use_new_zipfile_serialization=False`; the official MoCo-v2 weights
//!   are in it): five pickles in a row (the magic number
//!   0x1950a86a20f9469cfc6c, the protocol version 1001, `sys_info`, the
//!   object, the sorted list of storage keys), then for each key its
//!   storage: the element count as a little-endian int64, then the
//!   elements, little-endian (PyTorch's `_legacy_save` / `_legacy_load`
//!   and `THPStorage_writeFileRaw`).
//!
//! Nothing is allocated from a size a file states before it is checked
//! against the bytes the file holds.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use tch::{Kind, Tensor};

use super::pickle::{self, StorageRef, TensorRef, Value};

/// Which of torch.save's containers a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The zip archive of PyTorch >= 1.6.
    Zip,
    /// The pickle stream + raw storages of PyTorch < 1.6.
    Legacy,
}

impl Format {
    /// For messages: "zip torch.save format" / "legacy torch.save format".
    pub fn describe(self) -> &'static str {
        match self {
            Format::Zip => "zip torch.save format",
            Format::Legacy => "legacy torch.save format",
        }
    }
}

/// A loaded `torch.save` file: its object tree and the storages it uses.
pub struct TorchFile {
    pub root: Value,
    pub format: Format,
    /// Storage bytes (the whole file in the legacy format, the storages
    /// one after another in the zip format), indexed by `storages`.
    data: Vec<u8>,
    storages: HashMap<String, Range<usize>>,
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

/// `torch.serialization.MAGIC_NUMBER`, the first pickle of a legacy file.
const MAGIC_NUMBER: i128 = 0x1950A86A20F9469CFC6C;
/// `torch.serialization.PROTOCOL_VERSION`, the second.
const PROTOCOL_VERSION: i64 = 1001;

impl TorchFile {
    /// Reads `path` in either format (see the module documentation): a zip
    /// archive when the file starts with a zip header, else the legacy
    /// pickle stream. Every problem (another kind of file, a tar-based
    /// file of PyTorch < 0.4, a refused global, truncation, a storage size
    /// that does not fit the file) is an error naming the file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let source = path.display().to_string();
        let mut file =
            std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{source}: cannot open: {e}"))?;
        let mut head = Vec::with_capacity(4);
        (&mut file)
            .take(4)
            .read_to_end(&mut head)
            .map_err(|e| anyhow::anyhow!("{source}: cannot read: {e}"))?;
        if head == b"PK\x03\x04" {
            return Self::read_zip(file, source);
        }
        drop(file);
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{source}: cannot read: {e}"))?;
        if bytes.first() == Some(&0x80) {
            return Self::read_legacy(bytes, source);
        }
        // tarfile's "ustar" magic at byte 257: torch.save of PyTorch < 0.4.
        anyhow::ensure!(
            bytes.get(257..262) != Some(&b"ustar"[..]),
            "{source}: a tar-based torch.save file (PyTorch < 0.4) is not supported; load it with an old PyTorch and torch.save it again"
        );
        anyhow::bail!(
            "{source}: not a torch.save zip archive (PyTorch >= 1.6) nor a legacy torch.save file (PyTorch < 1.6, a pickle stream starting with the magic number)"
        )
    }

    fn read_zip(file: std::fs::File, source: String) -> anyhow::Result<Self> {
        let mut archive = zip::ZipArchive::new(file).map_err(|e| {
            anyhow::anyhow!("{source}: not a torch.save zip archive ({e}): truncated or damaged?")
        })?;
        let names: Vec<String> = archive.file_names().map(str::to_string).collect();
        let pkl = names
            .iter()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{source}: no <name>/data.pkl in the archive"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let mut read_entry = |name: &str, buf: &mut Vec<u8>| -> anyhow::Result<Range<usize>> {
            let mut entry = archive
                .by_name(name)
                .map_err(|e| anyhow::anyhow!("{source}: {name}: {e}"))?;
            anyhow::ensure!(
                entry.size() <= MAX_ENTRY_BYTES,
                "{source}: {name}: entry of {} bytes is too large",
                entry.size()
            );
            let start = buf.len();
            buf.try_reserve(entry.size() as usize)
                .map_err(|e| anyhow::anyhow!("{source}: {name}: {e}"))?;
            entry
                .read_to_end(buf)
                .map_err(|e| anyhow::anyhow!("{source}: {name}: {e}"))?;
            Ok(start..buf.len())
        };
        let mut order = Vec::new();
        if read_entry(&format!("{prefix}byteorder"), &mut order).is_ok() {
            anyhow::ensure!(
                order == b"little",
                "{source}: big-endian checkpoints are not supported"
            );
        }
        let mut pickled = Vec::new();
        read_entry(&pkl, &mut pickled)?;
        let root = pickle::load(&pickled).map_err(|e| anyhow::anyhow!("{source}: {pkl}: {e}"))?;
        let mut keys: Vec<String> = storage_refs(&root)
            .into_iter()
            .map(|(_, s)| s.key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        let mut data = Vec::new();
        let mut storages = HashMap::new();
        for key in keys {
            let range = read_entry(&format!("{prefix}data/{key}"), &mut data)?;
            storages.insert(key, range);
        }
        Ok(Self {
            root,
            format: Format::Zip,
            data,
            storages,
            source,
        })
    }

    /// The legacy format (module documentation); `bytes` is the whole file.
    fn read_legacy(bytes: Vec<u8>, source: String) -> anyhow::Result<Self> {
        let fail = |what: &str, e: String| {
            anyhow::anyhow!("{source}: legacy torch.save format: {what}: {e}")
        };
        let (magic, pos) =
            pickle::load_prefix(&bytes, 0).map_err(|e| fail("magic number pickle", e))?;
        anyhow::ensure!(
            magic == Value::BigInt(MAGIC_NUMBER),
            "{source}: a pickle, but not a torch.save file: it starts with {magic:?}, not torch.save's magic number"
        );
        let (version, pos) =
            pickle::load_prefix(&bytes, pos).map_err(|e| fail("protocol version pickle", e))?;
        anyhow::ensure!(
            version == Value::Int(PROTOCOL_VERSION),
            "{source}: legacy torch.save protocol version {version:?}, only {PROTOCOL_VERSION} is known"
        );
        let (sys_info, pos) =
            pickle::load_prefix(&bytes, pos).map_err(|e| fail("sys_info pickle", e))?;
        anyhow::ensure!(
            sys_info.get("little_endian") != Some(&Value::Bool(false)),
            "{source}: written on a big-endian machine; such checkpoints are not supported"
        );
        let (root, pos) = pickle::load_prefix(&bytes, pos).map_err(|e| fail("object pickle", e))?;
        let (keys, pos) =
            pickle::load_prefix(&bytes, pos).map_err(|e| fail("storage key list", e))?;
        let keys = storage_keys(&keys).map_err(|e| fail("storage key list", e))?;
        let storages =
            legacy_storages(&bytes, pos, &keys, &root).map_err(|e| fail("storages", e))?;
        Ok(Self {
            root,
            format: Format::Legacy,
            data: bytes,
            storages,
            source,
        })
    }

    /// The tensor `t` refers to, as an owned contiguous tensor.
    pub fn tensor(&self, name: &str, t: &TensorRef) -> anyhow::Result<Tensor> {
        let src = &self.source;
        let StorageRef {
            kind,
            key,
            numel,
            view,
        } = &t.storage;
        let (kind, elem) = kind_of(kind)
            .ok_or_else(|| anyhow::anyhow!("{src}: {name}: storage type {kind} unsupported"))?;
        let bytes = self
            .storages
            .get(key)
            .map(|r| &self.data[r.clone()])
            .ok_or_else(|| anyhow::anyhow!("{src}: {name}: storage {key} is not in the file"))?;
        anyhow::ensure!(
            Some(bytes.len()) == numel.checked_mul(elem),
            "{src}: {name}: storage {key} holds {} bytes, {numel} elements of {elem} bytes expected",
            bytes.len()
        );
        // A legacy storage view: elements base..base + avail of the root.
        let (base, avail) = view.unwrap_or((0, *numel));
        anyhow::ensure!(
            base.checked_add(avail).is_some_and(|end| end <= *numel),
            "{src}: {name}: storage view ({base}, {avail}) reaches past storage {key} of {numel} elements"
        );
        let i64s = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        if t.size.iter().product::<usize>() == 0 {
            return Ok(Tensor::f_zeros(i64s(&t.size), (kind, tch::Device::Cpu))?);
        }
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&s, &st)| {
                acc.checked_add((s - 1).checked_mul(st)?)
            })
            .ok_or_else(|| anyhow::anyhow!("{src}: {name}: tensor extent overflows"))?;
        anyhow::ensure!(
            last < avail,
            "{src}: {name}: tensor view (offset {}, size {:?}, stride {:?}) reaches past its storage of {avail} elements",
            t.offset,
            t.size,
            t.stride
        );
        // Only the elements the view spans are copied out of the file.
        let span = (base + t.offset) * elem..(base + last + 1) * elem;
        let storage =
            Tensor::f_from_data_size(&bytes[span], &[(last + 1 - t.offset) as i64], kind)?;
        Ok(storage
            .f_as_strided(i64s(&t.size), i64s(&t.stride), 0)?
            .contiguous())
    }

    /// Every tensor of a string-keyed dict, by key. Errors on an opaque
    /// entry (a numpy array, ...): the dict is used, so it must be tensors.
    pub fn tensors_of(&self, dict: &Value, what: &str) -> anyhow::Result<Vec<(String, Tensor)>> {
        let Value::Dict(items) = dict else {
            anyhow::bail!("{}: {what} is not a dict", self.source);
        };
        let mut out = Vec::new();
        for (k, v) in items {
            let Some(name) = k.as_str() else {
                anyhow::bail!("{}: {what} has a non-string key {k:?}", self.source);
            };
            match v {
                Value::Tensor(t) => out.push((name.to_string(), self.tensor(name, t)?)),
                Value::Opaque(kind) => anyhow::bail!(
                    "{}: {what} entry {name} is a {kind}, not a tensor: a state dict in use holds tensors only",
                    self.source
                ),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Every storage reference in `v`, in pickle order, with where it sits
/// (dict keys and list positions joined by dots, e.g.
/// `state_dict.module.encoder_q.conv1.weight`), for messages.
fn storage_refs(v: &Value) -> Vec<(String, &StorageRef)> {
    fn walk<'a>(v: &'a Value, at: &str, out: &mut Vec<(String, &'a StorageRef)>) {
        let join = |part: &str| match at {
            "" => part.to_string(),
            _ => format!("{at}.{part}"),
        };
        match v {
            Value::Tensor(t) => out.push((at.to_string(), &t.storage)),
            Value::Storage(s) => out.push((at.to_string(), s)),
            Value::List(items) | Value::Tuple(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, item)| walk(item, &join(&i.to_string()), out)),
            Value::Dict(items) => items.iter().for_each(|(k, v)| {
                let name = k.key_name();
                walk(k, at, out);
                walk(v, &join(&name), out);
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// The legacy format's list of storage keys (plain text, no repeats).
fn storage_keys(keys: &Value) -> Result<Vec<String>, String> {
    let Value::List(items) = keys else {
        return Err(format!("expected a list of keys, found {keys:?}"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(key) = pickle::text(item) else {
            return Err(format!("storage key {item:?} is not text"));
        };
        if out.contains(&key) {
            return Err(format!("storage {key} is listed twice"));
        }
        out.push(key);
    }
    Ok(out)
}

/// The byte ranges of the legacy format's raw storages, which start at
/// `pos` of `bytes` in the order of `keys`: each an int64 little-endian
/// element count, which must equal the count the object pickle gives the
/// storage, then that many elements. Sizes are checked against the bytes
/// left before anything is sliced.
fn legacy_storages(
    bytes: &[u8],
    mut pos: usize,
    keys: &[String],
    root: &Value,
) -> Result<HashMap<String, Range<usize>>, String> {
    // Each storage's type and size, and the first tensor using it.
    let mut expected: HashMap<&str, (&str, usize, String)> = HashMap::new();
    for (at, s) in storage_refs(root) {
        let known = expected
            .entry(&s.key)
            .or_insert((&s.kind, s.numel, at.clone()));
        if (known.0, known.1) != (s.kind.as_str(), s.numel) {
            return Err(format!(
                "storage {} is described as {} {} for {} and as {} {} for {at}",
                s.key, known.1, known.0, known.2, s.numel, s.kind
            ));
        }
    }
    let left = bytes.len() - pos;
    if keys.len().saturating_mul(8) > left {
        return Err(format!(
            "{} storages are listed, but only {left} bytes follow the pickles (truncated or forged)",
            keys.len()
        ));
    }
    let mut ranges = HashMap::with_capacity(keys.len());
    for key in keys {
        let (kind, numel, user) = expected
            .get(key.as_str())
            .ok_or_else(|| format!("storage {key} is listed but no tensor uses it"))?;
        let (kind, numel) = (*kind, *numel);
        let what = format!("storage {key} (of {user})");
        let elem = kind_of(kind).map_or(1, |(_, e)| e);
        let header = bytes.get(pos..pos + 8).ok_or_else(|| {
            format!("{what}: truncated at byte {pos} (its size header is missing)")
        })?;
        let count = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        if count != numel as u64 {
            return Err(format!(
                "{what}: its header at byte {pos} says {count} elements, the object pickle {numel} ({kind})"
            ));
        }
        let start = pos + 8;
        let end = numel
            .checked_mul(elem)
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "{what}: {numel} elements of {elem} bytes at byte {start} reach past the end of the file ({} bytes): truncated or forged",
                    bytes.len()
                )
            })?;
        ranges.insert(key.clone(), start..end);
        pos = end;
    }
    let unlisted = expected.iter().find(|(k, _)| !ranges.contains_key(**k));
    if let Some((key, (_, _, user))) = unlisted {
        return Err(format!(
            "storage {key} (of {user}) is not listed in the file"
        ));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol-2 pickle pieces, as Python's pickle writes them.
    fn text(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend((s.len() as u32).to_le_bytes());
        v.extend(s.as_bytes());
        v
    }
    fn int(i: u32) -> Vec<u8> {
        let mut v = vec![b'J'];
        v.extend(i.to_le_bytes());
        v
    }
    fn ints(xs: &[u32]) -> Vec<u8> {
        let mut v = vec![b'('];
        xs.iter().for_each(|&x| v.extend(int(x)));
        v.push(b't');
        v
    }
    fn pickle(body: &[u8]) -> Vec<u8> {
        [&b"\x80\x02"[..], body, b"."].concat()
    }
    const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
    const VERSION: &[u8] = b"\x80\x02M\xe9\x03.";
    const HOSTILE: &[u8] = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00ls\x85R.";

    /// `_rebuild_tensor_v2` of a FloatStorage `key` of `numel` elements,
    /// optionally a view `(offset, numel)` of it (legacy view_metadata).
    fn tensor(
        key: &str,
        numel: u32,
        view: Option<(u32, u32)>,
        at: (u32, &[u32], &[u32]),
    ) -> Vec<u8> {
        let view = match view {
            None => b"N".to_vec(),
            Some((o, n)) => [&b"("[..], &text(&format!("{key}v")), &int(o), &int(n), b"t"].concat(),
        };
        let pid = [
            &b"("[..],
            &text("storage"),
            b"ctorch\nFloatStorage\n",
            &text(key),
            &text("cpu"),
            &int(numel),
            &view,
            b"tQ",
        ]
        .concat();
        [
            &b"ctorch._utils\n_rebuild_tensor_v2\n("[..],
            &pid,
            &int(at.0),
            &ints(at.1),
            &ints(at.2),
            b"\x89ccollections\nOrderedDict\n)Rt",
            b"R",
        ]
        .concat()
    }

    fn storage(values: &[f32]) -> Vec<u8> {
        let mut v = (values.len() as u64).to_le_bytes().to_vec();
        values.iter().for_each(|x| v.extend(x.to_le_bytes()));
        v
    }

    /// A legacy file: {'w': 2x2 of storage a, 'v': elements 1..4 of a view
    /// (offset 2, 4 elements) of storage b}, a = 0..4, b = 10..16.
    fn legacy_file() -> Vec<u8> {
        let object = [
            &b"}("[..],
            &text("w"),
            &tensor("a", 4, None, (0, &[2, 2], &[2, 1])),
            &text("v"),
            &tensor("b", 6, Some((2, 4)), (1, &[3], &[1])),
            b"u",
        ]
        .concat();
        let keys = [&b"("[..], &text("a"), &text("b"), b"l"].concat();
        [
            MAGIC,
            VERSION,
            &pickle(b"}"),
            &pickle(&object),
            &pickle(&keys),
            &storage(&[0., 1., 2., 3.]),
            &storage(&[10., 11., 12., 13., 14., 15.]),
        ]
        .concat()
    }

    fn values(file: &TorchFile, name: &str) -> Vec<f32> {
        let Some(Value::Tensor(t)) = file.root.get(name) else {
            panic!("{name} missing")
        };
        Vec::<f32>::try_from(file.tensor(name, t).unwrap().flatten(0, -1)).unwrap()
    }

    #[test]
    fn reads_the_legacy_format_with_storage_views() {
        let file = TorchFile::read_legacy(legacy_file(), "t.pth".into()).unwrap();
        assert_eq!(file.format, Format::Legacy);
        assert_eq!(values(&file, "w"), [0., 1., 2., 3.]);
        // View of b from element 2, tensor offset 1 within it: b[3..6].
        assert_eq!(values(&file, "v"), [13., 14., 15.]);
    }

    #[test]
    fn truncated_and_forged_legacy_files_are_errors() {
        let good = legacy_file();
        for n in 0..good.len() {
            let err = TorchFile::read_legacy(good[..n].to_vec(), "t.pth".into())
                .err()
                .unwrap_or_else(|| panic!("a prefix of {n} bytes must fail"));
            assert!(err.to_string().starts_with("t.pth: "), "{err}");
        }
        let storages_at = good.len() - 8 - 16 - 8 - 24;
        // A forged element count in the first storage's header.
        let mut forged = good.clone();
        forged[storages_at..storages_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let err = TorchFile::read_legacy(forged, "t.pth".into())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("storage a (of w): its header"),
            "{err}"
        );
        // A huge storage, consistently stated: refused before any allocation.
        let huge = (1u32 << 31) - 1;
        let object = [
            &b"}("[..],
            &text("w"),
            &tensor("a", huge, None, (0, &[1], &[1])),
            b"u",
        ]
        .concat();
        let keys = pickle(&[&b"("[..], &text("a"), b"l"].concat());
        let mut header = (huge as u64).to_le_bytes().to_vec();
        header.extend([0u8; 16]);
        let file = [
            MAGIC,
            VERSION,
            &pickle(b"}"),
            &pickle(&object),
            &keys,
            &header,
        ]
        .concat();
        let err = TorchFile::read_legacy(file, "t.pth".into()).err().unwrap();
        assert!(
            err.to_string().contains("reach past the end of the file"),
            "{err}"
        );
        // More storages listed than the remaining bytes could hold.
        let many: Vec<u8> = (0..100).flat_map(|i| text(&format!("k{i}"))).collect();
        let keys = pickle(&[&b"("[..], &many, b"l"].concat());
        let file = [MAGIC, VERSION, &pickle(b"}"), &pickle(b"}"), &keys].concat();
        let err = TorchFile::read_legacy(file, "t.pth".into()).err().unwrap();
        assert!(err.to_string().contains("100 storages are listed"), "{err}");
        // A storage that no tensor uses, or a tensor whose storage is missing.
        let keys = pickle(&[&b"("[..], &text("a"), b"l"].concat());
        let file = [
            MAGIC,
            VERSION,
            &pickle(b"}"),
            &pickle(b"}"),
            &keys,
            &storage(&[1.]),
        ]
        .concat();
        let err = TorchFile::read_legacy(file, "t.pth".into()).err().unwrap();
        assert!(err.to_string().contains("no tensor uses it"), "{err}");
        let object = [
            &b"}("[..],
            &text("w"),
            &tensor("a", 1, None, (0, &[1], &[1])),
            b"u",
        ]
        .concat();
        let file = [
            MAGIC,
            VERSION,
            &pickle(b"}"),
            &pickle(&object),
            &pickle(b"]"),
        ]
        .concat();
        let err = TorchFile::read_legacy(file, "t.pth".into()).err().unwrap();
        assert!(
            err.to_string().contains("storage a (of w) is not listed"),
            "{err}"
        );
    }

    #[test]
    fn hostile_pickles_anywhere_in_the_stream_are_refused() {
        let sys_info = pickle(b"}");
        let object = pickle(b"}");
        for (what, file) in [
            ("magic number", HOSTILE.to_vec()),
            ("protocol version", [MAGIC, HOSTILE].concat()),
            ("sys_info", [MAGIC, VERSION, HOSTILE].concat()),
            ("object", [MAGIC, VERSION, &sys_info, HOSTILE].concat()),
            (
                "storage keys",
                [MAGIC, VERSION, &sys_info, &object, HOSTILE].concat(),
            ),
        ] {
            let err = TorchFile::read_legacy(file, "t.pth".into())
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("refused global posix.system"), "{what}: {err}");
            assert!(err.starts_with("t.pth: "), "{err}");
        }
        let not_torch = pickle(&int(7));
        let err = TorchFile::read_legacy(not_torch, "t.pth".into())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not torch.save's magic number"),
            "{err}"
        );
    }

    #[test]
    fn read_tells_the_formats_apart() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("legacy.pth");
        std::fs::write(&legacy, legacy_file()).unwrap();
        assert_eq!(TorchFile::read(&legacy).unwrap().format, Format::Legacy);
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        let old = dir.path().join("old.pth");
        std::fs::write(&old, tar).unwrap();
        let err = TorchFile::read(&old).err().unwrap().to_string();
        assert!(
            err.contains("old.pth") && err.contains("tar-based"),
            "{err}"
        );
        let other = dir.path().join("x.npy");
        std::fs::write(&other, b"\x93NUMPY").unwrap();
        let err = TorchFile::read(&other).err().unwrap().to_string();
        assert!(err.contains("x.npy: not a torch.save zip archive"), "{err}");
        let zip = dir.path().join("cut.pth");
        std::fs::write(&zip, b"PK\x03\x04 cut").unwrap();
        let err = TorchFile::read(&zip).err().unwrap().to_string();
        assert!(
            err.contains("cut.pth: not a torch.save zip archive"),
            "{err}"
        );
    }
}
