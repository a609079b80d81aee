//! `deploy/egret-setup`, the boot helper, run for real, and the files it works with.
//!
//! The main test builds three network namespaces (client, gateway, origin), runs the script
//! in the gateway namespace with its `/etc` paths under a temporary directory and systemctl
//! replaced by a recorder, and checks what it did: forwarding on, the shipped nftables rules
//! loaded with the given values, the values recorded for `egret-nftables.service` (whose
//! `ExecStart` is then run the way systemd would), then starts `egret` with the packaged
//! `deploy/egret.toml` (its transparent listeners uncommented, the log and test names filled
//! in) and sends a client through the explicit proxy and through the redirect the script
//! installed.
//!
//! ```text
//!  client ns                    gateway ns                           origin ns
//!  10.200.1.2 ───veth─── 10.200.1.1 │ 10.201.0.1 ───veth─── 10.201.0.2  HTTP :80
//!  default via 10.200.1.1    egret-setup --mode both, egret run
//! ```
//!
//! Other tests: the ENI attachment against a fake metadata service and a fake AWS CLI, the
//! argument checks, `--dry-run`, shellcheck, and `systemd-analyze verify` of the units.
//!
//! The namespace tests need root, `ip`, `nft`, `sysctl` and `curl`; shellcheck and
//! systemd-analyze their programs (`./test.sh` installs them on Debian as root). Without them
//! a test fails and says what is missing: it never passes without running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use egret_conformance::netns::{GatewayProcess, in_namespace, require_programs};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);
const GATEWAY_EGRESS: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ORIGIN: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

/// The MAC address of the zone's interface in the ENI tests.
const ENI_MAC: &str = "02:00:00:00:00:0b";

/// The systemd units the package ships.
const UNITS: [&str; 3] = [
    "egret.service",
    "egret-nftables.service",
    "egret-eni.service",
];

/// The zone's transparent-mode interface in the ENI tests.
const ENI: &str = "eni-0123456789abcdef0";

/// Namespace sets made by this process, for unique names.
static NETS: AtomicU32 = AtomicU32::new(0);

#[test]
fn setup_script_prepares_a_gateway_namespace() {
    preflight(&[("curl", "curl")]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let root = install_root(dir.path(), &packaged_config(&log));
    let recorder = Recorder::new(dir.path());
    let net = Namespaces::create(&["client", "gw", "origin"]).unwrap_or_else(|e| panic!("{e}"));
    let (client, gw, origin) = (net.name("client"), net.name("gw"), net.name("origin"));
    let (client_if, gw_client_if) = (net.interface("c"), net.interface("gc"));
    let (egress_if, origin_if) = (net.interface("ge"), net.interface("o"));
    for line in [
        format!(
            "link add {client_if} netns {client} type veth peer name {gw_client_if} netns {gw}"
        ),
        format!("link add {egress_if} netns {gw} type veth peer name {origin_if} netns {origin}"),
        format!("-n {client} link set lo up"),
        format!("-n {client} addr add {CLIENT}/24 dev {client_if}"),
        format!("-n {client} link set {client_if} up"),
        format!("-n {client} route add default via {GATEWAY}"),
        format!("-n {gw} link set lo up"),
        format!("-n {gw} addr add {GATEWAY}/24 dev {gw_client_if}"),
        format!("-n {gw} addr add {GATEWAY_EGRESS}/24 dev {egress_if}"),
        format!("-n {gw} link set {gw_client_if} up"),
        format!("-n {gw} link set {egress_if} up"),
        format!("-n {origin} link set lo up"),
        format!("-n {origin} addr add {ORIGIN}/24 dev {origin_if}"),
        format!("-n {origin} link set {origin_if} up"),
        format!("-n {origin} route add default via {GATEWAY_EGRESS}"),
    ] {
        let args: Vec<&str> = line.split_whitespace().collect();
        ip(&args).unwrap_or_else(|e| panic!("cannot build the namespaces: {e}"));
    }
    let _origin = Origin::start(origin, SocketAddr::from((ORIGIN, 80))).unwrap();

    let args = [
        "--mode",
        "both",
        "--vpc-cidr",
        "10.200.0.0/16",
        "--private-cidrs",
        "10.200.1.0/24",
        "--egress-if",
        &egress_if,
        "--dns-servers",
        "10.200.0.2",
        "--no-start",
    ];
    // A second run (a re-run after a reboot) replaces what the first did.
    for run in 1..=2 {
        let out = setup(Some(gw), &root, &recorder, &[], &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}: {stderr}");
        assert!(
            stderr.contains("egret check: listen transparent_http 0.0.0.0:3129")
                && stderr.contains("egret check: listen transparent_tls 0.0.0.0:3130"),
            "run {run}: egret-setup checks the configuration:\n{stderr}"
        );
        assert!(!stderr.contains("warning"), "run {run}:\n{stderr}");
    }

    let forwarding = in_ns(gw, "sysctl", &["-n", "net.ipv4.ip_forward"]);
    assert_eq!(text(&forwarding.stdout).trim(), "1", "{forwarding:?}");
    assert_eq!(
        fs::read_to_string(root.join("etc/sysctl.d/90-egret.conf")).unwrap(),
        "# Written by egret-setup: Egret routes its private subnets' traffic (transparent mode).\n\
         net.ipv4.ip_forward = 1\n"
    );
    let env = fs::read_to_string(root.join("etc/egret/setup.env")).unwrap();
    let values: Vec<&str> = env.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        values,
        [
            "EGRET_MODE=both",
            "EGRET_PRIVATE_CIDRS={10.200.1.0/24}",
            "EGRET_VPC_CIDR=10.200.0.0/16",
            "EGRET_DNS_SERVERS={10.200.0.2}",
            &format!("EGRET_EGRESS_IF={egress_if}"),
            "EGRET_HTTP_PORT=3129",
            "EGRET_TLS_PORT=3130",
        ]
    );
    assert_eq!(
        recorder.calls(),
        [
            "systemctl enable egret-nftables.service",
            "systemctl enable egret-nftables.service"
        ],
        "--no-start: egret is neither enabled nor started"
    );
    expect_rules(gw, &egress_if);

    // What egret-nftables.service does at boot: its ExecStart with setup.env's values.
    let deleted = in_ns(gw, "nft", &["delete", "table", "inet", "egret"]);
    assert!(deleted.status.success(), "{deleted:?}");
    let unit = fs::read_to_string(deploy().join("egret-nftables.service")).unwrap();
    let mut command = exec_start(&unit, &env);
    for word in &mut command {
        if word == "/etc/egret/nftables.conf" {
            *word = root.join("etc/egret/nftables.conf").display().to_string();
        }
    }
    let loaded = in_ns(gw, &command[0], &command[1..]);
    assert!(loaded.status.success(), "{command:?}: {loaded:?}");
    expect_rules(gw, &egress_if);

    let gateway = start_gateway(gw, &root.join("etc/egret/egret.toml"));
    let curl = |args: &[&str]| {
        let mut all = vec!["-sS", "--max-time", "10"];
        all.extend_from_slice(args);
        let out = in_ns(client, "curl", &all);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let proxy = format!("http://{GATEWAY}:3128");
    let checks = [
        (
            "explicit proxy, allowed",
            curl(&["-x", &proxy, "http://origin.test/explicit"]),
            "origin GET /explicit host=origin.test\n".to_owned(),
        ),
        (
            "transparent HTTP through the script's redirect",
            curl(&[
                "--resolve",
                &format!("origin.test:80:{ORIGIN}"),
                "http://origin.test/transparent",
            ]),
            "origin GET /transparent host=origin.test\n".to_owned(),
        ),
        (
            "explicit proxy, denied",
            curl(&["-x", &proxy, "http://denied.test/"]),
            "ERR_ACCESS_DENIED\n".to_owned(),
        ),
        (
            "admin endpoint from the VPC",
            curl(&[&format!("http://{GATEWAY}:9090/readyz")]),
            "ready\n".to_owned(),
        ),
    ];
    let failures = mismatches(&checks);
    assert!(
        failures.is_empty(),
        "{}\n--- egret stderr:\n{}\n--- access log:\n{}",
        failures.join("\n"),
        gateway.stderr(),
        fs::read_to_string(&log).unwrap_or_default()
    );
    let access = wait_for_lines(&log, 3);
    assert_eq!(
        access
            .iter()
            .filter(|l| l.contains(" TCP_MISS/200 "))
            .count(),
        2,
        "{access:?}"
    );
    assert!(
        access.iter().any(|l| l.contains(" TCP_DENIED/403 ")),
        "{access:?}"
    );
}

#[test]
fn setup_script_attaches_the_eni_through_imdsv2() {
    preflight(&[("curl", "curl")]);
    let dir = tempfile::tempdir().unwrap();
    let config = fs::read_to_string(deploy().join("egret.toml"))
        .unwrap()
        .replacen("# transparent_http = ", "transparent_http = ", 1)
        .replacen("# transparent_tls = ", "transparent_tls = ", 1);
    let root = install_root(dir.path(), &config);
    let recorder = Recorder::new(dir.path());
    let net = Namespaces::create(&["eni"]).unwrap_or_else(|e| panic!("{e}"));
    let ns = net.name("eni");
    ip(&["-n", ns, "link", "set", "lo", "up"]).unwrap();
    // The attached interface as the kernel shows it: down, no address, found by its MAC.
    let eni_if = net.interface("z");
    let peer = net.interface("p");
    for line in [
        format!("-n {ns} link add {eni_if} address 02:00:00:00:00:0b type veth peer name {peer}"),
        format!("-n {ns} link set {peer} up"),
    ] {
        ip(&line.split_whitespace().collect::<Vec<_>>()).unwrap();
    }
    let imds = Imds::start(
        ns,
        &[
            (
                "02:00:00:00:00:0a",
                "eni-0primary",
                "10.0.0.10",
                "10.0.0.0/24",
            ),
            ("02:00:00:00:00:0b", ENI, "10.0.3.10", "10.0.3.0/24"),
        ],
    )
    .unwrap();
    let eni = ENI;
    let args = [
        "--mode",
        "transparent",
        "--vpc-cidr",
        "10.0.0.0/16",
        "--private-cidrs",
        "10.0.1.0/24,10.0.2.0/24",
        "--eni-id",
        eni,
        "--egress-if",
        "lo",
    ];
    let env = [
        ("EGRET_SETUP_IMDS", imds.url.as_str()),
        ("EGRET_SETUP_ATTACH_DELAY", "0"),
    ];
    let out = setup(Some(ns), &root, &recorder, &env, &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let describe = format!(
        "aws ec2 describe-network-interfaces --region eu-west-1 --network-interface-ids {eni} \
         --query NetworkInterfaces[0].Attachment.InstanceId --output text"
    );
    let attach = format!(
        "aws ec2 attach-network-interface --region eu-west-1 --network-interface-id {eni} \
         --instance-id i-0fake --device-index 1"
    );
    assert_eq!(
        recorder.calls(),
        [
            "systemctl enable egret-nftables.service",
            // Egret runs before the interface, and with it the clients' traffic, moves here.
            "systemctl enable --now egret.service",
            &describe,
            &attach,
            &describe,
            &attach,
            "systemctl enable egret-eni.service",
        ],
        "the first attach fails (the interface is still held), the second succeeds:\n{stderr}"
    );
    assert!(
        stderr.contains("held by: i-0previous"),
        "a failed try names the holder:\n{stderr}"
    );
    let requests = imds.requests();
    assert_eq!(
        requests[..4],
        [
            "PUT /latest/api/token ttl=300",
            "GET /latest/meta-data/instance-id token=ok",
            "PUT /latest/api/token ttl=300",
            "GET /latest/meta-data/placement/region token=ok",
        ],
        "{requests:#?}"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/egret/eni.env")).unwrap(),
        format!(
            "# Written by egret-setup --eni-id: the zone's transparent-mode interface, routed again\n\
             # at every boot by egret-eni.service (egret-setup --restore-eni).\n\
             EGRET_ENI_ID={ENI}\nEGRET_ENI_MAC=02:00:00:00:00:0b\n\
             EGRET_ENI_ADDRESS=10.0.3.10\nEGRET_ENI_SUBNET=10.0.3.0/24\n"
        ),
        "the interface is found by its MAC address:\n{stderr}"
    );
    expect_eni_routing(ns, &eni_if, "10.0.3.10", "10.0.3.1");
    let env_file = fs::read_to_string(root.join("etc/egret/setup.env")).unwrap();
    assert!(
        env_file.contains("EGRET_PRIVATE_CIDRS={10.0.1.0/24,10.0.2.0/24}\n")
            && env_file.contains("EGRET_DNS_SERVERS={10.0.0.2}\n"),
        "the resolver defaults to the VPC base + 2:\n{env_file}"
    );

    // Never attachable: egret-setup gives up after the tries and says why.
    recorder.fail_attach_always();
    let env = [
        ("EGRET_SETUP_IMDS", imds.url.as_str()),
        ("EGRET_SETUP_ATTACH_DELAY", "0"),
        ("EGRET_SETUP_ATTACH_TRIES", "2"),
    ];
    let out = setup(Some(ns), &root, &recorder, &env, &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: could not attach {eni} to i-0fake after 2 tries (held by: i-0previous)"
        )),
        "{stderr}"
    );
}

/// Transparent mode on AWS with the zone's routed interface, emulated: a VPC router namespace
/// sends the private subnet's default route to the interface's MAC address and, like EC2,
/// drops what the gateway's primary interface sends from or receives for any address but its
/// own (source/destination check on), while the routed interface's check is off.
///
/// ```text
///  client 10.210.128.10 ── router ──(primary: 10.210.0.10, check on)── gateway ── egret
///                            │    └──(routed: 10.210.1.10, check off)──┘
///                            └── origin 10.211.0.2 (":80" HTTP, ":8080" an extra TCP port)
/// ```
///
/// Egret's replies to the clients and the replies to forwarded connections must leave through
/// the routed interface: with egret-setup's rule removed they leave by the primary one and
/// are dropped (the emulation is faithful), and `--restore-eni` (egret-eni.service at boot)
/// puts it back.
#[test]
fn setup_script_routes_the_clients_replies_through_the_zone_interface() {
    preflight(&[("curl", "curl")]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = packaged_config(&log)
        .replace(
            "private_exceptions = [\"10.201.0.0/24\"]",
            "private_exceptions = [\"10.211.0.0/24\"]",
        )
        .replace(&format!("[\"{ORIGIN}\"]"), "[\"10.211.0.2\"]");
    let root = install_root(dir.path(), &config);
    let recorder = Recorder::new(dir.path());
    recorder.held_by("i-0fake");
    let net =
        Namespaces::create(&["client", "router", "gw", "origin"]).unwrap_or_else(|e| panic!("{e}"));
    let (client, router, gw, origin) = (
        net.name("client"),
        net.name("router"),
        net.name("gw"),
        net.name("origin"),
    );
    let (client_if, router_client_if) = (net.interface("c"), net.interface("rc"));
    let (primary_if, router_primary_if) = (net.interface("g0"), net.interface("r0"));
    let (eni_if, router_eni_if) = (net.interface("g1"), net.interface("r1"));
    let (origin_if, router_origin_if) = (net.interface("o"), net.interface("ro"));
    for line in [
        format!(
            "link add {client_if} netns {client} type veth peer name {router_client_if} netns {router}"
        ),
        format!(
            "link add {primary_if} netns {gw} type veth peer name {router_primary_if} netns {router}"
        ),
        format!(
            "link add {eni_if} netns {gw} address {ENI_MAC} type veth peer name {router_eni_if} netns {router}"
        ),
        format!(
            "link add {origin_if} netns {origin} type veth peer name {router_origin_if} netns {router}"
        ),
        format!("-n {client} link set lo up"),
        format!("-n {client} addr add 10.210.128.10/24 dev {client_if}"),
        format!("-n {client} link set {client_if} up"),
        format!("-n {client} route add default via 10.210.128.1"),
        format!("-n {router} link set lo up"),
        format!("-n {router} addr add 10.210.128.1/24 dev {router_client_if}"),
        format!("-n {router} addr add 10.210.0.1/24 dev {router_primary_if}"),
        format!("-n {router} addr add 10.210.1.1/24 dev {router_eni_if}"),
        format!("-n {router} addr add 10.211.0.1/24 dev {router_origin_if}"),
        format!("-n {router} link set {router_client_if} up"),
        format!("-n {router} link set {router_primary_if} up"),
        format!("-n {router} link set {router_eni_if} up"),
        format!("-n {router} link set {router_origin_if} up"),
        // The private subnet's route table: 0.0.0.0/0 to the routed interface, by its MAC.
        format!("-n {router} rule add iif {router_client_if} lookup 100 priority 100"),
        format!(
            "-n {router} neigh add 10.210.1.10 lladdr {ENI_MAC} dev {router_eni_if} nud permanent"
        ),
        format!(
            "-n {router} route add default via 10.210.1.10 dev {router_eni_if} onlink table 100"
        ),
        // The gateway as it boots: the primary interface configured, the routed one attached
        // but down and without an address.
        format!("-n {gw} link set lo up"),
        format!("-n {gw} addr add 10.210.0.10/24 dev {primary_if}"),
        format!("-n {gw} link set {primary_if} up"),
        format!("-n {gw} route add default via 10.210.0.1"),
        format!("-n {origin} link set lo up"),
        format!("-n {origin} addr add 10.211.0.2/24 dev {origin_if}"),
        format!("-n {origin} link set {origin_if} up"),
        format!("-n {origin} route add default via 10.211.0.1"),
    ] {
        let args: Vec<&str> = line.split_whitespace().collect();
        ip(&args).unwrap_or_else(|e| panic!("cannot build the namespaces: {e}"));
    }
    let forwarding = in_ns(router, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
    assert!(forwarding.status.success(), "{forwarding:?}");
    // EC2's source/destination check on the primary interface.
    let check = format!(
        "table ip ec2 {{\n\
         counter checked {{ }}\n\
         chain forward {{\n\
         type filter hook forward priority 0; policy accept;\n\
         iifname \"{router_primary_if}\" ip saddr != 10.210.0.10 counter name checked drop\n\
         oifname \"{router_primary_if}\" ip daddr != 10.210.0.10 counter name checked drop\n\
         }}\n\
         }}\n"
    );
    let rules = dir.path().join("ec2.nft");
    fs::write(&rules, check).unwrap();
    let loaded = in_ns(router, "nft", &[Path::new("-f"), &rules]);
    assert!(loaded.status.success(), "{loaded:?}");
    let _origin = Origin::start(origin, SocketAddr::from(([10, 211, 0, 2], 80))).unwrap();
    let _extra = Origin::start(origin, SocketAddr::from(([10, 211, 0, 2], 8080))).unwrap();
    let imds = Imds::start(
        gw,
        &[
            (
                "02:00:00:00:00:0a",
                "eni-0primary",
                "10.210.0.10",
                "10.210.0.0/24",
            ),
            (ENI_MAC, ENI, "10.210.1.10", "10.210.1.0/24"),
        ],
    )
    .unwrap();

    let args = [
        "--mode",
        "transparent",
        "--vpc-cidr",
        "10.210.0.0/16",
        "--private-cidrs",
        "10.210.128.0/24",
        "--eni-id",
        ENI,
        "--egress-if",
        &primary_if,
        "--no-start",
    ];
    let env = [("EGRET_SETUP_IMDS", imds.url.as_str())];
    let out = setup(Some(gw), &root, &recorder, &env, &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{ENI} is already attached to this instance (i-0fake)"
        )),
        "{stderr}"
    );
    expect_eni_routing(gw, &eni_if, "10.210.1.10", "10.210.1.1");
    // The extra port is forwarded (masqueraded), not intercepted.
    let opened = in_ns(
        gw,
        "nft",
        &[
            "add",
            "element",
            "inet",
            "egret",
            "extra_tcp_ports",
            "{ 8080 }",
        ],
    );
    assert!(opened.status.success(), "{opened:?}");
    let gateway = start_gateway(gw, &root.join("etc/egret/egret.toml"));

    let curl = |url: &str| {
        let (origin, denied) = ("origin.test:80:10.211.0.2", "denied.test:80:10.211.0.2");
        let args = [
            "-sS",
            "--max-time",
            "3",
            "--resolve",
            origin,
            "--resolve",
            denied,
        ];
        let out = in_ns(client, "curl", &[&args[..], &[url]].concat());
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let dropped = || {
        let out = in_ns(router, "nft", &["list", "counter", "ip", "ec2", "checked"]);
        let listing = text(&out.stdout);
        listing
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no packet count in {listing}"))
    };
    let through = |when: &str| {
        let checks = [
            (
                "intercepted HTTP",
                curl("http://origin.test/eni"),
                "origin GET /eni host=origin.test\n",
            ),
            (
                "intercepted HTTP, denied",
                curl("http://denied.test/"),
                "ERR_ACCESS_DENIED\n",
            ),
            (
                "forwarded extra port",
                curl("http://10.211.0.2:8080/extra"),
                "origin GET /extra host=10.211.0.2:8080\n",
            ),
        ];
        let failures = mismatches(&checks);
        assert!(
            failures.is_empty(),
            "{when}:\n{}\n--- egret stderr:\n{}",
            failures.join("\n"),
            gateway.stderr()
        );
    };
    through("with egret-setup's routing");
    assert_eq!(dropped(), 0, "nothing left by the primary interface");

    // Without the rule the replies leave by the primary interface, and EC2 drops them.
    let removed = in_ns(
        gw,
        "ip",
        &["-4", "rule", "del", "fwmark", "0x3128", "lookup", "3128"],
    );
    assert!(removed.status.success(), "{removed:?}");
    let (code, body, _) = curl("http://origin.test/lost");
    assert!(code != Some(0) && body.is_empty(), "{code:?} {body:?}");
    assert!(dropped() > 0, "the check dropped the replies");

    // What egret-eni.service does at boot.
    let restored = setup(Some(gw), &root, &recorder, &[], &["--restore-eni"]);
    assert_eq!(
        restored.status.code(),
        Some(0),
        "{}",
        text(&restored.stderr)
    );
    expect_eni_routing(gw, &eni_if, "10.210.1.10", "10.210.1.1");
    let before = dropped();
    through("after --restore-eni");
    assert_eq!(
        dropped(),
        before,
        "nothing more left by the primary interface"
    );
}

#[test]
fn setup_script_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let recorder = Recorder::new(dir.path());
    let transparent = ["--mode", "transparent", "--vpc-cidr", "10.0.0.0/16"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        transparent.iter().chain(extra).copied().collect()
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--mode is required"),
        (
            vec!["--mode", "nat", "--vpc-cidr", "10.0.0.0/16"],
            "--mode 'nat': expected explicit, transparent or both",
        ),
        (vec!["--mode", "explicit"], "--vpc-cidr is required"),
        (
            vec!["--mode", "explicit", "--vpc-cidr", "10.0.0.0"],
            "--vpc-cidr '10.0.0.0' is not a CIDR",
        ),
        (
            vec!["--mode", "explicit", "--vpc-cidr", "10.0.0.0/33"],
            "--vpc-cidr '10.0.0.0/33': the prefix length must be 0 to 32",
        ),
        (
            vec!["--mode", "explicit", "--vpc-cidr", "10.0.0.1/16"],
            "--vpc-cidr '10.0.0.1/16' has host bits set (the network is 10.0.0.0/16)",
        ),
        (
            vec!["--mode", "explicit", "--vpc-cidr", "10.0.256.0/24"],
            "--vpc-cidr '10.0.256.0/24': '10.0.256.0' is not an IPv4 address",
        ),
        (
            vec![
                "--mode",
                "explicit",
                "--vpc-cidr",
                "10.0.0.0/16",
                "--eni-id",
                "eni-1",
            ],
            "--eni-id is for --mode transparent or both",
        ),
        (with(&[]), "--mode transparent needs --private-cidrs"),
        (
            with(&["--private-cidrs", "10.0.1.0/24,,10.0.2.0/24"]),
            "--private-cidrs '10.0.1.0/24,,10.0.2.0/24': expected a comma-separated list \
             without empty items",
        ),
        (
            with(&["--private-cidrs", "10.0.1.0/24,010.0.2.0/24"]),
            "--private-cidrs '010.0.2.0/24': '010.0.2.0' is not an IPv4 address",
        ),
        (
            with(&[
                "--private-cidrs",
                "10.0.1.0/24",
                "--dns-servers",
                "10.0.0.2/32",
            ]),
            "--dns-servers '10.0.0.2/32' is not an IPv4 address",
        ),
        (
            with(&["--private-cidrs", "10.0.1.0/24", "--eni-id", "eni-xyz"]),
            "--eni-id 'eni-xyz': expected eni- and hex digits",
        ),
        (
            with(&["--private-cidrs", "10.0.1.0/24", "--region", "EU west"]),
            "--region 'EU west': expected a region name such as eu-west-1",
        ),
        (
            with(&[
                "--private-cidrs",
                "10.0.1.0/24",
                "--egress-if",
                "no-such-if0",
            ]),
            "--egress-if 'no-such-if0': no such interface here",
        ),
        (
            with(&["--private-cidrs", "10.0.1.0/24", "--egress-if", "0eth"]),
            "--egress-if '0eth' is not an interface name nft accepts",
        ),
        (with(&["--private-cidrs"]), "--private-cidrs needs a value"),
        (with(&["--reboot"]), "unknown argument '--reboot'"),
    ];
    let mut failures = Vec::new();
    for (args, want) in &cases {
        let out = setup(None, &root, &recorder, &[], args);
        let stderr = text(&out.stderr);
        if out.status.code() != Some(2) || !stderr.contains(&format!("error: {want}")) {
            failures.push(format!(
                "egret-setup {}: expected exit 2 and \"error: {want}\", got {:?}: {stderr}",
                args.join(" "),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(recorder.calls(), Vec::<String>::new());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "nothing written");
}

#[test]
fn setup_script_dry_run_changes_nothing() {
    // Root is not needed; the programs transparent mode would run are checked for.
    if let Err(e) = require_programs(&[("nft", "nftables"), ("sysctl", "procps")]) {
        panic!("{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = install_root(
        dir.path(),
        &fs::read_to_string(deploy().join("egret.toml")).unwrap(),
    );
    let before = listing(&root);
    let recorder = Recorder::new(dir.path());
    let args = [
        "--mode=both",
        "--vpc-cidr=172.16.0.0/12",
        "--private-cidrs=172.16.1.0/24,172.16.2.0/24",
        "--egress-if=lo",
        "--eni-id=eni-0abc",
        "--dry-run",
    ];
    let env = [("EGRET_SETUP_IMDS", "http://127.0.0.1:9")];
    let out = setup(None, &root, &recorder, &env, &args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rules = root.join("etc/egret/nftables.conf");
    for line in [
        "would write ".to_owned()
            + &root
                .join("etc/sysctl.d/90-egret.conf")
                .display()
                .to_string(),
        "would run: sysctl -q -w net.ipv4.ip_forward=1".to_owned(),
        "    EGRET_DNS_SERVERS={172.16.0.2}".to_owned(),
        format!(
            "would run: nft -D private_cidrs={{172.16.1.0/24,172.16.2.0/24}} \
             -D vpc_cidr=172.16.0.0/12 -D dns_servers={{172.16.0.2}} -D egress_if=lo \
             -D http_port=3129 -D tls_port=3130 -f {}",
            rules.display()
        ),
        format!("would run: {} enable --now egret.service", recorder.path()),
        "would attach eni-0abc to this instance".to_owned(),
        "warning: ".to_owned()
            + &root.join("etc/egret/egret.toml").display().to_string()
            + " has no [listen] transparent_http on port 3129",
        "done: mode both (dry run: nothing changed)".to_owned(),
    ] {
        assert!(stderr.contains(&line), "expected {line:?} in:\n{stderr}");
    }
    assert_eq!(listing(&root), before, "--dry-run wrote something");
    assert_eq!(recorder.calls(), Vec::<String>::new());
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if let Err(e) = require_programs(&[("shellcheck", "shellcheck")]) {
        panic!("{e} (./test.sh installs it)");
    }
    let scripts = [
        "egret-setup",
        "make-tarball.sh",
        "debian/postinst",
        "debian/postrm",
    ];
    let out = Command::new("shellcheck")
        .args(scripts.map(|s| deploy().join(s)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if let Err(e) = require_programs(&[("systemd-analyze", "systemd")]) {
        panic!("{e} (./test.sh installs it)");
    }
    // An offline root: the host's targets, the units, and stand-ins for the programs they run
    // (verify checks that each is executable).
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    for entry in fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".target") {
            fs::copy(entry.path(), units.join(&name)).unwrap();
        }
    }
    for unit in UNITS {
        fs::copy(deploy().join(unit), units.join(unit)).unwrap();
    }
    for program in [
        "usr/bin/egret",
        "usr/sbin/nft",
        "usr/sbin/egret-setup",
        "bin/kill",
    ] {
        let path = dir.path().join(program);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", dir.path().display()))
        .args(UNITS)
        .output()
        .unwrap();
    // Unknown keys and bad values are warnings with exit 0: any output is a failure.
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
}

// ---- helpers ----

/// Fails the test unless it runs as root with `ip`, `nft`, `sysctl` and `extra`.
fn preflight(extra: &[(&str, &str)]) {
    assert!(
        rustix::process::geteuid().is_root(),
        "the egret-setup tests need root (network namespaces, nftables, sysctl)"
    );
    let mut programs = vec![
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("sysctl", "procps"),
    ];
    programs.extend_from_slice(extra);
    if let Err(e) = require_programs(&programs) {
        panic!("{e}");
    }
}

/// Lays out `<dir>/root/etc/egret` as the package installs it: the shipped rules and `config`
/// as egret.toml. Returns the root.
fn install_root(dir: &Path, config: &str) -> PathBuf {
    let root = dir.join("root");
    let etc = root.join("etc/egret");
    fs::create_dir_all(&etc).unwrap();
    fs::copy(deploy().join("nftables.conf"), etc.join("nftables.conf")).unwrap();
    fs::write(etc.join("egret.toml"), config).unwrap();
    root
}

/// Returns deploy/egret.toml as an operator adapts it for transparent mode (the two listener
/// lines uncommented), with this test's allowlist, names, origin subnet and log file.
fn packaged_config(log: &Path) -> String {
    let mut config = fs::read_to_string(deploy().join("egret.toml")).unwrap();
    for (from, to) in [
        ("# transparent_http = [", "transparent_http = ["),
        ("# transparent_tls = [", "transparent_tls = ["),
        ("\ndomains = []\n", "\ndomains = [\"origin.test\"]\n"),
        (
            "# private_exceptions = [\"10.20.0.0/16\"]",
            "private_exceptions = [\"10.201.0.0/24\"]",
        ),
        (
            "path = \"/var/log/egret/access.log\"",
            &format!("path = {:?}", log.display().to_string()),
        ),
    ] {
        assert_eq!(
            config.matches(from).count(),
            1,
            "deploy/egret.toml should contain {from:?} once"
        );
        config = config.replacen(from, to, 1);
    }
    config.push_str(&format!(
        "\n[resolver]\nhosts = {{ \"origin.test\" = [\"{ORIGIN}\"], \"denied.test\" = [\"{ORIGIN}\"] }}\n"
    ));
    config
}

/// Runs deploy/egret-setup (in namespace `ns` when given) with its `/etc` under `root`,
/// systemctl and aws replaced by `recorder`, and the built egret for the configuration check.
fn setup(
    ns: Option<&str>,
    root: &Path,
    recorder: &Recorder,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let script = deploy().join("egret-setup");
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&script);
            c
        }
        None => Command::new(&script),
    };
    command
        .args(args)
        .env("EGRET_SETUP_ROOT", root)
        .env("EGRET_SETUP_SYSTEMCTL", recorder.path())
        .env("EGRET_SETUP_AWS", recorder.aws_path())
        .env("EGRET_SETUP_EGRET", env!("CARGO_BIN_EXE_egret"))
        .env("EGRET_SETUP_IMDS", "http://127.0.0.1:9")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command.output().unwrap()
}

/// Checks the `inet egret` table in `ns` against the values the main test passed.
fn expect_rules(ns: &str, egress_if: &str) {
    let out = in_ns(ns, "nft", &["list", "table", "inet", "egret"]);
    let ruleset = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let missing: Vec<String> = [
        "ip saddr 10.200.1.0/24 tcp dport 80 redirect to :3129".to_owned(),
        "ip saddr 10.200.1.0/24 tcp dport 443 redirect to :3130".to_owned(),
        format!("oifname \"{egress_if}\" ip saddr 10.200.1.0/24 masquerade"),
        "ip saddr 10.200.1.0/24 ip daddr 10.200.0.2 udp dport 53 accept".to_owned(),
        "ip saddr 10.200.0.0/16 tcp dport { 3128, 3129, 3130, 9090 } accept".to_owned(),
    ]
    .into_iter()
    .filter(|rule| !ruleset.contains(rule.as_str()))
    .collect();
    assert!(missing.is_empty(), "missing {missing:#?} in:\n{ruleset}");
    let tables = text(&in_ns(ns, "nft", &["list", "tables"]).stdout);
    assert_eq!(tables.matches("table inet egret").count(), 1, "{tables}");
}

/// Returns the unit's `ExecStart=` command as systemd runs it: continuation lines joined,
/// split at whitespace, `${NAME}` replaced by the value `env` (an EnvironmentFile) gives.
fn exec_start(unit: &str, env: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart=");
    let values: Vec<(&str, &str)> = env
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    line.split_whitespace()
        .map(|word| {
            values.iter().fold(word.to_owned(), |word, (name, value)| {
                word.replace(&format!("${{{name}}}"), value)
            })
        })
        .inspect(|word| assert!(!word.contains("${"), "{word}: not in setup.env"))
        .collect()
}

/// Runs `program args` in namespace `ns`, with no proxy variables.
fn in_ns<S: AsRef<std::ffi::OsStr>>(ns: &str, program: &str, args: &[S]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `ip args`; the error carries the command line and what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            text(&out.stderr).trim()
        ))
    }
}

/// Waits up to five seconds for `path` to have `count` lines; returns its lines.
fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= count || Instant::now() >= deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Returns every path under `dir` with its size, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            }
            found.push((entry.path(), meta.len()));
        }
    }
    found.sort();
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// curl's exit code, stdout and stderr.
type CurlResult = (Option<i32>, String, String);

/// Returns a line for each (name, curl's (exit code, stdout, stderr), wanted stdout) where
/// curl failed or printed something else.
fn mismatches<W: AsRef<str>>(checks: &[(&str, CurlResult, W)]) -> Vec<String> {
    checks
        .iter()
        .filter(|(_, (code, body, _), want)| *code != Some(0) || body != want.as_ref())
        .map(|(name, got, want)| format!("{name}: expected {:?}, got {got:?}", want.as_ref()))
        .collect()
}

/// Checks that `ns` routes the clients' replies (fwmark 0x3128) out of `ifname`, which has
/// `address` without a route in the main table, through `router`.
fn expect_eni_routing(ns: &str, ifname: &str, address: &str, router: &str) {
    let rules = text(&in_ns(ns, "ip", &["-4", "rule", "show"]).stdout);
    assert_eq!(
        rules.matches("fwmark 0x3128 lookup 3128").count(),
        1,
        "one rule for the mark:\n{rules}"
    );
    let table = text(&in_ns(ns, "ip", &["-4", "route", "show", "table", "3128"]).stdout);
    assert!(
        table.contains(&format!("default via {router} dev {ifname} onlink"))
            && table.contains(&format!("dev {ifname} scope link src {address}")),
        "table 3128:\n{table}"
    );
    let main = text(&in_ns(ns, "ip", &["-4", "route", "show"]).stdout);
    assert!(
        !main.contains(ifname),
        "the main table keeps away from {ifname}:\n{main}"
    );
    let addr = text(&in_ns(ns, "ip", &["-4", "addr", "show", "dev", ifname]).stdout);
    assert!(
        addr.contains(&format!("inet {address}/")) && addr.contains("UP"),
        "{addr}"
    );
    let rp_filter = format!("net.ipv4.conf.{ifname}.rp_filter");
    let loose = text(&in_ns(ns, "sysctl", &["-n", &rp_filter]).stdout);
    assert_eq!(
        loose.trim(),
        "2",
        "loose reverse-path filtering on {ifname}"
    );
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Network namespaces named after this process, deleted on drop.
#[derive(Debug)]
struct Namespaces {
    prefix: String,
    created: Vec<String>,
}

impl Namespaces {
    fn create(roles: &[&str]) -> Result<Namespaces, String> {
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("egret-setup-{}-{n}", std::process::id());
        let mut net = Namespaces {
            prefix,
            created: Vec::new(),
        };
        for role in roles {
            let name = format!("{}-{role}", net.prefix);
            ip(&["netns", "add", &name])
                .map_err(|e| format!("cannot create a network namespace: {e}"))?;
            net.created.push(name);
        }
        Ok(net)
    }

    fn name(&self, role: &str) -> &str {
        let name = format!("{}-{role}", self.prefix);
        self.created
            .iter()
            .find(|n| **n == name)
            .expect("a namespace made by create")
    }

    /// Returns an interface name unique to this set (at most 15 bytes, no dash).
    fn interface(&self, role: &str) -> String {
        let n = self.prefix.rsplit('-').next().unwrap_or("0");
        let name = format!("es{}n{n}{role}", std::process::id() % 100_000);
        assert!(name.len() <= 15, "{name} is too long for an interface");
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Stand-ins for systemctl and the AWS CLI that append their command lines to one file; the
/// fake `aws` says the interface is held by i-0previous and fails the first attach.
#[derive(Debug)]
struct Recorder {
    dir: PathBuf,
}

impl Recorder {
    fn new(dir: &Path) -> Recorder {
        let dir = dir.join("bin");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("calls");
        let script = |name: &str, body: &str| {
            let path = dir.join(name);
            fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}",
                    log.display()
                ),
            )
            .unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("systemctl", "exit 0\n");
        let tries = dir.join("attach-tries");
        let always = dir.join("attach-always-fails");
        let holder = dir.join("holder");
        script(
            "aws",
            &format!(
                "case \"$*\" in\n\
                 *describe-network-interfaces*) cat '{holder}' 2>/dev/null || echo i-0previous ;;\n\
                 *attach-network-interface*)\n\
                 \techo x >> '{tries}'\n\
                 \tif [ -e '{always}' ] || [ \"$(wc -l < '{tries}')\" -lt 2 ]; then\n\
                 \t\techo 'An error occurred (InvalidNetworkInterface.InUse): in use' >&2\n\
                 \t\texit 254\n\
                 \tfi\n\
                 \techo '{{\"AttachmentId\": \"eni-attach-1\"}}' ;;\n\
                 *) exit 2 ;;\n\
                 esac\n",
                tries = tries.display(),
                always = always.display(),
                holder = holder.display()
            ),
        );
        Recorder { dir }
    }

    fn path(&self) -> String {
        self.dir.join("systemctl").display().to_string()
    }

    fn aws_path(&self) -> String {
        self.dir.join("aws").display().to_string()
    }

    /// Makes the fake `aws` say that the interface is attached to `instance`.
    fn held_by(&self, instance: &str) {
        fs::write(self.dir.join("holder"), format!("{instance}\n")).unwrap();
    }

    /// Makes every later attach fail, and forgets the calls so far.
    fn fail_attach_always(&self) {
        fs::write(self.dir.join("attach-always-fails"), "").unwrap();
        let _ = fs::remove_file(self.dir.join("calls"));
    }

    /// Returns the recorded command lines, the program named by its file name.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A server that stops when dropped: a listener polled by a thread.
#[derive(Debug)]
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` in namespace `ns` and answers each connection with `answer`.
    fn start(
        ns: &str,
        addr: SocketAddr,
        answer: impl Fn(&str, &mut TcpStream) + Send + 'static,
    ) -> std::io::Result<(Server, SocketAddr)> {
        let listener = in_namespace(ns, || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        let head = read_head(&mut stream);
                        answer(&head, &mut stream);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok((
            Server {
                stop,
                thread: Some(thread),
            },
            local,
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The origin: answers `origin METHOD PATH host=HOST`.
#[derive(Debug)]
struct Origin {
    _server: Server,
}

impl Origin {
    fn start(ns: &str, addr: SocketAddr) -> std::io::Result<Origin> {
        let (server, _) = Server::start(ns, addr, |head, stream| {
            let mut words = head.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let host = header(head, "host").unwrap_or_default();
            let body = format!("origin {method} {path} host={host}\n");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        })?;
        Ok(Origin { _server: server })
    }
}

/// An interface the fake metadata service lists: MAC address, ENI id, address, subnet.
type ImdsInterface = (&'static str, &'static str, &'static str, &'static str);

/// A fake instance metadata service (IMDSv2): a token for a PUT, then the instance id, region
/// and the given interfaces for GETs carrying it. Records each request.
#[derive(Debug)]
struct Imds {
    _server: Server,
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Imds {
    fn start(ns: &str, interfaces: &'static [ImdsInterface]) -> std::io::Result<Imds> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let (server, addr) = Server::start(
            ns,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            move |head, stream| {
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let (record, status, body) = if method == "PUT" && path == "/latest/api/token" {
                    let ttl = header(head, "x-aws-ec2-metadata-token-ttl-seconds");
                    (
                        format!("PUT {path} ttl={}", ttl.unwrap_or_default()),
                        "200 OK",
                        "ok".to_owned(),
                    )
                } else {
                    let token = header(head, "x-aws-ec2-metadata-token").unwrap_or_default();
                    let body = match path {
                        _ if token != "ok" => String::new(),
                        "/latest/meta-data/instance-id" => "i-0fake".to_owned(),
                        "/latest/meta-data/placement/region" => "eu-west-1".to_owned(),
                        "/latest/meta-data/network/interfaces/macs/" => interfaces
                            .iter()
                            .map(|(mac, ..)| format!("{mac}/\n"))
                            .collect(),
                        _ => imds_interface_item(interfaces, path).unwrap_or_default(),
                    };
                    let status = if body.is_empty() {
                        "401 Unauthorized"
                    } else {
                        "200 OK"
                    };
                    (format!("{method} {path} token={token}"), status, body)
                };
                if let Ok(mut seen) = seen.lock() {
                    seen.push(record);
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            },
        )?;
        Ok(Imds {
            _server: server,
            url: format!("http://{addr}"),
            requests,
        })
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Answers `/latest/meta-data/network/interfaces/macs/<mac>/<item>` for the fake IMDS.
fn imds_interface_item(interfaces: &[ImdsInterface], path: &str) -> Option<String> {
    let rest = path.strip_prefix("/latest/meta-data/network/interfaces/macs/")?;
    let (mac, item) = rest.split_once('/')?;
    let (_, eni, address, subnet) = interfaces.iter().find(|i| i.0 == mac)?;
    match item {
        "interface-id" => Some((*eni).to_owned()),
        "local-ipv4s" => Some(format!("{address}\n")),
        "subnet-ipv4-cidr-block" => Some((*subnet).to_owned()),
        _ => None,
    }
}

/// Reads a request head (up to the blank line, at most 16 KiB).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    text(&head)
}

/// Returns the value of header `name` (lower case) in `head`.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// Starts egret in `ns` with `config` and waits until it reports every listener of the
/// packaged configuration; killed on drop.
fn start_gateway(ns: &str, config: &Path) -> GatewayProcess {
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_egret"),
            "run",
            "--config",
        ])
        .arg(config);
    let wanted = [
        "listening explicit 0.0.0.0:3128",
        "listening transparent_http 0.0.0.0:3129",
        "listening transparent_tls 0.0.0.0:3130",
        "listening admin 0.0.0.0:9090",
    ];
    GatewayProcess::spawn(command, &wanted)
        .unwrap_or_else(|e| panic!("egret with the packaged config did not start: {e}"))
}
