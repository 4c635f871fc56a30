//! `[kafka]`: how every client of this process reaches the cluster.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use super::de::invalid;

/// Kafka connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list. Default `127.0.0.1:9092`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Raw librdkafka properties applied to every client (SASL, timeouts…), e.g.
    /// `"sasl.mechanism" = "PLAIN"`. Default empty. This build has no TLS support:
    /// `security.protocol` `SSL` and `SASL_SSL` are rejected.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Checks what the types alone do not: properties that Tidewater sets itself, or
    /// that need TLS, are refused.
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
        if let Some(proto) = self.properties.get("security.protocol") {
            if proto.to_ascii_uppercase().contains("SSL") {
                return Err(invalid(
                    "kafka.properties.\"security.protocol\"",
                    format!(
                        "`{proto}` needs TLS, which this build of Tidewater does not include yet; use PLAINTEXT or SASL_PLAINTEXT"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::assert_names_field;

    #[test]
    fn properties_set_by_tidewater_are_refused() {
        assert_names_field(&[(
            "\"client.rack\" = \"a\"",
            "\"group.id\" = \"x\"",
            "kafka.properties.\"group.id\"",
        )]);
    }
}
