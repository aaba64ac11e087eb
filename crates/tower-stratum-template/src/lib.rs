//! Template Distribution (spec 7) for tower-stratum: where a mining server's templates come
//! from.
//!
//! - [`EmbeddedRegtestSource`]: a sans-IO regtest template source. It produces valid templates
//!   (`NewTemplate` + `SetNewPrevHash`) on a chain that starts at the regtest genesis block,
//!   rebuilds and validates blocks from `SubmitSolution`, moves the tip, and simulates other
//!   miners' blocks on an interval. Time is passed in ([`Now`]). Its templates can carry
//!   transactions from a synthetic, bounded [`mempool`] (off by default).
//! - [`check::validate_block`]: an independent block-validity checker built only on
//!   rust-bitcoin (merkle root, proof of work against `nBits`, BIP34 height, witness
//!   commitment, size, weight, sigops, subsidy, duplicate and conflicting spends, parents
//!   before children).
//! - [`spawn_embedded_source`]: runs the source as the sibling of a mining server
//!   (`Sv2ServerService::new_with_sibling_io`), exchanging Template Distribution messages as
//!   `SiblingMessage::Sv2(Sv2Message::TemplateDistribution(..))`.
//! - [`TemplateDistributionServer`]: the source as a Template Provider over the wire
//!   (`Sv2TemplateDistributionServerHandler`); its simulated blocks come from its handler
//!   timer (`poll_timeout` / `on_timer`), driven by the service.
//! - [`TemplateDistributionClient`]: a Template Distribution client handler that bridges any
//!   Template Provider (Bitcoin Core's Sv2 TP, SRI's, ours) to a sibling mining server.
//! - [`regtest`]: consensus constants and template building blocks; [`solver`]: a CPU solver
//!   for regtest templates, for tests.
//!
//! Byte order: Sv2 `U256` fields (`SetNewPrevHash.prev_hash`, `.target`, `merkle_path`) are in
//! Bitcoin's internal byte order, i.e. little-endian as numbers and the reverse of the hex a
//! block explorer displays. Amounts are satoshis, times Unix seconds unless a type says
//! otherwise.
//!
//! Wiring the embedded source to a mining server in one process:
//!
//! ```no_run
//! use tower_stratum_core::handler::{
//!     NullSv2JobDeclarationServerHandler, NullSv2TemplateDistributionServerHandler,
//!     Sv2MiningServerHandler,
//! };
//! use tower_stratum_service::{ServerConfig, Sv2ServerService};
//! use tower_stratum_template::{spawn_embedded_source, SourceConfig};
//!
//! struct MyMiningServer; // consumes templates in `handle_sibling_message`
//! impl Sv2MiningServerHandler for MyMiningServer {}
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (_service, handle, sibling) = Sv2ServerService::new_with_sibling_io(
//!     ServerConfig::default(),
//!     listener,
//!     MyMiningServer,
//!     NullSv2JobDeclarationServerHandler,
//!     NullSv2TemplateDistributionServerHandler,
//! );
//! let source = spawn_embedded_source(SourceConfig::default(), sibling);
//! // ... the server gets NewTemplate + SetNewPrevHash at once, sends SubmitSolution back ...
//! handle.shutdown().await; // the source task then ends by itself
//! let _ = source.await;
//! # Ok(()) }
//! ```

pub mod check;
mod client;
mod driver;
pub mod mempool;
pub mod regtest;
mod server;
pub mod solver;
mod source;

pub use client::TemplateDistributionClient;
pub use driver::{spawn_embedded_source, spawn_embedded_source_with_events, SourceEvent};
pub use regtest::ConstraintsError;
pub use server::{TemplateDistributionServer, TemplateProviderService, TemplateServerConfig};
pub use source::{
    BlockOrigin, ChainTip, ConnectedBlock, EmbeddedRegtestSource, EncodeError, Now, SolutionError,
    SourceConfig, TemplateUpdate, ERROR_STALE_TEMPLATE_ID, ERROR_TEMPLATE_ID_NOT_FOUND,
};
