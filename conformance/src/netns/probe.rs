//! Raw probes for the namespace world: bytes written on a TCP connection with pauses and
//! everything read back until the close, ClientHellos made to order, and DNS lookups. Run them
//! inside a namespace with [`super::World::in_client`].

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, RCODE, TYPE};

/// How a probe's connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeEnd {
    /// The peer closed it (FIN).
    Closed,
    /// The peer reset it (RST).
    Reset,
    /// It was still open at the deadline.
    Open,
    /// As many bytes as asked for arrived; the probe stopped reading.
    Enough,
}

/// What a probe saw.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// The probe's own address (the `client` of its access record).
    pub local: SocketAddr,
    /// Every byte read.
    pub received: Vec<u8>,
    /// How it ended.
    pub end: ProbeEnd,
    /// From the last write to the end.
    pub after_last_write: Duration,
}

/// Connects to `addr`, writes each chunk after its pause (one TCP segment each: Nagle is off),
/// then reads until the peer closes, `enough` bytes arrived, or `deadline` passed since the last
/// write.
pub fn probe_tcp(
    addr: SocketAddr,
    writes: &[(Duration, &[u8])],
    enough: Option<usize>,
    deadline: Duration,
) -> io::Result<ProbeResult> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| io::Error::new(e.kind(), format!("connect {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    for (pause, bytes) in writes {
        thread::sleep(*pause);
        stream
            .write_all(bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("write to {addr}: {e}")))?;
    }
    let written = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        if enough.is_some_and(|n| received.len() >= n) {
            break ProbeEnd::Enough;
        }
        let Some(left) = deadline
            .checked_sub(written.elapsed())
            .filter(|d| !d.is_zero())
        else {
            break ProbeEnd::Open;
        };
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break ProbeEnd::Closed,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break ProbeEnd::Reset,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    Ok(ProbeResult {
        local,
        received,
        end,
        after_last_write: written.elapsed(),
    })
}

/// Returns the first flight of a TLS client (rustls) naming `server_name` in its SNI: one
/// handshake record holding a ClientHello.
pub fn client_hello(server_name: &str) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| e.to_string())?;
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection
            .write_tls(&mut hello)
            .map_err(|e| e.to_string())?;
    }
    Ok(hello)
}

/// Splits the handshake bytes of a one-record ClientHello over `records` handshake records
/// (RFC 8446 §5.1 allows a handshake message to span records). Returns `None` when `hello` is
/// not exactly one handshake record or is too short to split that way.
#[must_use]
pub fn reframe(hello: &[u8], records: usize) -> Option<Vec<u8>> {
    let (header, body) = hello.split_at_checked(5)?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if header[0] != 0x16 || body.len() != len || records == 0 || len < records {
        return None;
    }
    let mut out = Vec::with_capacity(hello.len() + 5 * records);
    for chunk in body.chunks(len.div_ceil(records)) {
        let chunk_len = u16::try_from(chunk.len()).ok()?;
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&chunk_len.to_be_bytes());
        out.extend_from_slice(chunk);
    }
    Some(out)
}

/// A DNS answer, as far as the tests look at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReply {
    /// The name does not exist (NXDOMAIN).
    pub nxdomain: bool,
    /// The `A` records.
    pub addrs: Vec<Ipv4Addr>,
}

/// Asks `server` for the `A` records of `name` over UDP, waiting at most `timeout`.
pub fn dns_query(server: SocketAddr, name: &str, timeout: Duration) -> io::Result<DnsReply> {
    let mut query = Packet::new_query(0x4567);
    query.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| io::Error::other(e.to_string()))?;
    query.questions.push(Question::new(
        qname,
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    let bytes = query
        .build_bytes_vec()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(&bytes)?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf)?;
    let reply = Packet::parse(&buf[..n]).map_err(|e| io::Error::other(e.to_string()))?;
    if reply.id() != 0x4567 || !reply.has_flags(PacketFlag::RESPONSE) {
        return Err(io::Error::other("not a reply to the query"));
    }
    let addrs = reply
        .answers
        .iter()
        .filter_map(|record| {
            if let RData::A(a) = &record.rdata {
                Some(Ipv4Addr::from(a.address))
            } else {
                None
            }
        })
        .collect();
    Ok(DnsReply {
        nxdomain: reply.rcode() == RCODE::NameError,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reframing_keeps_the_handshake_bytes() {
        let hello = client_hello("allowed.test").unwrap();
        assert_eq!(hello[0], 0x16);
        let framed = reframe(&hello, 3).unwrap();
        assert_eq!(framed.len(), hello.len() + 10);
        let mut joined = Vec::new();
        let mut rest = framed.as_slice();
        let mut records = 0;
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            assert_eq!(&rest[..3], &hello[..3]);
            joined.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
            records += 1;
        }
        assert_eq!(records, 3);
        assert_eq!(joined, hello[5..]);
        assert_eq!(reframe(b"GET / HTTP/1.1\r\n", 2), None);
    }

    #[test]
    fn hellos_name_the_server() {
        let hello = client_hello("denied.test").unwrap();
        assert!(hello.windows(11).any(|w| w == b"denied.test"));
    }
}
