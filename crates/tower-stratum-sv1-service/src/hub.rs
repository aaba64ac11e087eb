//! The hub: one task owning the Sv1 handler, the registry of connections and the sibling
//! link. Connection tasks and the application reach it through one bounded queue.
//!
//! The hub never awaits a connection: it pushes to connection queues with `try_send`, and a
//! full queue evicts that connection (slow consumer), so one slow miner cannot stall the
//! others.

use crate::handler::{
    dispatch, Sv1Action, Sv1Actions, Sv1CloseReason, Sv1ConnectionContext, Sv1InboundMessage,
    Sv1ServerHandler,
};
use crate::request::{Sv1Request, Sv1Response};
use crate::Sv1ServiceError;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tower_stratum_core::{ConnectionId, SiblingMessage};
use tower_stratum_sv1::{RawLine, ServerMessage};
use tracing::{debug, warn};

/// What a connection task's outbound queue carries.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message the session must see (responses) or that is sent to one connection.
    Msg(ServerMessage),
    /// A line encoded once for several connections.
    Line(RawLine),
    Close(Sv1CloseReason),
}

#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) evict: CancellationToken,
}

#[derive(Debug)]
pub(crate) enum HubInput {
    Dispatch {
        msg: Sv1InboundMessage,
        reply: oneshot::Sender<Sv1Actions>,
    },
    Added {
        ctx: Sv1ConnectionContext,
        handle: ConnHandle,
    },
    Removed {
        ctx: Sv1ConnectionContext,
        reason: Sv1CloseReason,
    },
    Request {
        req: Sv1Request,
        reply: oneshot::Sender<Result<Sv1Response, Sv1ServiceError>>,
    },
    Stop,
}

/// How long the hub waits for room in a full sibling queue before dropping the message. Two
/// hubs therefore cannot deadlock on each other.
const SIBLING_SEND_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Sibling {
    pub(crate) tx: mpsc::Sender<SiblingMessage>,
    pub(crate) rx: mpsc::Receiver<SiblingMessage>,
}

pub(crate) struct Hub<H> {
    handler: H,
    conns: HashMap<ConnectionId, (Sv1ConnectionContext, ConnHandle)>,
    sibling: Option<Sibling>,
}

impl<H: Sv1ServerHandler> Hub<H> {
    pub(crate) fn new(handler: H, sibling: Option<Sibling>) -> Self {
        Self {
            handler,
            conns: HashMap::new(),
            sibling,
        }
    }

    /// Runs until [`HubInput::Stop`] or until every input sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<HubInput>) {
        loop {
            let sibling_rx = async {
                match self.sibling.as_mut() {
                    Some(s) => s.rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                input = rx.recv() => match input {
                    None | Some(HubInput::Stop) => break,
                    Some(input) => self.on_input(input).await,
                },
                msg = sibling_rx => match msg {
                    Some(msg) => {
                        let actions = self.handler.handle_sibling_message(msg).await;
                        self.apply(None, actions).await;
                    }
                    None => {
                        // Report once, then stop polling it (no spin on a closed queue).
                        debug!("sibling closed");
                        self.sibling = None;
                        let actions = self.handler.handle_sibling_closed().await;
                        self.apply(None, actions).await;
                    }
                },
            }
        }
        for (_, (_, h)) in self.conns.drain() {
            h.evict.cancel();
        }
    }

    async fn on_input(&mut self, input: HubInput) {
        match input {
            HubInput::Dispatch { msg, reply } => {
                let origin = msg.ctx.id;
                let actions = dispatch(&mut self.handler, msg).await;
                let mine = self.apply(Some(origin), actions).await;
                let _ = reply.send(mine);
            }
            HubInput::Added { ctx, handle } => {
                self.conns.insert(ctx.id, (ctx, handle));
                let actions = self.handler.on_connection_added(ctx).await;
                let mine = self.apply(Some(ctx.id), actions).await;
                for a in mine {
                    match a {
                        Sv1Action::Send(m) => self.push(ctx.id, Outbound::Msg(m)),
                        Sv1Action::Close(r) => self.close(ctx.id, Sv1CloseReason::Closed(r)),
                        _ => {}
                    }
                }
            }
            HubInput::Removed { ctx, reason } => {
                if self.conns.remove(&ctx.id).is_some() {
                    let actions = self.handler.on_connection_removed(ctx, reason).await;
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

    async fn on_request(&mut self, req: Sv1Request) -> Result<Sv1Response, Sv1ServiceError> {
        match req {
            Sv1Request::SendTo(id, m) => {
                if !self.conns.contains_key(&id) {
                    return Err(Sv1ServiceError::UnknownConnection(id));
                }
                self.push(id, Outbound::Msg(m));
            }
            Sv1Request::Multicast(ids, m) => self.multicast(ids, m, None, &mut Sv1Actions::none()),
            Sv1Request::Broadcast(m) => {
                let ids = self.conns.keys().copied().collect();
                self.multicast(ids, m, None, &mut Sv1Actions::none());
            }
            Sv1Request::Disconnect(id) => {
                if !self.conns.contains_key(&id) {
                    return Err(Sv1ServiceError::UnknownConnection(id));
                }
                self.close(
                    id,
                    Sv1CloseReason::Closed("disconnected by application".into()),
                );
            }
            Sv1Request::ListConnections => {
                let mut v: Vec<Sv1ConnectionContext> =
                    self.conns.values().map(|(c, _)| *c).collect();
                v.sort_by_key(|c| c.id);
                return Ok(Sv1Response::Connections(v));
            }
            Sv1Request::ToHandlers(msg) => {
                let actions = self.handler.handle_sibling_message(msg).await;
                self.apply(None, actions).await;
            }
            Sv1Request::ToSibling(msg) => {
                if self.sibling.is_none() {
                    return Err(Sv1ServiceError::NoSibling);
                }
                self.send_to_sibling(msg).await;
            }
        }
        Ok(Sv1Response::Done)
    }

    /// Carries out everything not addressed to `origin`; returns what is (sends and close, in
    /// order), which the origin's connection task performs itself.
    async fn apply(&mut self, origin: Option<ConnectionId>, actions: Sv1Actions) -> Sv1Actions {
        let mut mine = Sv1Actions::none();
        for a in actions {
            match a {
                Sv1Action::Send(m) if origin.is_some() => mine.push(Sv1Action::Send(m)),
                Sv1Action::Close(r) if origin.is_some() => mine.push(Sv1Action::Close(r)),
                Sv1Action::Send(_) | Sv1Action::Close(_) => {
                    debug!("send/close without a connection ignored")
                }
                Sv1Action::SendTo(id, m) if Some(id) == origin => mine.push(Sv1Action::Send(m)),
                Sv1Action::SendTo(id, m) => self.push(id, Outbound::Msg(m)),
                Sv1Action::Multicast(ids, m) => self.multicast(ids, m, origin, &mut mine),
                Sv1Action::Broadcast(m) => {
                    let ids = self.conns.keys().copied().collect();
                    self.multicast(ids, m, origin, &mut mine);
                }
                Sv1Action::Disconnect(id, r) if Some(id) == origin => {
                    mine.push(Sv1Action::Close(r))
                }
                Sv1Action::Disconnect(id, r) => self.close(id, Sv1CloseReason::Closed(r)),
                Sv1Action::ToSibling(msg) => self.send_to_sibling(msg).await,
            }
        }
        mine
    }

    fn multicast(
        &mut self,
        ids: Vec<ConnectionId>,
        m: ServerMessage,
        origin: Option<ConnectionId>,
        mine: &mut Sv1Actions,
    ) {
        // Responses stay typed (each connection's session must see them); everything else is
        // encoded once.
        let line = match &m {
            ServerMessage::Response(_) => None,
            other => Some(RawLine::encode(other)),
        };
        for id in ids {
            if Some(id) == origin {
                mine.push(Sv1Action::Send(m.clone()));
                continue;
            }
            let out = match &line {
                Some(l) => Outbound::Line(l.clone()),
                None => Outbound::Msg(m.clone()),
            };
            self.push(id, out);
        }
    }

    fn push(&mut self, id: ConnectionId, out: Outbound) {
        let Some((_, h)) = self.conns.get(&id) else {
            debug!(connection = %id, "send to unknown connection dropped");
            return;
        };
        if h.tx.try_send(out).is_err() {
            warn!(connection = %id, "outbound queue full: disconnecting slow miner");
            h.evict.cancel();
        }
    }

    fn close(&mut self, id: ConnectionId, reason: Sv1CloseReason) {
        if let Some((_, h)) = self.conns.get(&id) {
            if h.tx.try_send(Outbound::Close(reason)).is_err() {
                h.evict.cancel();
            }
        }
    }

    async fn send_to_sibling(&mut self, msg: SiblingMessage) {
        let Some(s) = self.sibling.as_ref() else {
            debug!("no sibling linked: message dropped");
            return;
        };
        match tokio::time::timeout(SIBLING_SEND_TIMEOUT, s.tx.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => debug!("sibling gone: message dropped"),
            Err(_) => {
                tracing::error!("sibling queue full for {SIBLING_SEND_TIMEOUT:?}: message dropped")
            }
        }
    }
}
