//! The deserializers that check a value where it is written, so that a bad value is reported
//! with its line: ranges, non-zero durations, and the core's policy enums by their lowercase
//! names.

use std::time::Duration;

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

/// Returns the 1-based line and column of a byte offset.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
