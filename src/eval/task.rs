//! What a classifier learns and is tested on: the target column (`label`,
//! or `geo_cluster` for the geo-location-learning baseline), the class
//! list, the labelled rows of the train and test splits, and where each
//! test image was taken (for per-location classification).

use std::path::Path;
use std::sync::Arc;

use super::classification::{evaluate, ClassificationReport, SkippedImage};
use super::features::SkipWarnings;
use crate::data::augment::ViewTransform;
use crate::data::bands::InputSpec;
use crate::data::decode::DecodeOptions;
use crate::data::decoded_cache::{CacheBudget, DecodedCache};
use crate::data::loader::{BadImage, BadImagePolicy, ImageLoader};
use crate::data::source::ImageSource;
use crate::data::{ImageRecord, LocationIndex, Manifest, Split};

/// The column classes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The manifest's `label` column (land use, category...).
    Label,
    /// The `geo_cluster` column written by `geossl cluster`.
    GeoCluster,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Label => "label",
            Target::GeoCluster => "geo_cluster",
        }
    }

    fn value(self, r: &ImageRecord) -> Option<String> {
        match self {
            Target::Label => r.label.clone(),
            Target::GeoCluster => r.geo_cluster.map(|c| c.to_string()),
        }
    }
}

/// On the command line the column `geo_cluster` is spelled `geo-cluster`.
impl crate::settings::Choice for Target {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            Target::Label,
            "label",
            "The manifest's `label` column (land use, category...)",
        ),
        (
            Target::GeoCluster,
            "geo-cluster",
            "The `geo_cluster` column written by `geossl cluster`",
        ),
    ];
}
crate::settings::choice_by_name!(Target);

/// Rows of a split with their class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRows {
    pub rows: Vec<usize>,
    /// Class index of each row, into [`Classes::names`].
    pub labels: Vec<i64>,
}

/// The class list: every value of the target column in the rows used,
/// sorted (numerically when every value is an integer).
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    pub target: Target,
    pub names: Vec<String>,
}

/// The rows of `split` ("all" for every row).
pub fn split_rows(manifest: &Manifest, split: &str) -> anyhow::Result<Vec<usize>> {
    if split == "all" {
        return Ok((0..manifest.records.len()).collect());
    }
    let wanted: Split = split
        .parse()
        .map_err(|e: String| anyhow::anyhow!("split {split}: {e} (or all)"))?;
    let rows: Vec<usize> = (0..manifest.records.len())
        .filter(|&i| manifest.records[i].split == Some(wanted))
        .collect();
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: no row has split = {split}",
        manifest.source.display()
    );
    Ok(rows)
}

impl Classes {
    /// The classes of `target` over the rows of all `splits`, or the names
    /// given (a trained classifier's, so indices keep their meaning).
    pub fn of(
        manifest: &Manifest,
        target: Target,
        splits: &[&[usize]],
        given: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let mut names = match given {
            Some(names) => names,
            None => {
                let mut names: Vec<String> = Vec::new();
                for &rows in splits {
                    for &i in rows {
                        let r = &manifest.records[i];
                        let v = target.value(r).ok_or_else(|| {
                            anyhow::anyhow!(
                                "{}:{}:{}: empty, but a classifier needs a class for every row it uses (path {})",
                                manifest.source.display(),
                                i + 2,
                                target.name(),
                                r.path
                            )
                        })?;
                        names.push(v);
                    }
                }
                names
            }
        };
        if names.iter().all(|n| n.parse::<i64>().is_ok()) {
            names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
        } else {
            names.sort();
        }
        names.dedup();
        anyhow::ensure!(
            names.len() >= 2,
            "{}: a classifier needs at least 2 classes in column {}, found {:?}",
            manifest.source.display(),
            target.name(),
            names
        );
        Ok(Self { target, names })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `rows` with their class indices; a value outside the class list is an
    /// error naming the row.
    pub fn label(&self, manifest: &Manifest, rows: &[usize]) -> anyhow::Result<LabelledRows> {
        let labels = rows
            .iter()
            .map(|&i| {
                let r = &manifest.records[i];
                let v = self.target.value(r).unwrap_or_default();
                self.names
                    .iter()
                    .position(|n| *n == v)
                    .map(|p| p as i64)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}:{}:{}: {v:?} is not one of the classes {:?} (path {})",
                            manifest.source.display(),
                            i + 2,
                            self.target.name(),
                            self.names,
                            r.path
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(LabelledRows {
            rows: rows.to_vec(),
            labels,
        })
    }
}

/// The classes (by name, in class order) that label some `test` row but no
/// `train` row.
pub fn untrained_classes(
    classes: &Classes,
    train: &LabelledRows,
    test: &LabelledRows,
) -> Vec<String> {
    let trained: std::collections::HashSet<i64> = train.labels.iter().copied().collect();
    let mut tested: Vec<i64> = test
        .labels
        .iter()
        .copied()
        .filter(|l| !trained.contains(l))
        .collect();
    tested.sort_unstable();
    tested.dedup();
    tested
        .into_iter()
        .map(|l| classes.names[l as usize].clone())
        .collect()
}

/// A classification task on a manifest: train rows, test rows, classes.
pub struct Task {
    pub manifest: Arc<Manifest>,
    pub classes: Classes,
    pub train: LabelledRows,
    pub test: LabelledRows,
    pub train_split: String,
    pub test_split: String,
    /// Location of each test row (index into the location index).
    pub test_locations: Vec<usize>,
    /// What an unreadable image does: the row is left out of training and
    /// of every figure of the report (skip, the default), or the
    /// evaluation stops (fail).
    pub on_bad_image: BadImagePolicy,
    /// Skipped rows already warned about: a task evaluated again and again
    /// (the pretraining kNN monitor) names each unreadable row once.
    pub skip_warnings: SkipWarnings,
    /// Where the images are read from: the manifest's files, or a pack.
    pub source: ImageSource,
    /// How they are decoded (JPEG DCT scaling or full decoding).
    pub decode: DecodeOptions,
    /// Keep the decoded images of the task's loaders between reads (a task
    /// read again and again: the pretraining kNN monitor), one cache per
    /// view and input ([`crate::data::decoded_cache`]).
    pub cache_images: bool,
    caches: TaskCaches,
}

/// The decoded-image caches of a task, by view and input; locked only when
/// a loader is made, never while it reads.
type TaskCaches = std::sync::Mutex<Vec<(ViewTransform, InputSpec, Arc<DecodedCache>)>>;

impl Task {
    /// Reads `manifest` and labels the rows of both splits by `target`;
    /// `classes` fixes the class list (a trained classifier's), else it is
    /// every value found in the two splits.
    pub fn load(
        manifest: &Path,
        target: Target,
        train_split: &str,
        test_split: &str,
        classes: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        Self::new(
            Arc::new(Manifest::read(manifest)?),
            target,
            train_split,
            test_split,
            classes,
        )
    }

    pub fn new(
        manifest: Arc<Manifest>,
        target: Target,
        train_split: &str,
        test_split: &str,
        classes: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let train_rows = split_rows(&manifest, train_split)?;
        let test_rows = split_rows(&manifest, test_split)?;
        let classes = Classes::of(&manifest, target, &[&train_rows, &test_rows], classes)?;
        let train = classes.label(&manifest, &train_rows)?;
        let test = classes.label(&manifest, &test_rows)?;
        let index = LocationIndex::build(&manifest);
        let test_locations = test.rows.iter().map(|&r| index.location_of(r)).collect();
        let untrained = untrained_classes(&classes, &train, &test);
        if !untrained.is_empty() {
            // Not an error: a benchmark may hold out classes on purpose,
            // but every test image of these counts as wrong.
            tracing::warn!(
                "{}: {} class(es) of split {test_split} have no row in split {train_split}, so no classifier trained there can predict them and their {} test image(s) all count as errors: {}",
                manifest.source.display(),
                untrained.len(),
                test.labels
                    .iter()
                    .filter(|&&l| untrained.contains(&classes.names[l as usize]))
                    .count(),
                untrained.join(", ")
            );
        }
        Ok(Self {
            manifest,
            classes,
            train,
            test,
            train_split: train_split.to_string(),
            test_split: test_split.to_string(),
            test_locations,
            on_bad_image: BadImagePolicy::default(),
            skip_warnings: SkipWarnings::default(),
            source: ImageSource::Files,
            decode: DecodeOptions::default(),
            cache_images: false,
            caches: Default::default(),
        })
    }

    /// An evaluation loader of `rows` (in order) under the task's
    /// bad-image policy, reading the images as `input` (the encoder's).
    pub fn loader(
        &self,
        rows: &[usize],
        view: ViewTransform,
        batch: usize,
        input: &InputSpec,
    ) -> ImageLoader {
        let loader = ImageLoader::new(
            self.manifest.clone(),
            rows.to_vec(),
            view,
            batch,
            input.clone(),
        )
        .on_bad_image(self.on_bad_image)
        .with_source(self.source.clone())
        .with_decode(self.decode);
        if !self.cache_images {
            return loader;
        }
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        let cache = match caches.iter().find(|(v, i, _)| *v == view && i == input) {
            Some((_, _, cache)) => cache.clone(),
            None => {
                let cache = DecodedCache::new(self.manifest.records.len(), CacheBudget::process());
                caches.push((view, input.clone(), cache.clone()));
                cache
            }
        };
        loader.with_cache(cache)
    }

    /// The class indices of `rows` (rows of the train split, in any order:
    /// those that were read).
    pub fn train_labels(&self, rows: &[usize]) -> anyhow::Result<Vec<i64>> {
        let of: std::collections::HashMap<usize, i64> = self
            .train
            .rows
            .iter()
            .copied()
            .zip(self.train.labels.iter().copied())
            .collect();
        rows.iter()
            .map(|r| {
                of.get(r).copied().ok_or_else(|| {
                    anyhow::anyhow!(
                        "manifest line {} is not in split {}",
                        r + 2,
                        self.train_split
                    )
                })
            })
            .collect()
    }

    /// Rows left out as unreadable ((row, why), as the loader reports
    /// them), as a report lists them; `split` names the split they came
    /// from.
    pub fn skipped(&self, rows: &[(usize, BadImage)], split: &str) -> Vec<SkippedImage> {
        rows.iter()
            .map(|(row, bad)| SkippedImage {
                split: split.to_string(),
                line: row + 2,
                path: bad.path.clone(),
                error: bad.error.clone(),
            })
            .collect()
    }

    /// The report of the test rows `rows` (those that were read, in the
    /// order of `probs`) from their class probabilities `probs` (rows x
    /// classes, row-major); `skipped` lists the rows left out of either
    /// split. Labels and locations are looked up per row, so every part of
    /// the report (per class, per location) is over exactly these rows.
    pub fn report(
        &self,
        rows: &[usize],
        probs: &[f32],
        protocol: String,
        encoder: &str,
        mut skipped: Vec<SkippedImage>,
    ) -> anyhow::Result<ClassificationReport> {
        let of: std::collections::HashMap<usize, (i64, usize)> = self
            .test
            .rows
            .iter()
            .enumerate()
            .map(|(i, &r)| (r, (self.test.labels[i], self.test_locations[i])))
            .collect();
        let (labels, locations): (Vec<i64>, Vec<usize>) = rows
            .iter()
            .map(|r| {
                of.get(r).copied().ok_or_else(|| {
                    anyhow::anyhow!(
                        "manifest line {} is not in split {}",
                        r + 2,
                        self.test_split
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        anyhow::ensure!(
            probs.len() == rows.len() * self.classes.len(),
            "{} probabilities for {} test rows of {} classes",
            probs.len(),
            rows.len(),
            self.classes.len()
        );
        let mut report = evaluate(probs, &labels, &locations, &self.classes.names);
        report.protocol = protocol;
        report.encoder = encoder.to_string();
        report.test_split = self.test_split.clone();
        // One entry per row and split (a split used twice, as with `all`,
        // is read twice).
        skipped.sort_by(|a, b| (a.line, &a.split).cmp(&(b.line, &b.split)));
        skipped.dedup_by(|a, b| a.line == b.line && a.split == b.split);
        report.skipped = skipped;
        Ok(report)
    }

    /// Distinct locations among the test images.
    pub fn per_location_count(&self) -> usize {
        let mut l = self.test_locations.clone();
        l.sort_unstable();
        l.dedup();
        l.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let csv = "path,label,split,geo_cluster\na.png,farm,train,10\nb.png,lake,train,2\nc.png,farm,val,2\nd.png,airport,val,1\ne.png,,test,3\n";
        let mut m = Manifest::parse(csv.as_bytes(), "m.csv", Path::new(".")).unwrap();
        m.source = "m.csv".into();
        m
    }

    #[test]
    fn classes_and_labels() {
        let m = manifest();
        let train = split_rows(&m, "train").unwrap();
        let val = split_rows(&m, "val").unwrap();
        assert_eq!((train.clone(), val.clone()), (vec![0, 1], vec![2, 3]));
        let c = Classes::of(&m, Target::Label, &[&train, &val], None).unwrap();
        assert_eq!(c.names, ["airport", "farm", "lake"]);
        assert_eq!(c.label(&m, &val).unwrap().labels, vec![1, 0]);
        let g = Classes::of(&m, Target::GeoCluster, &[&train, &val], None).unwrap();
        assert_eq!(g.names, ["1", "2", "10"], "integers sort numerically");
        let test = split_rows(&m, "test").unwrap();
        let err = Classes::of(&m, Target::Label, &[&test], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.csv:6:label: empty, but a classifier needs a class for every row it uses (path e.png)"
        );
        let only_farm = Classes::of(
            &m,
            Target::Label,
            &[],
            Some(vec!["farm".into(), "x".into()]),
        )
        .unwrap();
        let err = only_farm.label(&m, &[1]).unwrap_err().to_string();
        assert_eq!(
            err,
            "m.csv:3:label: \"lake\" is not one of the classes [\"farm\", \"x\"] (path b.png)"
        );
        assert!(split_rows(&m, "bogus").is_err());
    }

    #[test]
    fn test_classes_without_training_rows_are_found() {
        let m = manifest();
        let (train, val) = (
            split_rows(&m, "train").unwrap(),
            split_rows(&m, "val").unwrap(),
        );
        let c = Classes::of(&m, Target::Label, &[&train, &val], None).unwrap();
        let (train, val) = (c.label(&m, &train).unwrap(), c.label(&m, &val).unwrap());
        // val has farm and airport, train farm and lake: airport is never
        // learnt (lake, never tested, is harmless).
        assert_eq!(untrained_classes(&c, &train, &val), ["airport"]);
        assert_eq!(untrained_classes(&c, &val, &train), ["lake"]);
        assert!(untrained_classes(&c, &train, &train).is_empty());
    }

    #[test]
    fn the_report_follows_the_rows_that_were_read() {
        let csv = "path,label,split,location_id\na.png,farm,train,p\nb.png,lake,train,q\nc.png,farm,val,p\nd.png,lake,val,q\ne.png,lake,val,q\n";
        let mut m = Manifest::parse(csv.as_bytes(), "m.csv", Path::new(".")).unwrap();
        m.source = "m.csv".into();
        let task = Task::new(Arc::new(m), Target::Label, "train", "val", None).unwrap();
        assert_eq!(task.test.rows, vec![2, 3, 4]);
        // Row 3 (line 5) unreadable: probabilities for rows 2 and 4 only,
        // both right; its label and location must not be used.
        let bad = BadImage {
            path: "d.png".into(),
            error: "d.png: empty file".into(),
        };
        let skipped = task.skipped(&[(3, bad)], "val");
        let r = task
            .report(&[2, 4], &[0.9, 0.1, 0.2, 0.8], String::new(), "", skipped)
            .unwrap();
        assert_eq!((r.test_images, r.top1), (2, 1.0));
        assert_eq!(r.per_location.locations, 2);
        let images: Vec<usize> = r.per_class.iter().map(|c| c.images).collect();
        assert_eq!(images, vec![1, 1], "farm: c.png, lake: e.png");
        assert_eq!(r.confusion, vec![vec![1, 0], vec![0, 1]]);
        assert_eq!(
            (
                r.skipped.len(),
                r.skipped[0].line,
                r.skipped[0].split.as_str()
            ),
            (1, 5, "val")
        );
        assert!(r
            .to_string()
            .contains("skipped   1 unreadable images (1 of the test split)"));
        assert_eq!(
            task.train_labels(&[1, 0]).unwrap(),
            vec![1, 0],
            "labels follow the rows given"
        );
        // Probabilities that do not match the rows are refused.
        let err = task
            .report(&[2, 4], &[0.9, 0.1], String::new(), "", Vec::new())
            .unwrap_err();
        assert!(
            err.to_string().contains("2 probabilities for 2 test rows"),
            "{err}"
        );
        assert!(task
            .report(&[0], &[0.5, 0.5], String::new(), "", Vec::new())
            .is_err());
    }
}
