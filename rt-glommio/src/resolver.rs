//! Name lookups off the executors: a pool of threads, shared by every executor, runs
//! [`Resolver::lookup`] (which may block in `getaddrinfo`) and wakes the asking session's
//! task with the answer.
//!
//! The pool grows while lookups queue up, to [`MAX_THREADS`], and a thread idle for
//! [`IDLE_EXIT`] ends. A lookup whose session stopped waiting (a newer `Resolve`, or the
//! session ended) before a thread picked it up is skipped.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use egret_core::ResolveError;
use egret_rt_common::Resolver;

/// The most lookups in progress at once; more wait in the queue.
const MAX_THREADS: usize = 64;
/// How long an idle thread waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

type Answer = Result<Vec<IpAddr>, ResolveError>;

/// The lookup threads.
#[derive(Debug)]
pub(crate) struct ResolverPool {
    pool: Arc<Pool>,
}

/// A lookup in progress; dropping it abandons the lookup.
#[derive(Debug)]
pub(crate) struct Lookup {
    slot: Arc<Slot>,
}

#[derive(Debug)]
struct Pool {
    resolver: Arc<Resolver>,
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

#[derive(Debug)]
struct Job {
    name: Box<str>,
    slot: Arc<Slot>,
}

/// Where an answer waits for its session.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    answer: Option<Answer>,
    waker: Option<Waker>,
    abandoned: bool,
}

impl ResolverPool {
    pub(crate) fn new(resolver: Arc<Resolver>) -> ResolverPool {
        ResolverPool {
            pool: Arc::new(Pool {
                resolver,
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Starts looking up `name`.
    pub(crate) fn lookup(&self, name: Box<str>) -> Lookup {
        let slot = Arc::new(Slot::default());
        let job = Job {
            name,
            slot: slot.clone(),
        };
        let mut state = lock(&self.pool.state);
        state.queue.push_back(job);
        if state.queue.len() > state.idle && state.threads < MAX_THREADS {
            let pool = self.pool.clone();
            let spawned = std::thread::Builder::new()
                .name("egret-resolver".into())
                .spawn(move || serve(&pool));
            match spawned {
                Ok(_) => state.threads += 1,
                Err(error) => {
                    tracing::warn!(%error, "cannot start a resolver thread");
                    if state.threads == 0 {
                        // Nobody would ever answer: fail what is queued.
                        for job in state.queue.drain(..) {
                            job.slot.answer(Err(ResolveError::Failed));
                        }
                    }
                }
            }
        }
        drop(state);
        self.pool.work.notify_one();
        Lookup { slot }
    }

    /// Lets the threads end once the queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.pool.state).closed = true;
        self.pool.work.notify_all();
    }
}

impl Lookup {
    /// Polls for the answer.
    pub(crate) fn poll(&mut self, cx: &Context<'_>) -> Poll<Answer> {
        let mut state = lock(&self.slot.state);
        match state.answer.take() {
            Some(answer) => Poll::Ready(answer),
            None => {
                match &mut state.waker {
                    Some(known) if known.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        let mut state = lock(&self.slot.state);
        state.abandoned = true;
        state.waker = None;
    }
}

impl Slot {
    fn answer(&self, answer: Answer) {
        let waker = {
            let mut state = lock(&self.state);
            state.answer = Some(answer);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn abandoned(&self) -> bool {
        lock(&self.state).abandoned
    }
}

/// A pool thread: answers queued lookups until it has been idle too long or the pool closes.
fn serve(pool: &Pool) {
    loop {
        let job = {
            let mut state = lock(&pool.state);
            loop {
                if let Some(job) = state.queue.pop_front() {
                    break job;
                }
                if state.closed {
                    state.threads -= 1;
                    return;
                }
                state.idle += 1;
                let (next, timeout) = pool
                    .work
                    .wait_timeout(state, IDLE_EXIT)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                state.idle -= 1;
                if timeout.timed_out() && state.queue.is_empty() {
                    state.threads -= 1;
                    return;
                }
            }
        };
        if job.slot.abandoned() {
            continue;
        }
        let answer = pool.resolver.lookup(&job.name);
        job.slot.answer(answer);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Queues, counters and answers stay consistent across a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::*;

    #[test]
    fn answers_arrive_and_wake_the_asker() {
        let mut hosts = HashMap::new();
        hosts.insert("a.test".to_owned(), vec!["192.0.2.1".parse().unwrap()]);
        let pool = ResolverPool::new(Arc::new(Resolver::new(hosts)));
        let mut lookup = pool.lookup("a.test".into());
        let cx = Context::from_waker(Waker::noop());
        let started = Instant::now();
        let answer = loop {
            if let Poll::Ready(answer) = lookup.poll(&cx) {
                break answer;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "no answer");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(answer, Ok(vec!["192.0.2.1".parse().unwrap()]));
        pool.close();
    }
}
