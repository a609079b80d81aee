//! What several integration tests of the gateway share.
#![allow(dead_code)]

pub(crate) mod moto;
pub(crate) mod reliability;

/// Returns a loopback port that was free a moment ago, below the ephemeral range (so no
/// client connection takes it before the gateway binds it) and not handed out before.
pub(crate) fn free_port() -> u16 {
    egret_conformance::live::unclaimed_port().expect("a free port")
}
