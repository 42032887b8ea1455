//! Notifications and remediation. (Interface stub: the outbox writer and the
//! delivery worker are being built.)
//!
//! The evaluator calls [`Notifier::record`] after every evaluation, inside the
//! transaction that records the alert state and history, so that what is to
//! be sent is durable exactly when the state change is. [`start_delivery`]
//! runs a thread that delivers the outbox with retries.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use modelwatch_core::alerting::{Alert, Transition};
use modelwatch_store::{AlertWriter, StoreError, Synchronous};

use crate::config::Config;

/// Decides what to send for each evaluation: one notification per
/// transition and receiver, re-sends of firing alerts to Alertmanagers, and
/// remediation actions (deduplicated, with a cooldown).
#[derive(Debug)]
pub struct Notifier {
    config: Arc<Config>,
}

impl Notifier {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    /// Queues, in the evaluator's transaction, what this evaluation's
    /// `transitions` and still-`active` alerts call for.
    pub fn record(
        &mut self,
        writer: &mut AlertWriter<'_>,
        transitions: &[Transition],
        active: &[Alert],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _ = (writer, transitions, active, now_ms, &self.config);
        Ok(())
    }
}

/// Starts the delivery thread; it stops once `stopping` is set.
pub fn start_delivery(
    config: Arc<Config>,
    database: PathBuf,
    synchronous: Synchronous,
    stopping: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modelwatch-notify".into())
        .spawn(move || {
            let _ = (config, database, synchronous);
            while !stopping.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
        .expect("spawning the notification thread")
}
