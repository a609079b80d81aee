//! Checks, before any executor starts, that this host can run glommio, and says how to fix
//! what is missing.
//!
//! glommio fails obscurely where it cannot run: below 512 KiB of `RLIMIT_MEMLOCK` an
//! executor fails with `MemLockLimit(…)`; without io_uring (a kernel built without it, a
//! seccomp profile that blocks it) the thread that builds the executor panics; on a kernel
//! older than 5.8 it prints a joke and exits the process. The checks run in that order's
//! reverse, so the process never reaches the exit.

use std::sync::{Arc, Mutex, PoisonError};

use glommio::{LocalExecutorBuilder, Placement};
use rustix::process::Resource;

/// The locked memory glommio insists on before it builds an executor (its own check).
pub(crate) const MIN_MEMLOCK: u64 = 512 * 1024;
/// The memory each executor registers with its three io_uring rings, which counts against
/// `RLIMIT_MEMLOCK` for the user: glommio's floor. glommio uses it for direct file I/O, which
/// the gateway does not do; its default (10 MiB per executor, registered three times) would
/// exceed common limits, and glommio would then go on without registered buffers anyway.
pub(crate) const IO_MEMORY: usize = 64 * 1024;
/// The oldest kernel glommio supports (it probes for the io_uring operations of 5.8).
const MIN_KERNEL: (u32, u32) = (5, 8);
/// The name of the thread that builds a throwaway executor.
const PROBE_THREAD: &str = "egret-glommio-probe";

/// Checks that io_uring is usable and the locked-memory limit is high enough.
pub(crate) fn check() -> Result<(), String> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    if let Some(problem) = kernel_problem(&release) {
        return Err(problem);
    }
    let memlock = rustix::process::getrlimit(Resource::Memlock).current;
    if let Some(problem) = memlock_problem(memlock) {
        return Err(problem);
    }
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    if let Some(problem) = disabled.as_deref().and_then(sysctl_problem) {
        return Err(problem);
    }
    probe().map_err(|reason| io_uring_problem(&reason))
}

/// Explains a kernel too old for glommio.
fn kernel_problem(release: &str) -> Option<String> {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (numbers.next(), numbers.next()) else {
        return None;
    };
    ((major, minor) < MIN_KERNEL).then(|| {
        format!(
            "the glommio runtime needs io_uring as Linux {}.{} or later provides it, and this \
             kernel is {release}: upgrade the kernel, or choose another runtime \
             (`--runtime tokio`).",
            MIN_KERNEL.0, MIN_KERNEL.1
        )
    })
}

/// Explains a locked-memory limit (`None` is unlimited) too low for glommio.
fn memlock_problem(limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    (limit < MIN_MEMLOCK).then(|| {
        format!(
            "the glommio runtime needs at least {} KiB of locked memory for its io_uring rings, \
             and this process may lock only {} KiB (RLIMIT_MEMLOCK). Raise the limit where egret \
             starts: `ulimit -l unlimited` in its shell (as root, or up to the hard limit), \
             `LimitMEMLOCK=infinity` in the [Service] section of its systemd unit, or \
             `--ulimit memlock=-1` for a container; or choose another runtime \
             (`--runtime tokio`).",
            MIN_MEMLOCK / 1024,
            limit / 1024
        )
    })
}

/// Explains io_uring disabled by `sysctl kernel.io_uring_disabled` (Linux 6.6 and later).
fn sysctl_problem(value: &str) -> Option<String> {
    match value.trim() {
        "2" => Some(
            "the glommio runtime needs io_uring, and this host disables it \
             (sysctl kernel.io_uring_disabled = 2): set it to 0 \
             (`sysctl -w kernel.io_uring_disabled=0`), or choose another runtime \
             (`--runtime tokio`)."
                .to_owned(),
        ),
        _ => None,
    }
}

/// Explains a failure to set up a ring on a kernel that should have io_uring.
fn io_uring_problem(reason: &str) -> String {
    format!(
        "the glommio runtime could not set up an io_uring ring ({reason}). io_uring is \
         unavailable to this process: a seccomp profile probably blocks it (Docker's default \
         profile does; allow io_uring_setup, io_uring_enter and io_uring_register), or sysctl \
         kernel.io_uring_disabled = 1 limits it to the group in kernel.io_uring_group. Allow \
         it, or choose another runtime (`--runtime tokio`)."
    )
}

/// Builds and drops an executor with the settings the server uses, on a thread of its own.
fn probe() -> Result<(), String> {
    let outcome = Arc::new(Mutex::new(None));
    let seen = outcome.clone();
    // glommio panics when it cannot create a ring; keep that panic's message (an aside about
    // Roman history) off the terminal, and report our own.
    let quiet = QuietPanics::install();
    let thread = std::thread::Builder::new()
        .name(PROBE_THREAD.into())
        .spawn(move || {
            let built = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(IO_MEMORY)
                .make()
                .map(drop)
                .map_err(|error| error.to_string());
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(built);
        })
        .map_err(|error| format!("cannot start a thread: {error}"))?;
    let joined = thread.join();
    drop(quiet);
    let built = outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (joined, built) {
        (Ok(()), Some(built)) => built,
        (Ok(()), None) | (Err(_), _) => Err("the kernel refused to create a ring".to_owned()),
    }
}

/// Silences panics on the probe thread while it lives; other threads' panics are reported
/// as before.
struct QuietPanics {
    previous: Arc<PanicHook>,
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static>;

impl QuietPanics {
    fn install() -> QuietPanics {
        let previous: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        let report = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(PROBE_THREAD) {
                report(info);
            }
        }));
        QuietPanics { previous }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        // Dropping the filtering hook releases its share of the previous one.
        drop(std::panic::take_hook());
        let previous = self.previous.clone();
        std::panic::set_hook(Box::new(move |info| previous(info)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_memlock_limit_names_both_fixes() {
        let message = memlock_problem(Some(64 * 1024)).unwrap();
        assert!(message.contains("only 64 KiB"), "{message}");
        assert!(message.contains("`ulimit -l unlimited`"), "{message}");
        assert!(message.contains("`LimitMEMLOCK=infinity`"), "{message}");
        assert!(!message.contains('\n'), "one paragraph: {message}");
        assert_eq!(memlock_problem(Some(MIN_MEMLOCK)), None);
        assert_eq!(memlock_problem(None), None, "unlimited");
    }

    #[test]
    fn old_kernels_are_named_and_new_ones_pass() {
        let message = kernel_problem("5.4.0-150-generic").unwrap();
        assert!(message.contains("5.4.0-150-generic"), "{message}");
        assert!(message.contains("5.8"), "{message}");
        assert_eq!(kernel_problem("5.8.0"), None);
        assert_eq!(kernel_problem("6.18.44-fc-v782"), None);
        assert_eq!(kernel_problem("weird"), None);
    }

    #[test]
    fn a_blocked_io_uring_names_seccomp_and_the_sysctl() {
        let message = io_uring_problem("the kernel refused to create a ring");
        assert!(message.contains("seccomp"), "{message}");
        assert!(message.contains("io_uring_setup"), "{message}");
        assert!(sysctl_problem("2\n").unwrap().contains("io_uring_disabled"));
        assert_eq!(sysctl_problem("0\n"), None);
    }

    #[test]
    fn this_host_passes() {
        assert_eq!(check(), Ok(()));
    }
}
