//! Tunnels: bytes copied both ways between client and upstream after core's `Splice`.
//!
//! Each direction reads up to 64 KiB into the executor's scratch buffer and writes it to the
//! other side at once; only what the destination does not take right away is kept, in a
//! buffer of the direction's own that is freed once written, so an idle tunnel holds no
//! buffer. A direction does not read again until its kept bytes are written, which is the
//! backpressure. End of stream on one side, once its bytes are through, shuts down writing
//! on the other; the tunnel ends when both directions have.
//!
//! Why no `splice(2)`: moving bytes socket → pipe → socket without blocking the executor
//! needs readiness for each step (socket readable, socket writable) without reading or
//! writing, and glommio 0.9's streams offer neither — only `poll_read` and `poll_write`,
//! which move bytes — nor a way to borrow their descriptors for the `splice` call. The copy
//! uses glommio's own non-blocking sends and receives and never stalls the executor.

use std::future::poll_fn;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use egret_core::{Peer, Session, SpliceEnd};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::drive::{SCRATCH_LEN, with_scratch};
use crate::shared::{Alarm, Budget, DrainWatch, Shared};

/// What a tunnel borrows from its session's IO.
pub(crate) struct Sides<'a> {
    pub(crate) client: &'a mut TcpStream,
    pub(crate) upstream: &'a mut TcpStream,
    pub(crate) alarm: &'a mut Alarm,
    pub(crate) drain: &'a mut DrainWatch,
    pub(crate) draining: &'a mut bool,
}

/// What one wake-up of a tunnel brought.
enum Step {
    /// Bytes from `Peer` reached the other side.
    Moved(Peer, usize),
    /// `Peer` reached end of stream and everything it sent is through.
    Ended(Peer),
    /// A read or write on `Peer` failed.
    Failed(Peer),
    Timeout,
    Shutdown(Instant),
}

/// One direction of a tunnel, named by the side its bytes come from.
#[derive(Debug)]
struct Direction {
    source: Peer,
    /// Bytes read but not yet taken by the destination, from `written` on.
    kept: Vec<u8>,
    written: usize,
    done: bool,
}

/// Copies both ways until both directions end, an error occurs, or core wants the session
/// closed (idle timeout, drain deadline). Returns with core's `Close` action pending.
pub(crate) async fn run(session: &mut Session, sides: Sides<'_>, shared: &Shared) {
    let Sides {
        client,
        upstream,
        alarm,
        drain,
        draining,
    } = sides;
    let mut up = Direction::new(Peer::Client);
    let mut down = Direction::new(Peer::Upstream);
    let mut budget = Budget::default();
    let mut suspended = true;
    let mut upstream_first = false;
    let mut now = Instant::now();
    loop {
        while let Some(event) = session.poll_event() {
            shared.events.send(event);
        }
        if session.is_finished() {
            return;
        }
        budget.spend(suspended).await;
        let deadline = session.poll_timeout();
        alarm.set(deadline, now);
        upstream_first = !upstream_first;
        let mut polls = 0u32;
        let (step, at) = poll_fn(|cx| {
            polls += 1;
            let now = Instant::now();
            if !*draining {
                if let Poll::Ready(deadline) = drain.poll(cx) {
                    return Poll::Ready((Step::Shutdown(deadline), now));
                }
            }
            if deadline.is_some_and(|at| at <= now) {
                return Poll::Ready((Step::Timeout, now));
            }
            let order = match upstream_first {
                true => [&mut down, &mut up],
                false => [&mut up, &mut down],
            };
            for direction in order {
                let (from, to) = match direction.source {
                    Peer::Client => (&mut *client, &mut *upstream),
                    Peer::Upstream => (&mut *upstream, &mut *client),
                };
                if let Poll::Ready(step) = direction.poll_step(from, to, cx) {
                    return Poll::Ready((step, now));
                }
            }
            alarm.poll(cx).map(|()| (Step::Timeout, now))
        })
        .await;
        (now, suspended) = (at, polls > 1);
        match step {
            Step::Moved(from, n) => session.handle_splice_progress(now, from, n as u64),
            Step::Ended(from) => {
                let to = match from {
                    Peer::Client => &*upstream,
                    Peer::Upstream => &*client,
                };
                let _ = to.shutdown(Shutdown::Write).await;
                if up.done && down.done {
                    session.handle_splice_end(now, SpliceEnd::Finished);
                }
            }
            Step::Failed(peer) => session.handle_splice_end(now, SpliceEnd::Failed(peer)),
            Step::Timeout => session.handle_timeout(now),
            Step::Shutdown(deadline) => {
                *draining = true;
                session.handle_shutdown(now, deadline);
            }
        }
    }
}

impl Direction {
    fn new(source: Peer) -> Direction {
        Direction {
            source,
            kept: Vec::new(),
            written: 0,
            done: false,
        }
    }

    fn destination(&self) -> Peer {
        match self.source {
            Peer::Client => Peer::Upstream,
            Peer::Upstream => Peer::Client,
        }
    }

    /// Moves what it can: kept bytes first, else one read forwarded at once. Everything read
    /// is either written or kept before this returns, so dropping the wait loses nothing.
    fn poll_step(
        &mut self,
        from: &mut TcpStream,
        to: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Step> {
        if self.done {
            return Poll::Pending;
        }
        if self.written < self.kept.len() {
            return match Pin::new(to).poll_write(cx, &self.kept[self.written..]) {
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    if self.written == self.kept.len() {
                        self.kept = Vec::new();
                        self.written = 0;
                    }
                    Poll::Ready(Step::Moved(self.source, n))
                }
                Poll::Ready(Err(_)) => Poll::Ready(Step::Failed(self.destination())),
                Poll::Pending => Poll::Pending,
            };
        }
        with_scratch(|buf| {
            let n = match Pin::new(from).poll_read(cx, &mut buf[..SCRATCH_LEN]) {
                Poll::Ready(Ok(0)) => {
                    self.done = true;
                    return Poll::Ready(Step::Ended(self.source));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(_)) => return Poll::Ready(Step::Failed(self.source)),
                Poll::Pending => return Poll::Pending,
            };
            match Pin::new(to).poll_write(cx, &buf[..n]) {
                Poll::Ready(Ok(written)) => {
                    if written < n {
                        self.kept = buf[written..n].to_vec();
                    }
                    Poll::Ready(Step::Moved(self.source, written))
                }
                Poll::Ready(Err(_)) => Poll::Ready(Step::Failed(self.destination())),
                Poll::Pending => {
                    // The destination is full: keep the bytes, and wait for it to drain.
                    self.kept = buf[..n].to_vec();
                    Poll::Pending
                }
            }
        })
    }
}
