//! `translator-proxy`: Sv1 miners in, Stratum V2 out.
//!
//! ```text
//! translator-proxy                        # Sv1 on 127.0.0.1:34255 -> Sv2 127.0.0.1:34254
//! translator-proxy --config proxy.toml    # see --generate-config for every option
//! translator-proxy --upstream pool:34254 --authority-key <key> --mode per-miner
//! ```
//!
//! The defaults work with `solo-mining-server`'s defaults: run both, then point any Sv1 miner
//! at `stratum+tcp://127.0.0.1:34255`.
//!
//! Stops gracefully on Ctrl-C or SIGTERM (miners closed, upstream closed, a final status
//! line). Exit status: 0 after a graceful stop, 1 on a runtime failure (cannot listen), 2 on a
//! usage or configuration error.

mod config;

use clap::Parser;
use config::{Config, Mode, Upstream};
use std::path::PathBuf;
use std::time::Duration;
use tower_stratum::mining::share_math::Hashrate;
use tower_stratum_translator::TranslatorStats;
use tracing::{info, warn};

/// Command line. Flags override the config file.
#[derive(Debug, Parser)]
#[command(name = "translator-proxy", version, about)]
struct Cli {
    /// TOML configuration file (see --generate-config).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print a commented default configuration and exit.
    #[arg(long)]
    generate_config: bool,
    /// Sv1 listen address (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Upstream Sv2 pool `host:port` (replaces the `[[upstreams]]` list with this one).
    #[arg(long)]
    upstream: Option<String>,
    /// The upstream's authority public key: of --upstream, else of the only configured
    /// upstream (the default one, or the single `[[upstreams]]` entry; an error with several).
    /// Default: SRI's PUBLIC test key.
    #[arg(long)]
    authority_key: Option<String>,
    /// `user_identity` on the upstream (pool account): of --upstream, else of the only
    /// configured upstream (an error with several). Default `translator-proxy`.
    #[arg(long)]
    user_identity: Option<String>,
    /// Channel mode: aggregated or per-miner (overrides `mode`).
    #[arg(long, value_parser = ["aggregated", "per-miner"])]
    mode: Option<String>,
    /// First share difficulty of a miner that suggests none (overrides `start_difficulty`;
    /// default 16384, for ASICs; e.g. 0.001 for CPU miners; 0 = from `nominal_hashrate`).
    #[arg(long)]
    start_difficulty: Option<f64>,
    /// Seconds between status lines (overrides `status_interval_secs`).
    #[arg(long)]
    status_interval: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.generate_config {
        print!("{}", config::commented_default());
        return std::process::ExitCode::SUCCESS;
    }
    let mut cfg = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(m) = cli.mode {
        cfg.mode = if m == "per-miner" {
            Mode::PerMiner
        } else {
            Mode::Aggregated
        };
    }
    if let Some(s) = cli.status_interval {
        cfg.status_interval_secs = s;
    }
    if let Some(d) = cli.start_difficulty {
        cfg.start_difficulty = d;
    }
    if let Err(e) =
        apply_upstream_flags(&mut cfg, cli.upstream, cli.authority_key, cli.user_identity)
    {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    let service_cfg = match cfg.to_service_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let tls = match cfg.tls() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cfg, service_cfg, tls)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// `--upstream` replaces the list with one upstream; `--authority-key` and `--user-identity`
/// apply to it, or without `--upstream` to the only configured upstream (never silently to
/// nothing: with several they are an error).
fn apply_upstream_flags(
    cfg: &mut Config,
    upstream: Option<String>,
    authority_key: Option<String>,
    user_identity: Option<String>,
) -> Result<(), String> {
    if let Some(address) = upstream {
        cfg.upstreams = vec![Upstream {
            address,
            ..Upstream::default()
        }];
    }
    if authority_key.is_none() && user_identity.is_none() {
        return Ok(());
    }
    let n = cfg.upstreams.len();
    let [u] = cfg.upstreams.as_mut_slice() else {
        return Err(format!(
            "--authority-key and --user-identity apply to one upstream, but the configuration \
             lists {n}: give --upstream, or set them in each [[upstreams]] entry"
        ));
    };
    if let Some(k) = authority_key {
        u.authority_public_key = k;
    }
    if let Some(id) = user_identity {
        u.user_identity = id;
    }
    Ok(())
}

async fn run(
    cfg: Config,
    service_cfg: tower_stratum_translator::TranslatorServiceConfig,
    tls: Option<std::sync::Arc<tower_stratum::sv1_service::tls::rustls::ServerConfig>>,
) -> Result<(), String> {
    if cfg
        .upstreams
        .iter()
        .any(|u| u.authority_public_key == config::SRI_TEST_PUBLIC)
    {
        warn!("an upstream uses SRI's PUBLIC test authority key: anyone can impersonate it");
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let translator = match tls.clone() {
        Some(tls) => tower_stratum_translator::spawn(
            service_cfg,
            tower_stratum::sv1_service::tls::TlsListener::new(listener, tls),
        ),
        None => tower_stratum_translator::spawn(service_cfg, listener),
    }
    .map_err(|e| e.to_string())?;
    // Handlers installed before the listening line: a SIGTERM right after it is graceful.
    let mut stop = tower_stratum::shutdown::Shutdown::listen()
        .map_err(|e| format!("cannot watch for Ctrl-C/SIGTERM: {e}"))?;
    info!(
        listen = %local,
        tls = tls.is_some(),
        mode = ?cfg.mode,
        upstream = %cfg.upstreams.first().map(|u| u.address.as_str()).unwrap_or(""),
        "Sv1 translator listening"
    );
    let mut status = tokio::time::interval(Duration::from_secs(cfg.status_interval_secs.max(1)));
    status.tick().await;
    loop {
        tokio::select! {
            signal = stop.recv() => { info!(signal, "shutting down"); break; }
            _ = status.tick(), if cfg.status_interval_secs > 0 => print_status(&translator.stats()),
        }
    }
    let last = translator.stats();
    translator.shutdown().await;
    print!("final ");
    print_status(&last);
    Ok(())
}

fn print_status(s: &TranslatorStats) {
    let upstream = match s.upstream_index {
        Some(i) if s.upstream_connected => format!("connected(#{i})"),
        _ => "down".into(),
    };
    let reasons = s.rejected_by_reason();
    // Why the upstream is down, last (free text).
    let why = match (&s.upstream_error, s.upstream_connected) {
        (Some(e), false) => format!(" upstream_error=\"{e}\""),
        _ => String::new(),
    };
    println!(
        "status: upstream={upstream} miners={} connections={} channels={} hashrate={} shares accepted={} rejected={}{}{} pending={}{why}",
        s.miners,
        s.connections,
        s.channels,
        Hashrate(s.hashrate),
        s.shares_accepted,
        s.rejected_total(),
        if reasons.is_empty() { "" } else { " " },
        reasons,
        s.shares_pending,
    );
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,translator_proxy=info,tower_stratum_translator=info,tower_stratum::peer=info",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const KEY: &str = "9bDuixKmZqAJnrmP746n8zU1wyAQRrus7th9dxnkPg6RzQvCnan";

    #[test]
    fn key_and_identity_flags_apply_to_the_default_upstream() {
        let mut cfg = Config::default();
        apply_upstream_flags(&mut cfg, None, Some(KEY.into()), Some("someone".into())).unwrap();
        assert_eq!(cfg.upstreams.len(), 1);
        assert_eq!(cfg.upstreams[0].address, "127.0.0.1:34254");
        assert_eq!(cfg.upstreams[0].authority_public_key, KEY);
        assert_eq!(cfg.upstreams[0].user_identity, "someone");
        // With --upstream: to that one.
        let mut cfg = Config::default();
        apply_upstream_flags(&mut cfg, Some("pool:1".into()), Some(KEY.into()), None).unwrap();
        assert_eq!(cfg.upstreams[0].address, "pool:1");
        assert_eq!(cfg.upstreams[0].authority_public_key, KEY);
        assert_eq!(cfg.upstreams[0].user_identity, "translator-proxy");
        // Several upstreams and no --upstream: refused, nothing changed.
        let mut cfg = Config::default();
        cfg.upstreams.push(Upstream::default());
        let e = apply_upstream_flags(&mut cfg, None, None, Some("x".into())).unwrap_err();
        assert!(e.contains("--upstream"), "{e}");
        assert!(cfg
            .upstreams
            .iter()
            .all(|u| u.user_identity == "translator-proxy"));
        // No flag: nothing to apply.
        let mut cfg = Config::default();
        cfg.upstreams.push(Upstream::default());
        apply_upstream_flags(&mut cfg, None, None, None).unwrap();
        assert_eq!(cfg.upstreams.len(), 2);
    }
}
