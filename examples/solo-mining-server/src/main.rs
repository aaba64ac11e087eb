//! `solo-mining-server`: a Stratum V2 solo-mining server.
//!
//! ```text
//! solo-mining-server                       # serve 127.0.0.1:34254 with embedded regtest templates
//! solo-mining-server --config server.toml  # see --generate-config for every option
//! solo-mining-server --demo                # plus a built-in CPU miner: shares and blocks in seconds
//! solo-mining-server keygen                # a new authority keypair
//! solo-mining-server blocks list [--json]  # the found blocks kept in blocks_dir
//! solo-mining-server blocks submit <file>  # hand a kept block to a Template Provider
//! ```
//!
//! Exit codes: 0 normal end (also after Ctrl-C or SIGTERM: graceful shutdown, final status
//! line), 1 runtime failure (cannot bind, a hand submission not confirmed), 2 usage or
//! configuration error.

mod blocks;
mod config;
mod demo;
mod serve;

use clap::{Parser, Subcommand};
use config::{Config, TemplateSource};
use serve::Failure;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;
use tower_stratum::codec::{AuthorityKeypair, AuthorityPublicKey};

/// Command line. Flags override the config file.
#[derive(Debug, Parser)]
#[command(name = "solo-mining-server", version, about)]
struct Cli {
    /// TOML configuration file (see --generate-config).
    #[arg(long, short, global = true)]
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
    /// Directory of kept blocks (overrides `blocks_dir`).
    #[arg(long, global = true)]
    blocks_dir: Option<String>,
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
    /// The found blocks kept in `blocks_dir`.
    #[command(subcommand)]
    Blocks(BlocksCommand),
}

#[derive(Debug, Subcommand)]
enum BlocksCommand {
    /// List the kept blocks, oldest first (height, hash, status, attempts, worker, file).
    List {
        /// Print the records as a JSON array instead.
        #[arg(long)]
        json: bool,
    },
    /// Send a kept block (`<height>-<hash>.block` or its `.json`) to a Template Provider as
    /// SubmitSolution and wait for its tip to become the block. Exit 0 when confirmed.
    Submit {
        /// The kept block's `.block` or `.json` file.
        file: PathBuf,
        /// `host:port` of the Template Provider (default: the configured Sv2 template source).
        #[arg(long)]
        template_provider: Option<String>,
        /// Its authority public key (default: the configured one; empty = not authenticated).
        #[arg(long)]
        authority_key: Option<String>,
        /// Seconds to wait for the connection and for the confirmation.
        #[arg(long, default_value_t = 15)]
        wait_secs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.generate_config {
        print!("{}", config::commented_default());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Keygen) = cli.command {
        let kp = AuthorityKeypair::generate();
        println!("authority_public_key = \"{}\"", kp.public());
        println!("authority_secret_key = \"{}\"", kp.secret());
        return ExitCode::SUCCESS;
    }
    let mut cfg = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
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
    if let Some(d) = cli.blocks_dir {
        cfg.blocks_dir = d;
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
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Some(Command::Blocks(BlocksCommand::List { json })) => {
            blocks::list(std::path::Path::new(&cfg.blocks_dir), json)
        }
        Some(Command::Blocks(BlocksCommand::Submit {
            file,
            template_provider,
            authority_key,
            wait_secs,
        })) => match submit_target(&cfg, template_provider, authority_key) {
            Ok((address, authority)) => runtime.block_on(blocks::submit(
                &file,
                &address,
                authority,
                Duration::from_secs(wait_secs.max(1)),
            )),
            Err(e) => Err(e),
        },
        Some(Command::Keygen) | None => runtime.block_on(serve::run(cfg, cli.demo)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The Template Provider a hand submission goes to: the flag, else the configured Sv2 source.
fn submit_target(
    cfg: &Config,
    address: Option<String>,
    key: Option<String>,
) -> Result<(String, Option<AuthorityPublicKey>), Failure> {
    let (cfg_address, cfg_key) = match &cfg.template_source {
        TemplateSource::Sv2 {
            address,
            authority_public_key,
            ..
        } => (Some(address.clone()), authority_public_key.clone()),
        TemplateSource::Embedded { .. } => (None, String::new()),
    };
    let address = address.or(cfg_address).ok_or_else(|| {
        Failure::Config(
            "no Template Provider: pass --template-provider HOST:PORT (the configured template \
             source is the embedded one, which lives only inside a running server)"
                .into(),
        )
    })?;
    let key = key.unwrap_or(cfg_key);
    let authority = if key.is_empty() {
        None
    } else {
        Some(
            AuthorityPublicKey::from_str(&key)
                .map_err(|e| Failure::Config(format!("authority key: {e}")))?,
        )
    };
    Ok((address, authority))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,solo_mining_server=info,tower_stratum_mining::keeper=info,tower_stratum::peer=info",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
