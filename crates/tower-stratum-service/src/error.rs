//! The services' error type.

use tower_stratum_core::ConnectionId;

/// Errors of the services' request interfaces.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service is shut down (or shutting down).
    #[error("service stopped")]
    Stopped,
    /// No established connection has this id.
    #[error("unknown connection {0}")]
    UnknownConnection(ConnectionId),
    /// No sibling service is linked.
    #[error("no sibling linked")]
    NoSibling,
    /// Binding or configuring the listener failed.
    #[error("io: {0}")]
    Io(String),
}
