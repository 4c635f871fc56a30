//! Error answers of the API: one JSON shape, `{"code": "…", "error": "…", "parameter": "…"}`,
//! for every error the API gives, including those the router, the body limits and a
//! caught panic produce. `docs/openapi.yaml` lists the codes (`ErrorCode`).

use std::any::Any;
use std::panic::AssertUnwindSafe;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

use rdkafka::error::RDKafkaErrorCode;

use crate::kafka::KafkaOpError;
use crate::names::metrics as m;
use crate::store::StoreError;
use crate::store::query::ParamError;
use crate::submit::SubmitError;

/// Longest request target (path and query) the API reads, in bytes; longer answers 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// What kind of error an answer reports: stable, for programs to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A query parameter, path segment or body field is invalid (`parameter` names it).
    InvalidParameter,
    /// The body is not JSON of the expected shape.
    InvalidBody,
    /// No token, or an unknown one.
    Unauthorized,
    /// The token may not do this.
    Forbidden,
    /// No such route.
    NotFound,
    /// No such task (or a task of another tenant).
    TaskNotFound,
    /// No such tenant.
    UnknownTenant,
    /// The tenant has no such function.
    UnknownFunction,
    /// The route does not take this method.
    MethodNotAllowed,
    /// Several tenants use the task id; pass `tenant`.
    Ambiguous,
    /// The task has already ended.
    TaskEnded,
    /// The queue topic no longer holds the task's record.
    RecordGone,
    /// No such dead-letter topic (or one of another tenant), or no such partition of it.
    UnknownTopic,
    /// The body or the task's payload is over a limit.
    PayloadTooLarge,
    /// The request target is longer than [`MAX_URI_BYTES`].
    UriTooLong,
    /// Kafka did not answer or acknowledge in time.
    Unavailable,
    /// A fault of the server; details are in its log, never in the answer.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidParameter => "invalid_parameter",
            Self::InvalidBody => "invalid_body",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::TaskNotFound => "task_not_found",
            Self::UnknownTenant => "unknown_tenant",
            Self::UnknownFunction => "unknown_function",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Ambiguous => "ambiguous",
            Self::TaskEnded => "task_ended",
            Self::RecordGone => "record_gone",
            Self::UnknownTopic => "unknown_topic",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The code for an answer with this status that carried no body of its own.
    fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::CONFLICT => Self::Ambiguous,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => Self::UriTooLong,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            s if s.is_server_error() => Self::Internal,
            _ => Self::InvalidParameter,
        }
    }
}

/// The JSON body of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error (`invalid_parameter`, `task_not_found`, …).
    #[serde(default = "unknown_code")]
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub error: String,
    /// The query parameter, path segment or body field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

fn unknown_code() -> ErrorCode {
    ErrorCode::Internal
}

/// An error answer: a status, a code and a message.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: ErrorCode,
    pub(super) message: String,
    pub(super) parameter: Option<String>,
}

impl ApiError {
    /// An answer with this status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            parameter: None,
        }
    }

    /// Names the parameter or field at fault.
    pub fn at(mut self, parameter: impl Into<String>) -> Self {
        self.parameter = Some(parameter.into());
        self
    }

    /// 400: a parameter or field is invalid.
    pub fn bad(parameter: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParameter,
            message,
        )
        .at(parameter)
    }

    /// 401 with the message.
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 404 for a task the caller cannot see.
    pub fn task_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::TaskNotFound,
            format!("no task `{id}`"),
        )
    }

    /// 413: the task's payload or the body is over a limit.
    pub fn too_large(parameter: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            message,
        )
        .at(parameter)
    }

    /// 503: Kafka did not answer. The detail goes to the log, not to the client.
    pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "{what}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!("{what}; try again"),
        )
    }

    /// 500: a fault of the server. The detail goes to the log, not to the client.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the server's log",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            code: self.code,
            error: self.message,
            parameter: self.parameter,
        });
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(&format_args!("task store query failed: {e}"))
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        Self::bad(&e.parameter, e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad(
            "query",
            format!("malformed query string: {}", e.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad(
            "id",
            format!("invalid task id in the path: {}", e.body_text()),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::too_large("body", e.body_text());
        }
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            e.body_text(),
        )
        .at("body")
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::UnknownTenant(t) => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownTenant,
                format!("no tenant `{t}`"),
            )
            .at("tenant"),
            SubmitError::UnknownFunction { tenant, function } => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownFunction,
                format!("tenant `{tenant}` has no function `{function}`"),
            )
            .at("function"),
            SubmitError::Codec(e) => Self::bad("payload", e.to_string()),
            SubmitError::Kafka(e) if is_message_too_large(&e) => Self::too_large(
                "payload",
                "the task is larger than the largest record the queue topic accepts",
            ),
            SubmitError::Kafka(e) => Self::unavailable("Kafka did not acknowledge the task", &e),
        }
    }
}

/// Kafka refused the record for its size: no retry can help, so it is the client's.
fn is_message_too_large(e: &KafkaOpError) -> bool {
    matches!(e, KafkaOpError::Produce { source, .. }
        if source.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge))
}

/// Outermost layer: refuses over-long request targets with 414, answers a panic of any
/// handler with 500 (and counts it), and gives every error answer that has no body of
/// its own (405 from the router, limits of inner layers) the JSON shape.
pub async fn guard(request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let response = match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            metrics::counter!(m::API_PANICS).increment(1);
            tracing::error!(panic = panic_message(&*panic), "API handler panicked");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error; see the server's log",
            )
            .into_response();
        }
    };
    with_json_body(response)
}

fn with_json_body(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let body = ErrorBody {
        code: ErrorCode::for_status(status),
        error: message,
        parameter: None,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn boom() -> &'static str {
        panic!("index out of bounds")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_json_shape_and_the_server_lives() {
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(guard));
        let base = serve(app).await;
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let r = client.get(format!("{base}/boom")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body: ErrorBody = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(body.code, ErrorCode::Internal);
            assert!(
                !body.error.contains("index out of bounds"),
                "no internal text"
            );
        }
        let r = client.get(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // 405 from the router gets the shape too, keeping its `Allow` header.
        let r = client.post(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers().contains_key(header::ALLOW));
        let body: ErrorBody = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body.code, ErrorCode::MethodNotAllowed);
    }

    #[test]
    fn every_code_is_in_the_specification() {
        let doc = include_str!("../../docs/openapi.yaml");
        for code in [
            ErrorCode::InvalidParameter,
            ErrorCode::InvalidBody,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::TaskNotFound,
            ErrorCode::UnknownTenant,
            ErrorCode::UnknownFunction,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Ambiguous,
            ErrorCode::TaskEnded,
            ErrorCode::RecordGone,
            ErrorCode::UnknownTopic,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UriTooLong,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(
                doc.contains(&format!("        - {}\n", code.as_str())),
                "{code:?}"
            );
        }
    }
}
