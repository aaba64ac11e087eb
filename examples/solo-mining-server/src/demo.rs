//! `--demo`: a CPU miner in the same process, connected to this server over loopback Noise.

use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tower_stratum::codec::AuthorityPublicKey;

/// Starts the demo miner against `server`, verifying `authority`.
pub(crate) fn spawn(
    server: SocketAddr,
    authority: AuthorityPublicKey,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let _ = (server, authority);
        Err("the demo miner is not wired yet".to_string())
    })
}
