//! # tower-stratum
//!
//! Stratum V2 (Sv2) mining software as [tower](https://docs.rs/tower) services. Depend on this
//! crate alone; it re-exports the layers below.
//!
//! - [`Sv2ServerService`] / [`Sv2ClientService`]: tokio services that own connections (Noise or
//!   plaintext), run SetupConnection, and dispatch every message to your handlers; both are
//!   `tower::Service<`[`Request`]`>` for application commands.
//! - Handler traits, one per subprotocol per side ([`handler`]): implement the methods you
//!   support; the defaults give the spec's rejection. `Null…` handlers refuse a subprotocol.
//! - [`session`]: the sans-IO per-connection state machine (spec 3.6).
//! - [`mining`]: `MiningServer`, a ready Mining Protocol server handler (channels, jobs from
//!   templates, share validation, vardiff, blocks).
//! - [`template`]: template sources (embedded regtest, Template Distribution client/server).
//! - [`sv1`]: the Stratum V1 codec and share math; [`sv1_service`]: Sv1 server and client
//!   services; [`translator`]: the Sv1 -> Sv2 translator.
//! - [`codec`]: `tokio_util` codecs for plaintext and Noise NX frames, authority keys.
//!
//! Messages are SRI's owned types from `stratum-core` 0.6.0 (re-exported as
//! [`stratum_core`]).
//!
//! ```no_run
//! use tower_stratum::handler::Sv2MiningServerHandler;
//! use tower_stratum::{Actions, ConnectionContext, ServerConfig, Sv2ServerService};
//! use tower_stratum::stratum_core::mining_sv2::SubmitSharesStandardOwned;
//!
//! struct CountShares(u64);
//! impl Sv2MiningServerHandler for CountShares {
//!     async fn handle_submit_shares_standard(
//!         &mut self,
//!         _ctx: ConnectionContext,
//!         _share: SubmitSharesStandardOwned,
//!     ) -> Actions {
//!         self.0 += 1;
//!         Actions::none()
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:34254").await?;
//! let (_service, handle) = Sv2ServerService::builder()
//!     .config(ServerConfig::default())
//!     .mining(CountShares(0))
//!     .serve(listener);
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub use tower_stratum_core::{
    frame, handler, message, session, stratum_core, Action, Actions, CloseReason,
    ConnectionContext, ConnectionEvent, ConnectionId, ConnectionInfo, ExtensionMessage, Frame,
    InboundMessage, PerSubprotocol, Role, SetupSupport, SiblingMessage, Subprotocol, Sv2Message,
};
pub use tower_stratum_service::*;

/// A ready Mining Protocol server handler on SRI's `channels_sv2` (`tower-stratum-mining`).
pub mod mining {
    pub use tower_stratum_mining::*;
}

/// Template sources: embedded regtest source (with its synthetic mempool), Template
/// Distribution server and client, block checks (`tower-stratum-template`).
pub mod template {
    pub use tower_stratum_template::*;
}

/// The Job Declaration server handler: tokens, `DeclareMiningJob` checks against a `JdNode`,
/// `PushSolution` (`tower-stratum-jd`).
pub mod jd {
    pub use tower_stratum_jd::*;
}

/// Stratum V1: lenient JSON-RPC line codec, typed messages, Sv1 share math
/// (`tower-stratum-sv1`).
pub mod sv1 {
    pub use tower_stratum_sv1::*;
}

/// Sv1 services on the one connection runtime: `Sv1ServerService`, `Sv1ClientService`, the
/// handler trait and session (`tower_stratum_service::sv1`, with `tower_stratum_sv1`'s
/// sans-IO server side).
pub mod sv1_service {
    pub use tower_stratum_service::sv1::*;
}

/// The Sv1 -> Sv2 translator service (`tower-stratum-translator`).
pub mod translator {
    pub use tower_stratum_translator::*;
}

/// Framing, Noise and authority keys (`tower-stratum-codec`).
pub mod codec {
    pub use tower_stratum_codec::*;
}
