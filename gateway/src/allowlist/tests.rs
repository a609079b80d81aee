use std::path::Path;
use std::time::Instant;

use egret_core::host::Host;
use egret_core::policy::{Mode, Verdict};

use super::*;
use crate::config::Overrides;

#[test]
fn entries_come_from_domains_files_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "extra.txt",
        "deb.debian.org # mirror\n.pythonhosted.org\n",
    );
    let config = write(
        dir.path(),
        "egret.toml",
        "[allowlist]\ndomains = [\"pypi.org\", \"a.example, b.example c.example\"]\n\
         files = [\"extra.txt\"]\n",
    );
    let source = source(&config, &["d.example,e.example:8443"]);
    let (_, loaded) = load(&source).unwrap();
    assert!(loaded.warnings.is_empty());
    assert_eq!(
        entries(&loaded.policy),
        [
            "a.example",
            "b.example",
            "c.example",
            "d.example",
            "deb.debian.org",
            "e.example:8443",
            "pypi.org",
            ".pythonhosted.org",
        ]
    );
    let host = Host::parse(b"files.pythonhosted.org").unwrap();
    assert_eq!(loaded.policy.decide(&host, 443).verdict, Verdict::Allow);
}

#[test]
fn the_policy_carries_the_configured_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "egret.toml",
        "[policy]\nmode = \"audit\"\nports = [8443, 443]\n",
    );
    let (_, loaded) = load(&source(&config, &[])).unwrap();
    assert_eq!(loaded.policy.settings().mode, Mode::Audit);
    assert_eq!(loaded.policy.settings().ports, [443, 8443]);
}

#[test]
fn every_problem_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.txt", "ok.example\n\n*.example.com\n");
    let config = write(
        dir.path(),
        "egret.toml",
        "threads = 1\n[allowlist]\ndomains = [\n  \"pypi.org\",\n  \"fine.example .com\",\n]\n\
         files = [\"bad.txt\", \"missing.txt\"]\n",
    );
    let problems = messages(load(&source(&config, &["exa mple.org,%bad"])).unwrap_err());
    let toml = config.display().to_string();
    let bad = dir.path().join("bad.txt").display().to_string();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{}: cannot read",
            dir.path().join("missing.txt").display()
        )),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with(&format!("{toml}:5: '.com': ")),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with(&format!("{bad}:3: '*.example.com': ")),
        "{}",
        problems[2]
    );
    assert!(
        problems[3].starts_with("--allow: '%bad': "),
        "{}",
        problems[3]
    );
}

#[test]
fn shared_suffixes_are_warnings() {
    let source = ConfigSource {
        path: None,
        overrides: Overrides {
            allow: vec![".github.io".to_owned()],
            ..Overrides::default()
        },
    };
    let (_, loaded) = load(&source).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0]
            .to_string()
            .starts_with("--allow: '.github.io': "),
        "{}",
        loaded.warnings[0]
    );
}

#[test]
fn without_a_file_the_list_is_empty_and_the_defaults_apply() {
    let (config, loaded) = load(&ConfigSource::default()).unwrap();
    assert_eq!(config, Config::default());
    assert!(loaded.policy.allowlist().is_empty());
}

#[test]
fn a_bad_reload_keeps_the_last_good_policy_and_a_good_one_publishes_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(dir.path(), "list.txt", "a.example\nb.example\n");
    let config = write(
        dir.path(),
        "egret.toml",
        "[allowlist]\ndomains = [\"pypi.org\"]\nfiles = [\"list.txt\"]\n",
    );
    let source = source(&config, &[]);
    let (running, loaded) = load(&source).unwrap();
    let store = PolicyStore::new(loaded.policy);
    let mut reloader = Reloader::new(source, running, store.clone(), Remote::default());

    assert_eq!(reloader.reload(Wake::Timer), Reload::Unchanged);

    std::fs::write(&list, "a.example\n.com\n").unwrap();
    let Reload::Failed(problems) = reloader.reload_now() else {
        panic!("a bad list was accepted");
    };
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("list.txt:2: '.com'"), "{problems:?}");
    assert_eq!(
        entries(&store.load()),
        ["a.example", "b.example", "pypi.org"]
    );

    std::fs::write(&list, "a.example\nc.example\n").unwrap();
    let reload = reloader.reload(Wake::Timer);
    assert_eq!(
        reload,
        Reload::Published {
            entries: 3,
            added: vec!["c.example".to_owned()],
            removed: vec!["b.example".to_owned()],
            settings: Vec::new(),
        }
    );
    assert_eq!(
        entries(&store.load()),
        ["a.example", "c.example", "pypi.org"]
    );
}

#[test]
fn a_reload_applies_policy_settings_and_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "egret.toml",
        "[allowlist]\ndomains = [\"a.example\"]\n",
    );
    let source = source(&config, &[]);
    let (running, loaded) = load(&source).unwrap();
    let store = PolicyStore::new(loaded.policy);
    let mut reloader = Reloader::new(source, running, store.clone(), Remote::default());
    assert_eq!(reloader.interval(), Duration::from_secs(60));
    std::fs::write(
        &config,
        "[allowlist]\ndomains = [\"a.example\"]\nreload_interval = \"5s\"\n\
         [policy]\nmode = \"audit\"\n[limits]\nidle_timeout = \"1s\"\n",
    )
    .unwrap();
    let Reload::Published {
        added, settings, ..
    } = reloader.reload_now()
    else {
        panic!("the new settings were not published");
    };
    assert!(added.is_empty());
    assert_eq!(settings, ["mode: enforce -> audit"]);
    assert_eq!(store.load().settings().mode, Mode::Audit);
    assert_eq!(reloader.interval(), Duration::from_secs(5));
    // [limits] needs a restart: the reload neither fails nor publishes for it.
    assert_eq!(reloader.reload_now(), Reload::Unchanged);
}

#[test]
fn a_poke_reloads_on_the_thread_and_stop_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "egret.toml",
        "[allowlist]\ndomains = [\"a.example\"]\n",
    );
    let source = source(&config, &[]);
    let (running, loaded) = load(&source).unwrap();
    let store = PolicyStore::new(loaded.policy);
    let thread = Reloader::new(source, running, store.clone(), Remote::default())
        .spawn()
        .unwrap();
    std::fs::write(&config, "[allowlist]\ndomains = [\"b.example\"]\n").unwrap();
    thread.poker().poke();
    let deadline = Instant::now() + Duration::from_secs(10);
    while entries(&store.load()) != ["b.example"] {
        assert!(Instant::now() < deadline, "the poke did not reload");
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.stop();
}

#[test]
fn diffs_name_a_bounded_number_of_entries() {
    let names = |n: usize| (0..n).map(|i| format!("h{i}.example")).collect::<Vec<_>>();
    assert_eq!(
        describe_diff(12, &["pypi.org".to_owned()], &[]),
        "12 entries (+1 -0): added pypi.org"
    );
    assert_eq!(
        describe_diff(2, &names(1), &names(2)),
        "2 entries (+1 -2): added h0.example; removed h0.example, h1.example"
    );
    let long = describe_diff(20, &names(12), &[]);
    assert!(long.ends_with("h9.example and 2 more"), "{long}");
}

#[test]
fn a_zero_byte_list_file_is_a_failed_reload_and_a_comment_only_one_empties_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(dir.path(), "list.txt", "a.example\n");
    let config = write(
        dir.path(),
        "egret.toml",
        "[allowlist]\nfiles = [\"list.txt\"]\n",
    );
    let source = source(&config, &[]);
    let (running, loaded) = load(&source).unwrap();
    let store = PolicyStore::new(loaded.policy);
    let mut reloader = Reloader::new(source.clone(), running, store.clone(), Remote::default());

    // Caught between the truncation and the write of `echo ... > list.txt`.
    std::fs::write(&list, "").unwrap();
    let Reload::Failed(problems) = reloader.reload_now() else {
        panic!("a zero-byte file was taken as an empty list");
    };
    assert!(
        problems[0].contains("list.txt: cannot read the list file: it is empty"),
        "{problems:?}"
    );
    assert_eq!(entries(&store.load()), ["a.example"]);
    assert!(load(&source).is_err(), "nor does it start with one");

    std::fs::write(&list, "# nothing allowed for now\n").unwrap();
    let reload = reloader.reload_now();
    assert!(
        matches!(reload, Reload::Published { entries: 0, .. }),
        "{reload:?}"
    );
    assert!(entries(&store.load()).is_empty());
}

fn source(config: &Path, allow: &[&str]) -> ConfigSource {
    ConfigSource {
        path: Some(config.to_owned()),
        overrides: Overrides {
            allow: allow.iter().map(|&a| a.to_owned()).collect(),
            ..Overrides::default()
        },
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn entries(policy: &Policy) -> Vec<String> {
    let list = policy.allowlist().entries();
    list.iter().map(ToString::to_string).collect()
}

fn messages(problems: Vec<LoadError>) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}
