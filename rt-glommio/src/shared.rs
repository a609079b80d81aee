//! What the executors share across threads (the connection limit, the shutdown signal), what
//! the tasks of one executor share (the drain), and the small future helpers they wait with.
//!
//! Every wait here is a waker registered with the thing waited on. glommio wakes a task from
//! another thread by queueing the waker on the task's executor and kicking its ring, so a
//! session ending on one executor can resume an accept loop parked on another.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use egret_rt_common::{EventSink, Resolver, RuntimeStats, ServerConfig};
use glommio::timer::Timer;

use crate::resolver::ResolverPool;

/// What every executor shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Static answers, consulted inline.
    pub(crate) resolver: Arc<Resolver>,
    /// Threads for the lookups that may block.
    pub(crate) lookups: ResolverPool,
    pub(crate) events: EventSink,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) stats: Arc<RuntimeStats>,
    pub(crate) capacity: Arc<Capacity>,
    pub(crate) shutdown: ShutdownSignal,
}

impl Shared {
    pub(crate) fn new(config: &ServerConfig) -> Shared {
        Shared {
            resolver: config.resolver.clone(),
            lookups: ResolverPool::new(config.resolver.clone()),
            events: config.events.clone(),
            keepalive: config.tcp_keepalive,
            stats: config.stats.clone(),
            capacity: Arc::new(Capacity::new(config.max_connections)),
            shutdown: ShutdownSignal::default(),
        }
    }
}

/// `max_connections` across all executors: places taken by open sessions, and the accept
/// loops waiting for one to free up.
#[derive(Debug)]
pub(crate) struct Capacity {
    max: usize,
    open: AtomicUsize,
    /// Accept loops (by key) that found the limit reached.
    waiting: Mutex<Vec<(usize, Waker)>>,
}

/// One session's place under `max_connections`; given back when dropped.
#[derive(Debug)]
pub(crate) struct Place(Arc<Capacity>);

impl Capacity {
    fn new(max: usize) -> Capacity {
        Capacity {
            max: max.max(1),
            open: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// Waits for a place for one more session; `key` identifies the accept loop asking.
    pub(crate) async fn reserve(self: &Arc<Self>, key: usize) -> Place {
        poll_fn(|cx| {
            if self.try_reserve() {
                return Poll::Ready(Place(self.clone()));
            }
            self.register(key, cx.waker());
            // Look again now that the waker is in place: a place freed in between woke
            // nobody, and is found here.
            if self.try_reserve() {
                return Poll::Ready(Place(self.clone()));
            }
            Poll::Pending
        })
        .await
    }

    /// Forgets the waker of accept loop `key`, which has ended.
    pub(crate) fn forget(&self, key: usize) {
        lock(&self.waiting).retain(|(k, _)| *k != key);
    }

    fn register(&self, key: usize, waker: &Waker) {
        let mut waiting = lock(&self.waiting);
        match waiting.iter_mut().find(|(k, _)| *k == key) {
            Some((_, known)) => known.clone_from(waker),
            None => waiting.push((key, waker.clone())),
        }
    }

    fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *lock(&self.waiting));
        for (_, waker) in waiting {
            waker.wake();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The start of a drain, as the server announces it to every executor.
#[derive(Debug, Default)]
pub(crate) struct ShutdownSignal {
    state: Mutex<SignalState>,
}

#[derive(Debug, Default)]
struct SignalState {
    deadline: Option<Instant>,
    waiting: Vec<Waker>,
}

impl ShutdownSignal {
    /// Starts the drain with `deadline` (the first call wins) and wakes every executor.
    pub(crate) fn begin(&self, deadline: Instant) {
        let waiting = {
            let mut state = lock(&self.state);
            state.deadline.get_or_insert(deadline);
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }

    /// Waits for the drain to start; returns its deadline.
    pub(crate) async fn wait(&self) -> Instant {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some(deadline) = state.deadline {
                return Poll::Ready(deadline);
            }
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// The drain as one executor's tasks see it: the deadline once it has started, and the tasks
/// to wake when it does.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    deadline: Cell<Option<Instant>>,
    /// One slot per watcher (a session or an accept loop), reused after it ends.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

/// A task's view of its executor's [`Drain`].
#[derive(Debug)]
pub(crate) struct DrainWatch {
    drain: Rc<Drain>,
    slot: usize,
}

impl Drain {
    /// Starts the drain and wakes every watcher.
    pub(crate) fn begin(&self, deadline: Instant) {
        self.deadline.set(Some(deadline));
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .flat_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Returns the deadline, once the drain has started.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Returns a watch for one task.
    pub(crate) fn watch(self: &Rc<Self>) -> DrainWatch {
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(None);
                slots.len() - 1
            }
        };
        DrainWatch {
            drain: self.clone(),
            slot,
        }
    }
}

impl DrainWatch {
    /// Polls for the start of the drain; returns its deadline.
    pub(crate) fn poll(&mut self, cx: &Context<'_>) -> Poll<Instant> {
        if let Some(deadline) = self.drain.deadline.get() {
            return Poll::Ready(deadline);
        }
        if let Some(slot) = self.drain.slots.borrow_mut().get_mut(self.slot) {
            match slot {
                Some(known) if known.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }

    /// Waits for the start of the drain; returns its deadline.
    pub(crate) async fn wait(&mut self) -> Instant {
        poll_fn(|cx| self.poll(cx)).await
    }
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        if let Some(slot) = self.drain.slots.borrow_mut().get_mut(self.slot) {
            *slot = None;
        }
        self.drain.free.borrow_mut().push(self.slot);
    }
}

/// A glommio timer kept for a session's `poll_timeout`.
///
/// It is moved earlier at once, but left in place when the deadline moves later (as the idle
/// deadline does on every byte of a tunnel): it then fires early, the session's
/// `handle_timeout` finds nothing due, which is harmless, and the timer is set again. A busy
/// connection so re-arms its timer about once per idle period instead of once per read.
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    armed: Option<(Instant, Timer)>,
}

impl Alarm {
    /// Sets the alarm for `deadline`; `now` is the latest clock reading.
    pub(crate) fn set(&mut self, deadline: Option<Instant>, now: Instant) {
        let Some(deadline) = deadline else {
            self.armed = None;
            return;
        };
        if let Some((at, _)) = &self.armed {
            if *at <= deadline && *at > now {
                return;
            }
        }
        let timer = Timer::new(deadline.saturating_duration_since(Instant::now()));
        self.armed = Some((deadline, timer));
    }

    /// Polls the alarm; ready once it has gone off.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.armed {
            Some((_, timer)) => Pin::new(timer).poll(cx).map(|_| ()),
            None => Poll::Pending,
        }
    }
}

/// Which of two futures finished first.
#[derive(Debug)]
pub(crate) enum First<A, B> {
    Left(A),
    Right(B),
}

/// Runs two futures until one finishes, preferring `left` when both can; the other is
/// dropped.
pub(crate) async fn first<A: Future, B: Future>(left: A, right: B) -> First<A::Output, B::Output> {
    let mut left = pin!(left);
    let mut right = pin!(right);
    poll_fn(|cx| {
        if let Poll::Ready(value) = left.as_mut().poll(cx) {
            return Poll::Ready(First::Left(value));
        }
        right.as_mut().poll(cx).map(First::Right)
    })
    .await
}

/// Counts wake-ups that found work ready at once, so that a task which always has work (a
/// bulk tunnel) still lets its executor's other tasks run: glommio never preempts a task, and
/// a socket with bytes waiting completes every read without suspending.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    ready_in_a_row: u32,
}

impl Budget {
    /// Wake-ups in a row without suspending before the task yields.
    const LIMIT: u32 = 32;

    /// Records a wake-up; `suspended` says whether the task had to wait for it. Yields to the
    /// executor once the budget is spent.
    pub(crate) async fn spend(&mut self, suspended: bool) {
        self.ready_in_a_row = if suspended {
            0
        } else {
            self.ready_in_a_row + 1
        };
        if self.ready_in_a_row >= Self::LIMIT {
            self.ready_in_a_row = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent across a panic (wakers and counters).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_context() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn a_drain_watch_sees_the_deadline_and_its_slot_is_reused() {
        let drain = Rc::new(Drain::default());
        let mut watch = drain.watch();
        let cx = noop_context();
        assert!(watch.poll(&cx).is_pending());
        drop(watch);
        let mut again = drain.watch();
        assert_eq!(drain.slots.borrow().len(), 1, "the freed slot is reused");
        let deadline = Instant::now();
        drain.begin(deadline);
        assert_eq!(again.poll(&cx), Poll::Ready(deadline));
    }

    #[test]
    fn the_first_shutdown_deadline_wins() {
        let signal = ShutdownSignal::default();
        let early = Instant::now();
        signal.begin(early);
        signal.begin(early + Duration::from_secs(5));
        assert_eq!(lock(&signal.state).deadline, Some(early));
    }
}
