//! Criterion benchmarks of the core: policy lookup at 10, 1,000 and 100,000 entries, request
//! heads and ClientHellos from bytes to a decision, and a whole tunnel from accept to Splice.
//! Everything goes through the public API with fake IO, so the figures are what a runtime
//! pays per connection in core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use egret_benches::{HELLO_CLASSIC, HELLO_POST_QUANTUM, policy_of};
use egret_core::host::Host;
use egret_core::policy::{EchPolicy, PolicySettings, PolicyStore};
use egret_core::{
    Accepted, Action, Gateway, GatewayConfig, Limits, ListenerKind, Peer, Session, UnixMillis,
    WallClock,
};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_decide");
    let hosts = [
        ("exact_hit", "allowed.test"),
        ("suffix_hit", "s3.eu-west-1.amazonaws.com"),
        ("miss", "nothing.here.example.org"),
    ];
    for size in SIZES {
        let policy = policy_of(size, PolicySettings::default());
        for (name, host) in hosts {
            let host = Host::parse(host.as_bytes()).unwrap();
            group.bench_with_input(BenchmarkId::new(name, size), &host, |b, host| {
                b.iter(|| policy.decide(black_box(host), 443));
            });
        }
    }
    group.finish();
}

fn heads(c: &mut Criterion) {
    let mut group = c.benchmark_group("head_to_decision");
    let connect: &[u8] = b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\
        User-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n";
    let absolute: &[u8] = b"GET http://allowed.test/simple/requests/ HTTP/1.1\r\n\
        Host: allowed.test\r\nUser-Agent: pip/23.2.1 CPython/3.11.7\r\n\
        Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\
        Cache-Control: max-age=0\r\n\r\n";
    for size in SIZES {
        let world = World::new(size, PolicySettings::default());
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("connect", size), |b| {
            b.iter(|| world.until_resolve(ListenerKind::Explicit, connect));
        });
        group.bench_function(BenchmarkId::new("absolute_form", size), |b| {
            b.iter(|| world.until_resolve(ListenerKind::Explicit, absolute));
        });
    }
    group.finish();
}

fn hellos(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_hello_to_decision");
    let settings = PolicySettings {
        ech: EchPolicy::Allow,
        ..PolicySettings::default()
    };
    let world = World::new(100_000, settings);
    for (name, hello) in [
        ("classic_517B", HELLO_CLASSIC),
        ("post_quantum_1786B", HELLO_POST_QUANTUM),
    ] {
        group.throughput(Throughput::Bytes(hello.len() as u64));
        group.bench_function(BenchmarkId::new("whole", name), |b| {
            b.iter(|| world.until_resolve(ListenerKind::TransparentTls, hello));
        });
        group.bench_function(BenchmarkId::new("split_in_8_segments", name), |b| {
            b.iter(|| world.until_resolve_in_pieces(ListenerKind::TransparentTls, hello, 8));
        });
    }
    group.finish();
}

fn tunnel(c: &mut Criterion) {
    let world = World::new(
        100_000,
        PolicySettings {
            inspect_tunnels: false,
            ..PolicySettings::default()
        },
    );
    c.bench_function("session_accept_to_splice", |b| {
        b.iter(|| world.connect_to_splice());
    });
}

/// A gateway and the clock it runs on.
struct World {
    gateway: std::cell::RefCell<Gateway>,
    now: Instant,
}

impl World {
    fn new(size: usize, settings: PolicySettings) -> World {
        let now = Instant::now();
        let clock = WallClock {
            instant: now,
            unix: UnixMillis(1_700_000_000_000),
        };
        let config = GatewayConfig {
            limits: Limits::default(),
            clock,
            proxy_protocol: egret_core::ProxyProtocol::Off,
        };
        let store = PolicyStore::new(policy_of(size, settings));
        World {
            gateway: std::cell::RefCell::new(Gateway::new(config, store, 0)),
            now,
        }
    }

    fn accept(&self, listener: ListenerKind) -> Session {
        let original_dst = match listener {
            ListenerKind::Explicit => None,
            ListenerKind::TransparentHttp | ListenerKind::TransparentTls => {
                Some("151.101.0.223:443".parse().unwrap())
            }
        };
        self.gateway.borrow_mut().accept(
            self.now,
            Accepted {
                client: "10.0.0.5:40000".parse().unwrap(),
                local: "10.0.0.1:3128".parse().unwrap(),
                listener,
                original_dst,
            },
        )
    }

    /// Feeds `bytes` to a new session and returns its first action (a Resolve).
    fn until_resolve(&self, listener: ListenerKind, bytes: &[u8]) -> Option<Action> {
        let mut session = self.accept(listener);
        session.handle_client_data(self.now, black_box(bytes));
        let action = session.poll_action();
        assert!(matches!(action, Some(Action::Resolve { .. })), "{action:?}");
        action
    }

    fn until_resolve_in_pieces(
        &self,
        listener: ListenerKind,
        bytes: &[u8],
        pieces: usize,
    ) -> Option<Action> {
        let mut session = self.accept(listener);
        for piece in bytes.chunks(bytes.len().div_ceil(pieces)) {
            session.handle_client_data(self.now, black_box(piece));
        }
        let action = session.poll_action();
        assert!(matches!(action, Some(Action::Resolve { .. })), "{action:?}");
        action
    }

    /// Accept, CONNECT, DNS answer, connect, the 200 written, Splice.
    fn connect_to_splice(&self) -> Session {
        let mut session = self.accept(ListenerKind::Explicit);
        session.handle_client_data(self.now, b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n");
        let Some(Action::Resolve { ticket, .. }) = session.poll_action() else {
            panic!()
        };
        let answer = ["151.101.0.223".parse().unwrap()];
        session.handle_resolved(self.now, ticket, Ok(&answer));
        while session.poll_event().is_some() {}
        let Some(Action::Connect { ticket, .. }) = session.poll_action() else {
            panic!()
        };
        session.handle_connected(self.now, ticket, Ok(()));
        let written = session.outbound(Peer::Client).len();
        session.handle_written(self.now, Peer::Client, written);
        assert_eq!(session.poll_action(), Some(Action::Splice));
        session
    }
}

criterion_group!(benches, lookup, heads, hellos, tunnel);
criterion_main!(benches);
