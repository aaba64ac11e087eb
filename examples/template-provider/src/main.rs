//! `template-provider`: a regtest Sv2 Template Provider (spec 7) serving tower-stratum's
//! embedded template source over Noise.
//!
//! By default templates are coinbase-only regtest blocks on a chain that starts at the regtest genesis
//! block: BIP34 height in `coinbase_prefix`, `nBits` 0x207fffff, the witness commitment as the
//! only template output, the whole subsidy (50 BTC, halving every 150 blocks) in
//! `coinbase_tx_value_remaining`. The Template Provider pays nobody: the pool (or JDC) adds its
//! payout outputs before the template's outputs (spec 7.2). A `SubmitSolution` that rebuilds to
//! a valid block becomes the new tip; without one, a simulated block from "another miner"
//! moves the tip every `--interval-secs`.
//!
//! With `--mempool-txs N` the source also keeps a synthetic mempool: N legacy and SegWit
//! transactions every `--mempool-interval-secs` (spending earlier coinbases and each other),
//! at most `--mempool-max-txs` kept (lowest feerate evicted). Each new tip's template then
//! carries a fee-ordered selection of them (merkle path, witness commitment, subsidy plus
//! fees), and `RequestTransactionData` lists them. Start with `--history-blocks 3` or more so
//! there are coinbases to spend before the first block is found.
//!
//! Prints `LISTENING <ip:port>` on stdout once the socket is bound, then one status line per
//! new template and per block; logs go to stderr (`RUST_LOG`, default `info`; coloured only on
//! a terminal). Stops gracefully on Ctrl-C or SIGTERM. Exit status: 0 after a graceful stop, 1
//! on a runtime failure (e.g. the address is in use: one `error: …` line), 2 on a usage error
//! (e.g. a bad key).
//!
//! ```sh
//! cargo run -p template-provider -- --listen 127.0.0.1:8442 --interval-secs 30
//! ```

use clap::Parser;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tower_stratum::codec::{AuthorityKeypair, SRI_TEST_AUTHORITY_SECRET_KEY};
use tower_stratum::stratum_core::bitcoin::{hashes::Hash, BlockHash};
use tower_stratum::{ServerConfig, ServerTransport};
use tower_stratum_template::mempool::MempoolConfig;
use tower_stratum_template::{
    BlockOrigin, SourceConfig, SourceEvent, TemplateDistributionServer, TemplateServerConfig,
    TemplateUpdate,
};

/// A regtest Sv2 Template Provider.
#[derive(Parser, Debug)]
#[command(name = "template-provider", version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; see the LISTENING line).
    #[arg(long, default_value = "127.0.0.1:8442")]
    listen: SocketAddr,
    /// Simulate another miner's block this many seconds after the last new tip (0: never).
    #[arg(long, default_value_t = 600)]
    interval_secs: u64,
    /// Authority secret key (base58check, SRI's format) that signs the Noise certificate.
    /// Default: SRI's PUBLIC test key (anyone can impersonate this server).
    #[arg(long)]
    authority_secret_key: Option<String>,
    /// Noise certificate validity, seconds.
    #[arg(long, default_value_t = 3600)]
    cert_validity_secs: u64,
    /// Send templates only after a client's CoinbaseOutputConstraints (spec 7 to the letter)
    /// instead of right after SetupConnection.
    #[arg(long)]
    wait_for_constraints: bool,
    /// Synthetic mempool transactions generated per `--mempool-interval-secs` (0: none, the
    /// templates stay coinbase-only).
    #[arg(long, default_value_t = 0)]
    mempool_txs: u32,
    /// Seconds between mempool generation rounds.
    #[arg(long, default_value_t = 10)]
    mempool_interval_secs: u64,
    /// Most mempool transactions kept (the lowest feerate is evicted first).
    #[arg(long, default_value_t = 1000)]
    mempool_max_txs: usize,
    /// Blocks mined at start (their coinbases fund the mempool).
    #[arg(long, default_value_t = 0)]
    history_blocks: u32,
}

fn hash_hex(u256: &[u8]) -> String {
    let mut b = [0u8; 32];
    if u256.len() == 32 {
        b.copy_from_slice(u256);
    }
    BlockHash::from_byte_array(b).to_string()
}

fn status_template(u: &TemplateUpdate) -> String {
    let t = &u.new_template;
    let p = &u.set_new_prev_hash;
    format!(
        "template {} height {} prev_hash {} nbits {:08x} header_timestamp {} value_remaining {} sat merkle_path {}",
        t.template_id,
        u.height,
        hash_hex(p.prev_hash.as_bytes()),
        p.n_bits,
        p.header_timestamp,
        t.coinbase_tx_value_remaining,
        t.merkle_path.len(),
    )
}

/// A failure and its exit status: 1 at runtime, 2 for usage.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

fn runtime(message: String) -> Failure {
    Failure { code: 1, message }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            std::process::ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let secret = match &cli.authority_secret_key {
        Some(k) => k
            .parse()
            .map_err(|e| usage(format!("--authority-secret-key: {e}")))?,
        None => {
            eprintln!(
                "\n*** WARNING: using SRI's PUBLIC test authority key ***\n\
                 *** anyone can impersonate this Template Provider. ***\n\
                 *** Pass --authority-secret-key for anything but tests. ***\n"
            );
            SRI_TEST_AUTHORITY_SECRET_KEY
                .parse()
                .map_err(|e| runtime(format!("the built-in test key: {e}")))?
        }
    };
    let keypair = AuthorityKeypair::from_secret(secret);
    eprintln!("authority public key: {}", keypair.public());

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| runtime(format!("cannot listen on {}: {e}", cli.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| runtime(format!("listener address: {e}")))?;

    let (events_tx, mut events) = mpsc::channel(256);
    let server = TemplateDistributionServer::new(TemplateServerConfig {
        source: SourceConfig {
            tip_interval: Duration::from_secs(cli.interval_secs),
            history_blocks: cli.history_blocks,
            mempool: MempoolConfig {
                tx_interval: Duration::from_secs(cli.mempool_interval_secs),
                txs_per_interval: cli.mempool_txs,
                max_transactions: cli.mempool_max_txs,
                ..MempoolConfig::default()
            },
            ..SourceConfig::default()
        },
        send_on_connect: !cli.wait_for_constraints,
    })
    .map_err(|e| usage(format!("template source: {e}")))?
    .with_events(events_tx);
    let config = ServerConfig::with_transport(ServerTransport::Noise {
        keypair,
        cert_validity: Duration::from_secs(cli.cert_validity_secs),
    });
    let (_service, handle) = server.serve(config, listener);
    // Handlers installed before LISTENING: a SIGTERM right after it is a graceful stop.
    let mut stop = tower_stratum::shutdown::Shutdown::listen()
        .map_err(|e| runtime(format!("cannot watch for Ctrl-C/SIGTERM: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "LISTENING {local}");
        let _ = out.flush();
    }

    loop {
        tokio::select! {
            _ = stop.recv() => break,
            e = events.recv() => match e {
                Some(SourceEvent::Templates(u)) => println!("{}", status_template(&u)),
                Some(SourceEvent::Block(b)) => {
                    let by = match b.origin {
                        BlockOrigin::Solution { template_id } => {
                            format!("solution for template {template_id}")
                        }
                        BlockOrigin::Simulated => "simulated other miner".to_string(),
                    };
                    println!(
                        "block {} height {} ({by}) transactions {}",
                        b.hash,
                        b.height,
                        b.block.txdata.len().saturating_sub(1)
                    );
                }
                Some(SourceEvent::SolutionRejected { template_id, error }) => {
                    println!("solution for template {template_id} rejected: {error}");
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    handle.shutdown().await;
    Ok(())
}
