//! The namespaces and veth pairs of the world, their addresses and routes, the client's
//! resolv.conf and the gateway's rules; deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use super::{
    CLIENT, DNS_SERVER, GATEWAY, GATEWAY_EGRESS, MAX_IFNAME, NS_PREFIX, ORIGIN_A, ORIGIN_B,
    SetupError, TRANSPARENT_HTTP_PORT, TRANSPARENT_TLS_PORT, WORLDS,
};

/// Deletes namespaces named by this module for processes that no longer exist.
pub(super) fn reap_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_ip(&["netns", "del", &name]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&name));
        }
    }
}

/// The names of one world's namespaces and interfaces.
#[derive(Clone, Debug)]
pub(super) struct Names {
    pub(super) client: String,
    pub(super) gw: String,
    pub(super) origin: String,
    /// In the client namespace, towards the gateway.
    client_if: String,
    /// In the gateway namespace, towards the client.
    gw_client_if: String,
    /// In the gateway namespace, towards the origins: the egress interface.
    gw_origin_if: String,
    /// In the origin namespace, towards the gateway.
    origin_if: String,
}

impl Names {
    pub(super) fn next() -> Result<Names, SetupError> {
        let pid = std::process::id();
        let world = WORLDS.fetch_add(1, Ordering::Relaxed);
        let ns = |role: &str| format!("{NS_PREFIX}{pid}-{world}-{role}");
        // Letters between the numbers keep the names unambiguous; no dash, so that nft reads
        // them as one word.
        let interface = |role: &str| format!("e{pid}w{world}{role}");
        let names = Names {
            client: ns("client"),
            gw: ns("gw"),
            origin: ns("origin"),
            client_if: interface("c"),
            gw_client_if: interface("gc"),
            gw_origin_if: interface("go"),
            origin_if: interface("o"),
        };
        if names.gw_client_if.len() > MAX_IFNAME {
            return Err(SetupError(format!(
                "interface name {} is longer than {MAX_IFNAME} bytes",
                names.gw_client_if
            )));
        }
        Ok(names)
    }
}

/// The three namespaces, deleted on drop.
#[derive(Debug)]
pub(super) struct Namespaces {
    pub(super) names: Names,
    /// The namespaces created so far.
    created: Vec<String>,
    /// `/etc/netns/<client>`, once written.
    resolv_dir: Option<PathBuf>,
}

impl Namespaces {
    pub(super) fn create(names: Names) -> Result<Namespaces, SetupError> {
        let mut net = Namespaces {
            names,
            created: Vec::new(),
            resolv_dir: None,
        };
        let n = net.names.clone();
        for ns in [&n.client, &n.gw, &n.origin] {
            run_ip(&["netns", "add", ns]).map_err(|e| {
                SetupError(format!(
                    "cannot create network namespaces (is this a container without \
                     CAP_SYS_ADMIN?): {e}"
                ))
            })?;
            net.created.push(ns.clone());
        }
        let (c, g, o) = (&n.client, &n.gw, &n.origin);
        // `ip` arguments, one command a line (no argument contains a space).
        let setup = [
            format!(
                "link add {} netns {c} type veth peer name {} netns {g}",
                n.client_if, n.gw_client_if
            ),
            format!(
                "link add {} netns {g} type veth peer name {} netns {o}",
                n.gw_origin_if, n.origin_if
            ),
            format!("-n {c} link set lo up"),
            format!("-n {c} addr add {CLIENT}/24 dev {}", n.client_if),
            format!("-n {c} link set {} up", n.client_if),
            format!("-n {c} route add default via {GATEWAY}"),
            format!("-n {g} link set lo up"),
            format!("-n {g} addr add {GATEWAY}/24 dev {}", n.gw_client_if),
            format!("-n {g} addr add {GATEWAY_EGRESS}/24 dev {}", n.gw_origin_if),
            format!("-n {g} link set {} up", n.gw_client_if),
            format!("-n {g} link set {} up", n.gw_origin_if),
            format!("-n {o} link set lo up"),
            format!("-n {o} addr add {ORIGIN_A}/24 dev {}", n.origin_if),
            format!("-n {o} addr add {ORIGIN_B}/24 dev {}", n.origin_if),
            format!("-n {o} addr add {DNS_SERVER}/24 dev {}", n.origin_if),
            format!("-n {o} link set {} up", n.origin_if),
            format!("-n {o} route add default via {GATEWAY_EGRESS}"),
        ];
        for line in &setup {
            let args: Vec<&str> = line.split_whitespace().collect();
            run_ip(&args).map_err(|e| SetupError(format!("cannot build the world: {e}")))?;
        }
        // The gateway forwards (sysctl net.ipv4.ip_forward, which is per namespace).
        run_ip(&[
            "netns",
            "exec",
            g,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ])
        .map_err(|e| SetupError(format!("cannot enable forwarding in {g}: {e}")))?;
        // `ip netns exec` bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf.
        let dir = Path::new("/etc/netns").join(&n.client);
        std::fs::create_dir_all(&dir)
            .map_err(|e| SetupError(format!("cannot create {}: {e}", dir.display())))?;
        net.resolv_dir = Some(dir.clone());
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {DNS_SERVER}\noptions timeout:2 attempts:1\n"),
        )
        .map_err(|e| SetupError(format!("cannot write {}: {e}", resolv.display())))?;
        Ok(net)
    }

    /// Loads the shipped rules in the gateway namespace with this world's values.
    pub(super) fn load_rules(&self, rules: &Path) -> Result<(), SetupError> {
        let n = &self.names;
        // The clients' subnet is the whole "VPC" here: the origins' subnet plays the internet.
        let defines = [
            "private_cidrs=10.77.1.0/24".to_owned(),
            "vpc_cidr=10.77.1.0/24".to_owned(),
            format!("dns_servers={DNS_SERVER}"),
            format!("egress_if=\"{}\"", n.gw_origin_if),
            format!("http_port={TRANSPARENT_HTTP_PORT}"),
            format!("tls_port={TRANSPARENT_TLS_PORT}"),
        ];
        let rules_path = rules.to_string_lossy();
        let mut args = vec!["netns", "exec", &n.gw, "nft"];
        for define in &defines {
            args.extend(["-D", define]);
        }
        args.extend(["-f", &rules_path]);
        run_ip(&args).map_err(|e| SetupError(format!("cannot load the nftables rules: {e}")))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = run_ip(&["netns", "del", ns]);
        }
        if let Some(dir) = &self.resolv_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `ip args`; the error carries the command line and what `ip` said.
pub(super) fn run_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`ip {}` could not start: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
