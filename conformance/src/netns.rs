//! A network-namespace world for transparent mode: a client, a gateway and the origins in three
//! namespaces joined by veth pairs, the shipped nftables rules on the gateway, and `egret run`
//! inside it, so that the redirects, `SO_ORIGINAL_DST`, NAT and the firewall take the kernel's
//! real paths.
//!
//! ```text
//!  client ns                 gw ns                                   origin ns
//!  10.77.1.2 ───veth─── 10.77.1.1 │ 10.77.2.1 ───veth─── 10.77.2.2   HTTP :80, TLS :443, TCP :22,
//!  default via 10.77.1.1     deploy/nftables.conf                      UDP :443 (echo)
//!  resolv.conf: 10.77.2.53   egret: explicit 10.77.1.1:3128  10.77.2.3   HTTP :80, TLS :443, TCP :22
//!                                   transparent_http :3129   10.77.2.53  DNS :53 (UDP)
//!                                   transparent_tls  :3130   default via 10.77.2.1
//! ```
//!
//! Building it needs root, `ip` (iproute2) and `nft` (nftables): [`World::start`] returns an
//! error naming exactly what is missing, never a world that silently tests nothing. Drop tears
//! everything down, also while a test panics: the gateway process is killed, the origin threads
//! stop, the namespaces are deleted (taking the veth pairs and the rules with them) and the
//! client's `/etc/netns/<client>/resolv.conf` is removed. Names carry the process id and a
//! counter, so concurrent test processes and worlds cannot collide; namespaces left behind by
//! a process that was killed are removed when the next world starts.
//!
//! The origins run in this process, on threads that entered the origin namespace before
//! creating their sockets ([`in_namespace`]); the test reaches the client side the same way
//! ([`World::in_client`]) or runs programs there ([`World::client_command`]).

mod gateway;
mod namespaces;
mod probe;
mod servers;

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use probe::{DnsReply, ProbeEnd, ProbeResult, client_hello, dns_query, probe_tcp, reframe};
pub use servers::{OriginStats, dns_answer};

pub use gateway::GatewayProcess;
use gateway::gateway_config;
use namespaces::{Names, Namespaces, reap_stale_namespaces};
use servers::{Origins, TlsMaterial};

/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
/// The gateway's address on the client side.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The gateway's address on the origin side.
pub const GATEWAY_EGRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
/// The first origin: `allowed.test` and `denied.test` resolve to it.
pub const ORIGIN_A: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
/// The second origin: `other.test` resolves to it.
pub const ORIGIN_B: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 3);
/// The DNS server the client's resolv.conf names.
pub const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 53);
/// Egret's explicit (forward proxy) listener.
pub const EXPLICIT_PROXY: SocketAddrV4 = SocketAddrV4::new(GATEWAY, 3128);
/// The transparent HTTP listener's port (port 80 is redirected there).
pub const TRANSPARENT_HTTP_PORT: u16 = 3129;
/// The transparent TLS listener's port (port 443 is redirected there).
pub const TRANSPARENT_TLS_PORT: u16 = 3130;
/// The gateway's `[limits] header_timeout`: how long a ClientHello or request head may take.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// The names the origin DNS server and the gateway's `[resolver] hosts` answer.
pub const NAMES: [(&str, Ipv4Addr); 3] = [
    ("allowed.test", ORIGIN_A),
    ("other.test", ORIGIN_B),
    ("denied.test", ORIGIN_A),
];

/// How long [`World::wait_for_record`] waits for an access record.
const LOG_DEADLINE: Duration = Duration::from_secs(5);
/// The longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// Namespace names start with this, then the process id.
const NS_PREFIX: &str = "egret-";

/// Worlds started by this process, for unique names.
static WORLDS: AtomicU32 = AtomicU32::new(0);

/// Why a world could not be built: what is missing or what failed, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "network-namespace world: {}", self.0)
    }
}

impl std::error::Error for SetupError {}

/// What to build.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `egret` binary.
    pub bin: PathBuf,
    /// `--runtime`.
    pub runtime: String,
    /// The nftables rules loaded in the gateway namespace.
    pub nftables: PathBuf,
    /// The allowlist entries.
    pub allow: Vec<String>,
    /// Extra lines for the `[policy]` section, e.g. `tls_deny = "reset"`.
    pub policy: Vec<String>,
}

impl Options {
    /// Returns the options for `bin` on `runtime`: the workspace's `deploy/nftables.conf`, and
    /// `allowed.test` and `other.test` allowed (`denied.test` is not).
    #[must_use]
    pub fn new(bin: &Path, runtime: &str) -> Options {
        Options {
            bin: bin.to_owned(),
            runtime: runtime.to_owned(),
            nftables: Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nftables.conf"),
            allow: vec!["allowed.test".to_owned(), "other.test".to_owned()],
            policy: Vec::new(),
        }
    }
}

/// The running world; see the module documentation.
#[derive(Debug)]
pub struct World {
    // Fields drop in this order: the gateway, the origins, then the namespaces.
    gateway: GatewayProcess,
    origins: Origins,
    net: Namespaces,
    ca: PathBuf,
    log: PathBuf,
    config: String,
    _dir: tempfile::TempDir,
}

/// What a program run in the client namespace did.
#[derive(Clone, Debug)]
pub struct Run {
    /// The exit code; `None` when it was killed (also at the timeout).
    pub code: Option<i32>,
    /// Whether it was killed at the timeout.
    pub timed_out: bool,
    /// Standard output, as bytes.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl Run {
    /// Returns standard output, lossily decoded.
    #[must_use]
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}{}; stdout: {:?}; stderr: {:?}",
            self.command,
            self.code,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout_text(),
            self.stderr
        )
    }
}

impl World {
    /// Builds the world and starts `egret run` in it; returns once every listener is bound.
    pub fn start(options: &Options) -> Result<World, SetupError> {
        preflight(options)?;
        reap_stale_namespaces();
        let dir = tempfile::tempdir()
            .map_err(|e| SetupError(format!("cannot create a temporary directory: {e}")))?;
        let net = Namespaces::create(Names::next()?)?;
        net.load_rules(&options.nftables)?;
        let tls = TlsMaterial::generate(dir.path())?;
        let origins = Origins::start(&net.names.origin, &tls)?;
        let log = dir.path().join("access.log");
        let config = gateway_config(options, &log);
        let config_path = dir.path().join("egret.toml");
        std::fs::write(&config_path, &config)
            .map_err(|e| SetupError(format!("cannot write {}: {e}", config_path.display())))?;
        let gateway = GatewayProcess::start(options, &net.names.gw, &config_path)?;
        Ok(World {
            gateway,
            origins,
            net,
            ca: tls.ca_path,
            log,
            config,
            _dir: dir,
        })
    }

    /// Returns the PEM file of the CA that signed the origins' certificate (for `--cacert`).
    #[must_use]
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Returns the gateway's configuration file, as written.
    #[must_use]
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Returns the client namespace's name.
    #[must_use]
    pub fn client_namespace(&self) -> &str {
        &self.net.names.client
    }

    /// Returns the gateway namespace's name.
    #[must_use]
    pub fn gateway_namespace(&self) -> &str {
        &self.net.names.gw
    }

    /// Returns a command that runs `program` in the client namespace (`ip netns exec`, which
    /// also bind-mounts the client's resolv.conf), with no proxy variables in its environment.
    #[must_use]
    pub fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.net.names.client, program])
            .stdin(Stdio::null());
        for name in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "no_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(name);
        }
        command
    }

    /// Runs `program args` in the client namespace, killing it after `timeout`.
    pub fn run_in_client(&self, program: &str, args: &[&str], timeout: Duration) -> Run {
        let mut command = self.client_command(program);
        command.args(args);
        let line = format!("{program} {}", args.join(" "));
        run_bounded(command, line, timeout)
    }

    /// Runs `f` on a thread inside the client namespace: sockets it creates are the client's.
    /// A panic in `f` is passed on.
    pub fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        in_namespace(&self.net.names.client, f)
    }

    /// Returns what the origins have seen so far.
    #[must_use]
    pub fn origin_stats(&self) -> OriginStats {
        self.origins.stats()
    }

    /// Returns the access log's lines so far.
    #[must_use]
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Returns a mark for [`World::wait_for_record`]: the number of access-log lines so far.
    #[must_use]
    pub fn log_mark(&self) -> usize {
        self.log_lines().len()
    }

    /// Waits up to five seconds for a JSON access record after line `mark` for which `matches`
    /// holds; returns it, or a message naming `what` with every record logged since the mark.
    pub fn wait_for_record(
        &self,
        mark: usize,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + LOG_DEADLINE;
        loop {
            let lines = self.log_lines();
            let found = lines
                .iter()
                .skip(mark)
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|record| matches(record));
            if let Some(record) = found {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                let since: Vec<&str> = lines.iter().skip(mark).map(String::as_str).collect();
                return Err(format!(
                    "expected an access record {what} within {LOG_DEADLINE:?}; records since \
                     the check began:\n  {}",
                    if since.is_empty() {
                        "(none)".to_owned()
                    } else {
                        since.join("\n  ")
                    }
                ));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Returns what the gateway has written to stderr so far.
    #[must_use]
    pub fn gateway_stderr(&self) -> String {
        self.gateway.stderr()
    }

    /// Returns the ruleset loaded in the gateway namespace (`nft list ruleset`), for messages.
    #[must_use]
    pub fn ruleset(&self) -> String {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            &self.net.names.gw,
            "nft",
            "list",
            "ruleset",
        ]);
        let run = run_bounded(
            command,
            "nft list ruleset".to_owned(),
            Duration::from_secs(5),
        );
        format!("{}{}", run.stdout_text(), run.stderr)
    }
}

/// Runs `f` on a new thread that first joins the network namespace `name` (as created by
/// `ip netns add`). Sockets created there belong to that namespace; threads `f` spawns are in
/// it too. A panic in `f` is passed on.
pub fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let path = Path::new("/run/netns").join(name);
    let namespace = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    thread::scope(|scope| {
        let joined = scope
            .spawn(|| {
                rustix::thread::move_into_link_name_space(
                    namespace.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| io::Error::other(format!("setns into {name}: {e}")))?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Returns an error naming every program in `programs` that is not on `PATH`.
pub fn require_programs(programs: &[(&str, &str)]) -> Result<(), SetupError> {
    let missing: Vec<String> = programs
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, package)| format!("`{program}` (Debian package {package})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SetupError(format!(
            "missing programs: {}",
            missing.join(", ")
        )))
    }
}

/// Runs `command`, killing it after `timeout`.
fn run_bounded(mut command: Command, line: String, timeout: Duration) -> Run {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Run {
                code: None,
                timed_out: false,
                stdout: Vec::new(),
                stderr: format!("cannot start: {e}"),
                command: line,
            };
        }
    };
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let (output, timed_out) = match rx.recv_timeout(timeout) {
        Ok(output) => (output, false),
        Err(_) => {
            // The child is owned by the waiting thread: end it by its id, then collect it.
            if let Some(pid) = i32::try_from(id)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            (
                rx.recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| Err(io::Error::other("not collected after kill"))),
                true,
            )
        }
    };
    let _ = waiter.join();
    match output {
        Ok(Output {
            status,
            stdout,
            stderr,
        }) => Run {
            code: if timed_out { None } else { status.code() },
            timed_out,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            command: line,
        },
        Err(e) => Run {
            code: None,
            timed_out,
            stdout: Vec::new(),
            stderr: format!("wait failed: {e}"),
            command: line,
        },
    }
}

/// Checks the preconditions: root, `ip`, `nft`, the binary and the rules file.
fn preflight(options: &Options) -> Result<(), SetupError> {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push(
            "root (creating network namespaces and loading nftables rules need it; run the \
             tests as root, e.g. with sudo)"
                .to_owned(),
        );
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if find_program(program).is_none() {
            missing.push(format!(
                "the `{program}` program on PATH (Debian: apt-get install {package})"
            ));
        }
    }
    if !options.bin.is_file() {
        missing.push(format!("the egret binary at {}", options.bin.display()));
    }
    if !options.nftables.is_file() {
        missing.push(format!(
            "the nftables rules at {}",
            options.nftables.display()
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SetupError(format!(
            "cannot run: missing {}",
            missing.join("; ")
        )))
    }
}

/// Looks for `program` on PATH and in the sbin directories (not on every user's PATH).
#[must_use]
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
