//! The server's TOML configuration, with commented defaults (`--generate-config`).

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The whole configuration file. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Address the Sv2 mining server listens on.
    pub(crate) listen: String,
    /// Authority public key (SRI base58check format) that miners verify.
    pub(crate) authority_public_key: String,
    /// Authority secret key (SRI base58check format).
    pub(crate) authority_secret_key: String,
    /// Noise certificate validity, seconds.
    pub(crate) cert_validity_secs: u64,
    /// Payout: a Bitcoin address of `network` or `script:<hex scriptPubKey>`.
    pub(crate) payout: String,
    /// The network the template source mines: `regtest` (the embedded source's), `testnet`,
    /// `testnet4`, `signet` or `mainnet`. The payout address must belong to it.
    pub(crate) network: String,
    /// Accept a payout address of another network than `network` (with a warning).
    pub(crate) allow_payout_on_any_network: bool,
    /// Directory where every found block is kept (`<height>-<hash>.block` + `.json`).
    pub(crate) blocks_dir: String,
    /// Most kept blocks (oldest deleted first); 0 = unlimited. Absent: 1000 on regtest,
    /// unlimited elsewhere.
    pub(crate) keep_blocks: Option<u64>,
    /// Seconds without any template before an ERROR says miners have no work; 0 = never.
    pub(crate) no_template_error_secs: u64,
    /// Target share rate per channel, shares per minute (vardiff aims at it).
    pub(crate) shares_per_minute: f32,
    /// Seconds between vardiff evaluations per channel.
    pub(crate) vardiff_period_secs: u64,
    /// Lowest share difficulty of any channel (absent: none).
    pub(crate) min_share_difficulty: Option<f64>,
    /// Raise a channel's target to the network target when it would be harder (absent: yes,
    /// except with `--demo`).
    pub(crate) cap_share_target_at_network: Option<bool>,
    /// Seconds between status lines; 0 disables them.
    pub(crate) status_interval_secs: u64,
    /// Where templates come from.
    pub(crate) template_source: TemplateSource,
}

/// Template source selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum TemplateSource {
    /// Built-in regtest templates (offline); a new chain tip on every block found and every
    /// `interval_secs` (0 = only on blocks found).
    Embedded {
        /// Seconds between simulated chain tips.
        interval_secs: u64,
    },
    /// An Sv2 Template Provider (Bitcoin Core's sv2 TP or any Template Distribution server).
    Sv2 {
        /// `host:port` of the Template Provider.
        address: String,
        /// Its authority public key; empty = encrypted but unauthenticated.
        authority_public_key: String,
        /// Reconnect when nothing came from it for this many seconds.
        #[serde(default = "default_td_inactivity_secs")]
        inactivity_timeout_secs: u64,
    },
}

fn default_td_inactivity_secs() -> u64 {
    600
}

/// Kept blocks on regtest when `keep_blocks` is absent (a demo finds a block per share).
pub(crate) const REGTEST_KEEP_BLOCKS: u64 = 1000;

/// SRI's public test keypair. PUBLIC: anyone can impersonate a server that uses it.
pub(crate) const SRI_TEST_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
/// Secret half of SRI's public test keypair.
pub(crate) const SRI_TEST_SECRET: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:34254".into(),
            authority_public_key: SRI_TEST_PUBLIC.into(),
            authority_secret_key: SRI_TEST_SECRET.into(),
            cert_validity_secs: 3600,
            payout: "bcrt1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u8nhukw".into(),
            network: "regtest".into(),
            allow_payout_on_any_network: false,
            blocks_dir: "./blocks/".into(),
            keep_blocks: None,
            no_template_error_secs: 30,
            shares_per_minute: 6.0,
            vardiff_period_secs: 60,
            min_share_difficulty: None,
            cap_share_target_at_network: None,
            status_interval_secs: 5,
            template_source: TemplateSource::Embedded { interval_secs: 600 },
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The kept-block limit: `None` = unlimited.
    pub(crate) fn keep_limit(&self) -> Option<usize> {
        let n = match self.keep_blocks {
            Some(n) => n,
            None if self.network == "regtest" => REGTEST_KEEP_BLOCKS,
            None => 0,
        };
        (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Whether the configured key is SRI's public test key.
    pub(crate) fn uses_public_test_key(&self) -> bool {
        self.authority_secret_key == SRI_TEST_SECRET
    }
}

/// The default configuration as a commented TOML document.
pub(crate) fn commented_default() -> String {
    format!(
        r#"# solo-mining-server configuration. Every key is optional; these are the defaults.

# Address the Sv2 mining server listens on (Noise NX, spec 4).
listen = "127.0.0.1:34254"

# Authority keypair in SRI's base58check format. The defaults are SRI's PUBLIC test keys:
# anyone can impersonate a server that uses them. Make your own with
# `solo-mining-server keygen` before mining anywhere but a test network.
authority_public_key = "{SRI_TEST_PUBLIC}"
authority_secret_key = "{SRI_TEST_SECRET}"

# Noise certificate validity, in seconds.
cert_validity_secs = 3600

# Where block rewards go: a Bitcoin address of `network`, or "script:<hex scriptPubKey>".
payout = "bcrt1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u8nhukw"

# The network the template source mines: "regtest" (the embedded source is always regtest),
# "testnet", "testnet4", "signet" or "mainnet". A payout address of another network is
# refused (a mainnet bc1... address on regtest, say) unless the next key is true.
network = "regtest"
allow_payout_on_any_network = false

# Every found block is written here before anything else is done with it (fsync'd):
# <height>-<hash>.block (the raw block, for `bitcoin-cli submitblock`) and <height>-<hash>.json
# (template id, worker, every SubmitSolution attempt and the outcome). See
# `solo-mining-server blocks list` and `solo-mining-server blocks submit <file>`.
blocks_dir = "./blocks/"
# Keep at most this many blocks (oldest deleted first); 0 = unlimited. Default: the last
# {REGTEST_KEEP_BLOCKS} on regtest (a demo finds a block per share), unlimited elsewhere.
# keep_blocks = 0

# Seconds without any template before an ERROR says miners have no work (0 = never).
no_template_error_secs = 30

# Vardiff aims each channel at this many shares per minute.
shares_per_minute = 6.0

# Seconds between vardiff evaluations of each channel (SetTarget when the rate is off).
vardiff_period_secs = 60

# A channel's target is never harder than the network target of its job, so a hash that is a
# block is always a share. On regtest about every other hash is a block: a fast miner then
# submits about every other hash and blocks come as fast as the tip moves. `--demo` turns
# this off (default there: false) so its CPU miner finds a block every couple of seconds.
# cap_share_target_at_network = true
# Lowest share difficulty of any channel (1 = about 2^32 hashes per share); it also bounds
# the cap above. Default: none.
# min_share_difficulty = 0.001

# Seconds between status lines (connections, channels, hashrate, shares, blocks); 0 = off.
status_interval_secs = 5

# Template source. Embedded regtest templates (default, offline):
[template_source]
kind = "embedded"
# A simulated new chain tip every this many seconds (0 = only when we find a block).
interval_secs = 600

# Or an Sv2 Template Provider (e.g. Bitcoin Core's sv2 TP):
# [template_source]
# kind = "sv2"
# address = "127.0.0.1:8442"
# authority_public_key = ""   # empty = encrypted but NOT authenticated
# inactivity_timeout_secs = 600  # reconnect after this long with nothing from the provider
"#
    )
}
