//! Handler traits: one per subprotocol per side, one method per message that side can receive
//! (spec 5.3, 6.4, 7), named after the spec message. No IO here: handlers return [`Actions`].
//!
//! Defaults give the spec-correct rejection (an error message where the spec has one, nothing
//! where it has none), so an implementation overrides only what it supports. Each trait has a
//! documented `Null…` implementation that refuses its subprotocol at SetupConnection with
//! `unsupported-protocol` (server side) or never connects (client side).
//!
//! # Where state lives
//! The service owns each handler in one task and calls it with `&mut self`, one message at a
//! time, so state shared by every connection (extranonce allocators, jobs, counters) is simply
//! fields of the handler: no locks, and no clone that could silently fork it. Per-connection
//! state is keyed by [`ConnectionId`] and freed in `on_connection_removed`, which the service
//! calls exactly once for every connection it reported with `on_connection_added`.

/// Lifecycle, extension and sibling methods shared by all six handler traits.
macro_rules! common_methods {
    () => {
        /// The connection finished SetupConnection (for a client: also after every
        /// reconnect). Called exactly once per connection, before any message of it.
        fn on_connection_added(
            &mut self,
            ctx: ConnectionContext,
        ) -> impl Future<Output = Actions> + Send {
            let _ = ctx;
            async { Actions::none() }
        }

        /// A connection previously passed to `on_connection_added` is gone (`reason` says
        /// why); free its state. Called exactly once per added connection, never for one that
        /// was not added. A client service then reconnects with backoff if configured.
        fn on_connection_removed(
            &mut self,
            ctx: ConnectionContext,
            reason: CloseReason,
        ) -> impl Future<Output = Actions> + Send {
            let _ = (ctx, reason);
            async { Actions::none() }
        }

        /// An extension message with `channel_msg` set (spec 3.4.1): this handler is the
        /// channel endpoint or relays it along the channel. Default: discard.
        fn handle_extension_message(
            &mut self,
            ctx: ConnectionContext,
            msg: ExtensionMessage,
        ) -> impl Future<Output = Actions> + Send {
            let _ = (ctx, msg);
            async { Actions::none() }
        }

        /// A message from the sibling service. Default: ignore.
        fn handle_sibling_message(
            &mut self,
            msg: SiblingMessage,
        ) -> impl Future<Output = Actions> + Send {
            let _ = msg;
            async { Actions::none() }
        }

        /// The sibling service stopped (called once). Default: nothing.
        fn handle_sibling_closed(&mut self) -> impl Future<Output = Actions> + Send {
            async { Actions::none() }
        }

        /// When this handler next wants [`on_timer`](Self::on_timer) called, in monotonic time
        /// (`std::time::Instant`), or `None` for never. The runtime asks after every call into
        /// the handlers and keeps one sleep for the earliest deadline of the three, so periodic
        /// work (vardiff, job refresh, resubmitting a found block, a resume grace period) needs
        /// no ticker task and no message to itself. A deadline in the past fires at once, so
        /// `on_timer` must move the deadline on (or clear it) or it is called again at once.
        /// Default: `None`.
        fn poll_timeout(&self) -> Option<std::time::Instant> {
            None
        }

        /// A deadline this handler gave in [`poll_timeout`](Self::poll_timeout) is due; `now`
        /// is the runtime's clock (tokio's, so tests with paused time see virtual time).
        /// Actions are executed as for a sibling message (no origin connection). Default:
        /// nothing.
        fn on_timer(&mut self, now: std::time::Instant) -> impl Future<Output = Actions> + Send {
            let _ = now;
            async { Actions::none() }
        }
    };
}

pub mod client;
pub mod server;

pub use client::{
    NullSv2JobDeclarationClientHandler, NullSv2MiningClientHandler,
    NullSv2TemplateDistributionClientHandler, Sv2JobDeclarationClientHandler,
    Sv2MiningClientHandler, Sv2TemplateDistributionClientHandler,
};
pub use server::{
    NullSv2JobDeclarationServerHandler, NullSv2MiningServerHandler,
    NullSv2TemplateDistributionServerHandler, Sv2JobDeclarationServerHandler,
    Sv2MiningServerHandler, Sv2TemplateDistributionServerHandler,
};

use crate::message::{Subprotocol, Sv2Message};
use crate::session::{CloseReason, ConnectionInfo, Role};
use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Identifies one connection for the lifetime of a service (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a handler knows about the connection a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionContext {
    /// The connection.
    pub id: ConnectionId,
    /// The peer's socket address (`None` for in-memory streams).
    pub peer: Option<SocketAddr>,
    /// Which end we are.
    pub role: Role,
    /// The negotiated subprotocol, version and flags.
    pub info: ConnectionInfo,
}

impl ConnectionContext {
    /// The negotiated subprotocol.
    pub fn protocol(&self) -> Subprotocol {
        self.info.protocol
    }
}

/// An application value passed between sibling services (see the service crate's sibling IO).
#[derive(Clone)]
#[non_exhaustive]
pub enum SiblingMessage {
    /// An Sv2 message (e.g. a template a TD client forwards to the mining server).
    Sv2(Sv2Message),
    /// A connection of the sending service came up or went down (e.g. a proxy's upstream side
    /// telling its downstream side), in order with the messages around it.
    Connection(ConnectionEvent),
    /// Anything else; downcast with [`SiblingMessage::downcast_ref`].
    Custom(Arc<dyn Any + Send + Sync>),
}

/// What a service tells its sibling about one of its connections (see
/// [`SiblingMessage::Connection`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The connection is established (`on_connection_added`). `upstream`: for a client with
    /// a list of upstreams, the index of the one this connection reached (0 = the primary).
    Established {
        /// The connection.
        ctx: ConnectionContext,
        /// Index in the client's upstream list, when the sender knows it.
        upstream: Option<usize>,
    },
    /// The connection closed (`on_connection_removed`).
    Closed {
        /// The connection.
        ctx: ConnectionContext,
        /// Why.
        reason: CloseReason,
    },
}

impl SiblingMessage {
    /// Wraps any value as [`SiblingMessage::Custom`].
    pub fn custom<T: Any + Send + Sync>(value: T) -> Self {
        SiblingMessage::Custom(Arc::new(value))
    }

    /// The custom value as `T`, if it is one.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match self {
            SiblingMessage::Custom(v) => v.downcast_ref::<T>(),
            SiblingMessage::Sv2(_) | SiblingMessage::Connection(_) => None,
        }
    }
}

impl fmt::Debug for SiblingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiblingMessage::Sv2(m) => f.debug_tuple("Sv2").field(&m.name()).finish(),
            SiblingMessage::Connection(e) => f.debug_tuple("Connection").field(e).finish(),
            SiblingMessage::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// One thing a handler wants done.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Send to the connection the event came from (ignored for events without a connection,
    /// such as sibling messages).
    Reply(Sv2Message),
    /// Send to one connection.
    SendTo(ConnectionId, Sv2Message),
    /// Send to every established connection of a subprotocol (e.g. a new job to every mining
    /// connection). Encoded once, shared by all queues.
    Broadcast(Subprotocol, Sv2Message),
    /// Client services: send to the upstream connection of the subprotocol (dropped while it
    /// is down). On a server it is a [`Broadcast`](Action::Broadcast) to that subprotocol's
    /// connections.
    SendUpstream(Subprotocol, Sv2Message),
    /// Hand a message to the sibling service, if one is linked.
    ToSibling(SiblingMessage),
    /// Close the connection the event came from, after what was queued before it is flushed.
    Close(String),
    /// Close another connection.
    Disconnect(ConnectionId, String),
}

/// What a handler returns: actions executed in order. Usually zero or one.
///
/// Built with the constructors ([`none`](Self::none), [`reply`](Self::reply),
/// [`close`](Self::close), `From<Action>`, `From<Vec<Action>>`, `FromIterator`) and grown with
/// [`and`](Self::and) (by value, for chains) or [`push`](Self::push) /
/// [`extend`](Self::extend) (in place); read with [`as_slice`](Self::as_slice), [`iter`](Self::iter)
/// or by value with `into_iter`.
#[derive(Debug, Clone, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// No action.
    pub fn none() -> Self {
        Actions(Vec::new())
    }

    /// One [`Action::Reply`].
    pub fn reply(m: impl Into<Sv2Message>) -> Self {
        Actions(vec![Action::Reply(m.into())])
    }

    /// One [`Action::Close`].
    pub fn close(reason: impl Into<String>) -> Self {
        Actions(vec![Action::Close(reason.into())])
    }

    /// Appends an action.
    pub fn and(mut self, a: Action) -> Self {
        self.0.push(a);
        self
    }

    /// Appends an action in place.
    pub fn push(&mut self, a: Action) {
        self.0.push(a);
    }

    /// Appends every action of `other`, in order.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Action>) {
        self.0.extend(other);
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
    pub fn as_slice(&self) -> &[Action] {
        &self.0
    }

    /// The actions, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Action> {
        self.0.iter()
    }
}

impl From<Action> for Actions {
    fn from(a: Action) -> Self {
        Actions(vec![a])
    }
}

impl From<Vec<Action>> for Actions {
    fn from(v: Vec<Action>) -> Self {
        Actions(v)
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        Actions(iter.into_iter().collect())
    }
}

impl IntoIterator for Actions {
    type Item = Action;
    type IntoIter = std::vec::IntoIter<Action>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Actions {
    type Item = &'a Action;
    type IntoIter = std::slice::Iter<'a, Action>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A message received on a connection, as it travels through the inbound tower stack.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// Where it came from.
    pub ctx: ConnectionContext,
    /// The message (already checked: right subprotocol, right direction).
    pub message: Sv2Message,
}

/// What `SetupConnection` a server handler accepts for its subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupSupport {
    /// Client flags the handler honours (spec 5.2/6.2/7 flag tables); others are refused with
    /// `unsupported-feature-flags`.
    pub supported_flags: u32,
    /// Flags sent back in `SetupConnection.Success.flags`.
    pub success_flags: u32,
}
