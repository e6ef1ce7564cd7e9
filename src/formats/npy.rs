//! NumPy `.npy` files (format version 1.0, little-endian, C order): what
//! `numpy.load` reads without pickle. Written atomically.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Element types geossl writes.
pub trait NpyElement: Copy {
    const DESCR: &'static str;
    fn write_le(self, w: &mut impl Write) -> std::io::Result<()>;
    fn from_le(bytes: &[u8]) -> Self;
    const SIZE: usize;
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    const SIZE: usize = 4;
    fn write_le(self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.to_le_bytes())
    }
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
}

impl NpyElement for f64 {
    const DESCR: &'static str = "<f8";
    const SIZE: usize = 8;
    fn write_le(self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.to_le_bytes())
    }
    fn from_le(b: &[u8]) -> Self {
        f64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
}

/// `u8` as NumPy's `|u1` (byte order does not apply).
impl NpyElement for u8 {
    const DESCR: &'static str = "|u1";
    const SIZE: usize = 1;
    fn write_le(self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&[self])
    }
    fn from_le(b: &[u8]) -> Self {
        b[0]
    }
}

/// The magic, version, header length and header of a `.npy` file of
/// `len` values of `T` in `shape`. Errors: the shape does not hold `len`.
fn header<T: NpyElement>(shape: &[usize], len: usize) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        shape.iter().product::<usize>() == len,
        "npy: shape {shape:?} does not hold {len} values"
    );
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        T::DESCR
    );
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// `data` (row-major, `shape.iter().product()` values) as the bytes of a
/// `.npy` file (e.g. a member of a `geossl pack` shard).
pub fn to_bytes<T: NpyElement>(shape: &[usize], data: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut out = header::<T>(shape, data.len())?;
    out.reserve(data.len() * T::SIZE);
    for &v in data {
        v.write_le(&mut out)?;
    }
    Ok(out)
}

/// Writes `data` (row-major, `shape.iter().product()` values) as `.npy`.
pub fn write<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> anyhow::Result<()> {
    let header = header::<T>(shape, data.len())?;
    crate::formats::atomic_write::write_atomically(path, |w| {
        w.write_all(&header)?;
        for &v in data {
            v.write_le(w)?;
        }
        Ok(())
    })
}

/// Reads a version 1.x `.npy` file of element type `T` in C order:
/// (shape, values). Other layouts are refused with a message.
pub fn read<T: NpyElement>(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<T>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    from_bytes(&bytes, &path.display().to_string())
}

/// [`read`] of a `.npy` file's bytes; `file` names it in errors.
pub fn from_bytes<T: NpyElement>(bytes: &[u8], file: &str) -> anyhow::Result<(Vec<usize>, Vec<T>)> {
    anyhow::ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY" && bytes[6] == 1,
        "{file}: not a version 1 .npy file"
    );
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = bytes
        .get(10..10 + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| anyhow::anyhow!("{file}: truncated or non-text header"))?;
    anyhow::ensure!(
        header.contains(&format!("'descr': '{}'", T::DESCR)),
        "{file}: element type is not {} ({header})",
        T::DESCR
    );
    anyhow::ensure!(
        header.contains("'fortran_order': False"),
        "{file}: Fortran order is not supported"
    );
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow::anyhow!("{file}: no shape in header ({header})"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{file}: bad shape ({shape_text}): {e}"))?;
    let body = &bytes[10 + header_len..];
    let count: usize = shape.iter().product();
    anyhow::ensure!(
        body.len() == count * T::SIZE,
        "{file}: {} data bytes for shape {shape:?} of {}",
        body.len(),
        T::DESCR
    );
    Ok((shape, body.chunks_exact(T::SIZE).map(T::from_le).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_aligns_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        write(&p, &[2, 3], &data).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 6 * 4) % 64, 0, "data starts 64-aligned");
        assert_eq!(read::<f32>(&p).unwrap(), (vec![2, 3], data));
        let err = read::<f64>(&p).unwrap_err().to_string();
        assert!(err.contains("element type is not <f8"), "{err}");
        write(&p, &[3], &[1.0f64, 2.0, 3.0]).unwrap();
        assert_eq!(read::<f64>(&p).unwrap().0, vec![3]);
        assert!(write(&p, &[2, 2], &[1.0f32]).is_err());
        let bytes = to_bytes(&[2, 2], &[1u8, 2, 3, 250]).unwrap();
        assert_eq!(bytes.len() % 64, 4);
        assert_eq!(
            from_bytes::<u8>(&bytes, "m.npy").unwrap(),
            (vec![2, 2], vec![1, 2, 3, 250])
        );
        std::fs::write(&p, b"\x93NUMPY\x01\x00\xff\xff").unwrap();
        assert!(read::<f32>(&p)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }
}
