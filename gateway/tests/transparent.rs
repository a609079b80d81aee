//! Transparent mode on the kernel's real paths: a client namespace with no proxy settings, a
//! gateway namespace running the shipped `deploy/nftables.conf` and `egret run`, and origins
//! behind it (see `egret_conformance::netns` for the world).
//!
//! Needs root, `ip`, `nft`, `curl` and `openssl` (`./test.sh` installs them on Debian as root).
//! Without them the test fails and says what is missing: it never passes without running.
//!
//! The checks run one after another in one world and every one runs even when an earlier one
//! failed; the failure lists each failed check with what was expected, what happened and the
//! access records involved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use egret_conformance::CONNECT_ESTABLISHED;
use egret_conformance::netns::{
    DNS_SERVER, EXPLICIT_PROXY, HEADER_TIMEOUT, ORIGIN_A, Options, ProbeEnd, ProbeResult, Run,
    World, client_hello, dns_query, probe_tcp, reframe, require_programs,
};
use serde_json::Value;

/// A fatal `access_denied` alert record: what a denied TLS client receives, and nothing else.
const ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];
const CURL_HELLO: &[u8] =
    include_bytes!("../../core/tests/fixtures/hello/curl-7.88-openssl-3.0.bin");
const NO_SNI_HELLO: &[u8] =
    include_bytes!("../../core/tests/fixtures/hello/openssl-3.0-noservername.bin");
const CHROMIUM_ECH_HELLO: &[u8] =
    include_bytes!("../../core/tests/fixtures/hello/chromium-156-x25519mlkem768.bin");
/// How long curl and openssl may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a probe waits for the gateway's answer or close.
const PROBE_DEADLINE: Duration = Duration::from_secs(4);

type Check = fn(&World) -> Result<(), String>;

#[test]
fn transparent_mode_on_tokio() {
    suite("tokio");
}

#[test]
fn transparent_mode_on_mio() {
    suite("mio");
}

#[test]
fn transparent_mode_on_glommio() {
    suite("glommio");
}

/// Runs every check against `egret --runtime runtime` in a fresh world.
fn suite(runtime: &str) {
    let started = Instant::now();
    if let Err(e) = require_programs(&[("curl", "curl"), ("openssl", "openssl")]) {
        panic!("{e}");
    }
    let options = Options::new(Path::new(env!("CARGO_BIN_EXE_egret")), runtime);
    let world = World::start(&options).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("world up in {:?}", started.elapsed());
    let checks: &[(&str, Check)] = &[
        ("curl http:// allowed (transparent HTTP)", http_allowed),
        ("curl http:// to a second origin", http_other_origin),
        ("curl https:// allowed (transparent TLS)", tls_allowed),
        ("curl http:// denied", http_denied),
        ("curl https:// denied", tls_denied),
        ("curl https:// with a spoofed destination", tls_spoofed),
        ("curl http:// with a spoofed destination", http_spoofed),
        (
            "raw keep-alive: a second request names another host",
            http_keep_alive_switch,
        ),
        ("raw hello without SNI", probe_no_sni),
        ("raw hello with ECH (Chromium)", probe_ech),
        ("raw hello in two TCP writes", probe_split_writes),
        ("raw hello in four TLS records", probe_reframed),
        ("raw hello that stalls", probe_stalled),
        ("raw plain text on port 443", probe_not_tls),
        ("raw SSLv2 hello", probe_sslv2),
        ("UDP 443 rejected", quic_rejected),
        ("TCP 22 dropped", ssh_dropped),
        ("DNS through the gateway", dns_forwarded),
        (
            "explicit: openssl -servername denied.test in a CONNECT",
            explicit_openssl_sni,
        ),
        (
            "explicit: raw CONNECT with a hello for denied.test",
            explicit_raw_sni,
        ),
        ("explicit: curl --proxy https:// allowed", explicit_allowed),
    ];
    let mut failures = Vec::new();
    for (name, check) in checks {
        let begun = Instant::now();
        let result = check(&world);
        eprintln!(
            "{:<58} {} {:>6} ms",
            name,
            if result.is_ok() { "ok    " } else { "FAILED" },
            begun.elapsed().as_millis()
        );
        if let Err(message) = result {
            failures.push(format!("--- {name}\n{message}"));
        }
    }
    eprintln!(
        "{} checks on runtime {runtime} in {:?}",
        checks.len(),
        started.elapsed()
    );
    if !failures.is_empty() {
        panic!(
            "{} of {} transparent-mode checks failed on runtime {runtime}:\n\n{}\n\n\
             --- gateway stderr:\n{}\n--- gateway config:\n{}\n--- ruleset:\n{}",
            failures.len(),
            checks.len(),
            failures.join("\n\n"),
            world.gateway_stderr(),
            world.config(),
            world.ruleset()
        );
    }
}

// ---- curl, no proxy settings: intercepted by the redirects ----

fn http_allowed(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let run = curl(world, &["http://allowed.test/transparent-http"]);
    expect_body(
        &run,
        "origin 10.77.2.2 GET /transparent-http host=allowed.test\n",
    )?;
    world.wait_for_record(
        mark,
        "TCP_MISS/200 GET http://allowed.test/transparent-http, mode transparent_http, \
         original_dst 10.77.2.2:80, no dst_mismatch",
        |r| {
            fields(
                r,
                &[
                    ("mode", "transparent_http"),
                    ("code", "TCP_MISS"),
                    ("status", "200"),
                    ("method", "GET"),
                    ("original_dst", "10.77.2.2:80"),
                    ("upstream", "10.77.2.2:80"),
                    ("dst_mismatch", "-"),
                ],
            ) && text_field(r, "url").contains("allowed.test/transparent-http")
        },
    )?;
    Ok(())
}

fn http_other_origin(world: &World) -> Result<(), String> {
    let run = curl(world, &["http://other.test/second"]);
    expect_body(&run, "origin 10.77.2.3 GET /second host=other.test\n")
}

fn tls_allowed(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let run = curl_tls(world, &["https://allowed.test/transparent-tls"]);
    expect_body(
        &run,
        "origin 10.77.2.2 GET /transparent-tls host=allowed.test sni=allowed.test\n",
    )?;
    world.wait_for_record(
        mark,
        "TCP_TUNNEL/200 CONNECT allowed.test:443, mode transparent_tls, sni allowed.test, \
         original_dst 10.77.2.2:443",
        |r| {
            fields(
                r,
                &[
                    ("mode", "transparent_tls"),
                    ("code", "TCP_TUNNEL"),
                    ("status", "200"),
                    ("method", "CONNECT"),
                    ("url", "allowed.test:443"),
                    ("sni", "allowed.test"),
                    ("original_dst", "10.77.2.2:443"),
                    ("upstream", "10.77.2.2:443"),
                    ("dst_mismatch", "-"),
                ],
            )
        },
    )?;
    Ok(())
}

fn http_denied(world: &World) -> Result<(), String> {
    let before = world.origin_stats().http_requests;
    let mark = world.log_mark();
    let run = curl(world, &["-i", "http://denied.test/denied"]);
    let want = format!(
        "HTTP/1.1 403 Forbidden\r\nServer: egret/{}\r\nContent-Type: text/html;charset=utf-8\r\n\
         Content-Length: 18\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\nConnection: close\r\n\r\n\
         ERR_ACCESS_DENIED\n",
        env!("CARGO_PKG_VERSION")
    );
    if run.code != Some(0) || run.stdout_text() != want {
        return Err(format!(
            "expected exactly the 403 reply {want:?}; got {run}"
        ));
    }
    world.wait_for_record(
        mark,
        "TCP_DENIED/403 GET http://denied.test/denied, mode transparent_http, not_allowlisted",
        |r| {
            fields(
                r,
                &[
                    ("mode", "transparent_http"),
                    ("code", "TCP_DENIED"),
                    ("status", "403"),
                    ("deny_reason", "not_allowlisted"),
                ],
            ) && text_field(r, "url").contains("denied.test/denied")
        },
    )?;
    let after = world.origin_stats().http_requests;
    if after != before {
        return Err(format!(
            "the origin served {} request(s) during a denied fetch",
            after - before
        ));
    }
    Ok(())
}

fn tls_denied(world: &World) -> Result<(), String> {
    let before = world.origin_stats().tls_requests;
    let mark = world.log_mark();
    let run = curl_tls(world, &["https://denied.test/"]);
    if run.code == Some(0)
        || !run
            .stderr
            .to_ascii_lowercase()
            .contains("alert access denied")
    {
        return Err(format!(
            "expected curl to fail on a TLS access_denied alert (error 35, 'tlsv1 alert access \
             denied'); got {run}"
        ));
    }
    world.wait_for_record(
        mark,
        "TCP_DENIED/403 CONNECT denied.test:443, mode transparent_tls, not_allowlisted",
        |r| {
            fields(
                r,
                &[
                    ("mode", "transparent_tls"),
                    ("code", "TCP_DENIED"),
                    ("status", "403"),
                    ("method", "CONNECT"),
                    ("url", "denied.test:443"),
                    ("sni", "denied.test"),
                    ("deny_reason", "not_allowlisted"),
                ],
            )
        },
    )?;
    let after = world.origin_stats().tls_requests;
    if after != before {
        return Err(format!(
            "the TLS origin served {} request(s)",
            after - before
        ));
    }
    Ok(())
}

fn tls_spoofed(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let run = curl_tls(
        world,
        &[
            "--resolve",
            "allowed.test:443:10.77.2.3",
            "https://allowed.test/spoofed-tls",
        ],
    );
    // The client aimed at 10.77.2.3; the gateway went where allowed.test resolves.
    expect_body(
        &run,
        "origin 10.77.2.2 GET /spoofed-tls host=allowed.test sni=allowed.test\n",
    )?;
    world.wait_for_record(
        mark,
        "TCP_TUNNEL/200 CONNECT allowed.test:443 with dst_mismatch true, original_dst \
         10.77.2.3:443 and upstream 10.77.2.2:443",
        |r| {
            fields(
                r,
                &[
                    ("mode", "transparent_tls"),
                    ("code", "TCP_TUNNEL"),
                    ("url", "allowed.test:443"),
                    ("dst_mismatch", "true"),
                    ("original_dst", "10.77.2.3:443"),
                    ("upstream", "10.77.2.2:443"),
                ],
            )
        },
    )?;
    Ok(())
}

fn http_spoofed(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let run = curl(
        world,
        &[
            "--resolve",
            "allowed.test:80:10.77.2.3",
            "http://allowed.test/spoofed-http",
        ],
    );
    expect_body(
        &run,
        "origin 10.77.2.2 GET /spoofed-http host=allowed.test\n",
    )?;
    world.wait_for_record(
        mark,
        "TCP_MISS/200 GET http://allowed.test/spoofed-http with dst_mismatch true, \
         original_dst 10.77.2.3:80 and upstream 10.77.2.2:80",
        |r| {
            fields(
                r,
                &[
                    ("mode", "transparent_http"),
                    ("code", "TCP_MISS"),
                    ("dst_mismatch", "true"),
                    ("original_dst", "10.77.2.3:80"),
                    ("upstream", "10.77.2.2:80"),
                ],
            ) && text_field(r, "url").contains("/spoofed-http")
        },
    )?;
    Ok(())
}

fn http_keep_alive_switch(world: &World) -> Result<(), String> {
    let before = world.origin_stats().http_requests;
    let mark = world.log_mark();
    let first = b"GET /keep-first HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
    let second = b"GET /keep-second HTTP/1.1\r\nHost: denied.test\r\n\r\n";
    let target = SocketAddr::from((ORIGIN_A, 80));
    let probe = world
        .in_client(move || {
            probe_tcp(
                target,
                &[
                    (Duration::ZERO, first),
                    (Duration::from_millis(300), second),
                ],
                None,
                PROBE_DEADLINE,
            )
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?
        .map_err(|e| format!("probe failed: {e}"))?;
    let text = String::from_utf8_lossy(&probe.received);
    let served = world.origin_stats().http_requests - before;
    if !text.contains("\r\n\r\norigin 10.77.2.2 GET /keep-first host=allowed.test\n")
        || !text.ends_with("\r\n\r\nERR_ACCESS_DENIED\n")
        || !text.contains("HTTP/1.1 403 Forbidden\r\n")
        || probe.end != ProbeEnd::Closed
        || served != 1
    {
        return Err(format!(
            "expected the origin's answer to /keep-first, then the 403 for denied.test on the \
             same connection, then a close, and one request at the origin; got {text:?}, {:?}, \
             {served} request(s) at the origin",
            probe.end
        ));
    }
    let client = probe.local.to_string();
    world.wait_for_record(
        mark,
        &format!("TCP_MISS/200 /keep-first from {client}"),
        |r| {
            fields(
                r,
                &[("client", &client), ("code", "TCP_MISS"), ("status", "200")],
            ) && text_field(r, "url").contains("/keep-first")
        },
    )?;
    world.wait_for_record(
        mark,
        &format!("TCP_DENIED/403 http://denied.test/keep-second from {client}"),
        |r| {
            fields(
                r,
                &[
                    ("client", &client),
                    ("code", "TCP_DENIED"),
                    ("status", "403"),
                ],
            ) && text_field(r, "url").contains("denied.test/keep-second")
        },
    )?;
    Ok(())
}

// ---- raw probes from the client namespace to 10.77.2.2:443 ----

fn probe_no_sni(world: &World) -> Result<(), String> {
    expect_denied_probe(world, &[(Duration::ZERO, NO_SNI_HELLO)], "no_sni", None)
}

fn probe_ech(world: &World) -> Result<(), String> {
    expect_denied_probe(
        world,
        &[(Duration::ZERO, CHROMIUM_ECH_HELLO)],
        "encrypted_client_hello",
        None,
    )
}

fn probe_split_writes(world: &World) -> Result<(), String> {
    let (first, second) = CURL_HELLO.split_at(100);
    let writes = [
        (Duration::ZERO, first),
        (Duration::from_millis(300), second),
    ];
    expect_origin_answers(world, &writes)
}

fn probe_reframed(world: &World) -> Result<(), String> {
    let framed = reframe(CURL_HELLO, 4).ok_or("the curl fixture is not one handshake record")?;
    expect_origin_answers(world, &[(Duration::ZERO, &framed)])
}

fn probe_stalled(world: &World) -> Result<(), String> {
    expect_denied_probe(
        world,
        &[(Duration::ZERO, &CURL_HELLO[..60])],
        "invalid_client_hello",
        Some(HEADER_TIMEOUT),
    )
}

fn probe_not_tls(world: &World) -> Result<(), String> {
    let request = b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
    expect_denied_probe(
        world,
        &[(Duration::ZERO, request)],
        "invalid_client_hello",
        None,
    )
}

fn probe_sslv2(world: &World) -> Result<(), String> {
    // An SSLv2-compatible CLIENT-HELLO: two-byte length with the high bit set, then
    // msg_type 1, version 3.1, cipher-spec, session-id and challenge lengths, 3 + 0 + 16 bytes.
    let mut hello = vec![
        0x80, 0x1c, 0x01, 0x03, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x10,
    ];
    hello.extend_from_slice(&[0x00, 0x00, 0x2f]);
    hello.extend_from_slice(&[0x5a; 16]);
    expect_denied_probe(
        world,
        &[(Duration::ZERO, &hello)],
        "invalid_client_hello",
        None,
    )
}

// ---- the firewall ----

fn quic_rejected(world: &World) -> Result<(), String> {
    let before = world.origin_stats().udp_443_datagrams;
    let target = SocketAddr::from((ORIGIN_A, 443));
    let (result, elapsed) = world
        .in_client(move || {
            let begun = Instant::now();
            let result = (|| {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                socket.connect(target)?;
                socket.set_read_timeout(Some(Duration::from_secs(1)))?;
                socket.send(b"\xc0quic initial")?;
                let mut buf = [0u8; 1500];
                socket.recv(&mut buf)
            })();
            (result, begun.elapsed())
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?;
    let after = world.origin_stats().udp_443_datagrams;
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && after == before => Ok(()),
        other => Err(format!(
            "expected ECONNREFUSED (ICMP port unreachable from the gateway) within 1 s and \
             nothing reaching the origin's UDP 443 echo; got {other:?} after {elapsed:?}, the \
             origin received {} datagram(s)",
            after - before
        )),
    }
}

fn ssh_dropped(world: &World) -> Result<(), String> {
    let before = world.origin_stats().ssh_connections;
    let target = SocketAddr::from((ORIGIN_A, 22));
    let (result, elapsed) = world
        .in_client(move || {
            let begun = Instant::now();
            let result = TcpStream::connect_timeout(&target, Duration::from_millis(1500));
            (result.map(|_| ()), begun.elapsed())
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?;
    let after = world.origin_stats().ssh_connections;
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut && after == before => Ok(()),
        other => Err(format!(
            "expected the SYN to 10.77.2.2:22 to be dropped (connect timing out, no RST) \
             although the origin listens there; got {other:?} after {elapsed:?}, the origin \
             accepted {} connection(s)",
            after - before
        )),
    }
}

fn dns_forwarded(world: &World) -> Result<(), String> {
    let before = world.origin_stats().dns_queries;
    let server = SocketAddr::from((DNS_SERVER, 53));
    let timeout = Duration::from_secs(2);
    let (known, unknown) = world
        .in_client(move || {
            (
                dns_query(server, "allowed.test", timeout),
                dns_query(server, "nowhere.test", timeout),
            )
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?;
    match &known {
        Ok(reply) if !reply.nxdomain && reply.addrs == [ORIGIN_A] => {}
        other => {
            return Err(format!(
                "expected allowed.test A 10.77.2.2 from 10.77.2.53 through the gateway; got \
                 {other:?}"
            ));
        }
    }
    match &unknown {
        Ok(reply) if reply.nxdomain && reply.addrs.is_empty() => {}
        other => return Err(format!("expected NXDOMAIN for nowhere.test; got {other:?}")),
    }
    let after = world.origin_stats().dns_queries;
    if after < before + 2 {
        return Err(format!(
            "the DNS server counted {} of the 2 queries",
            after - before
        ));
    }
    Ok(())
}

// ---- explicit mode in the same world ----

fn explicit_openssl_sni(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let proxy = EXPLICIT_PROXY.to_string();
    let ca = world.ca().to_string_lossy().into_owned();
    let run = world.run_in_client(
        "openssl",
        &[
            "s_client",
            "-proxy",
            &proxy,
            "-connect",
            "allowed.test:443",
            "-servername",
            "denied.test",
            "-CAfile",
            &ca,
        ],
        CLIENT_TIMEOUT,
    );
    let said = format!("{}{}", run.stdout_text(), run.stderr).to_ascii_lowercase();
    if run.code == Some(0) || run.timed_out || !said.contains("alert access denied") {
        return Err(format!(
            "expected openssl to fail on a TLS access_denied alert ('tlsv1 alert access \
             denied'); got {run}"
        ));
    }
    world.wait_for_record(
        mark,
        "TCP_DENIED/403 CONNECT allowed.test:443, mode explicit, sni denied.test, \
         deny_reason sni_not_allowed",
        |r| {
            fields(
                r,
                &[
                    ("mode", "explicit"),
                    ("code", "TCP_DENIED"),
                    ("status", "403"),
                    ("method", "CONNECT"),
                    ("url", "allowed.test:443"),
                    ("sni", "denied.test"),
                    ("deny_reason", "sni_not_allowed"),
                ],
            )
        },
    )?;
    Ok(())
}

fn explicit_raw_sni(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let hello = client_hello("denied.test")?;
    let connect = b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n";
    let proxy = SocketAddr::V4(EXPLICIT_PROXY);
    let probe = world
        .in_client(move || {
            probe_tcp(
                proxy,
                &[
                    (Duration::ZERO, connect),
                    (Duration::from_millis(100), &hello),
                ],
                None,
                PROBE_DEADLINE,
            )
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?
        .map_err(|e| format!("probe failed: {e}"))?;
    let mut want = CONNECT_ESTABLISHED.to_vec();
    want.extend_from_slice(&ALERT);
    if probe.received != want || probe.end != ProbeEnd::Closed {
        return Err(format!(
            "expected the 200 reply, then exactly the alert {ALERT:02x?}, then a close; {}",
            describe_probe(&probe)
        ));
    }
    world.wait_for_record(
        mark,
        &format!(
            "TCP_DENIED/403 CONNECT allowed.test:443 from {}, deny_reason sni_not_allowed",
            probe.local
        ),
        |r| {
            fields(
                r,
                &[
                    ("client", &probe.local.to_string()),
                    ("mode", "explicit"),
                    ("code", "TCP_DENIED"),
                    ("status", "403"),
                    ("url", "allowed.test:443"),
                    ("sni", "denied.test"),
                    ("deny_reason", "sni_not_allowed"),
                ],
            )
        },
    )?;
    Ok(())
}

fn explicit_allowed(world: &World) -> Result<(), String> {
    let mark = world.log_mark();
    let proxy = format!("http://{EXPLICIT_PROXY}");
    let run = curl_tls(world, &["--proxy", &proxy, "https://allowed.test/explicit"]);
    expect_body(
        &run,
        "origin 10.77.2.2 GET /explicit host=allowed.test sni=allowed.test\n",
    )?;
    world.wait_for_record(
        mark,
        "TCP_TUNNEL/200 CONNECT allowed.test:443, mode explicit",
        |r| {
            fields(
                r,
                &[
                    ("mode", "explicit"),
                    ("code", "TCP_TUNNEL"),
                    ("status", "200"),
                    ("url", "allowed.test:443"),
                    ("sni", "allowed.test"),
                    ("upstream", "10.77.2.2:443"),
                ],
            )
        },
    )?;
    Ok(())
}

// ---- helpers ----

/// Sends `writes` to 10.77.2.2:443 from the client and expects exactly the alert, then a
/// close, logged as TCP_DENIED/403 with `deny_reason`; with `stall`, not before it has passed.
fn expect_denied_probe(
    world: &World,
    writes: &[(Duration, &[u8])],
    deny_reason: &str,
    stall: Option<Duration>,
) -> Result<(), String> {
    let mark = world.log_mark();
    let writes: Vec<(Duration, Vec<u8>)> = writes.iter().map(|(d, b)| (*d, b.to_vec())).collect();
    let target = SocketAddr::from((ORIGIN_A, 443));
    let probe = world
        .in_client(move || {
            let writes: Vec<(Duration, &[u8])> =
                writes.iter().map(|(d, b)| (*d, b.as_slice())).collect();
            probe_tcp(target, &writes, None, PROBE_DEADLINE)
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?
        .map_err(|e| format!("probe failed: {e}"))?;
    if probe.received != ALERT || probe.end != ProbeEnd::Closed {
        return Err(format!(
            "expected exactly the alert {ALERT:02x?}, then a close; {}",
            describe_probe(&probe)
        ));
    }
    if let Some(stall) = stall {
        // The alert must come from the header timer, not at once.
        if probe.after_last_write < stall.mul_f32(0.9) {
            return Err(format!(
                "expected the alert only after header_timeout ({stall:?}); it came after {:?}",
                probe.after_last_write
            ));
        }
    }
    world.wait_for_record(
        mark,
        &format!(
            "TCP_DENIED/403 from {} with deny_reason {deny_reason}, mode transparent_tls",
            probe.local
        ),
        |r| {
            fields(
                r,
                &[
                    ("client", &probe.local.to_string()),
                    ("mode", "transparent_tls"),
                    ("code", "TCP_DENIED"),
                    ("status", "403"),
                    ("deny_reason", deny_reason),
                ],
            )
        },
    )?;
    Ok(())
}

/// Sends an allowed hello for allowed.test to 10.77.2.2:443 and expects the real TLS origin's
/// answer (a handshake record, 0x16), not an alert (0x15).
fn expect_origin_answers(world: &World, writes: &[(Duration, &[u8])]) -> Result<(), String> {
    let mark = world.log_mark();
    let writes: Vec<(Duration, Vec<u8>)> = writes.iter().map(|(d, b)| (*d, b.to_vec())).collect();
    let target = SocketAddr::from((ORIGIN_A, 443));
    let probe = world
        .in_client(move || {
            let writes: Vec<(Duration, &[u8])> =
                writes.iter().map(|(d, b)| (*d, b.as_slice())).collect();
            probe_tcp(target, &writes, Some(1), PROBE_DEADLINE)
        })
        .map_err(|e| format!("cannot enter the client namespace: {e}"))?
        .map_err(|e| format!("probe failed: {e}"))?;
    if probe.received.first() != Some(&0x16) {
        return Err(format!(
            "expected the origin's ServerHello (first byte 0x16, a handshake record); {}",
            describe_probe(&probe)
        ));
    }
    // The probe hung up after the first bytes; the tunnel's record follows.
    world.wait_for_record(
        mark,
        &format!(
            "TCP_TUNNEL/200 CONNECT allowed.test:443 from {}",
            probe.local
        ),
        |r| {
            fields(
                r,
                &[
                    ("client", &probe.local.to_string()),
                    ("mode", "transparent_tls"),
                    ("code", "TCP_TUNNEL"),
                    ("status", "200"),
                    ("url", "allowed.test:443"),
                    ("upstream", "10.77.2.2:443"),
                ],
            )
        },
    )?;
    Ok(())
}

fn describe_probe(probe: &ProbeResult) -> String {
    format!(
        "received {} byte(s) {:02x?} and the connection ended {:?} {:?} after the last write",
        probe.received.len(),
        &probe.received[..probe.received.len().min(64)],
        probe.end,
        probe.after_last_write
    )
}

fn curl(world: &World, args: &[&str]) -> Run {
    let mut all = vec!["--silent", "--show-error", "--max-time", "5"];
    all.extend_from_slice(args);
    world.run_in_client("curl", &all, CLIENT_TIMEOUT)
}

fn curl_tls(world: &World, args: &[&str]) -> Run {
    let ca = world.ca().to_string_lossy().into_owned();
    let mut all = vec!["--cacert", ca.as_str()];
    all.extend_from_slice(args);
    curl(world, &all)
}

fn expect_body(run: &Run, want: &str) -> Result<(), String> {
    if run.code == Some(0) && run.stdout_text() == want {
        Ok(())
    } else {
        Err(format!("expected exit 0 and the body {want:?}; got {run}"))
    }
}

/// Returns whether every `(key, value)` holds: strings compared as written, numbers and
/// booleans by their text, `"-"` meaning absent (the JSON log leaves out empty fields and
/// false flags).
fn fields(record: &Value, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(key, value)| match (&record[*key], *value) {
            (Value::Null, "-") => true,
            (Value::String(s), v) => s == v,
            (Value::Number(n), v) => n.to_string() == v,
            (Value::Bool(b), v) => b.to_string() == v,
            (Value::Null | Value::Array(_) | Value::Object(_), _) => false,
        })
}

fn text_field<'a>(record: &'a Value, key: &str) -> &'a str {
    record[key].as_str().unwrap_or("")
}

#[test]
fn the_log_matcher_can_say_no() {
    let record: Value =
        serde_json::from_str(r#"{"mode":"transparent_tls","status":403,"dst_mismatch":true}"#)
            .unwrap();
    assert!(fields(
        &record,
        &[("mode", "transparent_tls"), ("status", "403")]
    ));
    assert!(fields(&record, &[("dst_mismatch", "true"), ("sni", "-")]));
    assert!(!fields(&record, &[("mode", "explicit")]));
    assert!(!fields(&record, &[("status", "200")]));
    assert!(!fields(&record, &[("dst_mismatch", "-")]));
    assert!(!fields(&record, &[("sni", "allowed.test")]));
}
