//! Service configuration: transports and timeouts, with documented defaults.

use std::time::Duration;
use tower_stratum_codec::{AuthorityKeypair, AuthorityPublicKey};
use tower_stratum_core::session::{MaxPayload, SessionConfig};
use tower_stratum_core::{PerSubprotocol, Subprotocol};

/// Default of `max_in_flight` ([`ServerConfig`], [`ClientConfig`]): 16 messages per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// Default `partial_frame_budget` ([`ServerConfig`], [`ClientConfig`]): 64 MiB held in
/// unfinished frames, beyond each connection's 4 KiB allowance, across all of a service's
/// connections.
pub const DEFAULT_PARTIAL_FRAME_BUDGET: usize = 64 << 20;

/// Default of [`ClientConfig::failover_attempts`]: 3 consecutive failed attempts.
pub const DEFAULT_FAILOVER_ATTEMPTS: u32 = 3;

/// Default of [`ClientConfig::failback_interval`]: 60 s.
pub const DEFAULT_FAILBACK_INTERVAL: Duration = Duration::from_secs(60);

/// How a server secures its connections.
#[derive(Debug, Clone)]
pub enum ServerTransport {
    /// Noise NX (spec 4) as responder, with a certificate signed by the authority key and valid
    /// for `cert_validity` (whole seconds) from the handshake.
    Noise {
        /// Authority keypair (SRI base58check text format, see `tower_stratum_codec`).
        keypair: AuthorityKeypair,
        /// Certificate validity, in seconds of wall-clock time. Default 3600 s.
        cert_validity: Duration,
    },
    /// Plaintext TCP. Only when explicitly chosen: shares and jobs travel unauthenticated.
    Plaintext,
}

impl ServerTransport {
    /// Noise with `keypair` and a one-hour certificate.
    pub fn noise(keypair: AuthorityKeypair) -> Self {
        ServerTransport::Noise {
            keypair,
            cert_validity: Duration::from_secs(3600),
        }
    }
}

/// How a client secures its connection to a server.
#[derive(Debug, Clone)]
pub enum ClientTransport {
    /// Noise NX as initiator. `Some(key)`: the server certificate must be signed by `key` and
    /// be within its validity, else the handshake fails. `None`: ENCRYPTED BUT NOT
    /// AUTHENTICATED — any server (or a man in the middle) is accepted. Use only for testing
    /// or where the network path is trusted.
    Noise {
        /// The server's authority public key.
        authority: Option<AuthorityPublicKey>,
    },
    /// Plaintext TCP.
    Plaintext,
}

/// Server configuration. Every field has a documented default ([`ServerConfig::default`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Transport. Default: plaintext is NOT the default; `Default` uses Noise with a freshly
    /// generated authority keypair, so set your own to let clients verify it.
    pub transport: ServerTransport,
    /// Handshake/SetupConnection deadlines and version range. Default: 10 s, 10 s, v2.
    pub session: SessionConfig,
    /// Close a connection that sent nothing for this long, per subprotocol; `None` disables
    /// reaping. Defaults: Mining 900 s, Job
    /// Declaration 900 s, Template Distribution none (a TD client may legitimately stay silent
    /// for hours between blocks).
    pub inactivity_timeout: PerSubprotocol<Option<Duration>>,
    /// Largest payload accepted from a client, in bytes, before SetupConnection and per
    /// negotiated subprotocol. A frame declaring more is refused before its payload is buffered
    /// and the connection is closed. Default [`MaxPayload::server`] (4 KiB for miners).
    pub max_payload: MaxPayload,
    /// Bytes that all connections together may hold in frames that have started to arrive but
    /// are not complete, beyond [`tower_stratum_codec::DEFAULT_PARTIAL_FRAME_ALLOWANCE`] (4 KiB)
    /// each (see [`tower_stratum_codec::PartialFrameBudget`]). A connection whose unfinished
    /// frame would take the total past it is closed; a frame must also arrive whole within
    /// [`SessionConfig::frame_timeout`]. So unfinished frames pin at most this plus 4 KiB per
    /// connection. Default [`DEFAULT_PARTIAL_FRAME_BUDGET`] (64 MiB).
    pub partial_frame_budget: usize,
    /// Per-connection outbound queue, in messages. A push (broadcast, send-to) that finds it
    /// full disconnects the client ([`tower_stratum_core::CloseReason::SlowConsumer`]).
    /// Default 256.
    pub outbound_queue: usize,
    /// A single write to a client that does not complete within this bound disconnects it;
    /// while a write is pending the connection reads nothing from that client. Default 30 s.
    pub write_timeout: Duration,
    /// Capacity of the queue into the handler task (messages from all connections and
    /// application requests). Default 1024.
    pub handler_queue: usize,
    /// Messages from one peer that may be in the inbound stack at once, waiting for the
    /// handlers' answers (the stack is called for each as soon as it is ready, so a burst of
    /// shares reaches the handler task together and its replies leave in one write). Replies are
    /// written in the order the messages arrived. When this many are outstanding the connection
    /// reads nothing more from that peer until the oldest is answered (backpressure per
    /// connection; `handler_queue` bounds them all together). Messages reach the handlers in
    /// arrival order as long as every layer forwards to the inner service inside `call` (tower's
    /// layers and [`crate::HandlerService`] do); a layer that forwards from inside its response
    /// future can reorder them: use 1 with such a layer. 0 is taken as 1 (strictly one at a
    /// time). Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Capacity of each direction of a sibling link, in messages. Default 1024.
    pub sibling_queue: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transport: ServerTransport::noise(AuthorityKeypair::generate()),
            session: SessionConfig::default(),
            inactivity_timeout: PerSubprotocol::new(
                Some(Duration::from_secs(900)),
                Some(Duration::from_secs(900)),
                None,
            ),
            max_payload: MaxPayload::server(),
            partial_frame_budget: DEFAULT_PARTIAL_FRAME_BUDGET,
            outbound_queue: 256,
            write_timeout: Duration::from_secs(30),
            handler_queue: 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            sibling_queue: 1024,
        }
    }
}

impl ServerConfig {
    /// Default configuration with the given transport.
    pub fn with_transport(transport: ServerTransport) -> Self {
        Self {
            transport,
            ..Self::default()
        }
    }
}

/// Where a client connects for one subprotocol: one upstream of [`ClientConfig::endpoints`].
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` to connect to (resolved at each connection attempt).
    pub address: String,
    /// Transport for this endpoint.
    pub transport: ClientTransport,
}

impl Endpoint {
    /// A Noise endpoint verified against `authority`.
    pub fn noise(address: impl Into<String>, authority: AuthorityPublicKey) -> Self {
        Self {
            address: address.into(),
            transport: ClientTransport::Noise {
                authority: Some(authority),
            },
        }
    }

    /// A plaintext endpoint.
    pub fn plaintext(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            transport: ClientTransport::Plaintext,
        }
    }
}

/// Reconnection policy: exponential backoff with full jitter.
///
/// The delay before an attempt is a uniformly random duration in
/// `[0, delay(n - 1)]` ([`Backoff::delay`]), `n` the consecutive failed attempts so far on any
/// upstream of the list (0 after an established connection ended: `delay(0)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay. Default 250 ms.
    pub initial: Duration,
    /// Upper bound of the delay. Default 30 s.
    pub max: Duration,
    /// Growth factor per failed attempt. Default 2.0.
    pub multiplier: f64,
    /// Give up after this many consecutive failed attempts (TCP connect, Noise handshake,
    /// SetupConnection; an established connection resets the count); `None` = never. Default
    /// `None`. With a list of upstreams ([`ClientConfig::endpoints`]) it counts full rounds of
    /// the list: the client gives up after `max_attempts` rounds of
    /// [`ClientConfig::failover_attempts`] failed attempts on each upstream, that is
    /// `max_attempts * failover_attempts * len` consecutive failed attempts (with one upstream,
    /// a round is one attempt).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based), before jitter: `initial * multiplier^n`,
    /// capped at `max`.
    pub fn delay(&self, n: u32) -> Duration {
        let d = self.initial.as_secs_f64() * self.multiplier.powi(n.min(64) as i32);
        Duration::from_secs_f64(d.min(self.max.as_secs_f64()).max(0.0))
    }
}

/// Client configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The upstreams per subprotocol, in order of preference: the first is the primary, the
    /// others its backups. The client is on one of them at a time: it fails over to the next
    /// (after the last: the first again) after [`Self::failover_attempts`] consecutive failed
    /// attempts, and while on a backup it probes the primary every
    /// [`Self::failback_interval`] and fails back when it answers. An empty list, or a
    /// subprotocol whose handler is a Null handler, is never connected.
    /// [`crate::ClientHandle::watch_upstream`] tells which upstream is in use. Default: empty.
    pub endpoints: PerSubprotocol<Vec<Endpoint>>,
    /// With several upstreams: move to the next one after this many consecutive failed
    /// attempts (TCP connect, Noise handshake, SetupConnection) on one upstream; an
    /// established connection resets the count. 0 is taken as 1. A single upstream is retried
    /// as [`Self::reconnect`] says (forever by default). Default
    /// [`DEFAULT_FAILOVER_ATTEMPTS`] (3).
    pub failover_attempts: u32,
    /// While on a backup upstream, probe the primary (a TCP connect, bounded by
    /// [`Self::connect_timeout`]) this often, in seconds; when a probe connects, close the
    /// backup connection (the handlers see `on_connection_removed`, reason
    /// [`CloseReason::Shutdown`](tower_stratum_core::CloseReason::Shutdown)) and connect to
    /// the primary at once. The first probe is one interval after leaving the primary. `None`:
    /// never fail back (stay on a backup until it fails). Default
    /// [`DEFAULT_FAILBACK_INTERVAL`] (60 s).
    pub failback_interval: Option<Duration>,
    /// Handshake/setup deadlines and the version range sent in SetupConnection.
    pub session: SessionConfig,
    /// Consider the server dead after this long without a frame from it. Default 600 s for
    /// every subprotocol; `None` disables.
    pub inactivity_timeout: PerSubprotocol<Option<Duration>>,
    /// Reconnect with this backoff after a disconnect or a failed attempt; `None` = do not
    /// reconnect: the client stops when its first attempt fails or its first connection ends
    /// (no fail-over either). A `Reconnect` from the server (spec 3.6.5) is followed in both
    /// cases. Default: `Some(Backoff::default())`.
    pub reconnect: Option<Backoff>,
    /// TCP connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Largest payload accepted from the server, in bytes, before SetupConnection's reply and
    /// per subprotocol. Default [`MaxPayload::client`] (8 MiB for Template Distribution, 256 KiB
    /// for Mining and Job Declaration).
    pub max_payload: MaxPayload,
    /// Bytes the client's connections together may hold in unfinished frames beyond 4 KiB
    /// each; see [`ServerConfig::partial_frame_budget`]. Default
    /// [`DEFAULT_PARTIAL_FRAME_BUDGET`] (64 MiB).
    pub partial_frame_budget: usize,
    /// Outbound queue per connection, messages. Default 256.
    pub outbound_queue: usize,
    /// Write timeout. Default 30 s.
    pub write_timeout: Duration,
    /// Handler queue capacity. Default 1024.
    pub handler_queue: usize,
    /// Messages from the server that may be in the inbound stack at once, waiting for the
    /// handlers' answers (the stack is called for each as soon as it is ready, so a burst of
    /// shares reaches the handler task together and its replies leave in one write). Replies are
    /// written in the order the messages arrived. When this many are outstanding the connection
    /// reads nothing more from that peer until the oldest is answered (backpressure per
    /// connection; `handler_queue` bounds them all together). Messages reach the handlers in
    /// arrival order as long as every layer forwards to the inner service inside `call` (tower's
    /// layers and [`crate::HandlerService`] do); a layer that forwards from inside its response
    /// future can reorder them: use 1 with such a layer. 0 is taken as 1 (strictly one at a
    /// time). Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// `SetupConnection.vendor`. Default `"tower-stratum"`.
    pub vendor: String,
    /// `SetupConnection.hardware_version`. Default empty.
    pub hardware_version: String,
    /// `SetupConnection.firmware`. Default the crate version.
    pub firmware: String,
    /// `SetupConnection.device_id`. Default empty (no telemetry).
    pub device_id: String,
    /// How long to wait for the answer to `RequestExtensions` (extension `0x0001`, sent when
    /// a handler's `requested_extensions` is not empty) before continuing without extensions.
    /// The spec suggests twice the connection time (section 4.3); this is a fixed bound.
    /// Default 2 s.
    pub extensions_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: PerSubprotocol::default(),
            failover_attempts: DEFAULT_FAILOVER_ATTEMPTS,
            failback_interval: Some(DEFAULT_FAILBACK_INTERVAL),
            session: SessionConfig::default(),
            inactivity_timeout: PerSubprotocol::splat(Some(Duration::from_secs(600))),
            reconnect: Some(Backoff::default()),
            connect_timeout: Duration::from_secs(10),
            max_payload: MaxPayload::client(),
            partial_frame_budget: DEFAULT_PARTIAL_FRAME_BUDGET,
            outbound_queue: 256,
            write_timeout: Duration::from_secs(30),
            handler_queue: 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            vendor: "tower-stratum".into(),
            hardware_version: String::new(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            device_id: String::new(),
            extensions_timeout: Duration::from_secs(2),
        }
    }
}

impl ClientConfig {
    /// Sets the only upstream of `protocol` (a list of one: retried per [`Self::reconnect`]).
    pub fn endpoint(mut self, protocol: Subprotocol, endpoint: Endpoint) -> Self {
        self.endpoints[protocol] = vec![endpoint];
        self
    }

    /// Sets the upstreams of `protocol`, in order of preference (the first is the primary;
    /// see [`Self::endpoints`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_stratum_core::Subprotocol;
    /// use tower_stratum_service::{ClientConfig, Endpoint};
    ///
    /// let cfg = ClientConfig {
    ///     failover_attempts: 2,
    ///     failback_interval: Some(Duration::from_secs(30)),
    ///     ..ClientConfig::default()
    /// }
    /// .upstreams(
    ///     Subprotocol::Mining,
    ///     vec![
    ///         Endpoint::plaintext("pool-a.example:34254"),
    ///         Endpoint::plaintext("pool-b.example:34254"),
    ///     ],
    /// );
    /// assert_eq!(cfg.endpoints.mining.len(), 2);
    /// ```
    pub fn upstreams(mut self, protocol: Subprotocol, upstreams: Vec<Endpoint>) -> Self {
        self.endpoints[protocol] = upstreams;
        self
    }
}
