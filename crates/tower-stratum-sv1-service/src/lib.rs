//! Stratum V1 services for tower-stratum, shaped like the Sv2 ones.
//!
//! - [`Sv1ServerService`]: accepts miners (TCP or any stream through a
//!   [`Listener`](tower_stratum_service::Listener)), one task per connection around a sans-IO
//!   [`Sv1ServerSession`], one hub task owning your [`Sv1ServerHandler`] (`&mut self`, no
//!   locks). Handler methods are named after the Sv1 methods (`handle_subscribe`,
//!   `handle_submit`, ...) and return [`Sv1Actions`]: reply, push to this miner, to others or
//!   to all, close, talk to the sibling. Each connection has exactly one writer, so replies and
//!   pushes are whole lines and never interleave. It is a `tower::Service<`[`Sv1Request`]`>`
//!   for the application (push, broadcast, list, disconnect, tick the handler).
//! - [`Sv1ClientService`]: one connection to an Sv1 server; calls resolve to the server's
//!   response or time out (default 30 s); notifications arrive on a bounded stream with
//!   backpressure.
//!
//! # Guarantees
//!
//! - **Order of the Sv1 handshake** is enforced before the handler sees a message (see
//!   [`Sv1ServerSession`]): a second `mining.subscribe` gets `[20, "Already subscribed"]`,
//!   `mining.authorize` before `mining.subscribe` and `mining.submit` before a successful
//!   subscribe get `[25, "Not subscribed"]`, `mining.submit` for a worker this connection did
//!   not authorize gets `[24, "Unauthorized worker"]`.
//! - **Bad input never panics**: a request with malformed params gets `[20, "Other/Unknown"]`;
//!   a line that is not a JSON object (nobody to answer) closes the connection; a line longer
//!   than `max_line_length` closes it.
//! - **Deadlines** (monotonic clock): subscribe + authorize within `setup_timeout` (default
//!   30 s), a line at least every `inactivity_timeout` (default 900 s), each write within
//!   `write_timeout` (default 30 s).
//! - **Bounded everywhere**: handler queue (`poll_ready` backpressure; connections stop
//!   reading when it is full), per-connection outbound queue (a miner that does not read is
//!   evicted, never stalls the others), sibling link, client notification stream.
//! - **Graceful shutdown**: [`Sv1ServerHandle::shutdown`] closes every connection and calls
//!   `on_connection_removed` for each.
//!
//! # TLS
//!
//! With the `tls` feature (rustls, ring provider): serve through a `tls::TlsListener` (the
//! handshake runs in each connection's task, bounded by the setup deadline) and connect with
//! `Sv1ClientService::connect_tls`. Without it, any stream works: wrap streams in a
//! [`Listener`](tower_stratum_service::Listener) or pass one to [`Sv1ClientService::new`].

mod client;
mod config;
mod connection;
mod handler;
mod hub;
mod request;
mod server;
mod session;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{Sv1ClientError, Sv1ClientHandle, Sv1ClientService, Sv1Notifications};
pub use config::{Sv1ClientConfig, Sv1ServerConfig, DEFAULT_SERVER_MAX_LINE};
pub use handler::{
    configure_refused, dispatch, not_supported, NullSv1ServerHandler, Sv1Action, Sv1Actions,
    Sv1CloseReason, Sv1ConnectionContext, Sv1InboundMessage, Sv1ServerHandler, Sv1Timer,
    METHOD_NOT_SUPPORTED,
};
pub use request::{Sv1HandlerService, Sv1InboundStack, Sv1Request, Sv1Response};
pub use server::{Sv1ServerBuilder, Sv1ServerHandle, Sv1ServerService};
pub use session::{
    Sv1Inbound, Sv1ServerSession, Sv1SessionConfig, ALREADY_SUBSCRIBED, TOO_MANY_PENDING,
    TOO_MANY_WORKERS,
};

use tower_stratum_core::ConnectionId;

/// Errors of [`Sv1ServerService`]'s request interface.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sv1ServiceError {
    /// The service is shut down (or shutting down).
    #[error("service stopped")]
    Stopped,
    /// No connection has this id.
    #[error("unknown connection {0}")]
    UnknownConnection(ConnectionId),
    /// No sibling service is linked.
    #[error("no sibling linked")]
    NoSibling,
}
