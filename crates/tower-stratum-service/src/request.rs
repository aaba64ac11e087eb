//! Application requests to a running service (its `tower::Service<Request>` interface).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tokio_util::sync::PollSender;
use tower_stratum_core::{
    ConnectionContext, ConnectionId, SiblingMessage, Subprotocol, Sv2Message,
};

use crate::hub::HubInput;
use crate::ServiceError;

/// A command from the application to a service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request {
    /// Queue a message to one connection. Errors with [`ServiceError::UnknownConnection`] if it
    /// is not (or no longer) established.
    SendTo(ConnectionId, Sv2Message),
    /// Queue a message to every established connection of a subprotocol (server: all clients
    /// of it; client: the upstream connection of it).
    Broadcast(Subprotocol, Sv2Message),
    /// Close one connection (after its queued messages are written).
    Disconnect(ConnectionId),
    /// List established connections.
    ListConnections,
    /// Send a message to the sibling service. Errors with [`ServiceError::NoSibling`].
    ToSibling(SiblingMessage),
    /// Deliver a message to THIS service's own handlers, through their
    /// `handle_sibling_message`, as if the sibling had sent it; the actions they return are
    /// carried out. For application events such as periodic ticks (a handler cannot sleep).
    ToHandlers(SiblingMessage),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Response {
    /// Done (queued; delivery is asynchronous).
    Done,
    /// Answer to [`Request::ListConnections`], sorted by id.
    Connections(Vec<ConnectionContext>),
}

/// The request side of a service: a cheap, cloneable `tower::Service<Request>`.
///
/// `poll_ready` reserves a slot in the bounded queue to the service's handler task (capacity
/// `handler_queue`), so it returns `Pending` while that task is saturated: real backpressure.
/// Errors are [`ServiceError`]s.
#[derive(Debug)]
pub struct RequestSender {
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
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<HubInput>) -> Self {
        Self {
            tx: PollSender::new(tx),
        }
    }
}

/// The answer to one [`Request`], once the service's handler task has carried it out. Fails
/// with [`ServiceError::Stopped`] if the service stopped first, or with the request's own error.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    state: Result<oneshot::Receiver<Result<Response, ServiceError>>, Option<ServiceError>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response, ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            Ok(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(ServiceError::Stopped))),
            Err(e) => Poll::Ready(Err(e.take().unwrap_or(ServiceError::Stopped))),
        }
    }
}

impl tower::Service<Request> for RequestSender {
    type Response = Response;
    type Error = ServiceError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServiceError>> {
        self.tx.poll_reserve(cx).map_err(|_| ServiceError::Stopped)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let state = match self.tx.send_item(HubInput::Request { req, reply }) {
            Ok(()) => Ok(rx),
            Err(_) => Err(Some(ServiceError::Stopped)),
        };
        ResponseFuture { state }
    }
}
