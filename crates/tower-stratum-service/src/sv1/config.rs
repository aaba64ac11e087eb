//! Configuration of the Sv1 services, with documented defaults.

use std::time::Duration;
use tower_stratum_sv1::Sv1SessionConfig;

/// The default maximum line a miner may send, in bytes: 16 KiB. A `mining.submit` is about
/// 150 bytes and a `mining.configure` with every BIP310 extension under 1 KiB.
pub const DEFAULT_SERVER_MAX_LINE: usize = 16 * 1024;

/// [`Sv1ServerService`](crate::sv1::Sv1ServerService) configuration. Every field has a documented
/// default ([`Sv1ServerConfig::default`]).
#[derive(Debug, Clone)]
pub struct Sv1ServerConfig {
    /// Setup and inactivity deadlines, worker bounds. Default [`Sv1SessionConfig::default`]:
    /// 30 s to subscribe and authorize, 900 s of silence.
    pub session: Sv1SessionConfig,
    /// Longest line accepted from a miner, bytes (terminator excluded). A longer line closes
    /// the connection ([`Sv1CloseReason::LineTooLong`](crate::sv1::Sv1CloseReason::LineTooLong)).
    /// Default [`DEFAULT_SERVER_MAX_LINE`].
    pub max_line_length: usize,
    /// Per-connection outbound queue, in messages. A push that finds it full disconnects the
    /// miner ([`Sv1CloseReason::SlowConsumer`](crate::sv1::Sv1CloseReason::SlowConsumer)).
    /// Default 256.
    pub outbound_queue: usize,
    /// A write to a miner that does not finish within this bound disconnects it; while a
    /// write is pending, nothing is read from that miner. Default 30 s.
    pub write_timeout: Duration,
    /// Capacity of the queue into the handler task (lines from all connections and
    /// application requests). When full, connections stop reading. Default 1024.
    pub handler_queue: usize,
    /// Capacity of each direction of a sibling link made by
    /// [`Sv1ServerBuilder::with_sibling_io`](crate::sv1::Sv1ServerBuilder::with_sibling_io).
    /// Default 1024.
    pub sibling_queue: usize,
    /// Requests from one miner that may be in the inbound stack at once, waiting for the
    /// handler's answers (a pipelined burst of `mining.submit`s reaches the handler task
    /// together and its answers leave in one write). Answers are written in the order the
    /// requests arrived. With this many outstanding, nothing more is read from that miner until
    /// the oldest is answered. 0 is taken as 1. Same rules and caveats as
    /// [`ServerConfig::max_in_flight`](crate::ServerConfig::max_in_flight). Default
    /// [`DEFAULT_MAX_IN_FLIGHT`](crate::DEFAULT_MAX_IN_FLIGHT) (16).
    pub max_in_flight: usize,
}

impl Default for Sv1ServerConfig {
    fn default() -> Self {
        Self {
            session: Sv1SessionConfig::default(),
            max_line_length: DEFAULT_SERVER_MAX_LINE,
            outbound_queue: 256,
            write_timeout: Duration::from_secs(30),
            handler_queue: 1024,
            sibling_queue: 1024,
            max_in_flight: crate::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// [`Sv1ClientService`](crate::sv1::Sv1ClientService) configuration.
#[derive(Debug, Clone)]
pub struct Sv1ClientConfig {
    /// A call (`mining.subscribe`, `mining.submit`, ...) without an answer within this long
    /// fails with [`Sv1ClientError::Timeout`](crate::sv1::Sv1ClientError::Timeout). Default 30 s.
    pub call_timeout: Duration,
    /// Server notifications (`mining.notify`, `mining.set_difficulty`, ...) buffered for the
    /// application. When full, the client stops reading from the server until the
    /// application takes one (TCP flow control pushes back on the server; calls wait too).
    /// Nothing is ever dropped or aborted. Default 256.
    pub notification_queue: usize,
    /// Calls outstanding at once (sent or queued, not yet answered, timed out or failed),
    /// across the clones of one client; `poll_ready` waits while this many are. Also the
    /// capacity of the queue to the client's hub task. 0 is taken as 1. Default 64.
    pub request_queue: usize,
    /// Longest line accepted from the server, bytes. Default 64 KiB
    /// ([`tower_stratum_sv1::DEFAULT_MAX_LINE_LENGTH`]).
    pub max_line_length: usize,
    /// A write that does not finish within this bound closes the connection. Default 30 s.
    pub write_timeout: Duration,
    /// TCP connect timeout for [`Sv1ClientService::connect`](crate::sv1::Sv1ClientService::connect).
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// What the client answers to `client.get_version`. Default `"tower-stratum/<version>"`.
    pub user_agent: String,
}

impl Default for Sv1ClientConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            notification_queue: 256,
            request_queue: 64,
            max_line_length: tower_stratum_sv1::DEFAULT_MAX_LINE_LENGTH,
            write_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("tower-stratum/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}
