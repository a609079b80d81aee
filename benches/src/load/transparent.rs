//! Workload 3 in the network-namespace world of `egret_conformance::netns`: the client in its
//! namespace dials `allowed.test`'s address on port 443, the shipped nftables rules REDIRECT it
//! to Egret's transparent-TLS listener, Egret reads the SNI and connects to the origin.
//!
//! The world's own TLS origin would run a real handshake; the workload wants the same 1 KiB
//! reply as workload 2, so the harness adds one NAT rule in the origin namespace that sends
//! port 443 to its own reply origin (listening there on [`ORIGIN_PORT`]). Every target meets
//! that rule the same way:
//!
//! ```text
//!  direct:  gw ns ──────────────────────────────────────────▶ 10.77.2.2:443 ─▶ :4443
//!  egret:   client ns ─▶ 10.77.2.2:443 ─REDIRECT─▶ egret :3130 ─▶ 10.77.2.2:443 ─▶ :4443
//!  haproxy: client ns ─▶ 10.77.2.2:8443 ─REDIRECT─▶ haproxy :9090 ─▶ 10.77.2.2:443 ─▶ :4443
//! ```
//!
//! HAProxy listens in the gateway namespace on port 9090, the admin port the shipped input
//! chain already opens to the clients, behind a REDIRECT rule of its own (a table beside the
//! shipped one). The direct baseline runs from the gateway namespace, one veth hop from the
//! origin, since the shipped rules let no client connection through unproxied.

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use egret_conformance::netns::{self, GATEWAY, ORIGIN_A, World};

use super::client::{self, Route};
use super::origin::{Endpoints, Origins};
use super::proxy::{self, Frontend};
use super::report::{Row, Status, Target, Workload};
use super::{Options, Peers, procfs};

/// Where the harness's reply origin listens in the origin namespace.
const ORIGIN_PORT: u16 = 4443;
/// Where HAProxy listens in the gateway namespace.
const HAPROXY_PORT: u16 = 9090;
/// The port the client dials to reach HAProxy (redirected to [`HAPROXY_PORT`]).
const HAPROXY_DIALED: u16 = 8443;

/// Runs workload 3 against the direct baseline, each Egret runtime (one world each) and
/// HAProxy; returns the rows in table order.
pub(super) fn rows(
    options: &Options,
    origins: &Origins,
    peers: &Peers,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let workload = Workload::TransparentTls;
    let mut targets = vec![Target::Direct];
    targets.extend(options.runtimes.iter().map(|r| Target::Egret(r.clone())));
    if options.peers {
        targets.push(Target::Haproxy);
    }
    let row = |target: &Target, status: Status| Row {
        workload,
        target: target.clone(),
        status,
    };
    if let Err(why) = preconditions(options) {
        return targets
            .iter()
            .map(|t| row(t, Status::Skipped(why.clone())))
            .collect();
    }
    let mut direct = None;
    let mut haproxy = None;
    let mut egret = Vec::new();
    for (i, runtime) in options.runtimes.iter().enumerate() {
        let target = Target::Egret(runtime.clone());
        (options.progress)(&format!("{} / world for egret {runtime}", workload.label()));
        let world = match World::start(&netns::Options::new(&options.egret, runtime)) {
            Ok(world) => world,
            Err(e) => {
                egret.push(row(&target, Status::Failed(e.to_string())));
                continue;
            }
        };
        let hijack = match Hijack::install(&world, origins, dir) {
            Ok(hijack) => hijack,
            Err(e) => {
                egret.push(row(&target, Status::Failed(e)));
                continue;
            }
        };
        if i == 0 || direct.is_none() {
            (options.progress)(&format!("{} / direct", workload.label()));
            direct = Some(direct_row(options, &world));
        }
        (options.progress)(&format!("{} / {}", workload.label(), target.label()));
        egret.push(row(&target, egret_row(options, &world)));
        let stderr = world.gateway_stderr();
        notes.extend(
            proxy::warnings(stderr.lines())
                .into_iter()
                .map(|w| format!("{} / {}: {w}", workload.label(), target.label())),
        );
        if options.peers && haproxy.is_none() {
            (options.progress)(&format!("{} / haproxy", workload.label()));
            haproxy = Some(match &peers.haproxy {
                Ok(bin) => haproxy_row(options, bin, &world, dir),
                Err(why) => Status::Skipped(why.clone()),
            });
        }
        drop(hijack);
    }
    let mut rows = vec![row(
        &Target::Direct,
        direct.unwrap_or_else(|| Status::Failed("no namespace world could be built".to_owned())),
    )];
    rows.extend(egret);
    if options.peers {
        rows.push(row(
            &Target::Haproxy,
            haproxy
                .unwrap_or_else(|| Status::Failed("no namespace world could be built".to_owned())),
        ));
    }
    rows
}

/// Returns why the workload cannot run here, if it cannot.
fn preconditions(options: &Options) -> Result<(), String> {
    if !options.transparent {
        return Err("not requested (--no-transparent)".to_owned());
    }
    if !procfs::is_root() {
        return Err(
            "needs root: it builds network namespaces and loads the nftables rules (run the \
             harness as root)"
                .to_owned(),
        );
    }
    netns::require_programs(&[("ip", "iproute2"), ("nft", "nftables")]).map_err(|e| e.to_string())
}

/// The harness's reply origin in the world's origin namespace, and the rule that sends port
/// 443 there; the origin stops on drop (the rule goes with the namespace).
struct Hijack {
    serving: tokio::task::AbortHandle,
}

impl Drop for Hijack {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl Hijack {
    fn install(world: &World, origins: &Origins, dir: &Path) -> Result<Hijack, String> {
        let origin_ns = origin_namespace(world)?;
        let listener = netns::in_namespace(&origin_ns, || {
            std::net::TcpListener::bind(("0.0.0.0", ORIGIN_PORT))
        })
        .and_then(|bound| bound)
        .map_err(|e| format!("cannot listen in {origin_ns}: {e}"))?;
        let serving = origins
            .serve_reply(listener)
            .map_err(|e| format!("cannot serve in {origin_ns}: {e}"))?;
        let hijack = Hijack { serving };
        nft(
            &origin_ns,
            &format!(
                "table ip egret_load {{\n  chain prerouting {{\n    type nat hook prerouting \
                 priority dstnat; policy accept;\n    ip daddr {ORIGIN_A} tcp dport 443 \
                 redirect to :{ORIGIN_PORT}\n  }}\n}}\n"
            ),
            &dir.join("origin.nft"),
        )?;
        // Connections per second through veth pairs: let ports in TIME_WAIT be reused, as
        // loopback does by default.
        for ns in [world.client_namespace(), world.gateway_namespace()] {
            in_ns(
                ns,
                &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse"],
            )?;
        }
        Ok(hijack)
    }
}

/// Returns the world's origin namespace: its names differ from the client's only in the role.
fn origin_namespace(world: &World) -> Result<String, String> {
    let client = world.client_namespace();
    let name = client
        .strip_suffix("client")
        .map(|prefix| format!("{prefix}origin"))
        .ok_or_else(|| format!("unexpected client namespace name {client}"))?;
    if Path::new("/run/netns").join(&name).exists() {
        Ok(name)
    } else {
        Err(format!("no origin namespace {name} beside {client}"))
    }
}

fn direct_row(options: &Options, world: &World) -> Status {
    let addr = SocketAddr::V4(SocketAddrV4::new(ORIGIN_A, 443));
    measure(options, world.gateway_namespace(), addr, None)
}

fn egret_row(options: &Options, world: &World) -> Status {
    let Some(pid) = procfs::child_in_namespace(world.gateway_namespace(), "egret") else {
        return Status::Failed(format!(
            "cannot find the egret process in {}",
            world.gateway_namespace()
        ));
    };
    let addr = SocketAddr::V4(SocketAddrV4::new(ORIGIN_A, 443));
    let status = measure(options, world.client_namespace(), addr, Some(pid));
    if procfs::sample(pid).is_none() {
        return Status::Failed(format!(
            "egret exited during the workload; its stderr:\n{}",
            world.gateway_stderr()
        ));
    }
    status
}

fn haproxy_row(options: &Options, bin: &Path, world: &World, dir: &Path) -> Status {
    let gw = world.gateway_namespace();
    let rules = format!(
        "table ip egret_load {{\n  chain prerouting {{\n    type nat hook prerouting priority \
         dstnat; policy accept;\n    ip saddr 10.77.1.0/24 tcp dport {HAPROXY_DIALED} \
         redirect to :{HAPROXY_PORT}\n  }}\n}}\n"
    );
    if let Err(e) = nft(gw, &rules, &dir.join("gateway.nft")) {
        return Status::Failed(e);
    }
    let bind = SocketAddr::V4(SocketAddrV4::new(GATEWAY, HAPROXY_PORT));
    let frontend = Frontend {
        bind,
        server: SocketAddr::V4(SocketAddrV4::new(ORIGIN_A, 443)),
    };
    let ready = || {
        netns::in_namespace(gw, || {
            TcpStream::connect_timeout(&bind, Duration::from_millis(200)).is_ok()
        })
        .unwrap_or(false)
    };
    let mut haproxy = match proxy::haproxy(
        bin,
        "netns",
        options.threads,
        &[frontend],
        dir,
        Some(gw),
        ready,
    ) {
        Ok(haproxy) => haproxy,
        Err(e) => return Status::Failed(e),
    };
    let dialed = SocketAddr::V4(SocketAddrV4::new(ORIGIN_A, HAPROXY_DIALED));
    let status = measure(options, world.client_namespace(), dialed, Some(haproxy.pid));
    if haproxy.alive() {
        status
    } else {
        Status::Failed(format!(
            "haproxy exited during the workload: {}",
            haproxy.diagnostics()
        ))
    }
}

/// Runs the tunnel loop from namespace `ns` against `addr`, probing `pid`.
fn measure(options: &Options, ns: &str, addr: SocketAddr, pid: Option<u32>) -> Status {
    let route = Route::Plain(Endpoints {
        http: addr,
        reply: addr,
        bulk: addr,
        idle: addr,
    });
    let probe = move || pid.and_then(procfs::sample);
    let sizes = &options.sizes;
    let ran = netns::in_namespace(ns, || {
        client::on_new_runtime(options.client_threads, || {
            client::tunnels(
                route,
                sizes.tunnel_concurrency,
                sizes.tunnel_iterations,
                sizes.budget,
                &probe,
            )
        })
    });
    match ran {
        Ok(Ok(outcome)) => super::status(Workload::TransparentTls, outcome),
        Ok(Err(e)) | Err(e) => Status::Failed(format!("cannot run the client in {ns}: {e}")),
    }
}

/// Loads `rules` into namespace `ns` with `nft -f` (written to `file` first).
fn nft(ns: &str, rules: &str, file: &Path) -> Result<(), String> {
    std::fs::write(file, rules).map_err(|e| format!("write {}: {e}", file.display()))?;
    let path = file.to_string_lossy();
    in_ns(ns, &["nft", "-f", &path])
}

/// Runs `args` in namespace `ns` (`ip netns exec`); the error says what failed.
fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip netns exec: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip netns exec {ns} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
