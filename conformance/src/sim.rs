//! Runs cases against `egret-core` alone, in a simulated world: a fake clock, DNS answered from
//! the world's table, and origins played by the shared [`Origin`] model. It is the runtime
//! adapter of a world where the network is a function call.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use egret_core::policy::{AllowlistBuilder, Mode, Policy, PolicySettings, PolicyStore};
use egret_core::{
    Accepted, Action, Closed, ConnectError, Event, Gateway, GatewayConfig, Limits, ListenerKind,
    Peer, ResolveError, Session, SpliceEnd, Ticket, UnixMillis, WallClock,
};

use crate::case::{
    CONNECT_TIMEOUT, Case, HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_HEADER_BYTES, Ports, Step, World,
};
use crate::client::{Read, check, read_response};
use crate::origin::Origin;
use crate::{Failure, check_log, squid_fields};

/// The ports of the simulated world.
pub const PORTS: Ports = Ports {
    http: 8080,
    echo: 7007,
    refused: 6006,
    blackhole: 5005,
    proxy: 3128,
    admin: 9090,
};

/// Runs one case against core; returns what went wrong, if anything.
pub fn run(case: &Case) -> Result<(), Failure> {
    let mut sim = Sim::new(case.world);
    for (index, step) in case.steps.iter().enumerate() {
        sim.step(step).map_err(|message| Failure {
            step: Some(index),
            message,
        })?;
    }
    sim.client_closes();
    let records: Vec<_> = sim.records.iter().map(squid_fields).collect();
    check_log(&case.log, &PORTS, &records).map_err(|message| Failure {
        step: None,
        message,
    })?;
    sim.check_invariants().map_err(|message| Failure {
        step: None,
        message,
    })
}

/// Returns the policy of a world, with its ports filled in.
#[must_use]
pub fn policy(world: World, ports: &Ports) -> Policy {
    let mut builder = AllowlistBuilder::new();
    for entry in world.allow() {
        builder.add_entry(&ports.fill(entry), "world", 0);
    }
    let (list, _) = builder.build().unwrap_or_default();
    let settings = PolicySettings {
        mode: if world.audit() {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        ports: ports.allowed(),
        allow_ip_literals: world.allow_ip_literals(),
        private_exceptions: vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
        own_ports: vec![ports.proxy, ports.admin],
        ..PolicySettings::default()
    };
    Policy::new(list, settings)
}

struct Sim {
    world: World,
    now: Instant,
    session: Session,
    /// Bytes the client has received and not yet consumed.
    client_rx: Vec<u8>,
    /// The client has seen FIN or a reset.
    client_closed: bool,
    upstream: Option<Origin>,
    /// The upstream has closed its side (after its last output).
    upstream_closed: bool,
    /// What the upstream sent that the session has not been given yet.
    from_upstream: Vec<u8>,
    /// The upstream's close, not yet reported.
    upstream_eof_pending: bool,
    spliced: bool,
    /// The client has half-closed its connection.
    half_closed: bool,
    closes: usize,
    actions_after_close: usize,
    records: Vec<Closed>,
    decided: usize,
    /// Connects to addresses the world's policy forbids: always a bug in core.
    forbidden_connects: Vec<SocketAddr>,
}

impl Sim {
    fn new(world: World) -> Sim {
        let now = Instant::now();
        let limits = Limits {
            max_header_bytes: MAX_HEADER_BYTES,
            header_timeout: HEADER_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            linger_timeout: Duration::from_secs(2),
        };
        let clock = WallClock {
            instant: now,
            unix: UnixMillis(1_700_000_000_000),
        };
        let store = PolicyStore::new(policy(world, &PORTS));
        let mut gateway = Gateway::new(
            GatewayConfig {
                limits,
                clock,
                proxy_protocol: egret_core::ProxyProtocol::Off,
            },
            store,
            0,
        );
        let session = gateway.accept(
            now,
            Accepted {
                client: SocketAddr::from(([127, 0, 0, 1], 40000)),
                local: SocketAddr::from(([127, 0, 0, 1], 3128)),
                listener: ListenerKind::Explicit,
                original_dst: None,
            },
        );
        let mut sim = Sim {
            world,
            now,
            session,
            client_rx: Vec::new(),
            client_closed: false,
            upstream: None,
            upstream_closed: false,
            from_upstream: Vec::new(),
            upstream_eof_pending: false,
            spliced: false,
            half_closed: false,
            closes: 0,
            actions_after_close: 0,
            records: Vec::new(),
            decided: 0,
            forbidden_connects: Vec::new(),
        };
        sim.settle();
        sim
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Send(text) => {
                let bytes = PORTS.fill(text).into_bytes();
                if self.spliced {
                    self.tunnel_send(&bytes);
                } else {
                    self.session.handle_client_data(self.now, &bytes);
                }
                self.settle();
                Ok(())
            }
            Step::Wait(duration) => {
                self.advance(*duration);
                Ok(())
            }
            Step::HalfClose => {
                self.session.handle_eof(self.now, Peer::Client);
                self.half_closed = true;
                self.settle();
                Ok(())
            }
            Step::Response(want) => {
                match read_response(&self.client_rx, self.client_closed, want.to_head) {
                    Read::Complete(response, used) => {
                        self.client_rx.drain(..used);
                        check(&response, &want.filled(&PORTS))
                    }
                    Read::Incomplete => Err(format!(
                        "no complete response (closed: {}): {:?}",
                        self.client_closed,
                        String::from_utf8_lossy(&self.client_rx)
                    )),
                    Read::Invalid(e) => Err(e),
                }
            }
            Step::Tunnel => self.receive(crate::CONNECT_ESTABLISHED),
            Step::Echo(text) => {
                let bytes = PORTS.fill(text).into_bytes();
                if self.spliced {
                    self.tunnel_send(&bytes);
                } else {
                    self.session.handle_client_data(self.now, &bytes);
                }
                self.settle();
                self.receive(&bytes)
            }
            Step::Receive(text) => self.receive(PORTS.fill(text).as_bytes()),
            Step::SendBytes(bytes) => {
                if self.spliced {
                    self.tunnel_send(bytes);
                } else {
                    self.session.handle_client_data(self.now, bytes);
                }
                self.settle();
                Ok(())
            }
            Step::ReceiveBytes(bytes) => self.receive(bytes),
            Step::Closed => {
                if !self.client_rx.is_empty() {
                    return Err(format!(
                        "unread bytes before close: {:?}",
                        String::from_utf8_lossy(&self.client_rx)
                    ));
                }
                if !self.client_closed {
                    return Err("the connection is still open".to_owned());
                }
                Ok(())
            }
            Step::Truncated => {
                if !self.client_closed {
                    return Err("the connection is still open".to_owned());
                }
                match read_response(&self.client_rx, true, false) {
                    Read::Incomplete if !self.client_rx.is_empty() => {
                        self.client_rx.clear();
                        Ok(())
                    }
                    other @ (Read::Complete(..) | Read::Incomplete | Read::Invalid(_)) => {
                        Err(format!("a truncated response expected, got {other:?}"))
                    }
                }
            }
        }
    }

    fn receive(&mut self, want: &[u8]) -> Result<(), String> {
        if !self.client_rx.starts_with(want) {
            return Err(format!(
                "expected {:?}, client has {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&self.client_rx)
            ));
        }
        self.client_rx.drain(..want.len());
        Ok(())
    }

    /// Sends client bytes through a splice (what a runtime's copy loop would do).
    fn tunnel_send(&mut self, bytes: &[u8]) {
        let Some(origin) = self.upstream.as_mut() else {
            return;
        };
        self.session
            .handle_splice_progress(self.now, Peer::Client, bytes.len() as u64);
        let output = origin.on_data(bytes);
        if !output.write.is_empty() {
            self.session.handle_splice_progress(
                self.now,
                Peer::Upstream,
                output.write.len() as u64,
            );
            self.client_rx.extend_from_slice(&output.write);
        }
    }

    /// The client closes its connection at the end of the case.
    fn client_closes(&mut self) {
        if self.spliced {
            // The echo origin closes when the client does; both directions end.
            self.session
                .handle_splice_end(self.now, SpliceEnd::Finished);
        } else if !self.half_closed {
            self.session.handle_eof(self.now, Peer::Client);
        }
        self.settle();
        // Let lingering closes and any timers run out.
        self.advance(Duration::from_secs(600));
    }

    fn advance(&mut self, duration: Duration) {
        let target = self.now + duration;
        while let Some(at) = self.session.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.session.handle_timeout(self.now);
            self.settle();
        }
        self.now = target;
        self.session.handle_timeout(self.now);
        self.settle();
    }

    /// Drives the session until nothing more happens without outside input.
    fn settle(&mut self) {
        loop {
            let mut progress = false;
            while let Some(action) = self.session.poll_action() {
                progress = true;
                self.perform(action);
            }
            while let Some(event) = self.session.poll_event() {
                match event {
                    Event::Closed(record) => self.records.push(record),
                    Event::Decided(_) => self.decided += 1,
                }
            }
            let to_client = self.session.outbound(Peer::Client).to_vec();
            if !to_client.is_empty() {
                progress = true;
                self.client_rx.extend_from_slice(&to_client);
                self.session
                    .handle_written(self.now, Peer::Client, to_client.len());
            }
            let to_upstream = self.session.outbound(Peer::Upstream).to_vec();
            if !to_upstream.is_empty() {
                self.session
                    .handle_written(self.now, Peer::Upstream, to_upstream.len());
                self.feed_upstream(&to_upstream);
                continue;
            }
            // The upstream's answer arrives after everything the session wanted done.
            if !self.from_upstream.is_empty() {
                progress = true;
                let bytes = std::mem::take(&mut self.from_upstream);
                if self.spliced {
                    self.session.handle_splice_progress(
                        self.now,
                        Peer::Upstream,
                        bytes.len() as u64,
                    );
                    self.client_rx.extend_from_slice(&bytes);
                } else {
                    self.session.handle_upstream_data(self.now, &bytes);
                }
            } else if self.upstream_eof_pending {
                progress = true;
                self.upstream_eof_pending = false;
                self.session.handle_eof(self.now, Peer::Upstream);
            }
            if !progress {
                return;
            }
        }
    }

    fn feed_upstream(&mut self, bytes: &[u8]) {
        let Some(origin) = self.upstream.as_mut() else {
            return;
        };
        if self.upstream_closed {
            return;
        }
        let output = origin.on_data(bytes);
        self.from_upstream.extend_from_slice(&output.write);
        if output.close {
            self.upstream_closed = true;
            self.upstream_eof_pending = true;
        }
    }

    fn perform(&mut self, action: Action) {
        if self.closes > 0 {
            self.actions_after_close += 1;
            return;
        }
        match action {
            Action::Resolve { ticket, name } => self.resolve(ticket, &name),
            Action::Connect { ticket, addr } => self.connect(ticket, addr),
            Action::Disconnect => {
                self.upstream = None;
                self.upstream_closed = false;
                self.from_upstream.clear();
                self.upstream_eof_pending = false;
            }
            Action::Shutdown => self.client_closed = true,
            Action::Splice => self.spliced = true,
            Action::Close(_) => {
                self.closes += 1;
                self.client_closed = true;
                self.upstream = None;
            }
        }
    }

    fn resolve(&mut self, ticket: Ticket, name: &str) {
        let answer = self.world.hosts().iter().find(|(host, _)| *host == name);
        let now = self.now;
        match answer {
            Some((_, [])) | None => {
                self.session
                    .handle_resolved(now, ticket, Err(ResolveError::NotFound));
            }
            Some((_, addrs)) => {
                let addrs: Vec<IpAddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                self.session.handle_resolved(now, ticket, Ok(&addrs));
            }
        }
    }

    fn connect(&mut self, ticket: Ticket, addr: SocketAddr) {
        let now = self.now;
        if policy(self.world, &PORTS).check_destination(addr).is_err() {
            self.forbidden_connects.push(addr);
        }
        if addr.ip() != IpAddr::from([127, 0, 0, 1]) {
            return self
                .session
                .handle_connected(now, ticket, Err(ConnectError::Refused));
        }
        let origin = match addr.port() {
            p if p == PORTS.http => Origin::http(),
            p if p == PORTS.echo => Origin::Echo,
            // Never answered: the session's connect timer decides.
            p if p == PORTS.blackhole => return,
            _ => {
                return self
                    .session
                    .handle_connected(now, ticket, Err(ConnectError::Refused));
            }
        };
        self.upstream = Some(origin);
        self.upstream_closed = false;
        self.from_upstream.clear();
        self.upstream_eof_pending = false;
        self.session.handle_connected(now, ticket, Ok(()));
    }

    fn check_invariants(&self) -> Result<(), String> {
        if self.closes != 1 {
            return Err(format!("Close emitted {} times", self.closes));
        }
        if !self.forbidden_connects.is_empty() {
            return Err(format!(
                "connected to forbidden addresses {:?}",
                self.forbidden_connects
            ));
        }
        if self.actions_after_close > 0 {
            return Err(format!("{} actions after Close", self.actions_after_close));
        }
        let decisions = self.records.iter().filter(|r| r.access.is_some()).count();
        if decisions != self.decided {
            return Err(format!(
                "{} Decided events for {decisions} decided records",
                self.decided
            ));
        }
        Ok(())
    }
}
