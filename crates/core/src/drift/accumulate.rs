//! Building a [`DriftSummary`] from the events of one request, fast.
//!
//! Ingestion summarizes each request's events before they are folded into
//! the series ([`crate::series::Delta`]). A [`DriftSummary`] is the right
//! form to keep and merge, but a slow one to fill event by event: every
//! feature is looked up by name in a `BTreeMap`, and a fresh histogram's
//! counts move to a new, larger allocation each time a value lands past its
//! ends. [`DriftAccumulator`] keeps the same figures in a form made for
//! filling: features in slots found by their position in the event (events
//! of one client send their features in the same order), and histograms
//! with room to grow on both sides, counted in `u32` (a request's body
//! limit keeps it far below 2^32 events). [`DriftAccumulator::finish`]
//! turns it into the very summary that [`DriftSummary::observe`] would have
//! built from the same events.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{DriftSummary, DriftValue, LogHistogram, MAX_BINS_PER_SIGN, NumericSummary, Store, bin_index};
use crate::stats::Moments;

/// Bins of room left on each side of a histogram's first value.
const ROOM: i32 = 64;
const MAX_BINS: i32 = MAX_BINS_PER_SIGN as i32;

/// Counts of one sign's bins, as [`Store`] keeps them, but in an allocation
/// that grows geometrically and may extend past the occupied bins.
#[derive(Debug, Default)]
struct GrowingStore {
    /// `counts[i]` counts bin `offset + i`; it is zero outside `lo..=hi`.
    offset: i32,
    counts: Vec<u32>,
    /// The lowest and highest occupied bins, when `counts` is not empty.
    lo: i32,
    hi: i32,
}

impl GrowingStore {
    fn add(&mut self, index: i32) {
        if self.counts.is_empty() {
            self.offset = index - ROOM;
            self.counts = vec![0; (2 * ROOM + 1) as usize];
            self.lo = index;
            self.hi = index;
        } else if index > self.hi {
            self.raise(index);
        }
        // As in `Store`: past the bin limit, the smallest magnitudes share
        // the lowest kept bin.
        let index = index.max(self.hi - MAX_BINS + 1);
        if index < self.lo {
            self.cover(index, self.hi);
            self.lo = index;
        }
        let position = (index - self.offset) as usize;
        match self.counts.get_mut(position) {
            Some(count) => *count += 1,
            None => unreachable!("bin {index} is covered"),
        }
    }

    /// Makes `hi` the highest occupied bin, folding the bins that fall past
    /// the limit below it into the lowest one kept.
    fn raise(&mut self, hi: i32) {
        let lowest = hi - MAX_BINS + 1;
        let mut folded = 0u32;
        if self.lo < lowest {
            for index in self.lo..lowest.min(self.hi + 1) {
                let position = (index - self.offset) as usize;
                folded += std::mem::take(&mut self.counts[position]);
            }
            self.lo = lowest;
        }
        self.hi = hi;
        self.cover(self.lo, hi);
        if folded > 0 {
            let position = (lowest - self.offset) as usize;
            self.counts[position] += folded;
        }
    }

    /// Makes the allocation hold bins `lo..=hi` (at most [`MAX_BINS`] of
    /// them), which hold every occupied bin. It grows by at least its own
    /// size, so that values spreading out move the counts a few times only.
    fn cover(&mut self, lo: i32, hi: i32) {
        let end = self.offset + self.counts.len() as i32;
        if lo >= self.offset && hi < end {
            return;
        }
        let grow = (self.counts.len() as i32).max(ROOM);
        let mut new_lo = if lo < self.offset { lo - grow } else { lo - ROOM };
        let mut new_hi = if hi >= end { hi + grow } else { hi + ROOM };
        // Never more than the limit plus some room.
        let most = MAX_BINS + 2 * ROOM;
        if new_hi - new_lo + 1 > most {
            let spare = most - (hi - lo + 1);
            if hi >= end {
                new_lo = lo - spare.min(ROOM);
                new_hi = new_lo + most - 1;
            } else {
                new_hi = hi + spare.min(ROOM);
                new_lo = new_hi - most + 1;
            }
        }
        let mut counts = vec![0u32; (new_hi - new_lo + 1) as usize];
        let keep_lo = self.offset.max(new_lo);
        let keep_hi = (end - 1).min(new_hi);
        if keep_lo <= keep_hi {
            let from = (keep_lo - self.offset) as usize..=(keep_hi - self.offset) as usize;
            let to = (keep_lo - new_lo) as usize;
            counts[to..=to + (keep_hi - keep_lo) as usize].copy_from_slice(&self.counts[from]);
        }
        self.offset = new_lo;
        self.counts = counts;
    }

    fn finish(&self) -> Store {
        if self.counts.is_empty() {
            return Store::default();
        }
        let occupied = (self.lo - self.offset) as usize..=(self.hi - self.offset) as usize;
        Store {
            offset: self.lo,
            counts: self.counts[occupied]
                .iter()
                .map(|count| u64::from(*count))
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct GrowingHistogram {
    zero: u64,
    positive: GrowingStore,
    negative: GrowingStore,
}

impl GrowingHistogram {
    fn observe(&mut self, value: f64) {
        if value > 0.0 {
            self.positive.add(bin_index(value));
        } else if value < 0.0 {
            self.negative.add(bin_index(-value));
        } else {
            self.zero += 1;
        }
    }

    fn finish(&self) -> LogHistogram {
        LogHistogram {
            zero: self.zero,
            positive: self.positive.finish(),
            negative: self.negative.finish(),
        }
    }
}

/// Values a [`NumericAccumulator`] gathers before it bins them. Binning one
/// variable's values in a row keeps its bins in the cache; binning each event's
/// 8 or more variables in turn made every count a cache miss.
const PENDING: usize = 512;

#[derive(Debug, Default)]
struct NumericAccumulator {
    moments: Moments,
    histogram: GrowingHistogram,
    /// Finite values not binned yet, in arrival order.
    pending: Vec<f64>,
}

impl NumericAccumulator {
    fn observe(&mut self, value: f64) {
        if value.is_finite() {
            self.pending.push(value);
            if self.pending.len() == PENDING {
                self.bin_pending();
            }
        }
    }

    fn bin_pending(&mut self) {
        for value in self.pending.drain(..) {
            self.moments.observe(value);
            self.histogram.observe(value);
        }
    }

    fn finish(&self) -> NumericSummary {
        let mut summary = NumericSummary {
            moments: self.moments.clone(),
            histogram: self.histogram.finish(),
        };
        // In arrival order, so that the moments are those of one-by-one
        // observation, to the bit.
        for value in &self.pending {
            summary.observe(*value);
        }
        summary
    }
}

/// What one feature name has been seen as.
#[derive(Debug)]
struct FeatureSlot {
    name: String,
    numeric: Option<NumericAccumulator>,
    categorical: Option<BTreeMap<String, u64>>,
}

/// A [`DriftSummary`] being filled (see the module docs).
#[derive(Debug, Default)]
pub struct DriftAccumulator {
    rows: u64,
    /// Features in the order first seen.
    slots: Vec<FeatureSlot>,
    /// Where each feature's slot is, for names not where their position
    /// in the event says.
    slot_of: FxHashMap<String, usize>,
    classes: Vec<(String, u64)>,
    confidence: NumericAccumulator,
    regression: NumericAccumulator,
}

impl DriftAccumulator {
    /// Adds one event, as [`DriftSummary::observe`] does.
    pub fn observe<'a>(
        &mut self,
        features: impl IntoIterator<Item = (&'a str, DriftValue<'a>)>,
        class: Option<&str>,
        confidence: Option<f64>,
        regression: Option<f64>,
    ) {
        self.rows += 1;
        for (position, (name, value)) in features.into_iter().enumerate() {
            let slot = self.slot(position, name);
            match value {
                DriftValue::Number(number) => {
                    slot.numeric.get_or_insert_with(Default::default).observe(number)
                }
                DriftValue::Category(category) => {
                    super::increment(slot.categorical.get_or_insert_with(Default::default), category, 1)
                }
            }
        }
        if let Some(class) = class {
            match self.classes.iter_mut().find(|(known, _)| known == class) {
                Some((_, count)) => *count += 1,
                None => self.classes.push((class.to_owned(), 1)),
            }
        }
        if let Some(confidence) = confidence {
            self.confidence.observe(confidence);
        }
        if let Some(value) = regression {
            self.regression.observe(value);
        }
    }

    /// The slot of feature `name`, the `position`-th of its event.
    fn slot(&mut self, position: usize, name: &str) -> &mut FeatureSlot {
        let index = match self.slots.get(position) {
            Some(slot) if slot.name == name => position,
            _ => match self.slot_of.get(name) {
                Some(index) => *index,
                None => {
                    self.slot_of.insert(name.to_owned(), self.slots.len());
                    self.slots.push(FeatureSlot {
                        name: name.to_owned(),
                        numeric: None,
                        categorical: None,
                    });
                    self.slots.len() - 1
                }
            },
        };
        &mut self.slots[index]
    }

    /// The summary of every event added.
    pub fn finish(&self) -> DriftSummary {
        let mut summary = DriftSummary {
            rows: self.rows,
            confidence: self.confidence.finish(),
            regression: self.regression.finish(),
            ..DriftSummary::default()
        };
        for slot in &self.slots {
            if let Some(numeric) = &slot.numeric {
                summary.numeric.insert(slot.name.clone(), numeric.finish());
            }
            if let Some(categorical) = &slot.categorical {
                summary.categorical.insert(slot.name.clone(), categorical.clone());
            }
        }
        summary.classes = self.classes.iter().cloned().collect();
        summary
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sequential(indices: &[i32]) -> Store {
        let mut store = Store::default();
        for index in indices {
            store.add(*index, 1);
        }
        store
    }

    fn growing(indices: &[i32]) -> Store {
        let mut store = GrowingStore::default();
        for index in indices {
            store.add(*index);
        }
        store.finish()
    }

    #[test]
    fn a_growing_store_folds_past_the_limit_as_a_store_does() {
        let cases: [&[i32]; 6] = [
            &[5],
            &[0, 10_000, 3],
            &[-400_000, 400_000, 0, 399_999, -1],
            &[100, 100 + MAX_BINS - 1, 99, 100 + MAX_BINS, 50],
            &[1, 2, 3, 1000, 900, -1000, 20_000, 19_000, 12_000, 11_808],
            &[7, 7, 7, 8, 6, 200, -200, 7],
        ];
        for indices in cases {
            assert_eq!(growing(indices), sequential(indices), "{indices:?}");
        }
    }

    #[test]
    fn values_binned_in_batches_summarize_as_one_by_one() {
        let mut summary = DriftSummary::default();
        let mut accumulator = DriftAccumulator::default();
        for row in 0..(3 * PENDING + 17) {
            let x = (row as f64 * 0.37).sin() * 1e3;
            let features = [
                ("x", DriftValue::Number(x)),
                ("y", DriftValue::Number(1.0 / (1.0 + row as f64))),
                ("z", DriftValue::Category(if row % 3 == 0 { "a" } else { "b" })),
            ];
            let confidence = 0.5 + (row % 50) as f64 / 100.0;
            summary.observe(features, Some("1"), Some(confidence), None);
            accumulator.observe(features, Some("1"), Some(confidence), None);
        }
        // Moments too, to the bit: the values are taken in the same order.
        assert_eq!(accumulator.finish(), summary);
    }

    proptest! {
        #[test]
        fn a_growing_store_counts_as_a_store_does(
            indices in prop::collection::vec(
                prop_oneof![-300i32..300, -20_000i32..20_000, -1_000_000i32..1_000_000],
                1..400,
            )
        ) {
            prop_assert_eq!(growing(&indices), sequential(&indices));
        }

        #[test]
        fn an_accumulator_summarizes_as_a_summary_does(
            rows in prop::collection::vec(
                (
                    prop::collection::vec(
                        (0usize..5, prop_oneof![
                            (-1e6f64..1e6).prop_map(Some),
                            (1e-9f64..1e-3).prop_map(Some),
                            Just(Some(0.0)),
                            Just(None),
                        ]),
                        0..6,
                    ),
                    prop::option::of(0usize..3),
                    prop::option::of(0.5f64..1.0),
                    prop::option::of(-50.0f64..50.0),
                ),
                0..60,
            )
        ) {
            let names = ["a", "b", "c", "d", "e"];
            let categories = ["x", "y"];
            let classes = ["0", "1", "2"];
            let mut summary = DriftSummary::default();
            let mut accumulator = DriftAccumulator::default();
            for (features, class, confidence, regression) in &rows {
                // A feature repeated in one event counts twice, on both sides.
                let values: Vec<(&str, DriftValue<'_>)> = features
                    .iter()
                    .map(|(name, value)| match value {
                        Some(number) => (names[*name], DriftValue::Number(*number)),
                        None => (names[*name], DriftValue::Category(categories[*name % 2])),
                    })
                    .collect();
                let class = class.map(|class| classes[class]);
                summary.observe(values.iter().copied(), class, *confidence, *regression);
                accumulator.observe(values.iter().copied(), class, *confidence, *regression);
            }
            prop_assert_eq!(accumulator.finish(), summary);
        }
    }
}
