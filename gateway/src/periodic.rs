//! A named thread that runs a job every interval, at once when poked, and ends when stopped.
//!
//! The allowlist reloader and the dropped-event watch run on it. A poke (SIGHUP) and a stop
//! (shutdown) wake the thread through a condition variable, so neither waits for the interval.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Why a periodic job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The interval passed.
    Timer,
    /// Someone asked for a run now.
    Poked,
}

/// A running periodic thread; stopping or dropping it ends the thread and waits for it.
#[derive(Debug)]
pub struct Periodic {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

/// Asks a periodic thread to run its job now; cheap to clone and to send across threads.
#[derive(Clone, Debug)]
pub struct Poke {
    control: Arc<Control>,
}

#[derive(Debug, Default)]
struct Control {
    flags: Mutex<Flags>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Flags {
    poked: bool,
    stop: bool,
}

impl Periodic {
    /// Starts a thread named `name` that calls `job` after `interval`, or at once when poked;
    /// the job returns the interval to wait before its next run.
    pub fn spawn<F>(name: &str, interval: Duration, mut job: F) -> io::Result<Periodic>
    where
        F: FnMut(Wake) -> Duration + Send + 'static,
    {
        let control = Arc::new(Control::default());
        let shared = control.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut interval = interval;
                while let Some(wake) = shared.wait(interval) {
                    interval = job(wake);
                }
            })?;
        Ok(Periodic {
            control,
            thread: Some(thread),
        })
    }

    /// Returns a handle that runs the job now.
    #[must_use]
    pub fn poker(&self) -> Poke {
        Poke {
            control: self.control.clone(),
        }
    }

    /// Stops the thread after the job it may be running, and waits for it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.control.flags().stop = true;
        self.control.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Poke {
    /// Asks for a run of the job as soon as the thread is free.
    pub fn poke(&self) {
        self.control.flags().poked = true;
        self.control.wake.notify_all();
    }
}

impl Control {
    /// Waits up to `interval` for a poke; returns `None` once stopped.
    fn wait(&self, interval: Duration) -> Option<Wake> {
        let flags = self.flags();
        let (mut flags, _) = self
            .wake
            .wait_timeout_while(flags, interval, |f| !f.poked && !f.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if flags.stop {
            return None;
        }
        if flags.poked {
            flags.poked = false;
            return Some(Wake::Poked);
        }
        Some(Wake::Timer)
    }

    fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_poke_runs_the_job_at_once_and_a_stop_ends_the_thread() {
        let (tx, rx) = mpsc::channel();
        let periodic = Periodic::spawn("test", Duration::from_secs(3600), move |wake| {
            let _ = tx.send(wake);
            Duration::from_secs(3600)
        })
        .unwrap();
        periodic.poker().poke();
        let wake = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(wake, Wake::Poked);
        periodic.stop();
        assert_eq!(rx.recv(), Err(mpsc::RecvError), "the job was dropped");
    }

    #[test]
    fn the_timer_runs_the_job_with_the_interval_it_returns() {
        let (tx, rx) = mpsc::channel();
        let periodic = Periodic::spawn("test", Duration::from_millis(10), move |wake| {
            let _ = tx.send(wake);
            Duration::from_millis(10)
        })
        .unwrap();
        for _ in 0..3 {
            let wake = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(wake, Wake::Timer);
        }
        drop(periodic);
    }
}
