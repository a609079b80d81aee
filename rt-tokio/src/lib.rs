//! Drives Egret sessions on a multi-thread tokio runtime.
use std::io;

use egret_rt_common::{ServerConfig, Server};

/// Binds the listeners and starts serving on a new tokio runtime.
pub fn start(config: ServerConfig) -> io::Result<Box<dyn Server>> {
    let _ = config;
    todo!("in progress")
}
