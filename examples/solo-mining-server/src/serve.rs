//! Wires the server: Noise listener + `MiningServer` handler, sibling-linked to the template
//! source (embedded regtest or an Sv2 Template Provider), the handler's own 1 s timer for
//! vardiff and stats, a status line from its stats events, found blocks kept on disk before
//! anything else (see `Keeper`), and Ctrl-C or SIGTERM for a graceful shutdown.

use crate::config::{Config, TemplateSource};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tower_stratum::codec::{AuthorityKeypair, AuthorityPublicKey};
use tower_stratum::handler::{
    NullSv2JobDeclarationClientHandler, NullSv2JobDeclarationServerHandler,
    NullSv2MiningClientHandler, NullSv2TemplateDistributionServerHandler,
};
use tower_stratum::mining::share_math::Hashrate;
use tower_stratum::mining::{
    BlockEvent, BlockKeeper, BlockStore, MiningEvent, MiningServer, MiningServerConfig,
    MiningStats, WorkerStats,
};
use tower_stratum::stratum_core::bitcoin::address::NetworkUnchecked;
use tower_stratum::stratum_core::bitcoin::bech32;
use tower_stratum::stratum_core::bitcoin::hex::DisplayHex;
use tower_stratum::stratum_core::bitcoin::{Address, Network, ScriptBuf};
use tower_stratum::template::{spawn_embedded_source, SourceConfig, TemplateDistributionClient};
use tower_stratum::{
    ClientConfig, ClientTransport, Endpoint, ServerConfig, ServerTransport, Subprotocol,
    Sv2ClientService, Sv2ServerService,
};
use tracing::{error, info, warn};

/// Why the server stopped with an error: a configuration mistake (exit code 2) or a runtime
/// failure (exit code 1).
#[derive(Debug)]
pub(crate) enum Failure {
    /// Fix the configuration (exit code 2).
    Config(String),
    /// Could not run (bind, runtime; exit code 1).
    Runtime(String),
}

impl Failure {
    /// The process exit code of the agreed scheme.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Runtime(_) => 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(m) | Self::Runtime(m) => f.write_str(m),
        }
    }
}

/// Parses a `network` name.
pub(crate) fn parse_network(name: &str) -> Result<Network, String> {
    Ok(match name {
        "regtest" => Network::Regtest,
        "testnet" | "testnet3" => Network::Testnet,
        "testnet4" => Network::Testnet4,
        "signet" => Network::Signet,
        "mainnet" | "bitcoin" | "main" => Network::Bitcoin,
        other => {
            return Err(format!(
                "network {other:?}: expected regtest, testnet, testnet4, signet or mainnet"
            ))
        }
    })
}

/// `e` and its sources, joined with `: ` (the bech32 crate puts the reason in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// The networks an address is valid on, for an error message.
fn networks_of(addr: &Address<NetworkUnchecked>) -> String {
    let names: Vec<&str> = [
        (Network::Bitcoin, "mainnet"),
        (Network::Testnet, "testnet"),
        (Network::Testnet4, "testnet4"),
        (Network::Signet, "signet"),
        (Network::Regtest, "regtest"),
    ]
    .into_iter()
    .filter(|(n, _)| addr.is_valid_for_network(*n))
    .map(|(_, name)| name)
    .collect();
    names.join("/")
}

/// Parses `payout`: a Bitcoin address valid on `network` or `script:<hex scriptPubKey>`. An
/// address of another network is refused unless `any_network` (then accepted with a warning).
/// A bech32 address (`bc1`, `tb1`, `bcrt1`) that does not decode is reported with the bech32
/// error (checksum, characters), not as base58.
pub(crate) fn payout_script(
    payout: &str,
    network: Network,
    any_network: bool,
) -> Result<ScriptBuf, String> {
    if let Some(hex) = payout.strip_prefix("script:") {
        return ScriptBuf::from_hex(hex).map_err(|e| format!("payout script hex: {e}"));
    }
    let addr = match Address::from_str(payout) {
        Ok(a) => a,
        Err(e) => {
            let lower = payout.to_ascii_lowercase();
            if ["bc1", "tb1", "bcrt1"].iter().any(|h| lower.starts_with(h)) {
                if let Err(b) = bech32::segwit::decode(payout) {
                    return Err(format!(
                        "payout address {payout:?}: not a valid bech32 address: {}",
                        error_chain(&b)
                    ));
                }
            }
            return Err(format!("payout address {payout:?}: {e}"));
        }
    };
    if !addr.is_valid_for_network(network) {
        let msg = format!(
            "payout address {payout:?} is a {} address but this server mines {network}",
            networks_of(&addr)
        );
        if !any_network {
            return Err(format!(
                "{msg}: use an address of {network} (or set allow_payout_on_any_network = true \
                 if you really mean it)"
            ));
        }
        warn!("{msg}; accepted because allow_payout_on_any_network = true");
    }
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

/// Runs until Ctrl-C or SIGTERM (or, with `demo`, until the demo miner stops).
pub(crate) async fn run(cfg: Config, demo: bool) -> Result<(), Failure> {
    let keys = keypair(&cfg).map_err(Failure::Config)?;
    let network = parse_network(&cfg.network).map_err(Failure::Config)?;
    if matches!(cfg.template_source, TemplateSource::Embedded { .. }) && network != Network::Regtest
    {
        return Err(Failure::Config(format!(
            "network = {:?} but the embedded template source mines regtest: use \
             network = \"regtest\" or an Sv2 template source",
            cfg.network
        )));
    }
    let payout = payout_script(&cfg.payout, network, cfg.allow_payout_on_any_network)
        .map_err(Failure::Config)?;
    if cfg.uses_public_test_key() {
        warn!(
            "USING SRI'S PUBLIC TEST AUTHORITY KEY: anyone can impersonate this server. \
             Run `solo-mining-server keygen` and put your own keys in the config"
        );
    }
    let mining_cfg = MiningServerConfig {
        coinbase_output_script: payout,
        shares_per_minute: cfg.shares_per_minute,
        vardiff_period: Duration::from_secs(cfg.vardiff_period_secs.max(1)),
        // Vardiff, resubmissions and the stats every second: the status line counts these.
        timer_period: STATS_PERIOD,
        min_share_difficulty: cfg.min_share_difficulty,
        // The demo's CPU miner would otherwise submit about every other hash on regtest.
        cap_target_at_network: cfg.cap_share_target_at_network.unwrap_or(!demo),
        ..MiningServerConfig::default()
    };
    let (events_tx, mut events) = mpsc::channel::<MiningEvent>(1024);
    let store = BlockStore::new(&cfg.blocks_dir, cfg.keep_limit());
    info!(
        dir = %store.dir().display(),
        keep = %store.keep_limit().map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into()),
        "found blocks are kept in this directory"
    );
    let mining = MiningServer::new(mining_cfg)
        .map_err(|e| Failure::Config(format!("mining server config: {e}")))?
        .with_event_sink(move |e| {
            // Bounded: if the status printer lags, stats events are dropped, never queued.
            // Blocks do not depend on it: they go through the keeper below, synchronously.
            let _ = events_tx.try_send(e);
        })
        .with_block_keeper(Keeper { store });
    let constraints = mining.coinbase_output_constraints();

    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| Failure::Runtime(format!("listen on {}: {e}", cfg.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let server_cfg = ServerConfig::with_transport(ServerTransport::Noise {
        keypair: keys.clone(),
        cert_validity: Duration::from_secs(cfg.cert_validity_secs),
    });
    let (_service, handle, sibling) = Sv2ServerService::new_with_sibling_io(
        server_cfg,
        listener,
        mining,
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    );
    // Handlers installed before the listening line: a SIGTERM right after it is graceful.
    let mut stop = tower_stratum::shutdown::Shutdown::listen()
        .map_err(|e| Failure::Runtime(format!("cannot watch for Ctrl-C/SIGTERM: {e}")))?;
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
            inactivity_timeout_secs,
        } => {
            let authority = if authority_public_key.is_empty() {
                warn!("template provider is NOT authenticated (no authority_public_key)");
                None
            } else {
                Some(
                    AuthorityPublicKey::from_str(authority_public_key)
                        .map_err(|e| Failure::Config(format!("template provider key: {e}")))?,
                )
            };
            info!(%address, "template source: Sv2 Template Provider");
            let mut client_cfg = ClientConfig::default().endpoint(
                Subprotocol::TemplateDistribution,
                Endpoint {
                    address: address.clone(),
                    transport: ClientTransport::Noise { authority },
                },
            );
            client_cfg.inactivity_timeout[Subprotocol::TemplateDistribution] =
                (*inactivity_timeout_secs > 0)
                    .then(|| Duration::from_secs(*inactivity_timeout_secs));
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

    // The server's own timer (every STATS_PERIOD) drives vardiff and resubmissions and
    // reports its stats; a status line every `status_interval_secs` of those reports.
    let mut status = StatusLine::new(cfg.status_interval_secs, cfg.no_template_error_secs);
    let mut demo_task = demo_task;
    loop {
        tokio::select! {
            signal = stop.recv() => { info!("{signal}: shutting down"); break; }
            r = async { match demo_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                if let Ok(Err(e)) = r { warn!("demo miner stopped: {e}"); }
                demo_task = None;
            }
            e = events.recv() => match e {
                Some(e) => {
                    status.on_event(e);
                    // What is queued behind it first (a block found since, the next report):
                    // the line then counts it, as the BLOCK FOUND line printed before it.
                    while let Ok(e) = events.try_recv() {
                        status.on_event(e);
                    }
                    status.print_if_due();
                }
                None => {
                    warn!("mining server stopped");
                    break;
                }
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
    while let Ok(e) = events.try_recv() {
        status.on_event(e);
    }
    status.print();
    Ok(())
}

/// Period of the mining server's timer: its stats (and the status line's count) come this
/// often.
const STATS_PERIOD: Duration = Duration::from_secs(1);

/// The status line, from the mining server's events: each timer reports `Stats`, then
/// `Workers` when any worker is tracked; a report is complete after both (or after `Stats`
/// alone with no worker). Every `every`-th report makes the line due (`0`: never, only at
/// exit).
struct StatusLine {
    every: u64,
    reports: u64,
    due: bool,
    last: MiningStats,
    workers: Vec<WorkerStats>,
    /// The last `Stats` still waits for its `Workers`.
    awaiting_workers: bool,
    no_template: NoTemplateAlarm,
}

impl StatusLine {
    fn new(every: u64, no_template_error_secs: u64) -> Self {
        Self {
            every,
            reports: 0,
            due: false,
            last: MiningStats::default(),
            workers: Vec::new(),
            awaiting_workers: false,
            no_template: NoTemplateAlarm::new(no_template_error_secs),
        }
    }

    fn on_event(&mut self, e: MiningEvent) {
        match e {
            MiningEvent::Stats(s) => {
                if self.awaiting_workers {
                    // Its Workers event was dropped (the channel was full): that report still
                    // counts, with the previous worker list.
                    self.report_done();
                }
                self.last = s;
                if s.workers == 0 {
                    self.workers.clear();
                    self.report_done();
                } else {
                    self.awaiting_workers = true;
                }
            }
            MiningEvent::Workers(w) => {
                self.workers = w;
                if self.awaiting_workers {
                    self.report_done();
                }
            }
            // Found blocks are printed by the keeper, synchronously; this copy only counts.
            MiningEvent::BlockFound(_) => {
                self.last.blocks_found = self.last.blocks_found.saturating_add(1);
            }
            _ => {}
        }
    }

    /// One timer's report is complete: the line, when due, shows this timer's figures, not
    /// the previous one's.
    fn report_done(&mut self) {
        self.awaiting_workers = false;
        self.no_template.check(self.last.templates_received);
        self.reports += 1;
        if self.every > 0 && self.reports >= self.every {
            self.reports = 0;
            self.due = true;
        }
    }

    fn print_if_due(&mut self) {
        if std::mem::take(&mut self.due) {
            self.print();
        }
    }

    fn print(&self) {
        print_status(&self.last, &self.workers);
    }
}

/// The ERROR when no template arrived for a while: once, then every [`NO_TEMPLATE_REPEAT`]
/// while it lasts.
struct NoTemplateAlarm {
    after: Option<Duration>,
    since: std::time::Instant,
    seen: u64,
    last_error: Option<std::time::Instant>,
}

/// Repeat of the no-template ERROR while it lasts.
const NO_TEMPLATE_REPEAT: Duration = Duration::from_secs(300);

impl NoTemplateAlarm {
    fn new(secs: u64) -> Self {
        Self {
            after: (secs > 0).then(|| Duration::from_secs(secs)),
            since: std::time::Instant::now(),
            seen: 0,
            last_error: None,
        }
    }

    fn check(&mut self, templates_received: u64) {
        let now = std::time::Instant::now();
        if templates_received > self.seen {
            if self.last_error.is_some() {
                info!("templates are arriving again");
            }
            self.seen = templates_received;
            self.since = now;
            self.last_error = None;
            return;
        }
        let Some(after) = self.after else { return };
        if templates_received > 0 {
            // A source that sent templates and then goes quiet is normal (no new block, no
            // fee change); only a server that never had work is an error.
            return;
        }
        let waited = now.duration_since(self.since);
        let due = match self.last_error {
            None => waited >= after,
            Some(t) => now.duration_since(t) >= NO_TEMPLATE_REPEAT,
        };
        if due {
            self.last_error = Some(now);
            error!(
                waited_secs = waited.as_secs(),
                "no template from the template source yet: miners get no work. Check \
                 [template_source] (address, authority key) and the warnings above"
            );
        }
    }
}

/// The server's [`BlockKeeper`]: writes every found block to the [`BlockStore`] before the
/// share is answered, prints the `BLOCK FOUND` line with the file, and logs what it cannot
/// write at ERROR with the block's hex (it is still submitted).
struct Keeper {
    store: BlockStore,
}

impl BlockKeeper for Keeper {
    fn on_block_event(&mut self, event: &BlockEvent<'_>) {
        let result = self.store.record(event, std::time::SystemTime::now());
        match (event, result) {
            (BlockEvent::Found(b), Ok(path)) => {
                let kept = path
                    .map(|p| format!("kept in {}", p.display()))
                    .unwrap_or_else(|| "kept".into());
                println!(
                    "BLOCK FOUND height={} hash={} worker={} (channel {} on {}) {kept}; SubmitSolution sent to the template source",
                    b.height.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
                    b.hash,
                    b.user_identity.escape_debug(),
                    b.channel_id,
                    b.connection
                );
            }
            (BlockEvent::Found(b), Err(e)) => {
                error!(
                    hash = %b.hash,
                    error = %e,
                    block_hex = %b.block.as_deref().map(|x| x.to_lower_hex_string()).unwrap_or_default(),
                    header_hex = %b.header.to_lower_hex_string(),
                    coinbase_hex = %b.coinbase_tx.to_lower_hex_string(),
                    template_id = b.template_id,
                    "cannot keep the found block on disk; it is still submitted to the template source"
                );
                println!(
                    "BLOCK FOUND height={} hash={} worker={} (channel {} on {}) NOT kept on disk (see the error); SubmitSolution sent to the template source",
                    b.height.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
                    b.hash,
                    b.user_identity.escape_debug(),
                    b.channel_id,
                    b.connection
                );
            }
            (BlockEvent::Completed(b), Ok(Some(path))) => {
                info!(hash = %b.hash, file = %path.display(), "found block completed with its transactions and kept")
            }
            (_, Ok(_)) => {}
            (_, Err(e)) => error!(error = %e, "cannot update a kept block's record"),
        }
    }
}

/// Workers listed under the status line (the busiest first).
const WORKER_LINES: usize = 16;

fn print_status(s: &MiningStats, workers: &[WorkerStats]) {
    println!(
        "status: connections={} channels={} templates={} hashrate={} shares accepted={} rejected={} blocks found={} unconfirmed={} workers={}",
        s.connections,
        s.channels,
        if s.templates_received == 0 { "none".to_string() } else { s.templates_received.to_string() },
        Hashrate(s.hashrate_estimate_hs),
        s.shares_accepted,
        s.shares_rejected,
        s.blocks_found,
        s.unconfirmed_blocks,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const REGTEST: &str = "bcrt1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u8nhukw";
    /// BIP173's mainnet P2WPKH example.
    const MAINNET: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    /// BIP173's testnet P2WPKH example.
    const TESTNET: &str = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";

    #[test]
    fn payout_of_another_network_is_refused_unless_overridden() {
        assert!(payout_script(REGTEST, Network::Regtest, false).is_ok());
        let e = payout_script(MAINNET, Network::Regtest, false).unwrap_err();
        assert!(
            e.contains("is a mainnet address but this server mines regtest"),
            "{e}"
        );
        assert!(e.contains("allow_payout_on_any_network"), "{e}");
        // testnet's tb1 is not regtest's bcrt1 either.
        let e = payout_script(TESTNET, Network::Regtest, false).unwrap_err();
        assert!(e.contains("testnet"), "{e}");
        assert!(payout_script(TESTNET, Network::Testnet, false).is_ok());
        assert!(payout_script(MAINNET, Network::Bitcoin, false).is_ok());
        // The explicit override accepts it.
        assert!(payout_script(MAINNET, Network::Regtest, true).is_ok());
        // A raw script is never network-checked.
        assert!(payout_script("script:51", Network::Regtest, false).is_ok());
    }

    #[test]
    fn bad_bech32_checksum_is_a_bech32_error_not_base58() {
        // The last character of a valid regtest address changed.
        let bad = "bcrt1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u8nhukx";
        let e = payout_script(bad, Network::Regtest, false).unwrap_err();
        assert!(e.contains("bech32"), "{e}");
        assert!(e.to_lowercase().contains("checksum"), "{e}");
        assert!(!e.contains("base58"), "{e}");
        let e = payout_script(
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
            Network::Bitcoin,
            false,
        )
        .unwrap_err();
        assert!(
            e.to_lowercase().contains("checksum") && !e.contains("base58"),
            "{e}"
        );
    }

    #[test]
    fn network_names() {
        assert_eq!(parse_network("regtest").unwrap(), Network::Regtest);
        assert_eq!(parse_network("mainnet").unwrap(), Network::Bitcoin);
        assert_eq!(parse_network("testnet4").unwrap(), Network::Testnet4);
        assert!(parse_network("moon").is_err());
    }

    #[test]
    fn keep_limit_defaults_to_1000_on_regtest_only() {
        let mut c = Config::default();
        assert_eq!(c.keep_limit(), Some(1000));
        c.network = "mainnet".into();
        assert_eq!(c.keep_limit(), None);
        c.keep_blocks = Some(5);
        assert_eq!(c.keep_limit(), Some(5));
        c.keep_blocks = Some(0);
        assert_eq!(c.keep_limit(), None);
    }

    #[test]
    fn generated_config_parses_and_has_the_block_keys() {
        let text = crate::config::commented_default();
        for key in [
            "blocks_dir = \"./blocks/\"",
            "keep_blocks",
            "no_template_error_secs = 30",
            "network = \"regtest\"",
            "allow_payout_on_any_network = false",
            "inactivity_timeout_secs",
        ] {
            assert!(text.contains(key), "{key} missing from --generate-config");
        }
        let c: Config = toml::from_str(&text).unwrap();
        assert_eq!(c.blocks_dir, "./blocks/");
        assert_eq!(c.no_template_error_secs, 30);
    }

    fn stats(workers: usize, shares_accepted: u64) -> MiningEvent {
        MiningEvent::Stats(MiningStats {
            workers,
            shares_accepted,
            templates_received: 1,
            ..MiningStats::default()
        })
    }

    fn worker(name: &str, shares_accepted: u64) -> WorkerStats {
        WorkerStats {
            user_identity: name.into(),
            shares_accepted,
            hashrate_estimate_hs: 1.0,
        }
    }

    #[test]
    fn the_status_line_is_due_every_nth_complete_timer_report() {
        let mut st = StatusLine::new(2, 0);
        // No worker: Stats alone is a whole report.
        st.on_event(stats(0, 0));
        assert_eq!((st.reports, st.due), (1, false));
        // With a worker the report waits for its Workers event, then the line is due with
        // this timer's figures.
        st.on_event(stats(1, 5));
        assert_eq!((st.reports, st.due), (1, false));
        st.on_event(MiningEvent::Workers(vec![worker("alice", 5)]));
        assert!(st.due);
        assert_eq!(st.last.shares_accepted, 5);
        assert_eq!(st.workers, [worker("alice", 5)]);
        st.print_if_due();
        assert!(!st.due);
        // A Workers event lost to a full channel: the next Stats still completes that report.
        st.on_event(stats(1, 6));
        st.on_event(stats(0, 7));
        assert!(st.due, "two reports");
        assert!(st.workers.is_empty());
        // Never due with status_interval_secs = 0.
        let mut never = StatusLine::new(0, 0);
        for _ in 0..5 {
            never.on_event(stats(0, 0));
        }
        assert!(!never.due);
    }
}
