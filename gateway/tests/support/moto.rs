//! `moto_server`, a local AWS emulator from PyPI, as a child process on a loopback port.
//!
//! It runs from the virtual environment `test.sh` makes (`target/moto-venv`, or
//! `EGRET_MOTO_VENV`); it ends when dropped, and by itself after two minutes or when the test
//! process goes away (it exits when its stdin closes). Without moto the tests fail and say how
//! to install it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;

/// The moto release `test.sh` installs.
pub(crate) const MOTO: &str = "moto[server]==5.1.22";

/// A running `moto_server`.
pub(crate) struct MotoServer {
    child: Option<(Child, ChildStdin)>,
    /// The loopback port it listens on.
    pub(crate) port: u16,
}

impl MotoServer {
    /// Starts moto on `port` (a free one when `None`) and waits until it answers.
    pub(crate) fn start(port: Option<u16>) -> MotoServer {
        let python = moto_python();
        let port = port.unwrap_or_else(free_port);
        let script = "import os, sys, threading\n\
            threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n\
            timer = threading.Timer(120, lambda: os._exit(0))\n\
            timer.daemon = True\n\
            timer.start()\n\
            from moto.server import main\n\
            main(['-H', '127.0.0.1', '-p', sys.argv[1]])\n";
        let mut child = Command::new(&python)
            .args(["-c", script, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdin = child.stdin.take().expect("a piped stdin");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server on port {port} exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            thread::sleep(Duration::from_millis(50));
        }
        MotoServer {
            child: Some((child, stdin)),
            port,
        }
    }

    /// Returns the endpoint URL to give an SDK client.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills moto and waits until it has exited.
    pub(crate) fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns the python of the moto virtual environment, or fails saying how to make one.
fn moto_python() -> PathBuf {
    let venv = std::env::var_os("EGRET_MOTO_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/moto-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists() && venv.join("bin/moto_server").exists(),
        "moto is not installed in {}: these tests need it. Run ./test.sh, which installs it, \
         or: python3 -m venv target/moto-venv && target/moto-venv/bin/pip install '{MOTO}' \
         (on Debian: apt-get install python3-venv first); EGRET_MOTO_VENV names another \
         virtual environment",
        venv.display()
    );
    python
}
