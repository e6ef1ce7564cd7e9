//! TensorBoard event files: what `tensorboard --logdir RUN_DIR/tb` reads.
//!
//! An event file is a TFRecord stream of `tensorflow.Event` protobuf
//! messages. Each record is `u64 length | u32 masked_crc32c(length) | data |
//! u32 masked_crc32c(data)` (little endian); the first event carries the
//! file version, every later one a `Summary` of scalar values. Only the
//! fields geossl writes are declared here (prost derives their encoding;
//! the field numbers are those of TensorFlow's `event.proto` and
//! `summary.proto`).
//!
//! A writer owns its folder (`tb/pretrain`, `tb/probe`, ...): opening one
//! removes the event files already there, so a folder always shows one
//! consistent history. Pretraining rebuilds its history from
//! `metrics.jsonl` on resume (see [`crate::train::metrics`]), so a crash
//! neither loses nor duplicates points.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prost::Message;

/// `tensorflow.Event` (the fields geossl writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar (`simple_value`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The TensorBoard folder of `command` (`pretrain`, `probe`, `finetune`)
/// in `folder`: `folder/tb/<command>`, so that `tensorboard --logdir
/// folder/tb` shows each as a run.
pub fn log_dir(folder: &Path, command: &str) -> PathBuf {
    folder.join("tb").join(command)
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that checksums of
/// data that itself holds checksums stay well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its checksum, the data, its checksum.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Seconds since the Unix epoch, TensorBoard's `wall_time`.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalar events to one event file.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Starts a new event file in `dir` (created if needed), removing the
    /// event files already there.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("tfevents"))
            {
                std::fs::remove_file(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            }
        }
        let wall_time = now();
        // TensorBoard's naming: events.out.tfevents.<seconds>.<host>.<pid>.<n>
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.0",
            wall_time as u64,
            std::process::id()
        ));
        let file =
            File::create(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        let mut writer = Self {
            out: BufWriter::new(file),
            path,
        };
        writer.write(&Event {
            wall_time,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        self.out
            .write_all(&record(&event.encode_to_vec()))
            .with_context(|| format!("{}: write failed", self.path.display()))
    }

    /// Scalars `(tag, value)` at `step`, in one event. Non-finite values are
    /// written as they are (TensorBoard shows them as such).
    pub fn scalars(
        &mut self,
        step: i64,
        wall_time: f64,
        values: &[(impl AsRef<str>, f64)],
    ) -> anyhow::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.write(&Event {
            wall_time,
            step,
            file_version: None,
            summary: Some(Summary {
                value: values
                    .iter()
                    .map(|(tag, v)| SummaryValue {
                        tag: tag.as_ref().to_string(),
                        simple_value: Some(*v as f32),
                    })
                    .collect(),
            }),
        })
    }

    /// Hands what is buffered to the operating system, so that a running
    /// TensorBoard sees it.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("{}: write failed", self.path.display()))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back the events of one file, checking every checksum (the
    /// reference reader is TensorBoard's own, in tests/report.rs).
    fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let mut events = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let field = |from: usize, len: usize| {
                bytes.get(from..from + len).with_context(|| {
                    format!("{}: record at byte {at} is truncated", path.display())
                })
            };
            let len_bytes = field(at, 8)?;
            let crc = u32::from_le_bytes(field(at + 8, 4)?.try_into()?);
            anyhow::ensure!(
                crc == masked_crc32c(len_bytes),
                "{}: record at byte {at}: length checksum mismatch",
                path.display()
            );
            let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into()?))?;
            let data = field(at + 12, len)?;
            let crc = u32::from_le_bytes(field(at + 12 + len, 4)?.try_into()?);
            anyhow::ensure!(
                crc == masked_crc32c(data),
                "{}: record at byte {at}: data checksum mismatch",
                path.display()
            );
            events.push(
                Event::decode(data)
                    .with_context(|| format!("{}: record at byte {at}", path.display()))?,
            );
            at += 16 + len;
        }
        Ok(events)
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // Values from TensorBoard's own implementation
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c).
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
        assert_eq!(masked_crc32c(b"geossl"), 0x0d7b_37b7);
        assert_eq!(masked_crc32c(&8u64.to_le_bytes()), 0x0f24_86ff);
    }

    #[test]
    fn events_round_trip_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(3, 1.5, &[("loss", 0.25), ("lr", 0.03)]).unwrap();
        w.scalars(4, 2.5, &[] as &[(&str, f64)]).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 2, "version event + one scalar event");
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let values = &events[1].summary.as_ref().unwrap().value;
        assert_eq!((events[1].step, events[1].wall_time), (3, 1.5));
        assert_eq!(values[0].tag, "loss");
        assert_eq!(values[0].simple_value, Some(0.25));
        assert_eq!(values[1].simple_value, Some(0.03f32));

        // A second writer in the same folder replaces the file.
        let w2 = EventWriter::create(dir.path()).unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "{}", w2.path().display());

        let mut bytes = std::fs::read(w2.path()).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 1;
        std::fs::write(w2.path(), &bytes).unwrap();
        let err = read_events(w2.path()).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }
}
