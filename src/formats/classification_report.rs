//! The classification report's file format: what `probe.json`, `knn.json`
//! and a classifier folder's `report.json` hold (top-1, top-5, macro F1,
//! per-class and per-location scores, confusion matrix, the rows left out),
//! and how it prints. Evaluation fills it in (`eval::classification`), the
//! HTML report reads it.

use std::fmt;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One class's row of a [`ClassificationReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRow {
    pub class: String,
    /// Test images of this class.
    pub images: usize,
    pub accuracy: f64,
    pub f1: f64,
}

/// The paper's temporal (per-location) classification score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationScore {
    /// Locations among the test images.
    pub locations: usize,
    /// Top-1 over test images, each predicted by its location's summed
    /// probabilities.
    pub top1: f64,
}

/// A row that was left out of an evaluation because its image could not be
/// read (`--on-bad-image skip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    /// The split it belonged to (the task's train or test split).
    pub split: String,
    /// Its line in the manifest (the header is line 1).
    pub line: usize,
    /// Its `path` as the manifest writes it.
    pub path: String,
    /// The decoder's message.
    pub error: String,
}

/// A classification of a test split, as evaluation writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// How the numbers were obtained (classifier, features, transforms).
    pub protocol: String,
    /// What was evaluated (checkpoint path, method).
    pub encoder: String,
    pub test_split: String,
    pub test_images: usize,
    pub classes: usize,
    pub top1: f64,
    pub top5: Option<f64>,
    pub macro_f1: f64,
    pub per_location: LocationScore,
    pub per_class: Vec<ClassRow>,
    /// Test images by true class (rows) and predicted class (columns), in
    /// the order of `per_class` (empty in reports written before it existed).
    #[serde(default)]
    pub confusion: Vec<Vec<usize>>,
    /// Rows left out as unreadable, of either split; every figure above
    /// (per class and per location too) is over the test rows that were
    /// read.
    #[serde(default)]
    pub skipped: Vec<SkippedImage>,
}

impl ClassificationReport {
    /// The headline figures as TensorBoard scalars under `prefix`.
    pub fn tensorboard_scalars(&self, prefix: &str) -> Vec<(String, f64)> {
        let mut v = vec![
            (format!("{prefix}/test_top1"), self.top1),
            (format!("{prefix}/test_macro_f1"), self.macro_f1),
            (
                format!("{prefix}/test_per_location_top1"),
                self.per_location.top1,
            ),
        ];
        if let Some(t5) = self.top5 {
            v.push((format!("{prefix}/test_top5"), t5));
        }
        v
    }

    /// Reads a report that [`Self::write_json`] wrote. A missing file is an
    /// error too ("cannot read", over the I/O error, which callers that
    /// allow one can downcast).
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a geossl classification report", path.display()))
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        crate::formats::atomic_write::write_string(path, &serde_json::to_string_pretty(self)?)
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "encoder   {}", self.encoder)?;
        writeln!(f, "protocol  {}", self.protocol)?;
        writeln!(
            f,
            "test      {} images of split {}, {} classes, {} locations",
            self.test_images, self.test_split, self.classes, self.per_location.locations
        )?;
        if let Some(first) = self.skipped.first() {
            let test = self
                .skipped
                .iter()
                .filter(|s| s.split == self.test_split)
                .count();
            writeln!(
                f,
                "skipped   {} unreadable images ({test} of the test split), left out of every figure; the first, line {}: {}{}",
                self.skipped.len(),
                first.line,
                first.error,
                if self.skipped.len() > 1 { " (all are listed in the report's JSON)" } else { "" }
            )?;
        }
        write!(f, "top-1     {:.2}%", 100.0 * self.top1)?;
        if let Some(t5) = self.top5 {
            write!(f, "   top-5 {:.2}%", 100.0 * t5)?;
        }
        writeln!(
            f,
            "   macro F1 {:.4}   per-location top-1 {:.2}%",
            self.macro_f1,
            100.0 * self.per_location.top1
        )?;
        let width = self
            .per_class
            .iter()
            .map(|r| r.class.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(f, "{:<width$}  images  accuracy      F1", "class")?;
        for r in &self.per_class {
            writeln!(
                f,
                "{:<width$}  {:>6}  {:>7.2}%  {:.4}",
                r.class,
                r.images,
                100.0 * r.accuracy,
                r.f1
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_written_before_confusion_and_skipped_existed_still_load() {
        let old = r#"{"protocol": "p", "encoder": "e", "test_split": "val",
            "test_images": 2, "classes": 1, "top1": 0.5, "top5": null,
            "macro_f1": 0.5, "per_location": {"locations": 1, "top1": 1.0},
            "per_class": [{"class": "a", "images": 2, "accuracy": 0.5, "f1": 0.5}]}"#;
        let r: ClassificationReport = serde_json::from_str(old).unwrap();
        assert!(r.confusion.is_empty() && r.skipped.is_empty());
        assert_eq!(r.per_class[0].class, "a");
        assert!(!r.to_string().contains("skipped"), "{r}");
    }
}
