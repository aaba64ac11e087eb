//! The tokio shell of tower-stratum: [`Sv2ServerService`], [`Sv2ClientService`] and, in
//! [`sv1`], the Stratum V1 server and client.
//!
//! One runtime for every wire protocol: the connection task, the hub, the accept loop,
//! [`ServerHandle`], the request sender and sibling IO are written once, generic over a
//! [`Protocol`] ([`Sv2`] and [`sv1::Sv1`] implement it). Each connection runs in its own task
//! around its protocol's sans-IO session ([`Session`](tower_stratum_core::Session) for Sv2);
//! the handlers of a service live in one task (the hub) that owns them and the registry of
//! connections. Everything between tasks is a bounded queue. See `docs/ARCHITECTURE.md` for
//! the life of a connection and a share's path.

/// The handler and layer setters shared by `ServerBuilder` and `ClientBuilder` (each changes
/// the builder's type); the builder's fields beyond the shared ones are listed after its name.
macro_rules! handler_setters {
    ($builder:ident $(, $extra:ident)*) => {
        /// Sets the Mining Protocol handler.
        pub fn mining<M2>(self, m: M2) -> $builder<M2, J, T, L> {
            $builder {
                config: self.config,
                m,
                j: self.j,
                t: self.t,
                layer: self.layer,
                sibling: self.sibling,
                $($extra: self.$extra,)*
            }
        }

        /// Sets the Job Declaration Protocol handler.
        pub fn job_declaration<J2>(self, j: J2) -> $builder<M, J2, T, L> {
            $builder {
                config: self.config,
                m: self.m,
                j,
                t: self.t,
                layer: self.layer,
                sibling: self.sibling,
                $($extra: self.$extra,)*
            }
        }

        /// Sets the Template Distribution Protocol handler.
        pub fn template_distribution<T2>(self, t: T2) -> $builder<M, J, T2, L> {
            $builder {
                config: self.config,
                m: self.m,
                j: self.j,
                t,
                layer: self.layer,
                sibling: self.sibling,
                $($extra: self.$extra,)*
            }
        }

        /// Wraps the inbound stack (every message a peer sends, on its way to the handlers)
        /// with `layer`. As with `tower::ServiceBuilder`, the first layer added is the
        /// outermost.
        pub fn layer<L2>(self, layer: L2) -> $builder<M, J, T, Stack<L2, L>> {
            $builder {
                config: self.config,
                m: self.m,
                j: self.j,
                t: self.t,
                layer: Stack::new(layer, self.layer),
                sibling: self.sibling,
                $($extra: self.$extra,)*
            }
        }
    };
}

mod client;
mod config;
mod connection;
mod error;
mod hub;
mod in_flight;
mod inbound;
mod listener;
pub mod peer_log;
pub mod protocol;
mod request;
mod server;
pub mod shutdown;
pub mod sv1;
mod upstreams;

pub use client::{ClientBuilder, ClientHandle, Sv2ClientService};
pub use config::{
    Backoff, ClientConfig, ClientTransport, Endpoint, ServerConfig, ServerTransport,
    DEFAULT_FAILBACK_INTERVAL, DEFAULT_FAILOVER_ATTEMPTS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_PARTIAL_FRAME_BUDGET,
};
pub use error::ServiceError;
pub use inbound::{HandlerFuture, HandlerService, InboundStack, ProtocolStack};
pub use listener::{Listener, StreamListener};
pub use protocol::{Protocol, Sv2};
pub use request::{Request, RequestSender, Response, ResponseFuture};
pub use server::{ServerBuilder, ServerHandle, SiblingIo, Sv2ServerService};
pub use upstreams::{ActiveUpstream, SwitchReason};

/// Marks which handler types a service handle serves, without owning them.
type HandlerTypes<M, J, T> = std::marker::PhantomData<fn() -> (M, J, T)>;
