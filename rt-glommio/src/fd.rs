//! The socket options glommio's streams do not expose — TCP keepalive, `SO_LINGER` 0 for a
//! reset, `SO_ORIGINAL_DST` — set through a duplicate of the socket's descriptor.
//!
//! A glommio `TcpStream` gives out only its raw descriptor number, and turning a number into
//! a borrowed descriptor is `unsafe`. `pidfd_getfd(2)` on this process's own pidfd turns it
//! into an owned duplicate safely: the duplicate refers to the same socket, so an option set
//! on it is set on the stream, and it is closed again at once. The number is read from a
//! stream borrowed for the whole call, so it cannot be closed and reused in between.
//!
//! Where the kernel is older than 5.6 or a seccomp profile forbids `pidfd_open` or
//! `pidfd_getfd`, the options are skipped and [`available`] says so (the server logs it once).
//! With a raw-descriptor variant of the helpers in `egret_rt_common::sys`, this module
//! would shrink to calls of those.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use egret_rt_common::sys;
use rustix::process::{PidfdFlags, PidfdGetfdFlags};

/// Returns whether socket options can be reached on this host.
pub(crate) fn available() -> bool {
    self_pidfd().is_some_and(|pidfd| {
        rustix::process::pidfd_getfd(pidfd, pidfd.as_raw_fd(), PidfdGetfdFlags::empty()).is_ok()
    })
}

/// Prepares an accepted client connection: TCP keepalive when configured, and the original
/// destination when `transparent`. Returns the original destination.
pub(crate) fn prepare_client(
    socket: &impl AsRawFd,
    keepalive: Option<Duration>,
    transparent: bool,
    local: SocketAddr,
) -> Option<SocketAddr> {
    if keepalive.is_none() && !transparent {
        return None;
    }
    let fd = duplicate(socket)?;
    if let Some(idle) = keepalive {
        let _ = sys::set_keepalive(&fd, idle);
    }
    transparent
        .then(|| egret_rt_common::original_dst(&fd, local))
        .flatten()
}

/// Enables TCP keepalive probes after `idle` without traffic.
pub(crate) fn set_keepalive(socket: &impl AsRawFd, idle: Duration) {
    if let Some(fd) = duplicate(socket) {
        let _ = sys::set_keepalive(&fd, idle);
    }
}

/// Makes closing the socket send a TCP reset.
pub(crate) fn set_reset_on_close(socket: &impl AsRawFd) {
    if let Some(fd) = duplicate(socket) {
        let _ = sys::set_reset_on_close(&fd);
    }
}

/// Returns an owned duplicate of `socket`'s descriptor.
fn duplicate(socket: &impl AsRawFd) -> Option<OwnedFd> {
    let pidfd = self_pidfd()?;
    rustix::process::pidfd_getfd(pidfd, socket.as_raw_fd(), PidfdGetfdFlags::empty()).ok()
}

/// Returns a pidfd for this process, opened once.
fn self_pidfd() -> Option<&'static OwnedFd> {
    static PIDFD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    PIDFD
        .get_or_init(|| {
            rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty()).ok()
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn options_set_on_the_duplicate_reach_the_socket() {
        assert!(available(), "pidfd_getfd is usable on this host");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        set_keepalive(&stream, Duration::from_secs(42));
        set_reset_on_close(&stream);
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(42)
        );
        assert_eq!(socket.linger().unwrap(), Some(Duration::ZERO));
    }
}
