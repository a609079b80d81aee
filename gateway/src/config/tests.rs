use super::*;

#[test]
fn an_empty_file_means_every_default() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.runtime, Runtime::Tokio);
    assert_eq!(config.threads, 0);
    assert_eq!(
        config.listen.explicit,
        ["127.0.0.1:3128".parse::<SocketAddr>().unwrap()]
    );
    assert!(config.allowlist.domains.is_empty());
    assert!(config.allowlist.files.is_empty());
    assert_eq!(config.allowlist.reload_interval, Duration::from_secs(60));
    // The explicit listener and the admin endpoint: never a destination at a private address.
    let own_ports = PolicySettings {
        own_ports: vec![3128, 9090],
        ..PolicySettings::default()
    };
    assert_eq!(config.policy_settings(), own_ports);
    assert_eq!(config.policy.ports, [80, 443]);
    assert!(config.resolver.hosts.is_empty());
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.limits.max_header_bytes, 16_384);
    assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.tcp_keepalive(), Some(Duration::from_secs(60)));
    assert_eq!(config.limits.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.limits(), Limits::default());
    assert_eq!(config.log.format, LogFormat::Squid);
    assert_eq!(config.log_target(), LogTarget::Stdout);
    assert!(config.validate(None).is_ok());
}

#[test]
fn the_documented_example_parses() {
    let text = r#"
runtime = "tokio"
threads = 4

[listen]
explicit = ["127.0.0.1:3128", "[::1]:3128"]

[allowlist]
domains = ["pypi.org", ".pythonhosted.org"]
files = ["lists/extra.txt", "/etc/egret/more.txt"]
reload_interval = "5m"

[policy]
mode = "audit"
ports = [80, 443, 8443]
allow_ip_literals = true
private_exceptions = ["127.0.0.0/8", "fd00::/8"]
tls_deny = "reset"
ech = "allow"
inspect_tunnels = false

[resolver]
hosts = { "origin.test" = ["127.0.0.1", "::1"], "nx.test" = [] }

[limits]
max_connections = 50
max_header_bytes = 8192
header_timeout = "2s"
connect_timeout = "3s"
idle_timeout = "1m 30s"
tcp_keepalive = "0s"
drain_timeout = "500ms"

[log]
format = "json"
path = "access.log"
"#;
    let config = Config::parse(text, Path::new("/etc/egret/egret.toml")).unwrap();
    assert_eq!(config.threads, 4);
    assert_eq!(config.listeners().len(), 2);
    assert_eq!(config.listeners()[1].addr, "[::1]:3128".parse().unwrap());
    assert_eq!(config.listeners()[1].kind, ListenerKind::Explicit);
    let domains: Vec<_> = config
        .allowlist
        .domains
        .iter()
        .map(|d| (&*d.text, d.line))
        .collect();
    assert_eq!(domains, [("pypi.org", 9), (".pythonhosted.org", 9)]);
    assert_eq!(
        config.allowlist.files,
        [
            PathBuf::from("/etc/egret/lists/extra.txt"),
            PathBuf::from("/etc/egret/more.txt")
        ]
    );
    assert_eq!(config.allowlist.reload_interval, Duration::from_secs(300));
    let settings = config.policy_settings();
    assert_eq!(settings.mode, Mode::Audit);
    assert_eq!(settings.ports, [80, 443, 8443]);
    assert!(settings.allow_ip_literals);
    assert_eq!(
        settings.private_exceptions,
        [
            "127.0.0.0/8".parse::<IpNet>().unwrap(),
            "fd00::/8".parse().unwrap()
        ]
    );
    assert_eq!(settings.tls_deny, TlsDeny::Reset);
    assert_eq!(settings.ech, EchPolicy::Allow);
    assert!(!settings.inspect_tunnels);
    let hosts = config.resolver_hosts();
    assert_eq!(hosts["origin.test"].len(), 2);
    assert!(hosts["nx.test"].is_empty());
    assert_eq!(config.limits.max_connections, 50);
    let limits = config.limits();
    assert_eq!(limits.max_header_bytes, 8192);
    assert_eq!(limits.header_timeout, Duration::from_secs(2));
    assert_eq!(limits.connect_timeout, Duration::from_secs(3));
    assert_eq!(limits.idle_timeout, Duration::from_secs(90));
    assert_eq!(limits.linger_timeout, Limits::default().linger_timeout);
    assert_eq!(config.tcp_keepalive(), None);
    assert_eq!(config.limits.drain_timeout, Duration::from_millis(500));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(
        config.log_target(),
        LogTarget::File("/etc/egret/access.log".into())
    );
    assert!(config.validate(None).is_ok());
}

#[test]
fn every_enum_value_parses() {
    for (text, mode) in [("enforce", Mode::Enforce), ("audit", Mode::Audit)] {
        let config = parse(&format!("[policy]\nmode = \"{text}\"")).unwrap();
        assert_eq!(config.policy.mode, mode);
    }
    for (text, deny) in [("alert", TlsDeny::Alert), ("reset", TlsDeny::Reset)] {
        let config = parse(&format!("[policy]\ntls_deny = \"{text}\"")).unwrap();
        assert_eq!(config.policy.tls_deny, deny);
    }
    for (text, ech) in [("deny", EchPolicy::Deny), ("allow", EchPolicy::Allow)] {
        let config = parse(&format!("[policy]\nech = \"{text}\"")).unwrap();
        assert_eq!(config.policy.ech, ech);
    }
    for (text, format) in [("squid", LogFormat::Squid), ("json", LogFormat::Json)] {
        let config = parse(&format!("[log]\nformat = \"{text}\"")).unwrap();
        assert_eq!(config.log.format, format);
    }
    for (text, runtime) in [
        ("tokio", Runtime::Tokio),
        ("mio", Runtime::Mio),
        ("glommio", Runtime::Glommio),
    ] {
        let config = parse(&format!("runtime = \"{text}\"")).unwrap();
        assert_eq!(config.runtime, runtime);
    }
}

#[test]
fn an_unknown_runtime_names_the_ones_that_exist() {
    let message = error("threads = 2\nruntime = \"libuv\"\n");
    assert!(message.starts_with("egret.toml:2:11: "), "{message}");
    assert!(message.contains("libuv"), "{message}");
    assert!(message.contains("tokio"), "{message}");
    assert!(message.contains("glommio"), "{message}");
}

#[test]
fn bad_enum_values_are_located() {
    let message = error("[policy]\nmode = \"permissive\"\n");
    assert!(message.starts_with("egret.toml:2:"), "{message}");
    assert!(message.contains("enforce"), "{message}");
    assert!(message.contains("audit"), "{message}");
    assert!(error("[log]\nformat = \"xml\"").starts_with("egret.toml:2:"));
    assert!(error("[policy]\ntls_deny = \"drop\"").starts_with("egret.toml:2:"));
    assert!(error("[policy]\nech = \"maybe\"").starts_with("egret.toml:2:"));
}

#[test]
fn unknown_keys_are_errors_that_name_the_key_and_its_line() {
    let message = error("threads = 1\n\n[listen]\nexplicit = []\nsocks = \"127.0.0.1:1080\"\n");
    assert!(message.starts_with("egret.toml:5:1: "), "{message}");
    assert!(message.contains("unknown field `socks`"), "{message}");
    let top = error("colour = \"blue\"\n");
    assert!(top.starts_with("egret.toml:1:1: "), "{top}");
    assert!(top.contains("`colour`"), "{top}");
    let section = error("[allowlist]\n\n[cloudwatch]\ngroup = \"x\"\n");
    assert!(section.starts_with("egret.toml:3:"), "{section}");
    assert!(section.contains("`cloudwatch`"), "{section}");
    for (section, key) in [
        ("allowlist", "domain"),
        ("policy", "modes"),
        ("resolver", "nameservers"),
        ("limits", "max_conns"),
        ("log", "syslog"),
        ("log.cloudwatch", "log_group"),
    ] {
        let message = error(&format!("[{section}]\n{key} = 1\n"));
        assert!(message.starts_with("egret.toml:2:1: "), "{message}");
        assert!(message.contains(&format!("`{key}`")), "{message}");
    }
}

#[test]
fn cloudwatch_is_off_unless_its_section_is_there_and_then_has_defaults() {
    assert_eq!(
        parse("[log]\nformat = \"json\"").unwrap().log.cloudwatch,
        None
    );
    let config = parse("[log.cloudwatch]\n").unwrap();
    let cloudwatch = config.log.cloudwatch.unwrap();
    assert_eq!(cloudwatch, CloudWatchConfig::default());
    assert_eq!(cloudwatch.group, "/egret/access");
    assert_eq!(cloudwatch.stream, "{hostname}");
    assert_eq!(cloudwatch.retention_days, 7);
    assert_eq!(cloudwatch.endpoint, None);
    assert_eq!(cloudwatch.region, None);
    assert_eq!(cloudwatch.metric_namespace, "Egret");
    assert_eq!(cloudwatch.queue_events, 100_000);
}

#[test]
fn every_cloudwatch_key_parses() {
    let text = r#"
[log]
format = "json"

[log.cloudwatch]
group = "/egret/prod-access"
stream = "egret/{instance_id}/{hostname}"
retention_days = 30
endpoint = "http://127.0.0.1:5000"
region = "eu-west-1"
metric_namespace = "Egret/Prod"
queue_events = 500
"#;
    let config = parse(text).unwrap();
    let cloudwatch = config.log.cloudwatch.unwrap();
    assert_eq!(
        cloudwatch,
        CloudWatchConfig {
            group: "/egret/prod-access".to_owned(),
            stream: "egret/{instance_id}/{hostname}".to_owned(),
            retention_days: 30,
            endpoint: Some("http://127.0.0.1:5000".to_owned()),
            region: Some("eu-west-1".to_owned()),
            metric_namespace: "Egret/Prod".to_owned(),
            queue_events: 500,
        }
    );
    let empty = parse("[log.cloudwatch]\nendpoint = \"\"\nregion = \"\"").unwrap();
    let empty = empty.log.cloudwatch.unwrap();
    assert_eq!((empty.endpoint, empty.region), (None, None));
    assert_eq!(
        parse("[log.cloudwatch]\nretention_days = 0")
            .unwrap()
            .log
            .cloudwatch
            .unwrap()
            .retention_days,
        0
    );
}

#[test]
fn bad_cloudwatch_values_are_located() {
    for (key, value, says) in [
        ("group", "\"has space\"", "not a log group name"),
        ("group", "\"\"", "not a log group name"),
        ("stream", "\"{host}\"", "unknown placeholder"),
        ("stream", "\"a:b\"", "without ':' or '*'"),
        ("stream", "\"\"", "not a log stream name"),
        ("retention_days", "10", "one of 0, 1, 3, 5, 7, 14"),
        (
            "metric_namespace",
            "\"AWS/Egret\"",
            "not starting with 'AWS/'",
        ),
        ("metric_namespace", "\"\"", "not a metric namespace"),
        ("queue_events", "0", "at least 1"),
    ] {
        let message = error(&format!("[log.cloudwatch]\n{key} = {value}\n"));
        assert!(message.starts_with("egret.toml:2:"), "{key}: {message}");
        assert!(message.contains(says), "{key}: {message}");
    }
}

#[test]
fn syntax_errors_are_located() {
    let message = error("threads = 1\n[listen\n");
    assert!(message.starts_with("egret.toml:2:"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn durations_take_units_and_refuse_zero_and_nonsense() {
    let config = parse("[limits]\nheader_timeout = \"1500ms\"\nidle_timeout = \"2h\"").unwrap();
    assert_eq!(config.limits.header_timeout, Duration::from_millis(1500));
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(7200));
    for key in [
        "header_timeout",
        "connect_timeout",
        "idle_timeout",
        "drain_timeout",
    ] {
        let message = error(&format!("[limits]\n{key} = \"0s\"\n"));
        assert!(message.starts_with("egret.toml:2:"), "{message}");
        assert!(message.contains("more than zero"), "{message}");
    }
    let interval = error("[allowlist]\nreload_interval = \"0s\"");
    assert!(interval.contains("more than zero"), "{interval}");
    let nonsense = error("[limits]\nconnect_timeout = \"ten seconds\"");
    assert!(nonsense.starts_with("egret.toml:2:"), "{nonsense}");
    let bare = error("[limits]\nconnect_timeout = 10");
    assert!(bare.starts_with("egret.toml:2:"), "{bare}");
}

#[test]
fn cidrs_parse_and_bad_ones_are_located() {
    let config = parse("[policy]\nprivate_exceptions = [\"10.1.0.0/16\", \"::1/128\"]").unwrap();
    assert_eq!(config.policy.private_exceptions.len(), 2);
    assert!(config.policy.private_exceptions[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
    for bad in ["10.1.0.0/33", "10.1.0.0", "example.com/8"] {
        let message = error(&format!("[policy]\nprivate_exceptions = [\"{bad}\"]"));
        assert!(message.starts_with("egret.toml:2:"), "{bad}: {message}");
    }
}

#[test]
fn ports_header_bytes_and_connections_are_range_checked() {
    for bad in ["[0]", "[80, 0]", "[70000]", "[-1]"] {
        let message = error(&format!("[policy]\nports = {bad}"));
        assert!(message.starts_with("egret.toml:2:"), "{bad}: {message}");
    }
    assert_eq!(
        parse("[policy]\nports = [1, 65535]").unwrap().policy.ports,
        [1, 65535]
    );
    for bad in ["1023", "1048577", "0"] {
        let message = error(&format!("[limits]\nmax_header_bytes = {bad}"));
        assert!(message.starts_with("egret.toml:2:"), "{bad}: {message}");
        assert!(message.contains("between 1024 and 1048576"), "{message}");
    }
    for good in [1024, 1_048_576] {
        let config = parse(&format!("[limits]\nmax_header_bytes = {good}")).unwrap();
        assert_eq!(config.limits.max_header_bytes, good);
    }
    let message = error("[limits]\nmax_connections = 0");
    assert!(message.starts_with("egret.toml:2:"), "{message}");
}

#[test]
fn validation_needs_a_listener_and_valid_resolver_names() {
    let config = parse("[listen]\nexplicit = []").unwrap();
    let problems = invalid(&config);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0],
        "egret.toml: [listen]: at least one listener is needed"
    );
    let config = parse(
        "[listen]\nexplicit = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n\
         [resolver]\nhosts = { \"bad name\" = [] }",
    )
    .unwrap();
    let problems = invalid(&config);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("127.0.0.1:1 is listed twice"));
    assert!(problems[1].contains("'bad name'"));
    let bad_addr = error("[listen]\nexplicit = [\"localhost:3128\"]");
    assert!(bad_addr.starts_with("egret.toml:2:"), "{bad_addr}");
}

#[test]
fn overrides_replace_what_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egret.toml");
    std::fs::write(
        &path,
        "threads = 2\n[listen]\nexplicit = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let source = ConfigSource {
        path: Some(path.clone()),
        overrides: Overrides {
            listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
            runtime: Some(Runtime::Tokio),
            threads: Some(8),
            ..Overrides::default()
        },
    };
    let config = source.load().unwrap();
    assert_eq!(config.threads, 8);
    assert_eq!(config.listen.explicit.len(), 2);
    assert_eq!(config.listen.explicit[0].port(), 0);
    let without = ConfigSource {
        path: Some(path),
        overrides: Overrides::default(),
    };
    let config = without.load().unwrap();
    assert_eq!(config.threads, 2);
    assert_eq!(
        config.listen.explicit,
        ["127.0.0.1:1".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let source = ConfigSource {
        path: Some("/nonexistent/egret.toml".into()),
        overrides: Overrides::default(),
    };
    let problems = source.load().unwrap_err();
    assert_eq!(problems.len(), 1);
    let message = problems[0].to_string();
    assert!(
        message.starts_with("/nonexistent/egret.toml: cannot read"),
        "{message}"
    );
}

#[test]
fn restart_sections_are_told_apart_from_reloadable_ones() {
    let old = Config::default();
    let mut new =
        parse("[allowlist]\ndomains = [\"a.example\"]\n[policy]\nmode = \"audit\"").unwrap();
    assert!(new.restart_sections_changed(&old).is_empty());
    new.limits.idle_timeout = Duration::from_secs(1);
    new.listen.explicit.clear();
    new.threads = 3;
    assert_eq!(
        new.restart_sections_changed(&old),
        ["runtime/threads", "[listen]", "[limits]"]
    );
    new.log.cloudwatch = Some(CloudWatchConfig::default());
    assert!(new.restart_sections_changed(&old).contains(&"[log]"));
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("egret.toml"))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("parsed: {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn invalid(config: &Config) -> Vec<String> {
    let problems = config.validate(Some(Path::new("egret.toml"))).unwrap_err();
    problems.iter().map(ToString::to_string).collect()
}
