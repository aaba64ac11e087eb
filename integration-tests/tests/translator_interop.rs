//! Interop: `para miner` (crates.io `para` 0.6.0, an independent Sv1 CPU miner) -> our
//! translator (`tower-stratum-translator`, in process) -> a real Sv2 upstream over Noise with
//! SRI's public test key:
//!
//! - our `solo-mining-server` binary (embedded regtest templates);
//! - SRI's `pool_sv2` 0.7.0 fed by our `template-provider` binary.
//!
//! Aggregated and per-miner modes each. On regtest nearly every share is a block, so jobs
//! change all the time (per-miner: the next block's job comes on the group channel) and some
//! shares are stale: they must be reported as such. The check that matters: after para stops
//! (SIGINT: it finishes the submit in flight and logs its result), the number of shares para
//! saw answered `true` equals the number the upstream accepted, and the translator's count.
//!
//! The peers are installed by `scripts/install-peers`; our binaries are built with this test's
//! profile and target directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tower_stratum::codec::SRI_TEST_AUTHORITY_PUBLIC_KEY;
use tower_stratum_test_kit::process::{
    self as process, free_port, peer_bin, render_config, workspace_bin, PeerProcess,
};
use tower_stratum_test_kit::solo::TempDir;
use tower_stratum_translator::{
    spawn, ChannelMode, TranslatorConfig, TranslatorHandle, TranslatorServiceConfig,
    TranslatorStats, UpstreamConfig,
};

/// para requires Bitcoin addresses as usernames.
const PARA_USER: &str = "tb1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u96w3p8";

fn bin(name: &'static str) -> PathBuf {
    workspace_bin(name)
}

/// Our solo-mining-server on a free port: 30 shares/min per channel, 3 s vardiff period,
/// a status line every second.
async fn solo_server() -> (PeerProcess, SocketAddr) {
    let exe = tokio::task::spawn_blocking(|| bin("solo-mining-server"))
        .await
        .unwrap();
    let (server, port) = process::solo_server(&exe, "").await;
    (server, format!("127.0.0.1:{port}").parse().unwrap())
}

/// SRI's pool_sv2 fed by our template-provider binary, with `top` (top-level TOML keys, may
/// be empty) added to its configuration.
async fn sri_pool_with(top: &str) -> (PeerProcess, PeerProcess, SocketAddr) {
    let tp_bin = tokio::task::spawn_blocking(|| bin("template-provider"))
        .await
        .unwrap();
    let mut tp = PeerProcess::spawn(&tp_bin, &["--listen", "127.0.0.1:0"]);
    let line = tp.wait_for("LISTENING ", 60).await;
    let tp_addr = line.split_whitespace().last().unwrap().to_string();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = render_config(
        "pool.toml",
        &[("LISTEN_ADDR", addr.to_string()), ("TP_ADDR", tp_addr)],
    );
    if !top.is_empty() {
        // Top-level keys go before the first table.
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{top}\n{text}")).unwrap();
    }
    let mut pool = PeerProcess::spawn(&peer_bin("pool_sv2"), &["-c", cfg.to_str().unwrap()]);
    pool.keep(cfg);
    pool.wait_for("ready to accept connections", 120).await;
    (tp, pool, addr)
}

async fn translator(upstream: SocketAddr, mode: ChannelMode) -> (TranslatorHandle, SocketAddr) {
    let cfg = TranslatorServiceConfig {
        translator: TranslatorConfig {
            mode,
            nominal_hashrate: 500_000.0,
            shares_per_minute: 30.0,
            ..TranslatorConfig::default()
        },
        upstreams: vec![UpstreamConfig {
            address: upstream.to_string(),
            authority_key: Some(SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap()),
            user_identity: PARA_USER.into(),
        }],
        ..TranslatorServiceConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (spawn(cfg, listener).unwrap(), addr)
}

fn para(sv1: SocketAddr) -> PeerProcess {
    PeerProcess::spawn(
        &peer_bin("para"),
        &[
            "miner",
            &sv1.to_string(),
            "--username",
            &format!("{PARA_USER}.interop"),
            "--password",
            "x",
            "--cpu-cores",
            "1",
        ],
    )
}

async fn stats_until(
    t: &TranslatorHandle,
    secs: u64,
    f: impl Fn(&TranslatorStats) -> bool,
) -> TranslatorStats {
    let mut rx = t.watch_stats();
    let r = tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("translator stats never matched; last: {:?}", t.stats()),
    }
}

/// Reads a process's output into its log until it has been quiet for `quiet`.
async fn drain(p: &mut PeerProcess, quiet: Duration) {
    while let Ok(Some(l)) = tokio::time::timeout(quiet, p.lines.recv()).await {
        p.log.push(l);
    }
}

/// The accepted count of the second status line printed from now on (earlier output is
/// skipped; the second line is computed after everything that happened before this call).
async fn fresh_status(server: &mut PeerProcess, secs: u64) -> u64 {
    while let Ok(l) = server.lines.try_recv() {
        server.log.push(l);
    }
    server.wait_for("status:", secs).await;
    accepted(&server.wait_for("status:", secs).await)
}

fn count(p: &PeerProcess, needle: &str) -> u64 {
    p.log.iter().filter(|l| l.contains(needle)).count() as u64
}

/// After para is frozen: two stats publications (so its last line, if any, has reached the
/// translator), then no share in flight. Returns (accepted, rejected).
async fn settle(t: &TranslatorHandle) -> (u64, u64) {
    let mut rx = t.watch_stats();
    for _ in 0..2 {
        rx.borrow_and_update();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
    }
    let st = stats_until(t, 30, |s| s.shares_pending == 0).await;
    (st.shares_accepted, st.rejected_total())
}

fn signal(p: &PeerProcess, sig: &str) {
    let pid = p.child.id().unwrap();
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// para's submit results in its log: (true answers, rejections, whether the last share it
/// found is still awaiting its answer). para submits one share at a time and logs "Valid
/// share found" before sending it.
fn para_results(p: &PeerProcess) -> (u64, u64, bool) {
    let (mut ok, mut failed, mut outstanding) = (0, 0, false);
    for l in &p.log {
        if l.contains("Valid share found") {
            outstanding = true;
        } else if l.contains("submitted successfully") {
            ok += 1;
            outstanding = false;
        } else if l.contains("Failed to submit share") {
            failed += 1;
            outstanding = false;
        }
    }
    (ok, failed, outstanding)
}

/// A consistent cut: para frozen (SIGSTOP) with nothing left in flight at the translator
/// (`settled` waits for that and returns the translator's accepted and rejected counts), then
/// `upstream` reads the upstream's accepted count (para frozen: nothing moves). If para was
/// waiting for an answer when frozen, it is resumed until it logs that answer. Returns
/// (para true, para rejected, translator accepted, translator rejected, upstream accepted).
async fn cut<S, U>(p: &mut PeerProcess, settled: S, upstream: U) -> [u64; 5]
where
    S: std::future::Future<Output = (u64, u64)>,
    U: std::future::Future<Output = u64>,
{
    signal(p, "-STOP");
    let (accepted, rejected) = settled.await;
    let up = upstream.await;
    drain(p, Duration::from_millis(300)).await;
    let (mut ok, mut failed, outstanding) = para_results(p);
    if outstanding {
        signal(p, "-CONT");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let l = tokio::time::timeout_at(deadline, p.lines.recv())
                .await
                .expect("para logs the answer to its last share")
                .expect("para still running");
            p.log.push(l.clone());
            if l.contains("submitted successfully") {
                ok += 1;
                break;
            }
            if l.contains("Failed to submit share") {
                failed += 1;
                break;
            }
        }
    }
    signal(p, "-KILL");
    [ok, failed, accepted, rejected, up]
}

async fn para_on_solo_server(mode: ChannelMode) {
    let (mut server, up) = solo_server().await;
    let (t, sv1) = translator(up, mode).await;
    let mut p = para(sv1);
    // Shares flow: accepted upstream and answered true.
    stats_until(&t, 120, |s| s.shares_accepted >= 8).await;
    let settled = settle(&t);
    let upstream = fresh_status(&mut server, 30);
    let [para_ok, para_rejected, accepted, rejected, upstream] =
        cut(&mut p, settled, upstream).await;
    assert!(para_ok >= 8);
    assert_eq!(
        para_ok, accepted,
        "para's true answers vs the translator's accepted"
    );
    assert_eq!(
        para_rejected, rejected,
        "para's rejections vs the translator's"
    );
    assert_eq!(
        upstream, para_ok,
        "solo-mining-server accepted vs para's true answers"
    );
    // Only stale shares are rejected on regtest (jobs change on every block).
    let st = t.stats();
    for reason in st.shares_rejected.keys() {
        assert!(
            reason == "stale" || reason == "upstream:stale-share",
            "unexpected rejection {reason}: {st:?}"
        );
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_through_our_translator_aggregated_to_solo_mining_server() {
    para_on_solo_server(ChannelMode::Aggregated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_through_our_translator_per_miner_to_solo_mining_server() {
    para_on_solo_server(ChannelMode::PerMiner).await;
}

async fn para_on_sri_pool(mode: ChannelMode) {
    para_on_sri_pool_with(mode, "").await;
}

/// `pool_top`: extra top-level keys of the pool's configuration.
async fn para_on_sri_pool_with(
    mode: ChannelMode,
    pool_top: &str,
) -> (TranslatorStats, PeerProcess) {
    let (_tp, mut pool, up) = sri_pool_with(pool_top).await;
    let (t, sv1) = translator(up, mode).await;
    let mut p = para(sv1);
    stats_until(&t, 120, |s| s.shares_accepted >= 8).await;
    let settled = settle(&t);
    // The pool logs every SubmitSharesExtended it receives and every rejection.
    let upstream = async {
        drain(&mut pool, Duration::from_secs(1)).await;
        count(&pool, "Received SubmitSharesExtended") - count(&pool, "SubmitSharesError")
    };
    let [para_ok, para_rejected, accepted, rejected, upstream] =
        cut(&mut p, settled, upstream).await;
    assert!(para_ok >= 8);
    assert_eq!(
        para_ok, accepted,
        "para's true answers vs the translator's accepted"
    );
    assert_eq!(
        para_rejected, rejected,
        "para's rejections vs the translator's"
    );
    assert_eq!(
        upstream, para_ok,
        "pool accepted (received - errors) vs para's true answers"
    );
    let st = t.stats();
    assert_eq!(
        st.shares_rejected
            .iter()
            .filter(|(k, _)| k.starts_with("upstream:"))
            .map(|(_, v)| v)
            .sum::<u64>(),
        count(&pool, "SubmitSharesError")
    );
    t.shutdown().await;
    (st, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_through_our_translator_aggregated_to_sri_pool() {
    para_on_sri_pool(ChannelMode::Aggregated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_through_our_translator_per_miner_to_sri_pool() {
    para_on_sri_pool(ChannelMode::PerMiner).await;
}

/// SRI's pool configured with extension 0x0002 negotiates it with our translator, and takes
/// every share with the worker's `user_identity` TLV appended: the same exact accounting as
/// without it. (pool_sv2 0.7.0 parses the TLV but does not report per-worker figures.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_through_our_translator_to_sri_pool_with_worker_hashrate_tracking() {
    let (st, pool) =
        para_on_sri_pool_with(ChannelMode::Aggregated, "supported_extensions = [2]").await;
    assert!(
        st.worker_hashrate_tracking,
        "negotiated on our side: {st:?}"
    );
    assert_eq!(
        count(
            &pool,
            "Extension negotiation success: requested=[2], negotiated=[2]"
        ),
        1,
        "negotiated on the pool's side"
    );
}

/// The `translator-proxy` binary with its defaults (but the ports) between para and our
/// `solo-mining-server` with its defaults (but the port): the two default to the same
/// authority key, so they work together out of the box.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_through_the_translator_proxy_binary_to_solo_mining_server_defaults() {
    let (server_bin, proxy_bin) =
        tokio::task::spawn_blocking(|| (bin("solo-mining-server"), bin("translator-proxy")))
            .await
            .unwrap();
    let up = format!("127.0.0.1:{}", free_port());
    // Defaults but the port and where found blocks go (a temporary directory, not the source
    // tree the test runs in).
    let dir = TempDir::new("translator-defaults");
    let blocks = dir.path().join("blocks");
    let mut server = PeerProcess::spawn(
        &server_bin,
        &["--listen", &up, "--blocks-dir", blocks.to_str().unwrap()],
    );
    server.wait_for("listening", 60).await;
    let sv1: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut proxy = PeerProcess::spawn(
        &proxy_bin,
        &[
            "--listen",
            &sv1.to_string(),
            "--upstream",
            &up,
            "--status-interval",
            "1",
        ],
    );
    proxy.wait_for("Sv1 translator listening", 30).await;
    let mut p = para(sv1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let line = proxy.wait_for("status:", 120).await;
        if accepted(&line) >= 3 {
            assert!(
                line.contains("upstream=connected(#0)") && line.contains("miners=1"),
                "{line}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no shares accepted: {line}"
        );
    }
    // The proxy's status line: two more after the freeze, then one with nothing in flight.
    let settled = async {
        while let Ok(l) = proxy.lines.try_recv() {
            proxy.log.push(l);
        }
        proxy.wait_for("status:", 10).await;
        proxy.wait_for("status:", 10).await;
        loop {
            let line = proxy.wait_for("status:", 10).await;
            if line.contains("pending=0") {
                let rejected = line
                    .split(" rejected=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                break (accepted(&line), rejected);
            }
        }
    };
    // The server prints its status every 5 s by default.
    let upstream = fresh_status(&mut server, 15);
    let [para_ok, para_rejected, accepted, rejected, upstream] =
        cut(&mut p, settled, upstream).await;
    assert!(para_ok >= 3);
    assert_eq!(para_ok, accepted, "para vs the proxy's status line");
    assert_eq!(para_rejected, rejected);
    assert_eq!(upstream, para_ok, "solo-mining-server vs para");
}

/// Upstream failover: the primary solo-mining-server dies mid-run; the translator moves to
/// the backup and para keeps mining there (both servers hand out the same extranonce prefix,
/// so para's extranonce1 stays valid and it simply gets the backup's jobs; a changed
/// extranonce1 is covered by `translator.rs`), and para's count of accepted shares still
/// equals the translator's: nothing counted twice or lost across the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn para_keeps_mining_on_the_backup_when_the_primary_dies() {
    let (mut primary, up1) = solo_server().await;
    let (mut backup, up2) = solo_server().await;
    let key: tower_stratum::codec::AuthorityPublicKey =
        SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap();
    let upstream = |a: SocketAddr| UpstreamConfig {
        address: a.to_string(),
        authority_key: Some(key),
        user_identity: PARA_USER.into(),
    };
    let mut cfg = TranslatorServiceConfig {
        translator: TranslatorConfig {
            nominal_hashrate: 500_000.0,
            shares_per_minute: 30.0,
            ..TranslatorConfig::default()
        },
        upstreams: vec![upstream(up1), upstream(up2)],
        failover_attempts: 2,
        failback_interval: None,
        ..TranslatorServiceConfig::default()
    };
    cfg.client.reconnect = Some(tower_stratum::Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sv1 = listener.local_addr().unwrap();
    let t = spawn(cfg, listener).unwrap();
    let mut p = para(sv1);
    let before = stats_until(&t, 120, |s| s.shares_accepted >= 5).await;
    assert_eq!(before.upstream_index, Some(0));
    primary.child.kill().await.unwrap();
    let after = stats_until(&t, 120, |s| {
        s.upstream_index == Some(1) && s.shares_accepted >= before.shares_accepted + 5
    })
    .await;
    assert!(after.miners >= 1);
    let settled = settle(&t);
    let upstream = fresh_status(&mut backup, 30);
    let [para_ok, para_rejected, accepted, rejected, on_backup] =
        cut(&mut p, settled, upstream).await;
    assert_eq!(
        para_ok, accepted,
        "no share counted twice or lost across the switch"
    );
    assert_eq!(para_rejected, rejected);
    // The backup accepted shares too; every one the primary did not.
    assert!(
        on_backup >= 5 && on_backup <= accepted,
        "backup {on_backup} of {accepted}"
    );
    t.shutdown().await;
}

/// The number after `shares accepted=` in a solo-mining-server status line.
fn accepted(line: &str) -> u64 {
    process::status_count(line, "shares accepted")
}
