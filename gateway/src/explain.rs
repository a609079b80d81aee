//! `egret explain`: the verdict on one destination and the entry that decided it, in words.
//!
//! The allowlist decides on the name before DNS; the addresses the name resolves to are
//! checked at connection time. An IP literal, and a name with a static answer in
//! `[resolver] hosts`, can have their addresses checked here as well.

use egret_core::host::Host;
use egret_core::policy::{DenyReason, Mode, Policy, Verdict};
use egret_rt_common::Resolver;

/// What `explain` prints and whether the destination is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The verdict line first, then notes.
    pub lines: Vec<String>,
    /// Whether the allowlist and the address rules admit the destination; `false` for what
    /// audit mode would deny but lets through.
    pub allowed: bool,
}

/// Returns the verdict on `host:port` under `policy`, with static answers from `resolver`.
#[must_use]
pub fn explain(policy: &Policy, resolver: &Resolver, host: &Host, port: u16) -> Explanation {
    let target = host.authority(port);
    let decision = policy.decide(host, port);
    let audit = policy.settings().mode == Mode::Audit;
    let (first, allowed) = match decision.verdict {
        Verdict::Allow => {
            let rule = decision.rule.as_deref().unwrap_or("?");
            (format!("{target} allowed by entry '{rule}'"), true)
        }
        Verdict::Deny(reason) if audit => {
            let why = reason_text(policy, host, reason);
            let line = format!("{target} would be denied (audit mode lets it through): {why}");
            (line, false)
        }
        Verdict::Deny(reason) => {
            let why = reason_text(policy, host, reason);
            return Explanation {
                lines: vec![format!("{target} denied: {why}")],
                allowed: false,
            };
        }
    };
    let mut lines = vec![first];
    // The address rules apply in audit mode too: it trials a list, not the SSRF protection.
    match host {
        Host::Ip(ip) => {
            if let Err(class) = policy.check_addr(*ip) {
                let why = format!(
                    "private_address ({ip} is {class}; [policy] private_exceptions can exempt it)"
                );
                return denied(&target, &why);
            }
        }
        Host::Name(name) => match resolver.lookup_static(name) {
            Some(Ok(addrs)) => {
                let admitted = addrs.iter().filter(|ip| policy.check_addr(**ip).is_ok());
                if admitted.count() == 0 {
                    let classes: Vec<String> = addrs
                        .iter()
                        .filter_map(|ip| policy.check_addr(*ip).err().map(|c| format!("{ip} {c}")))
                        .collect();
                    let why = format!(
                        "private_address ([resolver] hosts answers {}; [policy] \
                         private_exceptions can exempt them)",
                        classes.join(", ")
                    );
                    return denied(&target, &why);
                }
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                lines.push(format!(
                    "note: [resolver] hosts answers {} for {name}",
                    list.join(", ")
                ));
            }
            Some(Err(_)) => lines.push(format!(
                "note: [resolver] hosts has no address for {name}: connections fail with \
                 ERR_DNS_FAIL"
            )),
            None => lines.push(format!(
                "note: the addresses {name} resolves to are checked after DNS at connection \
                 time: loopback, private, link-local, metadata and other non-public addresses \
                 are denied unless [policy] private_exceptions lists them"
            )),
        },
    }
    Explanation { lines, allowed }
}

/// Returns `enforce` or `audit`.
#[must_use]
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}

/// Returns ports as `80, 443`, or `none`.
#[must_use]
pub fn port_list(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".to_owned();
    }
    let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
    ports.join(", ")
}

fn denied(target: &str, why: &str) -> Explanation {
    Explanation {
        lines: vec![format!("{target} denied: {why}")],
        allowed: false,
    }
}

/// Returns the reason's log name and, where it helps, what would change the verdict.
fn reason_text(policy: &Policy, host: &Host, reason: DenyReason) -> String {
    let name = reason.as_str();
    match reason {
        DenyReason::NotAllowlisted => name.to_owned(),
        DenyReason::PortNotAllowed => {
            let global = &policy.settings().ports;
            let entries = policy.allowlist().entries().iter();
            let admits: Vec<String> = entries
                .filter(|entry| entry.matches_name(host))
                .map(|entry| {
                    let ports = match entry.port {
                        Some(port) => format!("port {port}"),
                        None if global.is_empty() => "no ports ([policy] ports is empty)".into(),
                        None if global.len() == 1 => format!("port {}", global[0]),
                        None => format!("ports {}", port_list(global)),
                    };
                    format!("entry '{entry}' admits {ports}")
                })
                .collect();
            format!("{name} ({})", admits.join("; "))
        }
        DenyReason::IpLiteral if !policy.settings().allow_ip_literals => {
            format!("{name} (IP-literal destinations need [policy] allow_ip_literals = true)")
        }
        DenyReason::IpLiteral => format!("{name} (no entry lists this address)"),
        DenyReason::PrivateAddress(class) => format!("{name} ({class})"),
        // Decided on a ClientHello, which explain does not have.
        DenyReason::NoSni
        | DenyReason::InvalidHello
        | DenyReason::EncryptedClientHello
        | DenyReason::SniNotAllowed => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use egret_core::policy::{Allowlist, Entry, PolicySettings};

    use super::*;

    #[test]
    fn an_allowed_name_names_its_entry_and_the_later_address_check() {
        let policy = policy(
            &["pypi.org", ".pythonhosted.org"],
            PolicySettings::default(),
        );
        let e = explain(
            &policy,
            &Resolver::default(),
            &host("files.pythonhosted.org"),
            443,
        );
        assert!(e.allowed);
        assert_eq!(
            e.lines[0],
            "files.pythonhosted.org:443 allowed by entry '.pythonhosted.org'"
        );
        assert!(e.lines[1].contains("after DNS at connection time"), "{e:?}");
    }

    #[test]
    fn denials_give_the_reason() {
        let policy = policy(&["pypi.org", "pypi.org:8443"], PolicySettings::default());
        let resolver = Resolver::default();
        let e = explain(&policy, &resolver, &host("evil.example"), 443);
        assert!(!e.allowed);
        assert_eq!(e.lines, ["evil.example:443 denied: not_allowlisted"]);
        let e = explain(&policy, &resolver, &host("pypi.org"), 8080);
        assert_eq!(
            e.lines,
            [
                "pypi.org:8080 denied: port_not_allowed (entry 'pypi.org' admits ports 80, 443; \
              entry 'pypi.org:8443' admits port 8443)"
            ]
        );
        let e = explain(&policy, &resolver, &host("203.0.113.7"), 443);
        assert_eq!(e.lines.len(), 1);
        assert!(e.lines[0].starts_with("203.0.113.7:443 denied: ip_literal (IP-literal"));
    }

    #[test]
    fn audit_mode_says_what_it_lets_through() {
        let settings = PolicySettings {
            mode: Mode::Audit,
            ..PolicySettings::default()
        };
        let policy = policy(&["pypi.org"], settings);
        let e = explain(&policy, &Resolver::default(), &host("evil.example"), 443);
        assert!(!e.allowed);
        assert_eq!(
            e.lines[0],
            "evil.example:443 would be denied (audit mode lets it through): not_allowlisted"
        );
    }

    #[test]
    fn addresses_known_now_are_checked_now() {
        let settings = PolicySettings {
            allow_ip_literals: true,
            ..PolicySettings::default()
        };
        let policy = policy(
            &["10.0.0.1", "8.8.8.8", "origin.test", "mixed.test"],
            settings,
        );
        let mut hosts = std::collections::HashMap::new();
        hosts.insert("origin.test".to_owned(), vec!["127.0.0.1".parse().unwrap()]);
        let public = "151.101.0.223".parse().unwrap();
        hosts.insert(
            "mixed.test".to_owned(),
            vec!["10.1.1.1".parse().unwrap(), public],
        );
        let resolver = Resolver::new(hosts);
        let e = explain(&policy, &resolver, &host("10.0.0.1"), 443);
        assert!(!e.allowed);
        assert!(
            e.lines[0].starts_with("10.0.0.1:443 denied: private_address (10.0.0.1 is private")
        );
        assert!(explain(&policy, &resolver, &host("8.8.8.8"), 443).allowed);
        let e = explain(&policy, &resolver, &host("origin.test"), 443);
        assert!(!e.allowed);
        assert!(e.lines[0].contains("127.0.0.1 loopback"), "{e:?}");
        // One public answer is enough: the private one is skipped at connection time.
        let e = explain(&policy, &resolver, &host("mixed.test"), 443);
        assert!(e.allowed, "{e:?}");
        assert_eq!(
            e.lines[1],
            "note: [resolver] hosts answers 10.1.1.1, 151.101.0.223 for mixed.test"
        );
    }

    fn policy(entries: &[&str], settings: PolicySettings) -> Policy {
        let list = Allowlist::compile(entries.iter().map(|e| Entry::parse(e).unwrap().0));
        Policy::new(list, settings)
    }

    fn host(text: &str) -> Host {
        Host::parse(text.as_bytes()).unwrap()
    }
}
