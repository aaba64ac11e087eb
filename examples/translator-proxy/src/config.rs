//! The proxy's TOML configuration, with commented defaults (`--generate-config`).

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tower_stratum_translator::{
    ChannelMode, ExtranonceChange, TranslatorConfig, TranslatorServiceConfig, UpstreamConfig,
};

/// SRI's public test authority public key (the default of `solo-mining-server`). PUBLIC:
/// anyone can impersonate a server that uses it.
pub(crate) const SRI_TEST_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";

/// The proxy's default first difficulty of a miner that suggests none: 16384 (2^14), about
/// 11.7 TH/s at 10 shares per minute, suited to ASICs (a faster miner is caught up within
/// seconds; a much slower one is found by the first-share search, `first_share_search_secs`).
pub(crate) const DEFAULT_START_DIFFICULTY: f64 = 16384.0;

/// The whole configuration file. Every key has a default, so an empty file is valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) listen: String,
    pub(crate) tls_certificate: String,
    pub(crate) tls_private_key: String,
    pub(crate) mode: Mode,
    pub(crate) extranonce2_size: usize,
    pub(crate) nominal_hashrate: f32,
    pub(crate) shares_per_minute: f32,
    pub(crate) start_difficulty: f64,
    pub(crate) first_share_search_secs: u64,
    pub(crate) min_difficulty: f64,
    pub(crate) max_difficulty: f64,
    pub(crate) vardiff: bool,
    pub(crate) power_of_two_difficulty: bool,
    pub(crate) require_version_rolling: bool,
    pub(crate) worker_hashrate_tracking: bool,
    pub(crate) submit_timeout_secs: u64,
    pub(crate) max_pending_shares: usize,
    pub(crate) extranonce_change: Change,
    pub(crate) resume_grace_secs: u64,
    pub(crate) keepalive_secs: u64,
    pub(crate) setup_timeout_secs: u64,
    pub(crate) inactivity_timeout_secs: u64,
    pub(crate) status_interval_secs: u64,
    pub(crate) failover_attempts: u32,
    pub(crate) failback_interval_secs: u64,
    pub(crate) upstream_outbound_queue: usize,
    pub(crate) upstreams: Vec<Upstream>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    Aggregated,
    PerMiner,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Change {
    Reconnect,
    Close,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) authority_public_key: String,
    #[serde(default = "default_identity")]
    pub(crate) user_identity: String,
}

fn default_identity() -> String {
    "translator-proxy".into()
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:34254".into(),
            authority_public_key: SRI_TEST_PUBLIC.into(),
            user_identity: default_identity(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let t = TranslatorConfig::default();
        Self {
            listen: "127.0.0.1:34255".into(),
            tls_certificate: String::new(),
            tls_private_key: String::new(),
            mode: Mode::Aggregated,
            extranonce2_size: t.extranonce2_size,
            nominal_hashrate: t.nominal_hashrate,
            shares_per_minute: t.shares_per_minute,
            start_difficulty: DEFAULT_START_DIFFICULTY,
            first_share_search_secs: 3,
            min_difficulty: t.min_difficulty,
            max_difficulty: t.max_difficulty,
            vardiff: t.vardiff,
            power_of_two_difficulty: t.power_of_two_difficulty,
            require_version_rolling: t.require_version_rolling,
            worker_hashrate_tracking: t.worker_hashrate_tracking,
            submit_timeout_secs: t.submit_timeout.as_secs(),
            max_pending_shares: t.max_pending_shares,
            extranonce_change: Change::Reconnect,
            resume_grace_secs: t.resume_grace.as_secs(),
            keepalive_secs: t.keepalive_interval.map(|d| d.as_secs()).unwrap_or(0),
            setup_timeout_secs: 30,
            inactivity_timeout_secs: 900,
            status_interval_secs: 5,
            failover_attempts: 3,
            failback_interval_secs: 60,
            upstream_outbound_queue: tower_stratum_translator::TranslatorServiceConfig::default()
                .client
                .outbound_queue,
            upstreams: vec![Upstream::default()],
        }
    }
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

impl Config {
    /// Reads a TOML file.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The TLS server configuration, if both PEM files are set.
    pub(crate) fn tls(
        &self,
    ) -> Result<Option<std::sync::Arc<tower_stratum::sv1_service::tls::rustls::ServerConfig>>, String>
    {
        match (
            self.tls_certificate.is_empty(),
            self.tls_private_key.is_empty(),
        ) {
            (true, true) => Ok(None),
            (false, false) => {
                let cert = std::fs::read(&self.tls_certificate)
                    .map_err(|e| format!("tls_certificate {}: {e}", self.tls_certificate))?;
                let key = std::fs::read(&self.tls_private_key)
                    .map_err(|e| format!("tls_private_key {}: {e}", self.tls_private_key))?;
                tower_stratum::sv1_service::tls::server_config(&cert, &key)
                    .map(Some)
                    .map_err(|e| format!("TLS: {e}"))
            }
            _ => Err("tls_certificate and tls_private_key go together".into()),
        }
    }

    /// The library configuration.
    pub(crate) fn to_service_config(&self) -> Result<TranslatorServiceConfig, String> {
        let translator = TranslatorConfig {
            mode: match self.mode {
                Mode::Aggregated => ChannelMode::Aggregated,
                Mode::PerMiner => ChannelMode::PerMiner,
            },
            extranonce2_size: self.extranonce2_size,
            nominal_hashrate: self.nominal_hashrate,
            shares_per_minute: self.shares_per_minute,
            start_difficulty: (self.start_difficulty != 0.0).then_some(self.start_difficulty),
            first_share_search: secs(self.first_share_search_secs),
            min_difficulty: self.min_difficulty,
            max_difficulty: self.max_difficulty,
            vardiff: self.vardiff,
            power_of_two_difficulty: self.power_of_two_difficulty,
            require_version_rolling: self.require_version_rolling,
            worker_hashrate_tracking: self.worker_hashrate_tracking,
            submit_timeout: Duration::from_secs(self.submit_timeout_secs.max(1)),
            max_pending_shares: self.max_pending_shares,
            extranonce_change: match self.extranonce_change {
                Change::Reconnect => ExtranonceChange::Reconnect,
                Change::Close => ExtranonceChange::Close,
            },
            resume_grace: Duration::from_secs(self.resume_grace_secs),
            keepalive_interval: secs(self.keepalive_secs),
            ..TranslatorConfig::default()
        };
        translator.validate().map_err(|e| e.to_string())?;
        let mut upstreams = Vec::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let authority_key = if u.authority_public_key.is_empty() {
                None
            } else {
                Some(
                    u.authority_public_key
                        .parse()
                        .map_err(|e| format!("upstreams[{i}].authority_public_key: {e}"))?,
                )
            };
            upstreams.push(UpstreamConfig {
                address: u.address.clone(),
                authority_key,
                user_identity: u.user_identity.clone(),
            });
        }
        if upstreams.is_empty() {
            return Err("at least one [[upstreams]] entry is required".into());
        }
        if self.upstream_outbound_queue == 0 {
            return Err("upstream_outbound_queue must be at least 1".into());
        }
        let mut cfg = TranslatorServiceConfig {
            translator,
            upstreams,
            failover_attempts: self.failover_attempts.max(1),
            failback_interval: secs(self.failback_interval_secs),
            ..TranslatorServiceConfig::default()
        };
        cfg.client.outbound_queue = self.upstream_outbound_queue;
        cfg.sv1.session.setup_timeout = secs(self.setup_timeout_secs);
        cfg.sv1.session.inactivity_timeout = secs(self.inactivity_timeout_secs);
        Ok(cfg)
    }
}

/// The default configuration as a commented TOML document.
pub(crate) fn commented_default() -> String {
    let d = Config::default();
    format!(
        r#"# translator-proxy configuration. Every key is optional; these are the defaults.

# Where Sv1 miners connect (plain TCP, stratum+tcp://).
listen = "{listen}"

# TLS for miners (stratum+ssl://): PEM files of the certificate chain and its private key.
# Both empty = plain TCP.
tls_certificate = ""
tls_private_key = ""

# "aggregated": one upstream extended channel for all miners (each gets a distinct
# extranonce1); "per-miner": one upstream extended channel per miner.
mode = "aggregated"

# extranonce2 size given to miners, bytes (1..=8).
extranonce2_size = {e2}

# Hashrate announced for an upstream channel before miners are measured, H/s.
nominal_hashrate = {h:.1}

# Vardiff aims each miner at this many shares per minute.
shares_per_minute = {spm:.1}

# First share difficulty of a miner that sends no mining.suggest_difficulty (a suggestion
# is used instead, and is then the miner's lowest difficulty). 1 = 2^32 hashes per share.
# The default suits ASICs (about 11.7 TH/s at 10 shares/min); a miner much faster than its
# difficulty is caught up within seconds (its hashrate estimated from its first shares).
# 0 = the difficulty of nominal_hashrate.
start_difficulty = {sd:.1}

# Until a miner's first share, divide its difficulty by 16 every this many seconds, so a
# miner far slower than start_difficulty (a CPU miner) finds its range within a minute
# (0 = off: it then waits for vardiff, /3 per minute at best).
first_share_search_secs = {fss}

# Share difficulty bounds for miners (a miner never gets less than its upstream channel's
# difficulty, so every share accepted locally is acceptable upstream).
min_difficulty = {mind:e}
max_difficulty = {maxd:e}
vardiff = true
# Round difficulties >= 1 down to powers of two (for firmware that mishandles fractions).
power_of_two_difficulty = false

# Require the upstream to allow version rolling on every job (SetupConnection flag
# REQUIRES_VERSION_ROLLING). With false, miners get version rolling only if the jobs allow it.
require_version_rolling = true

# Ask the upstream for Sv2 extension 0x0002 (worker-specific hashrate tracking); if it agrees,
# every share carries the miner's worker name (the part of its mining.authorize username
# after the first ".", else the whole name; up to 32 bytes).
worker_hashrate_tracking = true

# A share without an upstream verdict within this many seconds is answered with an error.
# Miners hear "true" only for shares the upstream accepted.
submit_timeout_secs = {st}

# Shares forwarded upstream and awaiting a verdict, over all miners, at most; a share beyond
# it is answered at once with error 20 "Upstream busy" (never queued without bound).
max_pending_shares = {mp}

# Miners that did not subscribe to extranonce changes, when their extranonce1 must change
# (upstream reconnect or failover): "reconnect" (client.reconnect, then close) or "close".
extranonce_change = "reconnect"

# A miner reconnecting with its previous session id within this many seconds keeps its
# extranonce1 and difficulty and gets the last job at once (0 = off). Per-miner mode keeps
# the departed miner's upstream channel open that long.
resume_grace_secs = {rg}

# Re-send the current job under a new id to miners that got no job for this long (0 = off).
keepalive_secs = {ka}

# Miners must subscribe and authorize within this many seconds, and send something at
# least this often (0 = off).
setup_timeout_secs = {setup}
inactivity_timeout_secs = {inact}

# Seconds between status lines (0 = off).
status_interval_secs = {status}

# Upstream failover: after this many failed connection attempts move to the next upstream;
# while on a backup, check the primary every failback_interval_secs (0 = never fail back).
failover_attempts = {fa}
failback_interval_secs = {fb}

# Messages queued toward the upstream, at most (shares forwarded and not yet written). The
# translator raises it to at least max_pending_shares + 256, so shares never overflow it.
upstream_outbound_queue = {oq}

# Upstreams in order of preference. The default is solo-mining-server's default address and
# SRI's PUBLIC test authority key; use your pool's key.
[[upstreams]]
address = "127.0.0.1:34254"
authority_public_key = "{SRI_TEST_PUBLIC}"   # empty = encrypted but NOT authenticated
user_identity = "translator-proxy"

# [[upstreams]]
# address = "backup.example:34254"
# authority_public_key = "..."
# user_identity = "my-account"
"#,
        listen = d.listen,
        e2 = d.extranonce2_size,
        h = d.nominal_hashrate,
        spm = d.shares_per_minute,
        sd = d.start_difficulty,
        fss = d.first_share_search_secs,
        mind = d.min_difficulty,
        maxd = d.max_difficulty,
        st = d.submit_timeout_secs,
        mp = d.max_pending_shares,
        rg = d.resume_grace_secs,
        ka = d.keepalive_secs,
        setup = d.setup_timeout_secs,
        inact = d.inactivity_timeout_secs,
        status = d.status_interval_secs,
        fa = d.failover_attempts,
        fb = d.failback_interval_secs,
        oq = d.upstream_outbound_queue,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn generated_config_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(&commented_default()).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(format!("{empty:?}"), format!("{:?}", Config::default()));
        let svc = parsed.to_service_config().unwrap();
        assert_eq!(svc.upstreams.len(), 1);
        assert_eq!(svc.upstreams[0].address, "127.0.0.1:34254");
        assert!(svc.upstreams[0].authority_key.is_some());
        assert_eq!(svc.translator.extranonce2_size, 4);
        assert_eq!(svc.translator.start_difficulty, Some(16384.0), "ASIC start");
        let c: Config = toml::from_str("start_difficulty = 0.0").unwrap();
        assert_eq!(
            c.to_service_config().unwrap().translator.start_difficulty,
            None
        );
        let c: Config = toml::from_str("start_difficulty = -1.0").unwrap();
        assert!(c
            .to_service_config()
            .unwrap_err()
            .contains("start_difficulty"));
        assert_eq!(svc.client.outbound_queue, 256);
        let c: Config = toml::from_str("upstream_outbound_queue = 4096").unwrap();
        assert_eq!(c.to_service_config().unwrap().client.outbound_queue, 4096);
        let c: Config = toml::from_str("upstream_outbound_queue = 0").unwrap();
        assert!(c
            .to_service_config()
            .unwrap_err()
            .contains("outbound_queue"));
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        let c: Config = toml::from_str("extranonce2_size = 12").unwrap();
        assert!(c
            .to_service_config()
            .unwrap_err()
            .contains("extranonce2_size"));
        let c: Config =
            toml::from_str("[[upstreams]]\naddress = \"x:1\"\nauthority_public_key = \"nope\"")
                .unwrap();
        assert!(c
            .to_service_config()
            .unwrap_err()
            .contains("authority_public_key"));
        assert!(toml::from_str::<Config>("mode = \"sideways\"").is_err());
        assert!(toml::from_str::<Config>("unknown_key = 1").is_err());
    }
}
