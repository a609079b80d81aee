//! The hostname allowlist: entry syntax, validation, and a lookup whose cost does not grow with
//! the number of entries.
//!
//! `pypi.org` admits exactly that name; `.amazonaws.com` admits `amazonaws.com` and every name
//! ending in `.amazonaws.com` on a label boundary. Names are compared in lowercase punycode with
//! no trailing dot. An entry may carry a port (`example.com:8443`), which then admits the name on
//! that port only; entries without one admit the policy's global ports.
//!
//! Lookup hashes the exact name once and then each suffix that starts after a dot, so its cost
//! depends on the number of labels in the host, never on the length of the list.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::host::{Host, parse_port};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What an allowlist entry admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// Exactly one name (`pypi.org`).
    Exact,
    /// A domain and all its subdomains (`.amazonaws.com`).
    Domain,
    /// One IP address; effective only with `allow_ip_literals`.
    Ip,
}

/// One normalised allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// What the entry admits.
    pub kind: EntryKind,
    /// The lowercase punycode name without leading or trailing dot, or the address.
    pub name: Box<str>,
    /// The only port admitted, or `None` for the policy's global ports.
    pub port: Option<u16>,
}

/// A problem with an allowlist entry, located by source and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListProblem {
    /// Where the entry came from: `config`, a file path, or a parameter name.
    pub source: Arc<str>,
    /// The 1-based line in the source (0 when the source has no lines).
    pub line: u32,
    /// The entry as written.
    pub entry: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

/// Collects entries from several sources, then compiles them into an [`Allowlist`].
#[derive(Debug, Default)]
pub struct AllowlistBuilder {
    entries: Vec<Entry>,
    warnings: Vec<ListProblem>,
    errors: Vec<ListProblem>,
}

/// A compiled allowlist: immutable, shared behind `Arc` inside a `Policy`.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    exact: FastMap<Box<str>, Rules>,
    domains: FastMap<Box<str>, Rules>,
    ips: FastMap<IpAddr, Rules>,
    entries: Vec<Entry>,
}

/// The result of looking a destination up in an [`Allowlist`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// An entry admits the host on this port.
    Allowed(Arc<str>),
    /// An entry names the host but not on this port.
    PortNotAllowed(Arc<str>),
    /// No entry names the host.
    NoMatch,
}

/// The entries that share one name, with their ports merged.
#[derive(Clone, Debug, Default)]
struct Rules {
    /// The entry admitting the global ports, if any.
    global: Option<Arc<str>>,
    /// Entries admitting one port each.
    ports: SmallVec<[(u16, Arc<str>); 1]>,
}

impl Entry {
    /// Parses one entry as written in a list (`pypi.org`, `.amazonaws.com`, `example.com:8443`,
    /// `bücher.example`, `203.0.113.7`). Returns the entry and an optional warning.
    pub fn parse(text: &str) -> Result<(Entry, Option<String>), String> {
        let (body, port) = split_port(text)?;
        if body.starts_with("*.") {
            let hint = &text[1..];
            return Err(format!("wildcards are written with a leading dot: {hint}"));
        }
        let (kind, name) = match body.strip_prefix('.') {
            Some(domain) => (EntryKind::Domain, domain),
            None => (EntryKind::Exact, body),
        };
        if name.is_empty() || name == "." {
            return Err("an entry needs a name".to_owned());
        }
        let ascii = idna::domain_to_ascii(name)
            .map_err(|_| "not a valid internationalised domain name".to_owned())?;
        let host = Host::parse(ascii.as_bytes()).map_err(|e| format!("invalid name ({e})"))?;
        let name = match (kind, host) {
            (EntryKind::Domain, Host::Ip(_)) => {
                return Err("an IP address cannot have a leading dot".to_owned());
            }
            (_, Host::Ip(ip)) => {
                let entry = Entry {
                    kind: EntryKind::Ip,
                    name: ip.to_string().into(),
                    port,
                };
                return Ok((entry, None));
            }
            (_, Host::Name(name)) => name,
        };
        let mut warning = None;
        if kind == EntryKind::Domain {
            if let Some(suffix) = psl::suffix(name.as_bytes()) {
                if suffix.is_known() && suffix.as_bytes() == name.as_bytes() {
                    match suffix.typ() {
                        Some(psl::Type::Icann) => {
                            return Err(format!(
                                "'.{name}' is a public suffix: it would admit every domain \
                                 registered under it; list the domains you need"
                            ));
                        }
                        Some(psl::Type::Private) | None => {
                            warning = Some(format!(
                                "'.{name}' is a shared suffix (private section of the Public \
                                 Suffix List): it admits hosts that anyone can register"
                            ));
                        }
                    }
                }
            }
        }
        Ok((Entry { kind, name, port }, warning))
    }

    /// Returns whether this entry names `host` (ports aside).
    #[must_use]
    pub fn matches_name(&self, host: &Host) -> bool {
        match (self.kind, host) {
            (EntryKind::Exact, Host::Name(name)) => *self.name == **name,
            (EntryKind::Domain, Host::Name(name)) => {
                **name == *self.name
                    || (name.len() > self.name.len()
                        && name.ends_with(&*self.name)
                        && name.as_bytes()[name.len() - self.name.len() - 1] == b'.')
            }
            (EntryKind::Ip, Host::Ip(ip)) => *self.name == *ip.to_string(),
            (EntryKind::Exact | EntryKind::Domain, Host::Ip(_))
            | (EntryKind::Ip, Host::Name(_)) => false,
        }
    }
}

impl fmt::Display for Entry {
    /// Writes the entry in its canonical list form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dot = if self.kind == EntryKind::Domain {
            "."
        } else {
            ""
        };
        let ipv6 = self.kind == EntryKind::Ip && self.name.contains(':');
        match (ipv6, self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.name),
            (true, None) => write!(f, "[{}]", self.name),
            (false, Some(port)) => write!(f, "{dot}{}:{port}", self.name),
            (false, None) => write!(f, "{dot}{}", self.name),
        }
    }
}

impl fmt::Display for ListProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}: '{}': {}",
                self.source, self.line, self.entry, self.message
            )
        } else {
            write!(f, "{}: '{}': {}", self.source, self.entry, self.message)
        }
    }
}

impl AllowlistBuilder {
    /// Returns an empty builder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every entry of a list text: entries separated by commas, whitespace or newlines, with
    /// `#` starting a comment that runs to the end of the line.
    pub fn add_text(&mut self, text: &str, source: &str) {
        let source: Arc<str> = source.into();
        for (index, line) in text.lines().enumerate() {
            let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let content = line.split('#').next().unwrap_or("");
            for token in content.split(|c: char| c == ',' || c.is_whitespace()) {
                if !token.is_empty() {
                    self.add(token, &source, line_no);
                }
            }
        }
    }

    /// Adds the entries of one item that came from `source` at `line` (0 when the source has
    /// no lines): one entry, or several separated by commas or whitespace.
    pub fn add_entry(&mut self, text: &str, source: &str, line: u32) {
        let source: Arc<str> = source.into();
        for token in text.split(|c: char| c == ',' || c.is_whitespace()) {
            if !token.is_empty() {
                self.add(token, &source, line);
            }
        }
    }

    /// Returns the warnings collected so far.
    #[must_use]
    pub fn warnings(&self) -> &[ListProblem] {
        &self.warnings
    }

    /// Compiles the entries, merging duplicates. Fails with every problem found if any entry was
    /// invalid: a list is used whole or not at all.
    pub fn build(self) -> Result<(Allowlist, Vec<ListProblem>), Vec<ListProblem>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        Ok((Allowlist::compile(self.entries), self.warnings))
    }

    fn add(&mut self, token: &str, source: &Arc<str>, line: u32) {
        let problem = |message: String| ListProblem {
            source: source.clone(),
            line,
            entry: token.to_owned(),
            message,
        };
        match Entry::parse(token) {
            Ok((entry, warning)) => {
                if let Some(message) = warning {
                    self.warnings.push(problem(message));
                }
                self.entries.push(entry);
            }
            Err(message) => self.errors.push(problem(message)),
        }
    }
}

impl Allowlist {
    /// Compiles entries into lookup tables, merging duplicates.
    #[must_use]
    pub fn compile(entries: impl IntoIterator<Item = Entry>) -> Allowlist {
        let mut list = Allowlist::default();
        let mut all: Vec<Entry> = entries.into_iter().collect();
        all.sort();
        all.dedup();
        for entry in &all {
            let text: Arc<str> = entry.to_string().into();
            let rules = match entry.kind {
                EntryKind::Exact => list.exact.entry(entry.name.clone()).or_default(),
                EntryKind::Domain => list.domains.entry(entry.name.clone()).or_default(),
                EntryKind::Ip => match entry.name.parse::<IpAddr>() {
                    Ok(ip) => list.ips.entry(ip).or_default(),
                    Err(_) => continue,
                },
            };
            match entry.port {
                Some(port) => rules.ports.push((port, text)),
                None => rules.global = Some(text),
            }
        }
        list.entries = all;
        list
    }

    /// Returns the entries in canonical order, without duplicates.
    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Returns the number of distinct entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the list admits nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the entries of `self` missing from `previous` and those of `previous` missing from
    /// `self`, in canonical order.
    #[must_use]
    pub fn diff<'a>(&'a self, previous: &'a Allowlist) -> (Vec<&'a Entry>, Vec<&'a Entry>) {
        let added = self
            .entries
            .iter()
            .filter(|e| previous.entries.binary_search(e).is_err());
        let removed = previous
            .entries
            .iter()
            .filter(|e| self.entries.binary_search(e).is_err());
        (added.collect(), removed.collect())
    }

    /// Looks `host:port` up. `global_port` says whether a port is in the policy's port list.
    ///
    /// The exact entry is tried first, then domain entries from the most specific suffix to the
    /// least; the first that admits the port decides.
    pub fn lookup(&self, host: &Host, port: u16, global_port: impl Fn(u16) -> bool) -> Lookup {
        let mut named: Option<Arc<str>> = None;
        let mut check = |rules: &Rules| -> Option<Arc<str>> {
            if let Some((_, text)) = rules.ports.iter().find(|(p, _)| *p == port) {
                return Some(text.clone());
            }
            match &rules.global {
                Some(text) if global_port(port) => Some(text.clone()),
                Some(text) => {
                    named.get_or_insert_with(|| text.clone());
                    None
                }
                None => {
                    if named.is_none() {
                        named = rules.ports.first().map(|(_, text)| text.clone());
                    }
                    None
                }
            }
        };
        let name = match host {
            Host::Ip(ip) => {
                return match self.ips.get(ip).map(&mut check) {
                    Some(Some(text)) => Lookup::Allowed(text),
                    Some(None) | None => unmatched(named),
                };
            }
            Host::Name(name) => &**name,
        };
        if let Some(Some(text)) = self.exact.get(name).map(&mut check) {
            return Lookup::Allowed(text);
        }
        let mut suffix = name;
        loop {
            if let Some(Some(text)) = self.domains.get(suffix).map(&mut check) {
                return Lookup::Allowed(text);
            }
            match suffix.split_once('.') {
                Some((_, rest)) => suffix = rest,
                None => break,
            }
        }
        unmatched(named)
    }
}

fn unmatched(named: Option<Arc<str>>) -> Lookup {
    match named {
        Some(text) => Lookup::PortNotAllowed(text),
        None => Lookup::NoMatch,
    }
}

/// Splits `name[:port]` or `[v6][:port]`, validating the port.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let invalid_port = || format!("invalid port in '{text}'");
    if text.starts_with('[') {
        let end = text.find(']').ok_or_else(|| "unclosed '['".to_owned())?;
        return match &text[end + 1..] {
            "" => Ok((&text[..=end], None)),
            rest => match rest.strip_prefix(':').map(|p| parse_port(p.as_bytes())) {
                Some(Some(port)) => Ok((&text[..=end], Some(port))),
                Some(None) | None => Err(invalid_port()),
            },
        };
    }
    match text.rsplit_once(':') {
        Some((body, port)) => match parse_port(port.as_bytes()) {
            Some(port) => Ok((body, Some(port))),
            None => Err(invalid_port()),
        },
        None => Ok((text, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_entries_match_only_their_name() {
        let list = compile(&["pypi.org"]);
        assert_eq!(
            look(&list, "pypi.org", 443),
            Lookup::Allowed("pypi.org".into())
        );
        assert_eq!(
            look(&list, "PYPI.ORG.", 443),
            Lookup::Allowed("pypi.org".into())
        );
        assert_eq!(look(&list, "www.pypi.org", 443), Lookup::NoMatch);
        assert_eq!(look(&list, "evilpypi.org", 443), Lookup::NoMatch);
        assert_eq!(
            look(&list, "pypi.org", 22),
            Lookup::PortNotAllowed("pypi.org".into())
        );
    }

    #[test]
    fn domain_entries_match_on_label_boundaries() {
        let list = compile(&[".amazonaws.com"]);
        let hit = Lookup::Allowed(".amazonaws.com".into());
        assert_eq!(look(&list, "amazonaws.com", 443), hit);
        assert_eq!(look(&list, "s3.amazonaws.com", 443), hit);
        assert_eq!(look(&list, "a.b.c.amazonaws.com", 80), hit);
        assert_eq!(look(&list, "evilamazonaws.com", 443), Lookup::NoMatch);
        assert_eq!(look(&list, "amazonaws.com.evil", 443), Lookup::NoMatch);
        assert_eq!(look(&list, "com", 443), Lookup::NoMatch);
    }

    #[test]
    fn ports_on_entries_admit_only_that_port() {
        let list = compile(&["example.com:8443", ".example.com"]);
        assert_eq!(
            look(&list, "example.com", 8443),
            Lookup::Allowed("example.com:8443".into())
        );
        // The domain entry admits the global ports for the same name.
        assert_eq!(
            look(&list, "example.com", 443),
            Lookup::Allowed(".example.com".into())
        );
        assert_eq!(
            look(&list, "a.example.com", 8443),
            Lookup::PortNotAllowed(".example.com".into())
        );
        let only = compile(&["only.example:8443"]);
        assert_eq!(
            look(&only, "only.example", 443),
            Lookup::PortNotAllowed("only.example:8443".into())
        );
    }

    #[test]
    fn duplicates_merge_and_ports_combine() {
        let list = compile(&["pypi.org", "PyPI.org.", "pypi.org", "pypi.org:8080"]);
        assert_eq!(list.len(), 2);
        assert_eq!(
            look(&list, "pypi.org", 8080),
            Lookup::Allowed("pypi.org:8080".into())
        );
        assert_eq!(
            look(&list, "pypi.org", 443),
            Lookup::Allowed("pypi.org".into())
        );
    }

    #[test]
    fn unicode_entries_become_punycode() {
        let list = compile(&["bücher.example", ".münchen.example"]);
        assert_eq!(
            look(&list, "xn--bcher-kva.example", 443),
            Lookup::Allowed("xn--bcher-kva.example".into())
        );
        assert_eq!(
            look(&list, "www.xn--mnchen-3ya.example", 443),
            Lookup::Allowed(".xn--mnchen-3ya.example".into())
        );
    }

    #[test]
    fn public_suffixes_are_refused_and_shared_ones_warned() {
        for bad in [".com", ".co.uk", ".COM."] {
            let err = Entry::parse(bad).unwrap_err();
            assert!(err.contains("public suffix"), "{bad}: {err}");
        }
        let (entry, warning) = Entry::parse(".github.io").unwrap();
        assert_eq!(entry.kind, EntryKind::Domain);
        assert!(warning.unwrap().contains("anyone can register"));
        assert!(Entry::parse(".s3.amazonaws.com").unwrap().1.is_some());
        assert_eq!(Entry::parse(".amazonaws.com").unwrap().1, None);
        assert_eq!(Entry::parse("s3.amazonaws.com").unwrap().1, None);
        assert_eq!(Entry::parse(".test").unwrap().1, None);
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        assert!(
            Entry::parse("*.example.com")
                .unwrap_err()
                .contains(".example.com")
        );
        assert!(
            Entry::parse("example.com:99999")
                .unwrap_err()
                .contains("port")
        );
        assert!(Entry::parse("exa mple.com").is_err());
        assert!(Entry::parse("a..b").is_err());
        assert!(Entry::parse(".").is_err());
        assert!(Entry::parse(".10.0.0.1").is_err());
        assert!(Entry::parse("0x7f.1").is_err());
        assert!(Entry::parse("user@example.com").is_err());
    }

    #[test]
    fn ip_entries_match_ip_literals() {
        let list = compile(&["203.0.113.7", "[2001:db8::1]:8443"]);
        let v4 = Host::Ip("203.0.113.7".parse().unwrap());
        assert_eq!(
            list.lookup(&v4, 443, |_| true),
            Lookup::Allowed("203.0.113.7".into())
        );
        let v6 = Host::Ip("2001:db8::1".parse().unwrap());
        assert_eq!(
            list.lookup(&v6, 8443, |_| true),
            Lookup::Allowed("[2001:db8::1]:8443".into())
        );
        assert_eq!(
            list.lookup(&v6, 443, |_| true),
            Lookup::PortNotAllowed("[2001:db8::1]:8443".into())
        );
    }

    #[test]
    fn list_text_allows_commas_whitespace_and_comments() {
        let mut builder = AllowlistBuilder::new();
        builder.add_text(
            "pypi.org, .pythonhosted.org\n# a comment\n  deb.debian.org # mirror\n",
            "f",
        );
        let (list, warnings) = builder.build().unwrap();
        assert!(warnings.is_empty());
        let names: Vec<String> = list.entries().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["deb.debian.org", "pypi.org", ".pythonhosted.org"]);
    }

    #[test]
    fn a_bad_entry_fails_the_whole_list_with_its_line() {
        let mut builder = AllowlistBuilder::new();
        builder.add_text("pypi.org\n\n.com\n", "allow.txt");
        let errors = builder.build().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert!(
            errors[0].to_string().starts_with("allow.txt:3: '.com': "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn diff_reports_added_and_removed_entries() {
        let old = compile(&["a.example", "b.example"]);
        let new = compile(&["b.example", "c.example"]);
        let (added, removed) = new.diff(&old);
        assert_eq!(
            added.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["c.example"]
        );
        assert_eq!(
            removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["a.example"]
        );
    }

    fn compile(entries: &[&str]) -> Allowlist {
        Allowlist::compile(entries.iter().map(|e| Entry::parse(e).unwrap().0))
    }

    fn look(list: &Allowlist, host: &str, port: u16) -> Lookup {
        let host = Host::parse(host.as_bytes()).unwrap();
        list.lookup(&host, port, |p| p == 80 || p == 443)
    }
}
