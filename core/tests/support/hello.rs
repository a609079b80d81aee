//! ClientHellos for tests: captured first flights, and (from the conformance suite) a builder
//! for the shapes no client sends on purpose (several names, IP literals, duplicate
//! extensions).

/// curl 7.88 (OpenSSL 3.0), SNI `allowed.test`, 517 bytes in one record.
pub(crate) const CURL: &[u8] = include_bytes!("../fixtures/hello/curl-7.88-openssl-3.0.bin");
/// `openssl s_client`, SNI `allowed.test`.
pub(crate) const OPENSSL: &[u8] = include_bytes!("../fixtures/hello/openssl-3.0-s_client.bin");
/// `openssl s_client -noservername`: no SNI.
pub(crate) const NO_SNI: &[u8] = include_bytes!("../fixtures/hello/openssl-3.0-noservername.bin");
/// Chromium 156: 1786 bytes, X25519MLKEM768 key share, GREASE ECH, SNI `allowed.test`.
pub(crate) const CHROMIUM: &[u8] =
    include_bytes!("../fixtures/hello/chromium-156-x25519mlkem768.bin");

// The builders are the conformance suite's, so that both build the same bytes. Each test
// binary uses some of them (dead code is allowed in this module for the same reason).
#[allow(unused_imports)]
pub(crate) use egret_conformance::hello::{
    ECH, SNI, client_hello, handshake_of, hello_for, records, sni,
};
