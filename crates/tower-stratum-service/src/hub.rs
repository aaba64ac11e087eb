//! The hub: one task that owns the handlers, the registry of established connections and the
//! sibling link. Connection tasks and the application talk to it through one bounded queue.
//!
//! The hub never awaits a connection or its sibling: pushes to connection queues use
//! `try_send`, and a full queue disconnects that connection (slow-consumer policy), so one slow
//! peer cannot stall the hub or any other connection. Messages for a sibling whose queue is
//! full wait in a bounded backlog that the hub's loop drains as room appears.

use crate::protocol::{Command, Protocol, Route, Sv2};
use crate::ServiceError;
use std::collections::HashMap;
use std::future::Future;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tower_stratum_core::handler::client::dispatch_client;
use tower_stratum_core::handler::server::dispatch_server;
use tower_stratum_core::handler::{
    Sv2JobDeclarationClientHandler, Sv2JobDeclarationServerHandler, Sv2MiningClientHandler,
    Sv2MiningServerHandler, Sv2TemplateDistributionClientHandler,
    Sv2TemplateDistributionServerHandler,
};
use tower_stratum_core::{
    Actions, CloseReason, ConnectionContext, ConnectionId, InboundMessage, SiblingMessage,
    Subprotocol,
};
use tracing::{debug, warn};

/// What a connection task's outbound queue carries. Small on purpose: every connection's
/// queue allocates its first block of slots up front, so a typed message (hundreds of bytes
/// for some `Sv2Message`s) is boxed and most messages travel already encoded.
#[derive(Debug)]
pub(crate) enum Outbound<P: Protocol> {
    /// A message the connection's session must see before it is written (an Sv1 response),
    /// encoded by the connection task.
    Msg(Box<P::Outgoing>),
    /// An encoded message (encoded once when it goes to several connections).
    Wire(P::Wire),
    Close(P::CloseReason),
}

/// The hub's view of one established connection.
#[derive(Debug)]
pub(crate) struct ConnHandle<P: Protocol> {
    pub(crate) tx: mpsc::Sender<Outbound<P>>,
    pub(crate) cancel: CancellationToken,
}

/// Inputs of the hub task.
#[derive(Debug)]
pub(crate) enum HubInput<P: Protocol> {
    Dispatch {
        msg: P::Inbound,
        reply: oneshot::Sender<P::Actions>,
    },
    Added {
        ctx: P::Context,
        handle: ConnHandle<P>,
    },
    Removed {
        ctx: P::Context,
        reason: P::CloseReason,
    },
    Request {
        req: P::Request,
        reply: Reply<P>,
    },
    Stop,
}

/// The handlers of one side of one protocol, behind one dispatch interface: Sv2's three
/// (one per subprotocol, server or client side), or one Sv1 server handler.
pub(crate) trait HandlerSet<P: Protocol>: Send + 'static {
    fn dispatch(&mut self, msg: P::Inbound) -> impl Future<Output = P::Actions> + Send;
    fn added(&mut self, ctx: P::Context) -> impl Future<Output = P::Actions> + Send;
    fn removed(
        &mut self,
        ctx: P::Context,
        reason: P::CloseReason,
    ) -> impl Future<Output = P::Actions> + Send;
    fn sibling(&mut self, msg: SiblingMessage) -> impl Future<Output = P::Actions> + Send;
    fn sibling_closed(&mut self) -> impl Future<Output = P::Actions> + Send;
    /// The earliest of the handlers' `poll_timeout`s.
    fn poll_timeout(&self) -> Option<std::time::Instant>;
    /// Calls `on_timer` of every handler whose deadline is due at `now`.
    fn timer(&mut self, now: std::time::Instant) -> impl Future<Output = P::Actions> + Send;
    /// An application request the handlers answer themselves, now or later, through `reply`
    /// ([`Command::Call`]). Default: none is expected; the reply is dropped (the caller sees
    /// [`ServiceError::Stopped`]).
    fn call(
        &mut self,
        req: P::Request,
        reply: Reply<P>,
    ) -> impl Future<Output = P::Actions> + Send {
        let _ = (req, reply);
        std::future::ready(P::Actions::default())
    }
}

/// Where the answer to an application request goes.
pub(crate) type Reply<P> = oneshot::Sender<Result<<P as Protocol>::Response, ServiceError>>;

macro_rules! handler_set {
    ($name:ident, $m:ident, $j:ident, $t:ident, $dispatch:ident) => {
        pub(crate) struct $name<M, J, T> {
            pub(crate) m: M,
            pub(crate) j: J,
            pub(crate) t: T,
        }

        impl<M: $m, J: $j, T: $t> HandlerSet<Sv2> for $name<M, J, T> {
            async fn dispatch(&mut self, msg: InboundMessage) -> Actions {
                $dispatch(&mut self.m, &mut self.j, &mut self.t, msg).await
            }
            async fn added(&mut self, ctx: ConnectionContext) -> Actions {
                match ctx.protocol() {
                    Subprotocol::Mining => self.m.on_connection_added(ctx).await,
                    Subprotocol::JobDeclaration => self.j.on_connection_added(ctx).await,
                    Subprotocol::TemplateDistribution => self.t.on_connection_added(ctx).await,
                }
            }
            async fn removed(&mut self, ctx: ConnectionContext, reason: CloseReason) -> Actions {
                match ctx.protocol() {
                    Subprotocol::Mining => self.m.on_connection_removed(ctx, reason).await,
                    Subprotocol::JobDeclaration => self.j.on_connection_removed(ctx, reason).await,
                    Subprotocol::TemplateDistribution => {
                        self.t.on_connection_removed(ctx, reason).await
                    }
                }
            }
            async fn sibling(&mut self, msg: SiblingMessage) -> Actions {
                let mut a = self.m.handle_sibling_message(msg.clone()).await;
                a.extend(self.j.handle_sibling_message(msg.clone()).await);
                a.extend(self.t.handle_sibling_message(msg).await);
                a
            }
            async fn sibling_closed(&mut self) -> Actions {
                let mut a = self.m.handle_sibling_closed().await;
                a.extend(self.j.handle_sibling_closed().await);
                a.extend(self.t.handle_sibling_closed().await);
                a
            }
            fn poll_timeout(&self) -> Option<std::time::Instant> {
                [
                    self.m.poll_timeout(),
                    self.j.poll_timeout(),
                    self.t.poll_timeout(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
            async fn timer(&mut self, now: std::time::Instant) -> Actions {
                let due = |d: Option<std::time::Instant>| d.is_some_and(|d| d <= now);
                let mut a = Actions::none();
                if due(self.m.poll_timeout()) {
                    a.extend(self.m.on_timer(now).await);
                }
                if due(self.j.poll_timeout()) {
                    a.extend(self.j.on_timer(now).await);
                }
                if due(self.t.poll_timeout()) {
                    a.extend(self.t.on_timer(now).await);
                }
                a
            }
        }
    };
}

handler_set!(
    ServerHandlers,
    Sv2MiningServerHandler,
    Sv2JobDeclarationServerHandler,
    Sv2TemplateDistributionServerHandler,
    dispatch_server
);
handler_set!(
    ClientHandlers,
    Sv2MiningClientHandler,
    Sv2JobDeclarationClientHandler,
    Sv2TemplateDistributionClientHandler,
    dispatch_client
);

/// One end of a sibling link.
#[derive(Debug)]
pub(crate) struct SiblingEnd {
    pub(crate) tx: mpsc::Sender<SiblingMessage>,
    pub(crate) rx: mpsc::Receiver<SiblingMessage>,
}

/// Messages for the sibling held while its queue is full, at most. Past it a message is
/// dropped with an error log. The hub never waits for the sibling, so two hubs cannot
/// deadlock on each other and a slow sibling never stalls the connections (a found block's
/// `SubmitSolution` is answered-then-queued like any other message).
const SIBLING_BACKLOG: usize = 4096;

pub(crate) struct Hub<P: Protocol, H> {
    pub(crate) handlers: H,
    pub(crate) conns: HashMap<ConnectionId, (P::Context, ConnHandle<P>)>,
    pub(crate) sibling: Option<SiblingEnd>,
    /// Messages for the sibling waiting for room in its queue, oldest first.
    sibling_backlog: std::collections::VecDeque<SiblingMessage>,
}

impl<P: Protocol, H: HandlerSet<P>> Hub<P, H> {
    pub(crate) fn new(handlers: H, sibling: Option<SiblingEnd>) -> Self {
        Self {
            handlers,
            conns: HashMap::new(),
            sibling,
            sibling_backlog: std::collections::VecDeque::new(),
        }
    }

    /// Runs until [`HubInput::Stop`] or until every input sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<HubInput<P>>) {
        // One sleep for the handlers' earliest deadline, reset only when it changes.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<std::time::Instant> = None;
        loop {
            let want = self.handlers.poll_timeout();
            if want != armed {
                if let Some(at) = want {
                    timer.as_mut().reset(tokio::time::Instant::from_std(at));
                }
                armed = want;
            }
            // Only with a backlog: a sender of our own to wait for room on.
            let backlog_tx = match (&self.sibling, self.sibling_backlog.is_empty()) {
                (Some(s), false) => Some(s.tx.clone()),
                _ => None,
            };
            let sibling_rx = async {
                match self.sibling.as_mut() {
                    Some(s) => s.rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let sibling_room = async {
                match backlog_tx {
                    Some(tx) => tx.reserve_owned().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    let now = tokio::time::Instant::now().into_std();
                    let actions = self.handlers.timer(now).await;
                    self.apply(None, actions);
                }
                Some(permit) = sibling_room => {
                    if let Some(msg) = self.sibling_backlog.pop_front() {
                        permit.send(msg);
                    }
                }
                input = rx.recv() => match input {
                    None | Some(HubInput::Stop) => break,
                    Some(input) => self.on_input(input).await,
                },
                msg = sibling_rx => match msg {
                    Some(msg) => {
                        let actions = self.handlers.sibling(msg).await;
                        self.apply(None, actions);
                    }
                    None => {
                        // The sibling stopped: report it once, then stop polling it.
                        debug!("sibling closed");
                        self.sibling = None;
                        let actions = self.handlers.sibling_closed().await;
                        self.apply(None, actions);
                    }
                },
            }
        }
        for (_, (_, h)) in self.conns.drain() {
            h.cancel.cancel();
        }
    }

    async fn on_input(&mut self, input: HubInput<P>) {
        match input {
            HubInput::Dispatch { msg, reply } => {
                let origin = P::origin(&msg);
                let actions = self.handlers.dispatch(msg).await;
                let mine = self.apply(Some(origin), actions);
                let _ = reply.send(mine);
            }
            HubInput::Added { ctx, handle } => {
                let id = P::id(&ctx);
                self.conns.insert(id, (ctx, handle));
                let actions = self.handlers.added(ctx).await;
                let mine = self.apply(Some(id), actions);
                self.deliver_own(id, mine);
            }
            HubInput::Removed { ctx, reason } => {
                if self.conns.remove(&P::id(&ctx)).is_some() {
                    let actions = self.handlers.removed(ctx, reason).await;
                    self.apply(None, actions);
                }
            }
            HubInput::Request { req, reply } => match P::command(req) {
                Command::Call(req) => {
                    let actions = self.handlers.call(req, reply).await;
                    self.apply(None, actions);
                }
                command => {
                    let r = self.on_command(command).await;
                    let _ = reply.send(r);
                }
            },
            HubInput::Stop => {}
        }
    }

    async fn on_command(&mut self, command: Command<P>) -> Result<P::Response, ServiceError> {
        match command {
            Command::Routes { routes, require } => {
                if let Some(id) = require {
                    if !self.conns.contains_key(&id) {
                        return Err(ServiceError::UnknownConnection(id));
                    }
                }
                let mut none = P::Actions::default();
                for r in routes {
                    self.route(None, r, &mut none);
                }
                Ok(P::done())
            }
            Command::List => {
                let mut v: Vec<P::Context> = self.conns.values().map(|(c, _)| *c).collect();
                v.sort_by_key(|c| P::id(c));
                Ok(P::connections(v))
            }
            Command::ToHandlers(msg) => {
                let actions = self.handlers.sibling(msg).await;
                self.apply(None, actions);
                Ok(P::done())
            }
            Command::ToSibling(msg) => {
                if self.sibling.is_none() {
                    return Err(ServiceError::NoSibling);
                }
                self.send_to_sibling(msg);
                Ok(P::done())
            }
            // Taken by `on_input` (it needs the reply); unreachable here.
            Command::Call(_) => Err(ServiceError::Stopped),
        }
    }

    /// Queues `actions` addressed to the connection itself (from `on_connection_added`).
    fn deliver_own(&mut self, id: ConnectionId, mine: P::Actions) {
        for r in P::routes(mine) {
            match r {
                Route::Reply(m) => self.send(id, m),
                Route::Close(reason) => self.close(id, P::closed(reason)),
                _ => {}
            }
        }
    }

    /// Executes everything not addressed to `origin`; returns what is (replies and close),
    /// which the origin's connection task performs itself, in order. Never waits: a full
    /// connection queue evicts that connection, a full sibling queue fills the backlog.
    fn apply(&mut self, origin: Option<ConnectionId>, actions: P::Actions) -> P::Actions {
        // The usual answer to a share: only replies (or a close) for the origin. Hand the
        // handler's actions back as they are instead of moving them into new ones.
        if origin.is_some() && P::only_own(&actions) {
            return actions;
        }
        let mut mine = P::Actions::default();
        for r in P::routes(actions) {
            self.route(origin, r, &mut mine);
        }
        mine
    }

    fn route(&mut self, origin: Option<ConnectionId>, r: Route<P>, mine: &mut P::Actions) {
        match r {
            Route::Reply(m) if origin.is_some() => P::push_reply(mine, m),
            Route::Close(reason) if origin.is_some() => P::push_close(mine, reason),
            Route::Reply(_) | Route::Close(_) => {
                debug!("reply or close without a connection ignored")
            }
            Route::SendTo(id, m) if Some(id) == origin => P::push_reply(mine, m),
            Route::SendTo(id, m) => self.send(id, m),
            Route::Multicast(ids, m) => self.multicast(ids.into_iter(), m, origin, mine),
            Route::Broadcast(group, m) => {
                let ids: Vec<ConnectionId> = self
                    .conns
                    .iter()
                    .filter(|(_, (c, _))| P::in_group(c, &group))
                    .map(|(id, _)| *id)
                    .collect();
                self.multicast(ids.into_iter(), m, origin, mine);
            }
            Route::Disconnect(id, reason) if Some(id) == origin => P::push_close(mine, reason),
            Route::Disconnect(id, reason) => self.close(id, P::closed(reason)),
            Route::ToSibling(msg) => self.send_to_sibling(msg),
        }
    }

    /// One message to several connections: the origin's copy goes back as a reply (written by
    /// its connection task); the others share one encoding when the protocol allows it.
    fn multicast(
        &mut self,
        ids: impl Iterator<Item = ConnectionId>,
        m: P::Outgoing,
        origin: Option<ConnectionId>,
        mine: &mut P::Actions,
    ) {
        let mut others = Vec::new();
        for id in ids {
            if Some(id) == origin {
                P::push_reply(mine, m.clone());
            } else {
                others.push(id);
            }
        }
        if others.is_empty() {
            return;
        }
        match P::shared_wire(m) {
            Ok(Some(wire)) => {
                for id in others {
                    self.push(id, Outbound::Wire(wire.clone()));
                }
            }
            Ok(None) => {}
            Err(typed) => {
                for id in others {
                    self.push(id, Outbound::Msg(Box::new(typed.clone())));
                }
            }
        }
    }

    /// One message to one connection: encoded here unless its session must see it typed.
    fn send(&self, id: ConnectionId, m: P::Outgoing) {
        if !self.conns.contains_key(&id) {
            debug!(connection = %id, "send to unknown connection dropped");
            return;
        }
        match P::shared_wire(m) {
            Ok(Some(wire)) => self.push(id, Outbound::Wire(wire)),
            Ok(None) => {}
            Err(typed) => self.push(id, Outbound::Msg(Box::new(typed))),
        }
    }

    fn push(&self, id: ConnectionId, out: Outbound<P>) {
        let Some((_, h)) = self.conns.get(&id) else {
            debug!(connection = %id, "send to unknown connection dropped");
            return;
        };
        if h.cancel.is_cancelled() {
            // Already being evicted (or shut down): its Removed is on the way.
            debug!(connection = %id, "send to a closing connection dropped");
            return;
        }
        if h.tx.try_send(out).is_err() {
            // Logged once per connection: later sends see it cancelled (above).
            warn!(connection = %id, "outbound queue full: disconnecting slow peer");
            h.cancel.cancel();
            // The connection task reports Removed when it exits.
        }
    }

    fn close(&mut self, id: ConnectionId, reason: P::CloseReason) {
        if let Some((_, h)) = self.conns.get(&id) {
            if h.tx.try_send(Outbound::Close(reason)).is_err() {
                h.cancel.cancel();
            }
        }
    }

    /// Queues `msg` for the sibling without waiting: straight into its queue when there is
    /// room and nothing older waits, else into the backlog (order kept).
    fn send_to_sibling(&mut self, msg: SiblingMessage) {
        let Some(s) = self.sibling.as_ref() else {
            debug!("no sibling linked: message dropped");
            return;
        };
        if self.sibling_backlog.is_empty() {
            match s.tx.try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!("sibling gone: message dropped")
                }
                Err(mpsc::error::TrySendError::Full(msg)) => self.sibling_backlog.push_back(msg),
            }
        } else if self.sibling_backlog.len() < SIBLING_BACKLOG {
            self.sibling_backlog.push_back(msg);
        } else {
            tracing::error!(
                backlog = SIBLING_BACKLOG,
                "sibling queue and backlog full: message dropped"
            );
        }
    }
}
