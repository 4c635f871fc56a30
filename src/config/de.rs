//! What the sections share: the deserialiser of duration strings, the checks of names that
//! become parts of topic names, and the error that names the field at fault.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// The error of a well-formed value that is not acceptable; `field` is its dotted path.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads a duration written as a human string (`"500ms"`, `"30s"`, `"5m"`, `"7d"`).
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration like \"500ms\", \"30s\" or \"5m\" ({e})"
        ))
    })
}

/// [`de_duration`] for a field that may be left out (with `#[serde(default)]`).
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// A default that is a non-zero count.
pub(crate) fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// A default that is a non-zero count, as `u32`.
pub(crate) fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A tenant or function name: lowercase letters, digits, `_` and `-`, 1 to 64 characters,
/// starting with a letter or digit. Names become parts of topic names, so `.` is excluded.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{name}` must use only a-z, 0-9, `_` and `-`, and start with a letter or digit"
        ));
    }
    Ok(())
}

/// A Kafka topic name: 1 to 249 characters of `a-zA-Z0-9._-`, not `.` or `..`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err("a topic name must be 1 to 249 characters".into());
    }
    if topic == "." || topic == ".." {
        return Err("`.` and `..` are not topic names".into());
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(format!(
            "`{topic}` is not a valid topic name (allowed: a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("acme-1_x").is_ok());
        assert!(check_name("a.b").is_err());
        assert!(check_name("-a").is_err());
        assert!(check_name("").is_err());
        assert!(check_topic("orders.done-1").is_ok());
        assert!(check_topic("a:b").is_err());
    }
}
