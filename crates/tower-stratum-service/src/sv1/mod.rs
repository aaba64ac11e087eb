//! Stratum V1 on the one connection runtime: [`Sv1ServerService`] and [`Sv1ClientService`].
//!
//! - [`Sv1ServerService`]: accepts miners (TCP or any stream through a [`Listener`]), one task
//!   per connection around a sans-IO [`Sv1ServerSession`], one hub task owning your
//!   [`Sv1ServerHandler`] (`&mut self`, no locks). It is the Sv2 server's runtime with the
//!   [`Sv1`] protocol: the same connection shell (a burst of pipelined requests reaches the
//!   handler together, up to [`Sv1ServerConfig::max_in_flight`]; answers leave in request
//!   order, in one write), the same hub (never awaits a connection or the sibling; handler
//!   timers), the same accept loop, [`ServerHandle`] and request sender. Handler methods are
//!   named after the Sv1 methods (`handle_subscribe`, `handle_submit`, ...) and return
//!   [`Sv1Actions`]: reply, push to this miner, to others or to all, close, talk to the
//!   sibling. Each connection has exactly one writer, so replies and pushes are whole lines
//!   and never interleave. It is a `tower::Service<`[`Sv1Request`]`>` for the application
//!   (push, broadcast, list, disconnect, send to the handlers or the sibling).
//! - [`Sv1ClientService`]: one connection to an Sv1 server, on the same runtime (the shared
//!   connection shell around a sans-IO client session; the hub task keeps the table of calls
//!   waiting for their responses); calls resolve to the server's response or time out
//!   (default 30 s); notifications arrive on a bounded stream with backpressure.
//!
//! # Guarantees
//!
//! - **Order of the Sv1 handshake** is enforced before the handler sees a message (see
//!   [`Sv1ServerSession`]): a second `mining.subscribe` gets `[20, "Already subscribed"]`,
//!   `mining.authorize` before `mining.subscribe` and `mining.submit` before a successful
//!   subscribe get `[25, "Not subscribed"]`, `mining.submit` for a worker this connection did
//!   not authorize gets `[24, "Unauthorized worker"]`.
//! - **Bad input never panics**: a request with malformed params gets `[20, "Other/Unknown"]`;
//!   a line that is not a JSON object (nobody to answer) closes the connection; a line longer
//!   than `max_line_length` closes it.
//! - **Deadlines** (monotonic clock): subscribe + authorize within `setup_timeout` (default
//!   30 s), a line at least every `inactivity_timeout` (default 900 s), each write within
//!   `write_timeout` (default 30 s).
//! - **Bounded everywhere**: handler queue (`poll_ready` backpressure; connections stop
//!   reading when it is full), requests in flight per connection, per-connection outbound
//!   queue (a miner that does not read is evicted, never stalls the others), sibling link,
//!   client notification stream.
//! - **Graceful shutdown**: [`ServerHandle::shutdown`] closes every connection and calls
//!   `on_connection_removed` for each.
//!
//! # TLS
//!
//! With the `tls` feature (rustls, ring provider): serve through a `tls::TlsListener` (the
//! handshake runs in each connection's task, bounded by the setup deadline) and connect with
//! `Sv1ClientService::connect_tls`. Without it, any stream works: wrap streams in a
//! [`Listener`] or pass one to [`Sv1ClientService::new`].

mod client;
mod config;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{
    Sv1CallFuture, Sv1ClientError, Sv1ClientHandle, Sv1ClientService, Sv1Notifications,
};
pub use config::{Sv1ClientConfig, Sv1ServerConfig, DEFAULT_SERVER_MAX_LINE};
pub use tower_stratum_sv1::{
    configure_refused, dispatch, not_supported, NullSv1ServerHandler, Sv1Action, Sv1Actions,
    Sv1CloseReason, Sv1ConnectionContext, Sv1InboundMessage, Sv1ServerHandler, Sv1Timer,
    METHOD_NOT_SUPPORTED,
};
pub use tower_stratum_sv1::{
    Sv1Inbound, Sv1ServerSession, Sv1SessionConfig, ALREADY_SUBSCRIBED, TOO_MANY_PENDING,
    TOO_MANY_WORKERS,
};

use crate::connection::{self, Links, Shell};
use crate::hub::{HandlerSet, Hub, HubInput, SiblingEnd};
use crate::inbound::HandlerService;
use crate::protocol::{Command, Output, Outputs, Protocol, Route};
use crate::request::{RequestSender, ResponseFuture};
use crate::server::{spawn_server, ServerHandle, SiblingIo};
use crate::{Listener, ServiceError};
use futures_util::FutureExt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedParts};
use tower::layer::util::{Identity, Stack};
use tower::Layer;
use tower_stratum_core::{ConnectionId, SiblingMessage};
use tower_stratum_sv1::{
    ClientMessage, RawLine, ServerMessage, Sv1CodecError, Sv1ParseError, Sv1ServerCodec,
};
use tracing::Instrument;

/// Errors of [`Sv1ServerService`]'s request interface: the same as the Sv2 services'.
pub type Sv1ServiceError = ServiceError;
/// What [`Sv1ServerBuilder::serve`] returns to stop the server: the same handle as Sv2's.
pub type Sv1ServerHandle = ServerHandle;
/// The innermost service of the Sv1 inbound stack: hands each message to the handler task
/// (see [`HandlerService`]).
pub type Sv1HandlerService = HandlerService<Sv1>;

crate::inbound::stack_trait!(
    /// Bound on the Sv1 inbound stack: the layered [`Sv1HandlerService`].
    Sv1InboundStack,
    Sv1InboundMessage,
    Sv1Actions
);

/// A command from the application to an [`Sv1ServerService`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Sv1Request {
    /// Queue a message to one miner. Errors with [`ServiceError::UnknownConnection`] if it is
    /// gone.
    SendTo(ConnectionId, ServerMessage),
    /// Queue one message to several miners (encoded once, unless it is a response).
    Multicast(Vec<ConnectionId>, ServerMessage),
    /// Queue one message to every miner (encoded once, unless it is a response).
    Broadcast(ServerMessage),
    /// Close one connection (after its queued messages are written).
    Disconnect(ConnectionId),
    /// List the connections.
    ListConnections,
    /// Deliver to THIS service's handler, through `handle_sibling_message`, as if the sibling
    /// had sent it; the actions it returns are carried out.
    ToHandlers(SiblingMessage),
    /// Send to the sibling service. Errors with [`ServiceError::NoSibling`].
    ToSibling(SiblingMessage),
}

/// The answer to an [`Sv1Request`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Sv1Response {
    /// Done (queued; delivery is asynchronous).
    Done,
    /// Answer to [`Sv1Request::ListConnections`], sorted by id.
    Connections(Vec<Sv1ConnectionContext>),
}

/// Stratum V1 (server side): JSON lines through [`Sv1ServerCodec`], the sans-IO
/// [`Sv1ServerSession`], one [`Sv1ServerHandler`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sv1;

/// An Sv1 server connection's session as the runtime drives it: the sans-IO
/// [`Sv1ServerSession`] plus the queue of what it decided (the Sv1 session answers each line at
/// once; the runtime asks for outputs one by one, as it does Sv2's).
#[derive(Debug)]
pub struct Sv1Connection {
    session: Sv1ServerSession,
    out: Outputs<Sv1>,
}

impl Sv1Connection {
    /// A connection accepted at `now`: it is established at once (the handler's
    /// `on_connection_added` comes before any line is read).
    pub fn new(config: Sv1SessionConfig, ctx: Sv1ConnectionContext, now: Instant) -> Self {
        Self {
            session: Sv1ServerSession::new(config, now),
            out: Outputs::established(ctx),
        }
    }
}

/// Why a codec error closes an Sv1 connection (either side).
pub(crate) fn codec_close_reason(e: Sv1CodecError) -> Sv1CloseReason {
    match e {
        Sv1CodecError::LineTooLong { .. } => Sv1CloseReason::LineTooLong,
        e => Sv1CloseReason::Io(e.to_string()),
    }
}

impl Protocol for Sv1 {
    const NAME: &'static str = "sv1";
    type Session = Sv1Connection;
    type Codec = Sv1ServerCodec;
    type Frame = Result<ClientMessage, Sv1ParseError>;
    type CodecError = Sv1CodecError;
    type Wire = RawLine;
    type Message = ClientMessage;
    type Outgoing = ServerMessage;
    type Context = Sv1ConnectionContext;
    type Inbound = Sv1InboundMessage;
    type CloseReason = Sv1CloseReason;
    type Actions = Sv1Actions;
    type Group = ();
    type Request = Sv1Request;
    type Response = Sv1Response;

    fn inbound(ctx: Sv1ConnectionContext, message: ClientMessage) -> Sv1InboundMessage {
        Sv1InboundMessage { ctx, message }
    }
    fn origin(msg: &Sv1InboundMessage) -> ConnectionId {
        msg.ctx.id
    }
    fn id(ctx: &Sv1ConnectionContext) -> ConnectionId {
        ctx.id
    }
    fn message_span(message: &ClientMessage) -> tracing::Span {
        tracing::debug_span!(
            "message",
            method = message.method().unwrap_or("response"),
            request_id = %message.id(),
        )
    }
    fn encode(m: ServerMessage) -> Result<RawLine, String> {
        Ok(RawLine::encode(&m))
    }
    fn shared_wire(m: ServerMessage) -> Result<Option<RawLine>, ServerMessage> {
        match m {
            // Each connection's session must see its responses.
            ServerMessage::Response(_) => Err(m),
            other => Ok(Some(RawLine::encode(&other))),
        }
    }
    fn in_group(_: &Sv1ConnectionContext, _: &()) -> bool {
        true
    }

    fn only_own(actions: &Sv1Actions) -> bool {
        actions
            .iter()
            .all(|a| matches!(a, Sv1Action::Reply(_) | Sv1Action::Close(_)))
    }
    fn routes(actions: Sv1Actions) -> impl Iterator<Item = Route<Self>> + Send {
        actions.into_iter().filter_map(|a| {
            Some(match a {
                Sv1Action::Reply(m) => Route::Reply(m),
                Sv1Action::SendTo(id, m) => Route::SendTo(id, m),
                Sv1Action::Multicast(ids, m) => Route::Multicast(ids, m),
                Sv1Action::Broadcast(m) => Route::Broadcast((), m),
                Sv1Action::ToSibling(s) => Route::ToSibling(s),
                Sv1Action::Close(r) => Route::Close(r),
                Sv1Action::Disconnect(id, r) => Route::Disconnect(id, r),
                _ => return None,
            })
        })
    }
    fn push_reply(actions: &mut Sv1Actions, m: ServerMessage) {
        actions.push(Sv1Action::Reply(m));
    }
    fn push_close(actions: &mut Sv1Actions, reason: String) {
        actions.push(Sv1Action::Close(reason));
    }

    fn shutdown() -> Sv1CloseReason {
        Sv1CloseReason::Shutdown
    }
    fn slow_consumer() -> Sv1CloseReason {
        Sv1CloseReason::SlowConsumer
    }
    fn io_error(text: String) -> Sv1CloseReason {
        Sv1CloseReason::Io(text)
    }
    fn closed(reason: String) -> Sv1CloseReason {
        Sv1CloseReason::Closed(reason)
    }
    fn peer_at_fault(reason: &Sv1CloseReason) -> bool {
        matches!(
            reason,
            Sv1CloseReason::TimedOut(_)
                | Sv1CloseReason::LineTooLong
                | Sv1CloseReason::InvalidLine(_)
                | Sv1CloseReason::SlowConsumer
        )
    }

    fn handle_frame(
        s: &mut Sv1Connection,
        now: Instant,
        line: Result<ClientMessage, Sv1ParseError>,
    ) {
        if s.out.is_closed() {
            return;
        }
        match s.session.on_line(now, line) {
            Sv1Inbound::Deliver(m) => s.out.push(Output::Deliver(m)),
            Sv1Inbound::Reply(r) => s.out.push(Output::Transmit(ServerMessage::Response(r))),
            Sv1Inbound::Ignore => {}
            Sv1Inbound::Close(reason) => s.out.close(reason),
        }
    }
    fn handle_codec_error(s: &mut Sv1Connection, e: Sv1CodecError) {
        s.out.close(codec_close_reason(e));
    }
    fn peer_closed(s: &mut Sv1Connection) {
        s.out.close(Sv1CloseReason::PeerClosed);
    }
    fn poll_output(
        s: &mut Sv1Connection,
        _: ConnectionId,
        _: Option<SocketAddr>,
    ) -> Option<Output<Self>> {
        s.out.pop()
    }
    fn on_send(s: &mut Sv1Connection, m: &ServerMessage) {
        s.session.on_send(m);
    }
    fn poll_timeout(s: &Sv1Connection) -> Option<Instant> {
        if s.out.is_closed() {
            return None;
        }
        s.session.poll_timeout()
    }
    fn handle_timeout(s: &mut Sv1Connection, now: Instant) {
        if let Some(reason) = s.session.handle_timeout(now) {
            s.out.close(reason);
        }
    }
    fn close(s: &mut Sv1Connection, reason: Sv1CloseReason) {
        s.out.close(reason);
    }

    fn command(req: Sv1Request) -> Command<Self> {
        match req {
            Sv1Request::SendTo(id, m) => Command::Routes {
                routes: vec![Route::SendTo(id, m)],
                require: Some(id),
            },
            Sv1Request::Multicast(ids, m) => Command::Routes {
                routes: vec![Route::Multicast(ids, m)],
                require: None,
            },
            Sv1Request::Broadcast(m) => Command::Routes {
                routes: vec![Route::Broadcast((), m)],
                require: None,
            },
            Sv1Request::Disconnect(id) => Command::Routes {
                routes: vec![Route::Disconnect(id, "disconnected by application".into())],
                require: Some(id),
            },
            Sv1Request::ListConnections => Command::List,
            Sv1Request::ToHandlers(m) => Command::ToHandlers(m),
            Sv1Request::ToSibling(m) => Command::ToSibling(m),
        }
    }
    fn done() -> Sv1Response {
        Sv1Response::Done
    }
    fn connections(list: Vec<Sv1ConnectionContext>) -> Sv1Response {
        Sv1Response::Connections(list)
    }
}

/// The one handler of an Sv1 server, as the hub calls it.
struct Sv1Handlers<H>(H);

impl<H: Sv1ServerHandler> HandlerSet<Sv1> for Sv1Handlers<H> {
    async fn dispatch(&mut self, msg: Sv1InboundMessage) -> Sv1Actions {
        dispatch(&mut self.0, msg).await
    }
    async fn added(&mut self, ctx: Sv1ConnectionContext) -> Sv1Actions {
        self.0.on_connection_added(ctx).await
    }
    async fn removed(&mut self, ctx: Sv1ConnectionContext, reason: Sv1CloseReason) -> Sv1Actions {
        self.0.on_connection_removed(ctx, reason).await
    }
    async fn sibling(&mut self, msg: SiblingMessage) -> Sv1Actions {
        self.0.handle_sibling_message(msg).await
    }
    async fn sibling_closed(&mut self) -> Sv1Actions {
        self.0.handle_sibling_closed().await
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    async fn timer(&mut self, now: Instant) -> Sv1Actions {
        if self.0.poll_timeout().is_some_and(|d| d <= now) {
            self.0.on_timer(now).await
        } else {
            Sv1Actions::none()
        }
    }
}

/// A running Sv1 server's request interface: a cloneable
/// `tower::Service<`[`Sv1Request`]`, Response = `[`Sv1Response`]`, Error = `[`ServiceError`]`>`.
///
/// ```no_run
/// use tower_stratum_service::sv1::{Sv1ServerHandler, Sv1ServerService};
///
/// struct MyPool;
/// impl Sv1ServerHandler for MyPool {}
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (service, handle) = Sv1ServerService::builder().handler(MyPool).serve(listener);
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sv1ServerService<H = NullSv1ServerHandler> {
    requests: RequestSender<Sv1>,
    _handler: PhantomData<fn() -> H>,
}

impl<H> Clone for Sv1ServerService<H> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            _handler: PhantomData,
        }
    }
}

impl Sv1ServerService {
    /// A builder with the default [`Sv1ServerConfig`] and [`NullSv1ServerHandler`].
    pub fn builder() -> Sv1ServerBuilder {
        Sv1ServerBuilder {
            config: Sv1ServerConfig::default(),
            handler: NullSv1ServerHandler,
            layer: Identity::new(),
            sibling: None,
        }
    }
}

impl<H> tower::Service<Sv1Request> for Sv1ServerService<H> {
    type Response = Sv1Response;
    type Error = ServiceError;
    type Future = ResponseFuture<Sv1>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServiceError>> {
        tower::Service::poll_ready(&mut self.requests, cx)
    }

    fn call(&mut self, req: Sv1Request) -> Self::Future {
        tower::Service::call(&mut self.requests, req)
    }
}

/// Builds and starts an [`Sv1ServerService`]. Setting the handler or adding a layer changes
/// the builder's type.
#[derive(Debug)]
pub struct Sv1ServerBuilder<H = NullSv1ServerHandler, L = Identity> {
    config: Sv1ServerConfig,
    handler: H,
    layer: L,
    sibling: Option<SiblingEnd>,
}

impl<H, L> Sv1ServerBuilder<H, L> {
    /// Replaces the configuration.
    pub fn config(mut self, config: Sv1ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the handler.
    pub fn handler<H2>(self, handler: H2) -> Sv1ServerBuilder<H2, L> {
        Sv1ServerBuilder {
            config: self.config,
            handler,
            layer: self.layer,
            sibling: self.sibling,
        }
    }

    /// Wraps the inbound stack (every message a miner sends, on its way to the handler) with
    /// `layer`. As with `tower::ServiceBuilder`, the first layer added is the outermost.
    pub fn layer<L2>(self, layer: L2) -> Sv1ServerBuilder<H, Stack<L2, L>> {
        Sv1ServerBuilder {
            config: self.config,
            handler: self.handler,
            layer: Stack::new(layer, self.layer),
            sibling: self.sibling,
        }
    }

    /// Links this server to the service holding the other end of `io` (see
    /// [`SiblingIo::pair`]).
    pub fn sibling_io(mut self, io: SiblingIo) -> Self {
        self.sibling = Some(io.end);
        self
    }

    /// Links this server to a sibling; returns the [`SiblingIo`] for it (capacity
    /// `config.sibling_queue` each way).
    pub fn with_sibling_io(mut self) -> (Self, SiblingIo) {
        let (mine, theirs) = SiblingIo::pair(self.config.sibling_queue);
        self.sibling = Some(mine.end);
        (self, theirs)
    }
}

impl<H, L> Sv1ServerBuilder<H, L>
where
    H: Sv1ServerHandler,
    L: Layer<Sv1HandlerService>,
    L::Service: Sv1InboundStack,
{
    /// Starts serving `listener` on the current tokio runtime: the hub task, the accept loop,
    /// one task per connection.
    pub fn serve<Lst: Listener>(self, listener: Lst) -> (Sv1ServerService<H>, ServerHandle) {
        let cfg = self.config;
        let hub = Hub::<Sv1, _>::new(Sv1Handlers(self.handler), self.sibling);
        let layer = self.layer;
        let connections = move |hub: mpsc::Sender<HubInput<Sv1>>| {
            let stack = layer.layer(Sv1HandlerService::new(hub.clone()));
            move |io, id, peer, cancel| {
                let links = Links {
                    id,
                    peer,
                    stack: stack.clone(),
                    hub: hub.clone(),
                    cancel,
                    outbound_queue: cfg.outbound_queue,
                    max_in_flight: cfg.max_in_flight,
                    write_timeout: cfg.write_timeout,
                };
                run_connection(io, links, cfg.session, cfg.max_line_length)
            }
        };
        let (requests, handle) = spawn_server(hub, cfg.handler_queue, listener, connections);
        (
            Sv1ServerService {
                requests,
                _handler: PhantomData,
            },
            handle,
        )
    }
}

/// Read buffer initial capacity: small so idle connections stay cheap.
const READ_BUFFER: usize = 512;

/// One Sv1 connection's task: the shared connection shell over the Sv1 line codec.
fn run_connection<IO, S>(
    io: IO,
    links: Links<Sv1, S>,
    session: Sv1SessionConfig,
    max_line_length: usize,
) -> impl std::future::Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Sv1InboundStack,
{
    let span = tracing::info_span!(
        "sv1_connection",
        id = links.id.0,
        peer = %connection::PeerAddr(links.peer),
    );
    let ctx = Sv1ConnectionContext {
        id: links.id,
        peer: links.peer,
    };
    let mut parts = FramedParts::new::<RawLine>(io, Sv1ServerCodec::new(max_line_length));
    parts.read_buf = bytes::BytesMut::with_capacity(READ_BUFFER);
    let framed = Framed::from_parts(parts);
    let session = Sv1Connection::new(session, ctx, connection::now());
    Shell::<Sv1, IO, S>::new(framed, session, links)
        .run()
        .map(drop)
        .instrument(span)
}
