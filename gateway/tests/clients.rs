//! Real clients through the live gateway: curl as an HTTP proxy client, for `http://` URLs
//! and for `https://` through CONNECT to a local TLS origin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;

use egret_conformance::live::{LiveGateway, serve_http};

/// The body the TLS origin serves: large enough to span many TLS records and TCP segments.
fn payload() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz\n"[(i % 37) as usize])
        .collect()
}

#[test]
fn curl_fetches_an_allowed_http_url_and_gets_the_403_for_a_denied_one() {
    let origin = serve_http().unwrap();
    let world = World::start(origin, None);
    let allowed = world.curl(&[&format!("http://allowed.test:{origin}/via-curl")]);
    assert_eq!(allowed.status, 0, "{}", allowed.stderr);
    assert!(
        allowed.stdout.contains("origin: GET /via-curl\n"),
        "{}",
        allowed.stdout
    );

    let denied = world.curl(&["-i", &format!("http://denied.test:{origin}/")]);
    let want = format!(
        "HTTP/1.1 403 Forbidden\r\nServer: egret/{}\r\nContent-Type: text/html;charset=utf-8\r\n\
         Content-Length: 18\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\nConnection: close\r\n\r\n\
         ERR_ACCESS_DENIED\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(denied.stdout, want);
    world
        .gateway
        .wait_for_line(&["TCP_MISS/200", "GET", "/via-curl"])
        .unwrap();
    world
        .gateway
        .wait_for_line(&["TCP_DENIED/403", "GET", "http://denied.test"])
        .unwrap();
}

#[test]
fn curl_reuses_one_connection_and_each_request_is_decided_on_its_own() {
    let origin = serve_http().unwrap();
    let world = World::start(origin, None);
    let out = world.curl(&[
        "-w",
        "[%{http_code} %{num_connects}]\n",
        &format!("http://allowed.test:{origin}/first"),
        &format!("http://allowed.test:{origin}/second"),
        &format!("http://denied.test:{origin}/third"),
    ]);
    assert!(
        out.stdout.contains("origin: GET /first\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("origin: GET /second\n"),
        "{}",
        out.stdout
    );
    // The second request rode the first connection (no new connect); the third was refused.
    assert!(out.stdout.contains("[200 1]"), "{}", out.stdout);
    assert!(out.stdout.contains("[200 0]"), "{}", out.stdout);
    assert!(
        out.stdout.contains("ERR_ACCESS_DENIED\n[403"),
        "{}",
        out.stdout
    );
    world
        .gateway
        .wait_for_line(&["TCP_DENIED/403", "/third"])
        .unwrap();
}

#[test]
fn curl_fetches_https_through_connect_and_the_body_arrives_intact() {
    let origin = serve_http().unwrap();
    let tls = TlsOrigin::start();
    let world = World::start(origin, Some(tls.port));
    let out = world.curl_bytes(&[
        "--cacert",
        tls.ca.to_str().unwrap(),
        &format!("https://tls.test:{}/payload", tls.port),
    ]);
    assert_eq!(out.0, 0, "{}", out.2);
    assert!(
        out.1 == payload(),
        "the body differs ({} bytes)",
        out.1.len()
    );
    let line = world
        .gateway
        .wait_for_line(&["TCP_TUNNEL/200", &format!("CONNECT tls.test:{}", tls.port)])
        .unwrap();
    assert!(line.contains("HIER_DIRECT/127.0.0.1"), "{line}");

    let denied = world.curl_bytes(&[
        "--cacert",
        tls.ca.to_str().unwrap(),
        &format!("https://denied.test:{}/", tls.port),
    ]);
    assert_eq!(
        denied.0, 56,
        "curl reports the proxy's refusal: {}",
        denied.2
    );
    assert!(denied.2.contains("403"), "{}", denied.2);
    world
        .gateway
        .wait_for_line(&["TCP_DENIED/403", "CONNECT denied.test:"])
        .unwrap();
}

struct World {
    gateway: LiveGateway,
    _dir: tempfile::TempDir,
}

struct Output {
    status: i32,
    stdout: String,
    stderr: String,
}

impl World {
    fn start(http: u16, tls: Option<u16>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("access.log");
        let ports: Vec<String> = [Some(http), tls]
            .iter()
            .flatten()
            .map(u16::to_string)
            .collect();
        let config = format!(
            "[listen]\nexplicit = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
             [allowlist]\ndomains = [\"allowed.test\", \"tls.test\"]\n\
             [policy]\nports = [{}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\
             [resolver]\nhosts = {{ \"allowed.test\" = [\"127.0.0.1\"], \"tls.test\" = [\"127.0.0.1\"], \"denied.test\" = [\"127.0.0.1\"] }}\n\
             [log]\nformat = \"squid\"\npath = {:?}\n",
            ports.join(", "),
            log_path.to_string_lossy()
        );
        let config_path = dir.path().join("egret.toml");
        std::fs::write(&config_path, config).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_egret"));
        let gateway = LiveGateway::start(bin, "tokio", &config_path, log_path).unwrap();
        World { gateway, _dir: dir }
    }

    fn curl(&self, args: &[&str]) -> Output {
        let (status, stdout, stderr) = self.curl_bytes(args);
        Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
        }
    }

    fn curl_bytes(&self, args: &[&str]) -> (i32, Vec<u8>, String) {
        let proxy = format!("http://{}", self.gateway.addr);
        let output = Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--noproxy",
                "",
                "--proxy",
                &proxy,
            ])
            .args(args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .output()
            .expect("curl is installed (the test command installs it)");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap_or(-1), output.stdout, stderr)
    }
}

/// A TLS origin on loopback with a certificate for `tls.test` from a throwaway CA file.
struct TlsOrigin {
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsOrigin {
    fn start() -> TlsOrigin {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["tls.test".to_owned()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let body = payload();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes());
                    let _ = tls.write_all(&body);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        TlsOrigin {
            port,
            ca,
            _dir: dir,
        }
    }
}
