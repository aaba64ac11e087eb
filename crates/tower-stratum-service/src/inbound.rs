//! The innermost service of the inbound stack: hands each message to the handler task.

use crate::hub::HubInput;
use crate::ServiceError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tokio_util::sync::PollSender;
use tower_stratum_core::{Actions, InboundMessage};

/// `tower::Service<InboundMessage>` that delivers a message to the handlers (owned by the
/// service's handler task) and resolves to the [`Actions`] addressed to the message's own
/// connection (replies, close). Actions for other connections, broadcasts and sibling
/// messages have already been carried out by then.
///
/// Wrap it with any `tower::Layer` through the builders' `layer` method: tower's `Timeout`,
/// `ConcurrencyLimit`, a metrics layer... The stack is cloned once per connection; layers
/// whose clones share state (like `ConcurrencyLimit`'s semaphore) apply across connections.
///
/// `poll_ready` reserves room in the bounded handler queue. Errors are boxed
/// [`ServiceError::Stopped`] once the service is shutting down.
#[derive(Debug)]
pub struct HandlerService {
    tx: PollSender<HubInput>,
}

impl Clone for HandlerService {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl HandlerService {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<HubInput>) -> Self {
        Self {
            tx: PollSender::new(tx),
        }
    }
}

impl tower::Service<InboundMessage> for HandlerService {
    type Response = Actions;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Actions, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.tx
            .poll_reserve(cx)
            .map_err(|_| ServiceError::Stopped.into())
    }

    fn call(&mut self, msg: InboundMessage) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send_item(HubInput::Dispatch { msg, reply });
        Box::pin(async move {
            sent.map_err(|_| ServiceError::Stopped)?;
            Ok(rx.await.map_err(|_| ServiceError::Stopped)?)
        })
    }
}

/// Bound on the inbound stack a service accepts: the layered [`HandlerService`].
pub trait InboundStack:
    tower::Service<
        InboundMessage,
        Response = Actions,
        Error = tower::BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> InboundStack for S where
    S: tower::Service<
            InboundMessage,
            Response = Actions,
            Error = tower::BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}
