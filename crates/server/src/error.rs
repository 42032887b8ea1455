//! The one table from error codes to HTTP answers. Every error answer has the
//! body `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body could not be read as rows at all.
    MalformedBody,
    UnsupportedMediaType,
    BodyTooLarge,
    /// The write queue is full: retry after `Retry-After` seconds.
    Overloaded,
    InvalidParameter,
    UnknownModel,
    NotFound,
    /// Drift needs a frozen baseline and the model has none.
    NoBaseline,
    /// The window asked for holds no data.
    EmptyWindow,
    /// The store failed to commit; nothing of the request was acknowledged.
    StorageUnavailable,
    ShuttingDown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NoBaseline => "no_baseline",
            ErrorCode::EmptyWindow => "empty_window",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedBody | ErrorCode::InvalidParameter => StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UnknownModel | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::NoBaseline => StatusCode::CONFLICT,
            ErrorCode::EmptyWindow => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::StorageUnavailable | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// The JSON shape of one error, also used per row in ingestion answers.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: ErrorBody {
                code: self.code.as_str(),
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if self.code == ErrorCode::Overloaded {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
