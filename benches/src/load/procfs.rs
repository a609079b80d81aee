//! What `/proc` says about a proxy process (CPU time, resident memory) and about the machine.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// CPU time and memory of a process and its descendants at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// stime alone (time in the kernel on the process's behalf), in clock ticks.
    pub system_ticks: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak resident set), KiB.
    pub hwm_kib: u64,
}

impl Sample {
    /// Returns the CPU time spent between `before` and `self`.
    #[must_use]
    pub fn cpu_since(&self, before: &Sample) -> Duration {
        ticks_to_duration(self.ticks.saturating_sub(before.ticks))
    }

    /// Returns the system part of the CPU time spent between `before` and `self`.
    #[must_use]
    pub fn system_since(&self, before: &Sample) -> Duration {
        ticks_to_duration(self.system_ticks.saturating_sub(before.system_ticks))
    }
}

/// Returns the sample of `pid` and every process descended from it, or `None` when `pid` is
/// gone.
#[must_use]
pub fn sample(pid: u32) -> Option<Sample> {
    let mut total = one(pid)?;
    for child in descendants(pid) {
        if let Some(s) = one(child) {
            total.ticks += s.ticks;
            total.system_ticks += s.system_ticks;
            total.rss_kib += s.rss_kib;
            total.hwm_kib += s.hwm_kib;
        }
    }
    Some(total)
}

/// Returns the id of a process named `comm`, child of this process, that lives in the network
/// namespace `ns` (as created by `ip netns add`).
#[must_use]
pub fn child_in_namespace(ns: &str, comm: &str) -> Option<u32> {
    let inode = std::fs::metadata(Path::new("/run/netns").join(ns))
        .ok()?
        .ino();
    let want = format!("net:[{inode}]");
    let me = std::process::id();
    processes().into_iter().find_map(|(pid, parent)| {
        (parent == me
            && read_trimmed(&format!("/proc/{pid}/comm")).as_deref() == Some(comm)
            && std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|link| link.to_string_lossy() == want))
        .then_some(pid)
    })
}

/// Describes this machine: CPU model, cores, kernel, memory, distribution.
#[must_use]
pub fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let logical = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let usable = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(kib_field))
        .map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
        );
    let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    vec![
        ("CPU".to_owned(), model),
        (
            "cores".to_owned(),
            format!("{logical} logical, {usable} usable by this process"),
        ),
        ("memory".to_owned(), memory),
        ("kernel".to_owned(), format!("Linux {kernel}")),
        ("distribution".to_owned(), os),
    ]
}

/// Returns the first line `program -v` prints, or `None` when it cannot run.
#[must_use]
pub fn version(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().next().map(|l| l.trim().to_owned())
}

/// Returns whether this process runs as root.
#[must_use]
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
pub fn raise_open_files() -> u64 {
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
    }
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

fn one(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // proc(5): the fields after the parenthesised command name, from field 3 (state) on;
    // utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0, kib_field)
    };
    Some(Sample {
        ticks: utime + stime,
        system_ticks: stime,
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Returns every process descended from `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (pid, parent) in processes() {
        children.entry(parent).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// Returns (pid, parent pid) of every process.
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((pid, parent.parse().ok()?))
        })
        .collect()
}

/// Parses `   1234 kB`.
fn kib_field(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
    }

    #[test]
    fn the_machine_is_described() {
        let m = machine();
        assert!(
            m.iter()
                .any(|(k, v)| k == "kernel" && v.starts_with("Linux "))
        );
    }
}
