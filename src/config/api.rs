//! `[api]`: where the task query API of `tidewater serve` listens and which tokens may
//! use it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use super::de::{check_name, invalid, nz};
use super::security::{load_certificates, load_private_key};
use super::tenants::TenantConfig;

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
    /// PEM file of the API's certificate (chain): with `tls_key_file`, `serve` answers
    /// HTTPS only. Default none (plain HTTP).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Largest request body, in bytes; a larger one is answered 413. Default 4194304
    /// (4 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: NonZeroUsize,
    /// Largest query string, in bytes; a longer one is answered 414. Default 8192.
    #[serde(default = "default_max_query")]
    pub max_query_bytes: NonZeroUsize,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> NonZeroUsize {
    nz(4 * 1024 * 1024)
}
fn default_max_query() -> NonZeroUsize {
    nz(8192)
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tokens: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            max_body_bytes: default_max_body(),
            max_query_bytes: default_max_query(),
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
    /// What a request must send as `Authorization: Bearer …`.
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
    pub fn validate(&self, tenants: &BTreeMap<String, TenantConfig>) -> Result<(), ConfigError> {
        self.listen_addr()?;
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                load_certificates("api.tls_cert_file", cert)?;
                load_private_key("api.tls_key_file", key)?;
            }
            (Some(_), None) => {
                return Err(invalid(
                    "api.tls_key_file",
                    "is required with `tls_cert_file`",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "api.tls_cert_file",
                    "is required with `tls_key_file`",
                ));
            }
            (None, None) => {}
        }
        let mut seen = BTreeSet::new();
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_extra_names_field, with_tenants};

    #[test]
    fn defaults() {
        let c = with_tenants("").unwrap();
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert!(c.api.tokens.is_empty());
    }

    #[test]
    fn tokens_are_validated_with_their_field() {
        let ok = with_tenants(
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
        assert_extra_names_field(&[
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
        ]);
    }

    #[test]
    fn token_env_is_read_when_resolved() {
        let c = with_tenants(
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
