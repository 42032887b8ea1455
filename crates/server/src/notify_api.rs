//! `GET /v1/remediations`: the remediation audit log, newest first, a page at
//! a time (`limit`, and `before` = the `id` of the oldest entry already seen).

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use modelwatch_store::LogEntry;

use crate::App;
use crate::error::{ApiError, ErrorCode};
use crate::notify::format_time;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    limit: Option<usize>,
    before: Option<i64>,
}

/// One page of an append-only log (remediation audit, alert history), read
/// off the writer on a pooled connection: up to `limit` (default 100, at most
/// 1000) entries older than `before`, newest first, and the `before` of the
/// next page when this one is full.
pub(crate) async fn read_log_page(
    app: &App,
    limit: Option<usize>,
    before: Option<i64>,
    read: fn(&modelwatch_store::Reader, usize, Option<i64>) -> modelwatch_store::Result<Vec<LogEntry>>,
) -> Result<(Vec<LogEntry>, Option<i64>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )
        .with_field("limit"));
    }
    let shared = app.shared.clone();
    let entries =
        tokio::task::spawn_blocking(move || shared.readers.with(|reader| read(reader, limit, before)))
            .await
            .ok()
            .flatten()
            .and_then(|result| {
                result
                    .map_err(|error| tracing::warn!(%error, "reading a log of the alert store failed"))
                    .ok()
            })
            .ok_or_else(|| ApiError::new(ErrorCode::StorageUnavailable, "the log cannot be read"))?;
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten();
    Ok((entries, next_before))
}

#[derive(Debug, Serialize)]
pub struct RemediationsAnswer {
    remediations: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

#[derive(Debug, Serialize)]
struct AuditEntry {
    id: i64,
    at: String,
    /// The audit record as stored (see `remediation::AuditRecord`).
    #[serde(flatten)]
    record: serde_json::Map<String, serde_json::Value>,
}

pub async fn remediations(
    State(app): State<App>,
    Query(params): Query<PageParams>,
) -> Result<Json<RemediationsAnswer>, ApiError> {
    let (entries, next_before) = read_log_page(
        &app,
        params.limit,
        params.before,
        modelwatch_store::Reader::remediations,
    )
    .await?;
    let remediations = entries
        .into_iter()
        .map(|entry| AuditEntry {
            id: entry.id,
            at: format_time(entry.at_ms),
            record: serde_json::from_str(&entry.body).unwrap_or_default(),
        })
        .collect();
    Ok(Json(RemediationsAnswer {
        remediations,
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use modelwatch_store::{AlertStore, Synchronous};
    use tower::ServiceExt;

    use crate::config::Config;

    async fn get(router: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_audit_log_pages_newest_first() {
        let directory = tempfile::tempdir().unwrap();
        let (app, workers) = crate::open(Config::default(), directory.path()).unwrap();
        let mut alerts =
            AlertStore::open(&directory.path().join("modelwatch.db"), Synchronous::Normal).unwrap();
        alerts
            .transaction(|writer| {
                for index in 0..3 {
                    writer.append_remediation(
                        1_800_000_000_000 + index,
                        "key",
                        &format!(r#"{{"action": "rollback", "decision": "queued", "n": {index}}}"#),
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let router = crate::app(app);
        let (status, first) = get(&router, "/v1/remediations?limit=2").await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let numbers: Vec<&serde_json::Value> = first["remediations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| &entry["n"])
            .collect();
        assert_eq!(numbers, [2, 1]);
        assert_eq!(first["remediations"][0]["action"], "rollback");
        assert_eq!(first["remediations"][0]["at"], "2027-01-15T08:00:00.002Z");
        let before = first["next_before"].as_i64().unwrap();
        let (_, second) = get(&router, &format!("/v1/remediations?limit=2&before={before}")).await;
        assert_eq!(second["remediations"].as_array().unwrap().len(), 1);
        assert_eq!(second["remediations"][0]["n"], 0);
        assert!(second.get("next_before").is_none(), "{second}");
        let (status, error) = get(&router, "/v1/remediations?limit=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["field"], "limit");
        drop(router);
        workers.join();
    }
}
