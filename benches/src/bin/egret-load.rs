//! `egret-load`: runs the load harness (see `egret_benches::load` and BENCHMARKS.md) and
//! prints its markdown report.
//!
//! ```sh
//! cargo build --release -p egret -p egret-benches
//! sudo target/release/egret-load --budget 20 --out load.md
//! ```
// The report on stdout and progress on stderr are this binary's output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use egret_benches::load::{self, Options, RUNTIMES};

/// Measures Egret's runtimes, Squid, HAProxy and a direct baseline under the same workloads.
#[derive(Debug, Parser)]
#[command(name = "egret-load")]
struct Args {
    /// The egret binary to measure (build it with `cargo build --release -p egret`).
    #[arg(long, default_value = "target/release/egret")]
    egret: PathBuf,
    /// The Egret runtimes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = RUNTIMES.map(str::to_owned))]
    runtimes: Vec<String>,
    /// Worker threads for Egret (--threads) and HAProxy (nbthread); default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Worker threads of the load client (and, separately, of the origins).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Seconds each workload may run against each target.
    #[arg(long, default_value_t = 20.0)]
    budget: f64,
    /// Tiny sizes and no peers: a check that everything runs, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Leave out Squid and HAProxy.
    #[arg(long)]
    no_peers: bool,
    /// Leave out the transparent-TLS workload (the one that needs root).
    #[arg(long)]
    no_transparent: bool,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut options = if args.smoke {
        Options::smoke(&args.egret)
    } else {
        Options::new(&args.egret, Duration::from_secs_f64(args.budget.max(0.1)))
    };
    options.runtimes = args.runtimes;
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    if let Some(threads) = args.client_threads {
        options.client_threads = threads.max(1);
    }
    options.peers &= !args.no_peers;
    options.transparent &= !args.no_transparent;
    options.progress = |line| eprintln!("egret-load: {line}");
    let report = match load::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("egret-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = &args.out {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("egret-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
