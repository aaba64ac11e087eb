//! `solo-mining-server`: a Stratum V2 solo-mining server.
//!
//! ```text
//! solo-mining-server                       # serve 127.0.0.1:34254 with embedded regtest templates
//! solo-mining-server --config server.toml  # see --generate-config for every option
//! solo-mining-server --demo                # plus a built-in CPU miner: shares and blocks in seconds
//! solo-mining-server keygen                # a new authority keypair
//! ```

mod config;
mod demo;
mod serve;

use clap::{Parser, Subcommand};
use config::Config;
use std::path::PathBuf;
use tower_stratum::codec::AuthorityKeypair;

/// Command line. Flags override the config file.
#[derive(Debug, Parser)]
#[command(name = "solo-mining-server", version, about)]
struct Cli {
    /// TOML configuration file (see --generate-config).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print a commented default configuration and exit.
    #[arg(long)]
    generate_config: bool,
    /// Listen address (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Payout address or `script:<hex>` (overrides `payout`).
    #[arg(long)]
    payout: Option<String>,
    /// Run a CPU miner in-process against this server (quick start).
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a new authority keypair and print it as config lines.
    Keygen,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.generate_config {
        print!("{}", config::commented_default());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Command::Keygen) = cli.command {
        let kp = AuthorityKeypair::generate();
        println!("authority_public_key = \"{}\"", kp.public());
        println!("authority_secret_key = \"{}\"", kp.secret());
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
    if let Some(p) = cli.payout {
        cfg.payout = p;
    }
    if cli.demo && cli.config.is_none() {
        // Quick start: a share (and, on regtest, a block) every couple of seconds.
        cfg.shares_per_minute = 30.0;
        cfg.status_interval_secs = 2;
    }
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
    match runtime.block_on(serve::run(cfg, cli.demo)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,solo_mining_server=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
