//! `[tenants.<tenant>]`: each tenant's functions, what runs them (executors), with which
//! limits and retries, and where their outcomes go (destinations).

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::de::{check_name, check_topic, de_duration, de_opt_duration, invalid, nz, nz32};

/// A tenant: a shared queue, a dead-letter topic and the functions its tasks may name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Failure destination for this tenant's tasks that name no known function or cannot
    /// be decoded, and for functions without `on_failure`. Default `<prefix>.dlq.<tenant>`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Functions by name.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
}

/// Which queue a function's tasks travel on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// The tenant's shared queue `<prefix>.q.<tenant>` (default).
    #[default]
    Shared,
    /// A queue of its own, `<prefix>.q.<tenant>.<function>`.
    Exclusive,
}

/// A function: what runs a task and with which limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// What runs the task.
    pub executor: ExecutorConfig,
    /// Tasks of this function running at once in one scheduler process. Default 10.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroU32,
    /// Attempts started per second by one scheduler process (token bucket). Default none
    /// (no rate limit).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Attempts that may start at once after an idle period, with `rate`. Default: the
    /// rate rounded up (one second's worth), at least 1.
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
    /// Share of the process's `max_running` slots when functions compete for them
    /// (relative to other functions' weights). Default 1.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Longest one attempt may run before it is cancelled and counted failed. Default `60s`.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Attempts before a task ends failed (1 = no retry). Default 3.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: NonZeroU32,
    /// Wait before the second attempt; doubles each attempt up to `backoff_max`. Default `1s`.
    #[serde(default = "default_backoff", deserialize_with = "de_duration")]
    pub backoff: Duration,
    /// Longest wait between attempts. Default `60s`.
    #[serde(default = "default_backoff_max", deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    /// `shared` (default) or `exclusive`.
    #[serde(default)]
    pub queue: QueueMode,
    /// Topic that receives the outcome event of each successful task. Default none.
    #[serde(default)]
    pub on_success: Option<String>,
    /// Topic that receives the outcome event of each failed task.
    /// Default the tenant's dead-letter topic.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// Largest payload accepted, in bytes. Default `scheduler.max_payload_bytes`.
    #[serde(default)]
    pub max_payload_bytes: Option<NonZeroUsize>,
    /// A task older than this (since submission) when its turn comes is not run: it ends
    /// `expired` on the failure destination. Default none (tasks never expire).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_event_age: Option<Duration>,
}

fn default_weight() -> f64 {
    1.0
}
fn default_concurrency() -> NonZeroU32 {
    nz32(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_attempts() -> NonZeroU32 {
    nz32(3)
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}

/// What runs a task.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecutorConfig {
    /// POST the payload to `url`; a 2xx answer is success and its body the result.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Extra request headers. Default none.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Treat 4xx answers (except 408 and 429) as final: no further attempts. Default true.
        #[serde(default = "default_true")]
        non_retryable_4xx: bool,
        /// PEM file of the certificate authorities an `https://` URL's certificate must
        /// chain to; only these are trusted then. Default: the system's trusted roots.
        #[serde(default)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Run `program` with `args` (no shell), the payload on stdin; exit 0 is success and
    /// stdout the result.
    Command {
        /// Program path or name looked up in `PATH`.
        program: String,
        /// Arguments, passed as they are.
        #[serde(default)]
        args: Vec<String>,
        /// Extra environment variables. Default none.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Bytes of stdout (and of stderr) kept per attempt. Default 65536.
        #[serde(default = "default_max_output")]
        max_output_bytes: NonZeroUsize,
        /// Exit codes that make a failure final: no further attempts. Default none.
        #[serde(default)]
        non_retryable_exit_codes: Vec<i32>,
    },
    /// A handler registered in this process (`noop`, `echo` and `fail` are built in;
    /// programs embedding Tidewater register their own).
    Inprocess {
        /// Name of the registered handler.
        handler: String,
    },
}

fn default_true() -> bool {
    true
}
fn default_max_output() -> NonZeroUsize {
    nz(64 * 1024)
}

/// Where an outcome goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A topic, which receives the outcome event as it is.
    Topic(&'a str),
    /// `function:<name>`: the outcome event becomes a new task of that function of the
    /// same tenant (compensation).
    Function(&'a str),
}

impl<'a> Destination<'a> {
    /// Reads `function:<name>` or a topic name.
    pub fn parse(s: &'a str) -> Self {
        match s.strip_prefix("function:") {
            Some(name) => Destination::Function(name),
            None => Destination::Topic(s),
        }
    }
}

impl TenantConfig {
    /// Checks this tenant, named `name`, and each of its functions.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        check_name(name).map_err(|r| invalid(format!("tenants.{name}"), r))?;
        if let Some(dlq) = &self.dead_letter {
            check_topic(dlq).map_err(|r| invalid(format!("tenants.{name}.dead_letter"), r))?;
        }
        for (fname, f) in &self.functions {
            f.validate(name, fname, self)?;
        }
        Ok(())
    }
}

impl FunctionConfig {
    /// Checks function `name` of `tenant` (named `tenant_name`) with its executor; a
    /// `function:` destination must name another function of the same tenant.
    pub fn validate(
        &self,
        tenant_name: &str,
        name: &str,
        tenant: &TenantConfig,
    ) -> Result<(), ConfigError> {
        let path = format!("tenants.{tenant_name}.functions.{name}");
        let field = |k: &str| format!("{path}.{k}");
        check_name(name).map_err(|r| invalid(path.as_str(), r))?;
        if self.timeout.is_zero() {
            return Err(invalid(field("timeout"), "must be more than 0"));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(invalid(
                    field("rate"),
                    "must be a number of tasks per second above 0",
                ));
            }
        }
        if self.burst.is_some() && self.rate.is_none() {
            return Err(invalid(field("burst"), "only applies together with `rate`"));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(invalid(field("weight"), "must be a number above 0"));
        }
        if self.backoff_max < self.backoff {
            return Err(invalid(field("backoff_max"), "must be at least `backoff`"));
        }
        for (k, dest) in [
            ("on_success", &self.on_success),
            ("on_failure", &self.on_failure),
        ] {
            match dest.as_deref().map(Destination::parse) {
                Some(Destination::Function(target)) => {
                    if !tenant.functions.contains_key(target) {
                        return Err(invalid(
                            field(k),
                            format!("tenant `{tenant_name}` has no function `{target}`"),
                        ));
                    }
                    if target == name {
                        return Err(invalid(
                            field(k),
                            "a function cannot be its own destination",
                        ));
                    }
                }
                Some(Destination::Topic(topic)) => {
                    check_topic(topic).map_err(|r| invalid(field(k), r))?;
                }
                None => {}
            }
        }
        if self.max_event_age.is_some_and(|a| a.is_zero()) {
            return Err(invalid(field("max_event_age"), "must be more than 0"));
        }
        self.executor.validate(&field("executor"))
    }
}

impl ExecutorConfig {
    /// Checks the executor whose dotted path is `path`.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let field = |k: &str| format!("{path}.{k}");
        match self {
            ExecutorConfig::Http {
                url,
                headers,
                ca_file,
                ..
            } => {
                let u = reqwest::Url::parse(url)
                    .map_err(|e| invalid(field("url"), format!("`{url}` is not a URL ({e})")))?;
                if u.scheme() != "http" && u.scheme() != "https" {
                    return Err(invalid(
                        field("url"),
                        format!("`{url}` must be an http:// or https:// URL"),
                    ));
                }
                if let Some(path) = ca_file {
                    if u.scheme() != "https" {
                        return Err(invalid(
                            field("ca_file"),
                            format!("has no effect with `{url}`; use an https:// URL"),
                        ));
                    }
                    super::security::load_certificates(&field("ca_file"), path)?;
                }
                if u.host_str().is_none() {
                    return Err(invalid(field("url"), format!("`{url}` has no host")));
                }
                for (name, value) in headers {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(invalid(
                            field("headers"),
                            format!("`{name}` is not a valid header name"),
                        ));
                    }
                    if reqwest::header::HeaderValue::from_str(value).is_err() {
                        return Err(invalid(
                            field(&format!("headers.{name}")),
                            "is not a valid header value",
                        ));
                    }
                }
            }
            ExecutorConfig::Command { program, .. } => {
                if program.trim().is_empty() {
                    return Err(invalid(field("program"), "must not be empty"));
                }
            }
            ExecutorConfig::Inprocess { handler } => {
                if handler.trim().is_empty() {
                    return Err(invalid(field("handler"), "must not be empty"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Destination;
    use crate::config::tests::assert_names_field;

    #[test]
    fn invalid_values_name_their_field() {
        assert_names_field(&[
            ("concurrency = 4", "concurrency = 0", "concurrency"),
            ("timeout = \"5s\"", "timeout = \"soon\"", "timeout"),
            (
                "timeout = \"5s\"",
                "timeout = \"0s\"",
                "functions.resize.timeout",
            ),
            (
                "url = \"http://127.0.0.1:8080/resize\"",
                "url = \"ftp://x\"",
                "functions.resize.executor.url",
            ),
            (
                "on_success = \"acme.resized\"",
                "on_success = \"bad topic\"",
                "functions.resize.on_success",
            ),
            ("queue = \"exclusive\"", "queue = \"private\"", "queue"),
            (
                "program = \"/bin/cat\"",
                "program = \"\"",
                "functions.report.executor.program",
            ),
            ("type = \"http\"", "type = \"grpc\"", "grpc"),
            (
                "tenants.acme.functions.resize]",
                "tenants.Acme.functions.resize]",
                "tenants.Acme",
            ),
        ]);
    }

    #[test]
    fn destinations_are_parsed() {
        assert_eq!(
            Destination::parse("function:undo"),
            Destination::Function("undo")
        );
        assert_eq!(Destination::parse("t.x"), Destination::Topic("t.x"));
    }
}
