//! Model quality from delayed labels: per time bucket, the confusion matrix,
//! regression error sums and business value of the labeled predictions, and
//! the figures a window's merge of them gives (accuracy, precision, recall,
//! F1, MAE, RMSE, MAPE), computed as scikit-learn does with `zero_division=0`.
//!
//! Everything here is additive, so a window is the merge of its buckets and N
//! shards merged equal one instance. A corrected label is retracted (added
//! with [`Sign::Retract`]) and its replacement added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether a labeled outcome is added, or taken back because its label was
/// corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Add,
    Retract,
}

/// What one labeled prediction scores, under folded names.
#[derive(Debug, Clone, Copy)]
pub enum Scored<'a> {
    Class { predicted: &'a str, actual: &'a str },
    Value { predicted: f64, actual: f64 },
}

/// One labeled prediction's contribution to a bucket.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub scored: Scored<'a>,
    /// Business values under folded names.
    pub business: Vec<(&'a str, f64)>,
    /// The prediction's segments under folded names.
    pub segments: Vec<(&'a str, &'a str)>,
}

/// Sums of regression errors; the means are these over `count`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorSums {
    pub count: u64,
    pub absolute: f64,
    pub squared: f64,
    /// |actual - predicted| / max(|actual|, f64::EPSILON), as scikit-learn's
    /// `mean_absolute_percentage_error` (a fraction, not a percentage).
    pub absolute_percentage: f64,
}

/// The quality of a set of labeled predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Labeled predictions.
    pub labeled: u64,
    /// predicted class -> actual class -> count.
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
    pub errors: ErrorSums,
    /// Sum of each business value over the labeled predictions.
    pub business: BTreeMap<String, f64>,
}

impl Quality {
    pub fn is_empty(&self) -> bool {
        self.labeled == 0
    }

    pub fn add(&mut self, outcome: &Outcome<'_>, sign: Sign) {
        let (count_delta, value_sign) = match sign {
            Sign::Add => (1i64, 1.0),
            Sign::Retract => (-1i64, -1.0),
        };
        self.labeled = self.labeled.saturating_add_signed(count_delta);
        match outcome.scored {
            Scored::Class { predicted, actual } => {
                let row = match self.confusion.get_mut(predicted) {
                    Some(row) => row,
                    None => self.confusion.entry(predicted.to_owned()).or_default(),
                };
                match row.get_mut(actual) {
                    Some(count) => *count = count.saturating_add_signed(count_delta),
                    None if sign == Sign::Add => {
                        row.insert(actual.to_owned(), 1);
                    }
                    None => {}
                }
                row.retain(|_, count| *count > 0);
                if row.is_empty() {
                    self.confusion.remove(predicted);
                }
            }
            Scored::Value { predicted, actual } => {
                let error = (actual - predicted).abs();
                self.errors.count = self.errors.count.saturating_add_signed(count_delta);
                self.errors.absolute += value_sign * error;
                self.errors.squared += value_sign * error * error;
                self.errors.absolute_percentage += value_sign * error / actual.abs().max(f64::EPSILON);
            }
        }
        for (name, value) in &outcome.business {
            match self.business.get_mut(*name) {
                Some(sum) => *sum += value_sign * value,
                None => {
                    self.business.insert((*name).to_owned(), value_sign * value);
                }
            }
        }
        // Sums that went back to nothing are exactly nothing, not rounding.
        if self.errors.count == 0 {
            self.errors = ErrorSums::default();
        }
        if self.labeled == 0 {
            self.business.clear();
        }
    }

    pub fn merge(&mut self, other: &Quality) {
        self.labeled += other.labeled;
        for (predicted, row) in &other.confusion {
            let mine = self.confusion.entry(predicted.clone()).or_default();
            for (actual, count) in row {
                *mine.entry(actual.clone()).or_default() += count;
            }
        }
        self.errors.count += other.errors.count;
        self.errors.absolute += other.errors.absolute;
        self.errors.squared += other.errors.squared;
        self.errors.absolute_percentage += other.errors.absolute_percentage;
        for (name, sum) in &other.business {
            *self.business.entry(name.clone()).or_default() += sum;
        }
    }
}

/// The quality of one bucket: overall, and per segment value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityBucket {
    pub all: Quality,
    /// segment key -> value -> quality of the predictions in that segment.
    pub segments: BTreeMap<String, BTreeMap<String, Quality>>,
}

impl QualityBucket {
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.segments.is_empty()
    }

    pub fn add(&mut self, outcome: &Outcome<'_>, sign: Sign) {
        self.all.add(outcome, sign);
        for (key, value) in &outcome.segments {
            let values = match self.segments.get_mut(*key) {
                Some(values) => values,
                None => self.segments.entry((*key).to_owned()).or_default(),
            };
            let quality = match values.get_mut(*value) {
                Some(quality) => quality,
                None => values.entry((*value).to_owned()).or_default(),
            };
            quality.add(outcome, sign);
            if quality.is_empty() {
                values.remove(*value);
                if values.is_empty() {
                    self.segments.remove(*key);
                }
            }
        }
    }

    pub fn merge(&mut self, other: &QualityBucket) {
        self.all.merge(&other.all);
        for (key, values) in &other.segments {
            let mine = self.segments.entry(key.clone()).or_default();
            for (value, quality) in values {
                mine.entry(value.clone()).or_default().merge(quality);
            }
        }
    }

    /// The quality of one segment value, or of everything.
    pub fn of_segment(&self, segment: Option<(&str, &str)>) -> Option<&Quality> {
        match segment {
            None => Some(&self.all),
            Some((key, value)) => self.segments.get(key)?.get(value),
        }
    }
}

/// Lifetime counts of labeled classifications, by predicted and actual class:
/// what `ml_prediction_labeled_total` exposes. Counters only grow, so a
/// corrected label adds its new pair to `applied` and its old pair to
/// `retracted`; the net count is the difference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelCounters {
    pub applied: BTreeMap<String, BTreeMap<String, u64>>,
    pub retracted: BTreeMap<String, BTreeMap<String, u64>>,
}

impl LabelCounters {
    pub fn observe(&mut self, predicted: &str, actual: &str, sign: Sign) {
        let counts = match sign {
            Sign::Add => &mut self.applied,
            Sign::Retract => &mut self.retracted,
        };
        let row = match counts.get_mut(predicted) {
            Some(row) => row,
            None => counts.entry(predicted.to_owned()).or_default(),
        };
        match row.get_mut(actual) {
            Some(count) => *count += 1,
            None => {
                row.insert(actual.to_owned(), 1);
            }
        }
    }

    pub fn merge(&mut self, other: &LabelCounters) {
        for (mine, theirs) in [
            (&mut self.applied, &other.applied),
            (&mut self.retracted, &other.retracted),
        ] {
            for (predicted, row) in theirs {
                let target = mine.entry(predicted.clone()).or_default();
                for (actual, count) in row {
                    *target.entry(actual.clone()).or_default() += count;
                }
            }
        }
    }
}

/// Precision, recall and F1 of one class, with its support (how many labels
/// name it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AveragedScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The confusion matrix as scikit-learn lays it out: `matrix[i][j]` counts
/// the predictions of class `labels[j]` whose actual class is `labels[i]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfusionMatrix {
    pub labels: Vec<String>,
    pub matrix: Vec<Vec<u64>>,
}

/// Classification figures of a set of labeled predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    pub accuracy: f64,
    pub per_class: BTreeMap<String, ClassScores>,
    pub macro_average: AveragedScores,
    pub weighted_average: AveragedScores,
    pub confusion: ConfusionMatrix,
}

/// `numerator / denominator`, or 0 when the denominator is 0 (scikit-learn's
/// `zero_division=0`).
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

impl Quality {
    /// The classification figures; `None` when no classification is labeled.
    /// Classes are those that appear as predicted or actual, sorted, as
    /// scikit-learn's `unique_labels` gives them.
    pub fn classification(&self) -> Option<ClassificationReport> {
        let mut classes: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new(); // (tp, predicted, actual)
        let mut total = 0u64;
        let mut correct = 0u64;
        for (predicted, row) in &self.confusion {
            for (actual, count) in row {
                if *count == 0 {
                    continue;
                }
                total += count;
                classes.entry(predicted).or_default().1 += count;
                classes.entry(actual).or_default().2 += count;
                if predicted == actual {
                    classes.entry(predicted).or_default().0 += count;
                    correct += count;
                }
            }
        }
        if total == 0 {
            return None;
        }
        let mut per_class = BTreeMap::new();
        let (mut macro_sum, mut weighted_sum) = ([0.0; 3], [0.0; 3]);
        for (class, (tp, predicted, actual)) in &classes {
            let (tp, predicted, actual) = (*tp as f64, *predicted as f64, *actual as f64);
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, actual);
            // scikit-learn's form: 2tp / (2tp + fp + fn).
            let f1 = ratio(2.0 * tp, 2.0 * tp + (predicted - tp) + (actual - tp));
            for (index, value) in [precision, recall, f1].into_iter().enumerate() {
                macro_sum[index] += value;
                weighted_sum[index] += value * actual;
            }
            per_class.insert(
                (*class).to_owned(),
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support: actual as u64,
                },
            );
        }
        let count = classes.len() as f64;
        let labels: Vec<String> = classes.keys().map(|class| (*class).to_owned()).collect();
        let matrix = labels
            .iter()
            .map(|actual| {
                labels
                    .iter()
                    .map(|predicted| {
                        self.confusion
                            .get(predicted)
                            .and_then(|row| row.get(actual))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect()
            })
            .collect();
        let total_f = total as f64;
        Some(ClassificationReport {
            accuracy: correct as f64 / total_f,
            per_class,
            macro_average: AveragedScores {
                precision: macro_sum[0] / count,
                recall: macro_sum[1] / count,
                f1: macro_sum[2] / count,
            },
            weighted_average: AveragedScores {
                precision: ratio(weighted_sum[0], total_f),
                recall: ratio(weighted_sum[1], total_f),
                f1: ratio(weighted_sum[2], total_f),
            },
            confusion: ConfusionMatrix { labels, matrix },
        })
    }

    /// MAE, RMSE and MAPE; `None` when no regression output is labeled.
    pub fn regression(&self) -> Option<RegressionReport> {
        let count = self.errors.count as f64;
        if self.errors.count == 0 {
            return None;
        }
        Some(RegressionReport {
            mae: self.errors.absolute / count,
            rmse: (self.errors.squared.max(0.0) / count).sqrt(),
            mape: self.errors.absolute_percentage / count,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegressionReport {
    pub mae: f64,
    pub rmse: f64,
    pub mape: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class<'a>(predicted: &'a str, actual: &'a str) -> Outcome<'a> {
        Outcome {
            scored: Scored::Class { predicted, actual },
            business: vec![("revenue", 2.5)],
            segments: vec![("region", "eu")],
        }
    }

    #[test]
    fn retracting_an_outcome_undoes_adding_it() {
        let mut bucket = QualityBucket::default();
        bucket.add(&class("a", "a"), Sign::Add);
        let before = bucket.clone();
        bucket.add(&class("a", "b"), Sign::Add);
        bucket.add(&class("a", "b"), Sign::Retract);
        assert_eq!(bucket, before);
        bucket.add(&class("a", "a"), Sign::Retract);
        assert!(bucket.is_empty(), "{bucket:?}");
    }

    // Expected values from scikit-learn 1.5 on
    // y_true = [a, a, b, c, c, c], y_pred = [a, b, b, c, a, c]:
    //   precision_recall_fscore_support(zero_division=0)
    #[test]
    fn classification_matches_scikit_learn_on_a_small_case() {
        let mut quality = Quality::default();
        for (actual, predicted) in [
            ("a", "a"),
            ("a", "b"),
            ("b", "b"),
            ("c", "c"),
            ("c", "a"),
            ("c", "c"),
        ] {
            quality.add(&class(predicted, actual), Sign::Add);
        }
        let report = quality.classification().unwrap();
        assert!((report.accuracy - 4.0 / 6.0).abs() < 1e-15);
        let a = report.per_class["a"];
        assert!((a.precision - 0.5).abs() < 1e-15 && (a.recall - 0.5).abs() < 1e-15 && a.support == 2);
        let c = report.per_class["c"];
        assert!((c.precision - 1.0).abs() < 1e-15 && (c.recall - 2.0 / 3.0).abs() < 1e-15);
        assert!((c.f1 - 0.8).abs() < 1e-15);
        assert_eq!(report.confusion.labels, ["a", "b", "c"]);
        assert_eq!(
            report.confusion.matrix,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 2]]
        );
        // macro f1 = (0.5 + 2/3 + 0.8) / 3
        assert!((report.macro_average.f1 - (0.5 + 2.0 / 3.0 + 0.8) / 3.0).abs() < 1e-15);
    }

    #[test]
    fn a_class_never_predicted_has_zero_precision_not_nan() {
        let mut quality = Quality::default();
        quality.add(&class("a", "b"), Sign::Add);
        let report = quality.classification().unwrap();
        assert_eq!(report.per_class["b"].precision, 0.0);
        assert_eq!(report.per_class["a"].recall, 0.0);
        assert_eq!(report.accuracy, 0.0);
    }
}
