//! The configuration file of DESIGN.md §4: its sections with their defaults, parsing with
//! located errors, validation, command-line overrides, and conversion into core types.
//!
//! Unknown keys are errors (`deny_unknown_fields` on every section) and every error names the
//! file and line. A missing section means its defaults. Relative paths in the file (allowlist
//! files, the access log) are taken relative to the file's own directory, so that a service
//! finds them whatever its working directory is.

mod de;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use egret_core::policy::{EchPolicy, Mode, PolicySettings, TlsDeny};
use egret_core::{Limits, ListenerKind, ProxyProtocol};
use egret_rt_common::ListenerSpec;
use ipnet::IpNet;
use serde::Deserialize;

/// The smallest `max_header_bytes` accepted.
pub const MIN_HEADER_BYTES: usize = 1024;
/// The largest `max_header_bytes` accepted (1 MiB).
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which runtime drives the sessions.
    pub runtime: Runtime,
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    /// `[listen]`: where to listen.
    pub listen: ListenConfig,
    /// `[allowlist]`: the entries and where they come from.
    pub allowlist: AllowlistConfig,
    /// `[policy]`: the settings that travel with the allowlist.
    pub policy: PolicyConfig,
    /// `[resolver]`: static DNS answers.
    pub resolver: ResolverConfig,
    /// `[limits]`: bounds on peers and timeouts.
    pub limits: LimitsConfig,
    /// `[log]`: the access log.
    pub log: LogConfig,
}

/// The runtimes this build can drive sessions with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Multi-thread tokio: the production default.
    #[default]
    Tokio,
    /// Raw mio, one thread per core with `SO_REUSEPORT` listeners.
    Mio,
    /// glommio, one pinned io_uring executor per core (Linux).
    Glommio,
}

/// `[listen]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Addresses for explicit (forward proxy) mode.
    pub explicit: Vec<SocketAddr>,
    /// Addresses where nftables redirects intercepted port-80 traffic.
    pub transparent_http: Vec<SocketAddr>,
    /// Addresses where nftables redirects intercepted port-443 traffic.
    pub transparent_tls: Vec<SocketAddr>,
    /// Whether connections start with a PROXY protocol header (v1 or v2, as an AWS NLB
    /// sends): `off`, `optional` or `required`.
    #[serde(with = "de::ProxyProtocolDef")]
    pub proxy_protocol: ProxyProtocol,
    /// The admin endpoint (`/healthz`, `/readyz`, `/metrics`); `""` turns it off.
    #[serde(deserialize_with = "de::optional_addr")]
    pub admin: Option<SocketAddr>,
}

/// `[allowlist]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowlistConfig {
    /// Entries written in the file; each element is one entry or a comma/whitespace separated
    /// list of them.
    pub domains: Vec<ListItem>,
    /// List files, read at start and at every reload.
    pub files: Vec<PathBuf>,
    /// How often the configuration, the files and the SSM parameter are re-read.
    #[serde(deserialize_with = "de::nonzero_duration")]
    pub reload_interval: Duration,
    /// An SSM Parameter Store parameter holding more entries (String, StringList or
    /// SecureString), read at start and at every reload.
    #[serde(deserialize_with = "de::ssm_parameter")]
    pub ssm_parameter: Option<String>,
    /// The region of the SSM parameter; `None` means the standard chain's.
    #[serde(deserialize_with = "de::optional_text")]
    pub ssm_region: Option<String>,
    /// The SSM endpoint, for an emulator; `None` means the region's.
    #[serde(deserialize_with = "de::optional_text")]
    pub ssm_endpoint: Option<String>,
}

/// One element of `[allowlist] domains`, with the line it is written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListItem {
    /// The element as written.
    pub text: String,
    /// The 1-based line in the configuration file, 0 when unknown.
    pub line: u32,
    /// The byte offset in the file, turned into `line` once the whole text is known.
    offset: usize,
}

/// `[policy]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Enforce or audit.
    #[serde(with = "de::ModeDef")]
    pub mode: Mode,
    /// Ports admitted by entries without a port of their own.
    #[serde(deserialize_with = "de::ports")]
    pub ports: Vec<u16>,
    /// Whether IP-literal destinations may be admitted by an IP entry.
    pub allow_ip_literals: bool,
    /// Networks exempt from the address-class rules.
    pub private_exceptions: Vec<IpNet>,
    /// How a denied TLS connection ends.
    #[serde(with = "de::TlsDenyDef")]
    pub tls_deny: TlsDeny,
    /// What to do with Encrypted Client Hello.
    #[serde(with = "de::EchPolicyDef")]
    pub ech: EchPolicy,
    /// Whether a ClientHello at the start of a CONNECT tunnel must name an allowed host too.
    pub inspect_tunnels: bool,
}

/// `[resolver]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Static answers checked before the system resolver; an empty list means NXDOMAIN.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The most client connections served at once.
    #[serde(deserialize_with = "de::nonzero_count")]
    pub max_connections: usize,
    /// The largest request or response head.
    #[serde(deserialize_with = "de::header_bytes")]
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head.
    #[serde(deserialize_with = "de::nonzero_duration")]
    pub header_timeout: Duration,
    /// How long to wait for DNS, and for each connect attempt.
    #[serde(deserialize_with = "de::nonzero_duration")]
    pub connect_timeout: Duration,
    /// How long a connection may see no traffic either way.
    #[serde(deserialize_with = "de::nonzero_duration")]
    pub idle_timeout: Duration,
    /// TCP keepalive idle time on both connections of a session; `"0s"` turns it off.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// How long open sessions may take to finish after SIGTERM.
    #[serde(deserialize_with = "de::nonzero_duration")]
    pub drain_timeout: Duration,
    /// How long SIGTERM keeps accepting after `/readyz` turns 503, so that a load balancer
    /// marks the target unhealthy before its connections are refused.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The line format.
    pub format: LogFormat,
    /// Where lines go: a file, appended to, or `-` for stdout.
    pub path: PathBuf,
    /// `[log.cloudwatch]`: ship the same lines to CloudWatch Logs; `None` (absent) is off.
    pub cloudwatch: Option<CloudWatchConfig>,
}

/// `[log.cloudwatch]`: where and how access-log lines are shipped to CloudWatch Logs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// The log group, created when missing.
    #[serde(deserialize_with = "de::log_group")]
    pub group: String,
    /// The log stream's name template: `{hostname}` and `{instance_id}` are filled in.
    #[serde(deserialize_with = "de::log_stream")]
    pub stream: String,
    /// The group's retention, set at start; 0 leaves the group's retention as it is.
    #[serde(deserialize_with = "de::retention_days")]
    pub retention_days: u32,
    /// The service endpoint, for an emulator; `None` (or empty) means the region's.
    #[serde(deserialize_with = "de::optional_text")]
    pub endpoint: Option<String>,
    /// The region; `None` (or empty) means the standard chain's (environment, profile, IMDS).
    #[serde(deserialize_with = "de::optional_text")]
    pub region: Option<String>,
    /// The CloudWatch namespace of the embedded metrics.
    #[serde(deserialize_with = "de::metric_namespace")]
    pub metric_namespace: String,
    /// How many lines may wait to be shipped; more are dropped and counted.
    #[serde(deserialize_with = "de::nonzero_count")]
    pub queue_events: usize,
}

/// The access-log line formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Squid's native `logformat squid`.
    #[default]
    Squid,
    /// One JSON object per line.
    Json,
}

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output.
    Stdout,
    /// A file, opened for appending.
    File(PathBuf),
}

/// What the command line changes in or adds to the file's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Allowlist entries added to the file's (each one entry or a comma/whitespace separated
    /// list); problems with them are reported with the source `--allow`.
    pub allow: Vec<String>,
    /// Replaces `[listen] explicit` when not empty.
    pub listen: Vec<SocketAddr>,
    /// Replaces `runtime`.
    pub runtime: Option<Runtime>,
    /// Replaces `threads`.
    pub threads: Option<usize>,
}

/// Where the configuration comes from: an optional file plus command-line overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file, or `None` for the defaults.
    pub path: Option<PathBuf>,
    /// The command-line overrides.
    pub overrides: Overrides,
}

/// A problem with the configuration, located as precisely as possible.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type or range.
    Syntax {
        /// The file.
        path: PathBuf,
        /// The 1-based line, 0 when unknown.
        line: usize,
        /// The 1-based column, 0 when unknown.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parsed but does not make sense with the rest.
    Invalid {
        /// The file, or `None` when the value came from defaults and flags.
        path: Option<PathBuf>,
        /// The key, as `[section] key`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses a configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map_or((0, 0), |span| de::line_and_column(text, span.start));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: error.message().trim().replace('\n', "; "),
            }
        })?;
        for item in &mut config.allowlist.domains {
            let (line, _) = de::line_and_column(text, item.offset);
            item.line = u32::try_from(line).unwrap_or(u32::MAX);
        }
        let base = path.parent().unwrap_or(Path::new(""));
        for file in &mut config.allowlist.files {
            *file = base.join(&*file);
        }
        if config.log.path != Path::new("-") {
            config.log.path = base.join(&config.log.path);
        }
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// Checks what parsing cannot check alone; `path` names the file in the problems.
    pub fn validate(&self, path: Option<&Path>) -> Result<(), Vec<ConfigError>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigError::Invalid {
                path: path.map(Path::to_owned),
                key: key.to_owned(),
                message,
            });
        };
        let listeners = self.listeners();
        if listeners.is_empty() {
            problem("[listen]", "at least one listener is needed".to_owned());
        }
        for (index, spec) in listeners.iter().enumerate() {
            if listeners[..index]
                .iter()
                .any(|other| other.addr == spec.addr)
            {
                let key = format!("[listen] {}", spec.kind.as_str());
                problem(&key, format!("{} is listed twice", spec.addr));
            }
        }
        for name in self.resolver.hosts.keys() {
            if let Err(error) = egret_core::host::Host::parse(name.as_bytes()) {
                problem(
                    "[resolver] hosts",
                    format!("'{name}' is not a valid host name ({error})"),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Returns whether connections start with a PROXY protocol header.
    #[must_use]
    pub fn proxy_protocol(&self) -> ProxyProtocol {
        self.listen.proxy_protocol
    }

    /// Returns the listeners to bind.
    #[must_use]
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        let kinds = [
            (&self.listen.explicit, ListenerKind::Explicit),
            (&self.listen.transparent_http, ListenerKind::TransparentHttp),
            (&self.listen.transparent_tls, ListenerKind::TransparentTls),
        ];
        kinds
            .into_iter()
            .flat_map(|(addrs, kind)| addrs.iter().map(move |&addr| ListenerSpec { addr, kind }))
            .collect()
    }

    /// Returns the core's limits (the linger timeout keeps its default).
    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.limits.max_header_bytes,
            header_timeout: self.limits.header_timeout,
            connect_timeout: self.limits.connect_timeout,
            idle_timeout: self.limits.idle_timeout,
            ..Limits::default()
        }
    }

    /// Returns the TCP keepalive time, or `None` when it is off.
    #[must_use]
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        Some(self.limits.tcp_keepalive).filter(|t| !t.is_zero())
    }

    /// Returns the policy settings that go with the allowlist.
    #[must_use]
    pub fn policy_settings(&self) -> PolicySettings {
        let policy = &self.policy;
        PolicySettings {
            mode: policy.mode,
            ports: policy.ports.clone(),
            allow_ip_literals: policy.allow_ip_literals,
            private_exceptions: policy.private_exceptions.clone(),
            tls_deny: policy.tls_deny,
            ech: policy.ech,
            inspect_tunnels: policy.inspect_tunnels,
            own_ports: self.own_ports(),
        }
    }

    /// Returns the ports the gateway itself listens on: the proxy never connects to them at a
    /// non-public address (its own admin endpoint, or a loop into itself).
    #[must_use]
    pub fn own_ports(&self) -> Vec<u16> {
        let listeners = self.listeners().into_iter().map(|spec| spec.addr.port());
        let mut ports: Vec<u16> = listeners
            .chain(self.listen.admin.map(|a| a.port()))
            .collect();
        ports.retain(|&port| port != 0);
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Returns the resolver's static answers.
    #[must_use]
    pub fn resolver_hosts(&self) -> HashMap<String, Vec<IpAddr>> {
        let hosts = self.resolver.hosts.iter();
        hosts
            .map(|(name, ips)| (name.clone(), ips.clone()))
            .collect()
    }

    /// Returns where access-log lines go.
    #[must_use]
    pub fn log_target(&self) -> LogTarget {
        if self.log.path == Path::new("-") {
            LogTarget::Stdout
        } else {
            LogTarget::File(self.log.path.clone())
        }
    }

    /// Returns the sections that differ from `other` and take effect only on a restart:
    /// everything but `[allowlist]` and `[policy]`.
    #[must_use]
    pub fn restart_sections_changed(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.runtime != other.runtime || self.threads != other.threads {
            changed.push("runtime/threads");
        }
        if self.listen != other.listen {
            changed.push("[listen]");
        }
        if self.resolver != other.resolver {
            changed.push("[resolver]");
        }
        if self.limits != other.limits {
            changed.push("[limits]");
        }
        if self.log != other.log {
            changed.push("[log]");
        }
        changed
    }
}

impl ListItem {
    /// Returns an item that is not located in a file.
    #[must_use]
    pub fn new(text: &str) -> ListItem {
        ListItem {
            text: text.to_owned(),
            line: 0,
            offset: 0,
        }
    }
}

impl Overrides {
    /// Applies the overrides to a configuration; `allow` is added when the allowlist is built.
    pub fn apply(&self, config: &mut Config) {
        if !self.listen.is_empty() {
            config.listen.explicit.clone_from(&self.listen);
        }
        if let Some(runtime) = self.runtime {
            config.runtime = runtime;
        }
        if let Some(threads) = self.threads {
            config.threads = threads;
        }
    }
}

impl ConfigSource {
    /// Returns the effective configuration: the file (or the defaults), the overrides applied,
    /// validated.
    pub fn load(&self) -> Result<Config, Vec<ConfigError>> {
        let config = self.read().map_err(|e| vec![e])?;
        config.validate(self.path.as_deref())?;
        Ok(config)
    }

    /// Returns the file's configuration (or the defaults) with the overrides applied, not yet
    /// validated.
    pub fn read(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.path {
            Some(path) => Config::read(path)?,
            None => Config::default(),
        };
        self.overrides.apply(&mut config);
        Ok(config)
    }

    /// Returns how the configuration file is named in messages about it.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => "(defaults)".to_owned(),
        }
    }
}

impl Runtime {
    /// Returns the name used in the configuration and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Mio => "mio",
            Runtime::Glommio => "glommio",
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            explicit: vec![SocketAddr::from(([127, 0, 0, 1], 3128))],
            transparent_http: Vec::new(),
            transparent_tls: Vec::new(),
            proxy_protocol: ProxyProtocol::Off,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        }
    }
}

impl Default for AllowlistConfig {
    fn default() -> Self {
        AllowlistConfig {
            domains: Vec::new(),
            files: Vec::new(),
            reload_interval: Duration::from_secs(60),
            ssm_parameter: None,
            ssm_region: None,
            ssm_endpoint: None,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let settings = PolicySettings::default();
        PolicyConfig {
            mode: settings.mode,
            ports: settings.ports,
            allow_ip_literals: settings.allow_ip_literals,
            private_exceptions: settings.private_exceptions,
            tls_deny: settings.tls_deny,
            ech: settings.ech,
            inspect_tunnels: settings.inspect_tunnels,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        LimitsConfig {
            max_connections: 10_000,
            max_header_bytes: limits.max_header_bytes,
            header_timeout: limits.header_timeout,
            connect_timeout: limits.connect_timeout,
            idle_timeout: limits.idle_timeout,
            tcp_keepalive: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            drain_grace: Duration::ZERO,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Squid,
            path: PathBuf::from("-"),
            cloudwatch: None,
        }
    }
}

impl Default for CloudWatchConfig {
    fn default() -> Self {
        CloudWatchConfig {
            group: "/egret/access".to_owned(),
            stream: "{hostname}".to_owned(),
            retention_days: 7,
            endpoint: None,
            region: None,
            metric_namespace: "Egret".to_owned(),
            queue_events: 100_000,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "{}: cannot read the file: {error}", path.display())
            }
            ConfigError::Syntax {
                path,
                line: 0,
                message,
                ..
            } => write!(f, "{}: {message}", path.display()),
            ConfigError::Syntax {
                path,
                line,
                column,
                message,
            } => write!(f, "{}:{line}:{column}: {message}", path.display()),
            ConfigError::Invalid {
                path: Some(path),
                key,
                message,
            } => write!(f, "{}: {key}: {message}", path.display()),
            ConfigError::Invalid {
                path: None,
                key,
                message,
            } => write!(f, "{key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests;
