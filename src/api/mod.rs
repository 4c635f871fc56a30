//! The task query API of `tidewater serve`: task status, history and logs from the
//! [store](crate::store), queue backlogs from Kafka, task submission and stop requests.
//! `docs/openapi.yaml` describes every route.
//!
//! Every route under `/v1` needs `Authorization: Bearer <token>` with a token from
//! `[api] tokens`. A tenant's token sees, submits and stops only that tenant's tasks: a
//! task of another tenant answers 404, exactly like a task that does not exist, so ids do
//! not leak. `/healthz` and `/readyz` need no token.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::codec::{self, JsonTask, StopRequest};
use crate::config::{Config, ConfigError, Principal, ResolvedToken, check_name};
use crate::kafka::{self, KafkaOpError};
use crate::names::{headers as h, topics};
use crate::store::indexer::{Indexer, IndexerError, IndexerStatus};
use crate::store::model::{PartitionBacklog, QueueKind, QueueView, QueuesOverview, TaskLogs};
use crate::store::query::TaskFilter;
use crate::store::{Lookup, Reader, StoreError};
use crate::submit::Submitter;
use crate::types::TopicPartition;

mod console;
mod error;
pub mod records;
pub mod redrive;
pub mod tls;
mod trace;
mod whoami;

pub use error::{ApiError, ErrorBody, ErrorCode, MAX_URI_BYTES};
pub use records::TaskRecord;
pub use redrive::{RedriveAction, RedriveItem, RedriveReport, RedriveRequest, SkipReason};
pub use whoami::WhoAmI;

/// Why `tidewater serve` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configuration value is unusable (an unset `token_env` variable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The indexer failed.
    #[error(transparent)]
    Indexer(#[from] IndexerError),
    /// A Kafka client could not be created.
    #[error(transparent)]
    Kafka(#[from] KafkaOpError),
    /// The HTTP server failed.
    #[error("API server: {0}")]
    Http(std::io::Error),
    /// TLS for the API could not be set up.
    #[error(transparent)]
    Tls(Box<tls::TlsSetupError>),
}

/// What the handlers share.
pub struct ApiState {
    config: Arc<Config>,
    reader: Arc<Reader>,
    tokens: Vec<ResolvedToken>,
    submitter: Submitter,
    producer: FutureProducer,
    /// Reads the scheduler group's committed offsets (last stable) and the watermarks.
    group_reader: Arc<Mutex<crate::scale::lag::GroupReader>>,
    indexer: Arc<IndexerStatus>,
    /// Reads task records back by position (payload previews, redrives).
    records: Arc<records::RecordReader>,
    /// What this process's redrives submitted, until the index has read it back; also
    /// runs one redrive at a time.
    recent_redrives: tokio::sync::Mutex<redrive::RecentRedrives>,
}

impl ApiState {
    /// State for a server reading `reader`, with the indexer's progress for `/readyz`.
    pub fn new(
        config: Arc<Config>,
        reader: Arc<Reader>,
        indexer: Arc<IndexerStatus>,
    ) -> Result<Self, ServeError> {
        let tokens = config.api.resolve_tokens()?;
        // The last stable offsets: an overview must answer while a scheduler's open
        // transaction holds the group's newest offsets pending.
        let group_reader = crate::scale::lag::GroupReader::stable(&config)?;
        Ok(Self {
            submitter: Submitter::new(config.clone(), codec::Encoding::Avro)?,
            producer: kafka::producer(&config)?,
            group_reader: Arc::new(Mutex::new(group_reader)),
            records: Arc::new(records::RecordReader::new(&config)?),
            recent_redrives: tokio::sync::Mutex::new(redrive::RecentRedrives::default()),
            config,
            reader,
            tokens,
            indexer,
        })
    }

    fn auth(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let unauthorized = ApiError::unauthorized;
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
        let given = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
        // Compare with every token, in time independent of where they differ.
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(t.secret.as_bytes(), given.as_bytes()) {
                found = Some(t.principal.clone());
            }
        }
        found.ok_or_else(|| unauthorized("unknown token"))
    }

    /// Finds a task the principal may see; `tenant` is the optional `tenant` parameter.
    /// The caller and the task `id` names, for routes whose only parameter is `tenant`.
    async fn caller_and_task(
        &self,
        headers: &HeaderMap,
        id: &str,
        q: Params,
    ) -> Result<(Principal, crate::store::model::TaskView), ApiError> {
        let who = self.auth(headers)?;
        let params = params(q)?;
        let map = only(&params, &["tenant"])?;
        let task = self.lookup(&who, tenant_param(&map)?, id).await?;
        Ok((who, task))
    }

    async fn lookup(
        &self,
        who: &Principal,
        tenant: Option<String>,
        id: &str,
    ) -> Result<crate::store::model::TaskView, ApiError> {
        let scope = match (who, tenant) {
            (Principal::Tenant(own), Some(asked)) if asked != *own => {
                return Err(ApiError::task_not_found(id));
            }
            (Principal::Tenant(own), _) => Some(own.clone()),
            (Principal::Admin, asked) => asked,
        };
        let reader = self.reader.clone();
        let key = id.to_string();
        match blocking(move || reader.get(scope.as_deref(), &key)).await? {
            Lookup::Found(t) => Ok(*t),
            Lookup::NotFound => Err(ApiError::task_not_found(id)),
            Lookup::Ambiguous(tenants) => Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Ambiguous,
                format!(
                    "task id `{id}` is used by several tenants ({}); pass `tenant`",
                    tenants.join(", ")
                ),
            )
            .at("tenant")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(&format_args!(
            "query worker failed: {e}"
        ))),
    }
}

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn params(q: Params) -> Result<Vec<(String, String)>, ApiError> {
    Ok(q.map(|Query(v)| v)?)
}

/// The task id of the path, refused with the JSON shape when it is not UTF-8.
fn task_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    Ok(path.map(|Path(id)| id)?)
}

/// The optional `tenant` parameter of the task routes: a tenant name when given.
fn tenant_param(map: &BTreeMap<&str, &str>) -> Result<Option<String>, ApiError> {
    match map.get("tenant") {
        None => Ok(None),
        Some(t) => {
            check_name(t)
                .map_err(|m| ApiError::bad("tenant", format!("not a tenant name: {m}")))?;
            Ok(Some(t.to_string()))
        }
    }
}

/// Checks that only `known` parameters are present, at most once each.
fn only<'a>(
    params: &'a [(String, String)],
    known: &[&str],
) -> Result<BTreeMap<&'a str, &'a str>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in params {
        if !known.contains(&k.as_str()) {
            let hint = if known.is_empty() {
                "this route takes no parameters".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            return Err(ApiError::bad(k, format!("unknown parameter ({hint})")));
        }
        if out.insert(k.as_str(), v.as_str()).is_some() {
            return Err(ApiError::bad(k, "given more than once"));
        }
    }
    Ok(out)
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    map: &BTreeMap<&str, &str>,
    name: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    match map.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| *n >= min && *n <= max)
            .ok_or_else(|| {
                ApiError::bad(name, format!("must be a whole number from {min} to {max}"))
            }),
    }
}

/// The routes, with the size limits of `[api]`.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    let api = state.config.api.clone();
    let routes = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/tasks", get(list_tasks).post(submit_task))
        // A task may be called `redrive`: GET of that path is the task.
        .route(
            "/v1/tasks/redrive",
            get(get_task_named_redrive).post(redrive::redrive),
        )
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/logs", get(task_logs))
        .route("/v1/tasks/{id}/record", get(records::task_record))
        .route("/v1/tasks/{id}/stop", post(stop_task))
        .route("/v1/queues", get(queues))
        .route("/v1/whoami", get(whoami::whoami))
        .route_layer(axum::middleware::from_fn(trace::traced))
        .merge(console::routes())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .with_state(state);
    // The guard is outermost: the size limits' answers get the JSON shape too.
    tls::with_limits(routes, &api).layer(axum::middleware::from_fn(error::guard))
}

async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    if let Some(e) = s.indexer.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": e})),
        )
            .into_response();
    }
    if let Some(e) = s.indexer.kafka_unreachable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": format!("cannot reach Kafka: {e}"), "records_indexed": s.indexer.records()})),
        )
            .into_response();
    }
    if s.indexer.is_ready() {
        (
            StatusCode::OK,
            Json(json!({"ready": true, "records_indexed": s.indexer.records()})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "partitions_behind": s.indexer.partitions_behind(),
                "records_indexed": s.indexer.records(),
            })),
        )
            .into_response()
    }
}

async fn list_tasks(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    let params = params(q)?;
    let mut filter = TaskFilter::from_params(&params, now_ms())?;
    filter.scope = who.scope().map(str::to_string);
    let reader = s.reader.clone();
    let page = blocking(move || reader.list(&filter)).await?;
    Ok(Json(page).into_response())
}

async fn get_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result<Response, ApiError> {
    let id = task_id(id)?;
    task_detail(&s, &headers, &id, q).await
}

async fn get_task_named_redrive(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    task_detail(&s, &headers, "redrive", q).await
}

async fn task_detail(
    s: &ApiState,
    headers: &HeaderMap,
    id: &str,
    q: Params,
) -> Result<Response, ApiError> {
    let (_, task) = s.caller_and_task(headers, id, q).await?;
    let reader = s.reader.clone();
    let detail = blocking(move || reader.detail(task)).await?;
    Ok(Json(detail).into_response())
}

/// Most log chunks one request returns.
const MAX_LOG_LIMIT: u32 = 10_000;

async fn task_logs(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    let id = task_id(id)?;
    let params = params(q)?;
    let map = only(&params, &["tenant", "after", "limit"])?;
    let limit = number(&map, "limit", 1000u32, 1, MAX_LOG_LIMIT)?;
    let after = match map.get("after") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad("after", "must be a `seq` from an earlier answer"))?,
        ),
    };
    let task = s.lookup(&who, tenant_param(&map)?, &id).await?;
    let reader = s.reader.clone();
    let (tenant, task_id) = (task.tenant.clone(), task.id.clone());
    let logs = blocking(move || reader.logs(&tenant, &task_id, after, limit)).await?;
    let next_after = (logs.len() == limit as usize)
        .then(|| logs.last().map(|l| l.seq))
        .flatten();
    Ok(Json(TaskLogs {
        task_id: task.id,
        tenant: task.tenant,
        logs,
        next_after,
    })
    .into_response())
}

/// The body of `POST /v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Tenant; a tenant token may leave it out (or must name its own tenant), an admin
    /// token must give it. Not `null`: left out or a name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub tenant: Option<String>,
    /// Function to run.
    pub function: String,
    /// Task id; a new ULID when left out. Not `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub id: Option<String>,
    /// Payload: a string is passed as its UTF-8 bytes, other JSON as compact JSON text
    /// (as for JSON tasks on a queue topic).
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Free-form headers carried to the outcome event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// An optional field that, when present, must be a string (the specification has no
/// `null` for it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// The answer of `POST /v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    /// Task id.
    pub id: String,
    pub tenant: String,
    pub function: String,
    /// Queue topic.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Longest task id accepted by `POST /v1/tasks`, in characters.
pub const MAX_ID_LEN: usize = 1024;

async fn submit_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    let Json(req) = body?;
    let tenant = match (&who, &req.tenant) {
        (Principal::Tenant(own), Some(asked)) if asked != own => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!("this token may submit tasks for tenant `{own}` only"),
            )
            .at("tenant"));
        }
        (Principal::Tenant(own), _) => own.clone(),
        (Principal::Admin, Some(t)) => t.clone(),
        (Principal::Admin, None) => {
            return Err(ApiError::bad(
                "tenant",
                "an admin token must name the tenant",
            ));
        }
    };
    check_name(&tenant).map_err(|m| ApiError::bad("tenant", format!("not a tenant name: {m}")))?;
    check_name(&req.function)
        .map_err(|m| ApiError::bad("function", format!("not a function name: {m}")))?;
    let id = match req.id {
        None => ulid::Ulid::new().to_string(),
        Some(id) if !valid_task_id(&id) => {
            return Err(ApiError::bad(
                "id",
                format!("must be 1 to {MAX_ID_LEN} characters, none of them a control character"),
            ));
        }
        Some(id) => id,
    };
    let task: codec::Task = JsonTask {
        id: Some(id.clone()),
        tenant: Some(tenant.clone()),
        function: req.function.clone(),
        payload: req.payload,
        headers: req.headers,
        submitted_at: Some(now_ms()),
        not_before: None,
    }
    .into();
    let topic = s.submitter.topic_for(&tenant, &task.function)?;
    // The scheduler would fail an oversized task with `payload_too_large`: say so now.
    if let Some(f) = s.config.function(&tenant, &task.function) {
        let max = s.config.max_payload(f);
        if task.payload.len() > max {
            return Err(ApiError::too_large(
                "payload",
                format!(
                    "payload of {} bytes is over the limit of {max} bytes of function `{}`",
                    task.payload.len(),
                    task.function
                ),
            ));
        }
    }
    let (partition, offset) = s.submitter.submit(&tenant, &task).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            id,
            tenant,
            function: task.function,
            topic,
            partition,
            offset,
        }),
    )
        .into_response())
}

/// A task id a client may choose: 1 to [`MAX_ID_LEN`] characters, no control characters.
fn valid_task_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// The answer of `POST /v1/tasks/{id}/stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopAccepted {
    /// Task id.
    pub task_id: String,
    pub tenant: String,
    /// The topic the request was recorded on.
    pub topic: String,
    /// What happens next.
    pub note: String,
}

async fn stop_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result<Response, ApiError> {
    let id = task_id(id)?;
    let (who, task) = s.caller_and_task(&headers, &id, q).await?;
    if task.status.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::TaskEnded,
            format!("task `{id}` has already ended: {}", task.status.as_str()),
        ));
    }
    let req = StopRequest {
        task_id: task.id.clone(),
        tenant: task.tenant.clone(),
        requested_at: now_ms(),
        requested_by: who.name().to_string(),
    };
    let value = codec::encode_stop_request(&req).map_err(|e| ApiError::internal(&e))?;
    let topic = topics::control(&s.config.topics.prefix);
    kafka::send(
        &s.producer,
        &topic,
        &req.task_id,
        &value,
        kafka::headers([
            (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO),
            (h::EVENT, h::EVENT_STOP),
            (h::TASK_ID, req.task_id.as_str()),
            (h::TENANT, req.tenant.as_str()),
        ]),
    )
    .await
    .map_err(|e| ApiError::unavailable("Kafka did not acknowledge the stop request", &e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StopAccepted {
            task_id: req.task_id,
            tenant: req.tenant,
            topic,
            note: "stop request recorded; schedulers that support stop requests act on it".into(),
        }),
    )
        .into_response())
}

async fn queues(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    let params = params(q)?;
    let map = only(&params, &["minutes"])?;
    let minutes = number(&map, "minutes", 60u32, 1, 1440)?;
    let prefix = s.config.topics.prefix.clone();
    let scope = who.scope().map(str::to_string);
    let topics: Vec<(String, topics::QueueTopic)> = s
        .config
        .queue_topics()
        .into_iter()
        .filter_map(|t| topics::parse_queue(&prefix, &t).map(|q| (t, q)))
        .filter(|(_, q)| scope.as_ref().is_none_or(|s| *s == q.tenant))
        .collect();
    let now = now_ms();
    let (start, _) = crate::store::query::minute_window(now, minutes);
    let reader = s.reader.clone();
    let scope2 = scope.clone();
    let (running, activity, schedulers) = blocking(move || {
        Ok((
            reader.running_by_partition(scope2.as_deref())?,
            reader.activity(scope2.as_deref(), now, minutes)?,
            reader.schedulers_since(scope2.as_deref(), start)?,
        ))
    })
    .await?;
    let group = s.group_reader.clone();
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let marks = tokio::task::spawn_blocking(move || {
        let reader = group.lock().unwrap_or_else(|p| p.into_inner());
        reader.read(&names, Duration::from_secs(10))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| {
        ApiError::unavailable("Kafka did not answer the offset and watermark queries", &e)
    })?;
    let mut activity = activity;
    let queues = topics
        .into_iter()
        .map(|(topic, q)| {
            let partitions: Vec<PartitionBacklog> = marks
                .iter()
                .filter(|m| m.topic == topic)
                .map(|m| PartitionBacklog {
                    partition: m.partition,
                    high_watermark: m.high,
                    low_watermark: m.low,
                    committed: m.committed,
                    backlog: m.backlog(),
                    running: running
                        .get(&TopicPartition::new(topic.clone(), m.partition))
                        .copied()
                        .unwrap_or(0),
                })
                .collect();
            let per_minute = activity.remove(&topic).unwrap_or_else(|| {
                (0..minutes)
                    .map(|i| crate::store::model::MinuteCounts {
                        minute: start + i64::from(i) * 60_000,
                        ..Default::default()
                    })
                    .collect()
            });
            let kind = match q.function.as_deref() {
                None => QueueKind::Shared,
                Some(f) if s.config.overflow_topic(&q.tenant, f).is_some() => QueueKind::Overflow,
                Some(_) => QueueKind::Exclusive,
            };
            QueueView {
                kind,
                backlog: partitions.iter().map(|p| p.backlog).sum(),
                running: partitions.iter().map(|p| p.running).sum(),
                topic,
                tenant: q.tenant,
                function: q.function,
                partitions,
                per_minute,
            }
        })
        .collect();
    Ok(Json(QueuesOverview {
        generated_at: now,
        group_id: s.config.group_id(),
        queues,
        schedulers,
    })
    .into_response())
}

/// Runs `tidewater serve` on `listener`: the indexer on a thread of its own and the API,
/// until `shutdown` (or until the indexer fails).
pub async fn run(
    config: Arc<Config>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    if config.api.tokens.is_empty() {
        tracing::warn!("no [api] tokens configured: every /v1 request will be refused");
    }
    let indexer = Indexer::open(config.clone())?;
    let status = indexer.status();
    let reader = Arc::new(Reader::open(&config.indexer.store)?);
    let state = Arc::new(ApiState::new(config.clone(), reader, status)?);
    let stop_indexer = shutdown.child_token();
    let thread = indexer.spawn(stop_indexer.clone())?;
    let app = router(state);
    let http_stop = shutdown.clone();
    let tls = tls::acceptor(&config.api).map_err(|e| ServeError::Tls(Box::new(e)))?;
    let server = tokio::spawn(async move {
        let stop = async move { http_stop.cancelled().await };
        match tls {
            Some(acceptor) => {
                let tls = tls::TlsListener::new(listener, acceptor)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                axum::serve(tls, app).with_graceful_shutdown(stop).await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        }
    });
    let indexer_done = tokio::task::spawn_blocking(move || {
        thread
            .join()
            .unwrap_or_else(|_| Err(IndexerError::Thread("the indexer thread panicked".into())))
    });
    let indexed = indexer_done
        .await
        .unwrap_or_else(|e| Err(IndexerError::Thread(e.to_string())));
    // The indexer returns when asked to stop, or on a failure: stop the API either way.
    shutdown.cancel();
    let served = server.await;
    indexed?;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServeError::Http(e)),
        Err(e) => Err(ServeError::Http(std::io::Error::other(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = include_str!("../../docs/openapi.yaml");
        for route in [
            "/healthz:",
            "/readyz:",
            "/v1/tasks:",
            "/v1/tasks/{id}:",
            "/v1/tasks/{id}/logs:",
            "/v1/tasks/{id}/stop:",
            "/v1/tasks/{id}/record:",
            "/v1/tasks/redrive:",
            "/v1/queues:",
            "/v1/whoami:",
        ] {
            assert!(doc.contains(&format!("\n  {route}\n")), "{route}");
        }
        for p in crate::store::query::LIST_PARAMS {
            assert!(
                doc.contains(&format!("name: {p}\n")) || doc.contains(&format!("name: {p},")),
                "{p}"
            );
        }
    }

    #[test]
    fn tokens_compare_in_full() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
