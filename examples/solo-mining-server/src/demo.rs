//! `--demo`: a CPU miner in the same process, connected to this server over loopback Noise,
//! so one command shows shares and blocks (on regtest nearly every share is a block).

use cpu_miner::handler::{HandlerOptions, Stop};
use cpu_miner::sha256d::Engine;
use cpu_miner::state::ChannelMode;
use cpu_miner::{MinerOptions, RunningMiner};
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tower_stratum::codec::AuthorityPublicKey;

/// Advertised hashrate per thread, H/s: a rough CPU figure; vardiff corrects it within a
/// vardiff period.
const NOMINAL_PER_THREAD: f32 = 5.0e6;

/// Starts the demo miner (one hashing thread, extended channel) against `server`, verifying
/// `authority`. The task ends when the miner stops (channel refused) and is aborted on exit.
pub(crate) fn spawn(
    server: SocketAddr,
    authority: AuthorityPublicKey,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let RunningMiner {
            handle,
            stats: _,
            mut stop_rx,
        } = cpu_miner::start(MinerOptions {
            upstreams: vec![tower_stratum::Endpoint::noise(
                server.to_string(),
                authority,
            )],
            failover_attempts: tower_stratum::DEFAULT_FAILOVER_ATTEMPTS,
            failback_interval: Some(tower_stratum::DEFAULT_FAILBACK_INTERVAL),
            mode: ChannelMode::Extended,
            user_identity: "demo".into(),
            nominal_hash_rate: NOMINAL_PER_THREAD,
            min_extranonce_size: 4,
            threads: 1,
            engine: Engine::detect(),
            handler: HandlerOptions {
                dump_protocol: false,
                accept_group_jobs: true,
                require_version_rolling: false,
                max_shares: None,
            },
        })?;
        let why = stop_rx.recv().await;
        handle.shutdown().await;
        match why {
            Some(Stop::ChannelRefused(e)) => Err(format!("channel refused: {e:?}")),
            _ => Ok(()),
        }
    })
}
