//! Access-log faults, on every runtime: the log's disk full (a small tmpfs filled up), the
//! log's device failing (an ext4 image shut down, so every write gets EIO), and a log that
//! stops draining (a FIFO nobody reads). In each, proxying continues, the lost lines are
//! counted on `/metrics` and reported on stderr, and nothing blocks; once the disk has room
//! again, lines are written again. (A CloudWatch outage: `cloudwatch.rs`.)
//!
//! Needs root (mount, a loop device) and `mkfs.ext4`; every mount is undone by a guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::reliability::{
    ALLOWED, Gateway, Origin, RUNTIMES, Setup, check, client_runtime, count_lines, echo,
    eventually, exclusive, figure, first_failure, get_status, scale, serve, tunnel,
};

mod support;

#[test]
fn a_full_disk_loses_counted_lines_and_never_stops_proxying() {
    let _machine = exclusive();
    let requests = scale(300, 3_000);
    let clients = client_runtime();
    for runtime in RUNTIMES {
        let dir = tempfile::tempdir().unwrap();
        let mount = Mount::tmpfs(&dir.path().join("log"), "256k");
        let log_path = mount.path.join("access.log");
        clients.block_on(async {
            let (echo_port, _) = serve(Origin::Echo).await;
            let (http_port, _) = serve(Origin::Http).await;
            let gateway = start(runtime, &[echo_port, http_port], &log_path);
            let addr = gateway.addr();
            wrote_lines(&gateway, addr, http_port, "before", 10).await;

            let filler = fill(&mount.path);
            let results = traffic(addr, echo_port, http_port, "full", requests).await;
            check(
                &gateway,
                "proxying with the disk full",
                first_failure(&results),
            );
            // Every line is either whole in the file (the last page's slack) or counted as
            // lost. (Tunnels' lines name no path: every whole line after the ten before.)
            let accounted = eventually(Duration::from_secs(10), || {
                let written = whole_lines(&gateway.log_text()) - 10;
                written as f64 + gateway.metric("egret_access_log_lines_lost_total")
                    == requests as f64
            });
            let written = whole_lines(&gateway.log_text()) - 10;
            let lost = gateway.metric("egret_access_log_lines_lost_total");
            let errors = gateway.metric("egret_access_log_write_errors_total");
            let text = gateway.log_text();
            assert!(
                accounted,
                "{runtime}: {written} written + {lost} lost != {requests}; {} sessions open; \
                 the log ends {:?}",
                gateway.metric("egret_active_sessions"),
                &text[text.len().saturating_sub(400)..]
            );
            assert!(
                lost > 0.0 && errors > 0.0,
                "{runtime}: {lost} lost, {errors} errors"
            );
            expect_warning(&gateway);

            // Room again: lines are written again.
            std::fs::remove_file(filler).unwrap();
            wrote_lines(&gateway, addr, http_port, "after", 10).await;
            figure(
                "log disk full",
                runtime,
                &format!(
                    "{requests} requests with the disk full, 0 failed; {lost} lines lost \
                     ({written} fitted whole in the last page), {errors} failed writes, reported on \
                     stderr; lines written again once room was made"
                ),
            );
        });
    }
}

#[test]
fn a_failing_log_device_loses_counted_lines_and_never_stops_proxying() {
    let _machine = exclusive();
    let requests = scale(300, 3_000);
    let clients = client_runtime();
    for runtime in RUNTIMES {
        let dir = tempfile::tempdir().unwrap();
        let mount = Mount::ext4(dir.path());
        let log_path = mount.path.join("access.log");
        clients.block_on(async {
            let (echo_port, _) = serve(Origin::Echo).await;
            let (http_port, _) = serve(Origin::Http).await;
            let gateway = start(runtime, &[echo_port, http_port], &log_path);
            let addr = gateway.addr();
            wrote_lines(&gateway, addr, http_port, "before", 10).await;

            mount.shut_down();
            let results = traffic(addr, echo_port, http_port, "eio", requests).await;
            check(
                &gateway,
                "proxying with the log device failing",
                first_failure(&results),
            );
            let counted = eventually(Duration::from_secs(10), || {
                gateway.metric("egret_access_log_lines_lost_total") == requests as f64
            });
            let lost = gateway.metric("egret_access_log_lines_lost_total");
            let errors = gateway.metric("egret_access_log_write_errors_total");
            assert!(counted, "{runtime}: {lost} lines lost of {requests}");
            assert!(errors > 0.0, "{runtime}");
            expect_warning(&gateway);
            figure(
                "log device failing (EIO)",
                runtime,
                &format!(
                    "{requests} requests, 0 failed; {lost} of {requests} lines counted lost, \
                     {errors} failed writes, reported on stderr"
                ),
            );
        });
    }
}

#[test]
fn a_log_that_stops_draining_never_blocks_proxying() {
    let _machine = exclusive();
    // Past the event queue (65,536) in the full run, so drops are counted too.
    let requests = scale(2_000, 70_000);
    let clients = client_runtime();
    for runtime in RUNTIMES {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("access.fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // Opened for reading and writing so the gateway's open does not wait for a reader;
        // nobody reads it, so the pipe fills and the gateway's writes block.
        let _stalled = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        clients.block_on(async {
            let (echo_port, _) = serve(Origin::Echo).await;
            let (http_port, _) = serve(Origin::Http).await;
            let gateway = start(runtime, &[echo_port, http_port], &fifo);
            let addr = gateway.addr();
            let results = traffic(addr, echo_port, http_port, "stalled", requests).await;
            check(
                &gateway,
                "proxying with the log stalled",
                first_failure(&results),
            );
            let dropped = gateway.metric("egret_events_dropped_total");
            if requests > 65_536 {
                assert!(dropped > 0.0, "{runtime}: no dropped events counted");
                let reported = eventually(Duration::from_secs(15), || {
                    gateway.live.stderr_text().contains("access events dropped")
                });
                assert!(reported, "{runtime}: drops not reported on stderr");
            }
            figure(
                "log stalled (FIFO not read)",
                runtime,
                &format!("{requests} requests, 0 failed; {dropped} events dropped and counted"),
            );
        });
    }
}

fn start(runtime: &'static str, ports: &[u16], log_path: &Path) -> Gateway {
    Gateway::start_with(
        runtime,
        &Setup {
            ports,
            log_path: Some(log_path),
            ..Setup::default()
        },
    )
}

/// Makes `count` requests tagged `tag`, eight at a time: allowed GETs and tunnels.
async fn traffic(
    addr: SocketAddr,
    echo_port: u16,
    http_port: u16,
    tag: &str,
    count: usize,
) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(count);
    let mut set = tokio::task::JoinSet::new();
    for n in 0..count {
        let path = format!("/{tag}/{n}");
        set.spawn(async move {
            if n % 2 == 0 {
                get_status(addr, ALLOWED, http_port, &path, 200).await
            } else {
                let mut stream = tunnel(addr, ALLOWED, echo_port).await?;
                echo(&mut stream, path.as_bytes()).await
            }
        });
        if set.len() >= 8 {
            results.push(set.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(outcome) = set.join_next().await {
        results.push(outcome.unwrap());
    }
    results
}

/// Makes `count` GETs tagged `tag` and waits for their lines in the log.
async fn wrote_lines(gateway: &Gateway, addr: SocketAddr, http_port: u16, tag: &str, count: usize) {
    let mut results = Vec::new();
    for n in 0..count {
        results.push(get_status(addr, ALLOWED, http_port, &format!("/{tag}/{n}"), 200).await);
    }
    check(gateway, tag, first_failure(&results));
    let marker = format!("/{tag}/");
    let written = eventually(Duration::from_secs(10), || {
        count_lines(&gateway.log_text(), &[&marker]) == count
    });
    assert!(
        written,
        "{}: {tag}: {} of {count} lines in the log",
        gateway.runtime,
        count_lines(&gateway.log_text(), &[&marker])
    );
}

/// Counts the lines of `text` that end with a newline: a line cut short by a full disk is
/// lost, not written.
fn whole_lines(text: &str) -> usize {
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .count()
}

fn expect_warning(gateway: &Gateway) {
    let warned = eventually(Duration::from_secs(10), || {
        gateway
            .live
            .stderr_text()
            .contains("access log write failed")
    });
    assert!(
        warned,
        "{}: no warning on stderr:\n{}",
        gateway.runtime,
        gateway.live.stderr_text()
    );
}

/// Fills the file system at `dir` with a file until a write fails; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    // Bounded: the tmpfs is far smaller than this.
    for _ in 0..100_000 {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
    path
}

/// A file system mounted for a test, unmounted (lazily, so open files cannot keep it) when
/// dropped, even when the test fails.
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &display(path),
            ],
        );
        Mount {
            path: path.to_owned(),
        }
    }

    /// Mounts a fresh 16 MiB ext4 image (on a loop device) under `dir`.
    fn ext4(dir: &Path) -> Mount {
        let image = dir.join("log.img");
        let path = dir.join("log");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", &display(&image)]);
        run("mount", &["-o", "loop", &display(&image), &display(&path)]);
        Mount { path }
    }

    /// Shuts the file system down (`EXT4_IOC_SHUTDOWN`, without flushing the journal): every
    /// later write fails with EIO, as on a failed device.
    fn shut_down(&self) {
        let script = "import fcntl, os, struct, sys\n\
                      fd = os.open(sys.argv[1], os.O_RDONLY)\n\
                      fcntl.ioctl(fd, 0x8004587D, struct.pack('I', 2))\n";
        run("python3", &["-c", script, &display(&self.path)]);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e} (root and {program} are needed)"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
