//! Application requests to a running [`Sv1ServerService`](crate::Sv1ServerService), and the
//! innermost service of its inbound stack.

use crate::handler::{Sv1Actions, Sv1ConnectionContext, Sv1InboundMessage};
use crate::hub::HubInput;
use crate::Sv1ServiceError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;
use tower_stratum_core::{ConnectionId, SiblingMessage};
use tower_stratum_sv1::ServerMessage;

/// A command from the application to an Sv1 server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Sv1Request {
    /// Queue a message to one connection. [`Sv1ServiceError::UnknownConnection`] if it is gone.
    SendTo(ConnectionId, ServerMessage),
    /// Queue one message (encoded once) to several connections; unknown ones are skipped.
    Multicast(Vec<ConnectionId>, ServerMessage),
    /// Queue one message (encoded once) to every connection.
    Broadcast(ServerMessage),
    /// Close one connection after its queued messages are written.
    Disconnect(ConnectionId),
    /// List the connections, sorted by id.
    ListConnections,
    /// Deliver a message to this service's handler through its `handle_sibling_message`, as
    /// if the sibling had sent it (periodic ticks, application events).
    ToHandlers(SiblingMessage),
    /// Send a message to the sibling service. [`Sv1ServiceError::NoSibling`] if none.
    ToSibling(SiblingMessage),
}

/// The answer to an [`Sv1Request`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Sv1Response {
    /// Done (queued; delivery is asynchronous).
    Done,
    /// Answer to [`Sv1Request::ListConnections`].
    Connections(Vec<Sv1ConnectionContext>),
}

/// `tower::Service<`[`Sv1InboundMessage`]`>` delivering a message to the handler task; it
/// resolves to the [`Sv1Actions`] for the message's own connection (the others are already
/// carried out). Wrap it with tower layers through
/// [`Sv1ServerBuilder::layer`](crate::Sv1ServerBuilder::layer); the stack is cloned once per
/// connection.
///
/// `poll_ready` reserves room in the bounded handler queue: while the handler task is
/// saturated, connections stop reading from their miners. Errors are boxed
/// [`Sv1ServiceError::Stopped`] once the service stops.
#[derive(Debug)]
pub struct Sv1HandlerService {
    tx: PollSender<HubInput>,
}

impl Clone for Sv1HandlerService {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl Sv1HandlerService {
    pub(crate) fn new(tx: mpsc::Sender<HubInput>) -> Self {
        Self {
            tx: PollSender::new(tx),
        }
    }
}

impl tower::Service<Sv1InboundMessage> for Sv1HandlerService {
    type Response = Sv1Actions;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Sv1Actions, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.tx
            .poll_reserve(cx)
            .map_err(|_| Sv1ServiceError::Stopped.into())
    }

    fn call(&mut self, msg: Sv1InboundMessage) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send_item(HubInput::Dispatch { msg, reply });
        Box::pin(async move {
            sent.map_err(|_| Sv1ServiceError::Stopped)?;
            Ok(rx.await.map_err(|_| Sv1ServiceError::Stopped)?)
        })
    }
}

/// The bound on the inbound stack: the layered [`Sv1HandlerService`].
pub trait Sv1InboundStack:
    tower::Service<
        Sv1InboundMessage,
        Response = Sv1Actions,
        Error = tower::BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Sv1InboundStack for S where
    S: tower::Service<
            Sv1InboundMessage,
            Response = Sv1Actions,
            Error = tower::BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The request side of a server: a cloneable `tower::Service<Sv1Request>` whose `poll_ready`
/// reserves a slot in the bounded handler queue.
#[derive(Debug)]
pub(crate) struct RequestSender {
    tx: PollSender<HubInput>,
}

impl Clone for RequestSender {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl RequestSender {
    pub(crate) fn new(tx: mpsc::Sender<HubInput>) -> Self {
        Self {
            tx: PollSender::new(tx),
        }
    }

    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Sv1ServiceError>> {
        self.tx
            .poll_reserve(cx)
            .map_err(|_| Sv1ServiceError::Stopped)
    }

    pub(crate) fn call(
        &mut self,
        req: Sv1Request,
    ) -> Pin<Box<dyn Future<Output = Result<Sv1Response, Sv1ServiceError>> + Send>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send_item(HubInput::Request { req, reply });
        Box::pin(async move {
            sent.map_err(|_| Sv1ServiceError::Stopped)?;
            rx.await.map_err(|_| Sv1ServiceError::Stopped)?
        })
    }
}
