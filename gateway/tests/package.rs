//! The Debian package's recipe (`[package.metadata.deb]` in gateway/Cargo.toml) against the
//! repository: every file it packs exists, lands where the units and `egret-setup` look for
//! it, and the shipped configuration is one `egret check` accepts. Building the package itself
//! needs cargo-deb and a release build; deploy/PACKAGING.md says how.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where each shipped file must be installed, and with which mode: the paths the units,
/// `egret-setup` and the documentation name.
const EXPECTED: [(&str, &str, &str); 4] = [
    ("target/release/egret", "usr/bin/egret", "755"),
    ("../deploy/egret.toml", "etc/egret/egret.toml", "644"),
    ("../deploy/nftables.conf", "etc/egret/nftables.conf", "644"),
    ("../deploy/egret-setup", "usr/sbin/egret-setup", "755"),
];

#[test]
fn every_asset_exists_and_lands_where_expected() {
    let deb = deb_metadata();
    let assets = assets(&deb);
    let mut problems = Vec::new();
    for (source, (dest, mode)) in &assets {
        if let Some(binary) = source.strip_prefix("target/release/") {
            if binary != "egret" {
                problems.push(format!("{source}: not a binary this package builds"));
            }
        } else if !crate_dir().join(source).is_file() {
            problems.push(format!("{source} (for /{dest}): no such file"));
        }
        if mode == "755" && !source.starts_with("target/") {
            let path = crate_dir().join(source);
            let executable = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !executable {
                problems.push(format!(
                    "{source} is installed 755 but is not executable here"
                ));
            }
        }
    }
    for (source, dest, mode) in EXPECTED {
        match assets.get(source) {
            Some((d, m)) if d == dest && m == mode => {}
            Some((d, m)) => problems.push(format!(
                "{source} goes to /{d} mode {m}; expected /{dest} mode {mode}"
            )),
            None => problems.push(format!("{source} is not packed (expected at /{dest})")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_units_and_maintainer_scripts_exist() {
    let deb = deb_metadata();
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    let postinst = crate_dir().join(scripts).join("postinst");
    let text = std::fs::read_to_string(&postinst)
        .unwrap_or_else(|e| panic!("{}: {e}", postinst.display()));
    for script in ["postinst", "postrm"] {
        let path = crate_dir().join(scripts).join(script);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // cargo-deb replaces every occurrence, comments included.
        assert_eq!(
            text.matches("#DEBHELPER#").count(),
            1,
            "{}: cargo-deb puts the systemd hooks at the one #DEBHELPER# line",
            path.display()
        );
    }
    assert!(
        text.contains("adduser --system") && text.contains("/var/log/egret"),
        "{}: creates the egret user and its log directory",
        postinst.display()
    );
    let units = deb["systemd-units"].as_array().unwrap();
    let mut found = Vec::new();
    for unit in units {
        let dir = crate_dir().join(unit["unit-scripts"].as_str().unwrap());
        // cargo-deb's lookup: <unit-name>.service, or <package>.service without a name.
        let name = unit
            .get("unit-name")
            .and_then(toml::Value::as_str)
            .unwrap_or("egret");
        let path = dir.join(format!("{name}.service"));
        assert!(path.is_file(), "{}: no such unit file", path.display());
        assert_eq!(
            unit.get("enable").and_then(toml::Value::as_bool),
            Some(false),
            "{name}.service must not be enabled by the package"
        );
        found.push(name.to_owned());
    }
    assert_eq!(found, ["egret", "egret-nftables", "egret-eni"]);
}

#[test]
fn the_units_name_shipped_paths() {
    let deb = deb_metadata();
    let shipped: Vec<String> = assets(&deb)
        .values()
        .map(|(dest, _)| format!("/{dest}"))
        .collect();
    for unit in [
        "egret.service",
        "egret-nftables.service",
        "egret-eni.service",
    ] {
        let text = std::fs::read_to_string(deploy().join(unit)).unwrap();
        for word in exec_words(&text) {
            // setup.env is egret-setup's; the rest of /etc/egret and the egret binaries are
            // the package's.
            let ours = word.starts_with("/etc/egret/") || word.starts_with("/usr/bin/egret");
            if ours && word != "/etc/egret/setup.env" {
                assert!(
                    shipped.contains(&word),
                    "{unit} runs with {word}, which the package does not install"
                );
            }
        }
    }
    let setup = std::fs::read_to_string(deploy().join("egret-setup")).unwrap();
    for path in ["/etc/egret/egret.toml", "/etc/egret/nftables.conf"] {
        // egret-setup prefixes them with $root (EGRET_SETUP_ROOT, for the tests).
        assert!(setup.contains(path), "egret-setup does not use {path}");
        assert!(shipped.iter().any(|s| s == path), "{path} is not shipped");
    }
}

#[test]
fn the_shipped_config_passes_egret_check() {
    let config = deploy().join("egret.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_egret"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for line in [
        "listen explicit 0.0.0.0:3128",
        "warning: the allowlist is empty: every destination will be denied",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "`egret check` should print {line:?}:\n{stdout}"
        );
    }
}

#[test]
fn the_unit_outlasts_the_drain() {
    let config: toml::Table = std::fs::read_to_string(deploy().join("egret.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let limit = |key: &str| seconds(config["limits"][key].as_str().unwrap());
    let unit = std::fs::read_to_string(deploy().join("egret.service")).unwrap();
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .map(seconds)
        .expect("egret.service sets TimeoutStopSec");
    let needed = limit("drain_grace") + limit("drain_timeout") + Duration::from_secs(15);
    assert!(
        stop > needed,
        "TimeoutStopSec {stop:?} must exceed drain_grace + drain_timeout + 15 s = {needed:?}"
    );
    assert_eq!(config["listen"]["admin"].as_str(), Some("0.0.0.0:9090"));
    assert_eq!(
        config["log"]["path"].as_str(),
        Some("/var/log/egret/access.log"),
        "the log goes where LogsDirectory=egret makes a writable directory"
    );
    assert!(unit.lines().any(|l| l == "LogsDirectory=egret"));
}

/// Returns the `[package.metadata.deb]` table.
fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = std::fs::read_to_string(crate_dir().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("gateway/Cargo.toml has [package.metadata.deb]")
        .clone()
}

/// Returns the assets: source → (destination, mode).
fn assets(deb: &toml::Table) -> BTreeMap<String, (String, String)> {
    deb["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets")
        .iter()
        .map(|asset| {
            let fields: Vec<&str> = asset
                .as_array()
                .expect("an asset is [source, dest, mode]")
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let [source, dest, mode] = fields[..] else {
                panic!("an asset is [source, dest, mode]: {asset}");
            };
            (source.to_owned(), (dest.to_owned(), mode.to_owned()))
        })
        .collect()
}

/// Returns every word of the unit's `Exec*=` and `EnvironmentFile=` lines, continuations
/// joined.
fn exec_words(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| l.starts_with("Exec") || l.starts_with("EnvironmentFile="))
        .filter_map(|l| l.split_once('='))
        .flat_map(|(_, command)| command.split_whitespace().map(str::to_owned))
        .map(|w| w.trim_start_matches('-').to_owned())
        .collect()
}

/// Parses "90s", "0s" or "90" (systemd's and egret.toml's whole seconds).
fn seconds(text: &str) -> Duration {
    let digits = text.strip_suffix('s').unwrap_or(text);
    Duration::from_secs(
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{text:?} is not whole seconds")),
    )
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}
