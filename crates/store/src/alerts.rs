//! Alert state, alert history, the notification outbox and the remediation
//! audit log. They live in the same database file as the events, on a
//! connection of their own: the evaluator writes a few rows per interval and
//! must not queue behind the ingestion writer's group commits for its reads.
//!
//! Bodies are JSON text written by the server; the store does not read them.
//! What the server must look rows up by is in columns of its own: the
//! outbox's `key` (the alert instance or action a notification is about) and
//! the audit log's `dedupe_key`.

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
    /// What the entry is about (such as one alert), so that a sender can tell
    /// whether something for it is still queued; empty when not given.
    pub key: String,
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
        connection.pragma_update(None, "synchronous", synchronous.pragma())?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "cache_size", -2048)?;
        add_outbox_key_column(&connection)?;
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
            "SELECT id, receiver, key, body, attempts, next_attempt_ms FROM outbox
             WHERE next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![now_ms, limit as i64], outbox_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every notification not delivered yet, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxEntry>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, receiver, key, body, attempts, next_attempt_ms FROM outbox ORDER BY id",
        )?;
        let rows = statement.query_map([], outbox_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// How many notifications are not delivered yet.
    pub fn pending_count(&self) -> Result<u64> {
        let count: i64 = self
            .connection
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// The oldest undelivered entry of each receiver, when it is due at
    /// `now_ms`. Delivering only these keeps each receiver's entries in the
    /// order they were queued (a resolution never overtakes its firing), and
    /// an entry that waits for its retry holds back the entries behind it.
    pub fn due_heads(&self, now_ms: i64) -> Result<Vec<OutboxEntry>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, receiver, key, body, attempts, next_attempt_ms FROM outbox
             WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY receiver) AND next_attempt_ms <= ?1
             ORDER BY id",
        )?;
        let rows = statement.query_map([now_ms], outbox_entry)?;
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

impl crate::Reader {
    /// Up to `limit` remediation audit entries older than `before_id`, newest
    /// first (for the read API, off the alert store's connection).
    pub fn remediations(&self, limit: usize, before_id: Option<i64>) -> Result<Vec<LogEntry>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, at_ms, body FROM remediations WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![before_id.unwrap_or(i64::MAX), limit as i64], log_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Up to `limit` alert history entries older than `before_id`, newest first.
    pub fn alert_history(&self, limit: usize, before_id: Option<i64>) -> Result<Vec<LogEntry>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, at_ms, body FROM alert_history WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![before_id.unwrap_or(i64::MAX), limit as i64], log_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Notifications (and remediation calls) not delivered yet.
    pub fn outbox_pending(&self) -> Result<u64> {
        Ok(self
            .connection
            .query_row("SELECT count(*) FROM outbox", [], |row| row.get::<_, i64>(0))? as u64)
    }
}

/// Databases created by development builds of schema 3 before the outbox had
/// its `key` column get it here (the column is empty for their old rows).
fn add_outbox_key_column(connection: &Connection) -> Result<()> {
    let has_key = |connection: &Connection| -> Result<bool> {
        let mut statement = connection.prepare("SELECT name FROM pragma_table_info('outbox')")?;
        let names = statement.query_map([], |row| row.get::<_, String>(0))?;
        for name in names {
            if name? == "key" {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if has_key(connection)? {
        return Ok(());
    }
    let transaction =
        rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate)?;
    // Another connection may have added it while this one waited for the lock.
    if !has_key(&transaction)? {
        transaction.execute("ALTER TABLE outbox ADD COLUMN key TEXT NOT NULL DEFAULT ''", [])?;
    }
    transaction.commit()?;
    Ok(())
}

fn log_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        id: row.get(0)?,
        at_ms: row.get(1)?,
        body: row.get(2)?,
    })
}

fn outbox_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: row.get(0)?,
        receiver: row.get(1)?,
        key: row.get(2)?,
        body: row.get(3)?,
        attempts: row.get(4)?,
        next_attempt_ms: row.get(5)?,
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
        self.enqueue_keyed(receiver, "", body, now_ms)
    }

    /// Queues a notification for `receiver` about `key` (see
    /// [`AlertWriter::is_queued`]), due at once.
    pub fn enqueue_keyed(&mut self, receiver: &str, key: &str, body: &str, now_ms: i64) -> Result<i64> {
        self.transaction
            .prepare_cached(
                "INSERT INTO outbox (receiver, key, body, attempts, next_attempt_ms) VALUES (?1, ?2, ?3, 0, ?4)",
            )?
            .execute(params![receiver, key, body, now_ms])?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Whether an entry for `receiver` about `key` is still undelivered.
    pub fn is_queued(&self, receiver: &str, key: &str) -> Result<bool> {
        Ok(self
            .transaction
            .prepare_cached("SELECT 1 FROM outbox WHERE receiver = ?1 AND key = ?2 LIMIT 1")?
            .exists(params![receiver, key])?)
    }

    /// The most recent remediation entry whose `dedupe_key` is `key`, as this
    /// transaction sees it.
    pub fn last_remediation(&self, key: &str) -> Result<Option<LogEntry>> {
        Ok(self
            .transaction
            .prepare_cached(
                "SELECT id, at_ms, body FROM remediations WHERE dedupe_key = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([key], log_entry)
            .optional()?)
    }

    /// The remediation entries whose `dedupe_key` is `key` recorded at or
    /// after `since_ms`, oldest first.
    pub fn remediations_since(&self, key: &str, since_ms: i64) -> Result<Vec<LogEntry>> {
        let mut statement = self.transaction.prepare_cached(
            "SELECT id, at_ms, body FROM remediations WHERE dedupe_key = ?1 AND at_ms >= ?2 ORDER BY id",
        )?;
        let rows = statement.query_map(params![key, since_ms], log_entry)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
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

/// A frozen drift baseline: what it covers (JSON, written by the server) and
/// its summary (opaque bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineRow {
    pub model: String,
    pub body: String,
    pub state: Vec<u8>,
}

impl AlertStore {
    /// Stores (or replaces) the frozen baseline of a model, durably.
    pub fn put_baseline(&mut self, row: &BaselineRow) -> Result<()> {
        self.transaction(|writer| {
            writer
                .transaction
                .prepare_cached(
                    "INSERT INTO baselines (model, body, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (model) DO UPDATE SET body = excluded.body, state = excluded.state",
                )?
                .execute(params![row.model, row.body, row.state])?;
            Ok(())
        })
    }

    /// Forgets the frozen baseline of a model; `false` if it had none.
    pub fn delete_baseline(&mut self, model: &str) -> Result<bool> {
        self.transaction(|writer| {
            Ok(writer
                .transaction
                .prepare_cached("DELETE FROM baselines WHERE model = ?1")?
                .execute([model])?
                > 0)
        })
    }

    /// Every frozen baseline.
    pub fn load_baselines(&self) -> Result<Vec<BaselineRow>> {
        let mut statement = self
            .connection
            .prepare("SELECT model, body, state FROM baselines ORDER BY model")?;
        let rows = statement.query_map([], |row| {
            Ok(BaselineRow {
                model: row.get(0)?,
                body: row.get(1)?,
                state: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        next_attempt_ms INTEGER NOT NULL,
        key TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS outbox_receiver ON outbox (receiver, id);
    CREATE TABLE IF NOT EXISTS baselines (
        model TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        state BLOB NOT NULL
    ) WITHOUT ROWID;
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
            let baseline = BaselineRow {
                model: "m".into(),
                body: "{}".into(),
                state: vec![1, 2, 3],
            };
            alerts.put_baseline(&baseline).unwrap();
            alerts
                .put_baseline(&BaselineRow {
                    state: vec![4],
                    ..baseline
                })
                .unwrap();
            alerts
                .put_baseline(&BaselineRow {
                    model: "gone".into(),
                    body: "{}".into(),
                    state: vec![],
                })
                .unwrap();
            assert!(alerts.delete_baseline("gone").unwrap());
            assert!(!alerts.delete_baseline("gone").unwrap());
        }
        let alerts = AlertStore::open(&path, Synchronous::Full).unwrap();
        let baselines = alerts.load_baselines().unwrap();
        assert_eq!(baselines.len(), 1);
        assert_eq!(
            (baselines[0].model.as_str(), &baselines[0].state[..]),
            ("m", &[4u8][..])
        );
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

#[cfg(test)]
mod outbox_tests {
    use super::*;

    fn open_alerts() -> (tempfile::TempDir, AlertStore) {
        let directory = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(directory.path(), Synchronous::Normal).unwrap();
        let alerts = AlertStore::open(store.path(), Synchronous::Normal).unwrap();
        (directory, alerts)
    }

    #[test]
    fn heads_keep_each_receivers_order_and_wait_for_retries() {
        let (_directory, mut alerts) = open_alerts();
        let (first, _second, other) = alerts
            .transaction(|writer| {
                Ok((
                    writer.enqueue_keyed("am", "a1", "fire", 10)?,
                    writer.enqueue_keyed("am", "a1", "resolve", 20)?,
                    writer.enqueue_keyed("hook", "a2", "fire", 10)?,
                ))
            })
            .unwrap();
        let heads = alerts.due_heads(100).unwrap();
        assert_eq!(
            heads.iter().map(|entry| entry.id).collect::<Vec<_>>(),
            [first, other]
        );
        assert_eq!(heads[0].key, "a1");
        // The head waits for its retry: nothing of "am" is due, not even the
        // entry behind it.
        alerts
            .transaction(|writer| writer.postpone(first, 1, 1000))
            .unwrap();
        assert_eq!(alerts.due_heads(100).unwrap().len(), 1);
        alerts
            .transaction(|writer| {
                assert!(writer.is_queued("am", "a1")?);
                assert!(!writer.is_queued("hook", "a1")?);
                writer.delivered(first)
            })
            .unwrap();
        assert_eq!(alerts.due_heads(100).unwrap()[0].body, "resolve");
        assert_eq!(alerts.pending_count().unwrap(), 2);
    }

    #[test]
    fn remediation_reads_see_the_transactions_own_writes() {
        let (_directory, mut alerts) = open_alerts();
        alerts
            .transaction(|writer| {
                writer.append_remediation(10, "run", "old")?;
                writer.append_remediation(20, "skip", "skipped")?;
                writer.append_remediation(30, "run", "new")?;
                assert_eq!(writer.last_remediation("run")?.unwrap().body, "new");
                let since: Vec<String> = writer
                    .remediations_since("run", 15)?
                    .into_iter()
                    .map(|entry| entry.body)
                    .collect();
                assert_eq!(since, ["new"]);
                Ok(())
            })
            .unwrap();
        let path = alerts.connection.path().unwrap().to_owned();
        let reader = crate::Reader::open_path(std::path::Path::new(&path)).unwrap();
        let bodies: Vec<String> = reader
            .remediations(2, None)
            .unwrap()
            .into_iter()
            .map(|entry| entry.body)
            .collect();
        assert_eq!(bodies, ["new", "skipped"]);
    }

    #[test]
    fn an_outbox_without_the_key_column_gets_it() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("old.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY, receiver TEXT NOT NULL, body TEXT NOT NULL,
                 attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL);
                 INSERT INTO outbox (receiver, body, attempts, next_attempt_ms) VALUES ('am', 'old', 0, 0);",
            )
            .unwrap();
        let alerts = AlertStore::open(&path, Synchronous::Normal).unwrap();
        let pending = alerts.pending().unwrap();
        assert_eq!((pending[0].body.as_str(), pending[0].key.as_str()), ("old", ""));
        // Opening again finds the column and leaves it.
        AlertStore::open(&path, Synchronous::Normal).unwrap();
    }
}
