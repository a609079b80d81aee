//! PROXY protocol headers in front of connections, as an AWS Network Load Balancer sends them:
//! v1 text, v2 binary with the AWS TLV naming a VPC endpoint, LOCAL health checks, and each
//! of off / optional / required, split at every byte.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use egret_core::policy::{Allowlist, Entry, Policy};
use egret_core::{Peer, ProxyProtocol, Reason, format};
use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
use support::{Harness, settings, text};

const CONNECT: &[u8] = b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n";
const V1: &[u8] = b"PROXY TCP4 10.9.8.7 10.0.0.1 51234 3128\r\n";
const IP: &str = "151.101.0.223";

#[test]
fn a_v1_header_names_the_client_the_log_shows() {
    let mut h = harness(ProxyProtocol::Required);
    h.client(&[V1, CONNECT].concat());
    assert_eq!(h.take_actions(), ["resolve allowed.test"]);
    h.open(IP);
    h.written_to_client();
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(closed.client, sock("10.9.8.7:51234"));
    assert_eq!(h.decided()[0].client, sock("10.9.8.7:51234"));
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" 10.9.8.7 TCP_TUNNEL/200 "), "{line}");
}

#[test]
fn a_v2_header_with_the_aws_tlv_names_the_vpc_endpoint() {
    let mut h = harness(ProxyProtocol::Required);
    h.client(&[v2("vpce-0123456789abcdef0"), CONNECT.to_vec()].concat());
    h.open(IP);
    h.written_to_client();
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(closed.client, sock("10.9.8.7:51234"));
    assert_eq!(
        closed.vpc_endpoint.as_deref(),
        Some("vpce-0123456789abcdef0")
    );
    let mut line = String::new();
    format::json(&closed, &mut line);
    assert!(
        line.contains("\"vpc_endpoint_id\":\"vpce-0123456789abcdef0\""),
        "{line}"
    );
    assert!(line.contains("\"client\":\"10.9.8.7:51234\""), "{line}");
}

#[test]
fn headers_split_at_every_byte_are_read_alike() {
    for header in [V1.to_vec(), v2("vpce-0123456789abcdef0")] {
        let whole = [header.clone(), CONNECT.to_vec()].concat();
        for cut in 1..whole.len() {
            let mut h = harness(ProxyProtocol::Optional);
            h.client(&whole[..cut]);
            h.client(&whole[cut..]);
            assert_eq!(h.take_actions(), ["resolve allowed.test"], "cut at {cut}");
            h.open(IP);
            h.written_to_client();
            h.splice_end(egret_core::SpliceEnd::Finished);
            assert_eq!(
                h.only_closed().client,
                sock("10.9.8.7:51234"),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn a_local_command_is_a_health_check_closed_cleanly_without_a_record() {
    let unspecified = ppp::v2::Addresses::Unspecified;
    let local = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        unspecified,
    )
    .build()
    .unwrap();
    let mut h = harness(ProxyProtocol::Required);
    h.client(&local);
    assert_eq!(h.take_actions(), ["close"]);
    assert!(h.events.is_empty());
}

#[test]
fn optional_serves_connections_without_a_header() {
    let mut h = harness(ProxyProtocol::Optional);
    h.client(CONNECT);
    assert_eq!(h.take_actions(), ["resolve allowed.test"]);
    h.open(IP);
    h.written_to_client();
    h.splice_end(egret_core::SpliceEnd::Finished);
    assert_eq!(h.only_closed().client, sock(support::CLIENT_ADDR));
}

#[test]
fn required_closes_a_connection_without_a_header() {
    let mut h = harness(ProxyProtocol::Required);
    h.client(CONNECT);
    assert_eq!(h.take_actions(), ["reset"]);
    assert!(h.pending(Peer::Client).is_empty());
    let closed = h.only_closed();
    assert_eq!(
        (closed.reason, closed.detail),
        (Reason::InvalidRequest, Some("proxy_header_missing"))
    );
    assert_eq!(closed.url, "error:invalid-proxy-header");
}

#[test]
fn broken_headers_are_refused() {
    let cases: [(&[u8], &str); 3] = [
        (b"PROXY TCP4 10.9.8.7 nonsense\r\n", "invalid_proxy_header"),
        (
            b"PROXY TCP4 999.9.8.7 10.0.0.1 1 2\r\n",
            "invalid_proxy_header",
        ),
        (
            &[b"PROXY TCP4 ".as_slice(), &[b'9'; 200]].concat(),
            "proxy_header_too_large",
        ),
    ];
    for (bytes, detail) in cases {
        let mut h = harness(ProxyProtocol::Optional);
        h.client(bytes);
        assert_eq!(h.take_actions(), ["reset"], "{detail}");
        assert_eq!(h.only_closed().detail, Some(detail));
    }
}

#[test]
fn a_header_slower_than_the_header_timeout_is_refused() {
    let mut h = harness(ProxyProtocol::Required);
    h.client(b"PROXY TCP4 10.9");
    h.advance(Duration::from_secs(10));
    assert_eq!(h.take_actions(), ["reset"]);
    assert_eq!(h.only_closed().detail, Some("proxy_header_timeout"));
}

#[test]
fn with_the_protocol_off_a_header_is_just_a_bad_request() {
    let mut h = harness(ProxyProtocol::Off);
    h.client(&[V1, CONNECT].concat());
    assert!(text(&h.written_to_client()).starts_with("HTTP/1.1 400 Bad Request\r\n"));
}

fn harness(proxy_protocol: ProxyProtocol) -> Harness {
    let list = Allowlist::compile([Entry::parse("allowed.test").expect("a valid entry").0]);
    Harness::with_proxy_protocol(Policy::new(list, settings()), proxy_protocol)
}

fn v2(vpce: &str) -> Vec<u8> {
    let addresses = IPv4::new([10, 9, 8, 7], [10, 0, 0, 1], 51234, 3128);
    let mut tlv = vec![0x01];
    tlv.extend_from_slice(vpce.as_bytes());
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .write_tlv(0xEA, &tlv)
        .expect("a TLV that fits")
        .build()
        .expect("a well-formed v2 header")
}

fn sock(addr: &str) -> SocketAddr {
    addr.parse().expect("a socket address")
}
