//! The command line of DESIGN.md §4: `egret run`, `egret check` and `egret explain`.
//!
//! Exit codes: `run` and `check` exit 1 on a configuration or start-up error; `explain` exits
//! 0 when the destination is allowed, 1 when it is denied (or would be, in audit mode) and 2
//! on a usage or configuration error; clap exits 2 on a usage error for every command.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use egret_core::policy::Policy;

use crate::allowlist::{self, LoadError};
use crate::config::{Config, ConfigSource, Overrides, Runtime};
use crate::explain;
use crate::run;

/// Egret: an egress gateway that filters outbound HTTP and HTTPS by destination hostname.
#[derive(Debug, Parser)]
#[command(name = "egret", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the gateway until SIGTERM or SIGINT; SIGHUP reloads the allowlist.
    Run(RunArgs),
    /// Validates a configuration and prints the effective listeners and allowlist.
    Check(CheckArgs),
    /// Tells whether a destination is allowed, and which entry decided.
    Explain(ExplainArgs),
}

/// The arguments of `egret run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file; without one: explicit mode on 127.0.0.1:3128, an empty
    /// allowlist, the access log on stdout.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Allowlist entries to add, separated by commas or spaces; may be repeated.
    #[arg(long, value_name = "LIST")]
    pub allow: Vec<String>,
    /// An explicit-mode listener, replacing the file's listeners; may be repeated.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// The runtime that drives the sessions.
    #[arg(long, value_enum)]
    pub runtime: Option<Runtime>,
    /// Worker threads; 0 means one per CPU.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// The arguments of `egret check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// The arguments of `egret explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The configuration file; without one, the defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Allowlist entries to add, separated by commas or spaces; may be repeated.
    #[arg(long, value_name = "LIST")]
    pub allow: Vec<String>,
    /// The destination, `HOST[:PORT]`; the port defaults to 443.
    #[arg(value_name = "HOST[:PORT]")]
    pub target: String,
}

/// Parses the command line, runs the command and returns the exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(&args.source()),
        Command::Check(args) => check(&args),
        Command::Explain(args) => explain_command(&args),
    }
}

/// Runs `egret check`: prints the effective listeners and entries (and warnings) to stdout,
/// or every problem to stderr.
#[must_use]
pub fn check(args: &CheckArgs) -> ExitCode {
    let source = ConfigSource {
        path: Some(args.config.clone()),
        overrides: Overrides::default(),
    };
    let (config, loaded) = match allowlist::load(&source) {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(&problems);
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::stdout().lock();
    // The command's output: a failed write (a closed pipe) leaves nothing to report to.
    let _ = write_check(&mut out, &config, &loaded.policy, &loaded.warnings);
    ExitCode::SUCCESS
}

impl RunArgs {
    /// Returns where the configuration comes from.
    #[must_use]
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            path: self.config.clone(),
            overrides: Overrides {
                allow: self.allow.clone(),
                listen: self.listen.clone(),
                runtime: self.runtime,
                threads: self.threads,
            },
        }
    }
}

/// Writes what `check` prints: `listen KIND ADDR` and `allow ENTRY` lines, warnings, and a
/// summary.
pub fn write_check(
    out: &mut impl Write,
    config: &Config,
    policy: &Policy,
    warnings: &[egret_core::policy::ListProblem],
) -> io::Result<()> {
    let listeners = config.listeners();
    for spec in &listeners {
        writeln!(out, "listen {} {}", spec.kind.as_str(), spec.addr)?;
    }
    let entries = policy.allowlist().entries();
    for entry in entries {
        writeln!(out, "allow {entry}")?;
    }
    for warning in warnings {
        writeln!(out, "warning: {warning}")?;
    }
    if entries.is_empty() {
        writeln!(
            out,
            "warning: the allowlist is empty: every destination will be denied"
        )?;
    }
    let settings = policy.settings();
    writeln!(
        out,
        "ok: {} listener(s), {} allowlist entries, mode {}, ports {}",
        listeners.len(),
        entries.len(),
        explain::mode_name(settings.mode),
        explain::port_list(&settings.ports),
    )
}

fn explain_command(args: &ExplainArgs) -> ExitCode {
    let source = ConfigSource {
        path: args.config.clone(),
        overrides: Overrides {
            allow: args.allow.clone(),
            ..Overrides::default()
        },
    };
    let (config, loaded) = match allowlist::load(&source) {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(&problems);
            return ExitCode::from(2);
        }
    };
    let target = args.target.as_bytes();
    let (host, port) = match egret_core::host::parse_authority(target, Some(443)) {
        Ok(parsed) => parsed,
        Err(error) => {
            let mut err = io::stderr().lock();
            let _ = writeln!(
                err,
                "error: '{}' is not a valid HOST[:PORT]: {error}",
                args.target
            );
            return ExitCode::from(2);
        }
    };
    let resolver = egret_rt_common::Resolver::new(config.resolver_hosts());
    let explanation = explain::explain(&loaded.policy, &resolver, &host, port);
    let mut out = io::stdout().lock();
    for line in &explanation.lines {
        let _ = writeln!(out, "{line}");
    }
    if explanation.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints every problem to stderr, one per line.
fn report(problems: &[LoadError]) {
    let mut err = io::stderr().lock();
    for problem in problems {
        let _ = writeln!(err, "error: {problem}");
    }
}
