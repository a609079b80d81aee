//! Name resolution off the event loops: a few threads shared by every worker run the blocking
//! system resolver and post answers to the asking worker's mailbox, then wake it.
//!
//! Static answers (`[resolver] hosts`) never come here: workers answer them inline.

use std::io;
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use egret_core::{ResolveError, Ticket};
use egret_rt_common::Resolver;
use mio::Waker;

/// Threads running lookups.
const THREADS: usize = 4;
/// Lookups waiting for a thread; beyond this, a lookup fails at once rather than queueing
/// without bound behind a slow resolver.
const QUEUE: usize = 1024;

/// Answers waiting for one worker.
#[derive(Debug)]
pub(crate) struct Mailbox {
    answers: Mutex<Vec<Answer>>,
    waker: Arc<Waker>,
}

/// The answer to one lookup, addressed to the session that asked.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) slot: usize,
    pub(crate) generation: usize,
    pub(crate) ticket: Ticket,
    pub(crate) result: Result<Vec<IpAddr>, ResolveError>,
}

/// A lookup for the pool.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) name: Box<str>,
    pub(crate) slot: usize,
    pub(crate) generation: usize,
    pub(crate) ticket: Ticket,
    pub(crate) mailbox: Arc<Mailbox>,
}

/// How long [`ResolverPool::join`] waits for lookups still in progress, as long as rt-tokio's
/// runtime waits for its blocking tasks.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// The resolver threads; [`join`](Self::join) stops them once every handle is gone.
#[derive(Debug)]
pub(crate) struct ResolverPool {
    tx: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Disconnected once every thread has returned.
    exited: Receiver<()>,
}

/// Where workers submit lookups.
#[derive(Clone, Debug)]
pub(crate) struct ResolverHandle {
    tx: SyncSender<Job>,
}

impl Mailbox {
    /// Returns an empty mailbox that wakes its worker through `waker`.
    pub(crate) fn new(waker: Arc<Waker>) -> Mailbox {
        Mailbox {
            answers: Mutex::new(Vec::new()),
            waker,
        }
    }

    /// Returns every answer posted since the last call.
    pub(crate) fn take(&self) -> Vec<Answer> {
        std::mem::take(&mut *self.answers.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn post(&self, answer: Answer) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(answer);
        // A failed wake leaves the answer queued until the worker's next wake-up, where the
        // session's resolve timer still bounds the wait.
        let _ = self.waker.wake();
    }
}

impl ResolverPool {
    /// Starts the resolver threads.
    pub(crate) fn start(resolver: Arc<Resolver>) -> io::Result<(ResolverPool, ResolverHandle)> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let (exit_tx, exited) = mpsc::channel::<()>();
        let mut threads = Vec::with_capacity(THREADS);
        for index in 0..THREADS {
            let rx = rx.clone();
            let resolver = resolver.clone();
            let exit_tx = exit_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("egret-resolve-{index}"))
                .spawn(move || {
                    serve(&rx, &resolver);
                    drop(exit_tx);
                })?;
            threads.push(thread);
        }
        let handle = ResolverHandle { tx: tx.clone() };
        Ok((
            ResolverPool {
                tx: Some(tx),
                threads,
                exited,
            },
            handle,
        ))
    }

    /// Waits for the threads to finish; they do once every [`ResolverHandle`] is dropped and
    /// the lookups in progress have returned. A lookup stuck in the system resolver is given
    /// [`JOIN_GRACE`], then left behind rather than holding up the gateway's exit.
    pub(crate) fn join(mut self) {
        self.tx = None;
        match self.exited.recv_timeout(JOIN_GRACE) {
            Err(RecvTimeoutError::Disconnected) => {
                for thread in self.threads.drain(..) {
                    let _ = thread.join();
                }
            }
            Ok(()) | Err(RecvTimeoutError::Timeout) => {
                tracing::debug!("resolver threads still busy; not waiting for them");
            }
        }
    }
}

impl ResolverHandle {
    /// Queues a lookup; returns it when the queue is full.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }
}

fn serve(rx: &Mutex<Receiver<Job>>, resolver: &Resolver) {
    loop {
        // One thread waits on the channel while the others wait on the lock.
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        let result = resolver.lookup(&job.name);
        job.mailbox.post(Answer {
            slot: job.slot,
            generation: job.generation,
            ticket: job.ticket,
            result,
        });
    }
}
