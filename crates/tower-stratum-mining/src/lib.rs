//! A reusable Stratum V2 mining server handler: [`MiningServer`] implements
//! [`Sv2MiningServerHandler`](tower_stratum_core::handler::Sv2MiningServerHandler) on SRI's
//! `channels_sv2` (standard, extended and group channels, job factory and job store,
//! extranonce allocation, share validation and accounting) following SRI `pool_sv2`'s channel
//! manager, plus sans-IO classic vardiff, block assembly and stats.
//!
//! - [`MiningServer`] / [`MiningServerConfig`]: the handler and its configuration.
//! - Templates come in, and solutions go out, through the service's sibling link (Template
//!   Distribution messages); see [`MiningServer`]'s "Wiring".
//! - Time for vardiff, the hashrate estimate, resubmissions and stats: the server's own
//!   handler timer (`poll_timeout` / `on_timer`, every
//!   [`timer_period`](MiningServerConfig::timer_period), default 1 s), driven by the service;
//!   see [`MiningServer`]'s "Time".
//! - [`FoundBlock`], [`MiningStats`], [`WorkerStats`], [`MiningEvent`]: what the server
//!   reports. Per-worker figures come from extension `0x0002` (Worker-Specific Hashrate
//!   Tracking: the `user_identity` TLV of each share, negotiated by default) or else from the
//!   channel's `user_identity`.
//! - [`BlockKeeper`] / [`BlockEvent`]: found blocks handed out synchronously (before the
//!   share is answered and before `SubmitSolution` goes out), resubmitted until the template
//!   source confirms them or they are stale ([`keeper`]); [`BlockStore`] keeps them durably
//!   in a directory (`<height>-<hash>.block` + `.json`).
//! - [`validate_block`] / [`BlockValidationError`]: a found block checked with rust-bitcoin
//!   (merkle root, witness commitment, BIP34 height, proof of work against `nBits`, size and
//!   weight, duplicate and conflicting spends, parents before children); a block completed
//!   from `RequestTransactionData.Success` is checked and a failure logged.
//! - [`share_math`]: difficulty <-> target, header and merkle computations (checked against
//!   known-answer vectors in `tests/vectors.rs`).
//! - [`vardiff`]: SRI's classic vardiff with the clock passed in.
//! - [`miner_channel`]: the other side, for miners and proxies: [`MinerChannel`], one channel's
//!   jobs, future jobs, chain tip and target as a downstream of a pool sees them (sans-IO).
//!
//! # Example
//!
//! ```no_run
//! use tower_stratum_core::stratum_core::bitcoin::ScriptBuf;
//! use tower_stratum_mining::{MiningEvent, MiningServer, MiningServerConfig};
//!
//! # fn payout() -> ScriptBuf { ScriptBuf::new() }
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MiningServerConfig {
//!     coinbase_output_script: payout(), // your scriptPubKey
//!     pool_signature: "my-pool".into(),
//!     ..MiningServerConfig::default()
//! };
//! let server = MiningServer::new(config)?.with_event_sink(|event| {
//!     // Every `timer_period` (1 s): the stats, with no ticker task.
//!     if let MiningEvent::Stats(s) = event {
//!         println!("{} shares accepted", s.shares_accepted);
//!     }
//! });
//! // Serve it: `Sv2ServerService::new_with_sibling_io(cfg, listener, server, ..)` and give the
//! // sibling channels (`SiblingIo::into_channels`) to a template source. The service calls
//! // the server's `on_timer` at the deadlines its `poll_timeout` asks for.
//! # let _ = server;
//! # Ok(()) }
//! ```

mod block;
mod channel;
mod config;
pub mod keeper;
pub mod miner_channel;
mod server;
mod store;
/// Re-export of [`tower_stratum_core::share_math`] (it lives in the core so the Sv1 layer and
/// miners use the same code without depending on this crate).
pub use tower_stratum_core::share_math;
mod stats;
pub mod vardiff;

pub use block::{
    bip34_height, check_transactions, serialize_block, validate_block, AssemblyError,
    BlockValidationError, FoundBlock, MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_WEIGHT,
};
pub use config::{ConfigError, MiningServerConfig};
pub use keeper::{BlockEvent, BlockKeeper, SubmitTrigger};
pub use miner_channel::{ChannelWork, MinerChannel};
pub use server::{
    MiningEvent, MiningServer, ERROR_CODE_INTERNAL, ERROR_CODE_INVALID_USER_IDENTITY,
    MAX_BLOCKS_PER_PARENT,
};
pub use stats::{MiningStats, WorkerStats};
pub use store::{
    write_durably, BlockRecord, BlockStatus, BlockStore, KeptBlock, StoreError, SubmitAttempt,
    BLOCK_EXTENSION, RECORD_EXTENSION,
};
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
#[cfg(test)]
mod tests;
