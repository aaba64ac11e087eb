//! Sv1 mode: the CPU miner as a Stratum V1 client, on tower-stratum's own Sv1 layer
//! (`tower_stratum::sv1` for messages and share math, `tower_stratum::sv1_service`'s
//! `Sv1ClientService` for the connection), sharing the hashing threads ([`crate::miner`]),
//! the engines ([`crate::sha256d`]) and the work walk ([`crate::work`]) with Sv2 mode.
//!
//! ```text
//!             ┌─────────────────── session task ───────────────────┐
//!  server ──► │ Sv1ClientService ─notifications─► Sv1State          │ ──watch<Work>──► hashing
//!  (Tap)  ◄── │   ◄─ mining.submit ◄─ prepare_submit ◄─ FoundShare  │ ◄──mpsc──────── threads
//!             └────────────────────────────────────────────────────┘
//! ```
//!
//! The session: `mining.configure` (BIP310 version rolling, mask `0x1fffe000`),
//! `mining.subscribe` (user agent `cpu-miner/<version>`), `mining.extranonce.subscribe`,
//! `mining.suggest_difficulty` (with [`Sv1MinerOptions::suggest_difficulty`]),
//! `mining.authorize`; then `mining.notify` jobs are hashed and shares submitted with
//! `mining.submit` (with the version bits as 6th param when rolling). Accepted and rejected
//! shares are counted from the server's answers. When the connection drops, the miner stops
//! hashing, logs why, and reconnects with exponential backoff ([`Sv1MinerOptions::reconnect`],
//! tower-stratum's [`Backoff`]); `client.reconnect` is followed (host/port/wait; the wait at
//! least [`Backoff::initial`] and at most 10 minutes).
//!
//! - [`state`]: the sans-IO protocol state (jobs, extranonce, difficulty, version mask).
//! - [`session`]: the task.
//! - [`dump`]: the `--dump-protocol` stream wrapper (every JSON line, `->` sent, `<-` received).

pub mod dump;
pub mod session;
pub mod state;

use crate::handler::Stop;
use crate::miner;
use crate::sha256d::Engine;
use crate::stats::Stats;
use state::Sv1State;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
pub use tower_stratum::Backoff;

/// The default of [`Sv1MinerOptions::reconnect`]: 1 s, doubled per attempt up to 60 s, never
/// giving up.
pub const DEFAULT_RECONNECT: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
    multiplier: 2.0,
    max_attempts: None,
};

/// What [`start`] needs: where to connect, who to be and how to mine.
#[derive(Debug, Clone)]
pub struct Sv1MinerOptions {
    /// `host:port` of the Sv1 server (pool or proxy), plain TCP.
    pub address: String,
    /// `mining.authorize` username (usually `account.worker`); also the worker name of every
    /// `mining.submit`.
    pub username: String,
    /// `mining.authorize` password.
    pub password: String,
    /// Hashing threads (at least 1).
    pub threads: usize,
    /// Hashing engine.
    pub engine: Engine,
    /// Print every JSON line sent (`-> `) and received (`<- `) on stdout.
    pub dump_protocol: bool,
    /// Send [`Stop::MaxShares`] once this many shares were accepted.
    pub max_shares: Option<u64>,
    /// Reconnection delays after a lost connection, in seconds: the `n`-th wait in a row is
    /// [`Backoff::delay`]`(n)` (0-based: `initial`, then times `multiplier`, at most `max`),
    /// back to `initial` once a connection got authorized (or after `client.reconnect`). No
    /// jitter (one miner per process). With `max_attempts`, the session ends after that many
    /// consecutive connections that failed before being authorized (the miner then stops:
    /// [`RunningSv1Miner::stop_rx`] closes). The CLI uses [`DEFAULT_RECONNECT`] with
    /// `--reconnect-delay` as `initial`.
    pub reconnect: Backoff,
    /// Sent as `mining.suggest_difficulty` before `mining.authorize` on every connection (a
    /// share difficulty: 1 = 2^32 hashes per share), so a server (e.g. translator-proxy,
    /// which starts miners at an ASIC-sized difficulty) starts this miner where it finds
    /// shares. `None`: not sent.
    pub suggest_difficulty: Option<f64>,
}

/// A running Sv1 miner: its handle, live counters, and why it stopped (if it does).
#[derive(Debug)]
pub struct RunningSv1Miner {
    /// Stops the miner.
    pub handle: Sv1MinerHandle,
    /// Hashes, shares submitted/accepted/rejected/stale.
    pub stats: Arc<Stats>,
    /// Receives [`Stop`] when the miner stops by itself ([`Stop::MaxShares`], or
    /// [`Stop::AuthorizeRefused`], after which the session has ended).
    pub stop_rx: mpsc::Receiver<Stop>,
}

/// Controls the session task. Dropping it stops the miner, like [`Sv1MinerHandle::shutdown`]
/// without waiting.
#[derive(Debug)]
#[must_use = "dropping the handle stops the miner"]
pub struct Sv1MinerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Sv1MinerHandle {
    /// Closes the connection and ends the session; the hashing threads stop at their next
    /// batch (about 4 ms).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Whether the session has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the Sv1 session task and the hashing threads on the current tokio runtime. It
/// connects in the background (and keeps reconnecting: see [`Sv1MinerOptions::reconnect`]).
///
/// # Errors
/// When the hashing threads cannot start.
pub fn start(opts: Sv1MinerOptions) -> Result<RunningSv1Miner, String> {
    let stats = Arc::new(Stats::default());
    let (work_tx, work_rx) = watch::channel(None);
    let (share_tx, share_rx) = mpsc::channel::<miner::FoundShare>(256);
    let (stop_tx, stop_rx) = mpsc::channel::<Stop>(4);
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    miner::spawn(
        opts.threads,
        opts.engine,
        &work_rx,
        share_tx,
        stats.clone(),
        tokio::runtime::Handle::current(),
    )
    .map_err(|e| format!("cannot start hashing threads: {e}"))?;
    let session = session::Session {
        address: opts.address.clone(),
        opts,
        state: Sv1State::new(),
        work: work_tx,
        shares: share_rx,
        stats: stats.clone(),
        stop: stop_tx,
    };
    let task = tokio::spawn(session.run(shutdown_rx));
    Ok(RunningSv1Miner {
        handle: Sv1MinerHandle {
            shutdown: Some(shutdown_tx),
            task,
        },
        stats,
        stop_rx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_reconnection_delays_double_from_1_s_up_to_60_s() {
        let s: Vec<u64> = (0..8)
            .map(|n| DEFAULT_RECONNECT.delay(n).as_secs())
            .collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(DEFAULT_RECONNECT.max_attempts, None, "retries forever");
    }
}
