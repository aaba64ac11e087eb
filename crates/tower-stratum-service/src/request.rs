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
use crate::protocol::{Protocol, Sv2};
use crate::ServiceError;

/// A command from the application to a service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request {
    /// Queue a message to one connection. Errors with [`ServiceError::UnknownConnection`] if it
    /// is not (or no longer) established.
    SendTo(ConnectionId, Sv2Message),
    /// Queue a message to every established connection of a subprotocol (a server's clients
    /// of it). On a client it is [`Request::SendUpstream`].
    Broadcast(Subprotocol, Sv2Message),
    /// Client services: queue a message to the upstream connection of a subprotocol (dropped
    /// while it is down). On a server it is a [`Request::Broadcast`].
    SendUpstream(Subprotocol, Sv2Message),
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
/// Errors are [`ServiceError`]s. Generic over the wire [`Protocol`]: `RequestSender` takes
/// [`Request`]s, `RequestSender<Sv1>` takes `Sv1Request`s.
pub struct RequestSender<P: Protocol = Sv2> {
    tx: PollSender<HubInput<P>>,
}

impl<P: Protocol> std::fmt::Debug for RequestSender<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSender")
            .field("protocol", &P::NAME)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Clone for RequestSender<P> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<P: Protocol> RequestSender<P> {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<HubInput<P>>) -> Self {
        Self {
            tx: PollSender::new(tx),
        }
    }
}

/// The answer to one [`Request`], once the service's handler task has carried it out. Fails
/// with [`ServiceError::Stopped`] if the service stopped first, or with the request's own error.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<P: Protocol = Sv2> {
    state: Result<oneshot::Receiver<Result<P::Response, ServiceError>>, Option<ServiceError>>,
}

impl<P: Protocol> std::fmt::Debug for ResponseFuture<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<P: Protocol> Future for ResponseFuture<P> {
    type Output = Result<P::Response, ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            Ok(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(ServiceError::Stopped))),
            Err(e) => Poll::Ready(Err(e.take().unwrap_or(ServiceError::Stopped))),
        }
    }
}

impl<P: Protocol> tower::Service<P::Request> for RequestSender<P> {
    type Response = P::Response;
    type Error = ServiceError;
    type Future = ResponseFuture<P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServiceError>> {
        self.tx.poll_reserve(cx).map_err(|_| ServiceError::Stopped)
    }

    fn call(&mut self, req: P::Request) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let state = match self.tx.send_item(HubInput::Request { req, reply }) {
            Ok(()) => Ok(rx),
            Err(_) => Err(Some(ServiceError::Stopped)),
        };
        ResponseFuture { state }
    }
}
