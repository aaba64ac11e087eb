//! Sans-IO core of tower-stratum.
//!
//! Nothing here spawns, sleeps, reads a clock or touches a socket: time is passed in as
//! [`std::time::Instant`]s and outputs are returned as values. The tokio shell lives in
//! `tower-stratum-service`.
//!
//! - [`frame`]: raw Sv2 frames (spec 3.2).
//! - [`message`]: owned Sv2 messages and (de)serialization through SRI's `parsers_sv2`.
//! - [`extensions`]: protocol extensions (spec 3.4): negotiated sets (extension `0x0001`) and
//!   TLV fields (spec 3.4.3), e.g. extension `0x0002`'s `user_identity`.
//! - [`share_math`]: difficulty <-> target, header and merkle computations shared by the Sv2
//!   mining server, the Sv1 layer and the miners.

pub mod extensions;
pub mod frame;
pub mod message;

pub use extensions::{ExtensionSet, ExtensionSupport, TlvFields};
pub use frame::Frame;
pub use message::{
    ExtensionMessage, MessageError, MessageWithTlvs, PerSubprotocol, Subprotocol, Sv2Message,
};
pub use stratum_core;
pub mod handler;
pub mod session;
pub mod share_math;

pub use handler::{
    Action, Actions, ConnectionContext, ConnectionEvent, ConnectionId, InboundMessage,
    SetupSupport, SiblingMessage,
};
pub use session::{
    CloseReason, ConnectionInfo, MaxPayload, Role, Session, SessionConfig, SessionOutput,
};
