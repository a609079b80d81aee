//! The deserializers that check a value where it is written, so that a bad value is reported
//! with its line: ranges, non-zero durations, and the core's policy enums by their lowercase
//! names.

use std::time::Duration;

use egret_core::ProxyProtocol;
use egret_core::policy::{EchPolicy, Mode, TlsDeny};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{ListItem, MAX_HEADER_BYTES, MIN_HEADER_BYTES};

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<String>::deserialize(deserializer)?;
        Ok(ListItem {
            offset: spanned.span().start,
            line: 0,
            text: spanned.into_inner(),
        })
    }
}

#[derive(Deserialize)]
#[serde(remote = "Mode", rename_all = "lowercase")]
pub(super) enum ModeDef {
    Enforce,
    Audit,
}

#[derive(Deserialize)]
#[serde(remote = "TlsDeny", rename_all = "lowercase")]
pub(super) enum TlsDenyDef {
    Alert,
    Reset,
}

#[derive(Deserialize)]
#[serde(remote = "EchPolicy", rename_all = "lowercase")]
pub(super) enum EchPolicyDef {
    Deny,
    Allow,
}

#[derive(Deserialize)]
#[serde(remote = "ProxyProtocol", rename_all = "lowercase")]
pub(super) enum ProxyProtocolDef {
    Off,
    Optional,
    Required,
}

pub(super) fn optional_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "'{text}' is not an address (\"127.0.0.1:9090\"), or \"\" for off"
        ))
    })
}

pub(super) fn nonzero_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let duration: Duration = humantime_serde::deserialize(deserializer)?;
    if duration.is_zero() {
        return Err(D::Error::custom("must be more than zero"));
    }
    Ok(duration)
}

pub(super) fn nonzero_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let count = usize::deserialize(deserializer)?;
    if count == 0 {
        return Err(D::Error::custom("must be at least 1"));
    }
    Ok(count)
}

pub(super) fn header_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let bytes = usize::deserialize(deserializer)?;
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&bytes) {
        return Err(D::Error::custom(format!(
            "{bytes} is out of range: must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES} \
             (1 MiB)"
        )));
    }
    Ok(bytes)
}

pub(super) fn ports<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u16>, D::Error> {
    let ports = Vec::<u16>::deserialize(deserializer)?;
    if ports.contains(&0) {
        return Err(D::Error::custom(
            "port 0 is not a port: ports are 1 to 65535",
        ));
    }
    Ok(ports)
}

/// The retention periods `PutRetentionPolicy` accepts, in days (0: leave the group's as is).
pub(super) const RETENTION_DAYS: [u32; 23] = [
    0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The placeholders a `[log.cloudwatch] stream` template may hold.
pub(super) const STREAM_PLACEHOLDERS: [&str; 2] = ["{hostname}", "{instance_id}"];

pub(super) fn log_group<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let group = String::deserialize(deserializer)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || "._-/#".contains(c);
    if group.is_empty() || group.len() > 512 || !group.chars().all(valid) {
        return Err(D::Error::custom(format!(
            "'{group}' is not a log group name: 1 to 512 of the characters a-z, A-Z, 0-9, \
             '.', '_', '-', '/' and '#'"
        )));
    }
    Ok(group)
}

pub(super) fn log_stream<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let template = String::deserialize(deserializer)?;
    let literal = STREAM_PLACEHOLDERS
        .iter()
        .fold(template.clone(), |text, p| text.replace(p, ""));
    if literal.contains(['{', '}']) {
        return Err(D::Error::custom(format!(
            "'{template}' has an unknown placeholder: the stream name may use {} and {}",
            STREAM_PLACEHOLDERS[0], STREAM_PLACEHOLDERS[1]
        )));
    }
    if template.is_empty() || template.len() > 512 || literal.contains([':', '*']) {
        return Err(D::Error::custom(format!(
            "'{template}' is not a log stream name: 1 to 512 characters, without ':' or '*'"
        )));
    }
    Ok(template)
}

pub(super) fn retention_days<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let days = u32::deserialize(deserializer)?;
    if !RETENTION_DAYS.contains(&days) {
        let allowed: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
        return Err(D::Error::custom(format!(
            "{days} is not a retention CloudWatch Logs offers: one of {} (0 leaves it as it is)",
            allowed.join(", ")
        )));
    }
    Ok(days)
}

pub(super) fn metric_namespace<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    let namespace = String::deserialize(deserializer)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || "._-/#: ".contains(c);
    if namespace.is_empty()
        || namespace.len() > 255
        || !namespace.chars().all(valid)
        || namespace.starts_with("AWS/")
    {
        return Err(D::Error::custom(format!(
            "'{namespace}' is not a metric namespace: 1 to 255 of the characters a-z, A-Z, 0-9, \
             '.', '_', '-', '/', '#', ':' and space, not starting with 'AWS/'"
        )));
    }
    Ok(namespace)
}

/// Reads an optional string where an empty one means absent.
pub(super) fn optional_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

/// An SSM parameter name: a path (`/egret/allowlist`) or a bare name, of at most 2,048 of the
/// characters SSM accepts; `""` means none.
pub(super) fn ssm_parameter<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let Some(name) = optional_text(deserializer)? else {
        return Ok(None);
    };
    let valid = name.len() <= 2048
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
    if !valid {
        return Err(D::Error::custom(format!(
            "'{name}' is not an SSM parameter name (letters, digits, _ . - /, at most 2048)"
        )));
    }
    Ok(Some(name))
}

/// Returns the 1-based line and column of a byte offset.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
