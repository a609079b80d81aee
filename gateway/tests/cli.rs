//! The `egret check` and `egret explain` commands, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[test]
fn check_prints_the_effective_listeners_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "extra.txt",
        "deb.debian.org\n.github.io # pages\n",
    );
    let config = write(
        dir.path(),
        "egret.toml",
        "[listen]\nexplicit = [\"127.0.0.1:3128\", \"[::1]:3128\"]\n\
         [allowlist]\ndomains = [\"pypi.org, .pythonhosted.org\"]\nfiles = [\"extra.txt\"]\n",
    );
    let out = egret(&["check", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = stdout(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "listen explicit 127.0.0.1:3128",
            "listen explicit [::1]:3128",
            "allow deb.debian.org",
            "allow pypi.org",
            "allow .github.io",
            "allow .pythonhosted.org",
        ]
    );
    let extra = dir.path().join("extra.txt");
    let warning = format!("warning: {}:2: '.github.io': ", extra.display());
    assert!(lines[6].starts_with(&warning), "{stdout}");
    assert!(
        lines[7].starts_with("ok: 2 listener(s), 4 allowlist entries"),
        "{stdout}"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn check_reports_every_bad_entry_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "list.txt", "ok.example\n\n.com\n");
    let config = write(
        dir.path(),
        "egret.toml",
        "threads = 1\n\n[allowlist]\ndomains = [\"pypi.org\", \"*.example.com\"]\n\
         files = [\"list.txt\"]\n",
    );
    let out = egret(&["check", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let stderr = stderr(&out);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let toml = format!("error: {}:4: '*.example.com': ", config.display());
    assert!(lines[0].starts_with(&toml), "{stderr}");
    assert!(lines[0].contains("leading dot"), "{stderr}");
    let list = format!(
        "error: {}:3: '.com': ",
        dir.path().join("list.txt").display()
    );
    assert!(lines[1].starts_with(&list), "{stderr}");
    assert!(lines[1].contains("public suffix"), "{stderr}");
}

#[test]
fn check_names_an_unknown_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "egret.toml",
        "[listen]\nexplicit = [\"127.0.0.1:3128\"]\n\n[policy]\nmode = \"audit\"\nports_allowed = [80]\n",
    );
    let out = egret(&["check", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr(&out);
    let expected = format!(
        "error: {}:6:1: unknown field `ports_allowed`",
        config.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn check_reports_config_and_list_problems_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "egret.toml",
        "[listen]\nexplicit = []\n[allowlist]\nfiles = [\"missing.txt\"]\n",
    );
    let out = egret(&["check", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr(&out);
    assert!(
        stderr.contains("[listen]: at least one listener"),
        "{stderr}"
    );
    assert!(
        stderr.contains("missing.txt: cannot read the list file"),
        "{stderr}"
    );
}

#[test]
fn check_fails_on_a_missing_file_and_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = egret(&["check", "--config", arg(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nope.toml: cannot read the file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(egret(&["check"]).status.code(), Some(2));
}

#[test]
fn explain_names_the_deciding_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = pypi_config(dir.path(), "enforce");
    let out = egret(&[
        "explain",
        "--config",
        arg(&config),
        "files.pythonhosted.org",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = stdout(&out);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("files.pythonhosted.org:443 allowed by entry '.pythonhosted.org'")
    );
    assert!(
        lines
            .next()
            .is_some_and(|note| note.contains("after DNS at connection time"))
    );
}

#[test]
fn explain_says_why_a_destination_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let config = pypi_config(dir.path(), "enforce");
    let out = egret(&["explain", "--config", arg(&config), "evil.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "evil.example:443 denied: not_allowlisted\n");
    let out = egret(&["explain", "--config", arg(&config), "PyPI.org:8080"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "pypi.org:8080 denied: port_not_allowed (entry 'pypi.org' admits ports 80, 443)\n"
    );
    let out = egret(&["explain", "--config", arg(&config), "pypi.org:80"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn explain_in_audit_mode_says_what_it_lets_through() {
    let dir = tempfile::tempdir().unwrap();
    let config = pypi_config(dir.path(), "audit");
    let out = egret(&["explain", "--config", arg(&config), "evil.example:443"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = stdout(&out);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("evil.example:443 would be denied (audit mode lets it through): not_allowlisted")
    );
    // What audit mode lets through still has its addresses checked.
    assert!(
        lines
            .next()
            .is_some_and(|note| note.contains("after DNS at connection time"))
    );
}

#[test]
fn explain_works_without_a_config_file() {
    let out = egret(&[
        "explain",
        "--allow",
        "pypi.org,example.com:8443",
        "example.com:8443",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("example.com:8443 allowed by entry 'example.com:8443'\n"));
    let out = egret(&["explain", "pypi.org"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "pypi.org:443 denied: not_allowlisted\n");
}

#[test]
fn explain_exits_2_on_usage_and_config_errors() {
    let out = egret(&["explain", "bad host"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("'bad host' is not a valid HOST[:PORT]"),
        "{}",
        stderr(&out)
    );
    assert_eq!(egret(&["explain", "pypi.org:0"]).status.code(), Some(2));
    assert_eq!(egret(&["explain", "pypi.org:99999"]).status.code(), Some(2));
    assert_eq!(egret(&["explain"]).status.code(), Some(2));
    let out = egret(&["explain", "--allow", ".com", "pypi.org"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--allow: '.com': "),
        "{}",
        stderr(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "egret.toml", "[policy]\nmode = \"strict\"\n");
    let out = egret(&["explain", "--config", arg(&config), "pypi.org"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("egret.toml:2:8: unknown variant `strict`"),
        "{}",
        stderr(&out)
    );
}

fn pypi_config(dir: &Path, mode: &str) -> PathBuf {
    write(
        dir,
        "egret.toml",
        &format!(
            "[allowlist]\ndomains = [\"pypi.org\", \".pythonhosted.org\"]\n\
             [policy]\nmode = \"{mode}\"\n"
        ),
    )
}

fn egret(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_egret"))
        .args(args)
        .env_remove("EGRET_LOG")
        .output()
        .expect("egret runs")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the temp file is written");
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}
