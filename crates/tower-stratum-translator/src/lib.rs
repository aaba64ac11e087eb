//! The Sv1 -> Sv2 translator as tower-stratum services.
//!
//! An [`Sv1ServerService`](tower_stratum_service::sv1::Sv1ServerService) whose handler
//! ([`TranslatorSv1Handler`]) owns the translation state ([`TranslatorCore`], sans-IO), linked
//! by sibling IO to an [`Sv2ClientService`](tower_stratum_service::Sv2ClientService) whose
//! Mining handler ([`TranslatorSv2Handler`]) relays the upstream's messages. [`spawn`] wires
//! both and the upstream failover; the periodic work runs on the Sv1 handler's timer.
//!
//! - Modes ([`ChannelMode`]): aggregated (one upstream extended channel, each miner a
//!   distinct extranonce1 = `extranonce_prefix || 2 local bytes || zeros`) and per-miner (one
//!   extended channel per miner, closed with `CloseChannel` when the miner leaves; group
//!   channel jobs apply to every member).
//! - Jobs: `NewExtendedMiningJob` + `SetNewPrevHash` become `mining.notify` (coinb1 =
//!   coinbase prefix, coinb2 = coinbase suffix, merkle path as branches, prev hash in Sv1's
//!   word-swapped form, `clean_jobs` on a new tip).
//! - Truthful results: see [`TranslatorCore`]. A miner hears `true` only for a share the
//!   upstream accepted.
//! - Version rolling: `mining.configure` grants `miner mask AND BIP320 mask` only if the
//!   upstream allows rolling (by default the translator requires it at `SetupConnection`).
//! - Difficulty: per-miner vardiff toward `shares_per_minute`, `mining.suggest_difficulty`
//!   within bounds, never below the upstream channel's difficulty; `UpdateChannel` debounced.
//! - Extranonce changes (upstream `SetExtranoncePrefix`, a new channel after an upstream
//!   reconnect or failover): `mining.set_extranonce` to miners that subscribed to it,
//!   `client.reconnect` (or a close) to the others.
//! - Session resume: the subscription id (the extranonce1 hex first given) presented as
//!   session id in `mining.subscribe` within `resume_grace` gives the same extranonce1,
//!   difficulty and the last job. Aggregated mode keeps the miner's slot; per-miner mode keeps
//!   its upstream channel open (`CloseChannel` when the grace period ends).
//! - Upstream failover along an ordered list, with fail-back to the primary.
//! - Worker-specific hashrate tracking (extension `0x0002`, requested by default): when the
//!   upstream negotiates it, every `SubmitSharesExtended` carries the miner's Sv1 worker name
//!   ([`worker_name`] of its `mining.authorize` username: after the first `.`, at most 32
//!   bytes) as the `user_identity` TLV
//!   ([`TranslatorConfig::worker_hashrate_tracking`]).
//!
//! ```no_run
//! use tower_stratum_translator::{spawn, TranslatorServiceConfig, UpstreamConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = TranslatorServiceConfig {
//!     upstreams: vec![UpstreamConfig {
//!         address: "127.0.0.1:34254".into(),
//!         authority_key: Some("9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72".parse()?),
//!         user_identity: "my-account".into(),
//!     }],
//!     ..TranslatorServiceConfig::default()
//! };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:34255").await?;
//! let translator = spawn(config, listener)?;
//! // ... later
//! println!("{:?}", translator.stats());
//! translator.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod core;
mod handlers;
mod service;
mod stats;

pub use crate::core::{
    map_upstream_error, worker_name, TranslatorCore, UpstreamEvent, AGGREGATED_LOCAL_BYTES,
    BAD_EXTRANONCE2, BAD_VERSION_BITS, NO_VERDICT, UPSTREAM_BUSY, UPSTREAM_UNAVAILABLE,
};
pub use config::{ChannelMode, ConfigError, ExtranonceChange, TranslatorConfig, UpstreamConfig};
pub use handlers::{TranslatorSv1Handler, TranslatorSv2Handler};
pub use service::{spawn, TranslatorHandle, TranslatorServiceConfig};
pub use stats::TranslatorStats;
