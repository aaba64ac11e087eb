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
    /// Payout: a Bitcoin address (regtest/testnet/mainnet) or `script:<hex scriptPubKey>`.
    pub(crate) payout: String,
    /// Target share rate per channel, shares per minute (vardiff aims at it).
    pub(crate) shares_per_minute: f32,
    /// Seconds between vardiff evaluations per channel.
    pub(crate) vardiff_period_secs: u64,
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
    },
}

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
            shares_per_minute: 6.0,
            vardiff_period_secs: 60,
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

# Where block rewards go: a Bitcoin address for the template's network, or
# "script:<hex scriptPubKey>".
payout = "bcrt1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u8nhukw"

# Vardiff aims each channel at this many shares per minute.
shares_per_minute = 6.0

# Seconds between vardiff evaluations of each channel (SetTarget when the rate is off).
vardiff_period_secs = 60

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
"#
    )
}
