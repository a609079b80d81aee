//! `allowlist`: list text parsed and compiled ([`AllowlistBuilder`], [`Entry::parse`]), then
//! hosts looked up in the compiled list and in a reference model of DESIGN.md §3.
//!
//! Input: the list text, a NUL byte, then host names one per line (text that is not UTF-8 is
//! read lossily). Besides those hosts, each entry's own name is tried with a subdomain, a
//! non-boundary prefix, a parent, a trailing dot and in capitals.
//!
//! The model: entries are separated by commas, whitespace and newlines, `#` starts a comment;
//! a list with any bad entry is refused whole, with one problem per bad entry on its line. An
//! entry names exactly its name, or with a leading dot its domain and every subdomain on a
//! label boundary, compared case-insensitively with one trailing dot ignored; an IP entry
//! names that address. An entry's port admits only that port, otherwise the global ports (80
//! and 443) are admitted. The most specific name decides (the exact entry, then the longest
//! domain), its entry for this very port before its global one; when no entry admits the
//! port, the first that names the host is reported. Names of ASCII entries are normalised by
//! the model itself; non-ASCII ones through their parsed (punycode) form.

use std::net::IpAddr;

use egret_core::host::Host;
use egret_core::policy::{AllowlistBuilder, Entry, EntryKind, Lookup};

/// The global ports of the model.
const GLOBAL_PORTS: [u16; 2] = [80, 443];
/// Ports every host is looked up on, besides those entries name.
const PORTS: [u16; 4] = [80, 443, 22, 8443];
/// At most this many tokens are judged (the rest of a long text is ignored).
const MAX_TOKENS: usize = 64;

/// Runs one input; panics when a check fails.
pub fn run(data: &[u8]) {
    let (text, hosts) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let tokens = tokens(&text);
    if tokens.len() > MAX_TOKENS {
        return;
    }
    let mut builder = AllowlistBuilder::new();
    builder.add_text(&text, "fuzz");
    let mut model = Vec::new();
    let mut bad_lines = Vec::new();
    let mut warnings = 0;
    for (line, token) in &tokens {
        match Entry::parse(token) {
            Ok((entry, warning)) => {
                warnings += usize::from(warning.is_some());
                model.push(ModelEntry::new(token, entry));
            }
            Err(_) => bad_lines.push(*line),
        }
    }
    let list = match builder.build() {
        Ok((list, found)) => {
            assert!(bad_lines.is_empty(), "a list with bad entries was accepted");
            assert_eq!(found.len(), warnings, "warnings");
            list
        }
        Err(problems) => {
            let lines: Vec<u32> = problems.iter().map(|p| p.line).collect();
            assert_eq!(lines, bad_lines, "problems and their lines: {problems:?}");
            return;
        }
    };
    let mut candidates: Vec<Vec<u8>> = hosts
        .split(|&b| b == b'\n')
        .filter(|h| !h.is_empty())
        .take(MAX_TOKENS)
        .map(<[u8]>::to_vec)
        .collect();
    for entry in &model {
        let name = &entry.name;
        let parent = name.split_once('.').map_or("", |(_, p)| p);
        for host in [
            name.clone(),
            format!("x.{name}"),
            format!("x{name}"),
            format!("{name}."),
            format!("A.{}", name.to_ascii_uppercase()),
            parent.to_owned(),
        ] {
            candidates.push(host.into_bytes());
        }
    }
    let mut ports: Vec<u16> = PORTS.to_vec();
    ports.extend(model.iter().filter_map(|e| e.port));
    for raw in &candidates {
        let Ok(host) = Host::parse(raw) else {
            continue;
        };
        if let Host::Name(name) = &host {
            assert_eq!(
                **name,
                *normalise(&String::from_utf8_lossy(raw)),
                "the host"
            );
        }
        for entry in &model {
            assert_eq!(entry.names(&host), entry.parsed.matches_name(&host));
        }
        for &port in &ports {
            let got = list.lookup(&host, port, |p| GLOBAL_PORTS.contains(&p));
            let want = model_lookup(&model, &host, port);
            assert_eq!(got, want, "{host} port {port} in {text:?}");
        }
    }
}

/// An accepted entry as the model reads it.
#[derive(Debug)]
struct ModelEntry {
    kind: EntryKind,
    /// The normalised name, or the address.
    name: String,
    ip: Option<IpAddr>,
    port: Option<u16>,
    /// What `Entry::parse` made of it.
    parsed: Entry,
}

impl ModelEntry {
    /// Reads an accepted `token`; checks the parser's reading of an ASCII one.
    fn new(token: &str, parsed: Entry) -> ModelEntry {
        let (body, port) = match token.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest.split_once(']').expect("a closed bracket");
                let port = after.strip_prefix(':').map(|p| p.parse().expect("a port"));
                (format!("[{inside}]"), port)
            }
            None => match token.rsplit_once(':') {
                Some((body, port)) => (body.to_owned(), Some(port.parse().expect("a port"))),
                None => (token.to_owned(), None),
            },
        };
        assert_eq!(port, parsed.port, "the port of {token:?}");
        let (domain, rest) = match body.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, body.as_str()),
        };
        let bare = rest.strip_suffix('.').unwrap_or(rest);
        let literal = bare
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bare);
        let ip = if bare.starts_with('[') || bare.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            literal.parse::<IpAddr>().ok()
        } else {
            None
        };
        let (kind, name) = match (ip, token.is_ascii()) {
            (Some(ip), _) => (EntryKind::Ip, ip.to_string()),
            (None, true) => {
                let kind = if domain {
                    EntryKind::Domain
                } else {
                    EntryKind::Exact
                };
                (kind, normalise(rest))
            }
            (None, false) => (parsed.kind, parsed.name.to_string()),
        };
        assert_eq!(kind, parsed.kind, "the kind of {token:?}");
        assert_eq!(*name, *parsed.name, "the name of {token:?}");
        ModelEntry {
            kind,
            name,
            ip,
            port,
            parsed,
        }
    }

    /// Returns whether the entry names `host`, ports aside.
    fn names(&self, host: &Host) -> bool {
        match (self.kind, host) {
            (EntryKind::Exact, Host::Name(n)) => **n == *self.name,
            (EntryKind::Domain, Host::Name(n)) => {
                **n == *self.name || n.ends_with(&format!(".{}", self.name))
            }
            (EntryKind::Ip, Host::Ip(ip)) => self.ip == Some(*ip),
            (EntryKind::Exact | EntryKind::Domain, Host::Ip(_))
            | (EntryKind::Ip, Host::Name(_)) => false,
        }
    }

    fn admits(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => GLOBAL_PORTS.contains(&port),
        }
    }

    /// Returns the entry's canonical text.
    fn text(&self) -> String {
        let dot = if self.kind == EntryKind::Domain {
            "."
        } else {
            ""
        };
        let name = match self.ip {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(IpAddr::V4(_)) | None => self.name.clone(),
        };
        match self.port {
            Some(port) => format!("{dot}{name}:{port}"),
            None => format!("{dot}{name}"),
        }
    }
}

/// Looks `host:port` up by scanning the model.
fn model_lookup(model: &[ModelEntry], host: &Host, port: u16) -> Lookup {
    let mut named: Vec<&ModelEntry> = model.iter().filter(|e| e.names(host)).collect();
    // The most specific name first: the exact entry, then the longest domain; within one
    // name, an entry for a port before the global one, lower ports first.
    named.sort_by_key(|e| {
        (
            e.kind == EntryKind::Domain,
            std::cmp::Reverse(e.name.len()),
            e.port.is_none(),
            e.port,
        )
    });
    if let Some(entry) = named
        .iter()
        .filter(|e| e.admits(port))
        .min_by_key(|e| (e.kind == EntryKind::Domain, std::cmp::Reverse(e.name.len())))
    {
        // Within the most specific admitting name, this very port before the global one.
        let best = named
            .iter()
            .find(|e| e.kind == entry.kind && e.name == entry.name && e.admits(port))
            .expect("the entry itself");
        return Lookup::Allowed(best.text().into());
    }
    let Some(first) = named.first() else {
        return Lookup::NoMatch;
    };
    let same: Vec<&&ModelEntry> = named
        .iter()
        .filter(|e| e.kind == first.kind && e.name == first.name)
        .collect();
    let shown = same
        .iter()
        .find(|e| e.port.is_none())
        .or_else(|| same.iter().min_by_key(|e| e.port))
        .expect("the first itself");
    Lookup::PortNotAllowed(shown.text().into())
}

/// Returns the tokens of a list text with their 1-based lines.
fn tokens(text: &str) -> Vec<(u32, &str)> {
    let mut out = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let content = line.split('#').next().unwrap_or_default();
        for token in content.split(|c: char| c == ',' || c.is_whitespace()) {
            if !token.is_empty() {
                out.push((line_no, token));
            }
        }
    }
    out
}

/// Returns a name in lowercase without one trailing dot.
fn normalise(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}
