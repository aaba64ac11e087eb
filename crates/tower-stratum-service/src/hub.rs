//! The hub: one task that owns the handlers, the registry of established connections and the
//! sibling link. Connection tasks and the application talk to it through one bounded queue.
//!
//! The hub never awaits a connection or its sibling: pushes to connection queues use
//! `try_send`, and a full queue disconnects that connection (slow-consumer policy), so one slow
//! peer cannot stall the hub or any other connection. Messages for a sibling whose queue is
//! full wait in a bounded backlog that the hub's loop drains as room appears.

use crate::request::{Request, Response};
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
    Action, Actions, CloseReason, ConnectionContext, ConnectionId, Frame, InboundMessage,
    SiblingMessage, Subprotocol,
};
use tracing::{debug, warn};

/// What a connection task's outbound queue carries.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(Frame),
    Close(CloseReason),
}

/// The hub's view of one established connection.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) cancel: CancellationToken,
}

/// Inputs of the hub task.
#[derive(Debug)]
pub(crate) enum HubInput {
    Dispatch {
        msg: InboundMessage,
        reply: oneshot::Sender<Actions>,
    },
    Added {
        ctx: ConnectionContext,
        handle: ConnHandle,
    },
    Removed {
        ctx: ConnectionContext,
        reason: CloseReason,
    },
    Request {
        req: Request,
        reply: oneshot::Sender<Result<Response, ServiceError>>,
    },
    Stop,
}

/// The three handlers of one side, behind one dispatch interface.
pub(crate) trait HandlerSet: Send + 'static {
    fn dispatch(&mut self, msg: InboundMessage) -> impl Future<Output = Actions> + Send;
    fn added(&mut self, ctx: ConnectionContext) -> impl Future<Output = Actions> + Send;
    fn removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> impl Future<Output = Actions> + Send;
    fn sibling(&mut self, msg: SiblingMessage) -> impl Future<Output = Actions> + Send;
    fn sibling_closed(&mut self) -> impl Future<Output = Actions> + Send;
    /// The earliest of the handlers' `poll_timeout`s.
    fn poll_timeout(&self) -> Option<std::time::Instant>;
    /// Calls `on_timer` of every handler whose deadline is due at `now`.
    fn timer(&mut self, now: std::time::Instant) -> impl Future<Output = Actions> + Send;
}

macro_rules! handler_set {
    ($name:ident, $m:ident, $j:ident, $t:ident, $dispatch:ident) => {
        pub(crate) struct $name<M, J, T> {
            pub(crate) m: M,
            pub(crate) j: J,
            pub(crate) t: T,
        }

        impl<M: $m, J: $j, T: $t> HandlerSet for $name<M, J, T> {
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
                a.0.extend(self.j.handle_sibling_message(msg.clone()).await);
                a.0.extend(self.t.handle_sibling_message(msg).await);
                a
            }
            async fn sibling_closed(&mut self) -> Actions {
                let mut a = self.m.handle_sibling_closed().await;
                a.0.extend(self.j.handle_sibling_closed().await);
                a.0.extend(self.t.handle_sibling_closed().await);
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
                    a.0.extend(self.m.on_timer(now).await);
                }
                if due(self.j.poll_timeout()) {
                    a.0.extend(self.j.on_timer(now).await);
                }
                if due(self.t.poll_timeout()) {
                    a.0.extend(self.t.on_timer(now).await);
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

pub(crate) struct Hub<H> {
    pub(crate) handlers: H,
    pub(crate) conns: HashMap<ConnectionId, (ConnectionContext, ConnHandle)>,
    pub(crate) sibling: Option<SiblingEnd>,
    /// Messages for the sibling waiting for room in its queue, oldest first.
    sibling_backlog: std::collections::VecDeque<SiblingMessage>,
}

impl<H: HandlerSet> Hub<H> {
    pub(crate) fn new(handlers: H, sibling: Option<SiblingEnd>) -> Self {
        Self {
            handlers,
            conns: HashMap::new(),
            sibling,
            sibling_backlog: std::collections::VecDeque::new(),
        }
    }

    /// Runs until [`HubInput::Stop`] or until every input sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<HubInput>) {
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
                    self.apply(None, actions).await;
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
                        self.apply(None, actions).await;
                    }
                    None => {
                        // The sibling stopped: report it once, then stop polling it.
                        debug!("sibling closed");
                        self.sibling = None;
                        let actions = self.handlers.sibling_closed().await;
                        self.apply(None, actions).await;
                    }
                },
            }
        }
        for (_, (_, h)) in self.conns.drain() {
            h.cancel.cancel();
        }
    }

    async fn on_input(&mut self, input: HubInput) {
        match input {
            HubInput::Dispatch { msg, reply } => {
                let origin = msg.ctx.id;
                let actions = self.handlers.dispatch(msg).await;
                let mine = self.apply(Some(origin), actions).await;
                let _ = reply.send(mine);
            }
            HubInput::Added { ctx, handle } => {
                self.conns.insert(ctx.id, (ctx, handle));
                let actions = self.handlers.added(ctx).await;
                let mine = self.apply(Some(ctx.id), actions).await;
                self.deliver_own(ctx.id, mine);
            }
            HubInput::Removed { ctx, reason } => {
                if self.conns.remove(&ctx.id).is_some() {
                    let actions = self.handlers.removed(ctx, reason).await;
                    self.apply(None, actions).await;
                }
            }
            HubInput::Request { req, reply } => {
                let r = self.on_request(req).await;
                let _ = reply.send(r);
            }
            HubInput::Stop => {}
        }
    }

    async fn on_request(&mut self, req: Request) -> Result<Response, ServiceError> {
        match req {
            Request::SendTo(id, msg) => {
                if !self.conns.contains_key(&id) {
                    return Err(ServiceError::UnknownConnection(id));
                }
                self.apply(None, Action::SendTo(id, msg).into()).await;
                Ok(Response::Done)
            }
            Request::Broadcast(p, msg) => {
                self.apply(None, Action::Broadcast(p, msg).into()).await;
                Ok(Response::Done)
            }
            Request::Disconnect(id) => {
                if !self.conns.contains_key(&id) {
                    return Err(ServiceError::UnknownConnection(id));
                }
                self.apply(
                    None,
                    Action::Disconnect(id, "disconnected by application".into()).into(),
                )
                .await;
                Ok(Response::Done)
            }
            Request::ListConnections => {
                let mut v: Vec<ConnectionContext> = self.conns.values().map(|(c, _)| *c).collect();
                v.sort_by_key(|c| c.id);
                Ok(Response::Connections(v))
            }
            Request::ToHandlers(msg) => {
                let actions = self.handlers.sibling(msg).await;
                self.apply(None, actions).await;
                Ok(Response::Done)
            }
            Request::ToSibling(msg) => {
                if self.sibling.is_none() {
                    return Err(ServiceError::NoSibling);
                }
                self.apply(None, Action::ToSibling(msg).into()).await;
                Ok(Response::Done)
            }
        }
    }

    /// Queues `actions` addressed to the connection itself (from `on_connection_added`).
    fn deliver_own(&mut self, id: ConnectionId, mine: Actions) {
        for a in mine {
            match a {
                Action::Reply(m) => self.push(id, m),
                Action::Close(reason) => self.close(id, CloseReason::Closed(reason)),
                _ => {}
            }
        }
    }

    /// Executes everything not addressed to `origin`; returns what is (replies and close),
    /// which the origin's connection task performs itself, in order.
    async fn apply(&mut self, origin: Option<ConnectionId>, actions: Actions) -> Actions {
        // The usual answer to a share: only replies (or a close) for the origin. Hand the
        // handler's vector back as it is instead of moving its items into a new one.
        if origin.is_some()
            && actions
                .0
                .iter()
                .all(|a| matches!(a, Action::Reply(_) | Action::Close(_)))
        {
            return actions;
        }
        let mut mine = Actions::none();
        for a in actions {
            match a {
                Action::Reply(m) if origin.is_some() => mine.push(Action::Reply(m)),
                Action::Close(r) if origin.is_some() => mine.push(Action::Close(r)),
                Action::Reply(_) | Action::Close(_) => {}
                Action::SendTo(id, m) if Some(id) == origin => mine.push(Action::Reply(m)),
                Action::SendTo(id, m) => self.push(id, m),
                Action::Broadcast(p, m) => self.broadcast(p, m, origin, &mut mine),
                Action::Disconnect(id, r) if Some(id) == origin => mine.push(Action::Close(r)),
                Action::Disconnect(id, r) => self.close(id, CloseReason::Closed(r)),
                Action::ToSibling(msg) => self.send_to_sibling(msg),
                _ => {}
            }
        }
        mine
    }

    fn push(&mut self, id: ConnectionId, m: tower_stratum_core::Sv2Message) {
        let name = m.name();
        match m.encode() {
            Ok(f) => self.push_frame(id, f),
            Err(e) => warn!(connection = %id, message = name, error = %e, "cannot encode"),
        }
    }

    fn push_frame(&self, id: ConnectionId, f: Frame) {
        let Some((_, h)) = self.conns.get(&id) else {
            debug!(connection = %id, "send to unknown connection dropped");
            return;
        };
        if h.tx.try_send(Outbound::Frame(f)).is_err() {
            warn!(connection = %id, "outbound queue full: disconnecting slow client");
            h.cancel.cancel();
            // The connection task reports Removed when it exits.
        }
    }

    fn broadcast(
        &mut self,
        p: Subprotocol,
        m: tower_stratum_core::Sv2Message,
        origin: Option<ConnectionId>,
        mine: &mut Actions,
    ) {
        let name = m.name();
        // The origin's own copy goes back as a reply (written by its connection task); only
        // then does the message need cloning before it is encoded once for everyone else.
        let origin_targeted = origin
            .and_then(|id| self.conns.get(&id))
            .is_some_and(|(c, _)| c.protocol() == p);
        let own = origin_targeted.then(|| m.clone());
        let frame = match m.encode() {
            Ok(f) => f,
            Err(e) => return warn!(message = name, error = %e, "cannot encode broadcast"),
        };
        if let Some(own) = own {
            mine.push(Action::Reply(own));
        }
        for (c, _) in self.conns.values() {
            if c.protocol() == p && Some(c.id) != origin {
                self.push_frame(c.id, frame.clone());
            }
        }
    }

    fn close(&mut self, id: ConnectionId, reason: CloseReason) {
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
