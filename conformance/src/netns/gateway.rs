//! `egret run` inside the gateway namespace, and its configuration.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    EXPLICIT_PROXY, HEADER_TIMEOUT, NAMES, Options, SetupError, TRANSPARENT_HTTP_PORT,
    TRANSPARENT_TLS_PORT,
};

/// How long the gateway may take to report its listeners.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// An `egret run` process (in a namespace, through `ip netns exec`) with its stderr kept.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    pub(super) fn start(
        options: &Options,
        gw: &str,
        config: &Path,
    ) -> Result<GatewayProcess, SetupError> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", gw])
            .arg(&options.bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--runtime", &options.runtime, "--threads", "2"]);
        GatewayProcess::spawn(
            command,
            &[
                "listening explicit",
                "listening transparent_http",
                "listening transparent_tls",
            ],
        )
    }

    /// Spawns `command` (an `egret run`) and waits until its stderr has shown a line containing
    /// each of `wanted`; fails with its stderr if it exits or stays silent for 20 s.
    pub fn spawn(mut command: Command, wanted: &[&str]) -> Result<GatewayProcess, SetupError> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SetupError(format!("cannot start egret: {e}")))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let lines = stderr.clone();
            let mut waiting: Vec<String> = wanted.iter().map(|w| (*w).to_owned()).collect();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    waiting.retain(|want| !line.contains(want.as_str()));
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                    if waiting.is_empty() {
                        let _ = tx.send(());
                    }
                }
            });
        }
        let mut process = GatewayProcess { child, stderr };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(process);
            }
            let exited: Option<ExitStatus> = process.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                // Let the reader take the last lines.
                thread::sleep(Duration::from_millis(100));
                return Err(SetupError(format!(
                    "egret did not report {wanted:?} ({}); its stderr:\n{}",
                    match exited {
                        Some(status) => format!("it exited with {status}"),
                        None => format!("still silent after {START_DEADLINE:?}"),
                    },
                    process.stderr()
                )));
            }
        }
    }

    /// Returns what the process wrote to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        // `ip netns exec` execs egret in place: the child is egret itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway's configuration: the listeners of the module diagram, static answers for the
/// test names, private origins admitted, short timeouts, a JSON access log.
pub(super) fn gateway_config(options: &Options, log: &Path) -> String {
    let quote = |s: &str| format!("{s:?}");
    let allow: Vec<String> = options.allow.iter().map(|e| quote(e)).collect();
    let hosts: Vec<String> = NAMES
        .iter()
        .map(|(name, ip)| format!("{} = [\"{ip}\"]", quote(name)))
        .collect();
    format!(
        "[listen]\n\
         explicit = [\"{EXPLICIT_PROXY}\"]\n\
         transparent_http = [\"0.0.0.0:{TRANSPARENT_HTTP_PORT}\"]\n\
         transparent_tls = [\"0.0.0.0:{TRANSPARENT_TLS_PORT}\"]\n\n\
         [allowlist]\ndomains = [{allow}]\n\n\
         [policy]\nprivate_exceptions = [\"10.77.0.0/16\"]\n{policy}\n\n\
         [resolver]\nhosts = {{ {hosts} }}\n\n\
         [limits]\nheader_timeout = \"{header}ms\"\nconnect_timeout = \"2s\"\n\
         idle_timeout = \"10s\"\ndrain_timeout = \"1s\"\n\n\
         [log]\nformat = \"json\"\npath = {log}\n",
        allow = allow.join(", "),
        policy = options.policy.join("\n"),
        hosts = hosts.join(", "),
        header = HEADER_TIMEOUT.as_millis(),
        log = quote(&log.to_string_lossy()),
    )
}
