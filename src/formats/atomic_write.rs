//! Crash-safe file writes: write a temporary file beside the target, fsync
//! it, rename it over the target, fsync the folder. A crash at any moment
//! leaves either the old file or the new one, never a torn mix.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

/// Writes `path` through `fill`, atomically.
pub fn write_atomically<F>(path: &Path, fill: F) -> anyhow::Result<()>
where
    F: FnOnce(&mut BufWriter<&File>) -> anyhow::Result<()>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file =
            File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        {
            let mut w = BufWriter::new(&file);
            fill(&mut w)?;
            w.flush()
                .with_context(|| format!("{}: write failed", tmp.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("{}: fsync failed", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot replace", path.display()))?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a string to `path` atomically.
pub fn write_string(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomically(path, |w| Ok(w.write_all(text.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        write_string(&p, "first version, long").unwrap();
        write_string(&p, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_fill_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_string(&p, "good").unwrap();
        let err = write_atomically(&p, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("disk on fire")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "good");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
