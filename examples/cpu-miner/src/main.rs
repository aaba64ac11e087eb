//! `cpu-miner`: a Stratum V2 CPU miner with a Stratum V1 mode. See `cpu-miner --help` and the
//! `cpu_miner` library docs.
//!
//! Output on stdout (one line each): `channel opened: ...` (Sv2) or `subscribed: ...` /
//! `authorized: ...` (Sv1), `share accepted: ...`, `share rejected: ...`, a
//! `hashrate: <H/s> H/s ...` line every 5 s, a final `summary: ...` line, and with
//! `--dump-protocol` every Sv2 message or every Sv1 JSON line (`<- ` received, `-> ` sent).
//! Logs go to stderr (coloured only on a terminal). A rejected upstream certificate (wrong
//! `--authority-key`, or not the server you meant) is logged at ERROR; the miner keeps
//! retrying with backoff, since the key may be rotated.
//!
//! Ctrl-C and SIGTERM stop it gracefully (final `summary:` line). Exit status: 0 after a
//! graceful stop, `--max-shares` or `--exit-after-secs`; 1 on a runtime failure (the upstream
//! refused the channel or the authorization, the hashing threads cannot start); 2 on a usage
//! error (bad URL, key, option).

use clap::{Parser, ValueEnum};
use cpu_miner::handler::{HandlerOptions, Stop};
use cpu_miner::miner::{self, BATCH};
use cpu_miner::sha256d::{Engine, Midstate};
use cpu_miner::state::ChannelMode;
use cpu_miner::stats::{human_rate, Snapshot, Stats};
use cpu_miner::sv1::{Backoff, RunningSv1Miner, Sv1MinerOptions, DEFAULT_RECONNECT};
use cpu_miner::work::{MerkleSource, ShareKind, Work, BIP320_VERSION_MASK};
use cpu_miner::{MinerOptions, RunningMiner};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tower_stratum::codec::{AuthorityPublicKey, SRI_TEST_AUTHORITY_PUBLIC_KEY};
use tower_stratum::shutdown::Shutdown;
use tower_stratum::Endpoint;
use tracing::{error, info};

/// Seconds between two hashrate lines.
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ChannelArg {
    /// OpenStandardMiningChannel (header-only mining; the spec's choice for end devices).
    Standard,
    /// OpenExtendedMiningChannel (the miner rolls its own extranonce in the coinbase).
    Extended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    /// SHA-NI multi-lane when the CPU has it, else portable.
    Auto,
    /// sha2's compression function, one nonce at a time.
    Portable,
}

/// A Stratum V2 CPU miner with a Stratum V1 mode (tower-stratum example).
///
/// Sv2 (default): `cpu-miner` or `cpu-miner stratum2+tcp://host:port[/authority_key]` opens a
/// standard or extended channel over Noise; more URLs (`cpu-miner URL1 URL2`, or `--url` given
/// again) are backups: after --failover-attempts failed attempts the miner moves to the next
/// one, and while on a backup it checks the first every --failback-interval-secs and goes back
/// to it when it answers. Sv1: `cpu-miner stratum+tcp://host:port
/// --user <worker> --password <password>` (plain TCP JSON-RPC: mining.configure with version
/// rolling, mining.subscribe, mining.extranonce.subscribe, mining.authorize, mining.notify
/// jobs, mining.submit); Sv2-only options are ignored there.
#[derive(Debug, Parser)]
#[command(name = "cpu-miner", version, about, long_about)]
struct Cli {
    /// The upstreams, as for --url (give these or --url): `stratum+tcp://host:port` selects
    /// Sv1 mode.
    #[arg(value_name = "URL", conflicts_with = "url")]
    upstream: Vec<String>,
    /// Upstream endpoint; Sv2: repeat for backups, in order of preference (the first is the
    /// primary). Sv2 Mining Protocol over Noise: `stratum2+tcp://host:port[/authority_key]` or
    /// `host:port` (an authority key in the URL is used unless --authority-key is given).
    /// Sv1 (a single URL): `stratum+tcp://host:port`.
    #[arg(long, default_value = "stratum2+tcp://127.0.0.1:34254")]
    url: Vec<String>,
    /// Sv2: the upstreams' authority public key (base58check), for every URL; their Noise
    /// certificates must be signed by it. Default: the key in each URL, else SRI's public test
    /// key (also the default of our solo-mining server).
    #[arg(long)]
    authority_key: Option<String>,
    /// Sv2 with several URLs: move to the next upstream after this many consecutive failed
    /// connection attempts (at least 1). A single URL is retried forever.
    #[arg(long, default_value_t = tower_stratum::DEFAULT_FAILOVER_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    failover_attempts: u32,
    /// Sv2 with several URLs: while on a backup, check the first upstream this often, seconds,
    /// and go back to it when it answers (its backup connection is closed). 0: never.
    #[arg(long, default_value_t = tower_stratum::DEFAULT_FAILBACK_INTERVAL.as_secs())]
    failback_interval_secs: u64,
    /// Sv2: channel type to open.
    #[arg(long, value_enum, default_value_t = ChannelArg::Standard)]
    channel: ChannelArg,
    /// Hashing threads, at least 1. Default: the number of available cores.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    threads: Option<usize>,
    /// Sv2: `user_identity` of the channel (pool account / worker name). Sv1: the
    /// `mining.authorize` username, also the worker name of every `mining.submit`.
    #[arg(long, visible_alias = "user", default_value = "cpu-miner")]
    user_identity: String,
    /// Sv1: the `mining.authorize` password.
    #[arg(long, default_value = "x")]
    password: String,
    /// Print every Sv2 message, or in Sv1 mode every JSON line as on the wire, received
    /// (`<- `) and sent (`-> `), one line each.
    #[arg(long)]
    dump_protocol: bool,
    /// Sv2: `nominal_hash_rate` advertised when opening the channel, H/s. Default: measured at
    /// startup (1 s on every thread) times --nominal-hashrate-multiplier.
    #[arg(long)]
    nominal_hashrate: Option<f32>,
    /// Sv2: multiplier on the measured hashrate for `nominal_hash_rate`. Below 1 makes the
    /// upstream pick an easier target (more, smaller shares), e.g. for tests.
    #[arg(long, default_value_t = 1.0)]
    nominal_hashrate_multiplier: f32,
    /// Sv2 extended channels: `min_extranonce_size` requested (bytes the miner rolls).
    #[arg(long, default_value_t = 4)]
    min_extranonce_size: u16,
    /// Sv2 standard channels: do not set REQUIRES_STANDARD_JOBS, so the upstream may put the
    /// channel in a group channel and send extended jobs (mined with the channel's
    /// extranonce_prefix).
    #[arg(long)]
    accept_group_jobs: bool,
    /// Sv2: set REQUIRES_VERSION_ROLLING in SetupConnection (the miner rolls BIP320 bits
    /// whenever a job allows it, with or without this flag).
    #[arg(long)]
    require_version_rolling: bool,
    /// Sv1: send `mining.suggest_difficulty` with this share difficulty before authorizing
    /// (0: do not send). Default: the difficulty of about 10 shares per minute at the hashrate
    /// measured at startup (1 s on every thread), so a server that starts miners at an
    /// ASIC-sized difficulty (e.g. translator-proxy) starts this one where it finds shares.
    #[arg(long)]
    suggest_difficulty: Option<f64>,
    /// Sv1: first reconnection delay after a lost connection, seconds (doubled per failed
    /// attempt up to 60 s).
    #[arg(long, default_value_t = 1.0)]
    reconnect_delay: f64,
    /// Stop after this many accepted shares.
    #[arg(long)]
    max_shares: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    exit_after_secs: Option<u64>,
    /// Do not connect: hash a synthetic header (no shares) and report the hashrate; stops
    /// after --exit-after-secs (default 20).
    #[arg(long)]
    benchmark: bool,
    /// Hashing engine.
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// Debug logs on stderr.
    #[arg(long, short)]
    verbose: bool,
}

/// Where to mine, from the URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Sv2, one or more upstreams in order of preference: address and the key in the URL.
    Sv2(Vec<(String, Option<String>)>),
    /// Sv1, one upstream.
    Sv1 { address: String },
}

/// Reads the URLs: one or more Sv2 URLs, or exactly one Sv1 URL.
fn parse_urls(urls: &[String]) -> Result<Mode, String> {
    let mut sv2 = Vec::new();
    let mut sv1 = None;
    for url in urls {
        match parse_url(url)? {
            Upstream::Sv2 { address, key } => sv2.push((address, key)),
            Upstream::Sv1 { address } => sv1 = Some(address),
        }
    }
    match (sv1, sv2.is_empty(), urls.len()) {
        (_, _, 0) => Err("no URL".into()),
        (Some(address), true, 1) => Ok(Mode::Sv1 { address }),
        (Some(_), _, _) => Err("Sv1 mode (stratum+tcp://) takes exactly one URL".into()),
        (None, _, _) => Ok(Mode::Sv2(sv2)),
    }
}

/// Where to mine, from one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Upstream {
    /// `stratum2+tcp://host:port[/key]` or `host:port`: the address and the key in the URL.
    Sv2 {
        address: String,
        key: Option<String>,
    },
    /// `stratum+tcp://host:port`.
    Sv1 { address: String },
}

/// Reads `stratum2+tcp://host:port[/key]`, `host:port` (Sv2) or `stratum+tcp://host:port`
/// (Sv1).
fn parse_url(url: &str) -> Result<Upstream, String> {
    let (sv1, rest) = match url.split_once("://") {
        Some(("stratum2+tcp", rest)) => (false, rest),
        Some(("stratum+tcp", rest)) => (true, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme {scheme:?} (use stratum2+tcp, or stratum+tcp for Sv1)"
            ))
        }
        None => (false, url),
    };
    let (addr, key) = match rest.split_once('/') {
        Some((a, k)) if !k.is_empty() => (a, Some(k.trim_end_matches('/').to_string())),
        Some((a, _)) => (a, None),
        None => (rest, None),
    };
    if addr
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!("expected host:port in {url:?}"));
    }
    let address = addr.to_string();
    match (sv1, key) {
        (false, key) => Ok(Upstream::Sv2 { address, key }),
        (true, None) => Ok(Upstream::Sv1 { address }),
        (true, Some(_)) => Err(format!(
            "{url:?}: an Sv1 URL has no path (authority keys are Sv2)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(if cli.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Hashing threads may be mid-batch; the process exit ends them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(cli: Cli) -> ExitCode {
    // Installed first: a SIGTERM at any point after start-up is a graceful stop.
    let mut stop = match tower_stratum::shutdown::Shutdown::listen() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot watch for Ctrl-C/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match cli.engine {
        EngineArg::Auto => Engine::detect(),
        EngineArg::Portable => Engine::Portable,
    };
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    println!("engine {} threads {threads}", engine.name());
    if cli.benchmark {
        return benchmark(
            engine,
            threads,
            cli.exit_after_secs.unwrap_or(20),
            &mut stop,
        )
        .await;
    }

    let urls = if cli.upstream.is_empty() {
        &cli.url
    } else {
        &cli.upstream
    };
    let sv2 = match parse_urls(urls) {
        Ok(Mode::Sv2(upstreams)) => upstreams,
        Ok(Mode::Sv1 { address }) => {
            return run_sv1(&cli, address, engine, threads, &mut stop).await
        }
        Err(e) => {
            eprintln!("URL: {e}");
            return ExitCode::from(2);
        }
    };
    let mut upstreams = Vec::with_capacity(sv2.len());
    for (address, url_key) in sv2 {
        let key_text = cli
            .authority_key
            .clone()
            .or(url_key)
            .unwrap_or_else(|| SRI_TEST_AUTHORITY_PUBLIC_KEY.to_string());
        let authority: AuthorityPublicKey = match key_text.parse() {
            Ok(k) => k,
            Err(e) => {
                eprintln!("authority key {key_text:?}: {e}");
                return ExitCode::from(2);
            }
        };
        upstreams.push(Endpoint::noise(address, authority));
    }
    let address = upstreams
        .iter()
        .map(|u| u.address.as_str())
        .collect::<Vec<_>>()
        .join(",");

    let nominal_hash_rate = match cli.nominal_hashrate {
        Some(h) => h,
        None => {
            let measured = tokio::task::spawn_blocking(move || {
                measure(engine, threads, Duration::from_secs(1))
            })
            .await
            .unwrap_or(0.0);
            println!(
                "measured hashrate: {measured:.0} H/s ({})",
                human_rate(measured)
            );
            (measured * f64::from(cli.nominal_hashrate_multiplier)) as f32
        }
    };

    let opts = MinerOptions {
        upstreams,
        failover_attempts: cli.failover_attempts,
        failback_interval: (cli.failback_interval_secs > 0)
            .then(|| Duration::from_secs(cli.failback_interval_secs)),
        mode: match cli.channel {
            ChannelArg::Standard => ChannelMode::Standard,
            ChannelArg::Extended => ChannelMode::Extended,
        },
        user_identity: cli.user_identity.clone(),
        nominal_hash_rate,
        min_extranonce_size: cli.min_extranonce_size,
        threads,
        engine,
        handler: HandlerOptions {
            dump_protocol: cli.dump_protocol,
            accept_group_jobs: cli.accept_group_jobs,
            require_version_rolling: cli.require_version_rolling,
            max_shares: cli.max_shares,
        },
    };
    info!(%address, channel = ?cli.channel, nominal_hash_rate, "connecting");
    let RunningMiner {
        handle,
        stats,
        mut stop_rx,
    } = match cpu_miner::start(opts) {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "cannot start the miner");
            return ExitCode::FAILURE;
        }
    };
    let code = supervise(&stats, &mut stop_rx, cli.exit_after_secs, &mut stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
    code
}

/// Sv1 mode: `stratum+tcp://address`.
async fn run_sv1(
    cli: &Cli,
    address: String,
    engine: Engine,
    threads: usize,
    stop: &mut Shutdown,
) -> ExitCode {
    if !(cli.reconnect_delay.is_finite() && cli.reconnect_delay >= 0.0) {
        eprintln!("--reconnect-delay: not a number of seconds");
        return ExitCode::from(2);
    }
    let initial = Duration::from_secs_f64(cli.reconnect_delay.min(60.0));
    let suggest_difficulty = match cli.suggest_difficulty {
        Some(d) if !(d.is_finite() && d >= 0.0) => {
            eprintln!("--suggest-difficulty: not a difficulty (a number >= 0)");
            return ExitCode::from(2);
        }
        Some(d) => (d > 0.0).then_some(d),
        None => {
            let measured = tokio::task::spawn_blocking(move || {
                measure(engine, threads, Duration::from_secs(1))
            })
            .await
            .unwrap_or(0.0);
            // 10 shares per minute: difficulty = hashrate * 6 s / 2^32.
            let d = measured * 6.0 / 4_294_967_296.0;
            println!(
                "measured hashrate: {measured:.0} H/s ({}); suggesting difficulty {d:.6}",
                human_rate(measured)
            );
            (d.is_finite() && d > 0.0).then_some(d)
        }
    };
    let opts = Sv1MinerOptions {
        address: address.clone(),
        username: cli.user_identity.clone(),
        password: cli.password.clone(),
        threads,
        engine,
        dump_protocol: cli.dump_protocol,
        max_shares: cli.max_shares,
        reconnect: Backoff {
            initial,
            max: DEFAULT_RECONNECT.max.max(initial),
            ..DEFAULT_RECONNECT
        },
        suggest_difficulty,
    };
    info!(%address, user = %cli.user_identity, "connecting (Sv1)");
    let RunningSv1Miner {
        handle,
        stats,
        mut stop_rx,
    } = match cpu_miner::sv1::start(opts) {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "cannot start the miner");
            return ExitCode::FAILURE;
        }
    };
    let code = supervise(&stats, &mut stop_rx, cli.exit_after_secs, stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
    code
}

/// Prints the hashrate lines until the miner stops by itself, `exit_after_secs` pass or a
/// signal arrives; then the summary. Exit code: 0, or 1 (a runtime failure) when the upstream
/// refused the channel or the authorization.
async fn supervise(
    stats: &Arc<Stats>,
    stop_rx: &mut mpsc::Receiver<Stop>,
    exit_after_secs: Option<u64>,
    stop: &mut Shutdown,
) -> ExitCode {
    let started = Instant::now();
    let reporter = tokio::spawn(report(stats.clone()));
    let deadline = exit_after_secs.map(Duration::from_secs);
    let code = tokio::select! {
        s = stop_rx.recv() => match s {
            Some(Stop::MaxShares) => ExitCode::SUCCESS,
            Some(Stop::ChannelRefused(_) | Stop::AuthorizeRefused(_)) | None => ExitCode::FAILURE,
        },
        _ = sleep_opt(deadline) => ExitCode::SUCCESS,
        _ = stop.recv() => ExitCode::SUCCESS,
    };
    reporter.abort();
    print_summary(&stats.snapshot(), started.elapsed());
    code
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Prints a hashrate line every [`REPORT_EVERY`].
async fn report(stats: Arc<Stats>) {
    let mut last = (Instant::now(), stats.snapshot());
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    loop {
        tick.tick().await;
        let now = (Instant::now(), stats.snapshot());
        let secs = now.0.duration_since(last.0).as_secs_f64();
        let rate = (now.1.hashes - last.1.hashes) as f64 / secs.max(1e-9);
        println!(
            "hashrate: {rate:.0} H/s ({}) over {secs:.1} s | {}",
            human_rate(rate),
            now.1
        );
        last = now;
    }
}

fn print_summary(s: &Snapshot, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let rate = s.hashes as f64 / secs.max(1e-9);
    println!(
        "summary: {secs:.1} s, {} hashes, average {rate:.0} H/s ({}) | {s}",
        s.hashes,
        human_rate(rate)
    );
}

/// A header that is not any real block's.
fn synthetic_header() -> [u8; 80] {
    let mut h = [0u8; 80];
    for (i, b) in h.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    h
}

/// Hashes for `duration` on `threads` threads; returns H/s (all threads).
fn measure(engine: Engine, threads: usize, duration: Duration) -> f64 {
    let midstate = Midstate::new(&synthetic_header());
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut n = 0u64;
                    let mut nonce = (t as u32) << 28;
                    while start.elapsed() < duration {
                        n += engine.scan(&midstate, nonce, BATCH, 0, &mut out);
                        nonce = nonce.wrapping_add(BATCH);
                        out.clear();
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// `--benchmark`: the real hashing threads on a synthetic work with an impossible target.
async fn benchmark(engine: Engine, threads: usize, secs: u64, stop: &mut Shutdown) -> ExitCode {
    let header = synthetic_header();
    let mut prev_hash = [0u8; 32];
    prev_hash.copy_from_slice(&header[4..36]);
    let work = Work {
        tip_epoch: 1,
        channel_id: 0,
        job_id: 0,
        share_kind: ShareKind::Standard,
        version: 0x2000_0000,
        version_mask: BIP320_VERSION_MASK,
        prev_hash,
        nbits: 0x1d00_ffff,
        min_ntime: 1_700_000_000,
        min_ntime_received: Instant::now(),
        target: [0u8; 32],
        merkle: MerkleSource::Fixed([7u8; 32]),
        next_unit: Arc::new(AtomicU64::new(0)),
    };
    let stats = Arc::new(Stats::default());
    let (work_tx, work_rx) = watch::channel(Some(Arc::new(work)));
    let (share_tx, _share_rx) = mpsc::channel(1);
    if let Err(e) = miner::spawn(
        threads,
        engine,
        &work_rx,
        share_tx,
        stats.clone(),
        tokio::runtime::Handle::current(),
    ) {
        eprintln!("cannot start hashing threads: {e}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let reporter = tokio::spawn(report(stats.clone()));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
        _ = stop.recv() => {}
    }
    reporter.abort();
    print_summary(&stats.snapshot(), started.elapsed());
    drop(work_tx);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sv2(address: &str, key: Option<&str>) -> Upstream {
        Upstream::Sv2 {
            address: address.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("stratum2+tcp://127.0.0.1:34254").unwrap(),
            sv2("127.0.0.1:34254", None)
        );
        assert_eq!(
            parse_url("stratum2+tcp://pool.example:3336/9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72").unwrap(),
            sv2(
                "pool.example:3336",
                Some("9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72")
            )
        );
        assert_eq!(parse_url("localhost:1").unwrap(), sv2("localhost:1", None));
        assert_eq!(
            parse_url("stratum+tcp://127.0.0.1:34255").unwrap(),
            Upstream::Sv1 {
                address: "127.0.0.1:34255".into()
            }
        );
        assert_eq!(
            parse_url("stratum+tcp://pool.example:3333/").unwrap(),
            Upstream::Sv1 {
                address: "pool.example:3333".into()
            }
        );
        assert!(parse_url("stratum+tcp://a:1/key").is_err());
        assert!(parse_url("stratum+ssl://a:1").is_err());
        assert!(parse_url("stratum2+tcp://nohost").is_err());
    }

    #[test]
    fn several_sv2_urls_or_one_sv1_url() {
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_urls(&urls(&["a:1", "stratum2+tcp://b:2/key"])).unwrap(),
            Mode::Sv2(vec![
                ("a:1".into(), None),
                ("b:2".into(), Some("key".into()))
            ])
        );
        assert_eq!(
            parse_urls(&urls(&["stratum+tcp://a:1"])).unwrap(),
            Mode::Sv1 {
                address: "a:1".into()
            }
        );
        assert!(parse_urls(&urls(&["stratum+tcp://a:1", "stratum+tcp://b:2"])).is_err());
        assert!(parse_urls(&urls(&["a:1", "stratum+tcp://b:2"])).is_err());
        assert!(parse_urls(&urls(&["a:1", "nohost"])).is_err());
        assert!(parse_urls(&[]).is_err());
    }

    #[test]
    fn the_url_is_positional_or_an_option() {
        let cli = Cli::try_parse_from(["cpu-miner", "stratum+tcp://127.0.0.1:34255"]).unwrap();
        assert_eq!(cli.upstream, ["stratum+tcp://127.0.0.1:34255"]);
        let cli = Cli::try_parse_from(["cpu-miner", "--url", "127.0.0.1:1"]).unwrap();
        assert!(cli.upstream.is_empty());
        assert_eq!(cli.url, ["127.0.0.1:1"]);
        // Several: repeated --url, or several positional URLs, in order.
        let cli = Cli::try_parse_from(["cpu-miner", "--url", "a:1", "--url", "b:2"]).unwrap();
        assert_eq!(cli.url, ["a:1", "b:2"]);
        let cli = Cli::try_parse_from(["cpu-miner", "a:1", "b:2"]).unwrap();
        assert_eq!(cli.upstream, ["a:1", "b:2"]);
        let cli = Cli::try_parse_from(["cpu-miner"]).unwrap();
        assert_eq!(cli.url, ["stratum2+tcp://127.0.0.1:34254"]);
        assert_eq!((cli.failover_attempts, cli.failback_interval_secs), (3, 60));
        assert!(Cli::try_parse_from(["cpu-miner", "--failover-attempts", "0"]).is_err());
        let cli = Cli::try_parse_from(["cpu-miner", "--user", "acct.w1"]).unwrap();
        assert_eq!(cli.user_identity, "acct.w1");
        assert!(Cli::try_parse_from(["cpu-miner", "a:1", "--url", "b:2"]).is_err());
        assert!(Cli::try_parse_from(["cpu-miner", "--threads", "0"]).is_err());
        let cli = Cli::try_parse_from(["cpu-miner", "--threads", "3"]).unwrap();
        assert_eq!(cli.threads, Some(3));
    }
}
