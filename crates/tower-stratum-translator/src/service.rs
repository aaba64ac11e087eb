//! Wiring: the Sv1 server, the upstream router (one `Sv2ClientService` at a time, failover
//! along the ordered upstream list, fail-back to the primary), the tick task.

use crate::config::{ConfigError, TranslatorConfig, UpstreamConfig};
use crate::core::{TranslatorCore, UpstreamEvent};
use crate::handlers::{TranslatorSv1Handler, TranslatorSv2Handler};
use crate::stats::TranslatorStats;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_stratum_core::{SiblingMessage, Subprotocol};
use tower_stratum_service::sv1::{Sv1ServerConfig, Sv1ServerHandle, Sv1ServerService};
use tower_stratum_service::{
    Backoff, ClientConfig, ClientTransport, Endpoint, Listener, SiblingIo, Sv2ClientService,
};
use tracing::{info, warn, Instrument};

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
    router: JoinHandle<()>,
    cancel: CancellationToken,
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
        self.cancel.cancel();
        self.sv1.shutdown().await;
        let _ = self.router.await;
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
    // Every queue on the share path (Sv1 hub -> router -> upstream client -> its connection)
    // holds more than the shares allowed in flight, so a burst is answered "busy" by the
    // core instead of overflowing a queue (which drops the upstream as a slow peer).
    let share_path = config.translator.max_pending_shares.saturating_add(256);
    config.sv1.sibling_queue = config.sv1.sibling_queue.max(share_path);
    config.client.outbound_queue = config.client.outbound_queue.max(share_path);
    let now = tokio::time::Instant::now().into_std();
    let (stats_tx, stats_rx) = watch::channel(TranslatorStats::default());
    let handler = TranslatorSv1Handler::new(
        TranslatorCore::new(config.translator.clone(), now),
        stats_tx,
        config.tick_interval,
    );
    let (sv1_end, upstream_end) = SiblingIo::pair(config.sv1.sibling_queue);
    let (service, sv1) = Sv1ServerService::builder()
        .config(config.sv1.clone())
        .handler(handler)
        .sibling_io(sv1_end)
        .serve(listener);
    let cancel = CancellationToken::new();
    let router = tokio::spawn(
        route(config.clone(), upstream_end, cancel.clone())
            .instrument(tracing::info_span!("upstream_router")),
    );
    Ok(TranslatorHandle {
        service,
        sv1,
        router,
        cancel,
        stats: stats_rx,
    })
}

enum Outcome {
    Stop,
    Failed,
    Failback,
}

/// Relays between the Sv1 side and the client of the current upstream; moves along the
/// upstream list when a client gives up, back to the primary when it answers again.
async fn route(cfg: TranslatorServiceConfig, sv1_side: SiblingIo, cancel: CancellationToken) {
    let (to_sv1, mut from_sv1) = sv1_side.into_channels();
    let n = cfg.upstreams.len();
    let mut i = 0usize;
    loop {
        let Some(up) = cfg.upstreams.get(i) else {
            return;
        };
        let mut client_cfg = cfg.client.clone();
        client_cfg.endpoints = Default::default();
        client_cfg = client_cfg.endpoint(
            Subprotocol::Mining,
            Endpoint {
                address: up.address.clone(),
                transport: ClientTransport::Noise {
                    authority: up.authority_key,
                },
            },
        );
        if n > 1 {
            let b = client_cfg.reconnect.unwrap_or_default();
            client_cfg.reconnect = Some(Backoff {
                max_attempts: Some(cfg.failover_attempts.max(1)),
                ..b
            });
        }
        if up.authority_key.is_none() {
            warn!(address = %up.address, "upstream NOT authenticated (no authority key)");
        }
        match &up.authority_key {
            Some(key) => {
                info!(index = i, address = %up.address, authority_key = %key, user_identity = %up.user_identity, "using upstream")
            }
            None => {
                info!(index = i, address = %up.address, user_identity = %up.user_identity, "using upstream")
            }
        }
        let (mine, theirs) = SiblingIo::pair(cfg.sv1.sibling_queue);
        let (c_tx, mut c_rx) = mine.into_channels();
        let (_svc, client) = Sv2ClientService::builder()
            .config(client_cfg)
            .mining(
                TranslatorSv2Handler::new(
                    cfg.translator.require_version_rolling,
                    up.user_identity.clone(),
                    i,
                )
                .request_worker_hashrate_tracking(cfg.translator.worker_hashrate_tracking),
            )
            .sibling_io(theirs)
            .start();
        let mut probe = tokio::time::interval(
            cfg.failback_interval
                .unwrap_or(Duration::from_secs(3600))
                .max(Duration::from_millis(100)),
        );
        probe.reset();
        let probing = i != 0 && cfg.failback_interval.is_some();
        let mut failures = client.watch_failures();
        let primary = cfg.upstreams.first().map(|u| u.address.clone());
        let outcome = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Outcome::Stop,
                m = from_sv1.recv() => match m {
                    Some(m) => { let _ = c_tx.send(m).await; }
                    None => break Outcome::Stop,
                },
                m = c_rx.recv() => match m {
                    Some(m) => if to_sv1.send(m).await.is_err() { break Outcome::Stop },
                    None => break Outcome::Failed,
                },
                Ok(()) = failures.changed() => {
                    let reason = failures.borrow_and_update().as_ref().map(ToString::to_string);
                    if let Some(reason) = reason {
                        let ev = SiblingMessage::custom(UpstreamEvent::Failed { reason });
                        if to_sv1.send(ev).await.is_err() { break Outcome::Stop }
                    }
                }
                _ = probe.tick(), if probing => {
                    if let Some(p) = &primary {
                        let ok = tokio::time::timeout(
                            Duration::from_secs(2),
                            tokio::net::TcpStream::connect(p.as_str()),
                        ).await.is_ok_and(|r| r.is_ok());
                        if ok {
                            info!(address = %p, "primary upstream answers: failing back");
                            break Outcome::Failback;
                        }
                    }
                }
            }
        };
        drop(c_tx);
        client.shutdown().await;
        // Forward what the client said while stopping (its `Disconnected`).
        while let Ok(m) = c_rx.try_recv() {
            let _ = to_sv1.send(m).await;
        }
        match outcome {
            Outcome::Stop => return,
            Outcome::Failed => {
                warn!(index = i, "upstream failed; trying the next one");
                i = (i + 1) % n;
                if n == 1 {
                    // Reconnection disabled on a single upstream: wait before retrying.
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            Outcome::Failback => i = 0,
        }
    }
}
