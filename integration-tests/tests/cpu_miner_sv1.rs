//! Interop: our `cpu-miner` in Sv1 mode (`stratum+tcp://`) -> SRI's `translator_sv2` 0.6.0
//! (installed by `scripts/install-peers`) -> our `solo-mining-server` binary (embedded regtest
//! templates), over Noise with SRI's public test key upstream. Aggregated and per-miner modes.
//!
//! Each test: the miner negotiates version rolling with SRI's translator (BIP310
//! `mining.configure`; SRI grants the requested mask ANDed with its own, `0x1fffe000`),
//! subscribes, authorizes, and its shares are answered `true` by the translator, forwarded
//! and accepted by our server (its status line counts them), including one with rolled
//! version bits (the second hashing thread's). On regtest nearly every share
//! is a block, so jobs change all the time (`clean_jobs`); in per-miner mode the next block's
//! job reaches the translator on the group channel, and shares on it are accepted too. The
//! only rejection tolerated is a share on a job the translator no longer knows (error 21,
//! in flight while the job changed); every `mining.submit` carries the version bits.
//!
//! SRI's translator answers `true` as soon as a share meets the Sv1 target it advertised,
//! before the upstream's verdict, so the miner's count can exceed the upstream's; what is
//! compared is that the upstream accepted shares and the miner saw only true answers or
//! stale-job rejections.
//!
//! Also, in the chain the README shows: the miner -> our `translator-proxy` binary -> our
//! `solo-mining-server`: our translator answers `true` only after the upstream accepted the
//! share, so every share the miner counts as accepted is counted by the server.
//!
//! The translator's difficulty: `min_individual_miner_hashrate` ({{MIN_HASHRATE}}) is set
//! to 10 kH/s, below the debug build's ~250 kH/s per thread, so the first Sv1 target gives
//! shares within seconds (SRI's vardiff then raises it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::PathBuf;
use tower_stratum_test_kit::process::{
    self as process, free_port, peer_bin, render_config, workspace_bin, PeerProcess,
};

fn bin(name: &'static str) -> PathBuf {
    workspace_bin(name)
}

/// Our solo-mining-server on a free port: 30 shares/min per channel, 3 s vardiff period,
/// a status line every second.
async fn solo_server() -> (PeerProcess, u16) {
    let exe = tokio::task::spawn_blocking(|| bin("solo-mining-server"))
        .await
        .unwrap();
    let (server, port) = process::solo_server(&exe, "").await;
    (server, port)
}

/// The JSON of the miner's dump lines in direction `prefix` (`"-> "` sent, `"<- "` received).
fn dump(miner: &PeerProcess, prefix: &str) -> Vec<Value> {
    miner
        .log
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

/// Whether a `mining.submit` with version bits other than zero was answered `true`.
fn rolled_share_accepted(miner: &PeerProcess) -> bool {
    let rolled: Vec<Value> = dump(miner, "-> ")
        .into_iter()
        .filter(|v| v["method"] == "mining.submit" && v["params"][5] != "00000000")
        .map(|v| v["id"].clone())
        .collect();
    dump(miner, "<- ")
        .iter()
        .any(|r| r["result"] == true && rolled.contains(&r["id"]))
}

/// Waits for the miner's `n`-th `share accepted` line (counting from the start).
async fn wait_miner_accepted(miner: &mut PeerProcess, n: usize, secs: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while miner
        .log
        .iter()
        .filter(|l| l.starts_with("share accepted"))
        .count()
        < n
    {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs()
            .max(1);
        miner.wait_for("share accepted", left).await;
    }
}

async fn cpu_miner_through_sri_translator(aggregated: bool) {
    let (mut server, port) = solo_server().await;
    let sv1_port = free_port();
    let cfg = render_config(
        if aggregated {
            "translator-aggregated.toml"
        } else {
            "translator-per-miner.toml"
        },
        &[
            ("DOWNSTREAM_HOST", "127.0.0.1".into()),
            ("DOWNSTREAM_PORT", sv1_port.to_string()),
            ("UPSTREAM_HOST", "127.0.0.1".into()),
            ("UPSTREAM_PORT", port.to_string()),
            ("MIN_HASHRATE", "10_000.0".into()),
        ],
    );
    let mut tproxy =
        PeerProcess::spawn(&peer_bin("translator_sv2"), &["-c", cfg.to_str().unwrap()]);
    tproxy.keep(cfg);
    tproxy.wait_for("listening on", 60).await;
    let miner_bin = tokio::task::spawn_blocking(|| bin("cpu-miner"))
        .await
        .unwrap();
    let url = format!("stratum+tcp://127.0.0.1:{sv1_port}");
    let mut miner = PeerProcess::spawn(
        &miner_bin,
        &[
            url.as_str(),
            "--user",
            "interop.cpu",
            "--password",
            "x",
            // Two threads: the second mines the first rolled version (bits 0x00002000).
            "--threads",
            "2",
            "--dump-protocol",
            "--exit-after-secs",
            "300",
        ],
    );
    miner.wait_for("version rolling: mask=1fffe000", 60).await;
    miner.wait_for("subscribed: extranonce1=", 30).await;
    miner.wait_for("authorized: interop.cpu", 30).await;
    // Shares answered true by the translator, forwarded and accepted by our server.
    wait_miner_accepted(&mut miner, 3, 120).await;
    tproxy.wait_for("SubmitSharesSuccess", 120).await;
    if !aggregated {
        // Per-miner: after the first block the new template reaches the translator as one job
        // on the group channel (id 1); shares on it are accepted too.
        tproxy
            .wait_for("NewExtendedMiningJob(channel_id: 1,", 120)
            .await;
        tproxy.wait_for("SubmitSharesSuccess", 120).await;
        let seen = miner
            .log
            .iter()
            .filter(|l| l.starts_with("share accepted"))
            .count();
        wait_miner_accepted(&mut miner, seen + 1, 120).await;
    }
    // A share with rolled version bits answered true (its header differs from the job's
    // version: SRI's translator and our server agree with the miner on BIP310).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while !rolled_share_accepted(&miner) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "no share with version bits accepted");
        miner
            .wait_for("share accepted", left.as_secs().max(1))
            .await;
    }
    let line = server.wait_status("shares accepted", 3, 60).await;
    assert!(line.contains("channels=1"), "one channel upstream: {line}");

    // Everything the miner sent and got, as on the wire.
    while let Ok(l) = miner.lines.try_recv() {
        miner.log.push(l);
    }
    let submits: Vec<Value> = dump(&miner, "-> ")
        .into_iter()
        .filter(|v| v["method"] == "mining.submit")
        .collect();
    assert!(submits.len() >= 3);
    for s in &submits {
        let p = s["params"].as_array().unwrap();
        assert_eq!(p.len(), 6, "version bits sent: {s}");
        assert_eq!(p[0], "interop.cpu");
        assert_eq!(
            p[2].as_str().unwrap().len(),
            8,
            "extranonce2 of 4 bytes: {s}"
        );
    }
    for l in miner.log.iter().filter(|l| l.starts_with("share rejected")) {
        assert!(l.contains("error=21 "), "only stale-job rejections: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_sv1_through_sri_translator_aggregated_to_solo_mining_server() {
    cpu_miner_through_sri_translator(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_sv1_through_sri_translator_per_miner_to_solo_mining_server() {
    cpu_miner_through_sri_translator(false).await;
}

/// The number after `key` (e.g. `"accepted="`) in `line`.
fn number_after(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_sv1_through_our_translator_proxy_to_solo_mining_server() {
    let (mut server, port) = solo_server().await;
    let (proxy_bin, miner_bin) =
        tokio::task::spawn_blocking(|| (bin("translator-proxy"), bin("cpu-miner")))
            .await
            .unwrap();
    let sv1 = format!("127.0.0.1:{}", free_port());
    let mut proxy = PeerProcess::spawn(
        &proxy_bin,
        &["--listen", &sv1, "--upstream", &format!("127.0.0.1:{port}")],
    );
    proxy.wait_for("Sv1 translator listening", 30).await;
    let url = format!("stratum+tcp://{sv1}");
    let mut miner = PeerProcess::spawn(
        &miner_bin,
        &[
            url.as_str(),
            "--threads",
            "1",
            "--max-shares",
            "5",
            "--exit-after-secs",
            "150",
        ],
    );
    miner.wait_for("version rolling: mask=", 60).await;
    let summary = miner.wait_for("summary: ", 150).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), miner.child.wait())
        .await
        .expect("the miner exits after its summary")
        .unwrap();
    assert!(status.success(), "exit after --max-shares: {status:?}");
    let miner_accepted = number_after(&summary, "accepted=");
    assert!(miner_accepted >= 5, "{summary}");
    // A status line computed after the miner exited (the second one from now).
    while let Ok(l) = server.lines.try_recv() {
        server.log.push(l);
    }
    server.wait_for("status:", 10).await;
    let line = server.wait_for("status:", 10).await;
    assert!(
        accepted(&line) >= miner_accepted,
        "every true answer the miner counted ({miner_accepted}) was accepted upstream: {line}"
    );
}

/// The number after `shares accepted=` in a solo-mining-server status line.
fn accepted(line: &str) -> u64 {
    process::status_count(line, "shares accepted")
}
