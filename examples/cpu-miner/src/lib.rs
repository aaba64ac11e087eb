//! # cpu-miner
//!
//! A Stratum V2 CPU miner built on tower-stratum's `Sv2ClientService`: it opens a standard or
//! an extended channel (spec 5.2) on the upstream's Mining Protocol endpoint, mines the jobs it
//! receives on OS threads and submits the shares it finds ([`start`]). Given several upstreams
//! it is on one at a time: the library's client fails over to the next after failed attempts
//! and back to the first when it answers again, and the miner opens its channel on each new
//! connection ([`MinerOptions::upstreams`]). It also speaks Stratum
//! V1 ([`sv1::start`], selected by a `stratum+tcp://` URL on the command line) on
//! tower-stratum's `Sv1ClientService`, with the same hashing threads. See `cpu-miner --help`
//! for the command line and `docs/PERFORMANCE.md` ("CPU miner") for its hashrate.
//!
//! ```text
//!               ┌────────────── hub task (tower-stratum) ──────────────┐
//!  upstream ──► │ inbound stack: [DumpLayer] → MinerHandler(MinerState) │ ──watch<Work>──► hashing
//!               └──────────────────────────────────────────────────────┘                 threads
//!  upstream ◄── Sv2ClientService ◄── Request::SendUpstream ◄── submitter ◄──mpsc<FoundShare>───┘
//! ```
//!
//! - [`state`]: the Mining Protocol state (channel, jobs, chain tip, target), sans-IO.
//! - [`handler`]: the `Sv2MiningClientHandler` shell that publishes [`work::Work`].
//! - [`work`]: header, coinbase and merkle-root construction; the search-space walk (BIP320
//!   version rolling, miner-owned extranonce, ntime).
//! - [`sha256d`]: midstate-based sha256d nonce scanning, SHA-NI multi-lane or portable.
//! - [`miner`]: the hashing threads; [`submit`]: the share submitter; [`dump`]: the
//!   `--dump-protocol` layer; [`stats`]: counters.
//! - [`sv1`]: Sv1 mode (its own sans-IO state, session task and `--dump-protocol` tap).
//!
//! ## `unsafe`
//!
//! The workspace forbids `unsafe`. This crate denies it instead and allows it at exactly one
//! place, [`sha256d::Engine::scan`], to call the SHA-NI kernel (a `#[target_feature]`
//! function, which Rust only lets safe code call from code compiled with the same features)
//! after run-time detection of those features. The kernel itself is safe code. Without it the
//! miner would be limited to one SHA-256 compression stream at a time (`--engine portable`):
//! 1.8x fewer hashes per second on the machine measured in `docs/PERFORMANCE.md`.

pub mod dump;
pub mod handler;
pub mod miner;
pub mod sha256d;
pub mod state;
pub mod stats;
pub mod submit;
pub mod sv1;
pub mod work;

use handler::{HandlerOptions, MinerHandler, Stop};
use sha256d::Engine;
use state::{ChannelMode, ChannelRequest, MinerState};
use stats::Stats;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tower::util::option_layer;
use tower_stratum::{ClientConfig, ClientHandle, Endpoint, Subprotocol, Sv2ClientService};

/// What [`start`] needs: where to connect and how to mine.
#[derive(Debug, Clone)]
pub struct MinerOptions {
    /// The Sv2 mining servers in order of preference (at least one): the first is the
    /// primary, the others backups ([`ClientConfig::endpoints`]). Usually
    /// [`Endpoint::noise`]`(host:port, authority key)`: its Noise certificate must be signed by
    /// that key.
    pub upstreams: Vec<Endpoint>,
    /// Move to the next upstream after this many consecutive failed attempts
    /// ([`ClientConfig::failover_attempts`]; default
    /// [`tower_stratum::DEFAULT_FAILOVER_ATTEMPTS`]).
    pub failover_attempts: u32,
    /// While on a backup, probe the first upstream this often and go back to it when it
    /// answers; `None`: never ([`ClientConfig::failback_interval`]; default
    /// [`tower_stratum::DEFAULT_FAILBACK_INTERVAL`], 60 s).
    pub failback_interval: Option<std::time::Duration>,
    /// Standard or extended channel.
    pub mode: ChannelMode,
    /// `user_identity` of the channel (at most 255 bytes).
    pub user_identity: String,
    /// Advertised nominal hashrate, H/s.
    pub nominal_hash_rate: f32,
    /// `min_extranonce_size` for extended channels, bytes.
    pub min_extranonce_size: u16,
    /// Hashing threads.
    pub threads: usize,
    /// Hashing engine.
    pub engine: Engine,
    /// Handler behaviour.
    pub handler: HandlerOptions,
}

/// A running miner: its client handle, live counters, and why it stopped (if it does).
#[derive(Debug)]
pub struct RunningMiner {
    /// The Sv2 client; `shutdown()` it to stop.
    pub handle: ClientHandle,
    /// Hashes, shares submitted/accepted/rejected.
    pub stats: Arc<Stats>,
    /// Receives [`Stop`] when the miner stops by itself (max shares, channel refused).
    pub stop_rx: mpsc::Receiver<Stop>,
}

/// Connects, opens the channel and starts the hashing threads and the share submitter on the
/// current tokio runtime. Errors if `upstreams` is empty, `user_identity` is not a valid
/// STR0_255 or the threads cannot start.
pub fn start(opts: MinerOptions) -> Result<RunningMiner, String> {
    if opts.upstreams.is_empty() {
        return Err("no upstream".into());
    }
    let user_identity = tower_stratum::session::str0255(&opts.user_identity)
        .ok_or("user identity: not a valid STR0_255")?;
    let dump = opts.handler.dump_protocol;
    let stats = Arc::new(Stats::default());
    let (work_tx, work_rx) = watch::channel(None);
    let (share_tx, share_rx) = mpsc::channel::<miner::FoundShare>(256);
    let (stop_tx, stop_rx) = mpsc::channel::<Stop>(4);
    let state = MinerState::new(ChannelRequest {
        mode: opts.mode,
        user_identity,
        nominal_hash_rate: opts.nominal_hash_rate,
        min_extranonce_size: opts.min_extranonce_size,
    });
    let handler = MinerHandler::new(state, opts.handler, work_tx, stats.clone(), stop_tx);
    let config = ClientConfig {
        vendor: "tower-stratum cpu-miner".into(),
        failover_attempts: opts.failover_attempts,
        failback_interval: opts.failback_interval,
        ..ClientConfig::default()
    }
    .upstreams(Subprotocol::Mining, opts.upstreams);
    let (service, handle) = Sv2ClientService::builder()
        .config(config)
        .layer(option_layer(dump.then_some(dump::DumpLayer)))
        .mining(handler)
        .start();
    tokio::spawn(submit::run(
        share_rx,
        service,
        work_rx.clone(),
        stats.clone(),
        dump,
    ));
    miner::spawn(
        opts.threads,
        opts.engine,
        &work_rx,
        share_tx,
        stats.clone(),
        tokio::runtime::Handle::current(),
    )
    .map_err(|e| format!("cannot start hashing threads: {e}"))?;
    Ok(RunningMiner {
        handle,
        stats,
        stop_rx,
    })
}
