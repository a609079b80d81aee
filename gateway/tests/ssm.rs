//! The allowlist from SSM Parameter Store, against `moto_server`: read at start, a change
//! picked up at the next reload, a bad value or an unreachable SSM keeping the last good list,
//! and a gateway that will not start on a parameter it cannot read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::types::ParameterType;
use egret_conformance::live::{LiveGateway, serve_http};

mod support;

use support::moto::MotoServer;

const PARAMETER: &str = "/egret/test/allowlist";

/// Dummy credentials and no instance metadata: nothing leaves the machine.
const ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("EGRET_LOG", "info"),
];

#[test]
fn the_parameter_is_read_at_start_and_a_change_arrives_at_the_next_reload() {
    let mut moto = MotoServer::start(None);
    let ssm = Ssm::new(&moto);
    ssm.put(ParameterType::StringList, "allowed.test,.example.test");
    let origin = serve_http().unwrap();
    let world = World::start(&moto, origin);

    assert_eq!(world.get("allowed.test", origin), 200);
    assert_eq!(world.get("www.example.test", origin), 200);
    assert_eq!(world.get("later.test", origin), 403);

    // A stack update of the domains: the gateway sees it within a reload interval.
    ssm.put(ParameterType::String, "allowed.test\nlater.test # added\n");
    wait_until("the new entry", || world.get("later.test", origin) == 200);
    assert_eq!(world.get("www.example.test", origin), 403);
    assert!(
        world
            .gateway
            .stderr_text()
            .contains("added later.test; removed .example.test"),
        "{}",
        world.gateway.stderr_text()
    );

    // An invalid value: the last good list stays, and the log says why.
    ssm.put(ParameterType::String, "allowed.test, .com");
    wait_until("the failed reload", || {
        world
            .gateway
            .stderr_text()
            .contains("allowlist reload failed")
    });
    assert!(
        world
            .gateway
            .stderr_text()
            .contains("ssm:/egret/test/allowlist")
    );
    assert_eq!(world.get("later.test", origin), 200);

    // SSM unreachable: still the last good list.
    moto.stop();
    wait_until("the unreachable SSM in the log", || {
        world
            .gateway
            .stderr_text()
            .contains("SSM parameter /egret/test/allowlist: cannot read it")
    });
    assert_eq!(world.get("later.test", origin), 200);
    assert_eq!(world.get("www.example.test", origin), 403);
}

#[test]
fn a_parameter_that_cannot_be_read_at_start_keeps_the_gateway_from_starting() {
    let moto = MotoServer::start(None);
    // moto loads its SSM backend on the first call, slowly on a busy machine: not the gateway's.
    Ssm::new(&moto).put_other();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("egret.toml");
    std::fs::write(&config, config_text(&moto, 80, &dir.path().join("log"))).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_egret"))
        .args(["run", "--config"])
        .arg(&config)
        .envs(ENV)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("SSM parameter /egret/test/allowlist: cannot read it: no such parameter"),
        "{stderr}"
    );
}

struct World {
    gateway: LiveGateway,
    _dir: tempfile::TempDir,
}

impl World {
    fn start(moto: &MotoServer, origin: u16) -> World {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let config = dir.path().join("egret.toml");
        std::fs::write(&config, config_text(moto, origin, &log)).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_egret"));
        let gateway = LiveGateway::start_with_env(bin, "tokio", &config, log, &ENV).unwrap();
        World { gateway, _dir: dir }
    }

    fn get(&self, host: &str, port: u16) -> u16 {
        let mut stream = TcpStream::connect(self.gateway.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}

/// A gateway whose only entries come from the parameter, re-read every 300 ms.
fn config_text(moto: &MotoServer, origin: u16, log: &Path) -> String {
    format!(
        "[listen]\nexplicit = [\"127.0.0.1:0\"]\nadmin = \"\"\n\
         [allowlist]\nssm_parameter = \"{PARAMETER}\"\nssm_region = \"us-east-1\"\n\
         ssm_endpoint = \"{endpoint}\"\nreload_interval = \"300ms\"\n\
         [policy]\nports = [{origin}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\
         [resolver]\nhosts = {{ \"allowed.test\" = [\"127.0.0.1\"], \"www.example.test\" = [\"127.0.0.1\"], \"later.test\" = [\"127.0.0.1\"] }}\n\
         [log]\nformat = \"squid\"\npath = {log:?}\n",
        endpoint = moto.endpoint(),
        log = log.to_string_lossy(),
    )
}

/// An SSM client for moto.
struct Ssm {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Ssm {
    fn new(moto: &MotoServer) -> Ssm {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(moto.endpoint())
            .http_client(egret::aws::http_client())
            .build();
        Ssm {
            runtime,
            client: Client::from_conf(config),
        }
    }

    /// Writes a parameter other than the gateway's.
    fn put_other(&self) {
        let call = self
            .client
            .put_parameter()
            .name("/egret/other")
            .r#type(ParameterType::String)
            .value("other.test")
            .send();
        self.runtime.block_on(call).unwrap();
    }

    fn put(&self, kind: ParameterType, value: &str) {
        let call = self
            .client
            .put_parameter()
            .name(PARAMETER)
            .r#type(kind)
            .value(value)
            .overwrite(true)
            .send();
        self.runtime.block_on(call).unwrap();
    }
}

/// Polls `done` for up to ten seconds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}
