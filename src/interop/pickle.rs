//! A restricted pickle reader for PyTorch checkpoints. It interprets the
//! opcodes of protocols 2-5 that `torch.save` emits into plain values, and
//! knows only the few globals a checkpoint needs: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2` (and `_rebuild_tensor`, its
//! predecessor in files of PyTorch < 0.4), `torch._utils._rebuild_parameter`
//! and the typed storage classes, plus a short list of data-only objects
//! checkpoints carry beside the state dict ([`OPAQUE_GLOBALS`]), read as
//! opaque values without being built. Any other global (`os.system`,
//! `builtins.eval`, ...) is refused with an error naming it; nothing is ever
//! called or imported, so a hostile file can at worst be rejected.
//! Limits on nesting and memo size keep malformed input from exhausting
//! memory.

use std::collections::HashMap;

/// A storage referenced by a tensor (`persistent_id` of torch.save).
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Element type name, e.g. `FloatStorage`.
    pub kind: String,
    /// File name under `data/` in the zip archive; in the legacy format the
    /// root key the storage is listed under after the object pickle.
    pub key: String,
    /// Elements of the whole (root) storage.
    pub numel: usize,
    /// Legacy format only: the storage is a view of elements
    /// `offset..offset + numel` of the root storage, as `(offset, numel)`
    /// (the `view_metadata` of PyTorch's `_legacy_load`, written by
    /// versions that still had storage views; the root stays `key`).
    pub view: Option<(usize, usize)>,
}

/// A tensor as described in the pickle: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An integer wider than 64 bits (LONG1 of 9 to 16 bytes): torch.save's
    /// magic number 0x1950a86a20f9469cfc6c is one.
    BigInt(i128),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// dict and OrderedDict, in insertion order.
    Dict(Vec<(Value, Value)>),
    Tensor(TensorRef),
    Storage(StorageRef),
    /// An allowed global, not yet applied.
    Global(&'static str),
    /// A known data-only object ([`OPAQUE_GLOBALS`]: `argparse.Namespace`,
    /// a numpy scalar, ...) named by its global; never built, only skipped.
    Opaque(&'static str),
    Mark,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// How messages name a dict key: the string itself, or the key's debug
    /// form when it is not a string.
    pub fn key_name(&self) -> String {
        self.as_str()
            .map_or_else(|| format!("{self:?}"), str::to_string)
    }

    /// The value of `key` in a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

const ALLOWED_GLOBALS: [&str; 5] = [
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.storage",
];

/// Globals of harmless data objects that real checkpoints carry beside the
/// state dict: timm's train.py and torchvision's reference scripts save
/// `args` (an `argparse.Namespace`), ImageNet scripts `best_acc1` as a
/// numpy scalar (numpy 1 `numpy.core`, numpy 2 `numpy._core`; protocol 2
/// pickles its bytes with `_codecs.encode`). They are read as
/// [`Value::Opaque`]: never imported or called, and whatever REDUCE,
/// NEWOBJ, BUILD or SETITEMS would do to them gives the same opaque value.
pub const OPAQUE_GLOBALS: [&str; 14] = [
    "argparse.Namespace",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "collections.defaultdict",
    // the default_factory a defaultdict is pickled with
    "builtins.list",
    "builtins.dict",
    "torch.device",
];

const STORAGE_TYPES: [&str; 9] = [
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "ByteStorage",
    "BoolStorage",
];

fn allowed_global(module: &str, name: &str) -> Result<Value, String> {
    if module == "torch" {
        if let Some(t) = STORAGE_TYPES.iter().find(|t| **t == name) {
            return Ok(Value::Global(t));
        }
    }
    // Protocol 2 names Python 3's builtins `__builtin__` (pickle's
    // fix_imports); Python's unpickler maps it back the same way.
    let module = if module == "__builtin__" {
        "builtins"
    } else {
        module
    };
    let full = format!("{module}.{name}");
    if let Some(g) = OPAQUE_GLOBALS.iter().find(|g| **g == full) {
        return Ok(Value::Opaque(g));
    }
    ALLOWED_GLOBALS
        .iter()
        .find(|g| **g == full && full != "torch.storage")
        .map(|g| Value::Global(g))
        .ok_or_else(|| {
            format!("refused global {full}: only the tensors, storages and dicts of a state dict are read, no code is run")
        })
}

const MAX_DEPTH_ITEMS: usize = 1 << 24;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")) as usize)
    }
    fn u64(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
            .map_err(|_| "length does not fit".to_string())
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated text line")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "non-UTF-8 text line")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "non-UTF-8 string".to_string())
    }
}

fn usize_of(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what}: expected a non-negative integer, found {other:?}"
        )),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|i| usize_of(i, what)).collect()
        }
        other => Err(format!("{what}: expected a tuple, found {other:?}")),
    }
}

/// Applies an allowed callable (REDUCE).
fn call(f: &str, args: Vec<Value>) -> Result<Value, String> {
    match f {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        // (storage, offset, size, stride[, requires_grad, hooks, ...]);
        // the v1 of PyTorch < 0.4 takes the first four only.
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(format!("{f}: too few arguments"));
            };
            let Value::Storage(storage) = storage else {
                return Err(format!("{f}: expected a storage, found {storage:?}"));
            };
            let t = TensorRef {
                storage: storage.clone(),
                offset: usize_of(offset, "storage offset")?,
                size: usizes(size, "size")?,
                stride: usizes(stride, "stride")?,
            };
            if t.size.len() != t.stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(t))
        }
        "torch._utils._rebuild_parameter" => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            other => Err(format!(
                "_rebuild_parameter: expected a tensor, found {other:?}"
            )),
        },
        other => Err(format!("{other} cannot be called")),
    }
}

/// Interprets `data` (a whole pickle) and returns the value it builds.
pub fn load(data: &[u8]) -> Result<Value, String> {
    load_prefix(data, 0).map(|(value, _)| value)
}

/// Interprets the pickle that starts at byte `start` of `data` and returns
/// the value it builds and the position just after its STOP opcode: the
/// legacy torch.save format is several pickles in a row, then raw bytes.
/// Errors give byte positions within `data`.
pub fn load_prefix(data: &[u8], start: usize) -> Result<(Value, usize), String> {
    let mut r = Reader { data, pos: start };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "stack underflow".to_string());
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let at = stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("no mark on the stack")?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        if stack.len() > MAX_DEPTH_ITEMS || memo.len() > MAX_DEPTH_ITEMS {
            return Err("too many objects".into());
        }
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if !(2..=5).contains(&proto) {
                    return Err(format!("pickle protocol {proto} is not supported"));
                }
            }
            0x95 => {
                r.take(8)?; // FRAME: length only
            }
            b'.' => return Ok((pop(&mut stack)?, r.pos)),
            b'(' => stack.push(Value::Mark),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(
                i32::from_le_bytes(r.take(4)?.try_into().expect("4")) as i64,
            )),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let bytes = r.take(n)?;
                if n > 16 {
                    return Err(format!("integer of {n} bytes at byte {at}"));
                }
                // Little-endian two's complement of n bytes.
                let mut v: i128 = 0;
                for (i, b) in bytes.iter().enumerate() {
                    v |= (*b as i128) << (8 * i);
                }
                if n > 0 && n < 16 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i128 << (8 * n);
                }
                stack.push(match i64::try_from(v) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::BigInt(v),
                });
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(
                r.take(8)?.try_into().expect("8"),
            ))),
            b'X' => {
                let n = r.u32()?;
                stack.push(Value::Str(r.utf8(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.utf8(n)?));
            }
            0x8d => {
                let n = r.u64()?;
                stack.push(Value::Str(r.utf8(n)?));
            }
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'T' | b'B' => {
                let n = r.u32()?;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'q' => {
                let i = r.u8()? as usize;
                memo.insert(i, stack.last().ok_or("memo of empty stack")?.clone());
            }
            b'r' => {
                let i = r.u32()?;
                memo.insert(i, stack.last().ok_or("memo of empty stack")?.clone());
            }
            0x94 => {
                let i = memo.len();
                memo.insert(i, stack.last().ok_or("memo of empty stack")?.clone());
            }
            b'h' => {
                let i = r.u8()? as usize;
                stack.push(memo.get(&i).ok_or(format!("memo {i} unset"))?.clone());
            }
            b'j' => {
                let i = r.u32()?;
                stack.push(memo.get(&i).ok_or(format!("memo {i} unset"))?.clone());
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Dict(pairs(items)?));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    Some(Value::Opaque(_)) => {}
                    _ => return Err(format!("APPEND to a non-list at byte {at}")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    Some(Value::Opaque(_)) => {}
                    _ => return Err(format!("APPENDS to a non-list at byte {at}")),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    Some(Value::Opaque(_)) => {}
                    _ => return Err(format!("SETITEM on a non-dict at byte {at}")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                let new = pairs(items)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(new),
                    Some(Value::Opaque(_)) => {}
                    _ => return Err(format!("SETITEMS on a non-dict at byte {at}")),
                }
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(allowed_global(&module, &name)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(allowed_global(&m, &n)?),
                    _ => return Err(format!("STACK_GLOBAL without names at byte {at}")),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                match (f, args) {
                    (Value::Global(f), Value::Tuple(args)) => stack.push(call(f, args)?),
                    (Value::Opaque(name), Value::Tuple(_)) => stack.push(Value::Opaque(name)),
                    _ => return Err(format!("REDUCE of a non-callable at byte {at}")),
                }
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args), for opaque classes only.
                let args = pop(&mut stack)?;
                match (pop(&mut stack)?, args) {
                    (Value::Opaque(name), Value::Tuple(_)) => stack.push(Value::Opaque(name)),
                    (cls, _) => return Err(format!("NEWOBJ of {cls:?} at byte {at}")),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent_storage(pid)?);
            }
            b'b' => {
                // BUILD: set state on the object below. The only state a
                // checkpoint carries is an OrderedDict's `_metadata`, which
                // is not needed; an opaque object stays opaque; anything
                // else is refused.
                let _state = pop(&mut stack)?;
                match stack.last() {
                    Some(Value::Dict(_)) | Some(Value::Tensor(_)) | Some(Value::Opaque(_)) => {}
                    other => return Err(format!("BUILD on {other:?} at byte {at}")),
                }
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {at}"
                ))
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if items.len() % 2 != 0 {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// A text field of a persistent id: `str`, or ASCII `bytes` as Python 2
/// pickles hold them (PyTorch's `_maybe_decode_ascii`).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) if b.is_ascii() => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn plain_key(key: String) -> Result<String, String> {
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("storage key {key:?} is not a plain name"));
    }
    Ok(key)
}

/// torch.save's persistent id: `('storage', <StorageType>, key, location,
/// numel)` in the zip format; the legacy format adds `view_metadata`,
/// `None` or `(view_key, offset, numel)` in elements of the root storage
/// (PyTorch's `_legacy_load`). The location (`cpu`, `cuda:0`) is not
/// needed: everything is read to the CPU.
fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("persistent id is not a tuple: {pid:?}"));
    };
    let (fields, view) = match items.as_slice() {
        [fields @ .., view] if items.len() == 6 => (fields, Some(view)),
        fields => (fields, None),
    };
    let [tag, Value::Global(kind), key, _location, numel] = fields else {
        return Err(format!("unsupported persistent id {items:?}"));
    };
    if text(tag).as_deref() != Some("storage") || !STORAGE_TYPES.contains(kind) {
        return Err(format!("unsupported persistent id {items:?}"));
    }
    let key = plain_key(text(key).ok_or_else(|| format!("storage key {key:?} is not text"))?)?;
    let view = match view {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v)) => match v.as_slice() {
            [_view_key, offset, size] => Some((
                usize_of(offset, "storage view offset")?,
                usize_of(size, "storage view size")?,
            )),
            other => return Err(format!("unsupported storage view {other:?}")),
        },
        Some(other) => return Err(format!("unsupported storage view {other:?}")),
    };
    Ok(Value::Storage(StorageRef {
        kind: kind.to_string(),
        key,
        numel: usize_of(numel, "storage size")?,
        view,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_code_execution() {
        // pickle.dumps of a class whose __reduce__ returns (os.system, ("ls",)), protocol 2.
        let hostile = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let err = load(hostile).unwrap_err();
        assert!(err.contains("refused global posix.system"), "{err}");
        let hostile = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02ls\x94\x85\x94R\x94.";
        let err = load(hostile).unwrap_err();
        assert!(err.contains("refused global os.system"), "{err}");
        let err = load(b"\x80\x02cbuiltins\neval\n.").unwrap_err();
        assert!(err.contains("builtins.eval"), "{err}");
    }

    #[test]
    fn reads_plain_values_and_reports_malformed_input() {
        // pickle.dumps({'epoch': 3, 'arch': 'resnet50', 'lr': 0.5, 'x': [1, -2, True]}, 2)
        let data = b"\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x03X\x04\x00\x00\x00archq\x02X\x08\x00\x00\x00resnet50q\x03X\x02\x00\x00\x00lrq\x04G?\xe0\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x05]q\x06(K\x01J\xfe\xff\xff\xff\x88eu.";
        let v = load(data).unwrap();
        assert_eq!(v.get("epoch"), Some(&Value::Int(3)));
        assert_eq!(v.get("arch").and_then(Value::as_str), Some("resnet50"));
        assert_eq!(v.get("lr"), Some(&Value::Float(0.5)));
        assert_eq!(
            v.get("x"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Bool(true)
            ]))
        );
        for n in 0..data.len() - 1 {
            assert!(
                load(&data[..n]).is_err(),
                "a prefix of {n} bytes must fail cleanly"
            );
        }
        assert!(load(b"\x80\x02\xff")
            .unwrap_err()
            .contains("unsupported pickle opcode 0xff"));
        assert!(load(b"\x80\x02h\x07.")
            .unwrap_err()
            .contains("memo 7 unset"));
        assert!(load(b"\x80\x02a").unwrap_err().contains("underflow"));
    }

    #[test]
    fn reads_a_stream_of_pickles_and_wide_integers() {
        // pickle.dumps(0x1950a86a20f9469cfc6c, 2) + pickle.dumps(1001, 2)
        // + pickle.dumps(-2**70, 2): torch.save's magic number, its
        // protocol version, a negative wide integer.
        let data = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0.";
        let (magic, at) = load_prefix(data, 0).unwrap();
        assert_eq!(magic, Value::BigInt(0x1950A86A20F9469CFC6C));
        assert_eq!(at, 15);
        let (version, at) = load_prefix(data, at).unwrap();
        assert_eq!((version, at), (Value::Int(1001), 21));
        let (wide, at) = load_prefix(data, at).unwrap();
        assert_eq!((wide, at), (Value::BigInt(-(1i128 << 70)), data.len()));
        assert!(load_prefix(data, at).unwrap_err().contains("truncated"));
    }

    #[test]
    fn persistent_ids_of_both_formats() {
        let storage = |items: Vec<Value>| persistent_storage(Value::Tuple(items));
        let base = || {
            vec![
                Value::Str("storage".into()),
                Value::Global("FloatStorage"),
                Value::Bytes(b"94767527398048".to_vec()),
                Value::Str("cuda:0".into()),
                Value::Int(10),
            ]
        };
        let zip = storage(base()).unwrap();
        let Value::Storage(s) = &zip else {
            panic!("{zip:?}")
        };
        assert_eq!(
            (s.key.as_str(), s.numel, s.view),
            ("94767527398048", 10, None)
        );
        let mut legacy = base();
        legacy.push(Value::None);
        assert_eq!(storage(legacy).unwrap(), zip);
        let mut view = base();
        view.push(Value::Tuple(vec![
            Value::Str("1".into()),
            Value::Int(2),
            Value::Int(5),
        ]));
        let Value::Storage(s) = storage(view).unwrap() else {
            panic!()
        };
        assert_eq!(s.view, Some((2, 5)));
        let mut bad = base();
        bad[2] = Value::Str("../data.pkl".into());
        assert!(storage(bad).unwrap_err().contains("not a plain name"));
        let mut module = base();
        module[0] = Value::Str("module".into());
        assert!(storage(module)
            .unwrap_err()
            .contains("unsupported persistent id"));
    }

    #[test]
    fn data_only_objects_are_opaque_and_others_still_refused() {
        // pickle.dumps({'args': argparse.Namespace(lr=0.1, arch='resnet50'),
        // 'acc': np.float64(71.5), 'arr': np.zeros(2, dtype=np.float32),
        // 'dev': torch.device('cuda', 0), 's': {1, 2},
        // 'dd': collections.defaultdict(list, {'a': [1]}), 'epoch': 3}, 2)
        // with numpy 2: NEWOBJ + BUILD, REDUCE, _codecs.encode,
        // __builtin__.set, SETITEM on a defaultdict.
        let data = b"\x80\x02\x7d\x71\x00\x28\x58\x04\x00\x00\x00\x61\x72\x67\x73\x71\x01\x63\x61\x72\x67\x70\x61\x72\
            \x73\x65\x0a\x4e\x61\x6d\x65\x73\x70\x61\x63\x65\x0a\x71\x02\x29\x81\x71\x03\x7d\x71\x04\x28\x58\
            \x02\x00\x00\x00\x6c\x72\x71\x05\x47\x3f\xb9\x99\x99\x99\x99\x99\x9a\x58\x04\x00\x00\x00\x61\x72\
            \x63\x68\x71\x06\x58\x08\x00\x00\x00\x72\x65\x73\x6e\x65\x74\x35\x30\x71\x07\x75\x62\x58\x03\x00\
            \x00\x00\x61\x63\x63\x71\x08\x63\x6e\x75\x6d\x70\x79\x2e\x5f\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\
            \x69\x61\x72\x72\x61\x79\x0a\x73\x63\x61\x6c\x61\x72\x0a\x71\x09\x63\x6e\x75\x6d\x70\x79\x0a\x64\
            \x74\x79\x70\x65\x0a\x71\x0a\x58\x02\x00\x00\x00\x66\x38\x71\x0b\x89\x88\x87\x71\x0c\x52\x71\x0d\
            \x28\x4b\x03\x58\x01\x00\x00\x00\x3c\x71\x0e\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\
            \x4b\x00\x74\x71\x0f\x62\x63\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x10\
            \x58\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc3\xa0\x51\x40\x71\x11\x58\x06\x00\x00\x00\x6c\x61\x74\
            \x69\x6e\x31\x71\x12\x86\x71\x13\x52\x71\x14\x86\x71\x15\x52\x71\x16\x58\x03\x00\x00\x00\x61\x72\
            \x72\x71\x17\x63\x6e\x75\x6d\x70\x79\x2e\x5f\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\
            \x61\x79\x0a\x5f\x72\x65\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71\x18\x63\x6e\x75\x6d\x70\x79\
            \x0a\x6e\x64\x61\x72\x72\x61\x79\x0a\x71\x19\x4b\x00\x85\x71\x1a\x68\x10\x58\x01\x00\x00\x00\x62\
            \x71\x1b\x68\x12\x86\x71\x1c\x52\x71\x1d\x87\x71\x1e\x52\x71\x1f\x28\x4b\x01\x4b\x02\x85\x71\x20\
            \x68\x0a\x58\x02\x00\x00\x00\x66\x34\x71\x21\x89\x88\x87\x71\x22\x52\x71\x23\x28\x4b\x03\x68\x0e\
            \x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x24\x62\x89\x68\x10\x58\x08\
            \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x71\x25\x68\x12\x86\x71\x26\x52\x71\x27\x74\x71\x28\
            \x62\x58\x03\x00\x00\x00\x64\x65\x76\x71\x29\x63\x74\x6f\x72\x63\x68\x0a\x64\x65\x76\x69\x63\x65\
            \x0a\x71\x2a\x58\x04\x00\x00\x00\x63\x75\x64\x61\x71\x2b\x4b\x00\x86\x71\x2c\x52\x71\x2d\x58\x01\
            \x00\x00\x00\x73\x71\x2e\x63\x5f\x5f\x62\x75\x69\x6c\x74\x69\x6e\x5f\x5f\x0a\x73\x65\x74\x0a\x71\
            \x2f\x5d\x71\x30\x28\x4b\x01\x4b\x02\x65\x85\x71\x31\x52\x71\x32\x58\x02\x00\x00\x00\x64\x64\x71\
            \x33\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x64\x65\x66\x61\x75\x6c\x74\x64\x69\x63\
            \x74\x0a\x71\x34\x63\x5f\x5f\x62\x75\x69\x6c\x74\x69\x6e\x5f\x5f\x0a\x6c\x69\x73\x74\x0a\x71\x35\
            \x85\x71\x36\x52\x71\x37\x58\x01\x00\x00\x00\x61\x71\x38\x5d\x71\x39\x4b\x01\x61\x73\x58\x05\x00\
            \x00\x00\x65\x70\x6f\x63\x68\x71\x3a\x4b\x03\x75\x2e";
        let v = load(data).unwrap();
        let opaque = |k: &str| v.get(k).cloned();
        assert_eq!(opaque("args"), Some(Value::Opaque("argparse.Namespace")));
        assert_eq!(
            opaque("acc"),
            Some(Value::Opaque("numpy._core.multiarray.scalar"))
        );
        assert_eq!(
            opaque("arr"),
            Some(Value::Opaque("numpy._core.multiarray._reconstruct"))
        );
        assert_eq!(opaque("dev"), Some(Value::Opaque("torch.device")));
        assert_eq!(opaque("s"), Some(Value::Opaque("builtins.set")));
        assert_eq!(opaque("dd"), Some(Value::Opaque("collections.defaultdict")));
        assert_eq!(opaque("epoch"), Some(Value::Int(3)));
        // Still checked: a truncated stream fails, and a refused global
        // inside an opaque object's arguments is refused by name.
        for n in [10, 100, 300, data.len() - 1] {
            assert!(load(&data[..n]).is_err(), "prefix of {n} bytes");
        }
        let hostile = b"\x80\x02cargparse\nNamespace\n)\x81}X\x01\x00\x00\x00acposix\nsystem\nX\x02\x00\x00\x00ls\x85Rsb.";
        let err = load(hostile).unwrap_err();
        assert!(err.contains("refused global posix.system"), "{err}");
        let err = load(b"\x80\x02c__builtin__\neval\n.").unwrap_err();
        assert!(err.contains("refused global builtins.eval"), "{err}");
        // An opaque value is never taken for a tensor.
        let err =
            load(b"\x80\x02ctorch._utils\n_rebuild_parameter\ncnumpy\ndtype\n\x85R.").unwrap_err();
        assert!(err.contains("expected a tensor"), "{err}");
    }
}
