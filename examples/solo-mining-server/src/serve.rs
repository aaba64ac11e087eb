//! Wires the server: Noise listener + `MiningServer` handler, sibling-linked to the template
//! source (embedded regtest or an Sv2 Template Provider), a 1 s tick for vardiff and stats,
//! a status line, and Ctrl-C for a graceful shutdown.

use crate::config::{Config, TemplateSource};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum::codec::{AuthorityKeypair, AuthorityPublicKey};
use tower_stratum::handler::{
    NullSv2JobDeclarationClientHandler, NullSv2JobDeclarationServerHandler,
    NullSv2MiningClientHandler, NullSv2TemplateDistributionServerHandler,
};
use tower_stratum::mining::share_math::Hashrate;
use tower_stratum::mining::{
    MiningEvent, MiningServer, MiningServerConfig, MiningStats, Tick, WorkerStats,
};
use tower_stratum::stratum_core::bitcoin::{Address, ScriptBuf};
use tower_stratum::template::{spawn_embedded_source, SourceConfig, TemplateDistributionClient};
use tower_stratum::{
    ClientConfig, ClientTransport, Endpoint, Request, ServerConfig, ServerTransport,
    SiblingMessage, Subprotocol, Sv2ClientService, Sv2ServerService,
};
use tracing::{info, warn};

/// Parses `payout`: a Bitcoin address (any network) or `script:<hex scriptPubKey>`.
pub(crate) fn payout_script(payout: &str) -> Result<ScriptBuf, String> {
    if let Some(hex) = payout.strip_prefix("script:") {
        return ScriptBuf::from_hex(hex).map_err(|e| format!("payout script hex: {e}"));
    }
    let addr = Address::from_str(payout).map_err(|e| format!("payout address {payout:?}: {e}"))?;
    Ok(addr.assume_checked().script_pubkey())
}

fn keypair(cfg: &Config) -> Result<AuthorityKeypair, String> {
    let public = cfg
        .authority_public_key
        .parse()
        .map_err(|e| format!("authority_public_key: {e}"))?;
    let secret = cfg
        .authority_secret_key
        .parse()
        .map_err(|e| format!("authority_secret_key: {e}"))?;
    AuthorityKeypair::from_parts(public, secret).map_err(|e| format!("authority keypair: {e}"))
}

/// Runs until Ctrl-C (or, with `demo`, until the demo miner stops).
pub(crate) async fn run(cfg: Config, demo: bool) -> Result<(), String> {
    let keys = keypair(&cfg)?;
    if cfg.uses_public_test_key() {
        warn!(
            "USING SRI'S PUBLIC TEST AUTHORITY KEY: anyone can impersonate this server. \
             Run `solo-mining-server keygen` and put your own keys in the config"
        );
    }
    let mining_cfg = MiningServerConfig {
        coinbase_output_script: payout_script(&cfg.payout)?,
        shares_per_minute: cfg.shares_per_minute,
        vardiff_period: Duration::from_secs(cfg.vardiff_period_secs.max(1)),
        ..MiningServerConfig::default()
    };
    let (events_tx, mut events) = mpsc::channel::<MiningEvent>(1024);
    let mining = MiningServer::new(mining_cfg)
        .map_err(|e| format!("mining server config: {e}"))?
        .with_event_sink(move |e| {
            // Bounded: if the status printer lags, stats events are dropped, never queued.
            let _ = events_tx.try_send(e);
        });
    let constraints = mining.coinbase_output_constraints();

    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", cfg.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let server_cfg = ServerConfig::with_transport(ServerTransport::Noise {
        keypair: keys.clone(),
        cert_validity: Duration::from_secs(cfg.cert_validity_secs),
    });
    let (mut service, handle, sibling) = Sv2ServerService::new_with_sibling_io(
        server_cfg,
        listener,
        mining,
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    );
    info!(listen = %local, authority_public_key = %keys.public(), "Sv2 mining server listening");

    // The template source, linked to the mining server as its sibling.
    let mut td_client = None;
    let source_task = match &cfg.template_source {
        TemplateSource::Embedded { interval_secs } => {
            info!(interval_secs, "template source: embedded regtest");
            Some(spawn_embedded_source(
                SourceConfig {
                    tip_interval: Duration::from_secs(*interval_secs),
                    // Keeps the median time past an hour back: see `history_blocks`.
                    history_blocks: 11,
                    ..SourceConfig::default()
                },
                sibling,
            ))
        }
        TemplateSource::Sv2 {
            address,
            authority_public_key,
        } => {
            let authority = if authority_public_key.is_empty() {
                warn!("template provider is NOT authenticated (no authority_public_key)");
                None
            } else {
                Some(
                    AuthorityPublicKey::from_str(authority_public_key)
                        .map_err(|e| format!("template provider key: {e}"))?,
                )
            };
            info!(%address, "template source: Sv2 Template Provider");
            let client_cfg = ClientConfig::default().endpoint(
                Subprotocol::TemplateDistribution,
                Endpoint {
                    address: address.clone(),
                    transport: ClientTransport::Noise { authority },
                },
            );
            let (_svc, h) = Sv2ClientService::new_from_sibling_io(
                client_cfg,
                NullSv2MiningClientHandler,
                NullSv2JobDeclarationClientHandler,
                TemplateDistributionClient::new(constraints),
                sibling,
            );
            td_client = Some(h);
            None
        }
    };

    let demo_task = if demo {
        Some(crate::demo::spawn(local, keys.public()))
    } else {
        None
    };

    // 1 s ticks drive vardiff and the stats; a status line every `status_interval_secs`.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status_every = cfg.status_interval_secs;
    let mut since_status = 0u64;
    let mut last = MiningStats::default();
    let mut workers: Vec<WorkerStats> = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut demo_task = demo_task;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => { info!("Ctrl-C: shutting down"); break; }
            r = async { match demo_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                if let Ok(Err(e)) = r { warn!("demo miner stopped: {e}"); }
                demo_task = None;
            }
            _ = tick.tick() => {
                let req = Request::ToHandlers(SiblingMessage::custom(Tick::now()));
                if let Err(e) = async { service.ready().await?.call(req).await }.await {
                    warn!("tick: {e}");
                    break;
                }
                since_status += 1;
                if status_every > 0 && since_status >= status_every {
                    since_status = 0;
                    print_status(&last, &workers);
                }
            }
            Some(e) = events.recv() => match e {
                MiningEvent::Stats(s) => {
                    last = s;
                    if s.workers == 0 {
                        workers.clear();
                    }
                }
                MiningEvent::Workers(w) => workers = w,
                MiningEvent::BlockFound(b) => {
                    println!(
                        "BLOCK FOUND height={} hash={} (channel {} on {}); SubmitSolution sent to the template source",
                        b.height.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
                        b.hash, b.channel_id, b.connection
                    );
                    if let Some(block) = &b.block {
                        info!(bytes = block.len(), "full block kept");
                    }
                }
                MiningEvent::BlockCompleted(b) => info!(hash = %b.hash, "block completed with its transactions"),
                _ => {}
            },
        }
    }
    if let Some(t) = demo_task {
        t.abort();
    }
    if let Some(h) = td_client {
        h.shutdown().await;
    }
    handle.shutdown().await;
    if let Some(t) = source_task {
        let _ = t.await;
    }
    print_status(&last, &workers);
    Ok(())
}

/// Workers listed under the status line (the busiest first).
const WORKER_LINES: usize = 16;

fn print_status(s: &MiningStats, workers: &[WorkerStats]) {
    println!(
        "status: connections={} channels={} hashrate={} shares accepted={} rejected={} blocks found={} workers={}",
        s.connections,
        s.channels,
        Hashrate(s.hashrate_estimate_hs),
        s.shares_accepted,
        s.shares_rejected,
        s.blocks_found,
        s.workers
    );
    // Per worker (user identity: the extension 0x0002 TLV a proxy sends for each of its Sv1
    // workers, else the channel's user_identity).
    let mut busiest: Vec<&WorkerStats> = workers.iter().collect();
    busiest.sort_by(|a, b| b.hashrate_estimate_hs.total_cmp(&a.hashrate_estimate_hs));
    for w in busiest.iter().take(WORKER_LINES) {
        println!(
            "  worker {}: hashrate={} accepted={}",
            w.user_identity.escape_debug(),
            Hashrate(w.hashrate_estimate_hs),
            w.shares_accepted
        );
    }
    if busiest.len() > WORKER_LINES {
        println!("  ... and {} more workers", busiest.len() - WORKER_LINES);
    }
}
