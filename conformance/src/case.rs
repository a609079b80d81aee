//! The shape of a conformance case and of the worlds cases run in.

use std::time::Duration;

/// A policy and DNS setting shared by many cases; each live world is one gateway process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum World {
    /// The standard allowlist (see [`World::allow`]), enforce mode.
    Standard,
    /// The standard allowlist in audit mode.
    Audit,
    /// The standard allowlist with `allow_ip_literals` on.
    IpLiterals,
}

/// Ports that cases name symbolically; each world maps them to real or simulated ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The HTTP origin.
    pub http: u16,
    /// The echo origin (tunnel destination).
    pub echo: u16,
    /// A port nothing listens on (connections are refused).
    pub refused: u16,
    /// A port whose SYNs are never answered.
    pub blackhole: u16,
    /// The explicit proxy listener of the standard world (the gateway's own port).
    pub proxy: u16,
    /// The admin listener of the standard world (the gateway's own port).
    pub admin: u16,
}

/// The timeouts every world runs with, short enough for live tests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// See [`HEADER_TIMEOUT`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// See [`HEADER_TIMEOUT`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head.
pub const MAX_HEADER_BYTES: usize = 4096;

impl World {
    /// Returns the allowlist entries, with `{port}` placeholders.
    #[must_use]
    pub fn allow(self) -> &'static [&'static str] {
        &[
            "allowed.test",
            ".wild.test",
            "nx.test",
            "private.test",
            "metadata.test",
            "mixed.test",
            "v6meta.test",
            "mapped.test",
            "nat64.test",
            "twoaddr.test",
            "blackhole.test",
            "porty.test:{echo}",
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "xn--bcher-kva.test",
            ".ssrf.test",
        ]
    }

    /// Returns the static DNS answers (name, addresses); a name with no addresses is NXDOMAIN
    /// and a name absent here is unknown to the world.
    #[must_use]
    pub fn hosts(self) -> &'static [(&'static str, &'static [&'static str])] {
        &[
            ("allowed.test", &["127.0.0.1"]),
            ("wild.test", &["127.0.0.1"]),
            ("sub.wild.test", &["127.0.0.1"]),
            ("a.b.wild.test", &["127.0.0.1"]),
            ("denied.test", &["127.0.0.1"]),
            ("porty.test", &["127.0.0.1"]),
            ("nx.test", &[]),
            ("private.test", &["10.1.2.3"]),
            ("metadata.test", &["169.254.169.254"]),
            ("mixed.test", &["10.0.0.1", "127.0.0.1"]),
            ("v6meta.test", &["fd00:ec2::254"]),
            ("mapped.test", &["::ffff:10.0.0.1"]),
            ("nat64.test", &["64:ff9b::a9fe:a9fe"]),
            ("twoaddr.test", &["127.0.0.2", "127.0.0.1"]),
            ("blackhole.test", &["127.0.0.1"]),
            ("xn--bcher-kva.test", &["127.0.0.1"]),
            // One allowlisted name per non-public address class (see `egret_core::policy::addr`).
            ("rfc1918-10.ssrf.test", &["10.0.0.1"]),
            ("rfc1918-172.ssrf.test", &["172.16.0.1"]),
            ("rfc1918-172-top.ssrf.test", &["172.31.255.254"]),
            ("rfc1918-192.ssrf.test", &["192.168.1.1"]),
            ("loopback-v6.ssrf.test", &["::1"]),
            ("link-local.ssrf.test", &["169.254.1.1"]),
            ("link-local-v6.ssrf.test", &["fe80::1"]),
            ("metadata.ssrf.test", &["169.254.169.254"]),
            ("metadata-v6.ssrf.test", &["fd00:ec2::254"]),
            ("metadata-alibaba.ssrf.test", &["100.100.100.200"]),
            ("cgnat.ssrf.test", &["100.64.0.1"]),
            ("unspecified.ssrf.test", &["0.0.0.0"]),
            ("this-network.ssrf.test", &["0.1.2.3"]),
            ("unspecified-v6.ssrf.test", &["::"]),
            ("broadcast.ssrf.test", &["255.255.255.255"]),
            ("multicast.ssrf.test", &["224.0.0.1"]),
            ("multicast-v6.ssrf.test", &["ff02::1"]),
            ("reserved-240.ssrf.test", &["240.0.0.1"]),
            ("ietf-protocol.ssrf.test", &["192.0.0.8"]),
            ("benchmarking.ssrf.test", &["198.18.0.1"]),
            ("documentation-1.ssrf.test", &["192.0.2.1"]),
            ("documentation-2.ssrf.test", &["198.51.100.1"]),
            ("documentation-3.ssrf.test", &["203.0.113.1"]),
            ("documentation-v6.ssrf.test", &["2001:db8::1"]),
            ("teredo.ssrf.test", &["2001::1"]),
            ("discard-v6.ssrf.test", &["100::1"]),
            ("nat64-local.ssrf.test", &["64:ff9b:1::1"]),
            ("unique-local.ssrf.test", &["fd12:3456::1"]),
            ("unique-local-fc.ssrf.test", &["fc00::1"]),
            ("site-local.ssrf.test", &["fec0::1"]),
            ("mapped-private.ssrf.test", &["::ffff:192.168.0.1"]),
            ("mapped-metadata.ssrf.test", &["::ffff:169.254.169.254"]),
            ("compatible-private.ssrf.test", &["::10.0.0.1"]),
            ("nat64-private.ssrf.test", &["64:ff9b::10.0.0.1"]),
            ("6to4-private.ssrf.test", &["2002:a00:1::1"]),
            ("6to4-metadata.ssrf.test", &["2002:a9fe:a9fe::1"]),
            (
                "all-private.ssrf.test",
                &["10.0.0.1", "fe80::1", "169.254.169.254", "::1"],
            ),
            // Mixed answers: only the public stand-in (127.0.0.1, exempt in every world) may be used.
            (
                "mixed-metadata-first.ssrf.test",
                &["169.254.169.254", "127.0.0.1"],
            ),
            (
                "mixed-public-first.ssrf.test",
                &["127.0.0.1", "192.168.0.1"],
            ),
            (
                "mixed-v6-private.ssrf.test",
                &["fd00:ec2::254", "::1", "127.0.0.1"],
            ),
        ]
    }

    /// Returns whether the world runs in audit mode.
    #[must_use]
    pub fn audit(self) -> bool {
        self == World::Audit
    }

    /// Returns whether IP literals may be admitted.
    #[must_use]
    pub fn allow_ip_literals(self) -> bool {
        self == World::IpLiterals
    }
}

/// One thing a case does or expects, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The client sends these bytes (placeholders `{http}`, `{echo}`, `{refused}`,
    /// `{blackhole}`, `{proxy}`, `{admin}` are replaced by the world's ports).
    Send(String),
    /// Time passes.
    Wait(Duration),
    /// The client half-closes its connection (shuts down writing).
    HalfClose,
    /// The client reads one whole HTTP response.
    Response(ResponseExpect),
    /// The client reads `HTTP/1.1 200 Connection established` and nothing else yet.
    Tunnel,
    /// The client sends these bytes into a tunnel and reads them back.
    Echo(String),
    /// The client reads exactly these bytes (inside a tunnel).
    Receive(String),
    /// The client sends these bytes as they are (a ClientHello, say).
    SendBytes(Vec<u8>),
    /// The client reads exactly these bytes.
    ReceiveBytes(Vec<u8>),
    /// The client sees the connection end (FIN or reset) with no further bytes.
    Closed,
    /// The client reads the start of a response, then the connection ends before it is
    /// complete.
    Truncated,
}

/// What a response must look like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseExpect {
    /// The status code.
    pub status: u16,
    /// The first token of `X-Squid-Error`, for the gateway's own replies.
    pub squid_error: Option<&'static str>,
    /// Substrings the body must contain.
    pub body_has: Vec<String>,
    /// Substrings the body must not contain.
    pub body_lacks: Vec<String>,
    /// Header lines (`name: value`, compared case-insensitively) the head must contain.
    pub headers: Vec<&'static str>,
    /// Header names the head must not contain.
    pub headers_absent: Vec<&'static str>,
    /// The exact body, when it matters.
    pub body: Option<String>,
    /// The body length, when it matters.
    pub body_len: Option<usize>,
    /// The request was HEAD: the response has no body whatever its length says.
    pub to_head: bool,
}

/// An access-log record a case must produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogExpect {
    /// Squid's `code/status`, e.g. `TCP_DENIED/403`.
    pub code: String,
    /// The method column.
    pub method: &'static str,
    /// The URL column (placeholders replaced).
    pub url: String,
}

/// One conformance case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// A unique snake_case name.
    pub name: &'static str,
    /// The world it runs in.
    pub world: World,
    /// What happens, in order.
    pub steps: Vec<Step>,
    /// The access records it must leave.
    pub log: Vec<LogExpect>,
}

impl ResponseExpect {
    /// Returns the expectation with port placeholders replaced.
    #[must_use]
    pub fn filled(&self, ports: &Ports) -> ResponseExpect {
        let fill = |v: &Vec<String>| v.iter().map(|s| ports.fill(s)).collect();
        ResponseExpect {
            body_has: fill(&self.body_has),
            body_lacks: fill(&self.body_lacks),
            body: self.body.as_ref().map(|b| ports.fill(b)),
            ..self.clone()
        }
    }
}

impl Ports {
    /// Replaces the port placeholders in `text`.
    #[must_use]
    pub fn fill(&self, text: &str) -> String {
        text.replace("{http}", &self.http.to_string())
            .replace("{echo}", &self.echo.to_string())
            .replace("{refused}", &self.refused.to_string())
            .replace("{blackhole}", &self.blackhole.to_string())
            .replace("{proxy}", &self.proxy.to_string())
            .replace("{admin}", &self.admin.to_string())
    }

    /// Returns the ports the world's policy admits.
    #[must_use]
    pub fn allowed(&self) -> Vec<u16> {
        vec![
            self.http,
            self.echo,
            self.refused,
            self.blackhole,
            self.proxy,
            self.admin,
            80,
            443,
        ]
    }
}
