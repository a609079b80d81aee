//! Tunnels: bytes copied both ways between client and upstream after core's `Splice`.
//!
//! On Linux each direction moves data socket → pipe → socket with `splice(2)`, so payload never
//! enters user space. A direction takes a pipe from its worker's pool only while bytes are in
//! flight and gives it back as soon as the pipe is empty, so an idle tunnel holds no pipe.
//! Where splice is unsupported (`EINVAL`, `ENOSYS`), and off Linux, a direction copies through
//! the worker's read buffer, keeping only what the destination did not take. End of
//! stream on one side shuts down writing on the other.

use std::io::{self, Read, Write};

use egret_core::{Peer, SpliceEnd};

use crate::conn::Side;

/// What one step of a tunnel did, for core to hear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing could move: both directions wait for readiness.
    Idle,
    /// State changed without bytes reaching a destination (a pipe filled, an end of stream
    /// was passed on): step again.
    Changed,
    /// Bytes from this peer reached the other side.
    Moved(Peer, usize),
    /// The tunnel ended.
    End(SpliceEnd),
}

/// A worker's idle pipes.
#[derive(Debug, Default)]
pub(crate) struct PipePool {
    #[cfg(target_os = "linux")]
    idle: Vec<egret_rt_common::sys::Pipe>,
}

/// Both directions of one tunnel.
#[derive(Debug)]
pub(crate) struct Tunnel {
    up: Direction,
    down: Direction,
    /// Which direction steps first next time, alternated for fairness.
    down_first: bool,
}

/// One direction of a tunnel.
#[derive(Debug)]
struct Direction {
    /// The side bytes come from.
    source: Peer,
    /// The source reached end of stream and the destination was shut down for writing.
    done: bool,
    /// Bytes read in user space that the destination has not taken yet.
    held: Vec<u8>,
    #[cfg(target_os = "linux")]
    splice: linux::Spliced,
}

impl Tunnel {
    /// Returns a tunnel whose directions have not moved anything yet.
    pub(crate) fn new() -> Tunnel {
        Tunnel {
            up: Direction::new(Peer::Client),
            down: Direction::new(Peer::Upstream),
            down_first: false,
        }
    }

    /// Moves one batch in the first direction that can move.
    pub(crate) fn step(
        &mut self,
        client: &mut Side,
        upstream: &mut Side,
        pipes: &mut PipePool,
        buf: &mut [u8],
    ) -> Step {
        if self.up.done && self.down.done {
            return Step::End(SpliceEnd::Finished);
        }
        self.down_first = !self.down_first;
        for down in [self.down_first, !self.down_first] {
            let step = match down {
                true => self.down.step(upstream, client, pipes, buf),
                false => self.up.step(client, upstream, pipes, buf),
            };
            match step {
                Step::Idle => {}
                Step::Changed | Step::Moved(..) | Step::End(_) => return step,
            }
        }
        Step::Idle
    }
}

impl PipePool {
    /// The most idle pipes a worker keeps.
    #[cfg(target_os = "linux")]
    const MAX: usize = 64;

    /// Returns an empty pool.
    pub(crate) fn new() -> PipePool {
        PipePool::default()
    }
}

impl Direction {
    fn new(source: Peer) -> Direction {
        Direction {
            source,
            done: false,
            held: Vec::new(),
            #[cfg(target_os = "linux")]
            splice: linux::Spliced::default(),
        }
    }

    /// Returns the peer that failed when the source failed, and when the destination did.
    fn peers(&self) -> (Peer, Peer) {
        match self.source {
            Peer::Client => (Peer::Client, Peer::Upstream),
            Peer::Upstream => (Peer::Upstream, Peer::Client),
        }
    }

    fn step(
        &mut self,
        from: &mut Side,
        to: &mut Side,
        pipes: &mut PipePool,
        buf: &mut [u8],
    ) -> Step {
        #[cfg(target_os = "linux")]
        {
            if self.splice.enabled {
                return self.splice_step(from, to, pipes);
            }
        }
        let _ = pipes;
        self.copy_step(from, to, buf)
    }

    /// Marks the source as ended and passes the end of stream on.
    fn finish(&mut self, to: &Side) -> Step {
        self.done = true;
        to.shutdown_write();
        Step::Changed
    }

    /// Moves bytes through the worker's buffer: writes what was held, or reads and writes on
    /// at once, holding back only what the destination did not take.
    fn copy_step(&mut self, from: &mut Side, to: &mut Side, buf: &mut [u8]) -> Step {
        let (source, destination) = self.peers();
        if !self.held.is_empty() {
            if !to.writable {
                return Step::Idle;
            }
            return match (&to.stream).write(&self.held) {
                Ok(n) if n > 0 => {
                    self.held.drain(..n);
                    if self.held.is_empty() {
                        self.held = Vec::new();
                    }
                    Step::Moved(source, n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    to.writable = false;
                    Step::Idle
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Changed,
                Ok(_) | Err(_) => Step::End(SpliceEnd::Failed(destination)),
            };
        }
        if self.done || !from.readable {
            return Step::Idle;
        }
        let n = match (&from.stream).read(buf) {
            Ok(0) => return self.finish(to),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                from.readable = false;
                return Step::Idle;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Changed,
            Err(_) => return Step::End(SpliceEnd::Failed(source)),
        };
        let written = match to.writable {
            true => match (&to.stream).write(&buf[..n]) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    to.writable = false;
                    0
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(_) => return Step::End(SpliceEnd::Failed(destination)),
            },
            false => 0,
        };
        if written < n {
            self.held.extend_from_slice(&buf[written..n]);
        }
        match written {
            0 => Step::Changed,
            _ => Step::Moved(source, written),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    use egret_core::SpliceEnd;
    use egret_rt_common::sys::{self, Pipe};

    use super::{Direction, PipePool, Step};
    use crate::conn::Side;

    /// The most bytes moved per splice: the default pipe capacity.
    const CHUNK: usize = 64 * 1024;

    /// A direction's splice state.
    #[derive(Debug)]
    pub(super) struct Spliced {
        /// Splice works for this direction (it falls back to copying once it does not).
        pub(super) enabled: bool,
        /// The pipe holding bytes in flight; `None` whenever it would be empty.
        pipe: Option<Pipe>,
        /// Bytes in `pipe`.
        in_pipe: usize,
    }

    impl Default for Spliced {
        fn default() -> Spliced {
            Spliced {
                enabled: true,
                pipe: None,
                in_pipe: 0,
            }
        }
    }

    impl PipePool {
        fn take(&mut self) -> io::Result<Pipe> {
            match self.idle.pop() {
                Some(pipe) => Ok(pipe),
                None => Pipe::new(),
            }
        }

        /// Keeps an empty pipe for the next tunnel; a pipe with bytes in it must never be
        /// given back (they would surface in another tunnel).
        fn put(&mut self, pipe: Pipe) {
            if self.idle.len() < PipePool::MAX {
                self.idle.push(pipe);
            }
        }
    }

    impl Direction {
        /// Drains the pipe into the destination, or fills it from the source.
        pub(super) fn splice_step(
            &mut self,
            from: &mut Side,
            to: &mut Side,
            pipes: &mut PipePool,
        ) -> Step {
            let (source, destination) = self.peers();
            if let Some(pipe) = self.splice.pipe.as_ref() {
                if !to.writable {
                    return Step::Idle;
                }
                return match sys::splice(&pipe.read, &to.stream, self.splice.in_pipe) {
                    Ok(n) => {
                        self.splice.in_pipe = self.splice.in_pipe.saturating_sub(n);
                        if self.splice.in_pipe == 0 {
                            if let Some(pipe) = self.splice.pipe.take() {
                                pipes.put(pipe);
                            }
                        }
                        Step::Moved(source, n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        to.writable = false;
                        Step::Idle
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Changed,
                    Err(_) => Step::End(SpliceEnd::Failed(destination)),
                };
            }
            if self.done || !from.readable {
                return Step::Idle;
            }
            let Ok(pipe) = pipes.take() else {
                return Step::End(SpliceEnd::Failed(source));
            };
            // The pipe is empty, so `WouldBlock` can only mean the socket is.
            match sys::splice(&from.stream, &pipe.write, CHUNK) {
                Ok(0) => {
                    pipes.put(pipe);
                    self.finish(to)
                }
                Ok(n) => {
                    self.splice.in_pipe = n;
                    self.splice.pipe = Some(pipe);
                    Step::Changed
                }
                Err(e) => {
                    pipes.put(pipe);
                    let kind = e.kind();
                    if kind == io::ErrorKind::WouldBlock {
                        from.readable = false;
                        Step::Idle
                    } else if kind == io::ErrorKind::Interrupted {
                        Step::Changed
                    } else if matches!(
                        kind,
                        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                    ) {
                        // EINVAL, ENOSYS: this kernel or socket cannot splice: copy.
                        self.splice.enabled = false;
                        Step::Changed
                    } else {
                        Step::End(SpliceEnd::Failed(source))
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_pool_keeps_at_most_its_cap() {
            let mut pool = PipePool::new();
            for _ in 0..PipePool::MAX + 3 {
                pool.put(Pipe::new().unwrap());
            }
            assert_eq!(pool.idle.len(), PipePool::MAX);
            let _ = pool.take().unwrap();
            assert_eq!(pool.idle.len(), PipePool::MAX - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};

    use super::*;

    #[test]
    fn a_spliced_tunnel_moves_both_ways_and_passes_ends_on() {
        run_tunnel(Tunnel::new());
    }

    #[test]
    fn a_copying_tunnel_moves_both_ways_and_passes_ends_on() {
        let mut tunnel = Tunnel::new();
        #[cfg(target_os = "linux")]
        {
            tunnel.up.splice.enabled = false;
            tunnel.down.splice.enabled = false;
        }
        run_tunnel(tunnel);
    }

    /// Steps `tunnel` between two socket pairs until it ends, pretending every socket is
    /// always ready, and checks bytes, counts and half-closes.
    fn run_tunnel(mut tunnel: Tunnel) {
        let (mut client_far, mut client) = pair();
        let (mut upstream_far, mut upstream) = pair();
        let request: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let reply = b"short reply".to_vec();
        let writer = {
            let mut far = client_far.try_clone().unwrap();
            let request = request.clone();
            std::thread::spawn(move || {
                far.write_all(&request).unwrap();
                far.shutdown(Shutdown::Write).unwrap();
            })
        };
        upstream_far.write_all(&reply).unwrap();
        upstream_far.shutdown(Shutdown::Write).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            upstream_far.read_to_end(&mut got).unwrap();
            got
        });
        let (mut pipes, mut buf) = (PipePool::new(), vec![0u8; 16 * 1024]);
        let mut moved = [0usize; 2];
        let end = loop {
            for side in [&mut client, &mut upstream] {
                side.readable = true;
                side.writable = true;
            }
            match tunnel.step(&mut client, &mut upstream, &mut pipes, &mut buf) {
                Step::Idle => std::thread::yield_now(),
                Step::Changed => {}
                Step::Moved(from, n) => moved[from as usize] += n,
                Step::End(end) => break end,
            }
        };
        assert_eq!(end, SpliceEnd::Finished);
        assert_eq!(moved, [request.len(), reply.len()]);
        writer.join().unwrap();
        assert!(reader.join().unwrap() == request);
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).unwrap();
        assert_eq!(got, reply);
    }

    /// Returns a blocking far end and a non-blocking near end as a tunnel side.
    fn pair() -> (TcpStream, Side) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (near, _) = listener.accept().unwrap();
        near.set_nonblocking(true).unwrap();
        (far, Side::new(mio::net::TcpStream::from_std(near)))
    }
}
