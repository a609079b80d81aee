//! What several integration tests of the gateway share.
#![allow(dead_code)]

pub(crate) mod moto;
