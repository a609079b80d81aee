//! Policy: the compiled allowlist plus the settings that decide what a destination may be.
//!
//! A [`Policy`] is immutable once built. Reloads build a new one and publish it in a
//! [`PolicyStore`]; a session reads the store when it decides, so new requests see a new list at
//! once while a tunnel that was already allowed keeps going.

pub mod addr;
pub mod allowlist;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

pub use addr::AddrClass;
pub use allowlist::{Allowlist, AllowlistBuilder, Entry, EntryKind, ListProblem, Lookup};

use crate::host::Host;

/// Whether denials are enforced or only reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Deny what the allowlist does not admit.
    #[default]
    Enforce,
    /// Let what would be denied through and log it as an audit finding. Address-class rules
    /// (loopback, private, metadata) stay enforced: audit mode trials a list, not SSRF.
    Audit,
}

/// How a denied TLS connection ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsDeny {
    /// A fatal `access_denied` alert record, then a graceful close.
    #[default]
    Alert,
    /// A TCP reset.
    Reset,
}

/// What to do with a ClientHello that carries an Encrypted Client Hello extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EchPolicy {
    /// Deny it: the real destination is hidden.
    #[default]
    Deny,
    /// Decide on the outer SNI and note ECH in the log.
    Allow,
}

/// The policy settings that travel with an allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    /// Enforce or audit.
    pub mode: Mode,
    /// Ports admitted by entries that carry no port of their own.
    pub ports: Vec<u16>,
    /// Whether IP-literal destinations may be admitted (by an IP entry) at all.
    pub allow_ip_literals: bool,
    /// Networks exempt from the address-class rules.
    pub private_exceptions: Vec<IpNet>,
    /// How denied TLS ends.
    pub tls_deny: TlsDeny,
    /// What to do with Encrypted Client Hello.
    pub ech: EchPolicy,
    /// Whether a ClientHello at the start of a CONNECT tunnel must carry an allowed SNI too.
    pub inspect_tunnels: bool,
    /// The gateway's own listener ports (proxy, transparent, admin): never a destination at a
    /// non-public address, whatever `private_exceptions` says, so the proxy cannot be used to
    /// reach its own admin endpoint or loop into itself.
    pub own_ports: Vec<u16>,
}

/// Why a destination was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No entry names the host.
    NotAllowlisted,
    /// An entry names the host, but not on this port.
    PortNotAllowed,
    /// The target is an IP literal and `allow_ip_literals` is off, or no entry lists it.
    IpLiteral,
    /// Every address the name resolved to is in a denied class.
    PrivateAddress(AddrClass),
    /// An intercepted ClientHello names no host (no SNI).
    NoSni,
    /// The stream is not a ClientHello this gateway can judge (SSLv2, not TLS, several names,
    /// malformed, too large, too slow).
    InvalidHello,
    /// The ClientHello carries Encrypted Client Hello and `ech = "deny"`.
    EncryptedClientHello,
    /// The SNI of a ClientHello inside an allowed CONNECT tunnel is not allowed itself (domain
    /// fronting).
    SniNotAllowed,
}

/// The verdict on a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The destination is admitted.
    Allow,
    /// The destination is denied.
    Deny(DenyReason),
}

/// A verdict and the entry that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The canonical text of the deciding entry, if an entry named the host.
    pub rule: Option<Arc<str>>,
}

/// An allowlist compiled together with its settings.
#[derive(Debug)]
pub struct Policy {
    allowlist: Allowlist,
    settings: PolicySettings,
}

/// The current policy, shared by every worker; reloads publish into it.
#[derive(Clone, Debug)]
pub struct PolicyStore {
    current: Arc<ArcSwap<Policy>>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            mode: Mode::Enforce,
            ports: vec![80, 443],
            allow_ip_literals: false,
            private_exceptions: Vec::new(),
            tls_deny: TlsDeny::Alert,
            ech: EchPolicy::Deny,
            inspect_tunnels: true,
            own_ports: Vec::new(),
        }
    }
}

impl Mode {
    /// Returns `enforce` or `audit`, as the configuration spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

impl TlsDeny {
    /// Returns `alert` or `reset`, as the configuration spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TlsDeny::Alert => "alert",
            TlsDeny::Reset => "reset",
        }
    }
}

impl EchPolicy {
    /// Returns `deny` or `allow`, as the configuration spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EchPolicy::Deny => "deny",
            EchPolicy::Allow => "allow",
        }
    }
}

impl DenyReason {
    /// Returns the snake_case name used in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotAllowlisted => "not_allowlisted",
            DenyReason::PortNotAllowed => "port_not_allowed",
            DenyReason::IpLiteral => "ip_literal",
            DenyReason::PrivateAddress(_) => "private_address",
            DenyReason::NoSni => "no_sni",
            DenyReason::InvalidHello => "invalid_client_hello",
            DenyReason::EncryptedClientHello => "encrypted_client_hello",
            DenyReason::SniNotAllowed => "sni_not_allowed",
        }
    }
}

impl Policy {
    /// Returns a policy from a compiled allowlist and its settings.
    #[must_use]
    pub fn new(allowlist: Allowlist, mut settings: PolicySettings) -> Policy {
        settings.ports.sort_unstable();
        settings.ports.dedup();
        Policy {
            allowlist,
            settings,
        }
    }

    /// Returns the allowlist.
    #[must_use]
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// Returns the settings.
    #[must_use]
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// Decides on a destination by name (or IP literal) and port, before any DNS.
    #[must_use]
    pub fn decide(&self, host: &Host, port: u16) -> Decision {
        if matches!(host, Host::Ip(_)) && !self.settings.allow_ip_literals {
            return Decision {
                verdict: Verdict::Deny(DenyReason::IpLiteral),
                rule: None,
            };
        }
        let ports = &self.settings.ports;
        match self
            .allowlist
            .lookup(host, port, |p| ports.binary_search(&p).is_ok())
        {
            Lookup::Allowed(rule) => Decision {
                verdict: Verdict::Allow,
                rule: Some(rule),
            },
            Lookup::PortNotAllowed(rule) => Decision {
                verdict: Verdict::Deny(DenyReason::PortNotAllowed),
                rule: Some(rule),
            },
            Lookup::NoMatch => {
                let reason = match host {
                    Host::Ip(_) => DenyReason::IpLiteral,
                    Host::Name(_) => DenyReason::NotAllowlisted,
                };
                Decision {
                    verdict: Verdict::Deny(reason),
                    rule: None,
                }
            }
        }
    }

    /// Checks a destination: its address against the address classes, and its port against
    /// the gateway's own listeners.
    pub fn check_destination(&self, addr: SocketAddr) -> Result<(), AddrClass> {
        let own_port = self.settings.own_ports.contains(&addr.port());
        if own_port && addr::classify(addr.ip()).is_some() {
            return Err(AddrClass::OwnListener);
        }
        self.check_addr(addr.ip())
    }

    /// Checks an address a name resolved to (or an IP literal) against the address classes.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), AddrClass> {
        let Some(class) = addr::classify(ip) else {
            return Ok(());
        };
        let embedded = match ip {
            IpAddr::V6(v6) => addr::embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let exempt = self
            .settings
            .private_exceptions
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|inner| net.contains(&inner)));
        if exempt { Ok(()) } else { Err(class) }
    }
}

impl PolicyStore {
    /// Returns a store holding `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> PolicyStore {
        PolicyStore {
            current: Arc::new(ArcSwap::from_pointee(policy)),
        }
    }

    /// Returns the current policy.
    #[must_use]
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Publishes a new policy; sessions deciding from now on use it.
    pub fn publish(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_need_the_switch_and_an_entry() {
        let ip = Host::Ip("203.0.113.7".parse().unwrap());
        let off = policy(&["203.0.113.7"], PolicySettings::default());
        assert_eq!(
            off.decide(&ip, 443).verdict,
            Verdict::Deny(DenyReason::IpLiteral)
        );
        let settings = PolicySettings {
            allow_ip_literals: true,
            ..PolicySettings::default()
        };
        let on = policy(&["203.0.113.7"], settings.clone());
        assert_eq!(on.decide(&ip, 443).verdict, Verdict::Allow);
        let other = Host::Ip("203.0.113.8".parse().unwrap());
        assert_eq!(
            on.decide(&other, 443).verdict,
            Verdict::Deny(DenyReason::IpLiteral)
        );
    }

    #[test]
    fn global_ports_apply_to_entries_without_a_port() {
        let p = policy(&["pypi.org"], PolicySettings::default());
        let host = Host::parse(b"pypi.org").unwrap();
        assert_eq!(p.decide(&host, 443).verdict, Verdict::Allow);
        assert_eq!(p.decide(&host, 80).verdict, Verdict::Allow);
        let denied = p.decide(&host, 8080);
        assert_eq!(denied.verdict, Verdict::Deny(DenyReason::PortNotAllowed));
        assert_eq!(denied.rule.as_deref(), Some("pypi.org"));
    }

    #[test]
    fn private_exceptions_exempt_addresses_and_embedded_ones() {
        let settings = PolicySettings {
            private_exceptions: vec!["127.0.0.0/8".parse().unwrap()],
            ..PolicySettings::default()
        };
        let p = policy(&[], settings);
        assert_eq!(p.check_addr("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check_addr("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(
            p.check_addr("10.0.0.1".parse().unwrap()),
            Err(AddrClass::Private)
        );
        assert_eq!(
            p.check_addr("::1".parse().unwrap()),
            Err(AddrClass::Loopback)
        );
        assert_eq!(p.check_addr("8.8.8.8".parse().unwrap()), Ok(()));
    }

    #[test]
    fn the_store_publishes_new_policies() {
        let store = PolicyStore::new(policy(&["a.example"], PolicySettings::default()));
        let before = store.load();
        store.publish(policy(&["b.example"], PolicySettings::default()));
        assert_eq!(before.allowlist().entries()[0].to_string(), "a.example");
        assert_eq!(
            store.load().allowlist().entries()[0].to_string(),
            "b.example"
        );
    }

    fn policy(entries: &[&str], settings: PolicySettings) -> Policy {
        let list = Allowlist::compile(entries.iter().map(|e| Entry::parse(e).unwrap().0));
        Policy::new(list, settings)
    }
}
