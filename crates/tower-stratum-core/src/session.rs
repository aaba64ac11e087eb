//! The per-connection Sv2 session state machine (sans-IO).
//!
//! A [`Session`] sees every frame a connection receives, with the time passed in, and yields
//! [`SessionOutput`]s: messages to transmit, the setup result, messages to deliver to handlers,
//! or a close. It never reads a clock, sleeps or touches a socket; the shell asks
//! [`Session::poll_timeout`] when to call [`Session::handle_timeout`].
//!
//! It enforces spec 3.6 (Common Protocol Messages): `SetupConnection` first and exactly once,
//! within a deadline; version negotiation (`used_version` = the highest version both ranges
//! share); per-subprotocol flags, with `SetupConnection.Error` listing every unsupported flag;
//! and it binds the connection to the negotiated subprotocol. A message of another subprotocol
//! or of the wrong direction closes the connection (the spec defines no error message for
//! either) without reaching a handler. Unknown extension messages follow spec 3.4.1: with
//! `channel_msg` set they are delivered (the handler relays or processes them), otherwise they
//! are discarded.
//!
//! # Extensions negotiation (extension `0x0001`)
//!
//! A client configured with [`Session::with_extension_request`] sends `RequestExtensions`
//! right after `SetupConnection.Success` and reports the connection established only when the
//! answer came (section 4.2: "The response to `RequestExtensions` MUST be received before
//! proceeding with any further protocol-specific messages"): `RequestExtensions.Success`
//! gives the negotiated set, `RequestExtensions.Error` none (and a close if the server
//! requires extensions we did not request). A server that ignores the request (section 4.3)
//! costs the reply timeout, after which the client continues without extensions; a reply
//! arriving later is ignored.
//!
//! A server answers every `RequestExtensions` that comes before any other message after
//! `SetupConnection.Success` (section 4.2), from its [`ExtensionSupport`]
//! ([`Session::with_extension_support`]); a later one closes the connection
//! ([`Violation::LateRequestExtensions`]). After a `RequestExtensions.Error` the client may
//! retry (section 4, use case 6). If the subprotocol's support is not empty, the server
//! reports the connection established only once the negotiation is over (a
//! `RequestExtensions.Success`, or the client's first other message), so handlers see the
//! negotiated set from `on_connection_added` on; with required extensions, a client that
//! sends anything else first is disconnected.
//!
//! The result is [`ConnectionInfo::extensions`]. On a connection that negotiated an
//! extension, TLV fields of negotiated extensions at the end of a received core message (spec
//! 3.4.3) are parsed ([`TlvFields::parse`]: fields of other extensions and malformed ones are
//! ignored, never a panic) and the message is delivered as [`Sv2Message::WithTlvs`]. Without
//! a negotiated extension nothing is parsed and trailing bytes are ignored, as before.

use crate::extensions::{ExtensionSet, ExtensionSupport, TlvFields, EXTENSIONS_NEGOTIATION};
use crate::frame::Frame;
use crate::message::{MessageError, PerSubprotocol, Subprotocol, Sv2Message};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};
use stratum_core::binary_sv2::Seq064KOwned;
use stratum_core::common_messages_sv2::{
    ReconnectOwned, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccess,
};
use stratum_core::extensions_sv2::{
    RequestExtensionsErrorOwned, RequestExtensionsOwned, RequestExtensionsSuccessOwned,
};
use stratum_core::parsers_sv2::{CommonMessagesOwned, ExtensionsNegotiationOwned};

/// `SetupConnection.Error` code: the server does not serve the requested subprotocol.
pub const ERROR_UNSUPPORTED_PROTOCOL: &str = "unsupported-protocol";
/// `SetupConnection.Error` code: some requested flags are not supported (listed in `flags`).
pub const ERROR_UNSUPPORTED_FEATURE_FLAGS: &str = "unsupported-feature-flags";
/// `SetupConnection.Error` code: the version ranges do not overlap.
pub const ERROR_PROTOCOL_VERSION_MISMATCH: &str = "protocol-version-mismatch";

/// Mining `SetupConnection.flags` bit 0 (spec 5.2): the client needs standard jobs.
pub const REQUIRES_STANDARD_JOBS: u32 = 1 << 0;
/// Mining `SetupConnection.flags` bit 1: the client will send `SetCustomMiningJob`.
pub const REQUIRES_WORK_SELECTION: u32 = 1 << 1;
/// Mining `SetupConnection.flags` bit 2: the client needs version rolling.
pub const REQUIRES_VERSION_ROLLING: u32 = 1 << 2;
/// Mining `SetupConnection.Success.flags` bit 0: the server accepts no version changes.
pub const REQUIRES_FIXED_VERSION: u32 = 1 << 0;
/// Mining `SetupConnection.Success.flags` bit 1: the server accepts no standard channels.
pub const REQUIRES_EXTENDED_CHANNELS: u32 = 1 << 1;

/// Which end of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepted the connection; receives client-to-server messages.
    Server,
    /// Opened the connection; receives server-to-client messages.
    Client,
}

impl Role {
    /// Whether a core message (`extension_type == 0`) of `msg_type` may be received by this
    /// role (spec 8 and the direction given for each message in spec 3.6, 5.3, 6.4, 7).
    pub fn may_receive(self, msg_type: u8) -> bool {
        match self {
            Role::Server => matches!(
                msg_type,
                0x00 | 0x10 | 0x13 | 0x16 | 0x18 | 0x1a | 0x1b | 0x22 // common + mining
                | 0x50 | 0x56 | 0x57 | 0x60 // job declaration
                | 0x70 | 0x73 | 0x76 // template distribution
            ),
            Role::Client => matches!(
                msg_type,
                0x01..=0x04
                    | 0x11
                    | 0x12
                    | 0x14
                    | 0x15
                    | 0x17
                    | 0x18
                    | 0x19
                    | 0x1c
                    | 0x1d
                    | 0x1f
                    | 0x20
                    | 0x21
                    | 0x23
                    | 0x24
                    | 0x25
                    | 0x51
                    | 0x55
                    | 0x58
                    | 0x59
                    | 0x71
                    | 0x72
                    | 0x74
                    | 0x75
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// What a server offers for one subprotocol at `SetupConnection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSupport {
    /// Client flags the server can honour; any other requested flag is unsupported.
    pub supported_flags: u32,
    /// Flags sent in `SetupConnection.Success.flags`.
    pub success_flags: u32,
    /// Close the connection after this long without receiving a frame; `None` disables it.
    pub inactivity_timeout: Option<Duration>,
}

/// Whether a transport handshake comes before SetupConnection (the session's first state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportHandshake {
    /// Plaintext (spec 3.2): SetupConnection is the first thing on the wire.
    None,
    /// Noise NX (spec 4.5): the shell reports its end with [`Session::handshake_complete`],
    /// under [`SessionConfig::handshake_timeout`].
    Noise,
}

/// The largest frame payload, in bytes, a connection accepts from its peer: before
/// SetupConnection is answered, and then per negotiated subprotocol. What a peer may legitimately
/// send depends on its subprotocol and role, so a miner's connection never needs to accept the
/// megabytes a template or a declared job can take.
///
/// The shell applies [`Session::max_payload`] to the codec: a frame declaring more is refused
/// before its payload is buffered (`tower_stratum_codec::CodecError::FrameTooLarge`) and the
/// connection is closed. Every value is capped at
/// [`MAX_PAYLOAD_LEN`](crate::frame::MAX_PAYLOAD_LEN) (2^24 - 1, the U24 `msg_length` limit).
///
/// [`MaxPayload::server`] and [`MaxPayload::client`] give the defaults for what a server
/// receives from its clients and what a client receives from its server, from the largest
/// message each side can receive (spec 5-7 message layouts; sizes below are payload bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPayload {
    /// Until SetupConnection is answered: SetupConnection is at most 1,291 bytes (five
    /// `STR0_255`s and 10 bytes of fixed fields), its replies at most 260.
    pub setup: usize,
    /// Mining connections whose client did not set `REQUIRES_WORK_SELECTION`.
    pub mining: usize,
    /// Mining connections with `REQUIRES_WORK_SELECTION` (a job declarator client sends
    /// `SetCustomMiningJob`, up to about 74 KiB with a full `B0_64K` of coinbase outputs and
    /// a 255-entry merkle path).
    pub mining_work_selection: usize,
    /// Job Declaration connections.
    pub job_declaration: usize,
    /// Template Distribution connections.
    pub template_distribution: usize,
}

impl MaxPayload {
    /// What a server accepts from its clients by default:
    ///
    /// | stage / subprotocol | bytes | largest legitimate message |
    /// |---|---|---|
    /// | before setup | 4 KiB | SetupConnection (1,291) |
    /// | Mining | 4 KiB | OpenExtendedMiningChannel (about 300), shares with TLVs (under 200) |
    /// | Mining, work selection | 128 KiB | SetCustomMiningJob (about 74 KiB) |
    /// | Job Declaration | 8 MiB | ProvideMissingTransactions.Success (a block's transactions, up to 4 MB) and DeclareMiningJob (up to about 2.2 MiB of wtxids) |
    /// | Template Distribution | 128 KiB | SubmitSolution (a `B0_64K` coinbase) |
    pub const fn server() -> Self {
        Self {
            setup: 4 * 1024,
            mining: 4 * 1024,
            mining_work_selection: 128 * 1024,
            job_declaration: 8 << 20,
            template_distribution: 128 * 1024,
        }
    }

    /// What a client accepts from its server by default:
    ///
    /// | stage / subprotocol | bytes | largest legitimate message |
    /// |---|---|---|
    /// | before setup | 4 KiB | SetupConnection.Error (260) |
    /// | Mining | 256 KiB | NewExtendedMiningJob (two `B0_64K` coinbase parts and a merkle path, about 137 KiB) |
    /// | Mining, work selection | 256 KiB | the same |
    /// | Job Declaration | 256 KiB | AllocateMiningJobToken.Success (a `B0_64K` of coinbase outputs), ProvideMissingTransactions (up to 128 KiB of indexes) |
    /// | Template Distribution | 8 MiB | RequestTransactionData.Success (a template's transactions, up to 4 MB) |
    pub const fn client() -> Self {
        Self {
            setup: 4 * 1024,
            mining: 256 * 1024,
            mining_work_selection: 256 * 1024,
            job_declaration: 256 * 1024,
            template_distribution: 8 << 20,
        }
    }

    /// The same limit, `bytes`, at every stage (e.g. for tests, or to restore a single limit).
    pub const fn uniform(bytes: usize) -> Self {
        Self {
            setup: bytes,
            mining: bytes,
            mining_work_selection: bytes,
            job_declaration: bytes,
            template_distribution: bytes,
        }
    }

    /// The limit for a connection bound to `protocol` whose client sent `flags` in
    /// SetupConnection.
    pub fn for_protocol(&self, protocol: Subprotocol, flags: u32) -> usize {
        let bytes = match protocol {
            Subprotocol::Mining if flags & REQUIRES_WORK_SELECTION != 0 => {
                self.mining_work_selection
            }
            Subprotocol::Mining => self.mining,
            Subprotocol::JobDeclaration => self.job_declaration,
            Subprotocol::TemplateDistribution => self.template_distribution,
        };
        bytes.min(crate::frame::MAX_PAYLOAD_LEN)
    }
}

/// Session timeouts and the version range. Versions are Sv2 protocol versions (currently 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Lowest protocol version accepted. Default 2.
    pub min_version: u16,
    /// Highest protocol version accepted. Default 2.
    pub max_version: u16,
    /// Deadline for the Noise handshake, from the start of the session. Default 10 s.
    pub handshake_timeout: Duration,
    /// Deadline for SetupConnection (server: to receive it; client: to receive the reply),
    /// counted from the end of the handshake. Default 10 s.
    pub setup_timeout: Duration,
    /// Deadline for a frame to arrive whole once its first bytes have (after the handshake):
    /// a peer that starts a frame and stops sending ("slowloris" inside a frame) is closed
    /// with [`CloseReason::TimedOut`]`(`[`Timer::Frame`]`)` instead of holding its buffer
    /// until the inactivity timeout. Default 30 s (a 4 MB frame at about 1 Mbit/s).
    pub frame_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            min_version: 2,
            max_version: 2,
            handshake_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
        }
    }
}

/// The negotiated parameters of an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The subprotocol the connection is bound to.
    pub protocol: Subprotocol,
    /// `used_version` from `SetupConnection.Success`.
    pub version: u16,
    /// The client's `SetupConnection.flags`.
    pub flags: u32,
    /// The server's `SetupConnection.Success.flags`.
    pub success_flags: u32,
    /// Extensions negotiated with `RequestExtensions` (extension `0x0001`): the
    /// `supported_extensions` of the `RequestExtensions.Success` (those the client requested).
    /// Empty without a successful negotiation. TLV fields of these extensions are parsed on
    /// received messages; a client may send fields of these extensions only.
    pub extensions: ExtensionSet,
}

/// The session timers (spec-independent; these are this library's deadlines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Noise handshake deadline.
    Handshake,
    /// SetupConnection (or its reply) deadline.
    Setup,
    /// Inactivity: nothing received for the configured limit.
    Inactivity,
    /// Client: the answer to `RequestExtensions` (extension `0x0001` section 4.3). When it
    /// fires the connection continues without extensions (it is not closed).
    Extensions,
    /// A frame whose first bytes arrived has not arrived whole within
    /// [`SessionConfig::frame_timeout`] (see [`Session::frame_progress`]).
    Frame,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Handshake,
        Timer::Setup,
        Timer::Inactivity,
        Timer::Extensions,
        Timer::Frame,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timer::Handshake => "handshake",
            Timer::Setup => "setup-connection",
            Timer::Inactivity => "inactivity",
            Timer::Extensions => "extensions-negotiation",
            Timer::Frame => "frame-completion",
        })
    }
}

/// A protocol rule the peer broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The first message was not SetupConnection (server) / its reply (client).
    SetupNotFirst {
        /// Name of the message received instead.
        got: &'static str,
    },
    /// SetupConnection (or its reply) received again.
    SetupTwice,
    /// A message of a subprotocol other than the negotiated one.
    WrongSubprotocol {
        /// Name of the message.
        got: &'static str,
        /// The connection's subprotocol.
        negotiated: Subprotocol,
    },
    /// A message only the other role may receive.
    WrongDirection {
        /// Name of the message.
        got: &'static str,
    },
    /// A core message type that the spec does not assign.
    UnknownMessageType {
        /// The `msg_type`.
        msg_type: u8,
    },
    /// A payload that does not parse.
    Malformed(String),
    /// `RequestExtensions` after another message, or after a successful negotiation
    /// (extension `0x0001` section 4.2: it "MUST be sent immediately after
    /// SetupConnection.Success and before any other protocol-specific messages").
    LateRequestExtensions,
    /// The server requires extensions the client did not negotiate before sending other
    /// messages (extension `0x0001` section 4, use case 6: "the server MUST disconnect the
    /// client").
    RequiredExtensionsMissing(ExtensionSet),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::SetupNotFirst { got } => {
                write!(f, "expected SetupConnection first, got {got}")
            }
            Violation::SetupTwice => f.write_str("SetupConnection exchanged twice"),
            Violation::WrongSubprotocol { got, negotiated } => {
                write!(f, "{got} on a {negotiated} connection")
            }
            Violation::WrongDirection { got } => write!(f, "{got} sent in the wrong direction"),
            Violation::UnknownMessageType { msg_type } => {
                write!(f, "unknown message type {msg_type:#04x}")
            }
            Violation::Malformed(d) => write!(f, "malformed message: {d}"),
            Violation::LateRequestExtensions => {
                f.write_str("RequestExtensions not right after SetupConnection.Success")
            }
            Violation::RequiredExtensionsMissing(e) => {
                write!(f, "required extensions {e} not negotiated")
            }
        }
    }
}

/// Why a connection closed, sorted by fault and remedy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A deadline passed.
    TimedOut(Timer),
    /// The peer broke a protocol rule.
    PeerMisbehaved(Violation),
    /// SetupConnection was refused: by us (server; the `SetupConnection.Error` was sent) or by
    /// the server (client). `error_code` is the spec string, `flags` the unsupported flags.
    SetupRejected {
        /// Spec error code (`unsupported-protocol`, ...).
        error_code: String,
        /// Flags that caused the error (0 if not flag related).
        flags: u32,
    },
    /// The peer cannot work with us: the server's SetupConnection.Success is unusable
    /// (version or flags out of range), or the server requires extensions we did not request.
    Incompatible(String),
    /// The Noise handshake failed (other than [`CloseReason::CertificateRejected`]).
    Handshake(String),
    /// The client rejected the server's certificate (spec 4.5.3): not signed by the pinned
    /// authority key, outside its validity window, or of an unsupported version. The text has
    /// the decoded certificate fields. A wrong `authority_public_key` in a client's config is
    /// the usual cause.
    CertificateRejected(String),
    /// Framing or decryption failed.
    Transport(String),
    /// The peer closed the connection.
    PeerClosed,
    /// Socket error.
    Io(String),
    /// The outbound queue was full: the peer reads too slowly.
    SlowConsumer,
    /// A handler (or the application) closed it.
    Closed(String),
    /// The service is shutting down.
    Shutdown,
    /// The client received `Reconnect` and is moving to `host:port`.
    Reconnect {
        /// New host; empty = same host.
        host: String,
        /// New port; 0 = same port.
        port: u16,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::TimedOut(t) => write!(f, "{t} timed out"),
            CloseReason::PeerMisbehaved(v) => write!(f, "peer misbehaved: {v}"),
            CloseReason::SetupRejected { error_code, flags } => {
                write!(f, "setup rejected: {error_code} (flags {flags:#x})")
            }
            CloseReason::Incompatible(d) => write!(f, "incompatible peer: {d}"),
            CloseReason::Handshake(d) => write!(f, "handshake failed: {d}"),
            CloseReason::CertificateRejected(d) => {
                write!(f, "handshake failed: responder certificate rejected: {d}")
            }
            CloseReason::Transport(d) => write!(f, "transport error: {d}"),
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::Io(d) => write!(f, "io error: {d}"),
            CloseReason::SlowConsumer => f.write_str("outbound queue full (slow peer)"),
            CloseReason::Closed(d) => write!(f, "closed: {d}"),
            CloseReason::Shutdown => f.write_str("shutdown"),
            CloseReason::Reconnect { host, port } => write!(f, "reconnect to {host}:{port}"),
        }
    }
}

/// What the shell must do after feeding the session.
#[derive(Debug, Clone)]
pub enum SessionOutput {
    /// Send this message to the peer.
    Transmit(Sv2Message),
    /// Setup finished: the connection is established with these parameters.
    Established(ConnectionInfo),
    /// Hand this message to the handler of the negotiated subprotocol.
    Deliver(Sv2Message),
    /// Flush what was queued, then close. No output follows.
    Close(CloseReason),
}

#[derive(Debug, Clone)]
enum State {
    Handshake,
    AwaitSetup,
    AwaitSetupReply {
        protocol: Subprotocol,
        flags: u32,
    },
    /// SetupConnection done, extensions negotiation under way (client: waiting for the answer;
    /// server: waiting for `RequestExtensions` or the first other message).
    Negotiating(ConnectionInfo),
    Established(ConnectionInfo),
    Closed,
}

/// How a session's side of SetupConnection is configured.
#[derive(Debug, Clone)]
enum Setup {
    /// Server: what each subprotocol offers (`None` = refused).
    Server(PerSubprotocol<Option<ProtocolSupport>>),
    /// Client: the SetupConnection to send and the inactivity timeout once established.
    Client {
        setup: Box<SetupConnectionOwned>,
        inactivity_timeout: Option<Duration>,
    },
}

/// One connection's protocol state. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    setup: Setup,
    state: State,
    timers: [Option<Instant>; 5],
    inactivity: Option<Duration>,
    outputs: VecDeque<SessionOutput>,
    ext: ExtensionsConfig,
    max_payload: MaxPayload,
}

/// Extensions negotiation settings and state (extension `0x0001`).
#[derive(Debug, Clone, Copy)]
struct ExtensionsConfig {
    /// Server: what each subprotocol offers.
    support: PerSubprotocol<ExtensionSupport>,
    /// Client: what to request after SetupConnection.Success (empty: no request).
    request: ExtensionSet,
    /// Client: how long to wait for the answer.
    reply_timeout: Duration,
    /// Server: a `RequestExtensions` is still acceptable (nothing else received yet, no
    /// `RequestExtensions.Success` sent).
    window_open: bool,
}

/// `request_id` of the client's `RequestExtensions`.
const EXTENSIONS_REQUEST_ID: u16 = 1;

impl Default for ExtensionsConfig {
    fn default() -> Self {
        Self {
            support: PerSubprotocol::default(),
            request: ExtensionSet::EMPTY,
            reply_timeout: Duration::from_secs(2),
            window_open: false,
        }
    }
}

impl Session {
    /// A server session. `now` starts the handshake timer; with [`TransportHandshake::None`]
    /// there is no handshake and the SetupConnection timer starts at once. `support[p]` is what the
    /// server offers for subprotocol `p`; `None` refuses it with `unsupported-protocol`.
    pub fn server(
        config: SessionConfig,
        support: PerSubprotocol<Option<ProtocolSupport>>,
        handshake: TransportHandshake,
        now: Instant,
    ) -> Self {
        let mut s = Self {
            role: Role::Server,
            config,
            setup: Setup::Server(support),
            state: State::Handshake,
            timers: [None; 5],
            inactivity: None,
            outputs: VecDeque::new(),
            ext: ExtensionsConfig::default(),
            max_payload: MaxPayload::uniform(crate::frame::MAX_PAYLOAD_LEN),
        };
        s.set_timer(Timer::Handshake, now + config.handshake_timeout);
        if handshake == TransportHandshake::None {
            s.handshake_complete(now);
        }
        s
    }

    /// A client session that will send `setup` once the transport is up. The session checks
    /// `SetupConnection.Success.used_version` against `setup.min_version..=setup.max_version`.
    pub fn client(
        config: SessionConfig,
        setup: SetupConnectionOwned,
        inactivity_timeout: Option<Duration>,
        handshake: TransportHandshake,
        now: Instant,
    ) -> Self {
        let mut s = Self {
            role: Role::Client,
            config,
            setup: Setup::Client {
                setup: Box::new(setup),
                inactivity_timeout,
            },
            state: State::Handshake,
            timers: [None; 5],
            inactivity: None,
            outputs: VecDeque::new(),
            ext: ExtensionsConfig::default(),
            max_payload: MaxPayload::uniform(crate::frame::MAX_PAYLOAD_LEN),
        };
        s.set_timer(Timer::Handshake, now + config.handshake_timeout);
        if handshake == TransportHandshake::None {
            s.handshake_complete(now);
        }
        s
    }

    /// Server: the extensions each subprotocol supports and requires
    /// (`support[p]`), for answering `RequestExtensions` (extension `0x0001`). Default:
    /// none, so every request gets `RequestExtensions.Error` listing all it asked for. Call
    /// before feeding frames. See the [module docs](self#extensions-negotiation-extension-0x0001).
    pub fn with_extension_support(mut self, support: PerSubprotocol<ExtensionSupport>) -> Self {
        self.ext.support = support;
        self
    }

    /// Client: request `extensions` with `RequestExtensions` right after
    /// `SetupConnection.Success` and wait at most `reply_timeout` for the answer (then continue
    /// without extensions). An empty set sends no request (the default). Call before feeding
    /// frames.
    pub fn with_extension_request(
        mut self,
        extensions: ExtensionSet,
        reply_timeout: Duration,
    ) -> Self {
        self.ext.request = extensions;
        self.ext.reply_timeout = reply_timeout;
        self
    }

    /// The payload limits to apply to received frames (see [`Session::max_payload`]). Default:
    /// none below the U24 maximum; the service sets [`MaxPayload::server`] or
    /// [`MaxPayload::client`] unless configured otherwise. Call before feeding frames.
    pub fn with_max_payload(mut self, limits: MaxPayload) -> Self {
        self.max_payload = limits;
        self
    }

    /// The largest payload, in bytes, to accept in the next received frame: the `setup` limit
    /// until SetupConnection is answered, then the limit of the negotiated subprotocol (and the
    /// client's `REQUIRES_WORK_SELECTION` flag). The shell re-reads it after each frame.
    pub fn max_payload(&self) -> usize {
        match &self.state {
            State::Negotiating(info) | State::Established(info) => {
                self.max_payload.for_protocol(info.protocol, info.flags)
            }
            _ => self.max_payload.setup.min(crate::frame::MAX_PAYLOAD_LEN),
        }
    }

    /// Tells the session whether, at `now`, the bytes received so far end inside a frame
    /// (`partial`). The first call with `partial == true` arms [`Timer::Frame`] for
    /// [`SessionConfig::frame_timeout`]; a call with `false` (the frame completed) disarms it.
    /// The shell calls it when a frame starts to arrive and after each complete frame.
    pub fn frame_progress(&mut self, now: Instant, partial: bool) {
        if self.is_closed() || self.is_handshaking() {
            return;
        }
        let slot = &mut self.timers[Timer::Frame.index()];
        match (partial, *slot) {
            (true, None) => *slot = Some(now + self.config.frame_timeout),
            (false, Some(_)) => *slot = None,
            _ => {}
        }
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The negotiated parameters, once established.
    pub fn info(&self) -> Option<ConnectionInfo> {
        match self.state {
            State::Established(i) => Some(i),
            _ => None,
        }
    }

    /// Whether the session has closed (no more outputs except those already queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the transport handshake is still pending.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshake)
    }

    /// The transport handshake finished at `now`. A client then transmits its SetupConnection.
    pub fn handshake_complete(&mut self, now: Instant) {
        if !matches!(self.state, State::Handshake) {
            return;
        }
        self.timers[Timer::Handshake.index()] = None;
        self.set_timer(Timer::Setup, now + self.config.setup_timeout);
        match &self.setup {
            Setup::Server(_) => self.state = State::AwaitSetup,
            Setup::Client { setup, .. } => {
                let protocol = Subprotocol::from_sri(setup.protocol);
                let flags = setup.flags;
                let msg =
                    Sv2Message::Common(CommonMessagesOwned::SetupConnection((**setup).clone()));
                self.outputs.push_back(SessionOutput::Transmit(msg));
                self.state = State::AwaitSetupReply { protocol, flags };
            }
        }
    }

    /// The earliest deadline, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Fires every timer that is due at `now`; an expired timer closes the session.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in Timer::ALL {
            if let Some(deadline) = self.timers[t.index()] {
                if deadline <= now {
                    if t == Timer::Extensions {
                        self.timers[t.index()] = None;
                        if let State::Negotiating(info) = self.state {
                            tracing::info!(
                                requested = %self.ext.request,
                                "no answer to RequestExtensions: continuing without extensions"
                            );
                            self.establish(info);
                        }
                        continue;
                    }
                    self.close(CloseReason::TimedOut(t));
                    return;
                }
            }
        }
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    /// Closes the session for `reason` (idempotent): disarms timers and yields one
    /// [`SessionOutput::Close`].
    pub fn close(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.state = State::Closed;
        self.timers = [None; 5];
        self.outputs.push_back(SessionOutput::Close(reason));
    }

    fn set_timer(&mut self, t: Timer, at: Instant) {
        self.timers[t.index()] = Some(at);
    }

    /// Feeds one received frame at time `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if let Some(limit) = self.inactivity {
            if !self.is_closed() {
                self.set_timer(Timer::Inactivity, now + limit);
            }
        }
        match self.state.clone() {
            State::Closed => {}
            State::Handshake => {
                // The shell only feeds frames after the handshake; treat as a violation.
                self.close(CloseReason::PeerMisbehaved(Violation::SetupNotFirst {
                    got: crate::message::message_name(frame.extension_type, frame.msg_type),
                }))
            }
            State::AwaitSetup => self.on_setup(now, frame),
            State::AwaitSetupReply { protocol, flags } => {
                self.on_setup_reply(now, frame, protocol, flags)
            }
            State::Negotiating(info) => self.on_negotiating(frame, info),
            State::Established(info) => self.on_established(frame, info),
        }
    }

    fn violation(&mut self, v: Violation) {
        self.close(CloseReason::PeerMisbehaved(v));
    }

    fn decode_common(&mut self, frame: Frame) -> Option<CommonMessagesOwned> {
        let mut payload = bytes::BytesMut::from(frame.payload);
        match Sv2Message::decode_common(frame.msg_type, &mut payload) {
            Ok(Sv2Message::Common(m)) => Some(m),
            Ok(_) => None,
            Err(e) => {
                self.violation(Violation::Malformed(e.to_string()));
                None
            }
        }
    }

    fn on_setup(&mut self, now: Instant, frame: Frame) {
        if frame.extension() != 0 || frame.msg_type != 0x00 {
            let got = crate::message::message_name(frame.extension_type, frame.msg_type);
            return self.violation(Violation::SetupNotFirst { got });
        }
        let Some(CommonMessagesOwned::SetupConnection(setup)) = self.decode_common(frame) else {
            return;
        };
        let Setup::Server(support) = &self.setup else {
            return;
        };
        let protocol = Subprotocol::from_sri(setup.protocol);
        let Some(support) = support[protocol] else {
            return self.reject(0, ERROR_UNSUPPORTED_PROTOCOL);
        };
        if setup.min_version > setup.max_version
            || setup.min_version > self.config.max_version
            || self.config.min_version > setup.max_version
        {
            return self.reject(0, ERROR_PROTOCOL_VERSION_MISMATCH);
        }
        let unsupported = setup.flags & !support.supported_flags;
        if unsupported != 0 {
            return self.reject(unsupported, ERROR_UNSUPPORTED_FEATURE_FLAGS);
        }
        let version = setup.max_version.min(self.config.max_version);
        let info = ConnectionInfo {
            protocol,
            version,
            flags: setup.flags,
            success_flags: support.success_flags,
            extensions: ExtensionSet::EMPTY,
        };
        self.outputs
            .push_back(SessionOutput::Transmit(Sv2Message::Common(
                CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccess {
                    used_version: version,
                    flags: support.success_flags,
                }),
            )));
        self.setup_done(now, support.inactivity_timeout);
        self.ext.window_open = true;
        if self.ext.support[protocol].is_empty() {
            self.establish(info);
        } else {
            self.state = State::Negotiating(info);
        }
    }

    /// SetupConnection is over: the setup timer stops, the inactivity timer starts.
    fn setup_done(&mut self, now: Instant, inactivity: Option<Duration>) {
        self.timers[Timer::Setup.index()] = None;
        self.inactivity = inactivity;
        if let Some(limit) = inactivity {
            self.set_timer(Timer::Inactivity, now + limit);
        }
    }

    fn establish(&mut self, info: ConnectionInfo) {
        self.timers[Timer::Extensions.index()] = None;
        self.state = State::Established(info);
        self.outputs.push_back(SessionOutput::Established(info));
    }

    fn reject(&mut self, flags: u32, code: &'static str) {
        if let Some(error_code) = str0255(code) {
            self.outputs
                .push_back(SessionOutput::Transmit(Sv2Message::Common(
                    CommonMessagesOwned::SetupConnectionError(SetupConnectionErrorOwned {
                        flags,
                        error_code,
                    }),
                )));
        }
        self.close(CloseReason::SetupRejected {
            error_code: code.to_string(),
            flags,
        });
    }

    fn on_setup_reply(&mut self, now: Instant, frame: Frame, protocol: Subprotocol, flags: u32) {
        if frame.extension() != 0 || !matches!(frame.msg_type, 0x01 | 0x02) {
            let got = crate::message::message_name(frame.extension_type, frame.msg_type);
            return self.violation(Violation::SetupNotFirst { got });
        }
        let (min, max, inactivity) = match &self.setup {
            Setup::Client {
                setup,
                inactivity_timeout,
            } => (setup.min_version, setup.max_version, *inactivity_timeout),
            Setup::Server(_) => return,
        };
        match self.decode_common(frame) {
            Some(CommonMessagesOwned::SetupConnectionSuccess(s)) => {
                if s.used_version < min || s.used_version > max {
                    return self.close(CloseReason::Incompatible(format!(
                        "server chose version {} outside {min}..={max}",
                        s.used_version
                    )));
                }
                if protocol == Subprotocol::Mining
                    && flags & REQUIRES_VERSION_ROLLING != 0
                    && s.flags & REQUIRES_FIXED_VERSION != 0
                {
                    return self.close(CloseReason::Incompatible(
                        "server set REQUIRES_FIXED_VERSION but we require version rolling".into(),
                    ));
                }
                let info = ConnectionInfo {
                    protocol,
                    version: s.used_version,
                    flags,
                    success_flags: s.flags,
                    extensions: ExtensionSet::EMPTY,
                };
                self.setup_done(now, inactivity);
                if self.ext.request.is_empty() {
                    return self.establish(info);
                }
                let request = seq(self.ext.request.as_slice()).and_then(|requested_extensions| {
                    negotiation_message(ExtensionsNegotiationOwned::RequestExtensions(
                        RequestExtensionsOwned {
                            request_id: EXTENSIONS_REQUEST_ID,
                            requested_extensions,
                        },
                    ))
                });
                match request {
                    Some(m) => {
                        self.outputs.push_back(SessionOutput::Transmit(m));
                        self.set_timer(Timer::Extensions, now + self.ext.reply_timeout);
                        self.state = State::Negotiating(info);
                    }
                    None => self.establish(info),
                }
            }
            Some(CommonMessagesOwned::SetupConnectionError(e)) => {
                self.close(CloseReason::SetupRejected {
                    error_code: String::from_utf8_lossy(e.error_code.as_bytes()).into_owned(),
                    flags: e.flags,
                });
            }
            _ => {}
        }
    }

    /// A frame while extensions are being negotiated.
    fn on_negotiating(&mut self, frame: Frame, info: ConnectionInfo) {
        if frame.extension() == EXTENSIONS_NEGOTIATION {
            return self.on_negotiation_frame(frame, Some(info));
        }
        match self.role {
            Role::Server => {
                let required = self.ext.support[info.protocol].required;
                if !required.is_empty() {
                    return self.violation(Violation::RequiredExtensionsMissing(required));
                }
            }
            Role::Client => tracing::debug!(
                "server sent a message before answering RequestExtensions: continuing without extensions"
            ),
        }
        self.establish(info);
        self.on_established(frame, info);
    }

    /// An extension `0x0001` frame (`RequestExtensions` and its answers). `negotiating` is the
    /// connection while the negotiation is under way, `None` once established.
    fn on_negotiation_frame(&mut self, frame: Frame, negotiating: Option<ConnectionInfo>) {
        let got = crate::message::message_name(frame.extension_type, frame.msg_type);
        let m = match crate::extensions::decode_negotiation(frame.msg_type, frame.payload) {
            Ok(m) => m,
            Err(MessageError::UnknownMessageType { msg_type }) => {
                return self.violation(Violation::UnknownMessageType { msg_type })
            }
            Err(e) => return self.violation(Violation::Malformed(e.to_string())),
        };
        match (self.role, m) {
            (Role::Server, ExtensionsNegotiationOwned::RequestExtensions(r)) => {
                self.on_request_extensions(r, negotiating)
            }
            (Role::Client, ExtensionsNegotiationOwned::RequestExtensionsSuccess(r)) => {
                let Some(info) = negotiating else {
                    return tracing::debug!("late RequestExtensions.Success ignored");
                };
                if r.request_id != EXTENSIONS_REQUEST_ID {
                    return tracing::debug!(
                        request_id = r.request_id,
                        "RequestExtensions.Success for another request ignored"
                    );
                }
                let offered: Vec<u16> = r.supported_extensions.into_inner();
                let extensions = self
                    .ext
                    .request
                    .intersection(&ExtensionSet::from_ids(&offered));
                tracing::info!(%extensions, "extensions negotiated");
                self.establish(ConnectionInfo { extensions, ..info });
            }
            (Role::Client, ExtensionsNegotiationOwned::RequestExtensionsError(r)) => {
                let Some(info) = negotiating else {
                    return tracing::debug!("late RequestExtensions.Error ignored");
                };
                if r.request_id != EXTENSIONS_REQUEST_ID {
                    return tracing::debug!(
                        request_id = r.request_id,
                        "RequestExtensions.Error for another request ignored"
                    );
                }
                let unsupported = ExtensionSet::from_ids(&r.unsupported_extensions.into_inner());
                let required: Vec<u16> = r.required_extensions.into_inner();
                if !required.is_empty() {
                    return self.close(CloseReason::Incompatible(format!(
                        "server requires extensions {required:#06x?} we did not request"
                    )));
                }
                tracing::info!(%unsupported, "extensions refused: continuing without extensions");
                self.establish(info);
            }
            (_, _) => self.violation(Violation::WrongDirection { got }),
        }
    }

    /// Server: answers `RequestExtensions` from this subprotocol's [`ExtensionSupport`].
    fn on_request_extensions(
        &mut self,
        r: RequestExtensionsOwned,
        negotiating: Option<ConnectionInfo>,
    ) {
        if !self.ext.window_open {
            return self.violation(Violation::LateRequestExtensions);
        }
        let protocol = match (negotiating, self.state.clone()) {
            (Some(i), _) | (None, State::Established(i)) => i.protocol,
            _ => return,
        };
        let support = self.ext.support[protocol];
        let requested: Vec<u16> = r.requested_extensions.into_inner();
        let (supported, unsupported): (Vec<u16>, Vec<u16>) = requested
            .iter()
            .copied()
            .partition(|id| support.supported.contains(*id));
        let missing: Vec<u16> = support
            .required
            .as_slice()
            .iter()
            .copied()
            .filter(|id| !requested.contains(id))
            .collect();
        if supported.is_empty() || !missing.is_empty() {
            tracing::debug!(
                ?requested,
                ?unsupported,
                ?missing,
                "RequestExtensions refused"
            );
            let error = seq(&unsupported).zip(seq(&missing)).and_then(|(u, m)| {
                negotiation_message(ExtensionsNegotiationOwned::RequestExtensionsError(
                    RequestExtensionsErrorOwned {
                        request_id: r.request_id,
                        unsupported_extensions: u,
                        required_extensions: m,
                    },
                ))
            });
            if let Some(m) = error {
                self.outputs.push_back(SessionOutput::Transmit(m));
            }
            // The client may retry (use case 6); the window stays open.
            return;
        }
        let extensions = ExtensionSet::from_ids(&supported);
        tracing::info!(%extensions, "extensions negotiated");
        let success = seq(extensions.as_slice()).and_then(|supported_extensions| {
            negotiation_message(ExtensionsNegotiationOwned::RequestExtensionsSuccess(
                RequestExtensionsSuccessOwned {
                    request_id: r.request_id,
                    supported_extensions,
                },
            ))
        });
        if let Some(m) = success {
            self.outputs.push_back(SessionOutput::Transmit(m));
        }
        self.ext.window_open = false;
        if let Some(info) = negotiating {
            self.establish(ConnectionInfo { extensions, ..info });
        }
        // Already established (this subprotocol supports nothing): `supported` is empty, so
        // this point is only reached while negotiating.
    }

    fn on_established(&mut self, frame: Frame, info: ConnectionInfo) {
        if frame.extension() == EXTENSIONS_NEGOTIATION {
            return self.on_negotiation_frame(frame, None);
        }
        self.ext.window_open = false;
        if frame.extension() != 0 {
            if frame.channel_msg() || info.extensions.contains(frame.extension()) {
                if let Ok(m) = Sv2Message::decode(frame) {
                    self.outputs.push_back(SessionOutput::Deliver(m));
                }
            } else {
                tracing::trace!(
                    extension_type = frame.extension(),
                    msg_type = frame.msg_type,
                    "discarding unknown extension message (spec 3.4.1)"
                );
            }
            return;
        }
        let got = crate::message::message_name(0, frame.msg_type);
        if frame.msg_type <= 0x04 {
            if matches!(frame.msg_type, 0x00..=0x02) {
                return self.violation(Violation::SetupTwice);
            }
            if !self.role.may_receive(frame.msg_type) {
                return self.violation(Violation::WrongDirection { got });
            }
            let Some(m) = self.decode_common(frame) else {
                return;
            };
            if let CommonMessagesOwned::Reconnect(ReconnectOwned { new_host, new_port }) = &m {
                let host = String::from_utf8_lossy(new_host.as_bytes()).into_owned();
                return self.close(CloseReason::Reconnect {
                    host,
                    port: *new_port,
                });
            }
            self.outputs
                .push_back(SessionOutput::Deliver(Sv2Message::Common(m)));
            return;
        }
        let Some(p) = Subprotocol::of_msg_type(frame.msg_type) else {
            return self.violation(Violation::UnknownMessageType {
                msg_type: frame.msg_type,
            });
        };
        if p != info.protocol {
            return self.violation(Violation::WrongSubprotocol {
                got,
                negotiated: info.protocol,
            });
        }
        if !self.role.may_receive(frame.msg_type) {
            return self.violation(Violation::WrongDirection { got });
        }
        let mut payload = bytes::BytesMut::from(frame.payload);
        match Sv2Message::decode_in(p, frame.msg_type, &mut payload) {
            Ok(m) if info.extensions.is_empty() => {
                self.outputs.push_back(SessionOutput::Deliver(m))
            }
            Ok(m) => {
                let tlvs = payload
                    .get(m.encoded_size()..)
                    .map(|rest| TlvFields::parse(rest, &info.extensions))
                    .unwrap_or_default();
                self.outputs
                    .push_back(SessionOutput::Deliver(m.with_tlvs(tlvs)));
            }
            Err(MessageError::UnknownMessageType { msg_type }) => {
                self.violation(Violation::UnknownMessageType { msg_type })
            }
            Err(e) => self.violation(Violation::Malformed(e.to_string())),
        }
    }
}

/// A `SEQ0_64K[U16]` of `ids` (at most 65 535 elements: more are dropped).
fn seq(ids: &[u16]) -> Option<Seq064KOwned<u16>> {
    let ids = ids
        .get(..ids.len().min(usize::from(u16::MAX)))
        .unwrap_or(ids);
    Seq064KOwned::new(ids.to_vec()).ok()
}

fn negotiation_message(m: ExtensionsNegotiationOwned) -> Option<Sv2Message> {
    crate::extensions::encode_negotiation(m).ok()
}

/// Builds an `STR0_255` from `s`, truncated to 255 bytes at a character boundary.
/// Returns `None` only if the SRI type rejects it (it accepts any ≤255-byte string).
pub fn str0255(s: &str) -> Option<stratum_core::binary_sv2::Str0255Owned> {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    stratum_core::binary_sv2::Str0255Owned::try_from(&s[..end]).ok()
}
