//! The PROXY protocol header a load balancer puts in front of a connection (v1 text and v2
//! binary, as an AWS Network Load Balancer sends), parsed by the `ppp` crate.
//!
//! The header says who the client really is; behind a PrivateLink endpoint, v2's AWS TLV
//! (type 0xEA, subtype 0x01) also names the VPC endpoint the client came through. A v2 LOCAL
//! command is the load balancer's own health check.

use std::net::{IpAddr, SocketAddr};

/// Whether listeners expect a PROXY protocol header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// No header is expected: one is just a bad request.
    #[default]
    Off,
    /// A header is used when present.
    Optional,
    /// Every connection must start with a header; others are closed.
    Required,
}

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The start of a v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;
/// The AWS TLV type, and its VPC endpoint id subtype.
const AWS_TLV: u8 = 0xEA;
const AWS_VPCE_ID: u8 = 0x01;

/// What the start of a connection holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProxyStatus {
    /// More bytes are needed to tell.
    Partial,
    /// No header: the bytes are the client's own.
    Absent,
    /// A whole header.
    Header(ProxyHeader),
    /// A header that cannot be used; the detail names why.
    Invalid(&'static str),
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// The header's length in bytes.
    pub(crate) len: usize,
    /// The real client, when the header names one (not for LOCAL or UNKNOWN).
    pub(crate) source: Option<SocketAddr>,
    /// A LOCAL command: the load balancer checking health, not a client.
    pub(crate) local: bool,
    /// The VPC endpoint id, behind PrivateLink.
    pub(crate) vpc_endpoint: Option<Box<str>>,
}

impl ProxyProtocol {
    /// Returns `off`, `optional` or `required`, as the configuration spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::Optional => "optional",
            ProxyProtocol::Required => "required",
        }
    }
}

/// Reads a header from the start of `buf`, accepting at most `max` bytes for it.
pub(crate) fn read(buf: &[u8], max: usize) -> ProxyStatus {
    if buf.starts_with(V2_SIGNATURE) {
        return read_v2(buf, max);
    }
    if buf.starts_with(V1_PREFIX) {
        return read_v1(buf);
    }
    if V2_SIGNATURE.starts_with(buf) || V1_PREFIX.starts_with(buf) {
        return ProxyStatus::Partial;
    }
    ProxyStatus::Absent
}

fn read_v2(buf: &[u8], max: usize) -> ProxyStatus {
    if let [_, _, _, _, _, _, _, _, _, _, _, _, _, _, hi, lo, ..] = *buf {
        if 16 + usize::from(u16::from_be_bytes([hi, lo])) > max {
            return ProxyStatus::Invalid("proxy_header_too_large");
        }
    }
    let header = match ppp::v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(ppp::v2::ParseError::Incomplete(_) | ppp::v2::ParseError::Partial(..)) => {
            return ProxyStatus::Partial;
        }
        Err(_) => return ProxyStatus::Invalid("invalid_proxy_header"),
    };
    let source = match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    };
    let mut vpc_endpoint = None;
    for tlv in header.tlvs() {
        let Ok(tlv) = tlv else {
            return ProxyStatus::Invalid("invalid_proxy_header");
        };
        if let (AWS_TLV, [AWS_VPCE_ID, id @ ..]) = (tlv.kind, &*tlv.value) {
            let printable = !id.is_empty() && id.len() <= 64 && id.iter().all(u8::is_ascii_graphic);
            if !printable {
                return ProxyStatus::Invalid("invalid_vpc_endpoint_id");
            }
            vpc_endpoint = std::str::from_utf8(id).ok().map(Box::from);
        }
    }
    let local = header.command == ppp::v2::Command::Local;
    ProxyStatus::Header(ProxyHeader {
        len: header.len(),
        source,
        local,
        vpc_endpoint,
    })
}

fn read_v1(buf: &[u8]) -> ProxyStatus {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return match buf.len() >= V1_MAX {
            true => ProxyStatus::Invalid("proxy_header_too_large"),
            false => ProxyStatus::Partial,
        };
    };
    let Ok(header) = ppp::v1::Header::try_from(&buf[..=lf]) else {
        return ProxyStatus::Invalid("invalid_proxy_header");
    };
    let source = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    };
    ProxyStatus::Header(ProxyHeader {
        len: lf + 1,
        source,
        local: false,
        vpc_endpoint: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers_name_the_client() {
        let buf = b"PROXY TCP4 10.0.1.17 10.0.0.5 40000 3128\r\nCONNECT a:443";
        let ProxyStatus::Header(header) = read(buf, 16384) else {
            panic!()
        };
        assert_eq!(header.len, 42);
        assert_eq!(header.source, Some("10.0.1.17:40000".parse().unwrap()));
        let unknown = read(b"PROXY UNKNOWN\r\n", 16384);
        assert!(matches!(
            unknown,
            ProxyStatus::Header(ProxyHeader { source: None, .. })
        ));
    }

    #[test]
    fn prefixes_wait_and_anything_else_is_absent() {
        assert_eq!(read(b"PRO", 16384), ProxyStatus::Partial);
        assert_eq!(read(b"\r\n\r\n\0", 16384), ProxyStatus::Partial);
        assert_eq!(read(b"PROXY TCP4 10.0.1.17", 16384), ProxyStatus::Partial);
        assert_eq!(
            read(b"CONNECT a:443 HTTP/1.1\r\n", 16384),
            ProxyStatus::Absent
        );
        assert_eq!(read(b"\x16\x03\x01", 16384), ProxyStatus::Absent);
        assert_eq!(
            read(b"PROXY FOO\r\n", 16384),
            ProxyStatus::Invalid("invalid_proxy_header")
        );
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(
            read(&long, 16384),
            ProxyStatus::Invalid("proxy_header_too_large")
        );
    }
}
