//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when
//! `telemetry.otlp_endpoint` is set. Spans are `tracing` spans of the target [`TARGET`],
//! turned into OpenTelemetry spans by `tracing-opentelemetry`; when tracing is off, no
//! layer is installed and every function here returns a disabled span at once, so it
//! costs a branch per task.
//!
//! Span names and attributes follow the OpenTelemetry semantic conventions for messaging
//! (Kafka) and HTTP: a task is a consumer `process` span, child of the submitter's
//! `traceparent` when the record has one; each attempt is its child; an HTTP function call
//! is a client span under the attempt, and its context is what the function receives.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;
use crate::names::headers as h;

/// The `tracing` target of every span exported as an OpenTelemetry span. Log output
/// leaves these spans out.
pub const TARGET: &str = "tidewater::otel";

static ON: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported in this process.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// Where spans were to go.
        endpoint: String,
        /// Why not.
        reason: String,
    },
    /// Tracing needs the async runtime (the exporter's HTTP calls run on it).
    #[error("OpenTelemetry tracing must start inside the async runtime")]
    NoRuntime,
}

/// The tracer of this process, when `telemetry.otlp_endpoint` is set: spans go to
/// `<endpoint>/v1/traces` in batches (bounded queue; spans beyond it are dropped, never
/// held). `component` names the process in the default service name.
pub(crate) fn tracer(
    cfg: &TelemetryConfig,
    component: &str,
) -> Result<Option<opentelemetry_sdk::trace::Tracer>, TraceError> {
    let Some(endpoint) = cfg.otlp_traces_url() else {
        return Ok(None);
    };
    let rt = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
    let fail = |reason: String| TraceError::Exporter {
        endpoint: endpoint.clone(),
        reason,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .with_http_client(Exporting { http, rt })
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let service = cfg
        .service_name
        .clone()
        .unwrap_or_else(|| format!("tidewater-{component}"));
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            crate::clock::default_instance_id(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.trace_sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("tidewater");
    if PROVIDER.set(provider).is_ok() {
        ON.store(true, Ordering::Relaxed);
    }
    Ok(Some(tracer))
}

/// Sends the spans still queued (waits up to the exporter's timeout). Call once, at the
/// end of the process, outside the async runtime's worker threads.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = provider.shutdown() {
            eprintln!("warning: traces not all sent: {e}");
        }
    }
}

/// The exporter's HTTP client: the process's reqwest on its tokio runtime (the batch
/// exporter's thread waits for the call; the call itself runs on the runtime).
#[derive(Debug)]
struct Exporting {
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
}

/// An OTLP collector's answer is small; a larger one is cut here.
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for Exporting {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let call = self.rt.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut answer = Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                answer = answer.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                let room = MAX_COLLECTOR_ANSWER.saturating_sub(body.len());
                body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if chunk.len() > room {
                    break;
                }
            }
            Ok::<_, HttpError>(answer.body(Bytes::from(body))?)
        });
        call.await?
    }
}

/// W3C trace context of a span: (`traceparent`, `tracestate`), or nothing for a disabled
/// span.
pub fn context_headers(span: &Span) -> Option<(String, Option<String>)> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some((carrier.traceparent?, carrier.tracestate))
}

/// Makes `span` the child of the remote context in `traceparent` (and `tracestate`);
/// without a valid one, the span starts a new trace.
fn continue_remote(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = Carrier {
        traceparent: Some(tp.to_string()),
        tracestate: tracestate.map(str::to_string),
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only for a disabled span or one already started: nothing to continue then.
        let _ = span.set_parent(cx);
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(h::TRACEPARENT) {
            self.traceparent = Some(value);
        } else if key.eq_ignore_ascii_case(h::TRACESTATE) {
            self.tracestate = Some(value).filter(|v| !v.is_empty());
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(h::TRACEPARENT) {
            self.traceparent.as_deref()
        } else if key.eq_ignore_ascii_case(h::TRACESTATE) {
            self.tracestate.as_deref()
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![h::TRACEPARENT, h::TRACESTATE]
    }
}

/// Where a consumed record came from, for a `process` span.
pub struct Consumed<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Consumer group.
    pub group: &'a str,
    /// Its `traceparent` header.
    pub traceparent: Option<&'a str>,
    /// Its `tracestate` header.
    pub tracestate: Option<&'a str>,
}

/// A consumer `process` span for one record (OpenTelemetry messaging conventions),
/// continuing the record's trace context.
pub fn process_span(rec: &Consumed<'_>, task_id: &str, tenant: &str, function: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "process",
        otel.name = format!("process {}", rec.topic),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = rec.topic,
        messaging.destination.partition.id = rec.partition.to_string(),
        messaging.kafka.offset = rec.offset,
        messaging.consumer.group.name = rec.group,
        messaging.message.id = task_id,
        tidewater.task.id = task_id,
        tidewater.tenant = tenant,
        tidewater.function = function,
        tidewater.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    continue_remote(&span, rec.traceparent, rec.tracestate);
    span
}

/// Records how a task ended on its `process` span.
pub fn finish_process(span: &Span, outcome: &str, failure: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    span.record("tidewater.outcome", outcome);
    if let Some(reason) = failure {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", reason);
    }
}

/// An attempt of a task: child of its `process` span.
pub fn attempt_span(process: &Span, function: &str, attempt: u32) -> Span {
    if process.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: process,
        "attempt",
        otel.name = format!("attempt {function}"),
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        tidewater.function = function,
        tidewater.attempt = attempt,
        tidewater.attempt.result = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records an attempt's result (`success`, `failure`, `timeout`, `stopped`).
pub fn finish_attempt(span: &Span, result: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("tidewater.attempt.result", result);
    if result != "success" {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", result);
    }
}

/// An outbound HTTP call (client span) under `parent`. `url` must not carry credentials:
/// only scheme, host, port and path are recorded.
pub fn http_client_span(parent: &Span, method: &str, url: &reqwest::Url) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    let port = url.port_or_known_default().map_or(0, i64::from);
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "http",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        server.address = url.host_str().unwrap_or_default(),
        server.port = port,
        url.full = format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path()),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records an HTTP answer (or the failure to get one) on a client or server span.
pub fn finish_http(span: &Span, status: Option<u16>, server: bool) {
    if span.is_disabled() {
        return;
    }
    match status {
        Some(code) => {
            span.record("http.response.status_code", code);
            // Client spans fail on 4xx and 5xx, server spans only on 5xx (the conventions).
            if code >= 500 || (!server && code >= 400) {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", code.to_string());
            }
        }
        None => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", "connection");
        }
    }
}

/// A server span for an API request, continuing the caller's trace context.
pub fn http_server_span(
    method: &str,
    route: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    continue_remote(&span, traceparent, tracestate);
    span
}

/// A producer `send` span for a record written to `topic`: a child of the current span
/// (an API request's, say), or the root of a new trace.
pub fn send_span(topic: &str, task_id: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.message.id = task_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_disabled_and_free_when_tracing_is_off() {
        assert!(!enabled());
        let rec = Consumed {
            topic: "tw.q.t",
            partition: 0,
            offset: 1,
            group: "g",
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: None,
        };
        let span = process_span(&rec, "id", "t", "f");
        assert!(span.is_disabled());
        assert!(attempt_span(&span, "f", 1).is_disabled());
        assert_eq!(context_headers(&span), None);
    }

    #[test]
    fn carrier_reads_back_what_was_injected() {
        let mut c = Carrier::default();
        c.set("traceparent", "00-ab-cd-01".into());
        c.set("tracestate", String::new());
        assert_eq!(c.get("TraceParent"), Some("00-ab-cd-01"));
        assert_eq!(c.get("tracestate"), None);
        c.set("tracestate", "k=v".into());
        assert_eq!(c.get("tracestate"), Some("k=v"));
        assert_eq!(c.get("other"), None);
    }
}
