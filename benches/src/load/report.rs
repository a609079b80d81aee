//! The harness's results: one row per workload and target, the markdown table, and the issue's
//! targets checked against the rows.

use std::fmt::Write as _;
use std::time::Duration;

/// The workloads, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// 1. HTTP/1.1 keep-alive GETs of a 1 KiB body through the explicit proxy.
    KeepAlive,
    /// 2. A new connection per iteration: CONNECT, 200, the hello, a 1 KiB reply, close.
    ConnectTunnel,
    /// 3. The same through the transparent-TLS listener, in the namespace world.
    TransparentTls,
    /// 4a. Bulk download through one tunnel.
    BulkOne,
    /// 4b. Bulk download through eight tunnels at once.
    BulkEight,
    /// 5. Idle tunnels held open.
    IdleTunnels,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 6] = [
        Workload::KeepAlive,
        Workload::ConnectTunnel,
        Workload::TransparentTls,
        Workload::BulkOne,
        Workload::BulkEight,
        Workload::IdleTunnels,
    ];

    /// Returns the short name used in the table.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Workload::KeepAlive => "1 keep-alive GET",
            Workload::ConnectTunnel => "2 CONNECT tunnel",
            Workload::TransparentTls => "3 transparent TLS",
            Workload::BulkOne => "4a bulk, 1 tunnel",
            Workload::BulkEight => "4b bulk, 8 tunnels",
            Workload::IdleTunnels => "5 idle tunnels",
        }
    }

    fn is_bulk(self) -> bool {
        matches!(self, Workload::BulkOne | Workload::BulkEight)
    }

    fn is_idle(self) -> bool {
        matches!(self, Workload::IdleTunnels)
    }
}

/// What the client goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No proxy: the client talks to the origin.
    Direct,
    /// `egret run --runtime NAME`.
    Egret(String),
    /// Squid as an explicit proxy.
    Squid,
    /// HAProxy routing on the ClientHello's SNI.
    Haproxy,
}

impl Target {
    /// Returns whether this is one of the peers Egret is compared with.
    #[must_use]
    pub fn is_peer(&self) -> bool {
        matches!(self, Target::Squid | Target::Haproxy)
    }

    /// Returns the name used in the table.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Target::Direct => "direct".to_owned(),
            Target::Egret(runtime) => format!("egret {runtime}"),
            Target::Squid => "squid".to_owned(),
            Target::Haproxy => "haproxy".to_owned(),
        }
    }
}

/// What a workload measured against one target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// Operations completed.
    pub ops: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// How long the measured phase took.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th-percentile latency.
    pub p99: Option<Duration>,
    /// The proxy's CPU time (user + system) over the measured phase.
    pub cpu: Option<Duration>,
    /// The system (kernel) part of `cpu`.
    pub cpu_system: Option<Duration>,
    /// The proxy's peak resident set (VmHWM) at the end, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Idle tunnels: resident-set growth per open tunnel, KiB.
    pub kib_per_tunnel: Option<f64>,
}

impl Measured {
    /// Returns operations per second, or MiB/s for the bulk workloads.
    #[must_use]
    pub fn rate(&self, workload: Workload) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        if workload.is_bulk() {
            self.bytes as f64 / (1024.0 * 1024.0) / secs
        } else {
            self.ops as f64 / secs
        }
    }

    /// Returns the proxy's CPU per operation, µs.
    #[must_use]
    pub fn cpu_us_per_op(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.ops > 0).then(|| cpu.as_secs_f64() * 1e6 / self.ops as f64)
    }

    /// Returns the proxy's CPU-seconds per GB (10^9 bytes) received.
    #[must_use]
    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.bytes > 0).then(|| cpu.as_secs_f64() / (self.bytes as f64 / 1e9))
    }

    /// Returns the row's headline figure: the rate, or KiB per tunnel for idle tunnels.
    fn primary(&self, workload: Workload) -> Option<f64> {
        if workload.is_idle() {
            self.kib_per_tunnel
        } else {
            Some(self.rate(workload))
        }
    }
}

/// How a row ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// It ran; the figures.
    Ran(Measured),
    /// It was not run; why.
    Skipped(String),
    /// It could not run or nothing succeeded; why.
    Failed(String),
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// The target.
    pub target: Target,
    /// The outcome.
    pub status: Status,
}

impl Row {
    /// Returns the figures when the row ran.
    #[must_use]
    pub fn measured(&self) -> Option<&Measured> {
        match &self.status {
            Status::Ran(m) => Some(m),
            Status::Skipped(_) | Status::Failed(_) => None,
        }
    }
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Every row, in the order run.
    pub rows: Vec<Row>,
    /// (what, value) describing the machine.
    pub machine: Vec<(String, String)>,
    /// (what, value) describing the run: sizes, budgets, versions.
    pub settings: Vec<(String, String)>,
    /// What the proxies logged at WARN or ERROR level, each line prefixed with its row.
    pub notes: Vec<String>,
}

impl Report {
    /// Returns the row of `workload` and `target`.
    #[must_use]
    pub fn row(&self, workload: Workload, target: &Target) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && &r.target == target)
    }

    /// Returns the figures of `workload` and `target` when that row ran.
    #[must_use]
    pub fn measured(&self, workload: Workload, target: &Target) -> Option<&Measured> {
        self.row(workload, target).and_then(Row::measured)
    }

    /// Returns the report as markdown: the machine, the settings, the table and the targets.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("Machine:\n\n");
        for (key, value) in &self.machine {
            let _ = writeln!(out, "- {key}: {value}");
        }
        out.push_str("\nRun:\n\n");
        for (key, value) in &self.settings {
            let _ = writeln!(out, "- {key}: {value}");
        }
        out.push('\n');
        out.push_str(&self.table());
        if !self.notes.is_empty() {
            out.push_str("\nWarnings and errors the proxies logged:\n\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {}", cell(note));
            }
        }
        out.push('\n');
        out.push_str(&self.targets_table());
        out
    }

    /// Returns the results table.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| workload | target | rate | p50 | p99 | proxy CPU | peak RSS | RSS/tunnel | \
             vs direct | vs best peer | ops | errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for workload in Workload::ALL {
            for row in self.rows.iter().filter(|r| r.workload == workload) {
                out.push_str(&self.line(row));
                out.push('\n');
            }
        }
        out
    }

    fn line(&self, row: &Row) -> String {
        let w = row.workload;
        let head = format!("| {} | {} |", w.label(), row.target.label());
        let m = match &row.status {
            Status::Ran(m) => m,
            Status::Skipped(why) => {
                return format!("{head} not run: {} |{}", cell(why), " – |".repeat(9));
            }
            Status::Failed(why) => {
                return format!("{head} FAILED: {} |{}", cell(why), " – |".repeat(9));
            }
        };
        let rate = m.rate(w);
        let rate = if w.is_bulk() {
            format!("{} MiB/s", group(rate))
        } else if w.is_idle() {
            format!("{} opened/s", group(rate))
        } else {
            format!("{}/s", group(rate))
        };
        let cpu = if w.is_bulk() {
            m.cpu_s_per_gb().map(|c| format!("{c:.3} CPU-s/GB"))
        } else {
            m.cpu_us_per_op().map(|c| format!("{c:.1} µs/op"))
        };
        let system = m.cpu.zip(m.cpu_system).and_then(|(all, system)| {
            (!all.is_zero()).then(|| system.as_secs_f64() / all.as_secs_f64() * 100.0)
        });
        let cpu = match (cpu, system) {
            (Some(cpu), Some(system)) => Some(format!("{cpu} ({system:.0}% sys)")),
            (cpu, _) => cpu,
        };
        let peak = m
            .peak_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0));
        let per_tunnel = m.kib_per_tunnel.map(|k| format!("{k:.2} KiB"));
        let errors = match (&m.first_error, m.errors) {
            (Some(first), n) if n > 0 => format!("{n} (first: {})", cell(first)),
            (_, n) => n.to_string(),
        };
        format!(
            "{head} {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |",
            dash(m.p50.map(latency)),
            dash(m.p99.map(latency)),
            dash(cpu),
            dash(peak),
            dash(per_tunnel),
            dash(self.vs_direct(row).map(ratio)),
            dash(self.vs_best_peer(row).map(ratio)),
            group_int(m.ops),
        )
    }

    /// Returns the row's headline figure divided by the direct baseline's (rates only).
    #[must_use]
    pub fn vs_direct(&self, row: &Row) -> Option<f64> {
        if row.workload.is_idle() || row.target == Target::Direct {
            return None;
        }
        let mine = row.measured()?.primary(row.workload)?;
        let direct = self
            .measured(row.workload, &Target::Direct)?
            .primary(row.workload)?;
        (direct > 0.0).then(|| mine / direct)
    }

    /// Returns the row's headline figure divided by the best peer's (the highest rate, or the
    /// least memory per idle tunnel).
    #[must_use]
    pub fn vs_best_peer(&self, row: &Row) -> Option<f64> {
        let mine = row.measured()?.primary(row.workload)?;
        let best = self.best_peer(row.workload)?;
        (best > 0.0).then(|| mine / best)
    }

    fn best_peer(&self, workload: Workload) -> Option<f64> {
        let figures = self
            .rows
            .iter()
            .filter(|r| r.workload == workload && r.target.is_peer())
            .filter_map(|r| r.measured()?.primary(workload));
        if workload.is_idle() {
            figures.reduce(f64::min)
        } else {
            figures.reduce(f64::max)
        }
    }

    /// Returns the targets against each Egret runtime's rows, as a markdown table.
    #[must_use]
    pub fn targets_table(&self) -> String {
        let runtimes: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| match &r.target {
                Target::Egret(rt) => Some(rt.clone()),
                Target::Direct | Target::Squid | Target::Haproxy => None,
            })
            .fold(Vec::new(), |mut seen, rt| {
                if !seen.contains(&rt) {
                    seen.push(rt);
                }
                seen
            });
        let mut out = String::from("| target |");
        for rt in &runtimes {
            let _ = write!(out, " egret {rt} |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(runtimes.len()));
        out.push('\n');
        for (name, check) in TARGETS {
            let _ = write!(out, "| {name} |");
            for rt in &runtimes {
                let _ = write!(out, " {} |", check(self, &Target::Egret(rt.clone())));
            }
            out.push('\n');
        }
        out
    }
}

type Check = fn(&Report, &Target) -> String;

/// The targets, each with its check against an Egret row set.
const TARGETS: [(&str, Check); 5] = [
    (
        "HTTP keep-alive ≥ 3× Squid req/s, ≤ 10 µs CPU/request",
        check_keep_alive,
    ),
    (
        "new CONNECT tunnel ≥ 1.4× Squid, ≤ 40 µs CPU/connection",
        check_connect,
    ),
    (
        "transparent TLS ≥ HAProxy's rate at ≤ ½ its CPU/connection",
        check_transparent,
    ),
    ("bulk (1 tunnel) ≥ 0.6× direct, ≤ 0.2 CPU-s/GB", check_bulk),
    ("idle tunnels ≤ 4 KiB RSS per tunnel", check_idle),
];

fn check_keep_alive(report: &Report, egret: &Target) -> String {
    rate_and_cpu(
        report,
        egret,
        Workload::KeepAlive,
        &Target::Squid,
        3.0,
        10.0,
    )
}

fn check_connect(report: &Report, egret: &Target) -> String {
    rate_and_cpu(
        report,
        egret,
        Workload::ConnectTunnel,
        &Target::Squid,
        1.4,
        40.0,
    )
}

/// "≥ `times`× the peer's rate and ≤ `max_us` µs of CPU per operation".
fn rate_and_cpu(
    report: &Report,
    egret: &Target,
    workload: Workload,
    peer: &Target,
    times: f64,
    max_us: f64,
) -> String {
    let Some(mine) = report.measured(workload, egret) else {
        return "not measured".to_owned();
    };
    let cpu = mine.cpu_us_per_op();
    let cpu_ok = cpu.is_some_and(|c| c <= max_us);
    let cpu_text = cpu.map_or_else(|| "CPU unknown".to_owned(), |c| format!("{c:.1} µs"));
    let Some(theirs) = report.measured(workload, peer) else {
        return format!("{cpu_text}; no {} figure: {}", peer.label(), verdict(None));
    };
    let times_peer = mine.rate(workload) / theirs.rate(workload).max(f64::MIN_POSITIVE);
    format!(
        "{times_peer:.2}× {}, {cpu_text}: {}",
        peer.label(),
        verdict(Some(times_peer >= times && cpu_ok))
    )
}

fn check_transparent(report: &Report, egret: &Target) -> String {
    let workload = Workload::TransparentTls;
    let Some(mine) = report.measured(workload, egret) else {
        return "not measured".to_owned();
    };
    let Some(theirs) = report.measured(workload, &Target::Haproxy) else {
        return format!("no HAProxy figure: {}", verdict(None));
    };
    let rate = mine.rate(workload) / theirs.rate(workload).max(f64::MIN_POSITIVE);
    let cpu = mine.cpu_us_per_op().zip(theirs.cpu_us_per_op());
    let cpu_text = cpu.map_or_else(
        || "CPU unknown".to_owned(),
        |(m, t)| format!("{m:.1} vs {t:.1} µs ({:.2}×)", m / t.max(f64::MIN_POSITIVE)),
    );
    let met = cpu.map(|(m, t)| rate >= 1.0 && m <= t / 2.0);
    format!("{rate:.2}× rate, CPU {cpu_text}: {}", verdict(met))
}

fn check_bulk(report: &Report, egret: &Target) -> String {
    let workload = Workload::BulkOne;
    let Some(mine) = report.measured(workload, egret) else {
        return "not measured".to_owned();
    };
    let Some(row) = report.row(workload, egret) else {
        return "not measured".to_owned();
    };
    let cpu = mine.cpu_s_per_gb();
    let cpu_text = cpu.map_or_else(|| "CPU unknown".to_owned(), |c| format!("{c:.3} CPU-s/GB"));
    let Some(times) = report.vs_direct(row) else {
        return format!("{cpu_text}; no direct figure: {}", verdict(None));
    };
    format!(
        "{times:.2}× direct, {cpu_text}: {}",
        verdict(Some(times >= 0.6 && cpu.is_some_and(|c| c <= 0.2)))
    )
}

fn check_idle(report: &Report, egret: &Target) -> String {
    let Some(kib) = report
        .measured(Workload::IdleTunnels, egret)
        .and_then(|m| m.kib_per_tunnel)
    else {
        return "not measured".to_owned();
    };
    format!("{kib:.2} KiB: {}", verdict(Some(kib <= 4.0)))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "undecided",
    }
}

fn latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn ratio(r: f64) -> String {
    format!("{r:.2}×")
}

fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "–".to_owned())
}

/// Returns `n` rounded, with thousands separated by commas (one decimal under 100).
fn group(n: f64) -> String {
    if n < 100.0 {
        return format!("{n:.1}");
    }
    let digits = format!("{n:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Returns `n` with thousands separated by commas.
fn group_int(n: u64) -> String {
    if n < 1000 {
        n.to_string()
    } else {
        group(n as f64)
    }
}

/// Makes `text` safe for one table cell: one line, no pipes, at most 160 characters.
fn cell(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| match c {
            '|' => '/',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect();
    if flat.chars().count() > 160 {
        let cut: String = flat.chars().take(157).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(workload: Workload, target: Target, ops: u64, secs: u64, cpu_ms: u64) -> Row {
        Row {
            workload,
            target,
            status: Status::Ran(Measured {
                ops,
                bytes: ops * 1024,
                elapsed: Duration::from_secs(secs),
                cpu: Some(Duration::from_millis(cpu_ms)),
                ..Measured::default()
            }),
        }
    }

    #[test]
    fn ratios_compare_with_direct_and_the_best_peer() {
        let w = Workload::KeepAlive;
        let report = Report {
            rows: vec![
                ran(w, Target::Direct, 1000, 1, 0),
                ran(w, Target::Egret("tokio".into()), 500, 1, 5),
                ran(w, Target::Squid, 100, 1, 50),
            ],
            ..Report::default()
        };
        let egret = &report.rows[1];
        assert_eq!(report.vs_direct(egret), Some(0.5));
        assert_eq!(report.vs_best_peer(egret), Some(5.0));
        let targets = report.targets_table();
        assert!(
            targets.contains("5.00× squid, 10.0 µs: **met**"),
            "{targets}"
        );
        let table = report.table();
        assert!(
            table.contains("| 1 keep-alive GET | egret tokio | 500/s |"),
            "{table}"
        );
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(1_234_567.4), "1,234,567");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(12.34), "12.3");
    }
}
