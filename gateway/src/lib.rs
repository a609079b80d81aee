//! Egret's gateway binary as a library: the command line, the configuration file, allowlist
//! loading and reload, the access log, and the start-up and shutdown of a runtime.
//!
//! The protocol and the policy live in `egret-core`, the IO in the `egret-rt-*` runtimes; this
//! crate wires them together and owns everything that touches files, signals and the
//! process's own log (stderr, through `tracing`).
//!
//! # Modules
//! - [`config`]: the TOML file of DESIGN.md §4, its defaults and validation.
//! - [`allowlist`]: builds the [`Policy`](egret_core::policy::Policy) and reloads it.
//! - [`sink`]: writes `Closed` access events as Squid or JSON lines.
//! - [`aws`]: the HTTPS client and configuration chain the AWS clients share.
//! - [`cloudwatch`]: ships those lines and the denied metric to CloudWatch Logs.
//! - [`cli`], [`run`], [`explain`]: the `egret` commands.
//! - [`periodic`]: the stoppable, pokeable thread the reloader runs on.

pub mod admin;
pub mod allowlist;
pub mod aws;
pub mod cli;
pub mod cloudwatch;
pub mod config;
pub mod explain;
pub mod periodic;
pub mod run;
pub mod sink;
