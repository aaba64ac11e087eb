//! The innermost service of the inbound stack: hands each message to the handler task.

use crate::hub::HubInput;
use crate::protocol::{Protocol, Sv2};
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
///
/// Generic over the wire [`Protocol`]: `HandlerService` (Sv2) takes [`InboundMessage`]s and
/// answers [`Actions`]; `HandlerService<Sv1>` takes `Sv1InboundMessage`s and answers
/// `Sv1Actions`.
pub struct HandlerService<P: Protocol = Sv2> {
    tx: PollSender<HubInput<P>>,
}

impl<P: Protocol> std::fmt::Debug for HandlerService<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerService")
            .field("protocol", &P::NAME)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Clone for HandlerService<P> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<P: Protocol> HandlerService<P> {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<HubInput<P>>) -> Self {
        Self {
            tx: PollSender::new(tx),
        }
    }
}

impl<P: Protocol> tower::Service<P::Inbound> for HandlerService<P> {
    type Response = P::Actions;
    type Error = tower::BoxError;
    type Future = HandlerFuture<P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.tx
            .poll_reserve(cx)
            .map_err(|_| ServiceError::Stopped.into())
    }

    /// Queues the message to the handler task at once (in the slot `poll_ready` reserved), so
    /// the handlers see messages in the order of the `call`s, whenever the futures are polled.
    fn call(&mut self, msg: P::Inbound) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let rx = match self.tx.send_item(HubInput::Dispatch { msg, reply }) {
            Ok(()) => Some(rx),
            Err(_) => None,
        };
        HandlerFuture { rx }
    }
}

/// The future of [`HandlerService`]'s `call`: resolves to the [`Actions`] for the message's own
/// connection once the handler task has handled it, or to a boxed [`ServiceError::Stopped`] if
/// the service stopped first (or `call` came without a successful `poll_ready`).
///
/// A named type rather than a boxed future: one allocation less per message (the reply
/// channel remains).
#[must_use = "futures do nothing unless polled"]
pub struct HandlerFuture<P: Protocol = Sv2> {
    /// `None`: the message could not be queued.
    rx: Option<oneshot::Receiver<P::Actions>>,
}

impl<P: Protocol> std::fmt::Debug for HandlerFuture<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerFuture")
            .field("queued", &self.rx.is_some())
            .finish()
    }
}

impl<P: Protocol> Future for HandlerFuture<P> {
    type Output = Result<P::Actions, tower::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.rx.as_mut() {
            Some(rx) => Pin::new(rx)
                .poll(cx)
                .map_err(|_| ServiceError::Stopped.into()),
            None => Poll::Ready(Err(ServiceError::Stopped.into())),
        }
    }
}

/// Declares a trait alias for "a layered handler service of this message and answer type":
/// `tower::Service<$inbound, Response = $actions, Error = BoxError>` with a `Send + 'static`
/// future, `Clone + Send + 'static`, and its blanket impl.
macro_rules! stack_trait {
    ($(#[$doc:meta])* $name:ident $(<$p:ident: $bound:path>)?, $inbound:ty, $actions:ty) => {
        $(#[$doc])*
        pub trait $name$(<$p: $bound>)?:
            tower::Service<
                $inbound,
                Response = $actions,
                Error = tower::BoxError,
                Future: Send + 'static,
            > + Clone
            + Send
            + 'static
        {
        }

        impl<$($p: $bound,)? S> $name$(<$p>)? for S where
            S: tower::Service<
                    $inbound,
                    Response = $actions,
                    Error = tower::BoxError,
                    Future: Send + 'static,
                > + Clone
                + Send
                + 'static
        {
        }
    };
}
pub(crate) use stack_trait;

stack_trait!(
    /// Bound on the inbound stack of any protocol's connections: the layered
    /// [`HandlerService<P>`](HandlerService). [`InboundStack`] is this for Sv2.
    ProtocolStack<P: Protocol>,
    P::Inbound,
    P::Actions
);

stack_trait!(
    /// Bound on the inbound stack a service accepts: the layered [`HandlerService`].
    InboundStack,
    InboundMessage,
    Actions
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use tower::{Service, ServiceExt};
    use tower_stratum_core::{
        Action, ConnectionContext, ConnectionId, ConnectionInfo, Role, Subprotocol, Sv2Message,
    };

    fn message() -> InboundMessage {
        InboundMessage {
            ctx: ConnectionContext {
                id: ConnectionId(1),
                peer: None,
                role: Role::Server,
                info: ConnectionInfo {
                    protocol: Subprotocol::Mining,
                    version: 2,
                    flags: 0,
                    success_flags: 0,
                    extensions: Default::default(),
                },
            },
            message: tower_stratum_test_kit::msg::submit_standard(1, 7),
        }
    }

    #[tokio::test]
    async fn answers_come_back_through_the_future_in_call_order() {
        let (tx, mut hub) = tokio::sync::mpsc::channel(4);
        let mut svc = HandlerService::<Sv2>::new(tx);
        let first = svc.ready().await.unwrap().call(message());
        let second = svc.ready().await.unwrap().call(message());
        // Both are queued by `call` itself, before either future is polled.
        for n in 0..2u32 {
            match hub.recv().await {
                Some(HubInput::Dispatch { reply, .. }) => {
                    let m = tower_stratum_test_kit::msg::submit_standard(1, n);
                    reply.send(Actions::from(vec![Action::Reply(m)])).unwrap();
                }
                other => panic!("expected a dispatch, got {other:?}"),
            }
        }
        for (f, n) in [(first, 0), (second, 1)] {
            match f.await.unwrap().as_slice() {
                [Action::Reply(Sv2Message::Mining(
                    tower_stratum_core::message::MiningOwned::SubmitSharesStandard(s),
                ))] => assert_eq!(s.sequence_number, n),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_stopped_hub_is_a_stopped_error() {
        let (tx, hub) = tokio::sync::mpsc::channel(4);
        let mut svc = HandlerService::<Sv2>::new(tx);
        // Reserved, then the hub goes away before it answers.
        let f = svc.ready().await.unwrap().call(message());
        drop(hub);
        let e = f.await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<ServiceError>(),
            Some(&ServiceError::Stopped)
        );
        // Now `poll_ready` itself fails, and a `call` without it resolves to the same error.
        assert!(svc.ready().await.is_err());
        let e = svc.call(message()).await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<ServiceError>(),
            Some(&ServiceError::Stopped)
        );
    }
}
