//! # cpu-miner
//!
//! A Stratum V2 CPU miner built on tower-stratum's `Sv2ClientService`: it opens a standard or
//! an extended channel (spec 5.2) on the upstream's Mining Protocol endpoint, mines the jobs it
//! receives on OS threads and submits the shares it finds. See `cpu-miner --help` for the
//! command line and `docs/PERFORMANCE.md` ("CPU miner") for its hashrate.
//!
//! ```text
//!               ┌────────────── hub task (tower-stratum) ──────────────┐
//!  upstream ──► │ inbound stack: [DumpLayer] → MinerHandler(MinerState) │ ──watch<Work>──► hashing
//!               └──────────────────────────────────────────────────────┘                 threads
//!  upstream ◄── Sv2ClientService ◄── Request::Broadcast ◄── submitter task ◄──mpsc<FoundShare>─┘
//! ```
//!
//! - [`state`]: the Mining Protocol state (channel, jobs, chain tip, target), sans-IO.
//! - [`handler`]: the `Sv2MiningClientHandler` shell that publishes [`work::Work`].
//! - [`work`]: header, coinbase and merkle-root construction; the search-space walk (BIP320
//!   version rolling, miner-owned extranonce, ntime).
//! - [`sha256d`]: midstate-based sha256d nonce scanning, SHA-NI multi-lane or portable.
//! - [`miner`]: the hashing threads; [`submit`]: the share submitter; [`dump`]: the
//!   `--dump-protocol` layer; [`stats`]: counters.
//!
//! ## `unsafe`
//!
//! The workspace forbids `unsafe`. This crate denies it instead and allows it at exactly one
//! place, [`sha256d::Engine::scan`], to call the SHA-NI kernel (a `#[target_feature]`
//! function, which Rust only lets safe code call from code compiled with the same features)
//! after run-time detection of those features. The kernel itself is safe code. Without it the
//! miner would be limited to one SHA-256 compression stream at a time (`--engine portable`):
//! 1.8x fewer hashes per second on the machine measured in `docs/PERFORMANCE.md`.

pub mod dump;
pub mod handler;
pub mod miner;
pub mod sha256d;
pub mod state;
pub mod stats;
pub mod submit;
pub mod work;
