//! The packaged units under a real systemd.
//!
//! systemd (the host's, 252 on Debian 12) boots as PID 1 in new PID, mount, network, UTS and
//! IPC namespaces. Before it starts, overlays on tmpfs cover `/usr`, `/etc` and `/var` and
//! fresh tmpfs `/tmp` and `/run`, so the host is never changed (systemd shares the host's
//! files otherwise: its boot would, for one, empty the host's `/tmp`), and it boots into an
//! empty target, so none of the host's services run. The package's files go where the .deb
//! puts them, its postinst runs
//! (the `egret` user, `/var/log/egret`), and then, for each runtime, `egret.service` is
//! started with every hardening setting of the unit in force: it serves the explicit proxy
//! (also on port 81, which only the ambient `CAP_NET_BIND_SERVICE` allows), denies, writes its
//! access log, runs as `egret` with that one capability, reloads on `systemctl reload`, is
//! goes on in a new file after logrotate (the shipped /etc/logrotate.d/egret) has rotated
//! it, is restarted by systemd after a SIGKILL and stops cleanly. `egret-setup` (with the real
//! systemctl) enables `egret-nftables.service`, whose start loads the rules and whose stop
//! removes them.
//!
//! Needs root, `unshare`, `nsenter`, systemd, `curl`, `nft` and python3 (the origin server);
//! without them the test fails and says what is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use egret_conformance::netns::require_programs;

/// How long systemd may take to boot, and a unit to settle.
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn the_packaged_units_run_under_systemd() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the systemd test needs root (namespaces, mounts)"
    );
    require_programs(&[
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("systemctl", "systemd"),
        ("curl", "curl"),
        ("nft", "nftables"),
        ("python3", "python3"),
        ("logrotate", "logrotate"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let system = Booted::boot().unwrap_or_else(|e| panic!("{e}"));
    system.install_package();

    // The origin, a unit of its own: GET /hello.txt.
    system.sh_ok(&format!(
        "mkdir -p /run/origin && echo hello from the origin > /run/origin/hello.txt && \
         systemd-run --unit=origin --property=Type=exec \
         python3 -m http.server {ORIGIN_PORT} --bind 127.0.0.1 --directory /run/origin"
    ));
    system.wait_for("the origin", || {
        system
            .sh(&format!(
                "curl -sf http://127.0.0.1:{ORIGIN_PORT}/hello.txt"
            ))
            .status
            .success()
    });

    for runtime in ["tokio", "mio", "glommio"] {
        system.check_egret_service(runtime);
    }
    system.check_nftables_service();
}

/// The origin's port inside the namespaces.
const ORIGIN_PORT: u16 = 8000;

/// systemd running as PID 1 of its own namespaces; killed, with everything in them, on drop.
struct Booted {
    unshare: Child,
    /// systemd's PID as this process sees it.
    pid: u32,
    dir: tempfile::TempDir,
}

impl Booted {
    fn boot() -> Result<Booted, String> {
        // Not under /tmp, which the namespaces cover.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).map_err(|e| e.to_string())?;
        let layers = dir.path().join("layers");
        fs::create_dir_all(&layers).map_err(|e| e.to_string())?;
        let init = format!(
            "set -e\n\
             mount -t tmpfs egret-test {layers}\n\
             for d in usr etc var; do\n\
             mkdir -p {layers}/$d/upper {layers}/$d/work\n\
             mount -t overlay overlay \
             -o lowerdir=/$d,upperdir={layers}/$d/upper,workdir={layers}/$d/work /$d\n\
             done\n\
             mount -t tmpfs tmpfs /tmp\n\
             mount -t tmpfs tmpfs /run\n\
             printf '[Unit]\\nDescription=Egret test system\\nDefaultDependencies=no\\n' \
             > /etc/systemd/system/egret-test.target\n\
             exec /lib/systemd/systemd --system --unit=egret-test.target\n",
            layers = layers.display()
        );
        let unshare = Command::new("unshare")
            .args([
                "--fork",
                "--pid",
                "--mount",
                "--net",
                "--uts",
                "--ipc",
                "--mount-proc",
                "sh",
                "-c",
                &init,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + SETTLE;
        let pid = loop {
            let listed = fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = listed.split_whitespace().next() {
                break pid.parse::<u32>().map_err(|e| e.to_string())?;
            }
            if Instant::now() >= deadline {
                return Err("unshare started no systemd".to_owned());
            }
            thread::sleep(Duration::from_millis(20));
        };
        let booted = Booted { unshare, pid, dir };
        let mut state = String::new();
        while Instant::now() < deadline {
            let out = booted.sh("systemctl is-system-running");
            state = text(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                booted.sh_ok("ip link set lo up && systemctl start systemd-journald.service");
                return Ok(booted);
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!("systemd did not boot in its namespaces: {state:?}"))
    }

    /// Runs `script` with `sh -c` in systemd's namespaces.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-a", "sh", "-c", script])
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `script`; fails the test, with what it printed, unless it succeeds. Returns stdout.
    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Returns `systemctl show -p <property> --value <unit>`.
    fn property(&self, unit: &str, property: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_owned()
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + SETTLE;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}: not reached in {SETTLE:?}\n--- journal:\n{}",
                self.journal()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Returns whether the process `pid` logged `what`.
    fn said(&self, pid: &str, what: &str) -> bool {
        text(&self.sh(&format!("journalctl --no-pager _PID={pid}")).stdout).contains(what)
    }

    fn journal(&self) -> String {
        text(
            &self
                .sh("journalctl --no-pager -n 60 -u egret -u egret-nftables")
                .stdout,
        )
    }

    /// Installs the package's files where the .deb does (into the overlays), and runs its
    /// postinst.
    fn install_package(&self) {
        let deploy = deploy();
        let egret = env!("CARGO_BIN_EXE_egret");
        let d = deploy.display();
        self.sh_ok(&format!(
            "set -e; \
             install -m 755 {egret} /usr/bin/egret; \
             install -m 755 {d}/egret-setup /usr/sbin/egret-setup; \
             install -d /etc/egret; \
             install -m 644 {d}/nftables.conf {d}/egret.toml /etc/egret/; \
             install -m 644 {d}/egret.logrotate /etc/logrotate.d/egret; \
             install -m 644 {d}/egret.service {d}/egret-nftables.service {d}/egret-eni.service \
             /usr/lib/systemd/system/; \
             sh {d}/debian/postinst configure; \
             systemctl daemon-reload"
        ));
        let user = self.sh_ok("getent passwd egret");
        assert!(user.contains("/nonexistent"), "postinst's user: {user}");
        let log_dir = self.sh_ok("stat -c '%U:%G %a' /var/log/egret");
        assert_eq!(log_dir.trim(), "egret:egret 750");
    }

    /// Starts egret.service on `runtime` and checks what the unit promises.
    fn check_egret_service(&self, runtime: &str) {
        let config = self.config(runtime);
        let path = self.dir.path().join("egret.toml");
        fs::write(&path, config).unwrap();
        self.sh_ok(&format!(
            "install -m 644 {} /etc/egret/egret.toml && rm -f /var/log/egret/access.log && \
             systemctl restart egret",
            path.display()
        ));
        self.wait_for(&format!("egret on {runtime} ready"), || {
            self.sh("curl -sf http://127.0.0.1:9090/readyz")
                .status
                .success()
        });
        let context = || format!("runtime {runtime}\n--- journal:\n{}", self.journal());

        let fetched = self.sh(&format!(
            "curl -sS --max-time 10 -x http://127.0.0.1:81 http://origin.test:{ORIGIN_PORT}/hello.txt"
        ));
        assert_eq!(
            text(&fetched.stdout),
            "hello from the origin\n",
            "through the listener on port 81: {fetched:?}\n{}",
            context()
        );
        let denied = self.sh("curl -sS --max-time 10 -x http://127.0.0.1:3128 http://denied.test/");
        assert_eq!(
            text(&denied.stdout),
            "ERR_ACCESS_DENIED\n",
            "{denied:?}\n{}",
            context()
        );
        self.wait_for("two access-log lines", || {
            self.sh("test $(wc -l < /var/log/egret/access.log) -ge 2")
                .status
                .success()
        });
        let log = self.sh_ok("cat /var/log/egret/access.log");
        assert!(
            log.contains(" TCP_MISS/200 ") && log.contains(" TCP_DENIED/403 "),
            "{log}"
        );
        // UMask=0027: the log is not world-readable.
        let mode = self.sh_ok("stat -c '%U %a' /var/log/egret/access.log");
        assert_eq!(mode.trim(), "egret 640", "{}", context());

        let pid = self.property("egret", "MainPID");
        let status = self.sh_ok(&format!("cat /proc/{pid}/status"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let uid = self.sh_ok("id -u egret");
        assert!(
            field("Uid:").starts_with(uid.trim()),
            "runs as egret: {}",
            field("Uid:")
        );
        assert_eq!(
            field("CapEff:"),
            "0000000000000400",
            "CAP_NET_BIND_SERVICE only ({runtime})"
        );
        assert_eq!(field("NoNewPrivs:"), "1");

        // `systemctl reload` is SIGHUP: the allowlist is read again, the process stays.
        self.sh_ok("systemctl reload egret");
        self.wait_for("the reload in the journal", || {
            self.said(&pid, "SIGHUP received: reloading the allowlist")
        });
        assert_eq!(
            self.property("egret", "MainPID"),
            pid,
            "reload kept the process"
        );

        // logrotate renames the log and reloads the unit: Egret goes on in a new file.
        self.sh_ok("logrotate -f /etc/logrotate.d/egret");
        let again = self.sh("curl -sS --max-time 10 -x http://127.0.0.1:3128 http://again.test/");
        assert_eq!(
            text(&again.stdout),
            "ERR_ACCESS_DENIED\n",
            "{again:?}\n{}",
            context()
        );
        self.wait_for("the line after the rotation", || {
            self.sh("grep -q again.test /var/log/egret/access.log")
                .status
                .success()
        });
        let rotated = self.sh_ok("cat /var/log/egret/access.log.1");
        assert!(
            rotated.contains("denied.test") && !rotated.contains("again.test"),
            "{rotated}"
        );
        self.wait_for("the reopen in the journal", || {
            self.said(&pid, "access log reopened")
        });
        assert_eq!(
            self.property("egret", "MainPID"),
            pid,
            "rotation kept the process"
        );

        // A crash: systemd starts it again (Restart=on-failure, RestartSec=2s).
        self.sh_ok("systemctl kill -s KILL egret");
        self.wait_for(&format!("egret on {runtime} restarted"), || {
            let now = self.property("egret", "MainPID");
            now != "0"
                && now != pid
                && self
                    .sh("curl -sf http://127.0.0.1:9090/readyz")
                    .status
                    .success()
        });
        assert_eq!(self.property("egret", "NRestarts"), "1", "{}", context());

        // A stop drains and exits 0 (SIGTERM).
        self.sh_ok("systemctl stop egret");
        assert_eq!(self.property("egret", "ActiveState"), "inactive");
        assert_eq!(self.property("egret", "Result"), "success", "{}", context());
        assert_eq!(
            self.property("egret", "ExecMainStatus"),
            "0",
            "{}",
            context()
        );
        // The counter starts again with the next start.
        self.sh_ok("systemctl reset-failed egret 2>/dev/null || true");
    }

    /// The packaged configuration with the test's allowlist, origin, runtime and an extra
    /// explicit listener on a privileged port.
    fn config(&self, runtime: &str) -> String {
        let mut config = fs::read_to_string(deploy().join("egret.toml")).unwrap();
        for (from, to) in [
            ("runtime = \"tokio\"", format!("runtime = \"{runtime}\"")),
            ("threads = 0", "threads = 2".to_owned()),
            (
                "explicit = [\"0.0.0.0:3128\"]",
                "explicit = [\"0.0.0.0:3128\", \"127.0.0.1:81\"]".to_owned(),
            ),
            (
                "\ndomains = []\n",
                "\ndomains = [\"origin.test\"]\n".to_owned(),
            ),
            (
                "ports = [80, 443]",
                format!("ports = [80, 443, {ORIGIN_PORT}]"),
            ),
            (
                "# private_exceptions = [\"10.20.0.0/16\"]",
                "private_exceptions = [\"127.0.0.0/8\"]".to_owned(),
            ),
        ] {
            assert_eq!(config.matches(from).count(), 1, "egret.toml: {from:?}");
            config = config.replacen(from, &to, 1);
        }
        config.push_str(
            "\n[resolver]\nhosts = { \"origin.test\" = [\"127.0.0.1\"], \
             \"denied.test\" = [\"127.0.0.1\"] }\n",
        );
        config
    }

    /// egret-setup with the real systemctl enables egret-nftables.service; starting it loads
    /// the rules, stopping it removes them.
    fn check_nftables_service(&self) {
        self.sh_ok(
            "egret-setup --mode both --vpc-cidr 10.0.0.0/16 --private-cidrs 10.0.1.0/24 \
             --egress-if lo --no-start 2>&1",
        );
        assert_eq!(
            self.property("egret-nftables", "UnitFileState"),
            "enabled",
            "{}",
            self.journal()
        );
        self.sh_ok("nft delete table inet egret && systemctl restart egret-nftables");
        let table = self.sh_ok("nft list table inet egret");
        assert!(
            table.contains("ip saddr 10.0.1.0/24 tcp dport 443 redirect to :3130"),
            "{table}"
        );
        self.sh_ok("systemctl stop egret-nftables");
        let gone = self.sh("nft list table inet egret");
        assert!(
            !gone.status.success(),
            "the stop removes the table: {gone:?}"
        );
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // Killing PID 1 of a PID namespace kills everything in it; the mounts go with the
        // mount namespace.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
