//! The run's report: what was measured, as JSON (`--json`, field names and units below) or as
//! a human-readable table.
//!
//! Units: durations in seconds (`*_secs`) or microseconds (`*_us`), memory in KiB (`*_kib`),
//! rates per second (`*_per_sec`), difficulties as Sv1 share difficulty (relative to the
//! difficulty-1 target `0xffff << 208`). Latencies are submit -> `SubmitShares.Success`/`.Error`
//! (Sv2; batched successes acknowledge every share up to their `last_sequence_number`) or
//! `mining.submit` -> its answer, whatever the verdict (Sv1: `true`, `false` or an error all
//! acknowledge a share; only `true` counts as accepted).

use crate::hist::Summary;
use crate::job::ChannelKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// `"stratum-load"`.
    pub(crate) tool: &'static str,
    /// This binary's version.
    pub(crate) version: &'static str,
    /// `"shares"` or `"connect"`.
    pub(crate) mode: &'static str,
    /// `"sv2"` or `"sv1"`.
    pub(crate) protocol: &'static str,
    /// The command line that produced it.
    pub(crate) command: String,
    /// Server address.
    pub(crate) addr: String,
    /// `"noise"` (authenticated), `"noise-unauthenticated"` or `"plaintext"` (Sv2); `"tcp"`
    /// (Sv1).
    pub(crate) transport: &'static str,
    /// Channel type opened on each connection, if any (Sv2).
    pub(crate) channel: Option<ChannelKind>,
    /// Sv1 set-up and difficulty (Sv1 only).
    pub(crate) sv1: Option<Sv1Section>,
    /// Connections asked for.
    pub(crate) connections: u64,
    /// Worker processes.
    pub(crate) processes: usize,
    /// Tokio threads per worker.
    pub(crate) threads_per_process: usize,
    /// Source addresses used (0 = chosen by the kernel).
    pub(crate) sources: usize,
    /// The machine.
    pub(crate) machine: Machine,
    /// Connection set-up.
    pub(crate) connect: ConnectSection,
    /// Share window (mode `shares`).
    pub(crate) shares: Option<SharesSection>,
    /// Idle hold (mode `connect`).
    pub(crate) hold: Option<HoldSection>,
    /// Errors and share rejections by kind, over the whole run.
    pub(crate) errors: BTreeMap<String, u64>,
    /// The server process, with `--server-pid`.
    pub(crate) server: Option<ServerSection>,
    /// The load generator's own worker processes.
    pub(crate) load_generator: LoadGenSection,
}

/// Where it ran.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// Logical CPUs (`available_parallelism`).
    pub(crate) nproc: usize,
    /// `/proc/cpuinfo` model name.
    pub(crate) cpu_model: String,
    /// Machine-wide idle CPU during the measured window, percent.
    pub(crate) idle_percent_window: f64,
}

/// Sv1 miners: what was asked for and what the proxy gave.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sv1Section {
    /// `version-rolling.mask` asked for in `mining.configure` (8 hex digits; `00000000`: no
    /// `mining.configure` sent).
    pub(crate) version_rolling_mask: String,
    /// Miners the proxy granted version rolling.
    pub(crate) version_rolling_granted: u64,
    /// Difficulty asked for with `mining.suggest_difficulty` (`None`: not sent).
    pub(crate) suggested_difficulty: Option<f64>,
    /// Lowest share difficulty the proxy set for a miner (`mining.set_difficulty`), at set-up
    /// or at the end of the share window.
    pub(crate) difficulty_min: Option<f64>,
    /// Highest share difficulty the proxy set for a miner.
    pub(crate) difficulty_max: Option<f64>,
}

/// Connection set-up results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnectSection {
    /// Connections set up.
    pub(crate) established: u64,
    /// Connections that failed (see `errors`).
    pub(crate) failed: u64,
    /// First attempt to last connection settled (slowest worker), seconds.
    pub(crate) secs: f64,
    /// Connections fully set up per second: `established / secs`.
    pub(crate) connections_per_sec: f64,
    /// Noise handshakes (Sv1: TCP connects) per second: `established / (time to the last
    /// handshake)`.
    pub(crate) handshakes_per_sec: f64,
    /// TCP connect + Noise handshake (Sv1: TCP connect), µs.
    pub(crate) handshake: Summary,
    /// `SetupConnection` -> `.Success` (Sv1: `mining.configure` -> the `mining.authorize`
    /// answer), µs.
    pub(crate) setup: Summary,
    /// `Open…MiningChannel` -> first job (Sv1: the `mining.authorize` answer -> the first
    /// `mining.notify`), µs.
    pub(crate) channel: Summary,
}

/// Share-window results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SharesSection {
    /// From `go` to `stop`, seconds.
    pub(crate) window_secs: f64,
    /// When `go` was sent, wall clock, seconds since the Unix epoch (to line the window up with
    /// other processes' logs, e.g. an upstream's counters).
    pub(crate) window_start_unix_secs: f64,
    /// When `stop` was sent, wall clock, seconds since the Unix epoch.
    pub(crate) window_end_unix_secs: f64,
    /// Offered rate over all connections (shares/s); `None` = flat out.
    pub(crate) target_rate: Option<f64>,
    /// Window of unacknowledged shares per connection.
    pub(crate) in_flight: u32,
    /// Shares sent during the window.
    pub(crate) sent: u64,
    /// Shares acknowledged during the window (Sv1: answered, whatever the verdict).
    pub(crate) acked: u64,
    /// `sent / window_secs`.
    pub(crate) sent_per_sec: f64,
    /// `acked / window_secs`.
    pub(crate) acked_per_sec: f64,
    /// After the drain: shares sent in total.
    pub(crate) sent_total: u64,
    /// After the drain: answered by `SubmitShares.Success` (Sv1: `true`).
    pub(crate) accepted: u64,
    /// After the drain: answered by `SubmitShares.Error` (Sv1: an error or `false`).
    pub(crate) rejected: u64,
    /// Sum of the server's `new_submits_accepted_count` (Sv2; 0 for Sv1).
    pub(crate) server_accepted: u64,
    /// Never answered within the drain.
    pub(crate) unacknowledged: u64,
    /// Submit -> acknowledgement, µs.
    pub(crate) latency: Summary,
    /// Shares that were blocks (network target met).
    pub(crate) blocks: u64,
    /// Shares sent below the channel's (Sv1: the miner's) target (search budget exhausted).
    pub(crate) below_target: u64,
    /// sha256d computed by the load generator per share sent.
    pub(crate) hashes_per_share: f64,
    /// Rate-limited mode: sends skipped because the window was full.
    pub(crate) window_full: u64,
}

/// Idle-hold results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HoldSection {
    /// How long the connections were held after all were set up, seconds.
    pub(crate) secs: f64,
    /// Connections still open at the end of the hold.
    pub(crate) open_at_end: u64,
}

/// The measured server process.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerSection {
    /// Its pid.
    pub(crate) pid: u32,
    /// `VmRSS` before the first connection, KiB.
    pub(crate) rss_before_kib: u64,
    /// `VmRSS` once every connection was set up, KiB.
    pub(crate) rss_ready_kib: u64,
    /// `VmRSS` at the end of the window / hold, KiB.
    pub(crate) rss_end_kib: u64,
    /// `VmHWM` (peak RSS since the server started) at the end, KiB.
    pub(crate) peak_rss_kib: u64,
    /// `(rss_ready − rss_before) / established` (mode `shares`) or
    /// `(rss_end − rss_before) / established` (mode `connect`), KiB.
    pub(crate) rss_per_connection_kib: f64,
    /// CPU time spent while connections were set up, seconds.
    pub(crate) cpu_connect_secs: f64,
    /// `cpu_connect_secs / established`, µs per connection.
    pub(crate) cpu_per_connection_us: f64,
    /// CPU time during the share window / hold, seconds.
    pub(crate) cpu_window_secs: f64,
    /// `cpu_window_secs / window`, percent of one core.
    pub(crate) cpu_window_percent: f64,
    /// Shares acknowledged per CPU-second of the server in the window (mode `shares`).
    pub(crate) shares_per_cpu_sec: Option<f64>,
    /// Context switches of all the server's threads during the window.
    pub(crate) context_switches_window: u64,
    /// `context_switches_window` per acknowledged share (mode `shares`).
    pub(crate) context_switches_per_share: Option<f64>,
}

/// The load generator's workers.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadGenSection {
    /// CPU time of all workers during the share window / hold, seconds.
    pub(crate) cpu_window_secs: f64,
    /// CPU time of all workers over the run, seconds.
    pub(crate) cpu_total_secs: f64,
    /// Sum of the workers' peak RSS, KiB.
    pub(crate) peak_rss_kib: u64,
}

/// `1234567.8` -> `"1,234,568"`.
pub(crate) fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let n = v.round().abs() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && n != 0 {
        out.insert(0, '-');
    }
    out
}

/// A duration in µs as `"850 µs"`, `"1.25 ms"` or `"2.50 s"`.
pub(crate) fn micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// KiB as `"850 KiB"`, `"12.5 MiB"` or `"1.25 GiB"`.
pub(crate) fn kib(k: f64) -> String {
    if k < 1024.0 {
        format!("{k:.1} KiB")
    } else if k < 1024.0 * 1024.0 {
        format!("{:.1} MiB", k / 1024.0)
    } else {
        format!("{:.2} GiB", k / (1024.0 * 1024.0))
    }
}

fn summary_line(s: &Summary) -> String {
    if s.count == 0 {
        return "-".to_owned();
    }
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  (n={})",
        micros(s.p50_us as f64),
        micros(s.p99_us as f64),
        micros(s.p999_us as f64),
        micros(s.max_us as f64),
        thousands(s.count as f64)
    )
}

impl Report {
    /// The report as a human-readable table.
    pub(crate) fn to_table(&self) -> String {
        let mut o = String::new();
        let channel = self
            .channel
            .map(|c| format!(", {c} channels"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "stratum-load {} ({}): {} over {}{}; {} connections from {} process(es) x {} thread(s), {} source address(es)",
            self.mode,
            self.protocol,
            self.addr,
            self.transport,
            channel,
            thousands(self.connections as f64),
            self.processes,
            self.threads_per_process,
            self.sources.max(1)
        );
        let _ = writeln!(
            o,
            "machine: {} x {}, {:.0}% idle during the window",
            self.machine.nproc, self.machine.cpu_model, self.machine.idle_percent_window
        );
        let c = &self.connect;
        let _ = writeln!(o, "\nconnections");
        let _ = writeln!(
            o,
            "  established        {} ({} failed) in {:.2} s: {}/s set up, {} {}/s",
            thousands(c.established as f64),
            thousands(c.failed as f64),
            c.secs,
            thousands(c.connections_per_sec),
            thousands(c.handshakes_per_sec),
            if self.sv1.is_some() {
                "TCP connects"
            } else {
                "Noise handshakes"
            }
        );
        let (hs, setup, ch) = if self.sv1.is_some() {
            (
                "TCP connect      ",
                "configure..auth  ",
                "1st notify       ",
            )
        } else {
            (
                "TCP + handshake  ",
                "SetupConnection  ",
                "channel + 1st job",
            )
        };
        let _ = writeln!(o, "  {hs}  {}", summary_line(&c.handshake));
        let _ = writeln!(o, "  {setup}  {}", summary_line(&c.setup));
        let _ = writeln!(o, "  {ch}  {}", summary_line(&c.channel));
        if let Some(v) = &self.sv1 {
            let d = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:e}"));
            let _ = writeln!(
                o,
                "  Sv1                version rolling {} asked, granted to {}; suggested difficulty {}; proxy set {} .. {}",
                v.version_rolling_mask,
                thousands(v.version_rolling_granted as f64),
                d(v.suggested_difficulty),
                d(v.difficulty_min),
                d(v.difficulty_max)
            );
        }
        if let Some(s) = &self.shares {
            let rate = s
                .target_rate
                .map(|r| format!("offered {}/s", thousands(r)))
                .unwrap_or_else(|| "flat out".to_owned());
            let _ = writeln!(
                o,
                "\nshares ({:.2} s window, {rate}, {} in flight per connection)",
                s.window_secs, s.in_flight
            );
            let _ = writeln!(
                o,
                "  sent               {} ({}/s)",
                thousands(s.sent as f64),
                thousands(s.sent_per_sec)
            );
            let _ = writeln!(
                o,
                "  acknowledged       {} ({}/s)",
                thousands(s.acked as f64),
                thousands(s.acked_per_sec)
            );
            let server_count = if self.sv1.is_some() {
                " (acknowledged = answered, whatever the verdict)".to_owned()
            } else {
                format!(
                    " (server counted {} accepted)",
                    thousands(s.server_accepted as f64)
                )
            };
            let _ = writeln!(
                o,
                "  after drain        {} sent: {} accepted, {} rejected, {} unacknowledged{server_count}",
                thousands(s.sent_total as f64),
                thousands(s.accepted as f64),
                thousands(s.rejected as f64),
                thousands(s.unacknowledged as f64),
            );
            let _ = writeln!(o, "  ack latency        {}", summary_line(&s.latency));
            let _ = writeln!(
                o,
                "  share search       {:.2} sha256d per share, {} blocks, {} below target, {} sends skipped (window full)",
                s.hashes_per_share,
                thousands(s.blocks as f64),
                thousands(s.below_target as f64),
                thousands(s.window_full as f64)
            );
        }
        if let Some(h) = &self.hold {
            let _ = writeln!(
                o,
                "\nidle hold: {:.1} s, {} connections open at the end",
                h.secs,
                thousands(h.open_at_end as f64)
            );
        }
        let _ = writeln!(o, "\nerrors");
        if self.errors.is_empty() {
            let _ = writeln!(o, "  none");
        }
        for (k, v) in &self.errors {
            let _ = writeln!(o, "  {:>10}  {k}", thousands(*v as f64));
        }
        if let Some(s) = &self.server {
            let _ = writeln!(o, "\nserver (pid {})", s.pid);
            let _ = writeln!(
                o,
                "  CPU                set-up {:.2} s ({} per connection); window {:.2} s ({:.0}% of one core)",
                s.cpu_connect_secs,
                micros(s.cpu_per_connection_us),
                s.cpu_window_secs,
                s.cpu_window_percent
            );
            if let Some(p) = s.shares_per_cpu_sec {
                let _ = writeln!(o, "  shares per CPU-s   {}", thousands(p));
            }
            let _ = writeln!(
                o,
                "  RSS                before {}, ready {}, end {}, peak {}; {} per connection",
                kib(s.rss_before_kib as f64),
                kib(s.rss_ready_kib as f64),
                kib(s.rss_end_kib as f64),
                kib(s.peak_rss_kib as f64),
                kib(s.rss_per_connection_kib)
            );
        }
        let g = &self.load_generator;
        let _ = writeln!(
            o,
            "\nload generator: CPU {:.2} s in the window ({:.2} s total), peak RSS {} (all workers)",
            g.cpu_window_secs,
            g.cpu_total_secs,
            kib(g.peak_rss_kib as f64)
        );
        o
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-1_000.0), "-1,000");
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(1_250.0), "1.25 ms");
        assert_eq!(micros(2_500_000.0), "2.50 s");
        assert_eq!(kib(512.0), "512.0 KiB");
        assert_eq!(kib(12_800.0), "12.5 MiB");
    }
}
