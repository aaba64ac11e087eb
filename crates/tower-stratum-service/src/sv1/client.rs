//! [`Sv1ClientService`]: one Sv1 connection to a server (pool or proxy), as a
//! `tower::Service<ClientMessage>` whose calls resolve to the server's response, plus a
//! bounded stream of the server's notifications.
//!
//! It runs on the one connection runtime, like the servers: the connection task is the shared
//! shell (batched writes, pipelined delivery, write guard) around a sans-IO
//! [`Sv1ClientConnection`], and the hub task owns the calls in flight ([`Sv1ClientHandlers`]):
//! it numbers each request, remembers who waits for its answer and hands every other server
//! message to the notification stream. The wire protocol is [`Sv1Client`].

use super::config::Sv1ClientConfig;
use crate::connection::{self, Links, Shell};
use crate::hub::{HandlerSet, Hub, HubInput, Reply};
use crate::inbound::HandlerService;
use crate::protocol::{Command, Output, Outputs, Protocol, Route};
use crate::request::{RequestSender, ResponseFuture};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::{CancellationToken, PollSemaphore};
use tower_stratum_core::{ConnectionId, SiblingMessage};
use tower_stratum_sv1::{
    ClientMessage, Id, RawLine, Response, ServerMessage, Sv1ClientCodec, Sv1CloseReason,
    Sv1CodecError, Sv1ConnectionContext, Sv1ParseError,
};
use tracing::{debug, warn, Instrument};

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sv1ClientError {
    /// No response within [`Sv1ClientConfig::call_timeout`].
    #[error("no response within the call timeout")]
    Timeout,
    /// The connection is closed (the text says why, when known).
    #[error("connection closed: {0}")]
    Closed(String),
}

/// A connected Sv1 client: `tower::Service<`[`ClientMessage`]`, Response = `[`Response`]`>`.
///
/// - A request (`mining.subscribe`, `mining.authorize`, `mining.submit`, ...) gets a fresh
///   numeric id (the id in the message is replaced) and resolves to the server's response to
///   that id, or [`Sv1ClientError::Timeout`] after [`Sv1ClientConfig::call_timeout`]
///   (default 30 s), or [`Sv1ClientError::Closed`].
/// - A [`ClientMessage::Response`] (an answer to a server request) is written as is and
///   resolves to itself once queued.
/// - `mining.ping` and `client.get_version` from the server are answered by the client
///   itself (`pong`, [`Sv1ClientConfig::user_agent`]).
/// - Every other server message goes to the [`Sv1Notifications`] stream, which is bounded:
///   when the application does not keep up, the client stops reading from the server (and
///   calls wait) until it does. Nothing is dropped and nothing aborts.
///
/// `poll_ready` waits while [`Sv1ClientConfig::request_queue`] calls are outstanding (sent
/// and not yet answered, timed out or failed), then for room in the queue to the hub task.
/// Clones share that bound.
#[derive(Debug)]
pub struct Sv1ClientService {
    requests: RequestSender<Sv1Client>,
    calls: PollSemaphore,
    /// The permit `poll_ready` acquired for the next `call`.
    permit: Option<OwnedSemaphorePermit>,
    call_timeout: Duration,
}

impl Clone for Sv1ClientService {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            calls: self.calls.clone(),
            permit: None,
            call_timeout: self.call_timeout,
        }
    }
}

/// The server's notifications (`mining.notify`, `mining.set_difficulty`,
/// `mining.set_extranonce`, `client.reconnect`, ...), in order. Bounded: see
/// [`Sv1ClientService`]. Ends when the connection closes.
#[derive(Debug)]
pub struct Sv1Notifications {
    rx: mpsc::Receiver<ServerMessage>,
}

impl Sv1Notifications {
    /// The next notification; `None` once the connection is closed and all were taken.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for Sv1Notifications {
    type Item = ServerMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerMessage>> {
        self.rx.poll_recv(cx)
    }
}

/// Controls a client connection. Dropping it does NOT close the connection.
#[derive(Debug)]
#[must_use = "the connection runs until `shutdown` is called or the server closes it"]
pub struct Sv1ClientHandle {
    cancel: CancellationToken,
    task: JoinHandle<String>,
}

impl Sv1ClientHandle {
    /// Closes the connection; pending calls fail with [`Sv1ClientError::Closed`]. Returns why
    /// the connection ended (the [`Sv1CloseReason`] as text: `"shutdown"`, `"peer closed the
    /// connection"`, `"line too long"`, ...).
    pub async fn shutdown(self) -> String {
        self.cancel.cancel();
        self.task.await.unwrap_or_else(|e| e.to_string())
    }

    /// Whether the connection has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The client's one connection, as the hub and the handlers know it.
const CONNECTION: ConnectionId = ConnectionId(1);

/// Messages the hub may queue to the connection beyond the outstanding calls (answers the
/// application gives to server requests).
const OUTBOUND_SLACK: usize = 16;

impl Sv1ClientService {
    /// Connects to `address` (`host:port`, plain TCP) within
    /// [`Sv1ClientConfig::connect_timeout`].
    ///
    /// # Errors
    /// The connect error, or `TimedOut`.
    pub async fn connect(
        address: &str,
        config: Sv1ClientConfig,
    ) -> std::io::Result<(Self, Sv1Notifications, Sv1ClientHandle)> {
        let stream = tokio::time::timeout(
            config.connect_timeout,
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        Ok(Self::start(stream, peer, config))
    }

    /// Connects to `address` with TLS (feature `tls`), verifying the server certificate for
    /// `server_name` against `tls`'s roots, within [`Sv1ClientConfig::connect_timeout`] (TCP
    /// connect and handshake together).
    ///
    /// # Errors
    /// The connect or handshake error, `InvalidInput` for a bad server name, or `TimedOut`.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        address: &str,
        server_name: &str,
        tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
        config: Sv1ClientConfig,
    ) -> std::io::Result<(Self, Sv1Notifications, Sv1ClientHandle)> {
        use tokio_rustls::rustls::pki_types::ServerName;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connect = async {
            let stream = tokio::net::TcpStream::connect(address).await?;
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().ok();
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await?;
            Ok::<_, std::io::Error>((tls, peer))
        };
        let (stream, peer) = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(Self::start(stream, peer, config))
    }

    /// Runs a client over any byte stream (TCP, TLS, `tokio::io::duplex`) on the current tokio
    /// runtime.
    pub fn new<IO>(io: IO, config: Sv1ClientConfig) -> (Self, Sv1Notifications, Sv1ClientHandle)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, None, config)
    }

    fn start<IO>(
        io: IO,
        peer: Option<SocketAddr>,
        config: Sv1ClientConfig,
    ) -> (Self, Sv1Notifications, Sv1ClientHandle)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let max_calls = config.request_queue.max(1);
        let (hub_tx, hub_rx) = mpsc::channel(max_calls);
        let (notify_tx, notify_rx) = mpsc::channel(config.notification_queue.max(1));
        let cancel = CancellationToken::new();
        let span = tracing::info_span!(
            "sv1_client",
            peer = %connection::PeerAddr(peer),
        );

        let handlers = Sv1ClientHandlers::new(notify_tx, cancel.clone());
        let hub = tokio::spawn(
            Hub::<Sv1Client, _>::new(handlers, None)
                .run(hub_rx)
                .instrument(span.clone()),
        );

        let mut parts =
            FramedParts::new::<RawLine>(io, Sv1ClientCodec::new(config.max_line_length));
        parts.read_buf = bytes::BytesMut::with_capacity(READ_BUFFER);
        let framed = Framed::from_parts(parts);
        let session = Sv1ClientConnection::new(
            Sv1ConnectionContext {
                id: CONNECTION,
                peer,
            },
            config.user_agent,
        );
        let links = Links {
            id: CONNECTION,
            peer,
            stack: HandlerService::<Sv1Client>::new(hub_tx.clone()),
            hub: hub_tx.clone(),
            cancel: cancel.clone(),
            // Every call is one message, and at most `max_calls` are outstanding: the queue
            // never overflows (which would close the connection as a slow consumer).
            outbound_queue: max_calls + OUTBOUND_SLACK,
            max_in_flight: crate::DEFAULT_MAX_IN_FLIGHT,
            write_timeout: config.write_timeout,
        };
        let stop = hub_tx.clone();
        let task = tokio::spawn(
            async move {
                let (reason, _) =
                    Shell::<Sv1Client, IO, HandlerService<Sv1Client>>::new(framed, session, links)
                        .run()
                        .await;
                // The shell reported `Removed` (pending calls fail with the reason); then stop.
                let _ = stop.send(HubInput::Stop).await;
                let _ = hub.await;
                debug!(%reason, "sv1 client closed");
                reason.to_string()
            }
            .instrument(span),
        );
        (
            Self {
                requests: RequestSender::new(hub_tx),
                calls: PollSemaphore::new(Arc::new(Semaphore::new(max_calls))),
                permit: None,
                call_timeout: config.call_timeout,
            },
            Sv1Notifications { rx: notify_rx },
            Sv1ClientHandle { cancel, task },
        )
    }

    /// Waits for room, sends `msg` and waits for its response: `ready().await?.call(msg)`.
    ///
    /// # Errors
    /// [`Sv1ClientError`].
    pub async fn request(&mut self, msg: ClientMessage) -> Result<Response, Sv1ClientError> {
        std::future::poll_fn(|cx| tower::Service::poll_ready(self, cx)).await?;
        tower::Service::call(self, msg).await
    }
}

/// Read buffer initial capacity; grows with traffic.
const READ_BUFFER: usize = 4096;

fn stopped() -> Sv1ClientError {
    Sv1ClientError::Closed("client stopped".into())
}

impl tower::Service<ClientMessage> for Sv1ClientService {
    type Response = Response;
    type Error = Sv1ClientError;
    type Future = Sv1CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Sv1ClientError>> {
        if self.permit.is_none() {
            match self.calls.poll_acquire(cx) {
                Poll::Ready(Some(p)) => self.permit = Some(p),
                Poll::Ready(None) => return Poll::Ready(Err(stopped())),
                Poll::Pending => return Poll::Pending,
            }
        }
        tower::Service::poll_ready(&mut self.requests, cx).map_err(|_| stopped())
    }

    /// Sends `msg`. Without a successful `poll_ready` first, the future fails with
    /// [`Sv1ClientError::Closed`].
    fn call(&mut self, msg: ClientMessage) -> Sv1CallFuture {
        let permit = self.permit.take();
        let answer = if permit.is_some() {
            Some(tower::Service::call(&mut self.requests, Sv1ClientCall(msg)))
        } else {
            None
        };
        Sv1CallFuture {
            answer: answer.map(|a| tokio::time::timeout(self.call_timeout, a)),
            _permit: permit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Sv1ClientService`]'s `call`: the server's response, or
    /// [`Sv1ClientError::Timeout`] after [`Sv1ClientConfig::call_timeout`], or
    /// [`Sv1ClientError::Closed`]. Holds one of the service's outstanding-call permits until
    /// it resolves or is dropped.
    #[must_use = "futures do nothing unless polled"]
    pub struct Sv1CallFuture {
        #[pin]
        answer: Option<tokio::time::Timeout<ResponseFuture<Sv1Client>>>,
        _permit: Option<OwnedSemaphorePermit>,
    }
}

impl std::fmt::Debug for Sv1CallFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sv1CallFuture").finish_non_exhaustive()
    }
}

impl Future for Sv1CallFuture {
    type Output = Result<Response, Sv1ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(answer) = self.project().answer.as_pin_mut() else {
            return Poll::Ready(Err(Sv1ClientError::Closed(
                "call without poll_ready".into(),
            )));
        };
        answer.poll(cx).map(|r| match r {
            Ok(Ok(Sv1ClientAnswer::Reply(r))) => r,
            Ok(Ok(Sv1ClientAnswer::Done)) | Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(Sv1ClientError::Timeout),
        })
    }
}

// --- the protocol ----------------------------------------------------------------------------

/// Stratum V1, client side: JSON lines through [`Sv1ClientCodec`], the sans-IO
/// [`Sv1ClientConnection`], the call table [`Sv1ClientHandlers`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sv1Client;

/// A call from the application: the message to send.
#[derive(Debug)]
pub(crate) struct Sv1ClientCall(ClientMessage);

/// The hub's answer to a call.
#[derive(Debug)]
pub(crate) enum Sv1ClientAnswer {
    /// The server's response (or why there is none).
    Reply(Result<Response, Sv1ClientError>),
    /// A command that is not a call was carried out (the client sends none).
    Done,
}

/// A server message on its way to the call table.
#[derive(Debug)]
pub(crate) struct Sv1ClientInbound {
    message: ServerMessage,
}

/// The client connection's sans-IO session: established at once; answers `mining.ping` and
/// `client.get_version` itself, hands every other parsed line to the call table, ignores a
/// line it cannot parse (logged) and closes on a codec error.
#[derive(Debug)]
pub(crate) struct Sv1ClientConnection {
    out: Outputs<Sv1Client>,
    user_agent: String,
}

impl Sv1ClientConnection {
    fn new(ctx: Sv1ConnectionContext, user_agent: String) -> Self {
        Self {
            out: Outputs::established(ctx),
            user_agent,
        }
    }
}

impl Protocol for Sv1Client {
    const NAME: &'static str = "sv1";
    type Session = Sv1ClientConnection;
    type Codec = Sv1ClientCodec;
    type Frame = Result<ServerMessage, Sv1ParseError>;
    type CodecError = Sv1CodecError;
    type Wire = RawLine;
    type Message = ServerMessage;
    type Outgoing = ClientMessage;
    type Context = Sv1ConnectionContext;
    type Inbound = Sv1ClientInbound;
    type CloseReason = Sv1CloseReason;
    type Actions = Vec<Route<Sv1Client>>;
    type Group = ();
    type Request = Sv1ClientCall;
    type Response = Sv1ClientAnswer;

    fn inbound(_: Sv1ConnectionContext, message: ServerMessage) -> Sv1ClientInbound {
        Sv1ClientInbound { message }
    }
    fn origin(_: &Sv1ClientInbound) -> ConnectionId {
        CONNECTION
    }
    fn id(ctx: &Sv1ConnectionContext) -> ConnectionId {
        ctx.id
    }
    fn message_span(message: &ServerMessage) -> tracing::Span {
        tracing::debug_span!(
            "message",
            method = message.method().unwrap_or("response"),
            request_id = %message.id(),
        )
    }
    fn encode(m: ClientMessage) -> Result<RawLine, String> {
        Ok(RawLine::encode(&m))
    }
    fn shared_wire(m: ClientMessage) -> Result<Option<RawLine>, ClientMessage> {
        Ok(Some(RawLine::encode(&m)))
    }
    fn in_group(_: &Sv1ConnectionContext, _: &()) -> bool {
        true
    }

    fn only_own(actions: &Self::Actions) -> bool {
        actions
            .iter()
            .all(|a| matches!(a, Route::Reply(_) | Route::Close(_)))
    }
    fn routes(actions: Self::Actions) -> impl Iterator<Item = Route<Self>> + Send {
        actions.into_iter()
    }
    fn push_reply(actions: &mut Self::Actions, m: ClientMessage) {
        actions.push(Route::Reply(m));
    }
    fn push_close(actions: &mut Self::Actions, reason: String) {
        actions.push(Route::Close(reason));
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
    /// The peer is a server the application chose: its faults are the application's to
    /// report (through the handle's reason), not the operator log's.
    fn peer_at_fault(_: &Sv1CloseReason) -> bool {
        false
    }

    fn handle_frame(
        s: &mut Sv1ClientConnection,
        _: Instant,
        line: Result<ServerMessage, Sv1ParseError>,
    ) {
        if s.out.is_closed() {
            return;
        }
        let out = match line {
            Ok(ServerMessage::Ping(id)) => {
                Output::Transmit(ClientMessage::Response(Response::pong(id)))
            }
            Ok(ServerMessage::GetVersion(id)) => Output::Transmit(ClientMessage::Response(
                Response::ok(id, s.user_agent.clone()),
            )),
            Ok(other) => Output::Deliver(other),
            Err(e) => {
                warn!(error = %e, "unparseable line from the server ignored");
                return;
            }
        };
        s.out.push(out);
    }
    fn handle_codec_error(s: &mut Sv1ClientConnection, e: Sv1CodecError) {
        s.out.close(super::codec_close_reason(e));
    }
    fn peer_closed(s: &mut Sv1ClientConnection) {
        s.out.close(Sv1CloseReason::PeerClosed);
    }
    fn poll_output(
        s: &mut Sv1ClientConnection,
        _: ConnectionId,
        _: Option<SocketAddr>,
    ) -> Option<Output<Self>> {
        s.out.pop()
    }
    fn poll_timeout(_: &Sv1ClientConnection) -> Option<Instant> {
        None
    }
    fn handle_timeout(_: &mut Sv1ClientConnection, _: Instant) {}
    fn close(s: &mut Sv1ClientConnection, reason: Sv1CloseReason) {
        s.out.close(reason);
    }

    fn command(req: Sv1ClientCall) -> Command<Self> {
        Command::Call(req)
    }
    fn done() -> Sv1ClientAnswer {
        Sv1ClientAnswer::Done
    }
    fn connections(_: Vec<Sv1ConnectionContext>) -> Sv1ClientAnswer {
        Sv1ClientAnswer::Done
    }
}

// --- the call table (the hub's handler set) ------------------------------------------------

/// Calls waiting for the connection to be registered with the hub, at most (the connection
/// task registers it first thing, so this only bounds a burst made before it ran).
const MAX_WAITING: usize = 1024;

/// Calls in the table above which answered and abandoned (timed-out) entries are pruned.
const PRUNE_AT: usize = 1024;

/// The client's handler set: request ids, the calls waiting for their responses, and the
/// notification stream.
pub(crate) struct Sv1ClientHandlers {
    /// The connection, once registered with the hub.
    connected: bool,
    /// Why the connection ended, once it has: later calls fail with it.
    closed: Option<String>,
    /// Calls made before the connection was registered, in order.
    waiting: VecDeque<(ClientMessage, Reply<Sv1Client>)>,
    /// Sent requests by id, waiting for the server's response.
    pending: HashMap<u64, Reply<Sv1Client>>,
    next_id: u64,
    /// `None` once the connection closed (so the stream ends).
    notifications: Option<mpsc::Sender<ServerMessage>>,
    /// The client's shutdown: a notification waiting for room gives up on it.
    cancel: CancellationToken,
}

impl Sv1ClientHandlers {
    fn new(notifications: mpsc::Sender<ServerMessage>, cancel: CancellationToken) -> Self {
        Self {
            connected: false,
            closed: None,
            waiting: VecDeque::new(),
            pending: HashMap::new(),
            next_id: 1,
            notifications: Some(notifications),
            cancel,
        }
    }

    /// Numbers `msg` (a request) and queues it to the connection; a response is queued as is
    /// and answered at once.
    fn send(
        &mut self,
        msg: ClientMessage,
        reply: Reply<Sv1Client>,
        actions: &mut Vec<Route<Sv1Client>>,
    ) {
        if let ClientMessage::Response(r) = &msg {
            let _ = reply.send(Ok(Sv1ClientAnswer::Reply(Ok(r.clone()))));
            actions.push(Route::SendTo(CONNECTION, msg));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.pending.len() >= PRUNE_AT {
            self.pending.retain(|_, tx| !tx.is_closed());
        }
        self.pending.insert(id, reply);
        actions.push(Route::SendTo(CONNECTION, with_id(msg, Id::from(id))));
    }
}

fn fail(reply: Reply<Sv1Client>, reason: &str) {
    let _ = reply.send(Ok(Sv1ClientAnswer::Reply(Err(Sv1ClientError::Closed(
        reason.to_owned(),
    )))));
}

impl HandlerSet<Sv1Client> for Sv1ClientHandlers {
    async fn dispatch(&mut self, msg: Sv1ClientInbound) -> Vec<Route<Sv1Client>> {
        match msg.message {
            ServerMessage::Response(r) => match r.id.as_u64().and_then(|n| self.pending.remove(&n))
            {
                Some(tx) => {
                    let _ = tx.send(Ok(Sv1ClientAnswer::Reply(Ok(r))));
                }
                None => debug!(id = %r.id, "response to no pending call"),
            },
            other => {
                if let Some(tx) = &self.notifications {
                    // Backpressure: the hub (this client's only) waits for room, so the
                    // connection stops being read meanwhile. Shutdown ends the wait.
                    tokio::select! {
                        sent = tx.send(other) => if sent.is_err() {
                            debug!("notification dropped: receiver gone");
                        },
                        () = self.cancel.cancelled() => {}
                    }
                }
            }
        }
        Vec::new()
    }
    async fn added(&mut self, _: Sv1ConnectionContext) -> Vec<Route<Sv1Client>> {
        self.connected = true;
        let mut actions = Vec::with_capacity(self.waiting.len());
        while let Some((msg, reply)) = self.waiting.pop_front() {
            self.send(msg, reply, &mut actions);
        }
        actions
    }
    async fn removed(
        &mut self,
        _: Sv1ConnectionContext,
        reason: Sv1CloseReason,
    ) -> Vec<Route<Sv1Client>> {
        let reason = reason.to_string();
        self.connected = false;
        self.notifications = None;
        for (_, tx) in self.pending.drain() {
            fail(tx, &reason);
        }
        for (_, tx) in self.waiting.drain(..) {
            fail(tx, &reason);
        }
        self.closed = Some(reason);
        Vec::new()
    }
    async fn sibling(&mut self, _: SiblingMessage) -> Vec<Route<Sv1Client>> {
        Vec::new()
    }
    async fn sibling_closed(&mut self) -> Vec<Route<Sv1Client>> {
        Vec::new()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    async fn timer(&mut self, _: Instant) -> Vec<Route<Sv1Client>> {
        Vec::new()
    }
    async fn call(
        &mut self,
        Sv1ClientCall(msg): Sv1ClientCall,
        reply: Reply<Sv1Client>,
    ) -> Vec<Route<Sv1Client>> {
        let mut actions = Vec::new();
        if let Some(reason) = &self.closed {
            fail(reply, reason);
        } else if self.connected {
            self.send(msg, reply, &mut actions);
        } else if self.waiting.len() < MAX_WAITING {
            self.waiting.push_back((msg, reply));
        } else {
            fail(reply, "too many calls before the connection started");
        }
        actions
    }
}

/// `msg` with its request id replaced by `id` (a response keeps its own).
fn with_id(msg: ClientMessage, id: Id) -> ClientMessage {
    match msg {
        ClientMessage::Subscribe(_, m) => ClientMessage::Subscribe(id, m),
        ClientMessage::Authorize(_, m) => ClientMessage::Authorize(id, m),
        ClientMessage::Submit(_, m) => ClientMessage::Submit(id, m),
        ClientMessage::Configure(_, m) => ClientMessage::Configure(id, m),
        ClientMessage::ExtranonceSubscribe(_) => ClientMessage::ExtranonceSubscribe(id),
        ClientMessage::SuggestDifficulty(_, d) => ClientMessage::SuggestDifficulty(id, d),
        ClientMessage::SuggestTarget(_, t) => ClientMessage::SuggestTarget(id, t),
        ClientMessage::Unknown(mut r) => {
            r.id = id;
            ClientMessage::Unknown(r)
        }
        r @ ClientMessage::Response(_) => r,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tower::Service;
    use tower_stratum_sv1::{Authorize, Sv1ServerCodec};

    type Server = Framed<tokio::io::DuplexStream, Sv1ServerCodec>;

    fn client(
        config: Sv1ClientConfig,
    ) -> (Sv1ClientService, Sv1Notifications, Sv1ClientHandle, Server) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (c, n, h) = Sv1ClientService::new(a, config);
        (c, n, h, Framed::new(b, Sv1ServerCodec::default()))
    }

    fn authorize(name: &str) -> ClientMessage {
        ClientMessage::Authorize(
            Id::Null,
            Authorize {
                username: name.into(),
                password: None,
            },
        )
    }

    async fn read(server: &mut Server) -> ClientMessage {
        server.next().await.unwrap().unwrap().unwrap()
    }

    fn ready(c: &mut Sv1ClientService) -> Poll<Result<(), Sv1ClientError>> {
        let waker = futures_util::task::noop_waker();
        c.poll_ready(&mut Context::from_waker(&waker))
    }

    /// Requests get fresh ids and resolve to the response with their id, in whatever order the
    /// server answers; with `request_queue` calls outstanding `poll_ready` waits until one is
    /// answered.
    #[tokio::test]
    async fn calls_are_numbered_answered_by_id_and_bounded_in_number() {
        let (mut c, mut n, h, mut server) = client(Sv1ClientConfig {
            request_queue: 2,
            ..Sv1ClientConfig::default()
        });
        assert!(ready(&mut c).is_ready());
        let first = c.call(authorize("a"));
        std::future::poll_fn(|cx| c.poll_ready(cx)).await.unwrap();
        let second = c.call(authorize("b"));
        assert!(ready(&mut c).is_pending(), "a third call must wait");
        let (m1, m2) = (read(&mut server).await, read(&mut server).await);
        assert_eq!((m1.id(), m2.id()), (&Id::from(1u64), &Id::from(2u64)));
        // Answered out of order: each call still gets its own response.
        server
            .send(ServerMessage::Response(Response::ok(Id::from(2u64), "two")))
            .await
            .unwrap();
        server
            .send(ServerMessage::Response(Response::ok(Id::from(1u64), "one")))
            .await
            .unwrap();
        assert_eq!(second.await.unwrap().result, "two");
        assert_eq!(first.await.unwrap().result, "one");
        assert!(ready(&mut c).is_ready(), "answered calls free their places");
        drop(server);
        assert_eq!(
            n.recv().await,
            None,
            "the stream ends when the server closes"
        );
        assert_eq!(h.shutdown().await, "peer closed the connection");
    }

    /// `mining.ping` and `client.get_version` are answered by the client, not the application;
    /// other messages reach the notification stream.
    #[tokio::test]
    async fn ping_and_get_version_are_answered_by_the_client() {
        let (_c, mut n, h, mut server) = client(Sv1ClientConfig {
            user_agent: "agent/1".into(),
            ..Sv1ClientConfig::default()
        });
        server
            .send(ServerMessage::Ping(Id::from(7u64)))
            .await
            .unwrap();
        server
            .send(ServerMessage::GetVersion(Id::from(8u64)))
            .await
            .unwrap();
        server
            .send(ServerMessage::SetDifficulty(2.0))
            .await
            .unwrap();
        assert_eq!(
            read(&mut server).await,
            ClientMessage::Response(Response::pong(Id::from(7u64)))
        );
        assert_eq!(
            read(&mut server).await,
            ClientMessage::Response(Response::ok(Id::from(8u64), "agent/1"))
        );
        assert_eq!(n.recv().await, Some(ServerMessage::SetDifficulty(2.0)));
        assert_eq!(h.shutdown().await, "shutdown");
        assert_eq!(n.recv().await, None, "the stream ends with the connection");
    }

    /// An application that stops reading notifications holds the connection (backpressure),
    /// but `shutdown` still ends it, and the calls waiting fail with the reason.
    #[tokio::test]
    async fn shutdown_ends_a_client_whose_notifications_are_not_read() {
        let (mut c, _n, h, mut server) = client(Sv1ClientConfig {
            notification_queue: 1,
            ..Sv1ClientConfig::default()
        });
        for _ in 0..4 {
            server
                .send(ServerMessage::SetDifficulty(1.0))
                .await
                .unwrap();
        }
        std::future::poll_fn(|cx| c.poll_ready(cx)).await.unwrap();
        let call = c.call(authorize("a"));
        let reason = tokio::time::timeout(Duration::from_secs(10), h.shutdown())
            .await
            .expect("shutdown must not wait for the application to read");
        assert_eq!(reason, "shutdown");
        assert!(matches!(call.await, Err(Sv1ClientError::Closed(_))));
    }
}
