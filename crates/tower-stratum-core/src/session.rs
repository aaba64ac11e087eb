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

use crate::frame::Frame;
use crate::message::{MessageError, Subprotocol, Sv2Message};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};
use stratum_core::common_messages_sv2::{
    ReconnectOwned, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccess,
};
use stratum_core::parsers_sv2::CommonMessagesOwned;

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
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            min_version: 2,
            max_version: 2,
            handshake_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(10),
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
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::Handshake, Timer::Setup, Timer::Inactivity];
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
    /// The server's SetupConnection.Success is unusable (version or flags out of range).
    Incompatible(String),
    /// The Noise handshake failed (includes certificate rejection).
    Handshake(String),
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
    AwaitSetupReply { protocol: Subprotocol, flags: u32 },
    Established(ConnectionInfo),
    Closed,
}

/// How a session's side of SetupConnection is configured.
#[derive(Debug, Clone)]
enum Setup {
    /// Server: what each subprotocol offers (`None` = refused).
    Server([Option<ProtocolSupport>; 3]),
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
    timers: [Option<Instant>; 3],
    inactivity: Option<Duration>,
    outputs: VecDeque<SessionOutput>,
}

impl Session {
    /// A server session. `now` starts the handshake timer; with `noise == false` there is no
    /// handshake and the SetupConnection timer starts at once. `support[p.index()]` is what the
    /// server offers for subprotocol `p`; `None` refuses it with `unsupported-protocol`.
    pub fn server(
        config: SessionConfig,
        support: [Option<ProtocolSupport>; 3],
        noise: bool,
        now: Instant,
    ) -> Self {
        let mut s = Self {
            role: Role::Server,
            config,
            setup: Setup::Server(support),
            state: State::Handshake,
            timers: [None; 3],
            inactivity: None,
            outputs: VecDeque::new(),
        };
        s.set_timer(Timer::Handshake, now + config.handshake_timeout);
        if !noise {
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
        noise: bool,
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
            timers: [None; 3],
            inactivity: None,
            outputs: VecDeque::new(),
        };
        s.set_timer(Timer::Handshake, now + config.handshake_timeout);
        if !noise {
            s.handshake_complete(now);
        }
        s
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
        self.timers = [None; 3];
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
        let Some(support) = support[protocol.index()] else {
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
        };
        self.outputs
            .push_back(SessionOutput::Transmit(Sv2Message::Common(
                CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccess {
                    used_version: version,
                    flags: support.success_flags,
                }),
            )));
        self.establish(now, info, support.inactivity_timeout);
    }

    fn establish(&mut self, now: Instant, info: ConnectionInfo, inactivity: Option<Duration>) {
        self.timers[Timer::Setup.index()] = None;
        self.inactivity = inactivity;
        if let Some(limit) = inactivity {
            self.set_timer(Timer::Inactivity, now + limit);
        }
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
                };
                self.establish(now, info, inactivity);
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

    fn on_established(&mut self, frame: Frame, info: ConnectionInfo) {
        if frame.extension() != 0 {
            if frame.channel_msg() {
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
            Ok(m) => self.outputs.push_back(SessionOutput::Deliver(m)),
            Err(MessageError::UnknownMessageType { msg_type }) => {
                self.violation(Violation::UnknownMessageType { msg_type })
            }
            Err(e) => self.violation(Violation::Malformed(e.to_string())),
        }
    }
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
