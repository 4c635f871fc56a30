//! A server span per API request (OpenTelemetry HTTP conventions) when traces are on;
//! the request's own `traceparent` is its parent. A task submitted in the request carries
//! the context of a `send` span under it.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::names::headers as h;
use crate::otel;

/// The middleware: passes the request through untouched when traces are off.
pub(super) async fn traced(req: Request, next: Next) -> Response {
    if !otel::enabled() {
        return next.run(req).await;
    }
    let span = server_span(&req);
    let resp = next.run(req).instrument(span.clone()).await;
    otel::finish_http(&span, Some(resp.status().as_u16()), true);
    resp
}

fn server_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    otel::http_server_span(
        req.method().as_str(),
        route,
        header(h::TRACEPARENT),
        header(h::TRACESTATE),
    )
}
