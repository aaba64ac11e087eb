//! Wiring: the Sv1 server and one Sv2 client (the library's ordered upstream list: fail-over
//! and fail-back), linked by one sibling link. No task of its own.

use crate::config::{ConfigError, TranslatorConfig, UpstreamConfig};
use crate::core::TranslatorCore;
use crate::handlers::{TranslatorSv1Handler, TranslatorSv2Handler};
use crate::stats::TranslatorStats;
use std::time::Duration;
use tokio::sync::watch;
use tower_stratum_core::Subprotocol;
use tower_stratum_service::sv1::{Sv1ServerConfig, Sv1ServerHandle, Sv1ServerService};
use tower_stratum_service::{
    ClientConfig, ClientHandle, ClientTransport, Endpoint, Listener, SiblingIo, Sv2ClientService,
};
use tracing::{info, warn};

/// Everything a running translator needs.
#[derive(Debug, Clone)]
pub struct TranslatorServiceConfig {
    /// The translation policy.
    pub translator: TranslatorConfig,
    /// Upstreams in order of preference (at least one). The first is the primary.
    pub upstreams: Vec<UpstreamConfig>,
    /// The Sv1 server (deadlines, line length, queues). Default [`Sv1ServerConfig::default`].
    /// Its `sibling_queue` is raised to at least `translator.max_pending_shares + 256`.
    pub sv1: Sv1ServerConfig,
    /// The Sv2 client (timeouts, reconnect backoff); its endpoints are ignored (taken from
    /// `upstreams`). Default [`ClientConfig::default`]. Its `outbound_queue` is raised to at
    /// least `translator.max_pending_shares + 256`.
    pub client: ClientConfig,
    /// With several upstreams: move to the next one after this many consecutive failed
    /// connection attempts. Default 3. (A single upstream is retried forever.)
    pub failover_attempts: u32,
    /// While on a backup upstream, check the primary this often (a TCP connect); when it
    /// answers, switch back. `None` disables fail-back. Default 60 s.
    pub failback_interval: Option<Duration>,
    /// Period of the translator's handler timer (verdict timeouts, vardiff, stats), at least
    /// 10 ms. Default 1 s.
    pub tick_interval: Duration,
}

impl Default for TranslatorServiceConfig {
    fn default() -> Self {
        Self {
            translator: TranslatorConfig::default(),
            upstreams: Vec::new(),
            sv1: Sv1ServerConfig::default(),
            client: ClientConfig::default(),
            failover_attempts: 3,
            failback_interval: Some(Duration::from_secs(60)),
            tick_interval: Duration::from_secs(1),
        }
    }
}

/// A running translator. Dropping it does NOT stop it; call [`TranslatorHandle::shutdown`].
#[derive(Debug)]
#[must_use = "the translator runs until `shutdown` is called"]
pub struct TranslatorHandle {
    service: Sv1ServerService<TranslatorSv1Handler>,
    sv1: Sv1ServerHandle,
    client: ClientHandle,
    stats: watch::Receiver<TranslatorStats>,
}

impl TranslatorHandle {
    /// The latest counters (updated every tick).
    pub fn stats(&self) -> TranslatorStats {
        self.stats.borrow().clone()
    }

    /// A receiver notified at every stats update.
    pub fn watch_stats(&self) -> watch::Receiver<TranslatorStats> {
        self.stats.clone()
    }

    /// The Sv1 server's request interface (list miners, push, disconnect).
    pub fn service(&self) -> Sv1ServerService<TranslatorSv1Handler> {
        self.service.clone()
    }

    /// Graceful shutdown: the Sv1 server closes every miner, then the upstream connection
    /// closes. Resolves when every task is done.
    pub async fn shutdown(self) {
        self.sv1.shutdown().await;
        self.client.shutdown().await;
    }
}

/// Starts a translator on the current tokio runtime: an Sv1 server on `listener` linked by
/// sibling IO to an Sv2 Mining client (Noise, verified against each upstream's authority
/// key), plus the tick task.
///
/// # Errors
/// [`ConfigError`] when the configuration is unusable.
pub fn spawn<L: Listener>(
    mut config: TranslatorServiceConfig,
    listener: L,
) -> Result<TranslatorHandle, ConfigError> {
    config.translator.validate()?;
    if config.upstreams.is_empty() {
        return Err(ConfigError::NoUpstream);
    }
    // Every queue on the share path (Sv1 hub -> upstream client hub -> its connection)
    // holds more than the shares allowed in flight, so a burst is answered "busy" by the
    // core instead of overflowing a queue (which drops the upstream as a slow peer).
    let share_path = config.translator.max_pending_shares.saturating_add(256);
    config.sv1.sibling_queue = config.sv1.sibling_queue.max(share_path);
    config.client.outbound_queue = config.client.outbound_queue.max(share_path);
    for (index, up) in config.upstreams.iter().enumerate() {
        match &up.authority_key {
            Some(key) => {
                info!(index, address = %up.address, authority_key = %key, user_identity = %up.user_identity, "upstream")
            }
            None => {
                warn!(index, address = %up.address, user_identity = %up.user_identity, "upstream NOT authenticated (no authority key)")
            }
        }
    }
    let endpoints = config
        .upstreams
        .iter()
        .map(|u| Endpoint {
            address: u.address.clone(),
            transport: ClientTransport::Noise {
                authority: u.authority_key,
            },
        })
        .collect();
    let mut client_cfg = config
        .client
        .clone()
        .upstreams(Subprotocol::Mining, endpoints);
    client_cfg.failover_attempts = config.failover_attempts;
    client_cfg.failback_interval = config.failback_interval;
    // One typed link between the two sides: Sv2 messages both ways, the upstream
    // connection's events from the Sv2 side.
    let (sv1_end, upstream_end) = SiblingIo::pair(config.sv1.sibling_queue);
    let builder = Sv2ClientService::builder()
        .config(client_cfg)
        .sibling_io(upstream_end);
    let active = builder.watch_upstream(Subprotocol::Mining);
    let (_upstream_service, client) = builder
        .mining(
            TranslatorSv2Handler::new()
                .require_version_rolling(config.translator.require_version_rolling)
                .request_worker_hashrate_tracking(config.translator.worker_hashrate_tracking)
                .watching_upstream(active),
        )
        .start();
    let now = tokio::time::Instant::now().into_std();
    let (stats_tx, stats_rx) = watch::channel(TranslatorStats::default());
    let handler = TranslatorSv1Handler::new(
        TranslatorCore::new(config.translator.clone(), now),
        stats_tx,
        config.tick_interval,
    )
    .with_user_identities(
        config
            .upstreams
            .iter()
            .map(|u| u.user_identity.clone())
            .collect(),
    )
    .watching_failures(client.watch_failures());
    let (service, sv1) = Sv1ServerService::builder()
        .config(config.sv1.clone())
        .handler(handler)
        .sibling_io(sv1_end)
        .serve(listener);
    Ok(TranslatorHandle {
        service,
        sv1,
        client,
        stats: stats_rx,
    })
}
