//! Socket set-up every runtime does the same way: listeners, the pre-bind check that keeps
//! `SO_REUSEPORT` from joining someone else's port, and connect errors in core's terms.

use std::io;
use std::net::SocketAddr;

use egret_core::ConnectError;

use crate::ListenerSpec;

/// Returns a bound, listening, non-blocking TCP socket for `addr`: `SO_REUSEADDR`, IPv6 sockets
/// IPv6-only, and `SO_REUSEPORT` when `shared` (one listener per worker on the same port).
pub fn listener(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket(addr)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Fails when a listener address (other than port 0) is taken or listed twice. With
/// `SO_REUSEPORT` a runtime would otherwise join a listener that another process run by the
/// same user holds, and silently take a share of its connections.
pub fn check_free(specs: &[ListenerSpec]) -> io::Result<()> {
    for (n, spec) in specs.iter().enumerate() {
        if spec.addr.port() == 0 {
            continue;
        }
        if specs[..n].iter().any(|earlier| earlier.addr == spec.addr) {
            let message = format!("{} is listed twice", spec.addr);
            return Err(io::Error::new(io::ErrorKind::AddrInUse, message));
        }
        socket(spec.addr)?.bind(&spec.addr.into())?;
    }
    Ok(())
}

/// Returns how core names a failed connect.
#[must_use]
pub fn connect_error(error: &io::Error) -> ConnectError {
    let kind = error.kind();
    if kind == io::ErrorKind::ConnectionRefused {
        ConnectError::Refused
    } else if matches!(
        kind,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
    ) {
        ConnectError::Unreachable
    } else {
        ConnectError::Other
    }
}

fn socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use egret_core::ListenerKind;

    use super::*;

    #[test]
    fn a_taken_or_repeated_address_is_refused() {
        let taken = listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = taken.local_addr().unwrap();
        let spec = ListenerSpec {
            addr,
            kind: ListenerKind::Explicit,
        };
        assert_eq!(
            check_free(&[spec]).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        drop(taken);
        assert!(check_free(&[spec]).is_ok());
        assert_eq!(
            check_free(&[spec, spec]).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[test]
    fn connect_errors_in_core_terms() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_error(&refused), ConnectError::Refused);
        let unreachable = io::Error::from(io::ErrorKind::HostUnreachable);
        assert_eq!(connect_error(&unreachable), ConnectError::Unreachable);
        assert_eq!(connect_error(&io::Error::other("x")), ConnectError::Other);
    }
}
