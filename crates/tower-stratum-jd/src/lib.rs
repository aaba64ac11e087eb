//! A Job Declarator Server (Stratum V2 Job Declaration Protocol, spec 6) as a
//! [`Sv2JobDeclarationServerHandler`](tower_stratum_core::handler::Sv2JobDeclarationServerHandler):
//! [`JobDeclarationServer`], in Full-Template mode (spec 6.3.2).
//!
//! - [`JobDeclarationServer`] / [`JobDeclarationServerConfig`]: the handler (what it checks,
//!   what it answers, how its timers work) and its configuration (the pool's required coinbase
//!   outputs, token lifetime, limits; defaults documented on each field).
//! - [`JdNode`]: what the server needs from a Bitcoin node (mempool look-up by wtxid, chain
//!   tip, block submission); [`MemoryNode`] keeps all three in memory.
//!
//! Sans-IO: nothing here spawns, sleeps or reads the clock (except once at construction); the
//! service that runs the handler passes time in through `on_timer`.
//!
//! # Example
//!
//! ```
//! use futures_util::FutureExt;
//! use tower_stratum_core::handler::Sv2JobDeclarationServerHandler;
//! use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
//! use tower_stratum_core::stratum_core::bitcoin::{BlockHash, ScriptBuf};
//! use tower_stratum_jd::{ChainTip, JobDeclarationServer, JobDeclarationServerConfig, MemoryNode};
//!
//! let node = MemoryNode::new(ChainTip { hash: BlockHash::all_zeros(), height: 100 });
//! let config = JobDeclarationServerConfig::new(ScriptBuf::from_bytes(vec![0x51]));
//! let mut jds = JobDeclarationServer::new(config, node)?;
//! // Nothing issued yet, so nothing to expire.
//! assert_eq!(jds.poll_timeout(), None);
//! let actions = jds.on_timer(std::time::Instant::now()).now_or_never();
//! assert!(actions.is_some_and(|a| a.is_empty()));
//! # Ok::<(), tower_stratum_jd::ConfigError>(())
//! ```

mod coinbase;
mod config;
mod node;
mod reject;
mod server;

pub use config::{
    JobDeclarationServerConfig, DEFAULT_MISSING_TRANSACTIONS_TIMEOUT, DEFAULT_TOKEN_LIFETIME,
};
pub use node::{ChainTip, JdNode, MemoryNode, SubmitBlockError};
pub use server::{
    ConfigError, DeclaredJob, JobDeclarationServer, DECLARE_TX_DATA, MAX_DECLARED_TRANSACTIONS,
};
