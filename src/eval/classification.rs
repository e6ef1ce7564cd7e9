//! Classification reports: top-1, top-5 (more than 5 classes), macro F1,
//! per-class accuracy, and the paper's temporal (per-location) variant: the
//! softmax probabilities of all test images of a location are summed and
//! the argmax becomes the prediction for each of its images.

use std::collections::HashMap;

pub use crate::formats::classification_report::{
    ClassRow, ClassificationReport, LocationScore, SkippedImage,
};

/// Index of the largest value (the first of equals).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Whether `label` is among the `k` largest values of `row` (ties counted
/// against it only when strictly larger values fill the k places).
fn in_top_k(row: &[f32], label: usize, k: usize) -> bool {
    row.iter().filter(|&&v| v > row[label]).count() < k
}

/// Builds the report from `probs` (N x C, each row a probability vector),
/// the true labels, and each test image's location key.
pub fn evaluate(
    probs: &[f32],
    labels: &[i64],
    locations: &[usize],
    class_names: &[String],
) -> ClassificationReport {
    let c = class_names.len();
    let n = labels.len();
    assert_eq!(probs.len(), n * c, "probabilities are N x C");
    assert_eq!(locations.len(), n, "one location per test image");
    let rows: Vec<&[f32]> = probs.chunks_exact(c.max(1)).collect();
    let predicted: Vec<usize> = rows.iter().map(|r| argmax(r)).collect();
    let truth: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let frac = |hits: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
    let top1 = frac((0..n).filter(|&i| predicted[i] == truth[i]).count());
    let top5 = (c > 5).then(|| frac((0..n).filter(|&i| in_top_k(rows[i], truth[i], 5)).count()));

    // Temporal classification: sum the probabilities per location.
    let mut sums: HashMap<usize, Vec<f32>> = HashMap::new();
    for (i, &loc) in locations.iter().enumerate() {
        let s = sums.entry(loc).or_insert_with(|| vec![0.0; c]);
        s.iter_mut().zip(rows[i]).for_each(|(a, &b)| *a += b);
    }
    let location_prediction: HashMap<usize, usize> =
        sums.iter().map(|(&l, s)| (l, argmax(s))).collect();
    let per_location = LocationScore {
        locations: sums.len(),
        top1: frac(
            (0..n)
                .filter(|&i| location_prediction[&locations[i]] == truth[i])
                .count(),
        ),
    };

    let mut tp = vec![0usize; c];
    let mut actual = vec![0usize; c];
    let mut called = vec![0usize; c];
    let mut confusion = vec![vec![0usize; c]; c];
    for i in 0..n {
        confusion[truth[i]][predicted[i]] += 1;
        actual[truth[i]] += 1;
        called[predicted[i]] += 1;
        if predicted[i] == truth[i] {
            tp[truth[i]] += 1;
        }
    }
    let f1 = |k: usize| {
        let denom = actual[k] + called[k];
        if denom == 0 {
            0.0
        } else {
            2.0 * tp[k] as f64 / denom as f64
        }
    };
    // Macro F1 over the classes that occur in the truth or the predictions
    // (scikit-learn's `f1_score(average="macro")`).
    let present: Vec<usize> = (0..c).filter(|&k| actual[k] + called[k] > 0).collect();
    let macro_f1 = if present.is_empty() {
        0.0
    } else {
        present.iter().map(|&k| f1(k)).sum::<f64>() / present.len() as f64
    };
    let per_class = (0..c)
        .map(|k| ClassRow {
            class: class_names[k].clone(),
            images: actual[k],
            accuracy: if actual[k] == 0 {
                0.0
            } else {
                tp[k] as f64 / actual[k] as f64
            },
            f1: f1(k),
        })
        .collect();
    ClassificationReport {
        protocol: String::new(),
        encoder: String::new(),
        test_split: String::new(),
        test_images: n,
        classes: c,
        top1,
        top5,
        macro_f1,
        per_location,
        per_class,
        confusion,
        skipped: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn per_location_aggregation_on_a_hand_made_example() {
        // Location 7: three images of class 1. Two lean slightly to class 0,
        // one is confidently class 1: per image 1/3 right, summed 0.45+0.45+0.05
        // = 0.95 for class 0 against 0.55+0.55+0.95 = 2.05 for class 1: all
        // three right. Location 9: one image of class 0, predicted class 0.
        let probs = [
            0.55, 0.45, //
            0.55, 0.45, //
            0.05, 0.95, //
            0.9, 0.1,
        ];
        let r = evaluate(&probs, &[1, 1, 1, 0], &[7, 7, 7, 9], &names(2));
        assert_eq!(r.top1, 0.5);
        assert_eq!(r.per_location.locations, 2);
        assert_eq!(r.per_location.top1, 1.0);
        assert_eq!(r.top5, None, "top-5 only with more than 5 classes");
        // Class 0: 1 true, 3 called, 1 hit -> F1 = 2/4; class 1: 3 true, 1
        // called, 1 hit -> F1 = 2/4.
        assert_eq!(r.macro_f1, 0.5);
        assert_eq!(r.per_class[1].accuracy, 1.0 / 3.0);
        assert_eq!(r.per_class[0].images, 1);
        // True class 0: predicted 0 once; true class 1: 0 twice, 1 once.
        assert_eq!(r.confusion, vec![vec![1, 0], vec![2, 1]]);
    }

    #[test]
    fn top5_and_absent_classes() {
        let mut probs = vec![0.0f32; 2 * 7];
        // Image 0 (class 6): ranked 6th -> outside the top 5.
        for (k, p) in [0.3, 0.2, 0.15, 0.12, 0.1, 0.0, 0.08].iter().enumerate() {
            probs[k] = *p;
        }
        // Image 1 (class 2): ranked 2nd -> in the top 5.
        probs[7] = 0.6;
        probs[7 + 2] = 0.4;
        let r = evaluate(&probs, &[6, 2], &[0, 1], &names(7));
        assert_eq!(r.top1, 0.0);
        assert_eq!(r.top5, Some(0.5));
        // Classes 0 (called twice), 2 and 6 (one true each) count: F1 all 0.
        assert_eq!(r.macro_f1, 0.0);
        let text = r.to_string();
        assert!(text.contains("top-5 50.00%"), "{text}");
    }
}
