//! `POST /v1/predictions` and `POST /v1/labels`: body framing, parsing off
//! the async runtime, and the per-row answer.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use modelwatch_core::codec;
use modelwatch_core::event::ScoredPrediction;
use modelwatch_core::series::{Delta, ModelKind};
use modelwatch_core::wire::{self, BodyFormat, RowError};
use serde::Serialize;

use crate::App;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::ingest::{ParsedRow, RowOutcome, SharedNames, SubmitError};
use crate::labels::{LabelOutcome, ParsedLabel};

#[derive(Serialize)]
struct Rejected<'a> {
    index: usize,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct IngestAnswer<'a> {
    /// Rows that are durable now (including duplicates of stored rows).
    accepted: usize,
    /// Accepted rows whose `prediction_id` was already stored: not counted again.
    duplicates: usize,
    rejected: Vec<Rejected<'a>>,
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let content_type = content_type.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        // curl's `-d` sends JSON as a form unless told otherwise: a form body
        // is read as JSON, which is what such a client means.
        "application/json" | "" | "application/x-www-form-urlencoded" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            Ok(BodyFormat::Ndjson)
        }
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("content type {other:?} is not supported: send application/json (an array) or application/x-ndjson"),
        )
        .with_field("content-type")),
    }
}

pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body exceeds the limit of {limit} bytes: split it into smaller batches"),
        )
        .with_field("body")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // Sized from Content-Length up front: growing a multi-megabyte buffer
    // frame by frame costs a copy of the body per doubling.
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("cannot read the request body: {error}"),
            )
            .with_field("body")
        })?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(too_large());
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buffer))
}

struct Parsed {
    rows: Vec<ParsedRow>,
    models: Vec<String>,
    delta: Delta,
    errors: Vec<(usize, RowError)>,
}

fn parse_body(
    body: &Bytes,
    format: BodyFormat,
    received_ms: i64,
    limits: &wire::ParseLimits,
    names: &SharedNames,
) -> Result<Parsed, ApiError> {
    let mut names = names.for_request();
    let slices = wire::split_rows(body, format)
        .map_err(|error| ApiError::new(ErrorCode::MalformedBody, error.message).with_field("body"))?;
    let mut parsed = Parsed {
        rows: Vec::with_capacity(slices.len()),
        models: Vec::new(),
        delta: Delta::default(),
        errors: Vec::new(),
    };
    for (index, slice) in slices.into_iter().enumerate() {
        match wire::parse_prediction(slice, received_ms, limits) {
            Ok(event) => {
                let stored = codec::encode(&event, received_ms, &mut names);
                parsed.delta.observe(&event);
                let model = match parsed.models.iter().position(|model| *model == event.model) {
                    Some(position) => position,
                    None => {
                        parsed.models.push(event.model.clone());
                        parsed.models.len() - 1
                    }
                };
                parsed.rows.push(ParsedRow {
                    index,
                    kind: ModelKind::of(&event),
                    model: model as u32,
                    prediction_id: event.prediction_id,
                    stored,
                });
            }
            Err(error) => parsed.errors.push((index, error)),
        }
    }
    Ok(parsed)
}

pub(crate) async fn post_predictions(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    match ingest(app, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn ingest(app: App, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let format = body_format(&headers)?;
    let received_ms = app.shared.clock.now_ms();
    let body = read_body(&headers, body, app.shared.config.ingest.max_body_bytes).await?;
    let limits = app.parse_limits.clone();
    let shared = app.shared.clone();
    let parsed =
        tokio::task::spawn_blocking(move || parse_body(&body, format, received_ms, &limits, &shared.names))
            .await
            .map_err(|error| {
                ApiError::new(ErrorCode::StorageUnavailable, format!("parser failed: {error}"))
            })??;

    let telemetry = &app.shared.telemetry;
    record_rejections(telemetry, &parsed.errors);
    let row_indexes: Vec<usize> = parsed.rows.iter().map(|row| row.index).collect();
    let outcomes = if parsed.rows.is_empty() {
        Vec::new()
    } else {
        let waiting = app
            .queue
            .submit(parsed.rows, parsed.models, parsed.delta)
            .map_err(|error| submit_error(error, telemetry))?;
        committed(waiting).await?
    };
    Ok(answer(&parsed.errors, &row_indexes, &outcomes))
}

fn answer(errors: &[(usize, RowError)], row_indexes: &[usize], outcomes: &[RowOutcome]) -> Response {
    let refusal_messages: Vec<(usize, String, &'static str)> = row_indexes
        .iter()
        .zip(outcomes)
        .filter_map(|(index, outcome)| match outcome {
            RowOutcome::Refused(refusal) => Some((*index, refusal.to_string(), refusal.field())),
            _ => None,
        })
        .collect();
    let mut rejected: Vec<Rejected<'_>> = rejections(errors)
        .chain(refusal_messages.iter().map(|(index, message, field)| Rejected {
            index: *index,
            error: ErrorBody {
                code: "refused",
                message,
                field: Some(field),
            },
        }))
        .collect();
    rejected.sort_by_key(|rejected| rejected.index);
    let duplicates = outcomes
        .iter()
        .filter(|outcome| **outcome == RowOutcome::Duplicate)
        .count();
    let accepted = outcomes
        .iter()
        .filter(|outcome| !matches!(outcome, RowOutcome::Refused(_)))
        .count();
    // A batch of which nothing was accepted is the client's fault as a whole.
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = IngestAnswer {
        accepted,
        duplicates,
        rejected,
    };
    (status, axum::Json(body)).into_response()
}

#[derive(Serialize)]
struct LabelAnswer<'a> {
    /// Labels that are durable now (including duplicates).
    accepted: usize,
    /// Accepted labels identical to the stored label of their prediction.
    duplicates: usize,
    /// Accepted labels that replaced a different stored label.
    corrected: usize,
    /// Accepted labels whose prediction is not known yet: they are joined when
    /// it arrives, or become orphans after `labels.early_label_ttl`.
    held: usize,
    rejected: Vec<Rejected<'a>>,
}

pub(crate) async fn post_labels(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    match ingest_labels(app, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The valid labels of a body, and the errors of the others by row index.
type ParsedLabels = (Vec<ParsedLabel>, Vec<(usize, RowError)>);

fn parse_labels(
    body: &Bytes,
    format: BodyFormat,
    received_ms: i64,
    limits: &wire::ParseLimits,
) -> Result<ParsedLabels, ApiError> {
    let slices = wire::split_rows(body, format)
        .map_err(|error| ApiError::new(ErrorCode::MalformedBody, error.message).with_field("body"))?;
    let mut rows = Vec::with_capacity(slices.len());
    let mut errors = Vec::new();
    for (index, slice) in slices.into_iter().enumerate() {
        match wire::parse_label(slice, received_ms, limits) {
            Ok(label) => {
                let stored = codec::encode_label(&label, received_ms);
                rows.push(ParsedLabel {
                    index,
                    label,
                    stored,
                    prediction: None,
                });
            }
            Err(error) => errors.push((index, error)),
        }
    }
    Ok((rows, errors))
}

/// The rows' positions in id order, rows of one id in their order: the
/// order in which their predictions are looked up here, and in which the
/// writer takes them.
fn id_order(rows: &[ParsedLabel]) -> Vec<u32> {
    let mut keys: Vec<(&str, u32)> = rows
        .iter()
        .zip(0u32..)
        .map(|(row, position)| (row.label.prediction_id.as_str(), position))
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(|(_, position)| position).collect()
}

/// Looks the labels' predictions up on a read connection, so that the writer
/// does not have to: in id order, which walks the table from one wanted row
/// to the next where they lie close together
/// ([`modelwatch_store::Reader::with_predictions_in_order`]). A failure only
/// leaves the lookups to the writer.
fn prefetch_predictions(rows: &mut [ParsedLabel], order: &[u32], shared: &crate::state::Shared) {
    let ids: Vec<&str> = order
        .iter()
        .map(|position| rows[*position as usize].label.prediction_id.as_str())
        .collect();
    let mut predictions: Vec<Option<ScoredPrediction>> = vec![None; rows.len()];
    shared.readers.with(|reader| {
        reader.snapshot(|reader| {
            reader.with_predictions_in_order(&ids, |at, body| {
                predictions[order[at] as usize] = shared.names.decode_scored(body).ok();
            })
        })
    });
    for (row, prediction) in rows.iter_mut().zip(predictions) {
        row.prediction = prediction;
    }
}

async fn ingest_labels(app: App, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let format = body_format(&headers)?;
    let received_ms = app.shared.clock.now_ms();
    let body = read_body(&headers, body, app.shared.config.ingest.max_body_bytes).await?;
    let limits = app.parse_limits.clone();
    let shared = app.shared.clone();
    let (rows, order, errors) = tokio::task::spawn_blocking(move || {
        parse_labels(&body, format, received_ms, &limits).map(|(mut rows, errors)| {
            let order = id_order(&rows);
            prefetch_predictions(&mut rows, &order, &shared);
            (rows, order, errors)
        })
    })
    .await
    .map_err(|error| ApiError::new(ErrorCode::StorageUnavailable, format!("parser failed: {error}")))??;
    let telemetry = &app.shared.telemetry;
    record_rejections(telemetry, &errors);
    let outcomes = if rows.is_empty() {
        Vec::new()
    } else {
        let waiting = app
            .queue
            .submit_labels(rows, order, received_ms)
            .map_err(|error| submit_error(error, telemetry))?;
        committed(waiting).await?
    };
    let count = |wanted: LabelOutcome| outcomes.iter().filter(|outcome| **outcome == wanted).count();
    let rejected: Vec<Rejected<'_>> = rejections(&errors).collect();
    let status = if outcomes.is_empty() && !rejected.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let answer = LabelAnswer {
        accepted: outcomes.len(),
        duplicates: count(LabelOutcome::Duplicate),
        corrected: count(LabelOutcome::Corrected),
        held: count(LabelOutcome::Held),
        rejected,
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// The per-row rejections of rows that did not parse.
fn rejections(errors: &[(usize, RowError)]) -> impl Iterator<Item = Rejected<'_>> {
    errors.iter().map(|(index, error)| Rejected {
        index: *index,
        error: ErrorBody {
            code: error.code.as_str(),
            message: &error.message,
            field: error.field.as_deref(),
        },
    })
}

fn record_rejections(telemetry: &crate::state::Telemetry, errors: &[(usize, RowError)]) {
    for (_, error) in errors {
        telemetry.record_rejected(error.code.as_str(), 1);
    }
}

/// The writer's answer for a queued request, once its commit is over.
async fn committed<T>(
    waiting: tokio::sync::oneshot::Receiver<Result<Vec<T>, crate::ingest::StorageFailure>>,
) -> Result<Vec<T>, ApiError> {
    waiting
        .await
        .map_err(|_| ApiError::new(ErrorCode::ShuttingDown, "modelwatch is shutting down"))?
        .map_err(|failure| {
            ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("the store could not commit; nothing of this request was stored: {failure}"),
            )
        })
}

fn submit_error(error: SubmitError, telemetry: &crate::state::Telemetry) -> ApiError {
    match error {
        SubmitError::QueueFull => {
            telemetry
                .requests_overloaded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ApiError::new(
                ErrorCode::Overloaded,
                "the write queue is full: retry after the delay in Retry-After",
            )
        }
        SubmitError::Closed => ApiError::new(ErrorCode::ShuttingDown, "modelwatch is shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use modelwatch_core::event::{Actual, LabelEvent};

    use super::*;

    fn row(index: usize, id: &str) -> ParsedLabel {
        ParsedLabel {
            index,
            label: LabelEvent {
                prediction_id: id.to_owned(),
                actual: Actual::Class("1".to_owned()),
                timestamp_ms: 0,
                business: Vec::new(),
            },
            stored: Vec::new(),
            prediction: None,
        }
    }

    /// Rows go by id, bytewise as SQLite orders text, and rows of one id
    /// (a label and its correction) keep their order.
    #[test]
    fn labels_are_taken_in_id_order_and_rows_of_one_id_in_their_order() {
        let ids = ["p2", "p10", "p2", "é", "P9", "p10", "p2"];
        let rows: Vec<ParsedLabel> = ids.iter().enumerate().map(|(index, id)| row(index, id)).collect();
        assert_eq!(id_order(&rows), vec![4, 1, 5, 0, 2, 6, 3]);
        assert!(id_order(&[]).is_empty());
    }
}
