//! What the coordinator and its worker processes say to each other.
//!
//! The coordinator starts each worker as `stratum-load worker '<WorkerSpec as JSON>'`, then
//! talks over pipes, one line per message:
//!
//! - worker -> coordinator (stdout): [`WorkerEvent`] as JSON: `progress` every second,
//!   `ready` once every connection is set up (or failed), `done` after the share window and
//!   its drain, `fatal` if the worker cannot run.
//! - coordinator -> worker (stdin): `go` (start submitting shares), `stop` (stop submitting,
//!   drain, report `done`), `exit` or end of file (close every connection and exit).

use crate::hist::Histogram;
use crate::job::ChannelKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

/// How each connection is set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConnSpec {
    /// Server address.
    pub(crate) addr: SocketAddr,
    /// `true`: plaintext Sv2 frames; `false`: Noise NX.
    pub(crate) plaintext: bool,
    /// Authority public key (base58check) that must sign the server's Noise certificate;
    /// `None`: the server is not authenticated.
    pub(crate) authority_key: Option<String>,
    /// Send `SetupConnection` (Mining, v2) after the handshake.
    pub(crate) setup: bool,
    /// Open a channel of this kind after `SetupConnection.Success`.
    pub(crate) channel: Option<ChannelKind>,
    /// `user_identity` of the channel (the connection index is appended).
    pub(crate) user_identity: String,
    /// `nominal_hash_rate` announced, H/s.
    pub(crate) nominal_hash_rate: f32,
    /// `min_extranonce_size` for extended channels, bytes.
    pub(crate) min_extranonce_size: u16,
    /// Skip hashes that would be blocks while the channel target allows (see `job`).
    pub(crate) avoid_blocks: bool,
    /// Deadline for TCP connect, handshake, setup and the channel's first job, ms.
    pub(crate) connect_timeout_ms: u64,
    /// `Some`: speak Stratum V1 to a proxy (plain TCP) instead of Sv2; `plaintext`,
    /// `authority_key`, `channel`, `nominal_hash_rate` and `min_extranonce_size` do not apply.
    #[serde(default)]
    pub(crate) sv1: Option<Sv1Spec>,
}

/// How each Sv1 miner sets up (see `crate::sv1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sv1Spec {
    /// `version-rolling.mask` asked for in `mining.configure`; 0 = no `mining.configure` (and
    /// no version rolling).
    pub(crate) version_rolling_mask: u32,
    /// `version-rolling.min-bit-count` asked for.
    pub(crate) version_rolling_min_bit_count: u32,
    /// Difficulty asked for with `mining.suggest_difficulty` after `mining.subscribe`
    /// (`None`: not sent).
    pub(crate) suggest_difficulty: Option<f64>,
    /// `mining.authorize` password.
    pub(crate) password: String,
}

/// How each connection submits shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShareSpec {
    /// Shares per second per connection; `0` = as fast as the window allows.
    pub(crate) rate_per_conn: f64,
    /// Shares submitted and not yet acknowledged, per connection, at most.
    pub(crate) in_flight: u32,
    /// Nonces tried per share at most before sending a share that misses the target.
    pub(crate) max_hashes: u32,
    /// After `stop`, how long to wait for outstanding acknowledgements, ms.
    pub(crate) drain_ms: u64,
}

/// One worker process's part of the load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// Worker number, from 0.
    pub(crate) index: usize,
    /// Global index of this worker's first connection.
    pub(crate) first_conn: u64,
    /// Connections this worker opens.
    pub(crate) connections: u64,
    /// Source addresses, assigned round robin by global connection index; empty = let the
    /// kernel choose.
    pub(crate) sources: Vec<Ipv4Addr>,
    /// Connection attempts (connect + handshake + setup) in flight at once.
    pub(crate) connect_in_flight: usize,
    /// Tokio worker threads (1 = current-thread runtime).
    pub(crate) threads: usize,
    /// Per-connection setup.
    pub(crate) conn: ConnSpec,
    /// Share submission; `None` = hold the connections idle.
    pub(crate) shares: Option<ShareSpec>,
}

/// Running totals a worker reports every second.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Connections set up.
    pub(crate) established: u64,
    /// Connections that failed to set up.
    pub(crate) failed: u64,
    /// Established connections the server has closed since.
    pub(crate) closed: u64,
    /// Shares sent.
    pub(crate) sent: u64,
    /// Shares acknowledged (`SubmitShares.Success` or `.Error`).
    pub(crate) acked: u64,
    /// Shares rejected (`SubmitShares.Error`).
    pub(crate) rejected: u64,
}

/// Connection-phase results of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ReadyReport {
    /// Connections set up.
    pub(crate) established: u64,
    /// Connections that failed.
    pub(crate) failed: u64,
    /// From the first connection attempt to the last connection set up or failed, seconds.
    pub(crate) connect_secs: f64,
    /// From the first attempt to the last Noise handshake completed, seconds.
    pub(crate) handshake_secs: f64,
    /// TCP connect + Noise handshake, per connection.
    pub(crate) handshake: Histogram,
    /// `SetupConnection` -> `.Success`.
    pub(crate) setup: Histogram,
    /// `Open…MiningChannel` -> first job ready to mine.
    pub(crate) channel: Histogram,
    /// Failures by kind.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Sv1: miners whose `mining.configure` granted version rolling.
    #[serde(default)]
    pub(crate) version_rolling_granted: u64,
}

/// Share-phase results of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DoneReport {
    /// Totals at the end of the drain.
    pub(crate) totals: Progress,
    /// Shares sent when `stop` arrived.
    pub(crate) sent_at_stop: u64,
    /// Shares acknowledged when `stop` arrived.
    pub(crate) acked_at_stop: u64,
    /// Shares answered by `SubmitShares.Success`.
    pub(crate) accepted: u64,
    /// Sum of `new_submits_accepted_count` over every `SubmitShares.Success` (the server's
    /// own count; differs from `accepted` only if the server miscounts).
    pub(crate) server_accepted: u64,
    /// Shares still unacknowledged after the drain.
    pub(crate) unacknowledged: u64,
    /// Shares whose hash met the network target (blocks).
    pub(crate) blocks: u64,
    /// Shares sent although their hash missed the channel target (search budget exhausted).
    pub(crate) below_target: u64,
    /// Header hashes computed.
    pub(crate) hashes: u64,
    /// Rate-limited mode: ticks that found the window full (shares not sent).
    pub(crate) window_full: u64,
    /// Submit -> acknowledgement, every acknowledged share.
    pub(crate) latency: Histogram,
    /// Errors and rejections by kind (`rejected: <error_code>`, …).
    pub(crate) errors: BTreeMap<String, u64>,
    /// Sv1: lowest and highest share difficulty the proxy had set, over the miners, when they
    /// were set up and when they stopped submitting (`None`: no `mining.set_difficulty`).
    #[serde(default)]
    pub(crate) difficulty_range: Option<(f64, f64)>,
}

/// A line a worker writes on its stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum WorkerEvent {
    /// Running totals.
    Progress(Progress),
    /// Every connection set up or failed.
    Ready(ReadyReport),
    /// Share window over and drained.
    Done(DoneReport),
    /// The worker cannot run (bad spec, file limit, runtime).
    Fatal {
        /// Why.
        message: String,
    },
}
