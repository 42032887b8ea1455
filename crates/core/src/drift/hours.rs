//! The hourly drift summaries of one series, kept small in memory.
//!
//! A decoded [`DriftSummary`] of continuous features is large: each feature's
//! histogram spans up to [`super::MAX_BINS_PER_SIGN`] `u64` bins (about 64 KiB
//! per feature and hour, whatever the traffic), and `drift.retention` keeps
//! 15 days of hours. Only the newest hours of a series still receive events,
//! so every older hour is kept *sealed*: in its persisted postcard form, where
//! an empty bin takes one byte (about a seventh of the decoded size). Reading
//! a window decodes its sealed hours on the fly; an event that arrives late
//! for a sealed hour opens it again until the next [`DriftHours::seal_before`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::RangeBounds;

use super::DriftSummary;
use crate::event::TimestampMs;

#[derive(Debug, Clone)]
enum Hour {
    Open(Box<DriftSummary>),
    /// The summary's postcard encoding; it decoded when it was sealed or loaded.
    Sealed(Vec<u8>),
}

/// Drift summaries per hour of event time (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct DriftHours {
    hours: BTreeMap<TimestampMs, Hour>,
}

fn decode(bytes: &[u8]) -> DriftSummary {
    postcard::from_bytes(bytes).expect("a sealed drift summary was decoded before")
}

fn encode(summary: &DriftSummary) -> Vec<u8> {
    postcard::to_stdvec(summary).expect("drift summaries always serialize")
}

impl DriftHours {
    /// The summary of `hour`, to add to: a new one, or a sealed one opened.
    pub fn open(&mut self, hour: TimestampMs) -> &mut DriftSummary {
        let entry = self
            .hours
            .entry(hour)
            .or_insert_with(|| Hour::Open(Box::default()));
        if let Hour::Sealed(bytes) = entry {
            *entry = Hour::Open(Box::new(decode(bytes)));
        }
        match entry {
            Hour::Open(summary) => summary,
            Hour::Sealed(_) => unreachable!("opened above"),
        }
    }

    /// Loads an hour in its persisted form (on start). The bytes are checked
    /// to decode, and kept sealed.
    pub fn load(&mut self, hour: TimestampMs, bytes: &[u8]) -> Result<(), postcard::Error> {
        postcard::from_bytes::<DriftSummary>(bytes)?;
        self.hours.insert(hour, Hour::Sealed(bytes.to_vec()));
        Ok(())
    }

    /// The persisted form of `hour`.
    pub fn encoded(&self, hour: TimestampMs) -> Option<Vec<u8>> {
        Some(match self.hours.get(&hour)? {
            Hour::Open(summary) => encode(summary),
            Hour::Sealed(bytes) => bytes.clone(),
        })
    }

    /// Seals every open hour that starts before `hour`.
    pub fn seal_before(&mut self, hour: TimestampMs) {
        for entry in self.hours.range_mut(..hour).map(|(_, entry)| entry) {
            if let Hour::Open(summary) = entry {
                *entry = Hour::Sealed(encode(summary));
            }
        }
    }

    /// The summary of `hour`, decoded if it is sealed.
    pub fn get(&self, hour: TimestampMs) -> Option<Cow<'_, DriftSummary>> {
        Some(match self.hours.get(&hour)? {
            Hour::Open(summary) => Cow::Borrowed(&**summary),
            Hour::Sealed(bytes) => Cow::Owned(decode(bytes)),
        })
    }

    /// Adds every hour in `range` to `target`.
    pub fn merge_into(&self, range: impl RangeBounds<TimestampMs>, target: &mut DriftSummary) {
        for entry in self.hours.range(range).map(|(_, entry)| entry) {
            match entry {
                Hour::Open(summary) => target.merge(summary),
                Hour::Sealed(bytes) => target.merge(&decode(bytes)),
            }
        }
    }

    /// The hours held, in order.
    pub fn hours(&self) -> impl Iterator<Item = TimestampMs> + '_ {
        self.hours.keys().copied()
    }

    /// Drops every hour that starts before `hour`; returns them.
    pub fn remove_before(&mut self, hour: TimestampMs) -> Vec<TimestampMs> {
        let kept = self.hours.split_off(&hour);
        let removed = std::mem::replace(&mut self.hours, kept);
        removed.into_keys().collect()
    }

    /// The bytes held in memory by the summaries' bins, sealed or not: what
    /// sealing saves (what the tests check).
    pub fn approximate_bytes(&self) -> usize {
        self.hours
            .values()
            .map(|entry| match entry {
                Hour::Open(summary) => summary.approximate_bytes(),
                Hour::Sealed(bytes) => bytes.len(),
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftValue;

    fn summary(values: &[f64]) -> DriftSummary {
        let mut summary = DriftSummary::default();
        for value in values {
            summary.observe([("x", DriftValue::Number(*value))], Some("1"), Some(0.75), None);
        }
        summary
    }

    #[test]
    fn sealed_hours_read_and_reopen_as_they_were() {
        let mut hours = DriftHours::default();
        hours.open(0).merge(&summary(&[1.0, 2.0, 1e-6, 1e6]));
        hours.open(3_600_000).merge(&summary(&[5.0]));
        let before = hours.get(0).unwrap().into_owned();
        let open_bytes = hours.approximate_bytes();
        hours.seal_before(3_600_000);
        assert!(
            hours.approximate_bytes() < open_bytes / 4,
            "sealing shrinks a wide histogram"
        );
        assert_eq!(*hours.get(0).unwrap(), before);
        assert_eq!(hours.encoded(0).unwrap(), encode(&before));

        // A late event opens the hour again.
        hours.open(0).merge(&summary(&[3.0]));
        let mut expected = before.clone();
        expected.merge(&summary(&[3.0]));
        assert_eq!(*hours.get(0).unwrap(), expected);

        let mut window = DriftSummary::default();
        hours.merge_into(0..7_200_000, &mut window);
        expected.merge(&summary(&[5.0]));
        assert_eq!(window, expected);

        assert_eq!(hours.remove_before(3_600_000), vec![0]);
        assert_eq!(hours.hours().collect::<Vec<_>>(), vec![3_600_000]);
    }

    #[test]
    fn loading_checks_the_bytes() {
        let mut hours = DriftHours::default();
        assert!(hours.load(0, &[0xff, 0xff, 0xff]).is_err());
        hours.load(0, &encode(&summary(&[1.0]))).unwrap();
        assert_eq!(*hours.get(0).unwrap(), summary(&[1.0]));
    }
}
