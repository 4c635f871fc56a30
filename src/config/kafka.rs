//! `[kafka]`: how every client of this process reaches the cluster.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use super::de::invalid;
use super::security::{MANAGED_PROPERTIES, SecurityConfig, is_secret_property};

/// Kafka connection.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list. Default `127.0.0.1:9092`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Raw librdkafka properties applied to every client (timeouts, client.rack…), e.g.
    /// `"socket.timeout.ms" = "30000"`. Default empty. TLS and SASL settings may be given
    /// here too (`security.protocol`, `sasl.password`…) when `[kafka.security]` is not
    /// used; values of keys that look secret are never printed.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL: how this process proves who it is. Default plaintext.
    #[serde(default)]
    pub security: SecurityConfig,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &properties)
            .field("security", &self.security)
            .finish()
    }
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            properties: BTreeMap::new(),
            security: SecurityConfig::default(),
        }
    }
}

impl KafkaConfig {
    /// Checks what the types alone do not: properties that Tidewater sets itself, or that
    /// `[kafka.security]` sets when it is used, are refused; the security files are read.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        for key in self.properties.keys() {
            if matches!(
                key.as_str(),
                "bootstrap.servers" | "group.id" | "enable.auto.commit"
            ) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by Tidewater itself; use the dedicated setting",
                ));
            }
        }
        if self.security.is_used() {
            if let Some(key) = self
                .properties
                .keys()
                .find(|k| MANAGED_PROPERTIES.contains(&k.as_str()))
            {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by [kafka.security]; set it in one place only",
                ));
            }
        }
        self.security.validate()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::assert_names_field;

    #[test]
    fn secret_properties_are_redacted_when_printed() {
        let c = crate::config::Config::from_toml(&crate::config::tests::GOOD.replace(
            "\"client.rack\" = \"a\"",
            "\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"alice\"",
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn raw_properties_may_not_repeat_the_security_section() {
        let e = crate::config::tests::err(&crate::config::tests::GOOD.replace(
            "\"client.rack\" = \"a\"",
            "\"security.protocol\" = \"SSL\"\n[kafka.security]\nprotocol = \"ssl\"",
        ));
        assert!(e.contains("kafka.properties.\"security.protocol\""), "{e}");
    }

    #[test]
    fn properties_set_by_tidewater_are_refused() {
        assert_names_field(&[(
            "\"client.rack\" = \"a\"",
            "\"group.id\" = \"x\"",
            "kafka.properties.\"group.id\"",
        )]);
    }
}
