//! The coordinating process: starts the worker processes (this same executable, `worker`
//! subcommand), waits until every connection is set up, measures the server around the share
//! window or idle hold, prints a progress line every second, and merges the workers' results
//! into a [`Report`].
//!
//! The coordinator holds no connection itself, so its own file limit and memory stay out of
//! the figures. Workers are killed if the coordinator fails.

use crate::hist::Histogram;
use crate::procfs::{self, MachineTimes};
use crate::report::{
    kib, thousands, ConnectSection, HoldSection, LoadGenSection, Machine, Report, ServerSection,
    SharesSection, Sv1Section,
};
use crate::spec::{
    ConnSpec, DoneReport, Progress, ReadyReport, ShareSpec, WorkerEvent, WorkerSpec,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Everything one run needs, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `"shares"` or `"connect"`.
    pub(crate) mode: &'static str,
    /// The command line, for the report.
    pub(crate) command: String,
    /// Per-connection setup.
    pub(crate) conn: ConnSpec,
    /// Share submission (mode `shares`).
    pub(crate) shares: Option<ShareSpec>,
    /// Total connections.
    pub(crate) connections: u64,
    /// Worker processes.
    pub(crate) processes: usize,
    /// Tokio threads per worker.
    pub(crate) threads: usize,
    /// Source addresses (empty: kernel's choice).
    pub(crate) sources: Vec<Ipv4Addr>,
    /// Connection attempts in flight per worker.
    pub(crate) connect_in_flight: usize,
    /// Share window (mode `shares`) or idle hold (mode `connect`).
    pub(crate) window: Duration,
    /// Server process to measure.
    pub(crate) server_pid: Option<u32>,
    /// Probe the server until it answers, at most this long, before starting.
    pub(crate) wait_ready: Duration,
    /// Print a progress line every second on stderr.
    pub(crate) progress: bool,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Option<ReadyReport>,
    done: Option<DoneReport>,
    progress: Progress,
}

/// Kills and reaps every worker still running when dropped (error paths included).
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            w.stdin = None;
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
    }
}

impl Workers {
    fn tell(&mut self, line: &str) {
        for w in &mut self.0 {
            if let Some(stdin) = w.stdin.as_mut() {
                // A worker that died is reported through its closed stdout.
                let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
            }
        }
    }

    fn totals(&self) -> Progress {
        let mut t = Progress::default();
        for w in &self.0 {
            let p = &w.progress;
            t.established += p.established;
            t.failed += p.failed;
            t.closed += p.closed;
            t.sent += p.sent;
            t.acked += p.acked;
            t.rejected += p.rejected;
        }
        t
    }

    fn cpu_secs(&self, ticks: f64) -> f64 {
        self.0
            .iter()
            .filter_map(|w| procfs::cpu_secs(w.child.id(), ticks).ok())
            .sum()
    }

    fn peak_rss_kib(&self) -> u64 {
        self.0
            .iter()
            .filter_map(|w| procfs::memory(w.child.id()).ok())
            .map(|m| m.hwm_kib)
            .sum()
    }
}

type Events = mpsc::Receiver<(usize, Option<WorkerEvent>)>;

struct Run {
    plan: Plan,
    workers: Workers,
    events: Events,
    ticks: f64,
    started: Instant,
    last_progress: Instant,
    last_server_cpu: Option<(Instant, f64)>,
    phase: &'static str,
    tty: bool,
}

impl Run {
    /// Handles worker events until `until`, printing progress every second. Errors when a
    /// worker reports a fatal error or exits before it has reported `done`.
    fn pump(&mut self, until: Instant) -> Result<(), String> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let next_print = self.last_progress + Duration::from_secs(1);
            let wait = until.min(next_print).saturating_duration_since(now);
            match self.events.recv_timeout(wait) {
                Ok((i, ev)) => self.on_event(i, ev)?,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("every worker has exited".into())
                }
            }
            if Instant::now() >= next_print {
                self.print_progress();
            }
        }
    }

    /// Pumps until `cond` holds for the workers, or errors after `limit`.
    fn pump_until(
        &mut self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&Workers) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !cond(&self.workers) {
            if Instant::now() >= deadline {
                return Err(format!("timed out after {limit:?} waiting for {what}"));
            }
            self.pump((Instant::now() + Duration::from_millis(100)).min(deadline))?;
        }
        Ok(())
    }

    fn on_event(&mut self, i: usize, ev: Option<WorkerEvent>) -> Result<(), String> {
        let Some(w) = self.workers.0.get_mut(i) else {
            return Ok(());
        };
        match ev {
            None => {
                if w.done.is_none() {
                    let status = w.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("worker {i} exited early ({status})"));
                }
            }
            Some(WorkerEvent::Progress(p)) => w.progress = p,
            Some(WorkerEvent::Ready(r)) => {
                w.progress.established = r.established;
                w.progress.failed = r.failed;
                w.ready = Some(r);
            }
            Some(WorkerEvent::Done(d)) => {
                w.progress = d.totals;
                w.done = Some(d);
            }
            Some(WorkerEvent::Fatal { message }) => {
                return Err(format!("worker {i}: {message}"));
            }
        }
        Ok(())
    }

    fn print_progress(&mut self) {
        let now = Instant::now();
        let since_last = now.duration_since(self.last_progress).as_secs_f64();
        self.last_progress = now;
        if !self.plan.progress {
            return;
        }
        let t = self.workers.totals();
        let mut line = format!(
            "[{:6.1}s] {:<10} connections {}/{} (failed {}, closed {})",
            now.duration_since(self.started).as_secs_f64(),
            self.phase,
            thousands(t.established as f64),
            thousands(self.plan.connections as f64),
            thousands(t.failed as f64),
            thousands(t.closed as f64)
        );
        if self.plan.shares.is_some() {
            line.push_str(&format!(
                " | shares sent {} acked {} rejected {}",
                thousands(t.sent as f64),
                thousands(t.acked as f64),
                thousands(t.rejected as f64)
            ));
        }
        if let Some(pid) = self.plan.server_pid {
            let cpu = procfs::cpu_secs(pid, self.ticks).ok();
            let rss = procfs::memory(pid).ok().map(|m| m.rss_kib);
            if let (Some(cpu), Some((t0, c0))) = (cpu, self.last_server_cpu) {
                let dt = now
                    .duration_since(t0)
                    .as_secs_f64()
                    .max(since_last.min(1.0));
                line.push_str(&format!(" | server {:.0}% CPU", 100.0 * (cpu - c0) / dt));
            }
            if let Some(r) = rss {
                line.push_str(&format!(" RSS {}", kib(r as f64)));
            }
            self.last_server_cpu = cpu.map(|c| (now, c));
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn end_progress_line(&self) {
        if self.plan.progress && self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn spawn_workers(plan: &Plan) -> Result<(Workers, Events), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let mut workers = Workers(Vec::new());
    let n = plan.processes.max(1) as u64;
    let mut first = 0u64;
    for i in 0..n {
        let count = plan.connections / n + u64::from(i < plan.connections % n);
        let spec = WorkerSpec {
            index: i as usize,
            first_conn: first,
            connections: count,
            sources: plan.sources.clone(),
            connect_in_flight: plan.connect_in_flight,
            threads: plan.threads,
            conn: plan.conn.clone(),
            shares: plan.shares.clone(),
        };
        first += count;
        let json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting worker {i}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        workers.0.push(Worker {
            child,
            stdin,
            ready: None,
            done: None,
            progress: Progress::default(),
        });
        let Some(stdout) = stdout else {
            return Err(format!("worker {i}: no stdout pipe"));
        };
        let tx = tx.clone();
        let idx = i as usize;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<WorkerEvent>(&line) {
                    Ok(ev) => {
                        if tx.send((idx, Some(ev))).is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("worker {idx}: {line}"),
                }
            }
            let _ = tx.send((idx, None));
        });
    }
    Ok((workers, rx))
}

/// Retries one probe connection (Sv2: handshake + SetupConnection; Sv1: set-up up to the
/// first job) until it succeeds or `limit` passes; a server that is not yet serving is either
/// refused or silent.
fn wait_ready(conn: &crate::spec::ConnSpec, limit: Duration) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let authority = conn
        .authority_key
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| format!("authority key: {e}"))?;
    let probe = ConnSpec {
        setup: true,
        channel: None,
        ..conn.clone()
    };
    let stats = crate::worker::Stats::default();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            let attempt = (tokio::time::Instant::now() + Duration::from_secs(3)).min(deadline);
            // Sv1: a miner set up up to its first job (the proxy has its upstream channel).
            let r = match &probe.sv1 {
                Some(sv1) => crate::sv1::establish(&probe, sv1, None, 0, attempt, &stats)
                    .await
                    .map(drop),
                None => crate::conn::establish(&probe, authority, None, 0, attempt)
                    .await
                    .map(drop),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = e.kind(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "server at {} not ready after {limit:?} (last probe: {last})",
            conn.addr
        ))
    })
}

fn summarize_ready(workers: &Workers) -> (ReadyReport, f64, f64) {
    let mut r = ReadyReport::default();
    let (mut secs, mut hs_secs) = (0f64, 0f64);
    for w in &workers.0 {
        let Some(x) = &w.ready else { continue };
        r.established += x.established;
        r.failed += x.failed;
        r.handshake.merge(&x.handshake);
        r.setup.merge(&x.setup);
        r.channel.merge(&x.channel);
        merge_errors(&mut r.errors, &x.errors);
        r.version_rolling_granted += x.version_rolling_granted;
        secs = secs.max(x.connect_secs);
        hs_secs = hs_secs.max(x.handshake_secs);
    }
    (r, secs, hs_secs)
}

fn merge_errors(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// Every error of the run. A worker's `done` errors already include its `ready` ones (its
/// counters are cumulative), so per kind the larger of the two sums is the total; taking the
/// larger keeps the connection-phase errors of a worker that never reported `done`.
fn all_errors(
    ready: &BTreeMap<String, u64>,
    done: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut all = done.clone();
    for (k, v) in ready {
        let e = all.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
    all
}

fn summarize_done(workers: &Workers) -> DoneReport {
    let mut d = DoneReport {
        latency: Histogram::default(),
        ..DoneReport::default()
    };
    for w in &workers.0 {
        let Some(x) = &w.done else { continue };
        let t = &mut d.totals;
        t.established += x.totals.established;
        t.failed += x.totals.failed;
        t.closed += x.totals.closed;
        t.sent += x.totals.sent;
        t.acked += x.totals.acked;
        t.rejected += x.totals.rejected;
        d.sent_at_stop += x.sent_at_stop;
        d.acked_at_stop += x.acked_at_stop;
        d.accepted += x.accepted;
        d.server_accepted += x.server_accepted;
        d.unacknowledged += x.unacknowledged;
        d.blocks += x.blocks;
        d.below_target += x.below_target;
        d.hashes += x.hashes;
        d.window_full += x.window_full;
        d.latency.merge(&x.latency);
        merge_errors(&mut d.errors, &x.errors);
        d.difficulty_range = match (d.difficulty_range, x.difficulty_range) {
            (Some((a, b)), Some((c, e))) => Some((a.min(c), b.max(e))),
            (r, None) | (None, r) => r,
        };
    }
    d
}

/// Wall-clock time, seconds since the Unix epoch (0 if the clock is before it).
fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn rate(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

/// Runs `plan` and returns the report.
///
/// Errors when the server cannot be probed in time, a worker cannot start or fails, or the
/// server pid cannot be read.
pub(crate) fn run(plan: Plan) -> Result<Report, String> {
    let ticks = procfs::clock_ticks();
    if !plan.wait_ready.is_zero() {
        wait_ready(&plan.conn, plan.wait_ready)?;
    }
    let server_before = match plan.server_pid {
        Some(pid) => Some((procfs::memory(pid)?, procfs::cpu_secs(pid, ticks)?)),
        None => None,
    };
    let (workers, events) = spawn_workers(&plan)?;
    let now = Instant::now();
    let mut run = Run {
        tty: std::io::stderr().is_terminal(),
        plan,
        workers,
        events,
        ticks,
        started: now,
        last_progress: now,
        last_server_cpu: None,
        phase: "connecting",
    };

    // 1. Every connection set up (each has its own deadline; this bound only catches a hang).
    let per_worker = run.plan.connections / run.plan.processes.max(1) as u64 + 1;
    let waves = per_worker / run.plan.connect_in_flight.max(1) as u64 + 1;
    let limit = Duration::from_millis(run.plan.conn.connect_timeout_ms)
        .saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX))
        + Duration::from_secs(30);
    run.pump_until(limit, "connections to be set up", |w| {
        w.0.iter().all(|x| x.ready.is_some())
    })?;
    let server_ready = match run.plan.server_pid {
        Some(pid) => Some((procfs::memory(pid)?, procfs::cpu_secs(pid, ticks)?)),
        None => None,
    };
    let ctx_ready = run.plan.server_pid.map(procfs::context_switches);
    let gen_cpu_ready = run.workers.cpu_secs(ticks);
    let machine_ready = MachineTimes::now();

    // 2. The share window or the idle hold.
    run.phase = if run.plan.shares.is_some() {
        "shares"
    } else {
        "holding"
    };
    if run.plan.shares.is_some() {
        run.workers.tell("go");
    }
    let window_start = Instant::now();
    let window_start_unix = unix_secs();
    run.pump(window_start + run.plan.window)?;
    let window_secs = window_start.elapsed().as_secs_f64();
    let window_end_unix = unix_secs();
    let server_end = match run.plan.server_pid {
        Some(pid) => Some((procfs::memory(pid)?, procfs::cpu_secs(pid, ticks)?)),
        None => None,
    };
    let ctx_end = run.plan.server_pid.map(procfs::context_switches);
    let gen_cpu_end = run.workers.cpu_secs(ticks);
    let machine_end = MachineTimes::now();
    let gen_peak = run.workers.peak_rss_kib();
    run.workers.tell("stop");
    run.phase = "draining";
    let drain = run
        .plan
        .shares
        .as_ref()
        .map_or(Duration::ZERO, |s| Duration::from_millis(s.drain_ms));
    run.pump_until(drain + Duration::from_secs(15), "workers to report", |w| {
        w.0.iter().all(|x| x.done.is_some())
    })?;
    let gen_cpu_total = run.workers.cpu_secs(ticks);
    run.end_progress_line();

    // 3. Close everything.
    run.workers.tell("exit");
    for w in &mut run.workers.0 {
        w.stdin = None;
    }
    let exit_deadline = Instant::now() + Duration::from_secs(10);
    for w in &mut run.workers.0 {
        while matches!(w.child.try_wait(), Ok(None)) && Instant::now() < exit_deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // 4. The report.
    let (ready, connect_secs, handshake_secs) = summarize_ready(&run.workers);
    let done = summarize_done(&run.workers);
    let errors = all_errors(&ready.errors, &done.errors);
    let plan = &run.plan;
    let established = ready.established;
    let shares = plan.shares.as_ref().map(|s| {
        let window_sent = done.sent_at_stop;
        SharesSection {
            window_secs,
            window_start_unix_secs: window_start_unix,
            window_end_unix_secs: window_end_unix,
            target_rate: (s.rate_per_conn > 0.0).then_some(s.rate_per_conn * established as f64),
            in_flight: s.in_flight,
            sent: window_sent,
            acked: done.acked_at_stop,
            sent_per_sec: rate(window_sent as f64, window_secs),
            acked_per_sec: rate(done.acked_at_stop as f64, window_secs),
            sent_total: done.totals.sent,
            accepted: done.accepted,
            rejected: done.totals.rejected,
            server_accepted: done.server_accepted,
            unacknowledged: done.unacknowledged,
            latency: done.latency.summary(),
            blocks: done.blocks,
            below_target: done.below_target,
            hashes_per_share: rate(done.hashes as f64, done.totals.sent as f64),
            window_full: done.window_full,
        }
    });
    let server = match (plan.server_pid, server_before, server_ready, server_end) {
        (Some(pid), Some((m0, c0)), Some((m1, c1)), Some((m2, c2))) => {
            let per_conn_base = if plan.shares.is_some() {
                m1.rss_kib
            } else {
                m2.rss_kib
            };
            let cpu_window = c2 - c1;
            let ctx = ctx_end.unwrap_or(0).saturating_sub(ctx_ready.unwrap_or(0));
            Some(ServerSection {
                pid,
                rss_before_kib: m0.rss_kib,
                rss_ready_kib: m1.rss_kib,
                rss_end_kib: m2.rss_kib,
                peak_rss_kib: m2.hwm_kib,
                rss_per_connection_kib: rate(
                    per_conn_base as f64 - m0.rss_kib as f64,
                    established as f64,
                ),
                cpu_connect_secs: c1 - c0,
                cpu_per_connection_us: rate((c1 - c0) * 1e6, established as f64),
                cpu_window_secs: cpu_window,
                cpu_window_percent: rate(100.0 * cpu_window, window_secs),
                shares_per_cpu_sec: shares.as_ref().map(|s| rate(s.acked as f64, cpu_window)),
                context_switches_window: ctx,
                context_switches_per_share: shares
                    .as_ref()
                    .map(|s| rate(ctx as f64, s.acked as f64)),
            })
        }
        _ => None,
    };
    Ok(Report {
        tool: "stratum-load",
        version: env!("CARGO_PKG_VERSION"),
        mode: plan.mode,
        protocol: if plan.conn.sv1.is_some() {
            "sv1"
        } else {
            "sv2"
        },
        command: plan.command.clone(),
        addr: plan.conn.addr.to_string(),
        transport: match (
            plan.conn.sv1.is_some(),
            plan.conn.plaintext,
            plan.conn.authority_key.is_some(),
        ) {
            (true, _, _) => "tcp",
            (false, true, _) => "plaintext",
            (false, false, true) => "noise",
            (false, false, false) => "noise-unauthenticated",
        },
        channel: plan.conn.channel.filter(|_| plan.conn.sv1.is_none()),
        sv1: plan.conn.sv1.as_ref().map(|s| Sv1Section {
            version_rolling_mask: format!("{:08x}", s.version_rolling_mask),
            version_rolling_granted: ready.version_rolling_granted,
            suggested_difficulty: s.suggest_difficulty,
            difficulty_min: done.difficulty_range.map(|r| r.0),
            difficulty_max: done.difficulty_range.map(|r| r.1),
        }),
        connections: plan.connections,
        processes: plan.processes,
        threads_per_process: plan.threads,
        sources: plan.sources.len(),
        machine: Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: procfs::cpu_model(),
            idle_percent_window: machine_end.idle_percent_since(&machine_ready),
        },
        connect: ConnectSection {
            established,
            failed: ready.failed,
            secs: connect_secs,
            connections_per_sec: rate(established as f64, connect_secs),
            handshakes_per_sec: rate(established as f64, handshake_secs),
            handshake: ready.handshake.summary(),
            setup: ready.setup.summary(),
            channel: ready.channel.summary(),
        },
        hold: plan.shares.is_none().then(|| HoldSection {
            secs: window_secs,
            open_at_end: done.totals.established.saturating_sub(done.totals.closed),
        }),
        shares,
        errors,
        server,
        load_generator: LoadGenSection {
            cpu_window_secs: gen_cpu_end - gen_cpu_ready,
            cpu_total_secs: gen_cpu_total,
            peak_rss_kib: gen_peak,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn connection_errors_are_counted_once() {
        let ready = BTreeMap::from([("connect: refused".to_owned(), 3), ("x".to_owned(), 1)]);
        let done = BTreeMap::from([
            ("connect: refused".to_owned(), 3),
            ("rejected: 23".to_owned(), 5),
        ]);
        let all = all_errors(&ready, &done);
        assert_eq!(all["connect: refused"], 3);
        assert_eq!(all["rejected: 23"], 5);
        assert_eq!(all["x"], 1);
    }
}
