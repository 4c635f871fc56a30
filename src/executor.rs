//! Executors: what runs a task. `http` POSTs the payload to a URL, `command` runs a program
//! with the payload on stdin, `inprocess` calls a handler registered in this process.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::ExecutorConfig;
use crate::names::{env as envs, headers};

/// One call of a function.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Task id, also the idempotency key.
    pub task_id: String,
    /// Tenant.
    pub tenant: String,
    /// Function.
    pub function: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The payload.
    pub payload: Arc<Vec<u8>>,
    /// W3C trace context the function continues, when there is one: the attempt's span
    /// with traces on, else the task's own `traceparent`.
    pub traceparent: Option<String>,
    /// W3C trace state that goes with `traceparent`.
    pub tracestate: Option<String>,
    /// The task's headers (a `content-type` here is sent on to HTTP functions).
    pub headers: Arc<BTreeMap<String, String>>,
    /// The attempt's OpenTelemetry span (disabled when traces are off): an HTTP call is a
    /// client span under it.
    pub span: tracing::Span,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The function reported failure.
    #[error("{message}")]
    Failed {
        /// What happened, bounded in size.
        message: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The attempt ran over the function's timeout and was cancelled.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl ExecError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Failed { retryable, .. } => *retryable,
            Self::Timeout(_) => true,
        }
    }

    fn retryable_failure(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            retryable: true,
        }
    }
}

/// An in-process handler: receives the invocation, returns the result bytes or an error.
pub type Handler =
    Arc<dyn Fn(Invocation) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// Handlers by name, for `inprocess` executors.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<String, Handler>);

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in handlers: `noop` (empty result), `echo` (the payload back) and `fail`
    /// (always fails, retryable).
    pub fn builtin() -> Self {
        let mut h = Self::new();
        h.register("noop", |_| async { Ok(Vec::new()) });
        h.register("echo", |inv: Invocation| async move {
            Ok(inv.payload.as_ref().clone())
        });
        h.register("fail", |inv: Invocation| async move {
            Err(format!("handler `fail` failed attempt {}", inv.attempt))
        });
        h
    }

    /// Registers a handler under a name, replacing any previous one.
    pub fn register<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn(Invocation) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        self.0.insert(
            name.to_string(),
            Arc::new(move |inv| Box::pin(f(inv)) as BoxFuture<'static, _>),
        );
    }

    /// A handler by name.
    pub fn get(&self, name: &str) -> Option<Handler> {
        self.0.get(name).cloned()
    }
}

/// A configured executor, ready to run attempts.
#[derive(Clone)]
pub enum Executor {
    /// POST to a URL.
    Http {
        /// Shared client (connection pool).
        client: reqwest::Client,
        /// Target.
        url: reqwest::Url,
        /// Extra headers.
        headers: reqwest::header::HeaderMap,
        /// 4xx answers are final.
        non_retryable_4xx: bool,
    },
    /// Run a program.
    Command {
        /// Program.
        program: String,
        /// Arguments.
        args: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
        /// Output kept per stream.
        max_output: usize,
        /// Exit codes that are final.
        non_retryable_exit_codes: Vec<i32>,
    },
    /// Call a registered handler.
    InProcess(Handler),
}

/// Why an executor cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorBuildError {
    /// The named handler is not registered.
    #[error("no in-process handler named `{0}` is registered (built in: noop, echo, fail)")]
    UnknownHandler(String),
    /// Bad URL or header.
    #[error("invalid http executor: {0}")]
    Http(String),
}

/// An HTTP client that trusts only the certificate authorities of the PEM file `path`.
pub fn client_trusting(path: &std::path::Path) -> Result<reqwest::Client, ExecutorBuildError> {
    let bad = |why: String| ExecutorBuildError::Http(format!("ca_file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    certs
        .into_iter()
        .fold(
            reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .tls_built_in_root_certs(false),
            |b, c| b.add_root_certificate(c),
        )
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// Largest HTTP response body kept as a result.
const MAX_HTTP_BODY: usize = 1024 * 1024;
/// Largest error text kept from a failed attempt.
const MAX_ERROR_TEXT: usize = 2048;

impl Executor {
    /// Builds an executor. `client` is shared by every HTTP executor of the process that
    /// trusts the system's roots; one with a `ca_file` gets a client of its own that
    /// trusts only the certificate authorities in that file.
    pub fn build(
        cfg: &ExecutorConfig,
        client: &reqwest::Client,
        handlers: &Handlers,
    ) -> Result<Self, ExecutorBuildError> {
        Ok(match cfg {
            ExecutorConfig::Http {
                url,
                headers: extra,
                non_retryable_4xx,
                ca_file,
            } => {
                let client = match ca_file {
                    Some(path) => client_trusting(path)?,
                    None => client.clone(),
                };
                let url = reqwest::Url::parse(url)
                    .map_err(|e| ExecutorBuildError::Http(e.to_string()))?;
                let mut map = reqwest::header::HeaderMap::new();
                for (k, v) in extra {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| ExecutorBuildError::Http(format!("header `{k}`: {e}")))?;
                    let value = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|e| ExecutorBuildError::Http(format!("header `{k}`: {e}")))?;
                    map.insert(name, value);
                }
                Executor::Http {
                    client,
                    url,
                    headers: map,
                    non_retryable_4xx: *non_retryable_4xx,
                }
            }
            ExecutorConfig::Command {
                program,
                args,
                env,
                max_output_bytes,
                non_retryable_exit_codes,
            } => Executor::Command {
                program: program.clone(),
                args: args.clone(),
                env: env.clone(),
                max_output: max_output_bytes.get(),
                non_retryable_exit_codes: non_retryable_exit_codes.clone(),
            },
            ExecutorConfig::Inprocess { handler } => Executor::InProcess(
                handlers
                    .get(handler)
                    .ok_or_else(|| ExecutorBuildError::UnknownHandler(handler.clone()))?,
            ),
        })
    }

    /// Runs one attempt, cancelled at `timeout`.
    pub async fn execute(&self, inv: Invocation, timeout: Duration) -> Result<Vec<u8>, ExecError> {
        self.execute_captured(inv, timeout).await.0
    }

    /// Runs one attempt, cancelled at `timeout`, and returns what it printed: a command's
    /// stdout and stderr, an HTTP function's status line and body (each bounded).
    pub async fn execute_captured(
        &self,
        inv: Invocation,
        timeout: Duration,
    ) -> (Result<Vec<u8>, ExecError>, Vec<Captured>) {
        let mut logs = Vec::new();
        let result = match self {
            Executor::Http {
                client,
                url,
                headers: extra,
                non_retryable_4xx,
            } => {
                // Dropping the request future on timeout aborts the HTTP call.
                // Boxed: the request future is large, and every attempt carries this one.
                tokio::time::timeout(
                    timeout,
                    Box::pin(http_call(
                        client,
                        url,
                        extra,
                        *non_retryable_4xx,
                        &inv,
                        &mut logs,
                    )),
                )
                .await
                .unwrap_or(Err(ExecError::Timeout(timeout)))
            }
            Executor::Command {
                program,
                args,
                env,
                max_output,
                non_retryable_exit_codes,
            } => {
                // Boxed: its read buffers would otherwise sit inline in every attempt.
                Box::pin(run_command(
                    program,
                    args,
                    env,
                    *max_output,
                    non_retryable_exit_codes,
                    &inv,
                    timeout,
                    &mut logs,
                ))
                .await
            }
            Executor::InProcess(handler) => {
                match tokio::time::timeout(timeout, handler(inv)).await {
                    Err(_) => Err(ExecError::Timeout(timeout)),
                    Ok(Ok(result)) => Ok(result),
                    Ok(Err(message)) => Err(ExecError::retryable_failure(bounded_text(
                        message.as_bytes(),
                    ))),
                }
            }
        };
        (result, logs)
    }
}

/// Output captured from one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Which output.
    pub stream: crate::codec::LogStream,
    /// The bytes kept.
    pub data: Vec<u8>,
    /// More was printed than kept.
    pub truncated: bool,
}

fn bounded_text(bytes: &[u8]) -> String {
    let cut = bytes.len().min(MAX_ERROR_TEXT);
    let mut s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if bytes.len() > MAX_ERROR_TEXT {
        s.push('…');
    }
    s
}

async fn http_call(
    client: &reqwest::Client,
    url: &reqwest::Url,
    extra: &reqwest::header::HeaderMap,
    non_retryable_4xx: bool,
    inv: &Invocation,
    logs: &mut Vec<Captured>,
) -> Result<Vec<u8>, ExecError> {
    // Configured headers first; the task's content type and Tidewater's own headers
    // replace any of the same name (insert, not append).
    let mut map = extra.clone();
    let attempt = inv.attempt.to_string();
    // With traces on, the call is a client span and the function continues it.
    let span = crate::otel::http_client_span(&inv.span, "POST", url);
    let (traceparent, tracestate) = match crate::otel::context_headers(&span) {
        Some((tp, ts)) => (Some(tp), ts),
        None => (inv.traceparent.clone(), inv.tracestate.clone()),
    };
    let mut ours = vec![
        (headers::TASK_ID, inv.task_id.as_str()),
        (headers::IDEMPOTENCY_KEY, inv.task_id.as_str()),
        (headers::ATTEMPT, attempt.as_str()),
        (headers::TENANT, inv.tenant.as_str()),
        (headers::FUNCTION, inv.function.as_str()),
    ];
    if let Some(tp) = &traceparent {
        ours.push((headers::TRACEPARENT, tp.as_str()));
        if let Some(ts) = &tracestate {
            ours.push((headers::TRACESTATE, ts.as_str()));
        }
    }
    match inv.headers.get(headers::CONTENT_TYPE) {
        Some(ct) => ours.push((headers::CONTENT_TYPE, ct.as_str())),
        None if !map.contains_key(headers::CONTENT_TYPE) => {
            ours.push((headers::CONTENT_TYPE, "application/octet-stream"));
        }
        None => {}
    }
    for (name, value) in ours {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(value) {
            map.insert(name, v);
        }
    }
    let req = client
        .post(url.clone())
        .headers(map)
        .body(inv.payload.as_ref().clone());
    let mut resp = req.send().await.map_err(|e| {
        crate::otel::finish_http(&span, None, false);
        ExecError::retryable_failure(format!("HTTP request failed: {}", chain(&e)))
    })?;
    let status = resp.status();
    crate::otel::finish_http(&span, Some(status.as_u16()), false);
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_HTTP_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ExecError::retryable_failure(format!(
                    "HTTP {status}: reading the response failed: {e}"
                )));
            }
        }
    }
    let mut shown = format!("HTTP {}\n", status.as_u16()).into_bytes();
    shown.extend_from_slice(&body);
    logs.push(Captured {
        stream: crate::codec::LogStream::HttpResponse,
        data: shown,
        truncated: body.len() >= MAX_HTTP_BODY,
    });
    if status.is_success() {
        return Ok(body);
    }
    let final_4xx = non_retryable_4xx
        && status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
    Err(ExecError::Failed {
        message: format!("HTTP {}: {}", status.as_u16(), bounded_text(&body)),
        retryable: !final_4xx,
    })
}

/// An error with its causes, `outer: inner: …`, so that a TLS failure says why (an
/// unknown issuer, an expired certificate) instead of only "error sending request".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads a stream to its end, keeping at most `limit` bytes.
async fn read_bounded(mut r: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// Kills the child's process group when dropped: an attempt cancelled from outside (stop
/// request, shutdown) leaves no process behind.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child leads its own process group: this reaches its children too.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_command(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    max_output: usize,
    non_retryable_exit_codes: &[i32],
    inv: &Invocation,
    timeout: Duration,
    logs: &mut Vec<Captured>,
) -> Result<Vec<u8>, ExecError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env)
        .env(envs::TASK_ID, &inv.task_id)
        .env(envs::ATTEMPT, inv.attempt.to_string())
        .env(envs::TENANT, &inv.tenant)
        .env(envs::FUNCTION, &inv.function)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(tp) = &inv.traceparent {
        cmd.env(envs::TRACEPARENT, tp);
    }
    let mut child = cmd.spawn().map_err(|e| ExecError::Failed {
        message: format!("cannot start `{program}`: {e}"),
        retryable: false,
    })?;
    let pid = child.id();
    let _guard = GroupGuard(pid);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let payload = inv.payload.clone();
    let run = async {
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input is not an error.
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            }
        };
        let out = async {
            match stdout {
                Some(s) => read_bounded(s, max_output).await,
                None => (Vec::new(), false),
            }
        };
        let err = async {
            match stderr {
                Some(s) => read_bounded(s, max_output).await,
                None => (Vec::new(), false),
            }
        };
        let ((), (out, out_cut), (err, err_cut)) = tokio::join!(feed, out, err);
        let status = child.wait().await;
        for (stream, data, truncated) in [
            (crate::codec::LogStream::Stdout, &out, out_cut),
            (crate::codec::LogStream::Stderr, &err, err_cut),
        ] {
            if !data.is_empty() {
                logs.push(Captured {
                    stream,
                    data: data.clone(),
                    truncated,
                });
            }
        }
        (status, out, err)
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            kill_group(pid);
            Err(ExecError::Timeout(timeout))
        }
        Ok((Err(e), _, _)) => {
            kill_group(pid);
            Err(ExecError::retryable_failure(format!(
                "waiting for `{program}` failed: {e}"
            )))
        }
        Ok((Ok(status), out, err)) => {
            // Children the program left behind do not outlive the attempt.
            kill_group(pid);
            if status.success() {
                return Ok(out);
            }
            let code = status.code();
            let how = match code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".to_string(),
            };
            let detail = bounded_text(if err.is_empty() { &out } else { &err });
            Err(ExecError::Failed {
                message: format!("`{program}` failed with {how}: {}", detail.trim_end()),
                retryable: !code.is_some_and(|c| non_retryable_exit_codes.contains(&c)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    fn inv(payload: &[u8]) -> Invocation {
        Invocation {
            task_id: "t-1".into(),
            tenant: "acme".into(),
            function: "f".into(),
            attempt: 2,
            payload: Arc::new(payload.to_vec()),
            traceparent: None,
            tracestate: None,
            headers: Arc::default(),
            span: tracing::Span::none(),
        }
    }

    fn command(program: &str, args: &[&str], limit: usize, final_codes: Vec<i32>) -> Executor {
        Executor::build(
            &ExecutorConfig::Command {
                program: program.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                env: BTreeMap::new(),
                max_output_bytes: NonZeroUsize::new(limit).unwrap(),
                non_retryable_exit_codes: final_codes,
            },
            &reqwest::Client::new(),
            &Handlers::builtin(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn command_gets_payload_and_environment() {
        let e = command(
            "sh",
            &["-c", "printf '%s|%s|' \"$TW_TASK_ID\" \"$TW_ATTEMPT\"; cat"],
            1024,
            vec![],
        );
        let out = e.execute(inv(b"hello"), Duration::from_secs(10)).await;
        assert_eq!(out.unwrap(), b"t-1|2|hello");
    }

    #[tokio::test]
    async fn command_output_is_bounded() {
        let e = command("sh", &["-c", "head -c 100000 /dev/zero"], 1000, vec![]);
        let out = e.execute(inv(b""), Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.len(), 1000);
    }

    #[tokio::test]
    async fn command_failure_carries_stderr_and_retryability() {
        let e = command("sh", &["-c", "echo broken >&2; exit 3"], 1024, vec![3]);
        let err = e
            .execute(inv(b""), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exit code 3"), "{err}");
        assert!(err.to_string().contains("broken"), "{err}");
        assert!(!err.retryable());
        let e = command("sh", &["-c", "exit 4"], 1024, vec![3]);
        assert!(
            e.execute(inv(b""), Duration::from_secs(10))
                .await
                .unwrap_err()
                .retryable()
        );
        let e = command("/nonexistent/program", &[], 1024, vec![]);
        let err = e
            .execute(inv(b""), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
    }

    #[tokio::test]
    async fn command_timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let e = command("sh", &["-c", &script], 1024, vec![]);
        let err = e
            .execute(inv(b""), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(err, ExecError::Timeout(Duration::from_millis(500)));
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild `sleep` must be gone too (allow the kernel a moment to reap it).
        let mut alive = true;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for its parent (already killed) to be reaped.
            if stat.is_empty() || stat.contains(") Z ") {
                alive = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive, "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn builtin_handlers() {
        let h = Handlers::builtin();
        let echo = Executor::InProcess(h.get("echo").unwrap());
        assert_eq!(
            echo.execute(inv(b"x"), Duration::from_secs(1))
                .await
                .unwrap(),
            b"x"
        );
        let fail = Executor::InProcess(h.get("fail").unwrap());
        assert!(
            fail.execute(inv(b"x"), Duration::from_secs(1))
                .await
                .is_err()
        );
        assert!(matches!(
            Executor::build(
                &ExecutorConfig::Inprocess {
                    handler: "nope".into()
                },
                &reqwest::Client::new(),
                &h
            ),
            Err(ExecutorBuildError::UnknownHandler(_))
        ));
    }
}
