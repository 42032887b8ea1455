//! The label join, on the writer thread: each label is looked up against the
//! stored predictions (and the stored labels, for duplicates and
//! corrections) inside the group commit's transaction. A label whose
//! prediction has not arrived is *held* (stored, and its id kept in memory)
//! and joined when the prediction is stored; past `early_label_ttl` it is an
//! orphan.
//!
//! Joins only decide what to add to or retract from the aggregates; the
//! writer applies those [`QualityOp`]s after the group's predictions, so that
//! a label and its prediction may arrive in the same group in either order.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use modelwatch_core::codec::{self, Dictionary};
use modelwatch_core::event::{LabelEvent, ScoredPrediction, TimestampMs};
use modelwatch_core::quality::Sign;
use modelwatch_store::{SqliteStore, StoreError, Writer};
use rustc_hash::FxHashMap;

use crate::state::Telemetry;

/// One validated label of a request.
#[derive(Debug)]
pub struct ParsedLabel {
    /// Position of the row in the request.
    pub index: usize,
    pub label: LabelEvent,
    /// The label in its stored form.
    pub stored: Vec<u8>,
    /// Its prediction, when it was already committed as the request was
    /// parsed: looked up there, off the writer thread. Stored predictions
    /// never change, so the writer can trust it; when it is `None`, the writer
    /// looks again (the prediction may have been committed since).
    pub prediction: Option<ScoredPrediction>,
}

/// What became of one label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOutcome {
    /// Joined to its stored prediction and counted.
    Joined,
    /// Stored; its prediction is not known yet.
    Held,
    /// The same label was already stored: nothing changed.
    Duplicate,
    /// Replaced a different label for the same prediction; the aggregates
    /// now count the new one instead.
    Corrected,
}

/// An addition to or retraction from the aggregates, decided by a join.
/// Borrows from the group's rows where it can.
#[derive(Debug)]
pub struct QualityOp<'a> {
    pub prediction: Cow<'a, ScoredPrediction>,
    pub label: Cow<'a, LabelEvent>,
    pub sign: Sign,
}

/// Durable label totals, kept in the `meta` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelTotals {
    /// Labels joined to their prediction now.
    pub joined: u64,
    pub orphaned: u64,
    pub duplicates: u64,
    pub corrected: u64,
}

const META_KEYS: [&str; 4] = [
    "labels_joined",
    "labels_orphaned",
    "labels_duplicates",
    "labels_corrected",
];

impl LabelTotals {
    fn values(&self) -> [u64; 4] {
        [self.joined, self.orphaned, self.duplicates, self.corrected]
    }
}

/// The writer's label state: held ids with their time of receipt, and totals.
#[derive(Debug, Default)]
pub struct LabelState {
    held: FxHashMap<String, TimestampMs>,
    pub totals: LabelTotals,
    /// Whether `totals` changed since they were last written.
    dirty: bool,
}

impl LabelState {
    /// Reads held labels and totals back, on start (and after a failed commit).
    pub fn load(store: &SqliteStore) -> Result<Self, StoreError> {
        let mut held = FxHashMap::default();
        store.load_held_labels(|prediction_id, body| {
            let (_, received_ms) = codec::decode_label(prediction_id, body)
                .map_err(|error| StoreError::Corrupt(format!("label {prediction_id:?}: {error}")))?;
            held.insert(prediction_id.to_owned(), received_ms);
            Ok(())
        })?;
        let read = |key| store.meta(key).map(|value| value.max(0) as u64);
        Ok(Self {
            held,
            totals: LabelTotals {
                joined: read(META_KEYS[0])?,
                orphaned: read(META_KEYS[1])?,
                duplicates: read(META_KEYS[2])?,
                corrected: read(META_KEYS[3])?,
            },
            dirty: false,
        })
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Joins, holds, deduplicates or corrects one label.
    ///
    /// A new label (the common case) costs a lookup of its prediction and one
    /// insert; only when a label is already stored is it read and compared.
    pub fn process<'a>(
        &mut self,
        writer: &mut dyn Writer,
        names: &Dictionary,
        row: &'a ParsedLabel,
        received_ms: TimestampMs,
        ops: &mut Vec<QualityOp<'a>>,
    ) -> Result<LabelOutcome, StoreError> {
        let id = row.label.prediction_id.as_str();
        self.dirty = true;
        let prediction = match &row.prediction {
            Some(prediction) => Some(Cow::Borrowed(prediction)),
            None => read_prediction(writer, names, id)?.map(Cow::Owned),
        };
        if writer.insert_label(id, prediction.is_none(), &row.stored)? {
            return Ok(match prediction {
                Some(prediction) => {
                    ops.push(QualityOp {
                        prediction,
                        label: Cow::Borrowed(&row.label),
                        sign: Sign::Add,
                    });
                    self.totals.joined += 1;
                    LabelOutcome::Joined
                }
                None => {
                    self.held.insert(id.to_owned(), received_ms);
                    LabelOutcome::Held
                }
            });
        }
        let existing = writer
            .get_label(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("label {id:?} vanished inside a transaction")))?;
        let (old, _) = codec::decode_label(id, &existing.body)
            .map_err(|error| StoreError::Corrupt(format!("label {id:?}: {error}")))?;
        if old.same_content(&row.label) {
            self.totals.duplicates += 1;
            return Ok(LabelOutcome::Duplicate);
        }
        if !existing.held
            && let Some(prediction) = prediction
        {
            ops.push(QualityOp {
                prediction: prediction.clone(),
                label: Cow::Owned(old),
                sign: Sign::Retract,
            });
            ops.push(QualityOp {
                prediction,
                label: Cow::Borrowed(&row.label),
                sign: Sign::Add,
            });
        }
        writer.put_label(id, existing.held, &row.stored)?;
        self.totals.corrected += 1;
        Ok(LabelOutcome::Corrected)
    }

    /// Joins the held label of a prediction stored just now, if there is one.
    pub fn on_prediction_stored<'a>(
        &mut self,
        writer: &mut dyn Writer,
        names: &Dictionary,
        prediction_id: &str,
        stored_prediction: &[u8],
        ops: &mut Vec<QualityOp<'a>>,
    ) -> Result<(), StoreError> {
        if self.held.is_empty() || self.held.remove(prediction_id).is_none() {
            return Ok(());
        }
        let id = prediction_id;
        let Some(stored) = writer.get_label(id)? else {
            return Ok(());
        };
        let (label, _) = codec::decode_label(id, &stored.body)
            .map_err(|error| StoreError::Corrupt(format!("label {id:?}: {error}")))?;
        let prediction = codec::decode_scored(stored_prediction, names)
            .map_err(|error| StoreError::Corrupt(format!("prediction {id:?}: {error}")))?;
        writer.put_label(id, false, &stored.body)?;
        ops.push(QualityOp {
            prediction: Cow::Owned(prediction),
            label: Cow::Owned(label),
            sign: Sign::Add,
        });
        self.totals.joined += 1;
        self.dirty = true;
        Ok(())
    }

    /// Turns held labels past the TTL (and the oldest past the held limit)
    /// into orphans: deleted, and counted. Returns how many.
    pub fn expire(
        &mut self,
        writer: &mut dyn Writer,
        now_ms: TimestampMs,
        ttl_ms: i64,
        max_held: usize,
    ) -> Result<u64, StoreError> {
        let mut expired: Vec<(TimestampMs, String)> = self
            .held
            .iter()
            .filter(|(_, received)| **received + ttl_ms <= now_ms)
            .map(|(id, received)| (*received, id.clone()))
            .collect();
        let remaining = self.held.len() - expired.len();
        if remaining > max_held {
            let mut by_age: Vec<(TimestampMs, &String)> = self
                .held
                .iter()
                .filter(|(_, received)| **received + ttl_ms > now_ms)
                .map(|(id, received)| (*received, id))
                .collect();
            by_age.sort_unstable();
            let excess = remaining - max_held;
            expired.extend(
                by_age[..excess]
                    .iter()
                    .map(|(received, id)| (*received, (*id).clone())),
            );
        }
        for (_, id) in &expired {
            writer.delete_label(id)?;
            self.held.remove(id);
        }
        if !expired.is_empty() {
            self.totals.orphaned += expired.len() as u64;
            self.dirty = true;
        }
        Ok(expired.len() as u64)
    }

    /// Writes the totals if they changed; call inside the transaction.
    pub fn persist(&mut self, writer: &mut dyn Writer) -> Result<(), StoreError> {
        if self.dirty {
            for (key, value) in META_KEYS.iter().zip(self.totals.values()) {
                writer.set_meta(key, value as i64)?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Publishes the state for `/v1/labels/stats` and `/metrics`.
    pub fn publish(&self, telemetry: &Telemetry) {
        let labels = &telemetry.labels;
        labels.joined.store(self.totals.joined, Ordering::Relaxed);
        labels.held.store(self.held.len() as u64, Ordering::Relaxed);
        labels.orphaned.store(self.totals.orphaned, Ordering::Relaxed);
        labels.duplicates.store(self.totals.duplicates, Ordering::Relaxed);
        labels.corrected.store(self.totals.corrected, Ordering::Relaxed);
    }
}

fn read_prediction(
    writer: &mut dyn Writer,
    names: &Dictionary,
    id: &str,
) -> Result<Option<ScoredPrediction>, StoreError> {
    let Some(body) = writer.get_prediction(id)? else {
        return Ok(None);
    };
    let prediction = codec::decode_scored(&body, names)
        .map_err(|error| StoreError::Corrupt(format!("prediction {id:?}: {error}")))?;
    Ok(Some(prediction))
}
