//! The TLS ClientHello, read without terminating TLS: reassembled across TCP segments and
//! across handshake records, then parsed for its SNI and for Encrypted Client Hello.
//!
//! tls-parser parses one record at a time and fails on a ClientHello split over several
//! handshake records (legal, and used by large post-quantum hellos and by evasion tools), so the
//! records are joined here and only the whole handshake message is handed to tls-parser.

use smallvec::SmallVec;
use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

use crate::host::Host;

/// The TLS record type of handshake messages.
const HANDSHAKE: u8 = 0x16;
/// The handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 0x01;
/// The largest plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
/// The `encrypted_client_hello` extension (draft-ietf-tls-esni).
const ECH_EXTENSION: u16 = 0xfe0d;
/// The `server_name` extension (RFC 6066 §3).
const SNI_EXTENSION: u16 = 0;
/// The `host_name` server name type (RFC 6066 §3).
const HOST_NAME: u8 = 0;

/// A fatal `access_denied` alert record (RFC 8446 §6): level 2, description 49.
pub(crate) const ACCESS_DENIED_ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// Where reading a ClientHello stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HelloStatus {
    /// More bytes are needed.
    Partial,
    /// A whole ClientHello.
    Complete(Hello),
    /// Not a ClientHello this gateway accepts; the detail names why.
    Invalid(&'static str),
}

/// What a ClientHello says about its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The SNI `host_name`, or the reason there is no usable one (`no_sni`, `multiple_sni`,
    /// `invalid_sni`).
    pub(crate) sni: Result<Host, &'static str>,
    /// Whether an `encrypted_client_hello` extension is present.
    pub(crate) ech: bool,
    /// The bytes of the records that carried the hello, from the start of the stream.
    pub(crate) len: usize,
}

/// Reassembles a ClientHello from a growing buffer; each call looks only at new records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HelloReader {
    /// Bytes of whole records already taken from the buffer.
    consumed: usize,
    /// The handshake bytes of those records, joined.
    handshake: Vec<u8>,
}

/// Returns whether a stream starting with `first` is a TLS handshake.
pub(crate) fn starts_handshake(first: u8) -> bool {
    first == HANDSHAKE
}

/// What the start of a stream that is not a handshake record says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OtherStart {
    /// Too few bytes to tell.
    Partial,
    /// A TLS record of another type (change_cipher_spec, alert, application_data,
    /// heartbeat) where a ClientHello must come first.
    TlsRecord,
    /// Not TLS at all.
    NotTls,
}

/// Judges the first bytes of a stream whose first byte is not a handshake record's: a TLS
/// record header of another content type (RFC 8446 §5.1: types 20 to 24, version 3.x) is
/// TLS that does not start with a ClientHello; a lenient server may skip such a record and
/// take the hello behind it, so it cannot be waved through as a non-TLS stream.
pub(crate) fn other_start(buf: &[u8]) -> OtherStart {
    match buf {
        [0x14..=0x18] => OtherStart::Partial,
        [0x14..=0x18, 0x03, ..] => OtherStart::TlsRecord,
        _ => OtherStart::NotTls,
    }
}

impl HelloReader {
    /// Reads on in `buf`, the client's bytes from the start of the stream, accepting at most
    /// `max` bytes of records.
    pub(crate) fn feed(&mut self, buf: &[u8], max: usize) -> HelloStatus {
        loop {
            let rest = &buf[self.consumed.min(buf.len())..];
            let Some(&kind) = rest.first() else {
                return HelloStatus::Partial;
            };
            if kind != HANDSHAKE {
                return HelloStatus::Invalid(match (self.consumed, kind) {
                    // An SSLv2-compatible hello starts with a two-byte length, high bit set.
                    (0, 0x80..=0xff) => "sslv2_hello",
                    (0, _) => "not_tls",
                    (_, _) => "unexpected_record",
                });
            }
            if rest.len() >= 2 && rest[1] != 3 {
                return HelloStatus::Invalid("bad_record_version");
            }
            if rest.len() < 5 {
                return HelloStatus::Partial;
            }
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            if len == 0 {
                return HelloStatus::Invalid("empty_record");
            }
            if len > MAX_RECORD {
                return HelloStatus::Invalid("record_too_large");
            }
            if self.consumed + 5 + len > max {
                return HelloStatus::Invalid("hello_too_large");
            }
            if rest.len() < 5 + len {
                return HelloStatus::Partial;
            }
            let payload = &rest[5..5 + len];
            self.consumed += 5 + len;
            // The usual hello fits one record: judge it in place, without copying it.
            let message = if self.handshake.is_empty() {
                payload
            } else {
                self.handshake.extend_from_slice(payload);
                &self.handshake
            };
            match judge(message, max) {
                Judged::Incomplete => {
                    if self.handshake.is_empty() {
                        self.handshake.extend_from_slice(payload);
                    }
                }
                Judged::Invalid(detail) => return HelloStatus::Invalid(detail),
                Judged::Whole(Ok((sni, ech))) => {
                    return HelloStatus::Complete(Hello {
                        sni,
                        ech,
                        len: self.consumed,
                    });
                }
                Judged::Whole(Err(detail)) => return HelloStatus::Invalid(detail),
            }
        }
    }
}

/// What the handshake bytes joined so far amount to.
enum Judged {
    /// The ClientHello continues in a later record.
    Incomplete,
    /// Not an acceptable ClientHello.
    Invalid(&'static str),
    /// A whole ClientHello, parsed.
    Whole(Result<(Result<Host, &'static str>, bool), &'static str>),
}

/// Judges the handshake bytes of the records read so far.
fn judge(message: &[u8], max: usize) -> Judged {
    if message.first().is_some_and(|&kind| kind != CLIENT_HELLO) {
        return Judged::Invalid("not_client_hello");
    }
    let [_, a, b, c, ..] = *message else {
        return Judged::Incomplete;
    };
    let whole = 4 + u32::from_be_bytes([0, a, b, c]) as usize;
    if whole > max {
        return Judged::Invalid("hello_too_large");
    }
    match message.len().cmp(&whole) {
        std::cmp::Ordering::Less => Judged::Incomplete,
        // A client sends nothing else in the handshake before the server answers.
        std::cmp::Ordering::Greater => Judged::Invalid("trailing_handshake_data"),
        std::cmp::Ordering::Equal => Judged::Whole(parse(message)),
    }
}

/// Parses a whole ClientHello handshake message: (SNI, ECH present).
fn parse(handshake: &[u8]) -> Result<(Result<Host, &'static str>, bool), &'static str> {
    let Ok((rest, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        tls_parser::parse_tls_message_handshake(handshake)
    else {
        return Err("malformed_client_hello");
    };
    if !rest.is_empty() {
        return Err("malformed_client_hello");
    }
    let Some(raw) = hello.ext else {
        return Ok((Err("no_sni"), false));
    };
    // The extension list is walked here, and only the server_name extension is parsed (by
    // tls-parser): parsing every extension's contents would allocate for key shares and
    // cipher lists that nothing here looks at, and the origin validates them anyway.
    let mut seen: SmallVec<[u16; 32]> = SmallVec::new();
    let mut names: SmallVec<[&[u8]; 1]> = SmallVec::new();
    let mut sni_extensions = 0;
    let mut ech = false;
    let mut rest = raw;
    while !rest.is_empty() {
        let [t0, t1, l0, l1, ..] = *rest else {
            return Err("malformed_extensions");
        };
        let (id, len) = (
            u16::from_be_bytes([t0, t1]),
            usize::from(u16::from_be_bytes([l0, l1])),
        );
        let Some(data) = rest.get(4..4 + len) else {
            return Err("malformed_extensions");
        };
        rest = &rest[4 + len..];
        // RFC 8446 §4.2: no extension type appears twice (GREASE values included).
        if seen.contains(&id) {
            return Err("duplicate_extension");
        }
        seen.push(id);
        if id == SNI_EXTENSION {
            sni_extensions += 1;
            let Ok(([], TlsExtension::SNI(list))) =
                tls_parser::parse_tls_extension_sni_content(data)
            else {
                return Err("malformed_extensions");
            };
            // RFC 6066 §3: `server_name_list<1..2^16-1>`. An empty list is malformed, not
            // an absent SNI.
            if list.is_empty() {
                return Err("empty_sni_list");
            }
            names.extend(
                list.iter()
                    .filter(|(kind, _)| kind.0 == HOST_NAME)
                    .map(|(_, n)| *n),
            );
        }
        ech |= id == ECH_EXTENSION;
    }
    let sni = match (sni_extensions, names.as_slice()) {
        (0, _) | (_, []) => Err("no_sni"),
        (_, [name]) => match Host::parse(name) {
            // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName".
            Ok(Host::Ip(_)) | Err(_) => Err("invalid_sni"),
            Ok(host) => Ok(host),
        },
        (_, _) => Err("multiple_sni"),
    };
    Ok((sni, ech))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_hellos_parse() {
        let cases: [(&[u8], Result<&str, &str>, bool); 4] = [
            (
                include_bytes!("../tests/fixtures/hello/curl-7.88-openssl-3.0.bin"),
                Ok("allowed.test"),
                false,
            ),
            (
                include_bytes!("../tests/fixtures/hello/openssl-3.0-s_client.bin"),
                Ok("allowed.test"),
                false,
            ),
            (
                include_bytes!("../tests/fixtures/hello/openssl-3.0-noservername.bin"),
                Err("no_sni"),
                false,
            ),
            (
                include_bytes!("../tests/fixtures/hello/chromium-156-x25519mlkem768.bin"),
                Ok("allowed.test"),
                true,
            ),
        ];
        for (bytes, sni, ech) in cases {
            let status = HelloReader::default().feed(bytes, 16384);
            let HelloStatus::Complete(hello) = status else {
                panic!("{status:?}");
            };
            assert_eq!(
                hello.sni.as_ref().map(|h| h.to_string()).map_err(|e| *e),
                sni.map(str::to_owned)
            );
            assert_eq!(hello.ech, ech);
            assert_eq!(hello.len, bytes.len());
        }
    }

    #[test]
    fn the_alert_is_a_fatal_access_denied() {
        assert_eq!(ACCESS_DENIED_ALERT[0], 0x15, "alert record");
        assert_eq!(&ACCESS_DENIED_ALERT[5..], &[2, 49], "fatal access_denied");
    }

    #[test]
    fn non_tls_streams_are_named() {
        let mut reader = HelloReader::default();
        assert_eq!(
            reader.feed(b"GET / HTTP/1.1\r\n", 16384),
            HelloStatus::Invalid("not_tls")
        );
        let mut reader = HelloReader::default();
        assert_eq!(
            reader.feed(&[0x80, 0x2e, 0x01], 16384),
            HelloStatus::Invalid("sslv2_hello")
        );
        let mut reader = HelloReader::default();
        assert_eq!(
            reader.feed(&[0x16, 0x02], 16384),
            HelloStatus::Invalid("bad_record_version")
        );
        let mut reader = HelloReader::default();
        assert_eq!(
            reader.feed(&[0x16, 0x03, 0x01, 0x00, 0x00], 16384),
            HelloStatus::Invalid("empty_record")
        );
        let mut reader = HelloReader::default();
        assert_eq!(
            reader.feed(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0], 16384),
            HelloStatus::Invalid("not_client_hello")
        );
    }
}
