//! Test doubles shared by every tower-stratum test: Sv2 message builders ([`msg`]), handlers
//! that record what they see ([`recording`]), a raw Sv2 peer that speaks frames over any
//! stream ([`peer`]), and helpers to run real peer processes ([`process`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod logs;
pub mod msg;
pub mod peer;
pub mod process;
pub mod recording;
pub mod solo;
pub mod sv1;
pub mod tools;

/// Waits for `f` with a deadline; panics with `what` if it does not complete in time.
/// Used instead of sleeps: tests wait on events, bounded.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}
