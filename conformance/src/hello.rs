//! ClientHellos built for the shapes no client sends on purpose: several names, odd names,
//! odd record framing, oversized hellos. Shared by the hostile cases and core's tests.

/// The `server_name` extension type (RFC 6066 §3).
pub const SNI: u16 = 0;
/// The `encrypted_client_hello` extension type.
pub const ECH: u16 = 0xfe0d;
/// The `padding` extension type (RFC 7685).
pub const PADDING: u16 = 21;

/// Returns the handshake message of a TLS 1.3-shaped ClientHello with `extensions`.
pub fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&len16(data.len()));
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&len16(ext.len()));
    body.extend_from_slice(&ext);
    let mut message = vec![0x01];
    message.extend_from_slice(&len24(body.len()));
    message.extend_from_slice(&body);
    message
}

/// Returns a `server_name` extension listing `names`, each as (name type, bytes).
pub fn sni_typed(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend_from_slice(&len16(name.len()));
        list.extend_from_slice(name);
    }
    let mut data = len16(list.len()).to_vec();
    data.extend_from_slice(&list);
    (SNI, data)
}

/// Returns a `server_name` extension listing `names` as host_name entries.
pub fn sni(names: &[&str]) -> (u16, Vec<u8>) {
    let typed: Vec<(u8, &[u8])> = names.iter().map(|n| (0, n.as_bytes())).collect();
    sni_typed(&typed)
}

/// Returns `handshake` framed in handshake records of at most `size` bytes each.
pub fn records(handshake: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(size.max(1)) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&len16(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// Returns the handshake bytes carried by the records of a captured hello (a truncated last
/// record contributes what it has).
#[must_use]
pub fn handshake_of(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = records;
    while let [_, _, _, high, low, body @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(body.len());
        out.extend_from_slice(&body[..len]);
        rest = &body[len..];
    }
    out
}

/// Returns a whole hello in one record naming `names`.
pub fn hello_for(names: &[&str]) -> Vec<u8> {
    records(&client_hello(&[sni(names)]), 16384)
}

/// Returns a length as two big-endian bytes (saturating; test hellos are small).
fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// Returns a length as three big-endian bytes.
fn len24(len: usize) -> [u8; 3] {
    let [_, a, b, c] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [a, b, c]
}
