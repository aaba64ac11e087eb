//! `stratum-load`: a load generator for Stratum V2 mining servers (any Sv2 server: ours, SRI's
//! `pool_sv2`, …) and for Stratum V1 endpoints (translator proxies such as our
//! `translator-proxy` or SRI's `translator_sv2`, Sv1 pools).
//!
//! ```text
//! stratum-load shares  --addr 127.0.0.1:34254 --authority-key <base58> -n 1000 \
//!                      [--channel standard|extended] [--rate 5000 | flat out] [--in-flight 4] \
//!                      [--duration-secs 10] [--server-pid PID] [--json]
//! stratum-load shares  --addr stratum+tcp://127.0.0.1:34255 -n 1000 [--rate 5000] ...   # Sv1
//! stratum-load connect --addr 127.0.0.1:34254 --authority-key <base58> -n 19000 \
//!                      --sources 4 [--hold-secs 5] [--server-pid PID] [--json]
//! stratum-load noise-baseline [--iterations 2000] [--json]
//! ```
//!
//! Sv1 (`--sv1`, or an address written `stratum+tcp://host:port` / `sv1://host:port`): each
//! connection is a miner over plain TCP that sends `mining.configure` (version rolling,
//! `--sv1-version-mask`), `mining.subscribe`, `mining.suggest_difficulty`
//! (`--sv1-suggest-difficulty`, the lowest difficulty by default) and `mining.authorize`, waits
//! for its first `mining.notify`, then submits `mining.submit` shares exactly like the Sv2 mode
//! (rate, in flight, window, drain). Shares meet the difficulty the proxy set (a few nonces
//! hashed per share, none a block) when that difficulty is trivially low; otherwise they are
//! sent below target and a truthful proxy rejects them: the report counts answers `true` as
//! accepted and errors/`false` as rejected, by code. "Acknowledged" and the latency count every
//! answer, whatever the verdict. Same table, JSON and progress line as Sv2.
//!
//! - `shares`: N connections, each Noise (or `--plaintext`) + SetupConnection + one standard or
//!   extended channel, then valid shares for `--duration-secs`, flat out or at `--rate` shares/s
//!   in total, at most `--in-flight` unacknowledged per connection. Shares are valid without
//!   mining: the channel asks for the easiest target (max_target 2^256 - 1, tiny
//!   nominal_hash_rate) and a few nonces are tried with sha256d until the hash meets it (and,
//!   on regtest, does not meet the network target, so no share is a block). Reports shares/s
//!   sent and acknowledged, accepted vs rejected, acknowledgement latency p50/p99/p99.9.
//! - `connect`: a connection storm (N connections as fast as `--connect-in-flight` allows:
//!   handshakes/s), then hold them idle for `--hold-secs` and read the server's memory.
//! - `noise-baseline`: the handshake's cryptography alone, in memory on one thread.
//!
//! With `--server-pid`, the server's CPU seconds (`/proc/<pid>/stat`) and RSS / peak RSS
//! (`/proc/<pid>/status` `VmRSS`, `VmHWM`) are measured around the connection phase and the
//! window. Connections are spread over `--processes` worker processes (default: one per 16 000
//! connections, since a process may be capped at 20 000 open files) and `--sources` source
//! addresses 127.0.0.1 ..= 127.0.0.K. A progress line goes to stderr every second; the report to
//! stdout, as a table or as JSON (`--json`). Every run is bounded: per-connection deadlines, a
//! fixed window, a fixed drain; the program stops by itself.

mod baseline;
mod conn;
mod coordinator;
mod hist;
mod job;
mod msgs;
mod procfs;
mod report;
mod spec;
mod sv1;
mod sv1_work;
mod worker;

use clap::{Args, Parser, Subcommand};
use job::ChannelKind;
use spec::{ConnSpec, ShareSpec, Sv1Spec};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

/// Connections per worker process when `--processes` is not given.
const CONNECTIONS_PER_PROCESS: u64 = 16_000;

/// Load generator for Stratum V2 mining servers.
#[derive(Debug, Parser)]
#[command(name = "stratum-load", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// N connections with a channel each, submitting valid shares for a fixed window.
    Shares(SharesArgs),
    /// Connection storm: open N connections as fast as possible, then hold them idle.
    Connect(ConnectArgs),
    /// Cost of the Noise NX handshake's cryptography alone (in memory, one thread).
    NoiseBaseline(BaselineArgs),
    /// Internal: one worker process (started by the other commands).
    #[command(hide = true)]
    Worker {
        /// The worker's spec, JSON.
        spec: String,
    },
}

/// `--addr`: `ip:port`, or `stratum+tcp://ip:port` / `sv1://ip:port` (implies `--sv1`).
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    addr: SocketAddr,
    sv1: bool,
}

/// Parses an [`Endpoint`].
fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let (rest, sv1) = match s
        .strip_prefix("stratum+tcp://")
        .or_else(|| s.strip_prefix("sv1://"))
    {
        Some(r) => (r.trim_end_matches('/'), true),
        None => (s, false),
    };
    rest.parse()
        .map(|addr| Endpoint { addr, sv1 })
        .map_err(|e| format!("{s:?}: {e} (expected ip:port or stratum+tcp://ip:port)"))
}

/// A `u32` written as hex, with or without `0x`.
fn parse_hex_u32(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Debug, Args)]
struct Common {
    /// Server address: ip:port (Sv2, or Sv1 with --sv1), or stratum+tcp://ip:port (Sv1).
    #[arg(long, value_parser = parse_endpoint)]
    addr: Endpoint,
    /// Speak Stratum V1 over plain TCP (a translator proxy's or pool's Sv1 port): each
    /// connection is a miner (mining.configure, subscribe, suggest_difficulty, authorize).
    #[arg(long, conflicts_with_all = ["authority_key", "plaintext"])]
    sv1: bool,
    /// Sv1: `version-rolling.mask` asked for in mining.configure, hex; 0 = send no
    /// mining.configure (no version rolling).
    #[arg(long, default_value = "1fffe000", value_parser = parse_hex_u32)]
    sv1_version_mask: u32,
    /// Sv1: `version-rolling.min-bit-count` asked for in mining.configure.
    #[arg(long, default_value_t = 2)]
    sv1_min_bit_count: u32,
    /// Sv1: share difficulty asked for with mining.suggest_difficulty after mining.subscribe
    /// (the proxy clamps it to its own floor); 0 = not sent.
    #[arg(long, default_value_t = 1e-12)]
    sv1_suggest_difficulty: f64,
    /// Sv1: mining.authorize password.
    #[arg(long, default_value = "x")]
    sv1_password: String,
    /// Authority public key that must sign the server's Noise certificate (base58check, SRI's
    /// format). Without it (and without --plaintext) the server is NOT authenticated.
    #[arg(long, conflicts_with = "plaintext")]
    authority_key: Option<String>,
    /// Plaintext Sv2 frames instead of Noise.
    #[arg(long)]
    plaintext: bool,
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    connections: u64,
    /// Connection attempts (connect + handshake + setup) in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    connect_in_flight: usize,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.K (bind before connect);
    /// 1 = let the kernel choose. Each source has about 28 000 ephemeral ports.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Worker processes (default: one per 16 000 connections).
    #[arg(long)]
    processes: Option<usize>,
    /// Tokio threads per worker process (1 = single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Deadline per connection for TCP connect, handshake, SetupConnection and (with a
    /// channel) its first job, seconds.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout_secs: f64,
    /// Before starting, retry a probe connection (handshake + SetupConnection) for up to this
    /// many seconds until the server answers (0: no probe).
    #[arg(long, default_value_t = 0.0)]
    wait_ready_secs: f64,
    /// Server process to measure: CPU seconds (/proc/PID/stat), VmRSS and VmHWM
    /// (/proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// `user_identity` of each channel, Sv1 username of each miner (`.<connection index>` is
    /// appended).
    #[arg(long, default_value = "stratum-load")]
    user_identity: String,
    /// `nominal_hash_rate` announced when opening channels, H/s. Tiny by default, so the
    /// server's initial target is its easiest.
    #[arg(long, default_value_t = 0.001)]
    nominal_hash_rate: f32,
    /// `min_extranonce_size` for extended channels, bytes.
    #[arg(long, default_value_t = 4)]
    min_extranonce_size: u16,
}

#[derive(Debug, Args)]
struct SharesArgs {
    #[command(flatten)]
    common: Common,
    /// Channel type opened on each connection.
    #[arg(long, value_enum, default_value_t = ChannelKind::Standard)]
    channel: ChannelKind,
    /// Share window, seconds; the run stops by itself after it and the drain.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Shares per second over all connections; 0 = flat out (each connection refills its
    /// window as acknowledgements arrive).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Shares submitted and not yet acknowledged, per connection, at most.
    #[arg(long, default_value_t = 1)]
    in_flight: u32,
    /// Nonces tried per share at most (one sha256d each); a share that still misses the
    /// target is sent anyway and counted as "below target".
    #[arg(long, default_value_t = 4096)]
    max_hashes_per_share: u32,
    /// Also submit hashes that meet the network target (blocks). By default they are skipped
    /// while the channel target is easier than the network's.
    #[arg(long)]
    allow_blocks: bool,
    /// After the window, wait this long for outstanding acknowledgements, seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Hold the connections idle this long once all are set up, seconds; the server's RSS is
    /// read at the end.
    #[arg(long, default_value_t = 5.0)]
    hold_secs: f64,
    /// Stop after the Noise handshake (no SetupConnection).
    #[arg(long)]
    no_setup: bool,
    /// Also open a channel of this type on each connection (and wait for its first job).
    #[arg(long, value_enum)]
    open_channel: Option<ChannelKind>,
}

#[derive(Debug, Args)]
struct BaselineArgs {
    /// Handshakes to time.
    #[arg(long, default_value_t = 2_000)]
    iterations: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn secs(name: &str, v: f64, max: f64) -> Result<Duration, String> {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        return Err(format!(
            "--{name} must be between 0 and {max} seconds, got {v}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn check(ok: bool, msg: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg.to_owned())
    }
}

/// Builds the run plan, checking every bound.
fn plan(
    mode: &'static str,
    c: &Common,
    channel: Option<ChannelKind>,
    setup: bool,
    shares: Option<ShareSpec>,
    window: Duration,
    avoid_blocks: bool,
) -> Result<coordinator::Plan, String> {
    check(
        (1..=1_000_000).contains(&c.connections),
        "--connections must be 1..=1000000",
    )?;
    check(
        (1..=65_536).contains(&c.connect_in_flight),
        "--connect-in-flight must be 1..=65536",
    )?;
    check((1..=64).contains(&c.threads), "--threads must be 1..=64")?;
    check(c.sources >= 1, "--sources must be at least 1")?;
    check(
        c.nominal_hash_rate.is_finite() && c.nominal_hash_rate >= 0.0,
        "--nominal-hash-rate must be finite and >= 0",
    )?;
    let processes = c
        .processes
        .unwrap_or_else(|| c.connections.div_ceil(CONNECTIONS_PER_PROCESS) as usize)
        .max(1);
    check(processes <= 64, "--processes must be 1..=64")?;
    check(
        processes as u64 <= c.connections,
        "--processes must not exceed --connections",
    )?;
    let sv1 = c.sv1 || c.addr.sv1;
    check(
        !(sv1 && (c.authority_key.is_some() || c.plaintext)),
        "--authority-key and --plaintext are Sv2 options (Sv1 is plain TCP)",
    )?;
    check(
        c.sv1_suggest_difficulty.is_finite() && c.sv1_suggest_difficulty >= 0.0,
        "--sv1-suggest-difficulty must be finite and >= 0",
    )?;
    if let Some(key) = &c.authority_key {
        key.parse::<tower_stratum_codec::AuthorityPublicKey>()
            .map_err(|e| format!("--authority-key: {e}"))?;
    } else if !c.plaintext && !sv1 {
        eprintln!(
            "stratum-load: WARNING: no --authority-key: the server's Noise certificate is not checked"
        );
    }
    let connect_timeout = secs("connect-timeout-secs", c.connect_timeout_secs, 3_600.0)?;
    check(
        !connect_timeout.is_zero(),
        "--connect-timeout-secs must be > 0",
    )?;
    let sources = if c.sources > 1 {
        (0..c.sources)
            .map(|i| Ipv4Addr::new(127, 0, 0, i.saturating_add(1)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(coordinator::Plan {
        mode,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        conn: ConnSpec {
            addr: c.addr.addr,
            plaintext: c.plaintext,
            authority_key: c.authority_key.clone(),
            setup,
            channel,
            user_identity: c.user_identity.clone(),
            nominal_hash_rate: c.nominal_hash_rate,
            min_extranonce_size: c.min_extranonce_size,
            avoid_blocks,
            connect_timeout_ms: u64::try_from(connect_timeout.as_millis()).unwrap_or(u64::MAX),
            sv1: sv1.then(|| Sv1Spec {
                version_rolling_mask: c.sv1_version_mask,
                version_rolling_min_bit_count: c.sv1_min_bit_count,
                suggest_difficulty: (c.sv1_suggest_difficulty > 0.0)
                    .then_some(c.sv1_suggest_difficulty),
                password: c.sv1_password.clone(),
            }),
        },
        shares,
        connections: c.connections,
        processes,
        threads: c.threads,
        sources,
        connect_in_flight: c.connect_in_flight,
        window,
        server_pid: c.server_pid,
        wait_ready: secs("wait-ready-secs", c.wait_ready_secs, 3_600.0)?,
        progress: !c.quiet,
    })
}

fn shares_plan(a: &SharesArgs) -> Result<coordinator::Plan, String> {
    let window = secs("duration-secs", a.duration_secs, 86_400.0)?;
    check(!window.is_zero(), "--duration-secs must be > 0")?;
    check(
        a.rate.is_finite() && a.rate >= 0.0,
        "--rate must be finite and >= 0",
    )?;
    check(
        (1..=65_535).contains(&a.in_flight),
        "--in-flight must be 1..=65535",
    )?;
    check(
        a.max_hashes_per_share >= 1,
        "--max-hashes-per-share must be >= 1",
    )?;
    let drain = secs("drain-secs", a.drain_secs, 600.0)?;
    let rate_per_conn = a.rate / a.common.connections.max(1) as f64;
    let shares = ShareSpec {
        rate_per_conn,
        in_flight: a.in_flight,
        max_hashes: a.max_hashes_per_share,
        drain_ms: u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
    };
    plan(
        "shares",
        &a.common,
        Some(a.channel),
        true,
        Some(shares),
        window,
        !a.allow_blocks,
    )
}

fn connect_plan(a: &ConnectArgs) -> Result<coordinator::Plan, String> {
    check(
        !(a.no_setup && a.open_channel.is_some()),
        "--open-channel needs SetupConnection (drop --no-setup)",
    )?;
    let hold = secs("hold-secs", a.hold_secs, 86_400.0)?;
    plan(
        "connect",
        &a.common,
        a.open_channel,
        !a.no_setup,
        None,
        hold,
        true,
    )
}

fn print_report(r: &report::Report, json: bool) -> Result<(), String> {
    if json {
        let s = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
        println!("{s}");
    } else {
        print!("{}", r.to_table());
    }
    Ok(())
}

/// Exit status 2: the arguments do not make a run (the README's exit-code scheme).
fn usage_error(e: &str) -> ExitCode {
    eprintln!("stratum-load: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Worker { spec } => return worker::main(&spec),
        Cmd::NoiseBaseline(a) => baseline::measure(a.iterations).and_then(|b| {
            if a.json {
                serde_json::to_string_pretty(&b)
                    .map(|s| println!("{s}"))
                    .map_err(|e| e.to_string())
            } else {
                print!("{}", b.to_table());
                Ok(())
            }
        }),
        Cmd::Shares(a) => match shares_plan(&a) {
            Ok(plan) => coordinator::run(plan).and_then(|r| print_report(&r, a.common.json)),
            Err(e) => return usage_error(&e),
        },
        Cmd::Connect(a) => match connect_plan(&a) {
            Ok(plan) => coordinator::run(plan).and_then(|r| print_report(&r, a.common.json)),
            Err(e) => return usage_error(&e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratum-load: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plans_are_bounded() {
        let cli = Cli::try_parse_from([
            "stratum-load",
            "shares",
            "--addr",
            "127.0.0.1:1",
            "--plaintext",
            "-n",
            "40000",
            "--rate",
            "4000",
            "--sources",
            "4",
        ])
        .unwrap();
        let Cmd::Shares(a) = cli.command else {
            panic!("not shares");
        };
        let p = shares_plan(&a).unwrap();
        assert_eq!(p.processes, 3);
        assert_eq!(p.sources.len(), 4);
        assert_eq!(p.sources[3], Ipv4Addr::new(127, 0, 0, 4));
        assert!((p.shares.unwrap().rate_per_conn - 0.1).abs() < 1e-12);

        let bad = Cli::try_parse_from([
            "stratum-load",
            "shares",
            "--addr",
            "127.0.0.1:1",
            "--duration-secs=-1",
        ])
        .unwrap();
        let Cmd::Shares(a) = bad.command else {
            panic!("not shares");
        };
        assert!(shares_plan(&a).is_err());
    }

    fn shares(args: &[&str]) -> Result<coordinator::Plan, String> {
        let mut argv = vec!["stratum-load", "shares"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Cmd::Shares(a) = cli.command else {
            panic!("not shares");
        };
        shares_plan(&a)
    }

    #[test]
    fn sv1_by_flag_or_url() {
        let p = shares(&["--addr", "stratum+tcp://127.0.0.1:3333/", "-n", "2"]).unwrap();
        let sv1 = p.conn.sv1.unwrap();
        assert_eq!(p.conn.addr, "127.0.0.1:3333".parse().unwrap());
        assert_eq!(sv1.version_rolling_mask, 0x1fff_e000);
        assert_eq!(sv1.suggest_difficulty, Some(1e-12));
        assert_eq!(sv1.password, "x");

        let p = shares(&[
            "--addr",
            "127.0.0.1:3333",
            "--sv1",
            "--sv1-version-mask",
            "0x0",
            "--sv1-suggest-difficulty",
            "0",
        ])
        .unwrap();
        let sv1 = p.conn.sv1.unwrap();
        assert_eq!(sv1.version_rolling_mask, 0);
        assert_eq!(sv1.suggest_difficulty, None);

        let p = shares(&["--addr", "sv1://127.0.0.1:1"]).unwrap();
        assert!(p.conn.sv1.is_some());
        // Sv2 by default.
        assert!(shares(&["--addr", "127.0.0.1:1", "--plaintext"])
            .unwrap()
            .conn
            .sv1
            .is_none());
    }

    #[test]
    fn sv1_refuses_sv2_options() {
        assert!(shares(&["--addr", "127.0.0.1:1", "--sv1", "--plaintext"]).is_err());
        let e = shares(&["--addr", "stratum+tcp://127.0.0.1:1", "--plaintext"]).unwrap_err();
        assert!(e.contains("Sv2 options"), "{e}");
        assert!(shares(&["--addr", "http://127.0.0.1:1"]).is_err());
        assert!(shares(&[
            "--addr",
            "127.0.0.1:1",
            "--sv1",
            "--sv1-suggest-difficulty=-1"
        ])
        .is_err());
    }
}
