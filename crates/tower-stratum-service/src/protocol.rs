//! What the one connection runtime needs to know about a wire protocol.
//!
//! The connection task (`connection.rs`: batching, `max_in_flight`, flush policy, write
//! guard), the hub (`hub.rs`: handlers, registry, sibling link, timers), the accept loop, the
//! server handle and the request sender are written once, generic over [`Protocol`]. Two
//! zero-sized types implement it, in the style of hyper's `proto/h1/role.rs`: [`Sv2`] (binary
//! frames, Noise, the SetupConnection state machine of `tower_stratum_core::Session`) and
//! [`Sv1`](crate::sv1::Sv1) (JSON lines, the Sv1 handshake order of
//! `tower_stratum_sv1::Sv1ServerSession`). The side of a connection (server or client) is the
//! type of the handler set the hub owns (`ServerHandlers` or `ClientHandlers`), not a runtime
//! flag.
//!
//! Everything here is sans-IO: associated types and plain functions over the protocol's
//! session, codec and messages. See docs/ARCHITECTURE.md for the life of a connection.

use std::fmt;
use std::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_core::{ConnectionId, SiblingMessage};

/// One thing the hub or a connection task must do, whatever the protocol: the common shape of
/// Sv2's `Action` and Sv1's `Sv1Action`, produced by [`Protocol::routes`].
#[derive(Debug)]
pub enum Route<P: Protocol> {
    /// Send to the connection the event came from (dropped when there is none).
    Reply(P::Outgoing),
    /// Close the connection the event came from, after what was queued before it.
    Close(String),
    /// Send to one connection (to the origin it is a reply). Dropped if it is gone.
    SendTo(ConnectionId, P::Outgoing),
    /// Send one message to several connections; encoded once where the protocol allows.
    Multicast(Vec<ConnectionId>, P::Outgoing),
    /// Send to every connection in the group (Sv2: of one subprotocol; Sv1: all).
    Broadcast(P::Group, P::Outgoing),
    /// Close another connection (to the origin it is a close).
    Disconnect(ConnectionId, String),
    /// Hand a message to the sibling service, if one is linked.
    ToSibling(SiblingMessage),
}

/// What a session wants done next (the generic form of `tower_stratum_core::SessionOutput`).
#[derive(Debug)]
pub enum Output<P: Protocol> {
    /// Hand this message to the handlers.
    Deliver(P::Message),
    /// Write this to the peer (a session-level answer the handlers do not see).
    Transmit(P::Outgoing),
    /// The connection is established: from now on the hub knows it by this context.
    Established(P::Context),
    /// Close with this reason.
    Close(P::CloseReason),
}

/// The outputs of a session that decides them a line at a time (the Sv1 sessions answer each
/// line at once; the runtime asks for outputs one by one): in order, nothing after the close,
/// and the close taken once.
#[derive(Debug)]
pub(crate) struct Outputs<P: Protocol> {
    queue: std::collections::VecDeque<Output<P>>,
    closed: bool,
}

impl<P: Protocol> Outputs<P> {
    /// A connection established at once, known as `ctx`.
    pub(crate) fn established(ctx: P::Context) -> Self {
        let mut queue = std::collections::VecDeque::with_capacity(2);
        queue.push_back(Output::Established(ctx));
        Self {
            queue,
            closed: false,
        }
    }

    /// Queues `output`, unless the session is closed.
    pub(crate) fn push(&mut self, output: Output<P>) {
        if !self.closed {
            self.queue.push_back(output);
        }
    }

    /// Queues the close (the first reason wins).
    pub(crate) fn close(&mut self, reason: P::CloseReason) {
        if !self.closed {
            self.closed = true;
            self.queue.push_back(Output::Close(reason));
        }
    }

    /// Whether the close is decided.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next output.
    pub(crate) fn pop(&mut self) -> Option<Output<P>> {
        self.queue.pop_front()
    }
}

/// A wire protocol the runtime can carry. Implemented by zero-sized types ([`Sv2`],
/// [`Sv1`](crate::sv1::Sv1)); every item is a type or a function without `self`.
pub trait Protocol: Sized + Send + Sync + 'static {
    /// For logs: `"sv2"` or `"sv1"`.
    const NAME: &'static str;
    /// The per-connection sans-IO state machine.
    type Session: Send + 'static;
    /// The `tokio_util` codec between bytes and [`Frame`](Self::Frame)s / [`Wire`](Self::Wire)s.
    type Codec: Decoder<Item = Self::Frame, Error = Self::CodecError>
        + Encoder<Self::Wire, Error = Self::CodecError>
        + Send
        + 'static;
    /// What the codec decodes (Sv2: a frame; Sv1: a parsed line or its parse error).
    type Frame: Send + 'static;
    /// A codec error (always fatal to the connection).
    type CodecError: std::error::Error + From<std::io::Error> + Send + Sync + 'static;
    /// An encoded message, cheap to clone: encoded once for a broadcast.
    type Wire: Clone + Send + Sync + fmt::Debug + 'static;
    /// A message from the peer, as delivered to the handlers.
    type Message: Send + fmt::Debug + 'static;
    /// A message to the peer.
    type Outgoing: Clone + Send + fmt::Debug + 'static;
    /// What handlers and the registry know of a connection.
    type Context: Copy + Send + Sync + fmt::Debug + 'static;
    /// What the inbound stack carries: a [`Message`](Self::Message) with its context.
    type Inbound: Send + fmt::Debug + 'static;
    /// Why a connection closed.
    type CloseReason: Clone + Send + Sync + fmt::Display + fmt::Debug + 'static;
    /// What a handler returns.
    type Actions: Default + Send + fmt::Debug + 'static;
    /// A broadcast's audience.
    type Group: Send + fmt::Debug + 'static;
    /// An application command (the service's `tower::Service` request).
    type Request: Send + fmt::Debug + 'static;
    /// Its answer.
    type Response: Send + fmt::Debug + 'static;

    // --- messages -------------------------------------------------------------------------

    /// Pairs a delivered message with its connection for the inbound stack.
    fn inbound(ctx: Self::Context, message: Self::Message) -> Self::Inbound;
    /// The connection an inbound message came from.
    fn origin(msg: &Self::Inbound) -> ConnectionId;
    /// The connection id of a context.
    fn id(ctx: &Self::Context) -> ConnectionId;
    /// A span for one delivered message (its name, its request id...).
    fn message_span(message: &Self::Message) -> tracing::Span;
    /// Encodes a message for the wire. Errors: a message that cannot be encoded (text for the
    /// log; the connection is closed).
    fn encode(m: Self::Outgoing) -> Result<Self::Wire, String>;
    /// The encoding the hub queues to a connection (once for all of a broadcast):
    /// `Ok(Some(wire))`, `Ok(None)` when it cannot be encoded (logged; nothing is sent), or
    /// `Err(m)` back when the connection's session must see the typed message (an Sv1
    /// response, which its session tracks).
    #[allow(clippy::result_large_err)]
    fn shared_wire(m: Self::Outgoing) -> Result<Option<Self::Wire>, Self::Outgoing>;
    /// Whether a context is in a broadcast's group.
    fn in_group(ctx: &Self::Context, group: &Self::Group) -> bool;

    // --- actions --------------------------------------------------------------------------

    /// Whether every action is a reply to or a close of the origin (the usual answer to a
    /// share): the hub hands such actions back without looking at them.
    fn only_own(actions: &Self::Actions) -> bool;
    /// The actions in their common shape, in order.
    fn routes(actions: Self::Actions) -> impl Iterator<Item = Route<Self>> + Send;
    /// Appends a reply to the origin to `actions`.
    fn push_reply(actions: &mut Self::Actions, m: Self::Outgoing);
    /// Appends a close of the origin to `actions`.
    fn push_close(actions: &mut Self::Actions, reason: String);

    // --- close reasons --------------------------------------------------------------------

    /// The service is shutting down.
    fn shutdown() -> Self::CloseReason;
    /// The outbound queue overflowed or a write did not finish in time.
    fn slow_consumer() -> Self::CloseReason;
    /// A socket error.
    fn io_error(text: String) -> Self::CloseReason;
    /// A handler or the application closed the connection.
    fn closed(reason: String) -> Self::CloseReason;
    /// Whether a close is the peer's doing (a broken rule, bad bytes, a missed deadline):
    /// worth a line in the operator's log (`peer_log`).
    fn peer_at_fault(reason: &Self::CloseReason) -> bool;

    // --- the session ----------------------------------------------------------------------

    /// A frame arrived at `now`.
    fn handle_frame(s: &mut Self::Session, now: Instant, frame: Self::Frame);
    /// The codec failed (fatal).
    fn handle_codec_error(s: &mut Self::Session, e: Self::CodecError);
    /// The peer closed its side.
    fn peer_closed(s: &mut Self::Session);
    /// The next output, if any.
    fn poll_output(
        s: &mut Self::Session,
        id: ConnectionId,
        peer: Option<std::net::SocketAddr>,
    ) -> Option<Output<Self>>;
    /// Sees a message just before it is written (Sv1 tracks its answers to subscribe and
    /// authorize). Default: nothing.
    fn on_send(s: &mut Self::Session, m: &Self::Outgoing) {
        let _ = (s, m);
    }
    /// The earliest deadline of the session.
    fn poll_timeout(s: &Self::Session) -> Option<Instant>;
    /// A deadline may have passed.
    fn handle_timeout(s: &mut Self::Session, now: Instant);
    /// Closes the session with `reason` (its `Close` output follows).
    fn close(s: &mut Self::Session, reason: Self::CloseReason);
    /// Whether bytes of an unfinished frame are held (Sv2's frame timer). Default: nothing.
    fn frame_progress(s: &mut Self::Session, now: Instant, started: bool) {
        let _ = (s, now, started);
    }
    /// The receive limit the codec should apply now, if the session sets one. Default `None`.
    fn max_payload(s: &Self::Session) -> Option<usize> {
        let _ = s;
        None
    }
    /// Bytes the codec holds of an unfinished frame (beyond the read buffer). Default 0.
    fn codec_buffered(c: &Self::Codec) -> usize {
        let _ = c;
        0
    }
    /// Applies a receive limit to the codec. Default: nothing.
    fn set_max_payload(c: &mut Self::Codec, limit: usize) {
        let _ = (c, limit);
    }

    // --- application requests ------------------------------------------------------------

    /// What the hub must do for an application request.
    fn command(req: Self::Request) -> Command<Self>;
    /// The answer to a carried-out request.
    fn done() -> Self::Response;
    /// The answer to a listing, sorted by id.
    fn connections(list: Vec<Self::Context>) -> Self::Response;
}

/// An application request as the hub carries it out (see [`Protocol::command`]).
#[derive(Debug)]
pub enum Command<P: Protocol> {
    /// Carry out `routes` (without an origin); fails with `UnknownConnection` first if
    /// `require` is not established.
    Routes {
        /// What to do.
        routes: Vec<Route<P>>,
        /// A connection that must exist.
        require: Option<ConnectionId>,
    },
    /// List the established connections.
    List,
    /// Deliver to this service's own handlers as a sibling message.
    ToHandlers(SiblingMessage),
    /// Send to the sibling; fails with `NoSibling` when none is linked.
    ToSibling(SiblingMessage),
    /// Hand the request and its reply to the handlers, which answer it when they can (the Sv1
    /// client: the server's response to a call arrives later, on the connection).
    Call(P::Request),
}

/// Stratum V2: binary frames (plaintext or Noise NX), the sans-IO
/// [`Session`](tower_stratum_core::Session) (SetupConnection, extensions, timers), handlers
/// per subprotocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sv2;

mod sv2_impl {
    use super::{Command, Output, Protocol, Route, Sv2};
    use crate::request::{Request, Response};
    use std::time::Instant;
    use tower_stratum_codec::{CodecError, Sv2Codec};
    use tower_stratum_core::session::Timer;
    use tower_stratum_core::{
        Action, Actions, CloseReason, ConnectionContext, ConnectionId, Frame, InboundMessage,
        Session, SessionOutput, Subprotocol, Sv2Message,
    };

    impl Protocol for Sv2 {
        const NAME: &'static str = "sv2";
        type Session = Session;
        type Codec = Sv2Codec;
        type Frame = Frame;
        type CodecError = CodecError;
        type Wire = Frame;
        type Message = Sv2Message;
        type Outgoing = Sv2Message;
        type Context = ConnectionContext;
        type Inbound = InboundMessage;
        type CloseReason = CloseReason;
        type Actions = Actions;
        type Group = Subprotocol;
        type Request = Request;
        type Response = Response;

        fn inbound(ctx: ConnectionContext, message: Sv2Message) -> InboundMessage {
            InboundMessage { ctx, message }
        }
        fn origin(msg: &InboundMessage) -> ConnectionId {
            msg.ctx.id
        }
        fn id(ctx: &ConnectionContext) -> ConnectionId {
            ctx.id
        }
        fn message_span(message: &Sv2Message) -> tracing::Span {
            tracing::debug_span!("message", name = message.name())
        }
        fn encode(m: Sv2Message) -> Result<Frame, String> {
            let name = m.name();
            m.encode().map_err(|e| format!("cannot encode {name}: {e}"))
        }
        fn shared_wire(m: Sv2Message) -> Result<Option<Frame>, Sv2Message> {
            let name = m.name();
            match m.encode() {
                Ok(f) => Ok(Some(f)),
                Err(e) => {
                    tracing::warn!(message = name, error = %e, "cannot encode; not sent");
                    Ok(None)
                }
            }
        }
        fn in_group(ctx: &ConnectionContext, group: &Subprotocol) -> bool {
            ctx.protocol() == *group
        }

        fn only_own(actions: &Actions) -> bool {
            actions
                .iter()
                .all(|a| matches!(a, Action::Reply(_) | Action::Close(_)))
        }
        fn routes(actions: Actions) -> impl Iterator<Item = Route<Self>> + Send {
            actions.into_iter().filter_map(|a| {
                Some(match a {
                    Action::Reply(m) => Route::Reply(m),
                    Action::SendTo(id, m) => Route::SendTo(id, m),
                    Action::Broadcast(p, m) | Action::SendUpstream(p, m) => Route::Broadcast(p, m),
                    Action::ToSibling(s) => Route::ToSibling(s),
                    Action::Close(r) => Route::Close(r),
                    Action::Disconnect(id, r) => Route::Disconnect(id, r),
                    _ => return None,
                })
            })
        }
        fn push_reply(actions: &mut Actions, m: Sv2Message) {
            actions.push(Action::Reply(m));
        }
        fn push_close(actions: &mut Actions, reason: String) {
            actions.push(Action::Close(reason));
        }

        fn shutdown() -> CloseReason {
            CloseReason::Shutdown
        }
        fn slow_consumer() -> CloseReason {
            CloseReason::SlowConsumer
        }
        fn io_error(text: String) -> CloseReason {
            CloseReason::Io(text)
        }
        fn closed(reason: String) -> CloseReason {
            CloseReason::Closed(reason)
        }
        fn peer_at_fault(reason: &CloseReason) -> bool {
            matches!(
                reason,
                CloseReason::PeerMisbehaved(_)
                    | CloseReason::Transport(_)
                    | CloseReason::Handshake(_)
                    | CloseReason::CertificateRejected(_)
                    | CloseReason::SlowConsumer
                    | CloseReason::TimedOut(
                        Timer::Handshake | Timer::Setup | Timer::Inactivity | Timer::Frame
                    )
            )
        }

        fn handle_frame(s: &mut Session, now: Instant, frame: Frame) {
            s.handle_frame(now, frame);
        }
        fn handle_codec_error(s: &mut Session, e: CodecError) {
            s.close(CloseReason::Transport(e.to_string()));
        }
        fn peer_closed(s: &mut Session) {
            s.close(CloseReason::PeerClosed);
        }
        fn poll_output(
            s: &mut Session,
            id: ConnectionId,
            peer: Option<std::net::SocketAddr>,
        ) -> Option<Output<Self>> {
            Some(match s.poll_output()? {
                SessionOutput::Deliver(m) => Output::Deliver(m),
                SessionOutput::Transmit(m) => Output::Transmit(m),
                SessionOutput::Established(info) => {
                    tracing::Span::current()
                        .record("protocol", tracing::field::display(info.protocol));
                    tracing::info!(version = info.version, flags = info.flags, "established");
                    Output::Established(ConnectionContext {
                        id,
                        peer,
                        role: s.role(),
                        info,
                    })
                }
                SessionOutput::Close(r) => Output::Close(r),
            })
        }
        fn poll_timeout(s: &Session) -> Option<Instant> {
            s.poll_timeout()
        }
        fn handle_timeout(s: &mut Session, now: Instant) {
            s.handle_timeout(now);
        }
        fn close(s: &mut Session, reason: CloseReason) {
            s.close(reason);
        }
        fn frame_progress(s: &mut Session, now: Instant, started: bool) {
            s.frame_progress(now, started);
        }
        fn max_payload(s: &Session) -> Option<usize> {
            Some(s.max_payload())
        }
        fn codec_buffered(c: &Sv2Codec) -> usize {
            c.buffered_len()
        }
        fn set_max_payload(c: &mut Sv2Codec, limit: usize) {
            c.set_max_payload(limit);
        }

        fn command(req: Request) -> Command<Self> {
            match req {
                Request::SendTo(id, m) => Command::Routes {
                    routes: vec![Route::SendTo(id, m)],
                    require: Some(id),
                },
                Request::Broadcast(p, m) | Request::SendUpstream(p, m) => Command::Routes {
                    routes: vec![Route::Broadcast(p, m)],
                    require: None,
                },
                Request::Disconnect(id) => Command::Routes {
                    routes: vec![Route::Disconnect(id, "disconnected by application".into())],
                    require: Some(id),
                },
                Request::ListConnections => Command::List,
                Request::ToHandlers(m) => Command::ToHandlers(m),
                Request::ToSibling(m) => Command::ToSibling(m),
            }
        }
        fn done() -> Response {
            Response::Done
        }
        fn connections(list: Vec<ConnectionContext>) -> Response {
            Response::Connections(list)
        }
    }
}
