//! The `[api]` and `[indexer]` sections of the configuration, used by `tidewater serve`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::{ConfigError, TenantConfig, check_name};

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration like \"500ms\", \"30s\" or \"7d\" ({e})"
        ))
    })
}

/// The task query API of `tidewater serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the API listens on: an IP address and port. Default `127.0.0.1:8080`.
    /// Port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer tokens that may use the API, each scoped to one tenant or admin.
    /// Default none: every request except `/healthz` and `/readyz` is then refused.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tokens: Vec::new(),
        }
    }
}

/// One API token: given inline (`token`) or read from an environment variable
/// (`token_env`), and scoped to one tenant (`tenant`) or to everything (`admin = true`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret itself.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of an environment variable that holds the secret, read when `serve` starts.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The tenant whose tasks this token may see, submit and stop.
    #[serde(default)]
    pub tenant: Option<String>,
    /// When true, the token sees every tenant.
    #[serde(default)]
    pub admin: bool,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("tenant", &self.tenant)
            .field("admin", &self.admin)
            .finish()
    }
}

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// One tenant: sees, submits and stops only that tenant's tasks.
    Tenant(String),
    /// Every tenant.
    Admin,
}

impl Principal {
    /// The tenant every query must be limited to; `None` for admin.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Tenant(t) => Some(t),
            Self::Admin => None,
        }
    }

    /// `admin` or the tenant name, as recorded in stop requests.
    pub fn name(&self) -> &str {
        match self {
            Self::Tenant(t) => t,
            Self::Admin => "admin",
        }
    }
}

/// A token with its secret resolved.
#[derive(Clone)]
pub struct ResolvedToken {
    /// The secret.
    pub secret: String,
    /// Who it speaks for.
    pub principal: Principal,
}

impl std::fmt::Debug for ResolvedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedToken")
            .field("secret", &"<redacted>")
            .field("principal", &self.principal)
            .finish()
    }
}

impl ApiConfig {
    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            invalid(
                "api.listen",
                format!("`{}` is not an IP address and port ({e})", self.listen),
            )
        })
    }

    /// Checks what the types alone do not; `tenants` are the configured tenants.
    pub fn validate(
        &self,
        tenants: &std::collections::BTreeMap<String, TenantConfig>,
    ) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let field = |k: &str| format!("api.tokens[{i}]{k}");
            match (&t.token, &t.token_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(field(""), "set `token` or `token_env`, not both"));
                }
                (None, None) => return Err(invalid(field(""), "set `token` or `token_env`")),
                (Some(secret), None) => {
                    if secret.trim().is_empty() {
                        return Err(invalid(field(".token"), "must not be empty"));
                    }
                    if !seen.insert(secret.clone()) {
                        return Err(invalid(field(".token"), "is the same as another token"));
                    }
                }
                (None, Some(var)) => {
                    if var.is_empty() || var.contains('=') || var.contains('\0') {
                        return Err(invalid(
                            field(".token_env"),
                            "must be the name of an environment variable",
                        ));
                    }
                }
            }
            match (&t.tenant, t.admin) {
                (Some(_), true) => {
                    return Err(invalid(
                        field(""),
                        "a token is either for one `tenant` or `admin = true`, not both",
                    ));
                }
                (None, false) => {
                    return Err(invalid(field(""), "set `tenant = \"…\"` or `admin = true`"));
                }
                (Some(tenant), false) => {
                    check_name(tenant).map_err(|r| invalid(field(".tenant"), r))?;
                    if !tenants.contains_key(tenant) {
                        return Err(invalid(
                            field(".tenant"),
                            format!("no tenant `{tenant}` in [tenants]"),
                        ));
                    }
                }
                (None, true) => {}
            }
        }
        Ok(())
    }

    /// The tokens with their secrets, reading `token_env` variables now.
    pub fn resolve_tokens(&self) -> Result<Vec<ResolvedToken>, ConfigError> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let secret = match (&t.token, &t.token_env) {
                    (Some(s), _) => s.clone(),
                    (None, Some(var)) => std::env::var(var)
                        .ok()
                        .filter(|v| !v.trim().is_empty())
                        .ok_or_else(|| {
                        invalid(
                            format!("api.tokens[{i}].token_env"),
                            format!("environment variable `{var}` is not set or empty"),
                        )
                    })?,
                    (None, None) => {
                        return Err(invalid(
                            format!("api.tokens[{i}]"),
                            "set `token` or `token_env`",
                        ));
                    }
                };
                let principal = match &t.tenant {
                    Some(tenant) => Principal::Tenant(tenant.clone()),
                    None => Principal::Admin,
                };
                Ok(ResolvedToken { secret, principal })
            })
            .collect()
    }
}

/// The indexer of `tidewater serve`: where it keeps its store and for how long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexerConfig {
    /// Path of the SQLite file that holds the index. Created when missing; delete it to
    /// rebuild the index from Kafka. Default `./tidewater-index.db`.
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// Tasks that finished longer ago than this are deleted from the index, with their
    /// history and logs. Default `7d`.
    #[serde(default = "default_retention", deserialize_with = "de_duration")]
    pub retention: Duration,
    /// Records written to the store in one transaction at most. Default 5000.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// Longest a record waits before its batch is written. Default `200ms`.
    #[serde(default = "default_batch_wait", deserialize_with = "de_duration")]
    pub batch_wait: Duration,
    /// Identifies this indexer replica in its consumer group name
    /// (`<prefix>.indexer.<id>`). Default `<hostname>-<pid>`.
    #[serde(default)]
    pub id: Option<String>,
}

fn default_store() -> PathBuf {
    PathBuf::from("./tidewater-index.db")
}
fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(5000).unwrap_or(NonZeroUsize::MIN)
}
fn default_batch_wait() -> Duration {
    Duration::from_millis(200)
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            store: default_store(),
            retention: default_retention(),
            batch_size: default_batch_size(),
            batch_wait: default_batch_wait(),
            id: None,
        }
    }
}

impl IndexerConfig {
    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.store.as_os_str().is_empty() {
            return Err(invalid("indexer.store", "must not be empty"));
        }
        if self.retention.is_zero() {
            return Err(invalid("indexer.retention", "must be more than 0"));
        }
        if self.batch_wait.is_zero() {
            return Err(invalid("indexer.batch_wait", "must be more than 0"));
        }
        if let Some(id) = &self.id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(invalid(
                    "indexer.id",
                    format!("`{id}` must be 1 or more characters of a-z A-Z 0-9 . _ -"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
        [tenants.acme.functions.f]
        executor = { type = "inprocess", handler = "echo" }
        [tenants.globex]
    "#;

    fn check(extra: &str) -> Result<Config, String> {
        Config::from_toml(&format!("{BASE}\n{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = check("").unwrap();
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert!(c.api.tokens.is_empty());
        assert_eq!(c.indexer.store.to_str(), Some("./tidewater-index.db"));
        assert_eq!(c.indexer.retention.as_secs(), 7 * 24 * 3600);
    }

    #[test]
    fn tokens_are_validated_with_their_field() {
        let ok = check(
            r#"
            [api]
            listen = "0.0.0.0:9000"
            tokens = [{ token = "a-secret", tenant = "acme" }, { token_env = "TW_ADMIN", admin = true }]
            [indexer]
            store = "/tmp/x.db"
            retention = "36h"
            "#,
        )
        .unwrap();
        assert_eq!(ok.api.tokens.len(), 2);
        assert!(!format!("{:?}", ok.api).contains("a-secret"));
        let cases = [
            (
                r#"[api]
            listen = "localhost:80""#,
                "api.listen",
            ),
            (
                r#"[api]
            tokens = [{ token = "x", token_env = "Y", tenant = "acme" }]"#,
                "api.tokens[0]",
            ),
            (
                r#"[api]
            tokens = [{ tenant = "acme" }]"#,
                "api.tokens[0]",
            ),
            (
                r#"[api]
            tokens = [{ token = "x", tenant = "nobody" }]"#,
                "api.tokens[0].tenant",
            ),
            (
                r#"[api]
            tokens = [{ token = "x", tenant = "acme" }, { token = "x", admin = true }]"#,
                "api.tokens[1].token",
            ),
            (
                r#"[api]
            tokens = [{ token = "x", tenant = "acme", admin = true }]"#,
                "api.tokens[0]",
            ),
            (
                r#"[api]
            tokens = [{ token = "x" }]"#,
                "api.tokens[0]",
            ),
            (
                r#"[indexer]
            retention = "0s""#,
                "indexer.retention",
            ),
            (
                r#"[indexer]
            retention = "forever""#,
                "forever",
            ),
            (
                r#"[indexer]
            id = "a b""#,
                "indexer.id",
            ),
            (
                r#"[indexer]
            stor = "x""#,
                "stor",
            ),
        ];
        for (extra, needle) in cases {
            let e = check(extra).expect_err(extra);
            assert!(e.contains(needle), "`{extra}`: {e}");
        }
    }

    #[test]
    fn token_env_is_read_when_resolved() {
        let c = check(
            r#"
            [api]
            tokens = [{ token_env = "TW_TEST_TOKEN_THAT_IS_NOT_SET", admin = true }]
            "#,
        )
        .unwrap();
        let e = c.api.resolve_tokens().unwrap_err().to_string();
        assert!(e.contains("api.tokens[0].token_env"), "{e}");
    }
}
