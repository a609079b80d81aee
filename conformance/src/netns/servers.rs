//! The origins of the namespace world: HTTP and TLS servers whose bodies name the address that
//! served them, a TCP sink on the SSH port, a UDP echo on port 443 and a DNS responder.
//!
//! Sockets are created on a thread inside the origin namespace; each serving loop polls a stop
//! flag, so dropping [`Origins`] ends every thread within a fraction of a second.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

use super::{DNS_SERVER, NAMES, ORIGIN_A, ORIGIN_B, SetupError, in_namespace};

/// How often a serving loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// How long a connection may keep an origin waiting.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head an origin reads.
const MAX_HEAD: usize = 16 * 1024;

/// What the origins have seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginStats {
    /// Requests answered on port 80.
    pub http_requests: usize,
    /// Requests answered over TLS on port 443.
    pub tls_requests: usize,
    /// Connections accepted on port 22.
    pub ssh_connections: usize,
    /// Datagrams received on UDP port 443.
    pub udp_443_datagrams: usize,
    /// DNS queries answered.
    pub dns_queries: usize,
}

/// Returns the DNS server's reply to `query`: the address of a name in [`NAMES`] for an `A`
/// question, no answer (NOERROR) for another type of a known name, NXDOMAIN for any other
/// name; `None` when `query` is not a DNS query.
#[must_use]
pub fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    if query.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    for question in &query.questions {
        reply.questions.push(question.clone());
        let name = question.qname.to_string().to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        let Some((_, ip)) = NAMES.iter().find(|(known, _)| *known == name) else {
            *reply.rcode_mut() = RCODE::NameError;
            continue;
        };
        let internet = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
        if question.qtype == QTYPE::TYPE(TYPE::A) && internet {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                60,
                RData::A(A::from(*ip)),
            ));
        }
    }
    reply.build_bytes_vec().ok()
}

/// The origins' certificate, signed by a throwaway CA whose PEM file the clients trust.
#[derive(Debug)]
pub(super) struct TlsMaterial {
    pub(super) ca_path: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TlsMaterial {
    /// Makes a CA and a server certificate for every name in [`NAMES`]; writes the CA to
    /// `dir/ca.pem`.
    pub(super) fn generate(dir: &Path) -> Result<TlsMaterial, SetupError> {
        let fail = |e: &dyn std::fmt::Display| SetupError(format!("cannot make certificates: {e}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Egret netns test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(|e| fail(&e))?;
        let ca = ca_params.self_signed(&ca_key).map_err(|e| fail(&e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = NAMES.iter().map(|(name, _)| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(|e| fail(&e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "allowed.test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| fail(&e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| fail(&e))?;

        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).map_err(|e| fail(&e))?;
        let chain = vec![cert.der().clone(), ca.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| fail(&e))?;
        Ok(TlsMaterial {
            ca_path,
            server: Arc::new(server),
        })
    }
}

/// The running origin servers; stopped on drop.
#[derive(Debug)]
pub(super) struct Origins {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    http: AtomicUsize,
    tls: AtomicUsize,
    ssh: AtomicUsize,
    udp_443: AtomicUsize,
    dns: AtomicUsize,
}

/// What a TCP listener serves.
#[derive(Clone)]
enum Service {
    Http,
    Tls(Arc<rustls::ServerConfig>),
    Ssh,
}

impl Origins {
    /// Binds every origin socket inside the namespace `ns` and starts serving.
    pub(super) fn start(ns: &str, tls: &TlsMaterial) -> Result<Origins, SetupError> {
        let mut origins = Origins {
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
            threads: Vec::new(),
        };
        let stop = origins.stop.clone();
        let counters = origins.counters.clone();
        let server = tls.server.clone();
        let started = in_namespace(ns, move || -> io::Result<Vec<JoinHandle<()>>> {
            let mut threads = Vec::new();
            for ip in [ORIGIN_A, ORIGIN_B] {
                for (port, service) in [
                    (80, Service::Http),
                    (443, Service::Tls(server.clone())),
                    (22, Service::Ssh),
                ] {
                    let listener = bind_tcp(ip, port)?;
                    threads.push(serve_tcp(listener, service, &stop, &counters)?);
                }
            }
            // Something listens on UDP 443, so that a datagram the firewall let through would
            // be answered, not refused by the origin's own kernel.
            let quic = bind_udp(ORIGIN_A, 443)?;
            threads.push(serve_udp(quic, &stop, &counters, |_, data| {
                Some(data.to_vec())
            })?);
            let dns = bind_udp(DNS_SERVER, 53)?;
            threads.push(serve_udp(dns, &stop, &counters, |counters, query| {
                counters.dns.fetch_add(1, Ordering::Relaxed);
                dns_answer(query)
            })?);
            Ok(threads)
        });
        match started {
            Ok(Ok(threads)) => {
                origins.threads = threads;
                Ok(origins)
            }
            Ok(Err(e)) | Err(e) => Err(SetupError(format!("cannot start the origins: {e}"))),
        }
    }

    /// Returns the counters.
    pub(super) fn stats(&self) -> OriginStats {
        let c = &self.counters;
        OriginStats {
            http_requests: c.http.load(Ordering::Relaxed),
            tls_requests: c.tls.load(Ordering::Relaxed),
            ssh_connections: c.ssh.load(Ordering::Relaxed),
            udp_443_datagrams: c.udp_443.load(Ordering::Relaxed),
            dns_queries: c.dns.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Origins {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn bind_tcp(ip: Ipv4Addr, port: u16) -> io::Result<TcpListener> {
    let listener = TcpListener::bind((ip, port))
        .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}:{port}/tcp: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn bind_udp(ip: Ipv4Addr, port: u16) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind((ip, port))
        .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}:{port}/udp: {e}")))?;
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

/// Accepts connections until the stop flag is set, one thread per connection.
fn serve_tcp(
    listener: TcpListener,
    service: Service,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) -> io::Result<JoinHandle<()>> {
    let stop = stop.clone();
    let counters = counters.clone();
    thread::Builder::new()
        .name("netns-origin".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let service = service.clone();
                        let counters = counters.clone();
                        thread::spawn(move || serve_connection(stream, &service, &counters));
                    }
                    Err(_) => thread::sleep(POLL),
                }
            }
        })
}

/// Answers datagrams with `answer` until the stop flag is set.
fn serve_udp(
    socket: UdpSocket,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    answer: fn(&Counters, &[u8]) -> Option<Vec<u8>>,
) -> io::Result<JoinHandle<()>> {
    let stop = stop.clone();
    let counters = counters.clone();
    let port = socket.local_addr()?.port();
    thread::Builder::new()
        .name("netns-udp".to_owned())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if port == 443 {
                    counters.udp_443.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(reply) = answer(&counters, &buf[..n]) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        })
}

fn serve_connection(stream: TcpStream, service: &Service, counters: &Counters) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let local = stream.local_addr().map(|a| a.ip());
    let Ok(local) = local else { return };
    match service {
        Service::Http => {
            // Kept alive until the client closes or asks to close.
            let mut stream = stream;
            while let Some(head) = read_head(&mut stream) {
                counters.http.fetch_add(1, Ordering::Relaxed);
                let close = wants_close(&head);
                let reply = response(&describe(local, &head, None), close);
                if stream.write_all(&reply).is_err() || close {
                    return;
                }
            }
        }
        Service::Tls(config) => {
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let Some(head) = read_head(&mut tls) else {
                return;
            };
            counters.tls.fetch_add(1, Ordering::Relaxed);
            let sni = tls.conn.server_name().map(str::to_owned);
            let _ = tls.write_all(&response(&describe(local, &head, Some(sni)), true));
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        Service::Ssh => {
            counters.ssh.fetch_add(1, Ordering::Relaxed);
            let mut stream = stream;
            let _ = stream.write_all(b"SSH-2.0-egret-netns-origin\r\n");
        }
    }
}

/// Reads up to the end of a request head.
fn read_head(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return None;
        }
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// Returns the body that names the origin: `origin 10.77.2.2 GET /path host=allowed.test`,
/// then ` sni=allowed.test` over TLS.
fn describe(local: IpAddr, head: &[u8], sni: Option<Option<String>>) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let _ = request.parse(head);
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map_or_else(
            || "-".to_owned(),
            |h| String::from_utf8_lossy(h.value).into_owned(),
        );
    let mut body = format!(
        "origin {local} {} {} host={host}",
        request.method.unwrap_or("-"),
        request.path.unwrap_or("-"),
    );
    if let Some(sni) = sni {
        body.push_str(&format!(" sni={}", sni.as_deref().unwrap_or("-")));
    }
    body
}

/// Returns whether a request head asks for the connection to close after it.
fn wants_close(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let _ = request.parse(head);
    request.version == Some(0)
        || request.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        })
}

fn response(body: &str, close: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}\n",
        body.len() + 1,
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_answers_known_names_and_nxdomain_otherwise() {
        let query = |name: &str, qtype: TYPE| {
            let mut packet = Packet::new_query(7);
            packet.set_flags(PacketFlag::RECURSION_DESIRED);
            packet.questions.push(simple_dns::Question::new(
                simple_dns::Name::new_unchecked(name),
                qtype.into(),
                CLASS::IN.into(),
                false,
            ));
            packet.build_bytes_vec().unwrap()
        };
        let reply = dns_answer(&query("Allowed.Test", TYPE::A)).unwrap();
        let reply = Packet::parse(&reply).unwrap();
        assert_eq!(reply.id(), 7);
        assert_eq!(reply.rcode(), RCODE::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.answers[0].rdata, RData::A(A::from(ORIGIN_A)));

        let reply = dns_answer(&query("other.test", TYPE::AAAA)).unwrap();
        let reply = Packet::parse(&reply).unwrap();
        assert_eq!(reply.rcode(), RCODE::NoError);
        assert!(reply.answers.is_empty());

        let reply = dns_answer(&query("nowhere.test", TYPE::A)).unwrap();
        assert_eq!(Packet::parse(&reply).unwrap().rcode(), RCODE::NameError);
        assert_eq!(dns_answer(b"not dns"), None);
    }

    #[test]
    fn http_connections_close_when_asked() {
        assert!(!wants_close(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(wants_close(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(wants_close(b"GET / HTTP/1.0\r\n\r\n"));
    }

    #[test]
    fn bodies_name_the_origin_the_request_and_the_sni() {
        let head = b"GET /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
        assert_eq!(
            describe(ORIGIN_A.into(), head, None),
            "origin 10.77.2.2 GET /x host=allowed.test"
        );
        assert_eq!(
            describe(ORIGIN_B.into(), head, Some(Some("allowed.test".to_owned()))),
            "origin 10.77.2.3 GET /x host=allowed.test sni=allowed.test"
        );
    }
}
