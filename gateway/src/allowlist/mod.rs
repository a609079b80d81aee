//! Builds the [`Policy`] from the configuration, the list files, the SSM parameter and
//! `--allow`, and keeps it current: a [`Reloader`] re-reads them every `reload_interval` and
//! on SIGHUP, and publishes a new policy only when the whole list is valid.
//!
//! Only `[allowlist]` and `[policy]` take effect on a reload; a change anywhere else is
//! reported as needing a restart.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use egret_core::policy::{AllowlistBuilder, ListProblem, Policy, PolicySettings, PolicyStore};

use crate::admin::ReloadStats;
use crate::config::{Config, ConfigError, ConfigSource};
use crate::periodic::{Periodic, Wake};

mod ssm;

pub use ssm::Remote;

/// The source name that problems with `--allow` entries carry.
pub const ALLOW_FLAG: &str = "--allow";

/// At most this many added or removed entries are named in a reload message.
const NAMED_IN_LOG: usize = 10;

/// A problem that keeps a policy from being built.
#[derive(Debug)]
pub enum LoadError {
    /// The configuration is unreadable or invalid.
    Config(ConfigError),
    /// A list file could not be read.
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The SSM parameter could not be read.
    Ssm {
        /// The parameter's name.
        parameter: String,
        /// Why.
        error: String,
    },
    /// An entry is invalid.
    Entry(ListProblem),
}

/// A policy together with the warnings its entries raised.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled policy.
    pub policy: Policy,
    /// Entries that are valid but risky (shared public suffixes).
    pub warnings: Vec<ListProblem>,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The entries and settings are the same; nothing was published.
    Unchanged,
    /// A new policy was published.
    Published {
        /// The number of entries in the new list.
        entries: usize,
        /// Entries added, in canonical form.
        added: Vec<String>,
        /// Entries removed, in canonical form.
        removed: Vec<String>,
        /// The `[policy]` settings that changed, as `name: old -> new`.
        settings: Vec<String>,
    },
    /// Something was wrong; the last good policy stays. Holds every problem.
    Failed(Vec<String>),
}

/// Re-reads the configuration and the list files and publishes the policy they describe.
#[derive(Debug)]
pub struct Reloader {
    source: ConfigSource,
    running: Config,
    store: PolicyStore,
    interval: Duration,
    last_failure: Option<Vec<String>>,
    restart_warned: Vec<&'static str>,
    stats: Arc<ReloadStats>,
    remote: Remote,
}

/// Why a zero-byte list file is refused.
const EMPTY_FILE: &str = "it is empty (zero bytes), as a file being rewritten in place is \
    for a moment, so it is not taken as a list; to list nothing on purpose, leave a comment \
    line in it";

/// Loads the configuration and builds the policy it describes. Fails with every problem found:
/// an invalid configuration does not keep the allowlist from being checked too.
pub fn load(source: &ConfigSource) -> Result<(Config, Loaded), Vec<LoadError>> {
    load_with(source, &mut Remote::default())
}

/// Like [`load`], reading the SSM parameter (if any) through `remote`.
pub fn load_with(
    source: &ConfigSource,
    remote: &mut Remote,
) -> Result<(Config, Loaded), Vec<LoadError>> {
    let config = source.read().map_err(|e| vec![LoadError::Config(e)])?;
    let mut problems: Vec<LoadError> = match config.validate(source.path.as_deref()) {
        Ok(()) => Vec::new(),
        Err(invalid) => invalid.into_iter().map(LoadError::Config).collect(),
    };
    match build_policy(&config, source, remote) {
        Ok(loaded) if problems.is_empty() => Ok((config, loaded)),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Builds the policy of an already loaded configuration: its `domains`, its `files`, its SSM
/// parameter (read through `remote`) and the `--allow` entries of `source`. Fails with every
/// problem found.
pub fn build_policy(
    config: &Config,
    source: &ConfigSource,
    remote: &mut Remote,
) -> Result<Loaded, Vec<LoadError>> {
    let mut builder = AllowlistBuilder::new();
    let mut problems = Vec::new();
    let name = source.name();
    for item in &config.allowlist.domains {
        add_list(&mut builder, &item.text, &name, item.line);
    }
    for path in &config.allowlist.files {
        match std::fs::read_to_string(path) {
            // `echo ... > list` truncates before it writes: a reload in between must not
            // publish an empty list (every destination denied) for a moment.
            Ok(text) if text.is_empty() => problems.push(LoadError::File {
                path: path.clone(),
                error: std::io::Error::new(std::io::ErrorKind::InvalidData, EMPTY_FILE),
            }),
            Ok(text) => builder.add_text(&text, &path.display().to_string()),
            Err(error) => problems.push(LoadError::File {
                path: path.clone(),
                error,
            }),
        }
    }
    match remote.fetch(&config.allowlist) {
        Ok(Some(text)) => {
            let name = config
                .allowlist
                .ssm_parameter
                .as_deref()
                .unwrap_or_default();
            builder.add_text(&text, &format!("ssm:{name}"));
        }
        Ok(None) => {}
        Err(error) => problems.push(LoadError::Ssm {
            parameter: config.allowlist.ssm_parameter.clone().unwrap_or_default(),
            error,
        }),
    }
    for list in &source.overrides.allow {
        add_list(&mut builder, list, ALLOW_FLAG, 0);
    }
    match builder.build() {
        Ok((allowlist, warnings)) if problems.is_empty() => Ok(Loaded {
            policy: Policy::new(allowlist, config.policy_settings()),
            warnings,
        }),
        Ok(_) => Err(problems),
        Err(entries) => {
            problems.extend(entries.into_iter().map(LoadError::Entry));
            Err(problems)
        }
    }
}

impl Reloader {
    /// Returns a reloader for `source`; `running` is the configuration the gateway started
    /// with, `store` is where new policies are published, and `remote` reads the SSM
    /// parameter (the one the first load used, to keep its client).
    #[must_use]
    pub fn new(
        source: ConfigSource,
        running: Config,
        store: PolicyStore,
        remote: Remote,
    ) -> Reloader {
        let interval = running.allowlist.reload_interval;
        let stats = Arc::new(ReloadStats::default());
        stats
            .entries
            .store(store.load().allowlist().len() as u64, Ordering::Relaxed);
        Reloader {
            source,
            running,
            store,
            interval,
            last_failure: None,
            restart_warned: Vec::new(),
            stats,
            remote,
        }
    }

    /// Returns the reload counters the admin endpoint reports.
    #[must_use]
    pub fn stats(&self) -> Arc<ReloadStats> {
        self.stats.clone()
    }

    /// Reloads at once, as SIGHUP does, and logs the outcome even when nothing changed.
    pub fn reload_now(&mut self) -> Reload {
        self.reload(Wake::Poked)
    }

    /// Reloads. A timed reload logs only what changed, and a failure only when its problems
    /// differ from the last one's.
    pub fn reload(&mut self, wake: Wake) -> Reload {
        let asked = wake == Wake::Poked;
        let (config, loaded) = match load_with(&self.source, &mut self.remote) {
            Ok(loaded) => loaded,
            Err(problems) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                if asked || self.last_failure.as_ref() != Some(&problems) {
                    tracing::error!(
                        "allowlist reload failed with {} problem(s); keeping the last good list",
                        problems.len()
                    );
                    for problem in &problems {
                        tracing::error!("{problem}");
                    }
                }
                self.last_failure = Some(problems.clone());
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return Reload::Failed(problems);
            }
        };
        let recovered = self.last_failure.take().is_some();
        self.stats.ok.fetch_add(1, Ordering::Relaxed);
        self.stats
            .entries
            .store(loaded.policy.allowlist().len() as u64, Ordering::Relaxed);
        self.interval = config.allowlist.reload_interval;
        let restart = config.restart_sections_changed(&self.running);
        if !restart.is_empty() && (asked || restart != self.restart_warned) {
            tracing::warn!(
                "changes to {} in {} take effect only after a restart",
                restart.join(", "),
                self.source.name()
            );
        }
        self.restart_warned = restart;
        let current = self.store.load();
        let new = &loaded.policy;
        let (added, removed) = new.allowlist().diff(current.allowlist());
        let added: Vec<String> = added.iter().map(ToString::to_string).collect();
        let removed: Vec<String> = removed.iter().map(ToString::to_string).collect();
        let settings = settings_changes(current.settings(), new.settings());
        let entries = new.allowlist().len();
        if added.is_empty() && removed.is_empty() && settings.is_empty() {
            if asked || recovered {
                tracing::info!("allowlist reloaded: {entries} entries, unchanged");
            }
            return Reload::Unchanged;
        }
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(
                "allowlist reloaded: {}",
                describe_diff(entries, &added, &removed)
            );
        }
        if !settings.is_empty() {
            tracing::info!("policy settings reloaded: {}", settings.join(", "));
        }
        if entries == 0 {
            tracing::warn!("the allowlist is empty: every destination will be denied");
        }
        self.store.publish(loaded.policy);
        Reload::Published {
            entries,
            added,
            removed,
            settings,
        }
    }

    /// Returns the interval until the next timed reload.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Runs the reloader on its own thread; poke the returned thread to reload at once, stop
    /// it to end the thread.
    pub fn spawn(mut self) -> io::Result<Periodic> {
        Periodic::spawn("egret-reload", self.interval, move |wake| {
            self.reload(wake);
            self.interval
        })
    }
}

/// Returns `N entries (+a -r): added x, y; removed z`.
#[must_use]
pub fn describe_diff(entries: usize, added: &[String], removed: &[String]) -> String {
    let mut text = format!("{entries} entries (+{} -{})", added.len(), removed.len());
    let mut sep = ": ";
    for (verb, names) in [("added", added), ("removed", removed)] {
        if names.is_empty() {
            continue;
        }
        let shown = names[..names.len().min(NAMED_IN_LOG)].join(", ");
        text.push_str(&format!("{sep}{verb} {shown}"));
        if names.len() > NAMED_IN_LOG {
            text.push_str(&format!(" and {} more", names.len() - NAMED_IN_LOG));
        }
        sep = "; ";
    }
    text
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(error) => error.fmt(f),
            LoadError::File { path, error } => {
                write!(f, "{}: cannot read the list file: {error}", path.display())
            }
            LoadError::Ssm { parameter, error } => {
                write!(f, "SSM parameter {parameter}: cannot read it: {error}")
            }
            LoadError::Entry(problem) => problem.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

/// Adds each entry of a comma/whitespace separated list, all located at `line`.
fn add_list(builder: &mut AllowlistBuilder, list: &str, source: &str, line: u32) {
    builder.add_entry(list, source, line);
}

/// Returns `name: old -> new` for every setting that differs.
fn settings_changes(old: &PolicySettings, new: &PolicySettings) -> Vec<String> {
    let mut changes = Vec::new();
    let mut compare = |name: &str, old: String, new: String| {
        if old != new {
            changes.push(format!("{name}: {old} -> {new}"));
        }
    };
    compare(
        "mode",
        old.mode.as_str().to_owned(),
        new.mode.as_str().to_owned(),
    );
    compare(
        "ports",
        format!("{:?}", old.ports),
        format!("{:?}", new.ports),
    );
    compare(
        "allow_ip_literals",
        old.allow_ip_literals.to_string(),
        new.allow_ip_literals.to_string(),
    );
    compare(
        "private_exceptions",
        format!("{:?}", old.private_exceptions),
        format!("{:?}", new.private_exceptions),
    );
    compare(
        "tls_deny",
        old.tls_deny.as_str().to_owned(),
        new.tls_deny.as_str().to_owned(),
    );
    compare(
        "ech",
        old.ech.as_str().to_owned(),
        new.ech.as_str().to_owned(),
    );
    compare(
        "inspect_tunnels",
        old.inspect_tunnels.to_string(),
        new.inspect_tunnels.to_string(),
    );
    changes
}

#[cfg(test)]
mod tests;
