//! Remediation: the actions (rollback, retrain, paging webhooks) a rule runs
//! when its alert fires. Deciding happens in the evaluator's transaction
//! ([`decide`]): once per alert instance, not again for the same action and
//! model within the action's cooldown, only to allowlisted URLs. Every
//! decision, and later every delivery outcome, is a row of the audit log
//! (the store's `remediations` table), whose body is an [`AuditRecord`].

use modelwatch_core::alerting::Alert;
use modelwatch_store::{AlertWriter, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::{ActionConfig, RemediationConfig};
use crate::notify::{Outgoing, format_time};

/// What happened to one remediation, as the audit log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Queued for delivery; becomes `delivered`, `retrying` or `failed`.
    Queued,
    /// The last attempt failed; it will be retried.
    Retrying,
    Delivered,
    /// Given up: refused by the target (a 4xx), or out of attempts.
    Failed,
    /// The action ran for this model within its cooldown.
    SkippedCooldown,
    /// The action already ran for this alert instance.
    SkippedDuplicate,
    /// The URL is not under any `remediation.allowlist` prefix, or the action
    /// is not configured.
    Refused,
}

/// One row of the audit log (a wire type: stored as JSON, served as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub action: String,
    pub decision: Decision,
    pub model: String,
    #[serde(default)]
    pub version: Option<String>,
    /// The alert's name (`alertname`).
    pub alert: String,
    /// The rule's id, which with the model and `active_since` names the alert
    /// instance.
    pub rule: String,
    pub active_since: String,
    pub active_since_ms: i64,
    /// `None` when the value is not finite.
    pub value: Option<f64>,
    pub severity: String,
    pub url: String,
    #[serde(default)]
    pub attempts: i64,
    /// Why it was skipped, refused, or failed; the target's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the outcome was known (delivered, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// How many times a remediation is tried before it is recorded as failed:
/// with the delivery backoff, about four minutes. Unlike a notification, a
/// rollback delivered an hour late may do harm.
pub const MAX_ATTEMPTS: i64 = 8;

/// The outbox receiver name of an action (receivers and actions have names
/// of their own; the prefix keeps them apart).
pub fn outbox_receiver(action: &str) -> String {
    format!("action:{action}")
}

/// The audit-log key of runs of `action` for `model`: its last row gives the
/// cooldown, and its rows since an instance began tell whether that instance
/// already ran the action.
fn run_key(action: &str, model: &str) -> String {
    serde_json::json!(["run", action, model]).to_string()
}

/// The audit-log key of decisions that ran nothing.
fn skip_key(action: &str, model: &str) -> String {
    serde_json::json!(["skip", action, model]).to_string()
}

/// Whether `url` is under one of the `allowlist` prefixes. A prefix matches
/// only up to a boundary: `http://deploy.internal` admits
/// `http://deploy.internal/rollback` but not `http://deploy.internal.evil.com/`.
pub fn allowlisted(url: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|prefix| {
        url.strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || prefix.ends_with('/') || rest.starts_with(['/', '?', '#']))
    })
}

/// Expands `{{ model }}`, `{{ version }}`, `{{ alert }}`, `{{ value }}` and
/// `{{ severity }}` in `template`. Strings are JSON-escaped (without quotes:
/// the template places them inside its own), so that a model name cannot
/// break out of the JSON it is put in; the value is a JSON number, or `null`
/// when it is not finite. Other `{{ … }}` stay as written.
pub fn render_body(template: &str, alert: &Alert) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}") else {
            rest = &rest[open..];
            break;
        };
        let placeholder = &rest[open..open + close + 2];
        match placeholder[2..placeholder.len() - 2].trim() {
            "model" => out.push_str(&json_escaped(&alert.model)),
            "version" => out.push_str(&json_escaped(alert.version.as_deref().unwrap_or(""))),
            "alert" => out.push_str(&json_escaped(&alert.name)),
            "severity" => out.push_str(&json_escaped(severity(alert))),
            "value" => out.push_str(&json_number(alert.value)),
            _ => out.push_str(placeholder),
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

fn json_escaped(text: &str) -> String {
    let quoted = serde_json::Value::from(text).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        serde_json::Value::from(value).to_string()
    } else {
        "null".to_owned()
    }
}

fn severity(alert: &Alert) -> &str {
    alert.labels.get("severity").map(String::as_str).unwrap_or("")
}

/// `url` without what may hold a secret (user information, the query and
/// the fragment), for the audit log, which is served over the API.
pub fn redacted_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or("");
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

fn record(action: &str, url: &str, alert: &Alert, decision: Decision) -> AuditRecord {
    AuditRecord {
        action: action.to_owned(),
        decision,
        model: alert.model.clone(),
        version: alert.version.clone(),
        alert: alert.name.clone(),
        rule: alert.rule.clone(),
        active_since: format_time(alert.active_since_ms),
        active_since_ms: alert.active_since_ms,
        value: alert.value.is_finite().then_some(alert.value),
        severity: severity(alert).to_owned(),
        url: redacted_url(url),
        attempts: 0,
        detail: None,
        finished_at: None,
    }
}

fn to_json(record: &AuditRecord) -> String {
    serde_json::to_string(record).expect("an audit record serializes")
}

/// Decides, in the evaluator's transaction, what each of `actions` does for
/// `alert`, which has just started firing; records every decision and queues
/// what is to run.
pub fn decide(
    writer: &mut AlertWriter<'_>,
    config: &RemediationConfig,
    actions: &[String],
    alert: &Alert,
    now_ms: i64,
) -> Result<(), StoreError> {
    for name in actions {
        let run_key = run_key(name, &alert.model);
        let skip_key = skip_key(name, &alert.model);
        let Some(action) = config.actions.get(name) else {
            let mut refused = record(name, "", alert, Decision::Refused);
            refused.detail = Some("no remediation action of this name is configured".to_owned());
            tracing::warn!(action = %name, model = %alert.model, "remediation refused: unknown action");
            writer.append_remediation(now_ms, &skip_key, &to_json(&refused))?;
            continue;
        };
        let earlier_runs = writer.remediations_since(&run_key, alert.active_since_ms)?;
        if earlier_runs.iter().any(|entry| same_instance(&entry.body, alert)) {
            let mut skipped = record(name, &action.url, alert, Decision::SkippedDuplicate);
            skipped.detail = Some("already ran for this alert instance".to_owned());
            writer.append_remediation(now_ms, &skip_key, &to_json(&skipped))?;
            continue;
        }
        let last_run = writer.last_remediation(&run_key)?;
        if let Some(last_run) = last_run.filter(|last_run| now_ms - last_run.at_ms < action.cooldown.ms) {
            let mut skipped = record(name, &action.url, alert, Decision::SkippedCooldown);
            skipped.detail = Some(format!(
                "ran for this model at {} (audit entry {}); cooldown until {}",
                format_time(last_run.at_ms),
                last_run.id,
                format_time(last_run.at_ms + action.cooldown.ms)
            ));
            tracing::info!(action = %name, model = %alert.model, "remediation skipped: cooldown");
            writer.append_remediation(now_ms, &skip_key, &to_json(&skipped))?;
            continue;
        }
        if !allowlisted(&action.url, &config.allowlist) {
            let mut refused = record(name, &action.url, alert, Decision::Refused);
            refused.detail = Some("the URL is not under any remediation.allowlist prefix".to_owned());
            tracing::warn!(action = %name, model = %alert.model, "remediation refused: not allowlisted");
            writer.append_remediation(now_ms, &skip_key, &to_json(&refused))?;
            continue;
        }
        queue(writer, name, action, alert, &run_key, now_ms)?;
    }
    Ok(())
}

fn queue(
    writer: &mut AlertWriter<'_>,
    name: &str,
    action: &ActionConfig,
    alert: &Alert,
    run_key: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let queued = record(name, &action.url, alert, Decision::Queued);
    let audit_id = writer.append_remediation(now_ms, run_key, &to_json(&queued))?;
    let outgoing = Outgoing::Remediation {
        action: name.to_owned(),
        audit_id,
        audit: queued,
        body: render_body(&action.body, alert),
    };
    writer.enqueue_keyed(&outbox_receiver(name), run_key, &outgoing.to_json(), now_ms)?;
    tracing::info!(action = %name, model = %alert.model, alert = %alert.name, "remediation queued");
    Ok(())
}

fn same_instance(audit_body: &str, alert: &Alert) -> bool {
    serde_json::from_str::<AuditRecord>(audit_body)
        .map(|earlier| earlier.rule == alert.rule && earlier.active_since_ms == alert.active_since_ms)
        .unwrap_or(false)
}

/// The audit body of a queued remediation once its delivery has an outcome.
pub fn outcome(
    queued: &AuditRecord,
    decision: Decision,
    attempts: i64,
    detail: Option<String>,
    now_ms: i64,
) -> String {
    let mut record = queued.clone();
    record.decision = decision;
    record.attempts = attempts;
    record.detail = detail;
    record.finished_at =
        matches!(decision, Decision::Delivered | Decision::Failed).then(|| format_time(now_ms));
    to_json(&record)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use modelwatch_core::alerting::AlertState;
    use modelwatch_store::{AlertStore, SqliteStore, Synchronous};

    use super::*;
    use crate::config::Config;
    use crate::notify::Notifier;
    use modelwatch_core::alerting::Transition;

    fn alert(model: &str, active_since_ms: i64) -> Alert {
        Alert {
            rule: "MLModelHighErrorRate{severity=\"critical\"}".to_owned(),
            name: "MLModelHighErrorRate".to_owned(),
            model: model.to_owned(),
            version: Some("v3".to_owned()),
            state: AlertState::Firing,
            value: 0.25,
            labels: BTreeMap::from([
                ("alertname".to_owned(), "MLModelHighErrorRate".to_owned()),
                ("model_name".to_owned(), model.to_owned()),
                ("severity".to_owned(), "critical".to_owned()),
            ]),
            annotations: BTreeMap::new(),
            active_since_ms,
            fired_at_ms: Some(active_since_ms),
            resolved_at_ms: None,
            last_evaluated_ms: active_since_ms,
        }
    }

    fn firing(alert: &Alert) -> Transition {
        Transition {
            from: AlertState::Pending,
            alert: alert.clone(),
        }
    }

    const CONFIG: &str = "
alerts:
  rules:
    MLModelHighErrorRate:
      actions: [rollback, page]
remediation:
  allowlist: ['http://127.0.0.1:9/']
  actions:
    rollback:
      url: http://127.0.0.1:9/rollback
      cooldown: 10m
      headers: {Authorization: Bearer secret}
    page:
      url: http://127.0.0.1:9/page
      cooldown: 1ms
      body: '{\"text\": \"{{ alert }} on {{ model }} ({{ severity }}): {{ value }}\"}'
";

    struct Fixture {
        _directory: tempfile::TempDir,
        alerts: AlertStore,
        notifier: Notifier,
    }

    fn fixture(config: Config) -> Fixture {
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(directory.path(), Synchronous::Normal).unwrap();
        let alerts = AlertStore::open(store.path(), Synchronous::Normal).unwrap();
        Fixture {
            _directory: directory,
            alerts,
            notifier: Notifier::new(Arc::new(config)),
        }
    }

    impl Fixture {
        fn fire(&mut self, alert: &Alert, now_ms: i64) {
            let notifier = &mut self.notifier;
            self.alerts
                .transaction(|writer| notifier.record(writer, &[firing(alert)], &[], now_ms))
                .unwrap();
        }

        /// The audit log, oldest first, as `(action, model, decision)`.
        fn audit(&self) -> Vec<(String, String, Decision)> {
            let mut entries = self.alerts.remediations(1000, None).unwrap();
            entries.reverse();
            entries
                .iter()
                .map(|entry| {
                    let record: AuditRecord = serde_json::from_str(&entry.body).unwrap();
                    (record.action, record.model, record.decision)
                })
                .collect()
        }
    }

    fn row(action: &str, model: &str, decision: Decision) -> (String, String, Decision) {
        (action.to_owned(), model.to_owned(), decision)
    }

    #[test]
    fn audited_urls_carry_no_credentials_or_query() {
        assert_eq!(
            redacted_url("https://user:token@deploy.internal:8443/rollback?key=secret#x"),
            "https://deploy.internal:8443/rollback"
        );
        assert_eq!(redacted_url("http://deploy.internal"), "http://deploy.internal");
    }

    #[test]
    fn templates_expand_json_escaped() {
        let mut weird = alert("fraud \"detector\"\n", 0);
        weird.value = 0.5;
        let body = render_body(
            r#"{"model": "{{ model }}", "version": "{{version}}", "alert": "{{ alert }}", "value": {{ value }}, "severity": "{{ severity }}", "other": "{{ other }}"}"#,
            &weird,
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"model": "fraud \"detector\"\n", "version": "v3", "alert": "MLModelHighErrorRate",
                "value": 0.5, "severity": "critical", "other": "{{ other }}"})
        );
        weird.value = f64::NAN;
        weird.version = None;
        assert_eq!(
            render_body("{{ value }} {{ version }}|{{ model", &weird),
            "null |{{ model"
        );
    }

    #[test]
    fn cooldown_is_per_action_and_model_and_dedupe_per_instance() {
        let mut fixture = fixture(Config::parse(CONFIG).unwrap());
        let minute = 60_000;
        let first = alert("fraud", 0);
        fixture.fire(&first, 0);
        // The same instance again (an evaluator replaying a transition).
        fixture.fire(&first, minute);
        // A new instance of the same alert within rollback's 10m cooldown;
        // `page` has no cooldown.
        fixture.fire(&alert("fraud", 2 * minute), 2 * minute);
        // Another model is not held back by fraud's cooldown.
        fixture.fire(&alert("churn", 3 * minute), 3 * minute);
        // After the cooldown, rollback runs again.
        fixture.fire(&alert("fraud", 11 * minute), 11 * minute);
        assert_eq!(
            fixture.audit(),
            [
                row("rollback", "fraud", Decision::Queued),
                row("page", "fraud", Decision::Queued),
                row("rollback", "fraud", Decision::SkippedDuplicate),
                row("page", "fraud", Decision::SkippedDuplicate),
                row("rollback", "fraud", Decision::SkippedCooldown),
                row("page", "fraud", Decision::Queued),
                row("rollback", "churn", Decision::Queued),
                row("page", "churn", Decision::Queued),
                row("rollback", "fraud", Decision::Queued),
                row("page", "fraud", Decision::Queued),
            ]
        );
        // One outbox entry per queued run, with the rendered body and no
        // secret header in it.
        let pending = fixture.alerts.pending().unwrap();
        assert_eq!(pending.len(), 7);
        assert!(pending.iter().all(|entry| !entry.body.contains("secret")));
        let page: Vec<&str> = pending
            .iter()
            .filter(|entry| entry.receiver == "action:page")
            .map(|entry| entry.body.as_str())
            .collect();
        let Outgoing::Remediation { body, .. } = serde_json::from_str(page[0]).unwrap() else {
            panic!("not a remediation: {}", page[0]);
        };
        assert_eq!(
            body,
            r#"{"text": "MLModelHighErrorRate on fraud (critical): 0.25"}"#
        );
    }

    #[test]
    fn allowlist_prefixes_match_at_a_boundary() {
        let allowlist = vec![
            "http://deploy.internal".to_owned(),
            "https://ci.example.com/hooks/".to_owned(),
        ];
        assert!(allowlisted("http://deploy.internal/rollback", &allowlist));
        assert!(allowlisted("http://deploy.internal", &allowlist));
        assert!(!allowlisted(
            "http://deploy.internal.evil.com/rollback",
            &allowlist
        ));
        assert!(!allowlisted("http://deploy.internal:8080/rollback", &allowlist));
        assert!(allowlisted("https://ci.example.com/hooks/retrain", &allowlist));
        assert!(!allowlisted("https://ci.example.com/other", &allowlist));
    }

    #[test]
    fn urls_off_the_allowlist_are_refused_and_audited() {
        let mut config = Config::parse(CONFIG).unwrap();
        // The config was validated when read; the check is made again when
        // the action is about to run.
        config.remediation.allowlist = vec!["http://deploy.internal/".to_owned()];
        let mut fixture = fixture(config);
        fixture.fire(&alert("fraud", 0), 0);
        assert_eq!(
            fixture.audit(),
            [
                row("rollback", "fraud", Decision::Refused),
                row("page", "fraud", Decision::Refused),
            ]
        );
        assert_eq!(fixture.alerts.pending_count().unwrap(), 0);
        // A refusal is not a run: once allowed, the action is not in cooldown.
        let entry = &fixture.alerts.remediations(1, None).unwrap()[0];
        let record: AuditRecord = serde_json::from_str(&entry.body).unwrap();
        assert!(record.detail.unwrap().contains("allowlist"));
    }
}
