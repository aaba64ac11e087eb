//! The operator's log of peers dropped for their own fault (a broken rule, bad bytes, a missed
//! deadline, a peer that does not read), for every protocol of the connection runtime (Sv2 and
//! Sv1): one INFO line per dropped peer under the target
//! `tower_stratum::peer`, with its address and the reason, rate-limited for the whole process.

use std::net::SocketAddr;
use tracing::info;

/// Logs a peer dropped for its own fault at INFO under the target `tower_stratum::peer`, at
/// most [`PEER_LOG_PER_SECOND`] lines per second for the whole process (a flood of bad peers
/// cannot flood the log); the lines left out are counted in the next one.
pub fn dropped(peer: Option<SocketAddr>, reason: &dyn std::fmt::Display) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WINDOW: AtomicU64 = AtomicU64::new(u64::MAX);
    static IN_WINDOW: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let second = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    if WINDOW.swap(second, Ordering::Relaxed) != second {
        IN_WINDOW.store(0, Ordering::Relaxed);
    }
    if IN_WINDOW.fetch_add(1, Ordering::Relaxed) >= PEER_LOG_PER_SECOND {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    info!(
        target: "tower_stratum::peer",
        peer = %crate::connection::PeerAddr(peer),
        %reason,
        suppressed,
        "dropped peer"
    );
}

/// At most this many `dropped peer` lines per second (see [`dropped`]).
pub const PEER_LOG_PER_SECOND: u64 = 10;
