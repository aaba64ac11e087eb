//! The Sv1 server handler trait, what it returns ([`Sv1Actions`]) and what it is told
//! ([`Sv1ConnectionContext`], [`Sv1CloseReason`]). No IO and no tokio type here: a handler
//! returns what to send or do; the service writes it.

use crate::{
    Authorize, ClientMessage, Configure, ConfigureResult, ErrorCode, Id, Request, Response,
    ServerMessage, Submit, Subscribe, Sv1Error, Target,
};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use tower_stratum_core::{ConnectionId, SiblingMessage};

/// What a handler knows about the Sv1 connection a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sv1ConnectionContext {
    /// The connection (unique for the lifetime of the service, never reused).
    pub id: ConnectionId,
    /// The miner's socket address (`None` for in-memory streams).
    pub peer: Option<SocketAddr>,
}

/// The session timers of an Sv1 server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sv1Timer {
    /// `mining.subscribe` and a successful `mining.authorize` did not both happen within
    /// [`Sv1SessionConfig::setup_timeout`](crate::Sv1SessionConfig::setup_timeout).
    Setup,
    /// No line received for
    /// [`Sv1SessionConfig::inactivity_timeout`](crate::Sv1SessionConfig::inactivity_timeout).
    Inactivity,
}

impl fmt::Display for Sv1Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sv1Timer::Setup => "setup (subscribe + authorize)",
            Sv1Timer::Inactivity => "inactivity",
        })
    }
}

/// Why an Sv1 connection closed. Sorted by fault: the peer's (timed out, line too long,
/// unparseable line), the transport's (closed, io, slow consumer), ours (a handler or the
/// application closed it, shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sv1CloseReason {
    /// A deadline passed.
    TimedOut(Sv1Timer),
    /// The peer sent more than `max_line_length` bytes without a newline.
    LineTooLong,
    /// The peer sent a line nobody can answer (not JSON, not an object, an unusable id); the
    /// text says what was wrong.
    InvalidLine(String),
    /// The peer closed the connection.
    PeerClosed,
    /// A socket error.
    Io(String),
    /// The outbound queue was full or a write did not finish within `write_timeout`: the
    /// peer reads too slowly.
    SlowConsumer,
    /// A handler (or the application) closed it; the text is the handler's reason.
    Closed(String),
    /// The service is shutting down.
    Shutdown,
}

impl fmt::Display for Sv1CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sv1CloseReason::TimedOut(t) => write!(f, "{t} timed out"),
            Sv1CloseReason::LineTooLong => f.write_str("line too long"),
            Sv1CloseReason::InvalidLine(d) => write!(f, "invalid line: {d}"),
            Sv1CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            Sv1CloseReason::Io(d) => write!(f, "io error: {d}"),
            Sv1CloseReason::SlowConsumer => f.write_str("slow consumer"),
            Sv1CloseReason::Closed(r) => write!(f, "closed: {r}"),
            Sv1CloseReason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// One thing an Sv1 handler wants done.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Sv1Action {
    /// Send to the connection the event came from (like Sv2's `Action::Reply`): a reply to its
    /// request (`ServerMessage::Response`) or a push (`mining.notify`,
    /// `mining.set_difficulty`, ...). Ignored for events without a connection (sibling
    /// messages): use [`Sv1Action::SendTo`].
    Reply(ServerMessage),
    /// Send to one connection (a deferred reply, a push). Dropped if it is gone.
    SendTo(ConnectionId, ServerMessage),
    /// Send one message to several connections; encoded once.
    Multicast(Vec<ConnectionId>, ServerMessage),
    /// Send to every connection; encoded once.
    Broadcast(ServerMessage),
    /// Hand a message to the sibling service, if one is linked.
    ToSibling(SiblingMessage),
    /// Close the connection the event came from, after what was queued before is written.
    Close(String),
    /// Close another connection, after what was queued to it is written.
    Disconnect(ConnectionId, String),
}

/// What an Sv1 handler returns: actions executed in order. Built with the constructors
/// ([`none`](Self::none), [`reply`](Self::reply), [`send`](Self::send),
/// [`error`](Self::error), [`close`](Self::close), `From`, `FromIterator`) and grown with
/// [`and`](Self::and), [`push`](Self::push) and [`extend`](Self::extend); read with
/// [`as_slice`](Self::as_slice), [`iter`](Self::iter) or `into_iter`.
#[derive(Debug, Clone, Default)]
pub struct Sv1Actions(Vec<Sv1Action>);

impl Sv1Actions {
    /// No action.
    pub fn none() -> Self {
        Sv1Actions(Vec::new())
    }

    /// One [`Sv1Action::Reply`] of a response.
    pub fn reply(r: Response) -> Self {
        Sv1Actions(vec![Sv1Action::Reply(ServerMessage::Response(r))])
    }

    /// One [`Sv1Action::Reply`].
    pub fn send(m: impl Into<ServerMessage>) -> Self {
        Sv1Actions(vec![Sv1Action::Reply(m.into())])
    }

    /// An error response with `code` to `id` (`[code, "message", null]`); nothing for a
    /// notification (`id` `null`), which is never answered.
    pub fn error(id: Id, error: impl Into<Sv1Error>) -> Self {
        if id.is_null() {
            return Sv1Actions::none();
        }
        Sv1Actions::reply(Response::error(id, error))
    }

    /// One [`Sv1Action::Close`].
    pub fn close(reason: impl Into<String>) -> Self {
        Sv1Actions(vec![Sv1Action::Close(reason.into())])
    }

    /// Appends an action.
    pub fn and(mut self, a: Sv1Action) -> Self {
        self.0.push(a);
        self
    }

    /// Appends an action in place.
    pub fn push(&mut self, a: Sv1Action) {
        self.0.push(a);
    }

    /// Appends every action of `other`.
    pub fn extend(&mut self, other: Sv1Actions) {
        self.0.extend(other.0);
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many actions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The actions, in order.
    pub fn as_slice(&self) -> &[Sv1Action] {
        &self.0
    }

    /// The actions, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Sv1Action> {
        self.0.iter()
    }
}

impl From<Vec<Sv1Action>> for Sv1Actions {
    fn from(v: Vec<Sv1Action>) -> Self {
        Sv1Actions(v)
    }
}

impl FromIterator<Sv1Action> for Sv1Actions {
    fn from_iter<I: IntoIterator<Item = Sv1Action>>(iter: I) -> Self {
        Sv1Actions(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Sv1Actions {
    type Item = &'a Sv1Action;
    type IntoIter = std::slice::Iter<'a, Sv1Action>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Sv1Action> for Sv1Actions {
    fn from(a: Sv1Action) -> Self {
        Sv1Actions(vec![a])
    }
}

impl IntoIterator for Sv1Actions {
    type Item = Sv1Action;
    type IntoIter = std::vec::IntoIter<Sv1Action>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A message received on an Sv1 connection, on its way through the inbound tower stack.
#[derive(Debug, Clone)]
pub struct Sv1InboundMessage {
    /// Where it came from.
    pub ctx: Sv1ConnectionContext,
    /// The message (already past the session checks: see [`Sv1ServerSession`](crate::Sv1ServerSession)).
    pub message: ClientMessage,
}

/// The message of the default answer to methods a handler does not implement.
pub const METHOD_NOT_SUPPORTED: &str = "Method not supported";

/// The default answer to a request a handler does not implement: `[20, "Method not
/// supported", null]` to its id; nothing for a notification.
pub fn not_supported(id: Id) -> Sv1Actions {
    Sv1Actions::error(
        id,
        Sv1Error::new(ErrorCode::Other.code(), METHOD_NOT_SUPPORTED),
    )
}

/// The Sv1 server side: one method per method a miner sends, named after it
/// (`mining.subscribe` -> [`handle_subscribe`](Sv1ServerHandler::handle_subscribe)).
///
/// The service owns the handler in one task and calls it with `&mut self`, one message at a
/// time, so state shared by all miners is plain fields. Per-connection state is keyed by
/// [`ConnectionId`] and freed in [`on_connection_removed`](Sv1ServerHandler::on_connection_removed),
/// called exactly once for every connection passed to
/// [`on_connection_added`](Sv1ServerHandler::on_connection_added).
///
/// The session has already enforced the order of the Sv1 handshake before a method is called
/// (see [`Sv1ServerSession`](crate::Sv1ServerSession)): `handle_subscribe` is called at most
/// once per connection, `handle_authorize` only after `mining.subscribe`, and `handle_submit`
/// only after a successful subscribe and for a worker this connection authorized.
///
/// Replies need not be immediate: return nothing and answer later with
/// [`Sv1Action::SendTo`] (from a sibling message, say), and the session still sees it.
///
/// Defaults answer `[20, "Method not supported", null]` (nothing to notifications) except
/// `mining.configure` (every requested extension refused) and responses (ignored).
pub trait Sv1ServerHandler: Send + 'static {
    /// A new connection was accepted (before any line of it is read).
    fn on_connection_added(
        &mut self,
        ctx: Sv1ConnectionContext,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = ctx;
        async { Sv1Actions::none() }
    }

    /// A connection passed to `on_connection_added` is gone (`reason` says why); free its
    /// state. Called exactly once per added connection.
    fn on_connection_removed(
        &mut self,
        ctx: Sv1ConnectionContext,
        reason: Sv1CloseReason,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, reason);
        async { Sv1Actions::none() }
    }

    /// `mining.subscribe`: answer with a
    /// [`SubscribeResult`](crate::SubscribeResult) (`Response::ok(id,
    /// result.to_value())`). Default: error 20.
    fn handle_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Subscribe,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, msg);
        async move { not_supported(id) }
    }

    /// `mining.authorize`: answer `true` to let the worker submit. Default: error 20.
    fn handle_authorize(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Authorize,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, msg);
        async move { not_supported(id) }
    }

    /// `mining.submit`: answer `true` only for a share that is accepted, else an error
    /// 21..=25 or 20. Default: error 20.
    fn handle_submit(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Submit,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, msg);
        async move { not_supported(id) }
    }

    /// `mining.configure` (BIP310). Default: every requested extension answered `false`.
    fn handle_configure(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Configure,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = ctx;
        async move { configure_refused(id, &msg) }
    }

    /// `mining.extranonce.subscribe`. Default: error 20.
    fn handle_extranonce_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = ctx;
        async move { not_supported(id) }
    }

    /// `mining.suggest_difficulty(difficulty)` (a share difficulty, not a target). Default:
    /// error 20.
    fn handle_suggest_difficulty(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        difficulty: f64,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, difficulty);
        async move { not_supported(id) }
    }

    /// `mining.suggest_target(target)` (a 256-bit target). Default: error 20.
    fn handle_suggest_target(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        target: Target,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, target);
        async move { not_supported(id) }
    }

    /// Any other method, params as JSON. Default: error 20.
    fn handle_unknown(
        &mut self,
        ctx: Sv1ConnectionContext,
        request: Request,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = ctx;
        async move { not_supported(request.id) }
    }

    /// A response from the miner (to `client.get_version` or `mining.ping`). Default: ignore.
    fn handle_response(
        &mut self,
        ctx: Sv1ConnectionContext,
        response: Response,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = (ctx, response);
        async { Sv1Actions::none() }
    }

    /// A message from the sibling service (or the application's
    /// `Sv1Request::ToHandlers` of `tower_stratum_service::sv1`). Default: ignore.
    fn handle_sibling_message(
        &mut self,
        msg: SiblingMessage,
    ) -> impl Future<Output = Sv1Actions> + Send {
        let _ = msg;
        async { Sv1Actions::none() }
    }

    /// The sibling service stopped (called once). Default: nothing.
    fn handle_sibling_closed(&mut self) -> impl Future<Output = Sv1Actions> + Send {
        async { Sv1Actions::none() }
    }

    /// When this handler next wants [`on_timer`](Self::on_timer) called, in monotonic time,
    /// or `None` for never. The runtime asks after every call into the handler and keeps one
    /// sleep for it, so periodic work (vardiff, verdict timeouts, stats) needs no ticker task.
    /// A deadline in the past fires at once: `on_timer` must move it on. Default: `None`.
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        None
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) is due; `now` is the runtime's
    /// clock (tokio's, so tests with paused time see virtual time). Actions are carried out as
    /// for a sibling message (no origin connection). Default: nothing.
    fn on_timer(&mut self, now: std::time::Instant) -> impl Future<Output = Sv1Actions> + Send {
        let _ = now;
        async { Sv1Actions::none() }
    }
}

/// The `mining.configure` answer refusing every extension `msg` requests.
pub fn configure_refused(id: Id, msg: &Configure) -> Sv1Actions {
    use crate::ExtensionResult::Rejected;
    let r = ConfigureResult {
        version_rolling: msg.version_rolling.map(|_| Rejected),
        minimum_difficulty: msg.minimum_difficulty.map(|_| Rejected),
        subscribe_extranonce: msg.subscribe_extranonce.then_some(Rejected),
        info: msg.info.as_ref().map(|_| Rejected),
        ..ConfigureResult::default()
    };
    if id.is_null() {
        return Sv1Actions::none();
    }
    Sv1Actions::reply(Response::ok(id, r.to_value()))
}

/// Refuses every request: each method gets its default answer (error 20 "Method not
/// supported", `mining.configure` with every extension `false`), so no miner can subscribe.
/// Never panics. For a service that only relays sibling messages, or in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSv1ServerHandler;

impl Sv1ServerHandler for NullSv1ServerHandler {}

/// Routes a message to the handler method named after it.
pub async fn dispatch<H: Sv1ServerHandler>(h: &mut H, msg: Sv1InboundMessage) -> Sv1Actions {
    let ctx = msg.ctx;
    match msg.message {
        ClientMessage::Subscribe(id, m) => h.handle_subscribe(ctx, id, m).await,
        ClientMessage::Authorize(id, m) => h.handle_authorize(ctx, id, m).await,
        ClientMessage::Submit(id, m) => h.handle_submit(ctx, id, m).await,
        ClientMessage::Configure(id, m) => h.handle_configure(ctx, id, m).await,
        ClientMessage::ExtranonceSubscribe(id) => h.handle_extranonce_subscribe(ctx, id).await,
        ClientMessage::SuggestDifficulty(id, d) => h.handle_suggest_difficulty(ctx, id, d).await,
        ClientMessage::SuggestTarget(id, t) => h.handle_suggest_target(ctx, id, t).await,
        ClientMessage::Unknown(r) => h.handle_unknown(ctx, r).await,
        ClientMessage::Response(r) => h.handle_response(ctx, r).await,
    }
}
