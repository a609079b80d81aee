//! Egret's protocol and policy core.
pub mod host;
pub mod policy;
