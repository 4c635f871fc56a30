//! `[kafka.security]`: how this process proves who it is to a secured cluster (TLS,
//! mutual TLS, SASL PLAIN and SCRAM), and the secret type that keeps passwords out of
//! logs and errors.
//!
//! Files are checked when the configuration is loaded, so `tidewater config check`
//! reports a missing or unreadable file, or a certificate or key that does not parse,
//! naming the field. The password is read from the environment or a file at load time
//! and is never printed: [`Secret`]'s `Debug` and `Display` say `<redacted>`.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::ConfigError;
use super::de::invalid;

/// A secret value (a password); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must hand it on (a client property).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How clients talk to the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS; with `cert_file`/`key_file`, mutual TLS.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// A SASL mechanism (librdkafka's `sasl.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// User name and password, sent as they are (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name, as Kafka spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[kafka.security]`: TLS and SASL settings of every Kafka client of the process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`. Default `plaintext`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with the `sasl_*` protocols.
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name; required with the `sasl_*` protocols.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable that holds the SASL password, read at start.
    /// Exactly one of `password_env` and `password_file` is required with SASL.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File that holds the SASL password (one trailing newline is ignored), read at start.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the certificate authorities that sign the brokers' certificates.
    /// Default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate (chain), for mutual TLS. Needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the private key of `cert_file` (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Check that a broker's certificate names the host it was reached by. Default true;
    /// turn it off only for brokers whose certificates lack their addresses.
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
    /// The password, read from `password_env` or `password_file` by [`Self::resolve`].
    #[serde(skip)]
    password: Option<Secret>,
}

fn default_true() -> bool {
    true
}

/// librdkafka properties that `[kafka.security]` sets: a raw property may not set them
/// as well once the section is used.
pub const MANAGED_PROPERTIES: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
];

impl SecurityConfig {
    /// Whether the section says anything beyond the defaults.
    pub fn is_used(&self) -> bool {
        self.protocol != SecurityProtocol::Plaintext
            || self.sasl_mechanism.is_some()
            || self.username.is_some()
            || self.password_env.is_some()
            || self.password_file.is_some()
            || self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
    }

    /// Checks the combination of settings and the files they name (present, readable,
    /// parseable), without reading any secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const F: &str = "kafka.security";
        let proto = self.protocol;
        if proto.is_sasl() {
            if self.sasl_mechanism.is_none() {
                return Err(invalid(
                    format!("{F}.sasl_mechanism"),
                    format!(
                        "is required with protocol `{}` (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                        proto.as_str()
                    ),
                ));
            }
            match &self.username {
                None => {
                    return Err(invalid(
                        format!("{F}.username"),
                        format!("is required with protocol `{}`", proto.as_str()),
                    ));
                }
                Some(u) if u.trim().is_empty() => {
                    return Err(invalid(format!("{F}.username"), "must not be empty"));
                }
                Some(_) => {}
            }
            match (&self.password_env, &self.password_file) {
                (None, None) => {
                    return Err(invalid(
                        format!("{F}.password_env"),
                        format!(
                            "set `password_env` (an environment variable) or `password_file` for protocol `{}`",
                            proto.as_str()
                        ),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("{F}.password_file"),
                        "set only one of `password_env` and `password_file`",
                    ));
                }
                _ => {}
            }
        } else {
            for (name, set) in [
                ("sasl_mechanism", self.sasl_mechanism.is_some()),
                ("username", self.username.is_some()),
                ("password_env", self.password_env.is_some()),
                ("password_file", self.password_file.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{F}.{name}"),
                        format!(
                            "has no effect with protocol `{}`; use `sasl_plaintext` or `sasl_ssl`",
                            proto.as_str()
                        ),
                    ));
                }
            }
        }
        if !proto.is_tls() {
            for (name, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{F}.{name}"),
                        format!(
                            "has no effect with protocol `{}`; use `ssl` or `sasl_ssl`",
                            proto.as_str()
                        ),
                    ));
                }
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    format!("{F}.key_file"),
                    "is required with `cert_file` (mutual TLS)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    format!("{F}.cert_file"),
                    "is required with `key_file` (mutual TLS)",
                ));
            }
            _ => {}
        }
        if let Some(path) = &self.ca_file {
            check_certificates(&format!("{F}.ca_file"), path)?;
        }
        if let Some(path) = &self.cert_file {
            check_certificates(&format!("{F}.cert_file"), path)?;
        }
        if let Some(path) = &self.key_file {
            check_private_key(&format!("{F}.key_file"), path)?;
        }
        if let Some(path) = &self.password_file {
            read_file(&format!("{F}.password_file"), path)?;
        }
        Ok(())
    }

    /// Reads the SASL password from `password_env` or `password_file`. Errors name the
    /// field and the variable or file, never the value.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        const F: &str = "kafka.security";
        if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|e| {
                let why = match e {
                    std::env::VarError::NotPresent => "is not set",
                    std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                };
                invalid(
                    format!("{F}.password_env"),
                    format!("the environment variable `{var}` {why}"),
                )
            })?;
            self.password = Some(Secret::new(value));
        } else if let Some(path) = &self.password_file {
            let text = read_file(&format!("{F}.password_file"), path)?;
            let text = String::from_utf8(text).map_err(|_| {
                invalid(
                    format!("{F}.password_file"),
                    format!("{} is not UTF-8 text", path.display()),
                )
            })?;
            let value = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(&text);
            self.password = Some(Secret::new(value));
        }
        Ok(())
    }

    /// The password read by [`Self::resolve`].
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// Who this process authenticates as, for error messages: `SASL SCRAM-SHA-512 as user
    /// "alice"`, `TLS client certificate /etc/tw/client.pem`, or `no authentication`.
    pub fn identity(&self) -> String {
        match (self.sasl_mechanism, &self.username, &self.cert_file) {
            (Some(m), Some(u), _) if self.protocol.is_sasl() => {
                format!("SASL {} as user \"{u}\"", m.as_str())
            }
            (_, _, Some(cert)) if self.protocol.is_tls() => {
                format!("TLS client certificate {}", cert.display())
            }
            _ => "no authentication".to_string(),
        }
    }

    /// The librdkafka properties this section stands for. The password is included: the
    /// caller hands these to a client and nowhere else.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.is_used() {
            return out;
        }
        out.push(("security.protocol", self.protocol.as_str().to_string()));
        if self.protocol.is_sasl() {
            if let Some(m) = self.sasl_mechanism {
                out.push(("sasl.mechanisms", m.as_str().to_string()));
            }
            if let Some(u) = &self.username {
                out.push(("sasl.username", u.clone()));
            }
            if let Some(p) = &self.password {
                out.push(("sasl.password", p.expose().to_string()));
            }
        }
        if self.protocol.is_tls() {
            let path = |p: &Path| p.display().to_string();
            if let Some(p) = &self.ca_file {
                out.push(("ssl.ca.location", path(p)));
            }
            if let Some(p) = &self.cert_file {
                out.push(("ssl.certificate.location", path(p)));
            }
            if let Some(p) = &self.key_file {
                out.push(("ssl.key.location", path(p)));
            }
            let verify = if self.verify_hostname {
                "https"
            } else {
                "none"
            };
            out.push(("ssl.endpoint.identification.algorithm", verify.to_string()));
        }
        out
    }
}

/// Whether a librdkafka property holds a secret (and must be redacted when printed).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k == "ssl.key.pem"
        || k == "ssl_key"
        || k == "sasl.oauthbearer.config"
}

/// Reads a file named by `field`; the error names the field, the path and why.
pub(crate) fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        invalid(
            field,
            format!("cannot read {}: {}", path.display(), io_reason(&e)),
        )
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Reads the PEM certificates of a file and checks that each parses as X.509.
pub fn load_certificates(
    field: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read_file(field, path)?;
    let bad = |why: String| invalid(field, format!("{}: {why}", path.display()));
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        webpki::anchor_from_trusted_cert(cert)
            .map_err(|e| bad(format!("certificate {} does not parse ({e:?})", i + 1)))?;
    }
    Ok(certs)
}

fn check_certificates(field: &str, path: &Path) -> Result<(), ConfigError> {
    load_certificates(field, path).map(|_| ())
}

/// Reads the PEM private key of a file.
pub fn load_private_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read_file(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        invalid(
            field,
            format!(
                "{}: no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) ({e})",
                path.display()
            ),
        )
    })
}

fn check_private_key(field: &str, path: &Path) -> Result<(), ConfigError> {
    load_private_key(field, path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SecurityConfig, String> {
        let c: SecurityConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn sasl_needs_mechanism_user_and_one_password_source() {
        let e = parse("protocol = \"sasl_ssl\"").unwrap_err();
        assert!(e.contains("kafka.security.sasl_mechanism"), "{e}");
        let e = parse("protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"").unwrap_err();
        assert!(e.contains("kafka.security.username"), "{e}");
        let e =
            parse("protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"")
                .unwrap_err();
        assert!(e.contains("password_env"), "{e}");
        let e = parse("protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-1\"").unwrap_err();
        assert!(e.contains("SCRAM-SHA-1"), "{e}");
        let e = parse("username = \"u\"").unwrap_err();
        assert!(e.contains("kafka.security.username"), "{e}");
        let e = parse("protocol = \"sasl_plaintext\"\nca_file = \"/x\"").unwrap_err();
        assert!(e.contains("kafka.security"), "{e}");
    }

    #[test]
    fn files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = parse(&format!(
            "protocol = \"ssl\"\nca_file = \"{}\"",
            missing.display()
        ))
        .unwrap_err();
        assert!(
            e.contains("kafka.security.ca_file") && e.contains("no such file"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = parse(&format!(
            "protocol = \"ssl\"\ncert_file = \"{0}\"\nkey_file = \"{0}\"",
            garbage.display()
        ))
        .unwrap_err();
        assert!(
            e.contains("kafka.security.cert_file") && e.contains("does not parse"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello").unwrap();
        let e = parse(&format!(
            "protocol = \"ssl\"\nca_file = \"{}\"",
            empty.display()
        ))
        .unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn passwords_come_from_env_or_file_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let mut c = parse(&format!(
            "protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        c.resolve().unwrap();
        assert_eq!(c.password().map(Secret::expose), Some("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let props = c.client_properties();
        assert!(props.contains(&("sasl.password", "hunter2".to_string())));
        assert!(props.contains(&("sasl.mechanisms", "PLAIN".to_string())));
        assert_eq!(c.identity(), "SASL PLAIN as user \"u\"");

        let mut c = parse(
            "protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_env = \"TW_TEST_SURELY_UNSET_VAR\"",
        )
        .unwrap();
        let e = c.resolve().unwrap_err().to_string();
        assert!(
            e.contains("kafka.security.password_env") && e.contains("TW_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
    }

    #[test]
    fn secret_properties_are_recognised() {
        assert!(is_secret_property("sasl.password"));
        assert!(is_secret_property("ssl.key.password"));
        assert!(is_secret_property("ssl.key.pem"));
        assert!(is_secret_property("sasl.oauthbearer.client.secret"));
        assert!(!is_secret_property("sasl.username"));
    }
}
