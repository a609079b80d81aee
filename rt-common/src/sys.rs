//! The syscalls the runtimes share, in one place: zero-copy pipes, socket options, and the
//! system resolver. Everything that needs `unsafe` in Egret is in this file.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use egret_core::ResolveError;
use socket2::{SockRef, TcpKeepalive};

/// Hands an owned descriptor to a type that takes raw ones (glommio's listener has no safe
/// constructor from a socket): ownership moves with it, so the descriptor is open and nobody
/// else closes it.
pub fn from_owned_fd<T: std::os::fd::FromRawFd>(fd: std::os::fd::OwnedFd) -> T {
    use std::os::fd::IntoRawFd as _;
    // SAFETY: `into_raw_fd` gives up the `OwnedFd`'s ownership of an open descriptor, which
    // `from_raw_fd` takes over: it is valid and has exactly one owner.
    unsafe { T::from_raw_fd(fd.into_raw_fd()) }
}

/// Makes closing `socket` send a TCP reset instead of a FIN (`SO_LINGER` with a zero timeout).
pub fn set_reset_on_close<S: std::os::fd::AsFd>(socket: &S) -> io::Result<()> {
    SockRef::from(socket).set_linger(Some(Duration::ZERO))
}

/// Enables TCP keepalive probes after `idle` without traffic, so that half-dead peers are
/// noticed and load balancers with idle cut-offs (the AWS NLB's is 350 s) keep the flow.
pub fn set_keepalive<S: std::os::fd::AsFd>(socket: &S, idle: Duration) -> io::Result<()> {
    let keepalive = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle.min(Duration::from_secs(30)));
    SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

/// Disables Nagle's algorithm: the gateway writes whole messages.
pub fn set_nodelay<S: std::os::fd::AsFd>(socket: &S) -> io::Result<()> {
    SockRef::from(socket).set_tcp_nodelay(true)
}

/// Resolves `name` with the system resolver (`getaddrinfo`), TCP addresses only, in the
/// resolver's order. Blocks: call it off the event loop.
pub fn getaddrinfo(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let Ok(host) = CString::new(name) else {
        return Err(ResolveError::NotFound);
    };
    // SAFETY: `hints` is a zeroed addrinfo with the documented fields set; `result` is written
    // by getaddrinfo on success and released with freeaddrinfo exactly once below. The list is
    // only read while it is alive, and every `ai_addr` is read according to its `ai_family`.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = libc::AF_UNSPEC;
        hints.ai_socktype = libc::SOCK_STREAM;
        hints.ai_flags = libc::AI_ADDRCONFIG;
        let mut result: *mut libc::addrinfo = std::ptr::null_mut();
        let rc = libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut result);
        if rc != 0 {
            return Err(match rc {
                libc::EAI_NONAME | libc::EAI_NODATA => ResolveError::NotFound,
                _ => ResolveError::Failed,
            });
        }
        let mut addrs = Vec::new();
        let mut cursor = result;
        while !cursor.is_null() {
            let info = &*cursor;
            if !info.ai_addr.is_null() {
                match info.ai_family {
                    libc::AF_INET => {
                        let sin = &*(info.ai_addr as *const libc::sockaddr_in);
                        addrs.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(info.ai_addr as *const libc::sockaddr_in6);
                        addrs.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cursor = info.ai_next;
        }
        libc::freeaddrinfo(result);
        Ok(addrs)
    }
}

#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::pipe::{PipeFlags, SpliceFlags};

    /// A non-blocking pipe used to move bytes between sockets without copying them into
    /// user space.
    #[derive(Debug)]
    pub struct Pipe {
        /// The read end.
        pub read: OwnedFd,
        /// The write end.
        pub write: OwnedFd,
    }

    impl Pipe {
        /// Returns a new non-blocking, close-on-exec pipe.
        pub fn new() -> io::Result<Pipe> {
            let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
            Ok(Pipe { read, write })
        }
    }

    /// Moves up to `len` bytes from `from` to `to` with `splice(2)`, without blocking. One of
    /// the two must be a pipe. Returns 0 at end of stream.
    pub fn splice<A: AsFd, B: AsFd>(from: A, to: B, len: usize) -> io::Result<usize> {
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        Ok(rustix::pipe::splice(from, None, to, None, len, flags)?)
    }

    /// Returns the destination an intercepted connection was going to before an nftables or
    /// iptables REDIRECT (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6).
    pub fn original_dst<S: AsFd>(socket: &S, ipv6: bool) -> io::Result<SocketAddr> {
        if ipv6 {
            Ok(SocketAddr::V6(rustix::net::sockopt::ipv6_original_dst(
                socket,
            )?))
        } else {
            Ok(SocketAddr::V4(rustix::net::sockopt::ip_original_dst(
                socket,
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_and_nonsense_does_not() {
        let addrs = getaddrinfo("localhost").unwrap();
        assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
        assert!(getaddrinfo("bad\0name").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn splice_moves_bytes_through_a_pipe() {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        let pipe = Pipe::new().unwrap();
        a.write_all(b"zero copy").unwrap();
        let mut moved = 0;
        while moved < 9 {
            match splice(&b, &pipe.write, 64) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let mut out = [0u8; 9];
        std::fs::File::from(pipe.read).read_exact(&mut out).unwrap();
        assert_eq!(&out, b"zero copy");
    }
}
