//! `[indexer]`: where the indexer of `tidewater serve` keeps its store, for how long, and
//! how it batches its writes.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::de::{de_duration, invalid, nz};

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
    nz(5000)
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
    use crate::config::tests::{assert_extra_names_field, with_tenants};

    #[test]
    fn defaults() {
        let c = with_tenants("").unwrap();
        assert_eq!(c.indexer.store.to_str(), Some("./tidewater-index.db"));
        assert_eq!(c.indexer.retention.as_secs(), 7 * 24 * 3600);
    }

    #[test]
    fn values_are_validated_with_their_field() {
        assert_extra_names_field(&[
            ("[indexer]\nretention = \"0s\"", "indexer.retention"),
            ("[indexer]\nretention = \"forever\"", "forever"),
            ("[indexer]\nid = \"a b\"", "indexer.id"),
            ("[indexer]\nstor = \"x\"", "stor"),
        ]);
    }
}
