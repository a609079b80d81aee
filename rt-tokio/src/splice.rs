//! Tunnels: bytes copied both ways between client and upstream after core's `Splice`.
//!
//! On Linux each direction moves data socket → pipe → socket with `splice(2)`, so payload never
//! enters user space. A pipe is taken from a per-thread pool only while data is in flight and
//! given back once it is empty, so an idle tunnel holds no pipe. Elsewhere a small buffer is
//! used. Half-closes are propagated: end of stream on one side shuts down writing on the other.

use std::time::Instant;

use egret_core::{Peer, Session, SpliceEnd};
use tokio::net::TcpStream;

use crate::{Context, ShutdownSignal};

/// What one step of a direction did.
enum Step {
    /// Bytes reached the destination.
    Moved(usize),
    /// The source reached end of stream and the destination was shut down for writing.
    Eof,
    /// Nothing yet (spurious readiness).
    Idle,
}

/// Copies both ways until both directions end, an error occurs, or core wants the session
/// closed (idle timeout, drain deadline). Returns with core's `Close` action pending.
pub(crate) async fn run(
    session: &mut Session,
    client: &TcpStream,
    upstream: &TcpStream,
    ctx: &Context,
    shutdown: &mut ShutdownSignal,
) {
    let mut up = Direction::new(client, upstream, Peer::Client);
    let mut down = Direction::new(upstream, client, Peer::Upstream);
    // Not `shutdown.borrow().is_some()`: a drain that began while the session was performing
    // actions (the Splice among them) has not been handed to core yet, and taking it as seen
    // left the tunnel open past the drain deadline. `changed()` fires for a value this
    // receiver has not marked seen (drive.rs marks what it hands over), and only for that.
    let mut shutdown_seen = false;
    loop {
        if up.done && down.done {
            session.handle_splice_end(Instant::now(), SpliceEnd::Finished);
        }
        while let Some(event) = session.poll_event() {
            ctx.events.send(event);
        }
        if session.is_finished() {
            return;
        }
        let deadline = session.poll_timeout();
        let (peer, result) = tokio::select! {
            r = up.step(), if !up.done => (Peer::Client, r),
            r = down.step(), if !down.done => (Peer::Upstream, r),
            _ = crate::sleep_until(deadline), if deadline.is_some() => {
                session.handle_timeout(Instant::now());
                continue;
            }
            _ = shutdown.changed(), if !shutdown_seen => {
                shutdown_seen = true;
                if let Some(deadline) = *shutdown.borrow_and_update() {
                    session.handle_shutdown(Instant::now(), deadline);
                }
                continue;
            }
            else => {
                // Nothing left to wait for: both directions ended without core closing.
                session.handle_splice_end(Instant::now(), SpliceEnd::Finished);
                return;
            }
        };
        let now = Instant::now();
        match result {
            Ok(Step::Moved(n)) => session.handle_splice_progress(now, peer, n as u64),
            Ok(Step::Eof) => match peer {
                Peer::Client => up.done = true,
                Peer::Upstream => down.done = true,
            },
            Ok(Step::Idle) => {}
            Err(failed) => session.handle_splice_end(now, SpliceEnd::Failed(failed)),
        }
    }
}

/// One direction of a tunnel.
struct Direction<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    /// The side bytes come from, as core names it.
    source: Peer,
    done: bool,
    #[cfg(target_os = "linux")]
    pipe: Option<egret_rt_common::sys::Pipe>,
    #[cfg(target_os = "linux")]
    in_pipe: usize,
    #[cfg(not(target_os = "linux"))]
    buf: Vec<u8>,
    #[cfg(not(target_os = "linux"))]
    pending: std::ops::Range<usize>,
}

impl<'a> Direction<'a> {
    fn new(from: &'a TcpStream, to: &'a TcpStream, source: Peer) -> Direction<'a> {
        Direction {
            from,
            to,
            source,
            done: false,
            #[cfg(target_os = "linux")]
            pipe: None,
            #[cfg(target_os = "linux")]
            in_pipe: 0,
            #[cfg(not(target_os = "linux"))]
            buf: Vec::new(),
            #[cfg(not(target_os = "linux"))]
            pending: 0..0,
        }
    }

    /// The peer that failed when the source failed, and when the destination did.
    fn peers(&self) -> (Peer, Peer) {
        match self.source {
            Peer::Client => (Peer::Client, Peer::Upstream),
            Peer::Upstream => (Peer::Upstream, Peer::Client),
        }
    }

    fn finish(&mut self) -> Step {
        let _ = socket2::SockRef::from(self.to).shutdown(std::net::Shutdown::Write);
        Step::Eof
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::RefCell;
    use std::io;

    use egret_core::Peer;
    use egret_rt_common::sys::{self, Pipe};
    use tokio::io::Interest;

    use super::{Direction, Step};

    /// The most bytes moved per splice: the default pipe capacity.
    const CHUNK: usize = 64 * 1024;
    /// The most idle pipes a worker thread keeps.
    const POOL_MAX: usize = 64;

    thread_local! {
        static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    }

    fn take_pipe() -> io::Result<Pipe> {
        match POOL.with(|pool| pool.borrow_mut().pop()) {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    fn give_back(pipe: Pipe) {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(pipe);
            }
        });
    }

    impl Direction<'_> {
        /// Moves one batch. Cancel-safe: state changes only after an await completes.
        pub(super) async fn step(&mut self) -> Result<Step, Peer> {
            let (source, destination) = self.peers();
            if self.in_pipe == 0 {
                self.from.readable().await.map_err(|_| source)?;
                let pipe = match self.pipe.take() {
                    Some(pipe) => pipe,
                    None => take_pipe().map_err(|_| source)?,
                };
                let from = self.from;
                match from.try_io(Interest::READABLE, || sys::splice(from, &pipe.write, CHUNK)) {
                    Ok(0) => {
                        give_back(pipe);
                        return Ok(self.finish());
                    }
                    Ok(n) => {
                        self.in_pipe = n;
                        self.pipe = Some(pipe);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        give_back(pipe);
                        return Ok(Step::Idle);
                    }
                    Err(_) => {
                        give_back(pipe);
                        return Err(source);
                    }
                }
            } else {
                self.to.writable().await.map_err(|_| destination)?;
            }
            self.drain_pipe()
        }

        /// Writes what the pipe holds to the destination, as far as it takes it.
        fn drain_pipe(&mut self) -> Result<Step, Peer> {
            let (_, destination) = self.peers();
            let Some(pipe) = self.pipe.as_ref() else {
                return Ok(Step::Idle);
            };
            let to = self.to;
            let mut moved = 0;
            while self.in_pipe > 0 {
                match to.try_io(Interest::WRITABLE, || {
                    sys::splice(&pipe.read, to, self.in_pipe)
                }) {
                    Ok(n) => {
                        self.in_pipe -= n;
                        moved += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Err(destination),
                }
            }
            if self.in_pipe == 0 {
                if let Some(pipe) = self.pipe.take() {
                    give_back(pipe);
                }
            }
            Ok(if moved > 0 {
                Step::Moved(moved)
            } else {
                Step::Idle
            })
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::io;

    use egret_core::Peer;

    use super::{Direction, Step};

    const CHUNK: usize = 16 * 1024;

    impl Direction<'_> {
        /// Moves one batch through a user-space buffer. Cancel-safe.
        pub(super) async fn step(&mut self) -> Result<Step, Peer> {
            let (source, destination) = self.peers();
            if self.pending.is_empty() {
                self.from.readable().await.map_err(|_| source)?;
                self.buf.resize(CHUNK, 0);
                match self.from.try_read(&mut self.buf) {
                    Ok(0) => return Ok(self.finish()),
                    Ok(n) => self.pending = 0..n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
                    Err(_) => return Err(source),
                }
            } else {
                self.to.writable().await.map_err(|_| destination)?;
            }
            match self.to.try_write(&self.buf[self.pending.clone()]) {
                Ok(n) => {
                    self.pending.start += n;
                    if self.pending.is_empty() {
                        self.buf = Vec::new();
                    }
                    Ok(Step::Moved(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Idle),
                Err(_) => Err(destination),
            }
        }
    }
}
