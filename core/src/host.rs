//! Destination hosts as they appear in request targets, `Host` headers and SNI.
//!
//! Parsing is strict on purpose: a host that two parsers could read differently (percent escapes,
//! userinfo, backslashes, legacy IPv4 spellings such as `0x7f.1` or `2130706433`) is an error,
//! never normalised, so the name the policy judges is the name the upstream sees.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest host name in bytes, without the trailing dot (RFC 1035 §2.3.4 via RFC 1123).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label in bytes (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A validated destination host: a lowercase ASCII name without a trailing dot, or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lowercase letters, digits, `-` and `_`, labels joined by dots.
    Name(Box<str>),
    /// An IPv4 literal in canonical dotted-decimal form, or a bracketed IPv6 literal.
    Ip(IpAddr),
}

/// Why a host or authority was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The host is empty.
    Empty,
    /// The name is longer than 253 bytes.
    TooLong,
    /// A label is longer than 63 bytes.
    LabelTooLong,
    /// Two dots in a row, a leading dot, or more than one trailing dot.
    EmptyLabel,
    /// A byte outside letters, digits, `-`, `_` and `.` (such as `@`, `%`, `\` or a space).
    InvalidChar,
    /// A byte above 0x7f: names travel in their punycode form.
    NonAscii,
    /// A numeric host that is not a canonical dotted-decimal IPv4 address.
    NonCanonicalIpv4,
    /// A bracketed literal that is not a plain IPv6 address (zone ids included).
    InvalidIpv6,
    /// A port that is not a decimal number from 1 to 65535 without leading zeros.
    InvalidPort,
    /// The authority lacks the port it requires.
    MissingPort,
}

impl Host {
    /// Parses a host without a port: a name, a dotted-decimal IPv4 address or a bracketed IPv6
    /// address. Letters are lowercased and one trailing dot is removed.
    pub fn parse(input: &[u8]) -> Result<Host, HostError> {
        match check(input)? {
            Checked::Ip(ip) => Ok(Host::Ip(ip)),
            Checked::Name(name) => {
                let lower = name.to_ascii_lowercase();
                // Every byte was checked to be ASCII, so this cannot fail.
                let lower = String::from_utf8(lower).map_err(|_| HostError::NonAscii)?;
                Ok(Host::Name(lower.into_boxed_str()))
            }
        }
    }

    /// Returns the name, or `None` for an IP literal.
    #[must_use]
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }

    /// Returns `host:port` in authority form (IPv6 in brackets).
    #[must_use]
    pub fn authority(&self, port: u16) -> String {
        let mut out = match self {
            Host::Name(name) => {
                let mut out = String::with_capacity(name.len() + 6);
                out.push_str(name);
                out
            }
            Host::Ip(_) => self.to_string(),
        };
        out.push(':');
        out.push_str(itoa::Buffer::new().format(port));
        out
    }
}

impl fmt::Display for Host {
    /// Writes the name, the IPv4 address, or the IPv6 address in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl HostError {
    /// Returns the snake_case name used in logs and error replies.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::Empty => "empty_host",
            HostError::TooLong => "host_too_long",
            HostError::LabelTooLong => "label_too_long",
            HostError::EmptyLabel => "empty_label",
            HostError::InvalidChar => "invalid_host_char",
            HostError::NonAscii => "non_ascii_host",
            HostError::NonCanonicalIpv4 => "non_canonical_ipv4",
            HostError::InvalidIpv6 => "invalid_ipv6",
            HostError::InvalidPort => "invalid_port",
            HostError::MissingPort => "missing_port",
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HostError {}

/// Parses an authority `host[:port]`. Without a port, `default_port` is used, or the authority is
/// rejected with [`HostError::MissingPort`] when there is none.
pub fn parse_authority(input: &[u8], default_port: Option<u16>) -> Result<(Host, u16), HostError> {
    let (host, port) = split_authority(input, default_port)?;
    Ok((Host::parse(host)?, port))
}

/// Checks an authority as [`parse_authority`] does, without allocating; returns the port.
pub(crate) fn check_authority(input: &[u8], default_port: Option<u16>) -> Result<u16, HostError> {
    let (host, port) = split_authority(input, default_port)?;
    check(host)?;
    Ok(port)
}

/// Splits `host[:port]`, validating the port (and supplying `default_port`).
fn split_authority(input: &[u8], default_port: Option<u16>) -> Result<(&[u8], u16), HostError> {
    let (host, port) = if input.first() == Some(&b'[') {
        let end = memchr::memchr(b']', input).ok_or(HostError::InvalidIpv6)?;
        let (host, rest) = input.split_at(end + 1);
        match rest {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return Err(HostError::InvalidIpv6),
        }
    } else {
        match memchr::memrchr(b':', input) {
            Some(colon) => (&input[..colon], Some(&input[colon + 1..])),
            None => (input, None),
        }
    };
    let port = match port {
        Some(digits) => parse_port(digits).ok_or(HostError::InvalidPort)?,
        None => default_port.ok_or(HostError::MissingPort)?,
    };
    if host.first() != Some(&b'[') && memchr::memchr(b':', host).is_some() {
        return Err(HostError::InvalidChar);
    }
    Ok((host, port))
}

/// Parses a decimal port from 1 to 65535 written without leading zeros.
#[must_use]
pub fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || digits[0] == b'0' {
        return None;
    }
    let mut value: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    u16::try_from(value).ok()
}

/// A host that passed every check, not yet copied.
enum Checked<'a> {
    /// A name, without its trailing dot, in its original case.
    Name(&'a [u8]),
    /// An IP literal.
    Ip(IpAddr),
}

/// Validates a host without a port and without allocating (see [`Host::parse`]).
fn check(input: &[u8]) -> Result<Checked<'_>, HostError> {
    if let Some(inner) = input.strip_prefix(b"[") {
        let inner = inner.strip_suffix(b"]").ok_or(HostError::InvalidIpv6)?;
        return parse_ipv6(inner).map(|ip| Checked::Ip(IpAddr::V6(ip)));
    }
    let name = input.strip_suffix(b".").unwrap_or(input);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(HostError::TooLong);
    }
    let mut label_len = 0;
    for &b in name {
        match BYTE_CLASS[usize::from(b)] {
            LABEL => {
                label_len += 1;
                if label_len > MAX_LABEL_LEN {
                    return Err(HostError::LabelTooLong);
                }
            }
            DOT if label_len == 0 => return Err(HostError::EmptyLabel),
            DOT => label_len = 0,
            NON_ASCII => return Err(HostError::NonAscii),
            _ => return Err(HostError::InvalidChar),
        }
    }
    if label_len == 0 {
        return Err(HostError::EmptyLabel);
    }
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
    if looks_numeric(last) {
        // WHATWG URL §3.5: a host whose last label is numeric is an IPv4 address. Accept only
        // the canonical spelling; `0x7f.1`, `017.0.0.1` and `2130706433` are refused.
        return parse_canonical_ipv4(name)
            .map(|ip| Checked::Ip(IpAddr::V4(ip)))
            .ok_or(HostError::NonCanonicalIpv4);
    }
    Ok(Checked::Name(name))
}

const INVALID: u8 = 0;
const LABEL: u8 = 1;
const DOT: u8 = 2;
const NON_ASCII: u8 = 3;

/// What each byte may be in a host name: letters, digits, `-` and `_` make labels.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => LABEL,
            b'.' => DOT,
            0x80..=0xff => NON_ASCII,
            _ => INVALID,
        };
        b += 1;
    }
    table
};

fn looks_numeric(label: &[u8]) -> bool {
    if let Some(hex) = label
        .strip_prefix(b"0x")
        .or_else(|| label.strip_prefix(b"0X"))
    {
        return hex.iter().all(u8::is_ascii_hexdigit);
    }
    label.iter().all(u8::is_ascii_digit)
}

fn parse_canonical_ipv4(name: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = name.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = part
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(Ipv4Addr::from(octets)),
    }
}

fn parse_ipv6(inner: &[u8]) -> Result<Ipv6Addr, HostError> {
    // std's parser accepts exactly RFC 4291 text (no zone ids, no brackets, no spaces).
    std::str::from_utf8(inner)
        .ok()
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
        .ok_or(HostError::InvalidIpv6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_lose_one_trailing_dot() {
        assert_eq!(Host::parse(b"PyPI.org."), Ok(name("pypi.org")));
        assert_eq!(Host::parse(b"a_b-c.example"), Ok(name("a_b-c.example")));
        assert_eq!(Host::parse(b"pypi.org.."), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse(b".pypi.org"), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse(b"a..b"), Err(HostError::EmptyLabel));
        assert_eq!(Host::parse(b""), Err(HostError::Empty));
        assert_eq!(Host::parse(b"."), Err(HostError::Empty));
    }

    #[test]
    fn dangerous_bytes_are_refused() {
        for bad in [
            &b"user@host"[..],
            b"ho%73t",
            b"a\\b",
            b"a b",
            b"a\tb",
            b"a\0b",
            b"a/b",
            b"a?b",
            b"a#b",
            b"a:b",
        ] {
            assert_eq!(Host::parse(bad), Err(HostError::InvalidChar), "{bad:?}");
        }
        assert_eq!(
            Host::parse("bücher.de".as_bytes()),
            Err(HostError::NonAscii)
        );
    }

    #[test]
    fn length_limits_hold_at_the_boundary() {
        let label63 = "a".repeat(63);
        assert!(Host::parse(label63.as_bytes()).is_ok());
        assert_eq!(
            Host::parse("a".repeat(64).as_bytes()),
            Err(HostError::LabelTooLong)
        );
        let name253 = format!("{0}.{0}.{0}.{1}", label63, "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert!(Host::parse(name253.as_bytes()).is_ok());
        assert!(Host::parse(format!("{name253}.").as_bytes()).is_ok());
        assert_eq!(
            Host::parse(format!("{name253}b").as_bytes()),
            Err(HostError::TooLong)
        );
    }

    #[test]
    fn only_canonical_ipv4_is_an_address() {
        assert_eq!(
            Host::parse(b"127.0.0.1"),
            Ok(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            Host::parse(b"10.0.0.1."),
            Ok(Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))))
        );
        for bad in [
            &b"0x7f.1"[..],
            b"2130706433",
            b"017.0.0.1",
            b"127.1",
            b"127.0.0.1.1",
            b"256.0.0.1",
            b"1.2.3.0x4",
            b"0X7F000001",
            b"example.0x10",
            b"example.123",
            b"00.0.0.0",
        ] {
            assert_eq!(
                Host::parse(bad),
                Err(HostError::NonCanonicalIpv4),
                "{bad:?}"
            );
        }
        // A numeric label that is not the last one is an ordinary name.
        assert_eq!(Host::parse(b"123.example"), Ok(name("123.example")));
    }

    #[test]
    fn ipv6_literals_need_brackets_and_no_zone() {
        assert_eq!(
            Host::parse(b"[::1]"),
            Ok(Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)))
        );
        assert_eq!(
            Host::parse(b"[fe80::1%25eth0]"),
            Err(HostError::InvalidIpv6)
        );
        assert_eq!(Host::parse(b"[fe80::1%eth0]"), Err(HostError::InvalidIpv6));
        assert_eq!(Host::parse(b"[::1"), Err(HostError::InvalidIpv6));
        assert_eq!(Host::parse(b"[]"), Err(HostError::InvalidIpv6));
        assert_eq!(Host::parse(b"::1"), Err(HostError::InvalidChar));
    }

    #[test]
    fn authorities_split_host_and_port() {
        assert_eq!(
            parse_authority(b"pypi.org:443", None),
            Ok((name("pypi.org"), 443))
        );
        assert_eq!(
            parse_authority(b"pypi.org", Some(80)),
            Ok((name("pypi.org"), 80))
        );
        assert_eq!(
            parse_authority(b"pypi.org", None),
            Err(HostError::MissingPort)
        );
        assert_eq!(
            parse_authority(b"[::1]:8080", None),
            Ok((Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 8080))
        );
        assert_eq!(parse_authority(b"[::1]", Some(80)).map(|(_, p)| p), Ok(80));
        for bad in [
            &b"pypi.org:"[..],
            b"pypi.org:0",
            b"pypi.org:65536",
            b"pypi.org:080",
            b"h:+1",
        ] {
            assert_eq!(
                parse_authority(bad, None),
                Err(HostError::InvalidPort),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_authority(b"::1:80", None),
            Err(HostError::InvalidChar)
        );
        assert_eq!(
            parse_authority(b"[::1]x", None),
            Err(HostError::InvalidIpv6)
        );
        assert_eq!(
            parse_authority(b"u@h:80", None),
            Err(HostError::InvalidChar)
        );
    }

    #[test]
    fn display_brackets_ipv6() {
        assert_eq!(
            Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)).authority(443),
            "[::1]:443"
        );
        assert_eq!(name("pypi.org").authority(443), "pypi.org:443");
    }

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }
}
