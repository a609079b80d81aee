//! ClientHellos for tests: captured first flights, and a builder for the shapes no client sends
//! on purpose (several names, IP literals, duplicate extensions).

/// curl 7.88 (OpenSSL 3.0), SNI `allowed.test`, 517 bytes in one record.
pub(crate) const CURL: &[u8] = include_bytes!("../fixtures/hello/curl-7.88-openssl-3.0.bin");
/// `openssl s_client`, SNI `allowed.test`.
pub(crate) const OPENSSL: &[u8] = include_bytes!("../fixtures/hello/openssl-3.0-s_client.bin");
/// `openssl s_client -noservername`: no SNI.
pub(crate) const NO_SNI: &[u8] = include_bytes!("../fixtures/hello/openssl-3.0-noservername.bin");
/// Chromium 156: 1786 bytes, X25519MLKEM768 key share, GREASE ECH, SNI `allowed.test`.
pub(crate) const CHROMIUM: &[u8] =
    include_bytes!("../fixtures/hello/chromium-156-x25519mlkem768.bin");

/// The `server_name` extension type.
pub(crate) const SNI: u16 = 0;
/// The `encrypted_client_hello` extension type.
pub(crate) const ECH: u16 = 0xfe0d;

/// Returns the handshake message of a TLS 1.3-shaped ClientHello with `extensions`.
pub(crate) fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&u16::try_from(data.len()).expect("small").to_be_bytes());
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&u16::try_from(ext.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&ext);
    let mut message = vec![0x01];
    message.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    message
}

/// Returns a `server_name` extension listing `names` as host_name entries.
pub(crate) fn sni(names: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for name in names {
        list.push(0); // host_name
        list.extend_from_slice(&u16::try_from(name.len()).expect("small").to_be_bytes());
        list.extend_from_slice(name.as_bytes());
    }
    let mut data = u16::try_from(list.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    data.extend_from_slice(&list);
    (SNI, data)
}

/// Returns `handshake` framed in handshake records of at most `size` bytes each.
pub(crate) fn records(handshake: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(size.max(1)) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&u16::try_from(chunk.len()).expect("small").to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Returns the handshake bytes carried by the records of a captured hello.
pub(crate) fn handshake_of(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= records.len() {
        let len = usize::from(u16::from_be_bytes([records[at + 3], records[at + 4]]));
        out.extend_from_slice(&records[at + 5..at + 5 + len]);
        at += 5 + len;
    }
    out
}

/// Returns a whole hello in one record naming `names`.
pub(crate) fn hello_for(names: &[&str]) -> Vec<u8> {
    records(&client_hello(&[sni(names)]), 16384)
}
