//! Alert state, alert history, the notification outbox and the remediation
//! audit log. They live in the same database file as the events, on a
//! connection of their own: the evaluator writes a few rows per interval and
//! must not queue behind the ingestion writer's group commits for its reads.
//!
//! Bodies are JSON text written by the server; the store does not read them.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Result, Synchronous};

/// One row of an append-only log (history or remediation audit), newest first
/// when listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub id: i64,
    pub at_ms: i64,
    pub body: String,
}

/// A notification waiting to be delivered (or retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub receiver: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
}

pub struct AlertStore {
    connection: Connection,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AlertStore")
    }
}

/// Writes of one transaction.
pub struct AlertWriter<'a> {
    transaction: &'a rusqlite::Transaction<'a>,
}

impl AlertStore {
    /// Opens the alert tables of the database at `path`, which
    /// [`crate::SqliteStore::open`] has created.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Self> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "busy_timeout", 10_000)?;
        connection.pragma_update(
            None,
            "synchronous",
            match synchronous {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
        )?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "cache_size", -2048)?;
        Ok(Self { connection })
    }

    /// Runs `write` in one immediate transaction: committed when it returns `Ok`.
    pub fn transaction<R>(&mut self, write: impl FnOnce(&mut AlertWriter<'_>) -> Result<R>) -> Result<R> {
        let transaction = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = {
            let mut writer = AlertWriter {
                transaction: &transaction,
            };
            write(&mut writer)?
        };
        transaction.commit()?;
        Ok(result)
    }

    /// Every persisted alert instance, as `(key, body)`.
    pub fn load_state(&self) -> Result<Vec<(String, String)>> {
        let mut statement = self
            .connection
            .prepare("SELECT key, body FROM alert_state ORDER BY key")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Up to `limit` history entries older than `before_id` (all when `None`),
    /// newest first.
    pub fn history(&self, limit: usize, before_id: Option<i64>) -> Result<Vec<LogEntry>> {
        self.log("alert_history", limit, before_id)
    }

    /// Up to `limit` remediation audit entries older than `before_id`, newest first.
    pub fn remediations(&self, limit: usize, before_id: Option<i64>) -> Result<Vec<LogEntry>> {
        self.log("remediations", limit, before_id)
    }

    fn log(&self, table: &str, limit: usize, before_id: Option<i64>) -> Result<Vec<LogEntry>> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT id, at_ms, body FROM {table} WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![before_id.unwrap_or(i64::MAX), limit as i64], |row| {
            Ok(LogEntry {
                id: row.get(0)?,
                at_ms: row.get(1)?,
                body: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Up to `limit` notifications due at `now_ms`, oldest first.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, receiver, body, attempts, next_attempt_ms FROM outbox
             WHERE next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![now_ms, limit as i64], outbox_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every notification not delivered yet, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxEntry>> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT id, receiver, body, attempts, next_attempt_ms FROM outbox ORDER BY id")?;
        let rows = statement.query_map([], outbox_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The most recent remediation entry whose `dedupe_key` column equals `key`.
    pub fn last_remediation(&self, key: &str) -> Result<Option<LogEntry>> {
        Ok(self
            .connection
            .query_row(
                "SELECT id, at_ms, body FROM remediations WHERE dedupe_key = ?1 ORDER BY id DESC LIMIT 1",
                [key],
                |row| {
                    Ok(LogEntry {
                        id: row.get(0)?,
                        at_ms: row.get(1)?,
                        body: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

fn outbox_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: row.get(0)?,
        receiver: row.get(1)?,
        body: row.get(2)?,
        attempts: row.get(3)?,
        next_attempt_ms: row.get(4)?,
    })
}

impl AlertWriter<'_> {
    /// Replaces the persisted alert instances with `entries`.
    pub fn replace_state(&mut self, entries: &[(String, String)]) -> Result<()> {
        self.transaction.execute("DELETE FROM alert_state", [])?;
        let mut statement = self
            .transaction
            .prepare_cached("INSERT INTO alert_state (key, body) VALUES (?1, ?2)")?;
        for (key, body) in entries {
            statement.execute(params![key, body])?;
        }
        Ok(())
    }

    pub fn append_history(&mut self, at_ms: i64, body: &str) -> Result<i64> {
        self.transaction
            .prepare_cached("INSERT INTO alert_history (at_ms, body) VALUES (?1, ?2)")?
            .execute(params![at_ms, body])?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Records a remediation; `dedupe_key` finds the last one of its kind.
    pub fn append_remediation(&mut self, at_ms: i64, dedupe_key: &str, body: &str) -> Result<i64> {
        self.transaction
            .prepare_cached("INSERT INTO remediations (at_ms, dedupe_key, body) VALUES (?1, ?2, ?3)")?
            .execute(params![at_ms, dedupe_key, body])?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Rewrites the body of a remediation entry (its outcome, once known).
    pub fn update_remediation(&mut self, id: i64, body: &str) -> Result<()> {
        self.transaction
            .prepare_cached("UPDATE remediations SET body = ?2 WHERE id = ?1")?
            .execute(params![id, body])?;
        Ok(())
    }

    /// Queues a notification for `receiver`, due at once.
    pub fn enqueue(&mut self, receiver: &str, body: &str, now_ms: i64) -> Result<i64> {
        self.transaction
            .prepare_cached(
                "INSERT INTO outbox (receiver, body, attempts, next_attempt_ms) VALUES (?1, ?2, 0, ?3)",
            )?
            .execute(params![receiver, body, now_ms])?;
        Ok(self.transaction.last_insert_rowid())
    }

    pub fn delivered(&mut self, id: i64) -> Result<()> {
        self.transaction
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    pub fn postpone(&mut self, id: i64, attempts: i64, next_attempt_ms: i64) -> Result<()> {
        self.transaction
            .prepare_cached("UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1")?
            .execute(params![id, attempts, next_attempt_ms])?;
        Ok(())
    }
}

/// The tables, created by [`crate::SqliteStore::open`].
pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS alert_state (
        key TEXT PRIMARY KEY,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS alert_history (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS remediations (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        dedupe_key TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS remediations_dedupe ON remediations (dedupe_key, id);
    CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY,
        receiver TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL
    );
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_history_outbox_and_audit_survive_reopening() {
        let directory = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(directory.path(), Synchronous::Full).unwrap();
        let path = store.path().to_owned();
        {
            let mut alerts = AlertStore::open(&path, Synchronous::Full).unwrap();
            alerts
                .transaction(|writer| {
                    writer.replace_state(&[("a".into(), "{\"x\":1}".into())])?;
                    writer.append_history(10, "first")?;
                    writer.append_history(20, "second")?;
                    writer.enqueue("am", "n1", 5)?;
                    writer.enqueue("hook", "n2", 50)?;
                    writer.append_remediation(30, "rollback/m", "r1")?;
                    Ok(())
                })
                .unwrap();
        }
        let alerts = AlertStore::open(&path, Synchronous::Full).unwrap();
        assert_eq!(
            alerts.load_state().unwrap(),
            vec![("a".into(), "{\"x\":1}".into())]
        );
        let history = alerts.history(10, None).unwrap();
        assert_eq!(
            history
                .iter()
                .map(|entry| entry.body.as_str())
                .collect::<Vec<_>>(),
            ["second", "first"]
        );
        assert_eq!(alerts.history(10, Some(history[0].id)).unwrap().len(), 1);
        let due = alerts.due(10, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].receiver, "am");
        assert_eq!(alerts.pending().unwrap().len(), 2);
        assert_eq!(alerts.last_remediation("rollback/m").unwrap().unwrap().body, "r1");
        assert!(alerts.last_remediation("retrain/m").unwrap().is_none());
    }
}
