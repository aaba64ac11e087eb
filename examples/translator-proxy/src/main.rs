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
    /// The upstream's authority public key (with --upstream; default SRI's public test key).
    #[arg(long)]
    authority_key: Option<String>,
    /// `user_identity` on the upstream (with --upstream).
    #[arg(long)]
    user_identity: Option<String>,
    /// Channel mode: aggregated or per-miner (overrides `mode`).
    #[arg(long, value_parser = ["aggregated", "per-miner"])]
    mode: Option<String>,
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
    if let Some(address) = cli.upstream {
        let mut u = Upstream {
            address,
            ..Upstream::default()
        };
        if let Some(k) = cli.authority_key {
            u.authority_public_key = k;
        }
        if let Some(id) = cli.user_identity {
            u.user_identity = id;
        }
        cfg.upstreams = vec![u];
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

async fn run(
    cfg: Config,
    service_cfg: tower_stratum_translator::TranslatorServiceConfig,
    tls: Option<std::sync::Arc<tower_stratum_sv1_service::tls::rustls::ServerConfig>>,
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
            tower_stratum_sv1_service::tls::TlsListener::new(listener, tls),
        ),
        None => tower_stratum_translator::spawn(service_cfg, listener),
    }
    .map_err(|e| e.to_string())?;
    info!(
        listen = %local,
        tls = tls.is_some(),
        mode = ?cfg.mode,
        upstream = %cfg.upstreams.first().map(|u| u.address.as_str()).unwrap_or(""),
        "Sv1 translator listening"
    );
    let mut status = tokio::time::interval(Duration::from_secs(cfg.status_interval_secs.max(1)));
    status.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => { info!("Ctrl-C: shutting down"); break; }
            _ = status.tick(), if cfg.status_interval_secs > 0 => print_status(&translator.stats()),
        }
    }
    translator.shutdown().await;
    Ok(())
}

fn print_status(s: &TranslatorStats) {
    let upstream = match s.upstream_index {
        Some(i) if s.upstream_connected => format!("connected(#{i})"),
        _ => "down".into(),
    };
    let reasons = s.rejected_by_reason();
    println!(
        "status: upstream={upstream} miners={} connections={} channels={} hashrate={} shares accepted={} rejected={}{}{} pending={}",
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
            "warn,translator_proxy=info,tower_stratum_translator=info",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
