//! What several integration tests of the gateway share.
#![allow(dead_code)]

pub(crate) mod moto;
pub(crate) mod reliability;

/// Returns a loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}
