//! A worker process: opens its share of the connections, reports when they are set up, submits
//! shares between `go` and `stop`, reports, and closes everything on `exit` (see [`crate::spec`]
//! for the protocol with the coordinator).

use crate::conn::{self, ConnError};
use crate::hist::AtomicHistogram;
use crate::spec::{DoneReport, Progress, ReadyReport, Sv1Spec, WorkerEvent, WorkerSpec};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_stratum_codec::AuthorityPublicKey;

/// File descriptors a worker needs besides its connections.
pub(crate) const SPARE_FDS: u64 = 64;

/// Where the run is; connection tasks watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Setting up connections; no shares yet.
    Connecting,
    /// Submit shares.
    Go,
    /// Stop submitting, drain.
    Stop,
    /// Close every connection.
    Exit,
}

/// Counters shared by a worker's connection tasks (relaxed atomics; errors under a mutex that
/// is never held across an `.await`).
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) established: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) closed: AtomicU64,
    /// Connection tasks done with setup (established or failed).
    pub(crate) settled: AtomicU64,
    /// Connection tasks done with the share phase.
    pub(crate) drained: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) server_accepted: AtomicU64,
    pub(crate) unacknowledged: AtomicU64,
    pub(crate) blocks: AtomicU64,
    pub(crate) below_target: AtomicU64,
    pub(crate) hashes: AtomicU64,
    pub(crate) window_full: AtomicU64,
    pub(crate) handshake: AtomicHistogram,
    pub(crate) setup: AtomicHistogram,
    pub(crate) channel: AtomicHistogram,
    pub(crate) latency: AtomicHistogram,
    /// Nanoseconds after the worker's start when the last handshake completed.
    pub(crate) last_handshake_ns: AtomicU64,
    /// Sv1: miners granted version rolling.
    pub(crate) version_rolling_granted: AtomicU64,
    /// Sv1: lowest and highest difficulty set by the proxy (`f64` bits; positive `f64`s order
    /// like their bits). `u64::MAX` / 0 while none.
    difficulty_min_bits: AtomicU64,
    difficulty_max_bits: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Woken whenever `settled` or `drained` moves.
    notify: Notify,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            established: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            server_accepted: AtomicU64::new(0),
            unacknowledged: AtomicU64::new(0),
            blocks: AtomicU64::new(0),
            below_target: AtomicU64::new(0),
            hashes: AtomicU64::new(0),
            window_full: AtomicU64::new(0),
            handshake: AtomicHistogram::default(),
            setup: AtomicHistogram::default(),
            channel: AtomicHistogram::default(),
            latency: AtomicHistogram::default(),
            last_handshake_ns: AtomicU64::new(0),
            version_rolling_granted: AtomicU64::new(0),
            difficulty_min_bits: AtomicU64::new(u64::MAX),
            difficulty_max_bits: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            notify: Notify::new(),
        }
    }
}

impl Stats {
    /// Records a share difficulty the proxy set (positive and finite; others are ignored).
    pub(crate) fn record_difficulty(&self, d: f64) {
        if d.is_finite() && d > 0.0 {
            self.difficulty_min_bits.fetch_min(d.to_bits(), Relaxed);
            self.difficulty_max_bits.fetch_max(d.to_bits(), Relaxed);
        }
    }

    /// The lowest and highest difficulty recorded, if any.
    pub(crate) fn difficulty_range(&self) -> Option<(f64, f64)> {
        let (lo, hi) = (
            self.difficulty_min_bits.load(Relaxed),
            self.difficulty_max_bits.load(Relaxed),
        );
        (lo != u64::MAX).then(|| (f64::from_bits(lo), f64::from_bits(hi)))
    }

    /// Counts one error of `kind`.
    pub(crate) fn count_error(&self, kind: String) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind).or_insert(0) += 1;
        }
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn progress(&self) -> Progress {
        Progress {
            established: self.established.load(Relaxed),
            failed: self.failed.load(Relaxed),
            closed: self.closed.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
        }
    }
}

fn emit(e: &WorkerEvent) {
    if let Ok(line) = serde_json::to_string(e) {
        let mut out = std::io::stdout().lock();
        // The coordinator reading our stdout is gone: nothing useful left to do with the error.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Runs a worker from its JSON spec; returns the process exit code.
pub(crate) fn main(spec_json: &str) -> std::process::ExitCode {
    let fail = |message: String| {
        emit(&WorkerEvent::Fatal { message });
        std::process::ExitCode::FAILURE
    };
    let spec: WorkerSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => return fail(format!("bad worker spec: {e}")),
    };
    if let Err(e) = crate::procfs::ensure_nofile(spec.connections + SPARE_FDS) {
        return fail(e);
    }
    let authority = match spec
        .conn
        .authority_key
        .as_deref()
        .map(AuthorityPublicKey::from_str)
    {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return fail(format!("authority key: {e}")),
    };
    let runtime = if spec.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(spec.threads)
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => {
            rt.block_on(run(spec, authority));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => fail(format!("tokio runtime: {e}")),
    }
}

/// Reads `go` / `stop` / `exit` lines from stdin into the phase; end of file is `exit`.
async fn read_control(phase: watch::Sender<Phase>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let next = match lines.next_line().await {
            Ok(Some(l)) => match l.trim() {
                "go" => Phase::Go,
                "stop" => Phase::Stop,
                "exit" => Phase::Exit,
                _ => continue,
            },
            Ok(None) | Err(_) => Phase::Exit,
        };
        let _ = phase.send(next);
        if next == Phase::Exit {
            return;
        }
    }
}

/// Evenly spread first-send offset of connection `i` within one period (golden-ratio
/// sequence), so rate-limited connections do not all send at the same instant.
fn spread(i: u64, rate_per_conn: f64) -> Duration {
    if rate_per_conn <= 0.0 {
        return Duration::ZERO;
    }
    let frac = (i as f64 * 0.618_033_988_749_895).fract();
    Duration::from_secs_f64(frac / rate_per_conn)
}

async fn connection(
    index: u64,
    spec: Arc<WorkerSpec>,
    authority: Option<AuthorityPublicKey>,
    gate: Arc<Semaphore>,
    stats: Arc<Stats>,
    started: Instant,
    mut phase: watch::Receiver<Phase>,
) {
    let source = (!spec.sources.is_empty())
        .then(|| spec.sources[(index % spec.sources.len() as u64) as usize])
        .map(IpAddr::V4);
    if let Some(sv1) = &spec.conn.sv1 {
        return sv1_connection(index, &spec, sv1, source, gate, stats, started, phase).await;
    }
    let settle = |ok: bool| {
        if ok {
            stats.established.fetch_add(1, Relaxed);
        } else {
            stats.failed.fetch_add(1, Relaxed);
        }
        stats.settled.fetch_add(1, Relaxed);
        stats.notify.notify_one();
    };
    let established = {
        let Ok(_permit) = gate.acquire().await else {
            return;
        };
        let deadline = Instant::now() + Duration::from_millis(spec.conn.connect_timeout_ms);
        conn::establish(&spec.conn, authority, source, index, deadline).await
    };
    let mut est = match established {
        Ok(e) => e,
        Err(e) => {
            stats.count_error(e.kind());
            settle(false);
            return;
        }
    };
    let t = est.timings;
    stats.handshake.record(t.handshake);
    if let Some(s) = t.setup {
        stats.setup.record(s);
    }
    if let Some(c) = t.channel {
        stats.channel.record(c);
    }
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    stats.last_handshake_ns.fetch_max(ns, Relaxed);
    settle(true);

    let ended: Result<(), ConnError> = match (&spec.shares, est.channel.as_mut()) {
        (Some(shares), Some(ch)) => {
            let offset = spread(index, shares.rate_per_conn);
            let r =
                conn::submit_shares(&mut est.link, ch, shares, offset, &mut phase, &stats).await;
            stats.drained.fetch_add(1, Relaxed);
            stats.notify.notify_one();
            match r {
                Ok(()) => conn::hold(&mut est.link, &mut phase).await,
                Err(e) => Err(e),
            }
        }
        _ => conn::hold(&mut est.link, &mut phase).await,
    };
    if let Err(e) = ended {
        stats.closed.fetch_add(1, Relaxed);
        stats.count_error(e.kind());
    }
}

/// [`connection`] for an Sv1 miner.
#[allow(clippy::too_many_arguments)]
async fn sv1_connection(
    index: u64,
    spec: &WorkerSpec,
    sv1: &Sv1Spec,
    source: Option<IpAddr>,
    gate: Arc<Semaphore>,
    stats: Arc<Stats>,
    started: Instant,
    mut phase: watch::Receiver<Phase>,
) {
    let settle = |ok: bool| {
        if ok {
            stats.established.fetch_add(1, Relaxed);
        } else {
            stats.failed.fetch_add(1, Relaxed);
        }
        stats.settled.fetch_add(1, Relaxed);
        stats.notify.notify_one();
    };
    let established = {
        let Ok(_permit) = gate.acquire().await else {
            return;
        };
        let deadline = Instant::now() + Duration::from_millis(spec.conn.connect_timeout_ms);
        crate::sv1::establish(&spec.conn, sv1, source, index, deadline, &stats).await
    };
    let mut est = match established {
        Ok(e) => e,
        Err(e) => {
            stats.count_error(e.kind());
            settle(false);
            return;
        }
    };
    let t = est.timings;
    stats.handshake.record(t.handshake);
    if let Some(s) = t.setup {
        stats.setup.record(s);
    }
    if let Some(c) = t.channel {
        stats.channel.record(c);
    }
    if est.version_rolling {
        stats.version_rolling_granted.fetch_add(1, Relaxed);
    }
    if let Some(d) = est.miner.as_ref().and_then(|m| m.difficulty()) {
        stats.record_difficulty(d);
    }
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    stats.last_handshake_ns.fetch_max(ns, Relaxed);
    settle(true);

    let ended = match (&spec.shares, est.miner.as_mut()) {
        (Some(shares), Some(miner)) => {
            let offset = spread(index, shares.rate_per_conn);
            let r =
                crate::sv1::submit_shares(&mut est.link, miner, shares, offset, &mut phase, &stats)
                    .await;
            if let Some(d) = miner.difficulty() {
                stats.record_difficulty(d);
            }
            stats.drained.fetch_add(1, Relaxed);
            stats.notify.notify_one();
            match r {
                Ok(()) => crate::sv1::hold(&mut est.link, Some(miner), &mut phase, &stats).await,
                Err(e) => Err(e),
            }
        }
        (_, miner) => crate::sv1::hold(&mut est.link, miner, &mut phase, &stats).await,
    };
    if let Err(e) = ended {
        stats.closed.fetch_add(1, Relaxed);
        stats.count_error(e.kind());
    }
}

/// Waits until `done()` holds, emitting progress every second; gives up at `deadline`.
async fn wait_for(stats: &Stats, deadline: Option<Instant>, done: impl Fn(&Stats) -> bool) {
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    while !done(stats) {
        let wake = deadline.map_or(next_progress, |d| d.min(next_progress));
        tokio::select! {
            _ = stats.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        if Instant::now() >= next_progress {
            emit(&WorkerEvent::Progress(stats.progress()));
            next_progress += Duration::from_secs(1);
        }
    }
}

async fn run(spec: WorkerSpec, authority: Option<AuthorityPublicKey>) {
    let spec = Arc::new(spec);
    let stats = Arc::new(Stats::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let mut phase_seen = phase_rx.clone();
    tokio::spawn(read_control(phase_tx));
    let gate = Arc::new(Semaphore::new(spec.connect_in_flight.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..spec.connections {
        tasks.spawn(connection(
            spec.first_conn + i,
            spec.clone(),
            authority,
            gate.clone(),
            stats.clone(),
            started,
            phase_rx.clone(),
        ));
    }
    let n = spec.connections;
    wait_for(&stats, None, |s| s.settled.load(Relaxed) >= n).await;
    let ready = ReadyReport {
        established: stats.established.load(Relaxed),
        failed: stats.failed.load(Relaxed),
        connect_secs: started.elapsed().as_secs_f64(),
        handshake_secs: stats.last_handshake_ns.load(Relaxed) as f64 / 1e9,
        handshake: stats.handshake.snapshot(),
        setup: stats.setup.snapshot(),
        channel: stats.channel.snapshot(),
        errors: stats.errors(),
        version_rolling_granted: stats.version_rolling_granted.load(Relaxed),
    };
    emit(&WorkerEvent::Ready(ready));

    // Wait for `go` (or an early `stop` / `exit`), reporting progress.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut stop_snapshot = None;
    loop {
        let p = *phase_seen.borrow_and_update();
        if matches!(p, Phase::Stop | Phase::Exit) {
            stop_snapshot = Some((stats.sent.load(Relaxed), stats.acked.load(Relaxed)));
            break;
        }
        tokio::select! {
            r = phase_seen.changed() => if r.is_err() { break; },
            _ = tick.tick() => emit(&WorkerEvent::Progress(stats.progress())),
        }
    }
    let (sent_at_stop, acked_at_stop) =
        stop_snapshot.unwrap_or((stats.sent.load(Relaxed), stats.acked.load(Relaxed)));
    // Drain: every connection that was submitting reports back, or the drain time passes.
    if let Some(shares) = &spec.shares {
        let submitting = stats.established.load(Relaxed);
        let deadline = Instant::now() + Duration::from_millis(shares.drain_ms + 2_000);
        wait_for(&stats, Some(deadline), |s| {
            s.drained.load(Relaxed) >= submitting
        })
        .await;
    }
    let done = DoneReport {
        totals: stats.progress(),
        sent_at_stop,
        acked_at_stop,
        accepted: stats.accepted.load(Relaxed),
        server_accepted: stats.server_accepted.load(Relaxed),
        unacknowledged: stats.unacknowledged.load(Relaxed),
        blocks: stats.blocks.load(Relaxed),
        below_target: stats.below_target.load(Relaxed),
        hashes: stats.hashes.load(Relaxed),
        window_full: stats.window_full.load(Relaxed),
        latency: stats.latency.snapshot(),
        errors: stats.errors(),
        difficulty_range: stats.difficulty_range(),
    };
    emit(&WorkerEvent::Done(done));

    // Hold until `exit`, then close everything (sockets reset: zero linger).
    while *phase_seen.borrow_and_update() != Phase::Exit {
        if phase_seen.changed().await.is_err() {
            break;
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}
