//! The translator's start difficulty and convergence with real processes: our
//! `solo-mining-server` (every channel at the easiest target, so the upstream never limits
//! the miner's difficulty), `translator-proxy`, and our `cpu-miner` in Sv1 mode on one thread.
//!
//! - A miner far faster than its start difficulty (1000x, from its own measured hashrate)
//!   sends shares at its target rate (within 2x) after 30 s: the translator estimated its
//!   hashrate from its first shares and jumped (vardiff alone needs 10x steps of 16 s).
//! - A miner that sends `mining.suggest_difficulty` starts at its suggestion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tower_stratum_test_kit::process::{solo_server_with, status_count, workspace_bin, PeerProcess};
use tower_stratum_test_kit::solo::TempFile;

/// Shares per minute the translator aims each miner at in these tests (raised from 10, so a
/// measuring window holds tens of shares).
const SPM: f64 = 120.0;

async fn bin(name: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || workspace_bin(name))
        .await
        .unwrap()
}

/// `cpu-miner --benchmark` on one thread for 3 s: H/s.
async fn one_thread_hashrate(miner: &std::path::Path) -> f64 {
    let out = tokio::process::Command::new(miner)
        .args(["--benchmark", "--threads", "1", "--exit-after-secs", "3"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("{text}"));
    // "summary: 3.0 s, N hashes, average R H/s (...)"
    let rate: f64 = line
        .split("average ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(rate > 0.0, "{line}");
    rate
}

/// The solo server (easiest targets, no simulated blocks) and a translator in front of it
/// with `extra` TOML; returns both and the translator's Sv1 port.
async fn stack(extra: &str) -> (PeerProcess, PeerProcess, u16) {
    let (server, port) = solo_server_with(
        &bin("solo-mining-server").await,
        "shares_per_minute = 1000000000.0\nstatus_interval_secs = 1\n\n[template_source]\nkind = \"embedded\"\ninterval_secs = 0\n",
    )
    .await;
    let sv1 = tower_stratum_test_kit::process::free_port();
    let cfg = TempFile::new(
        "translator.toml",
        &format!(
            "listen = \"127.0.0.1:{sv1}\"\nstatus_interval_secs = 1\nshares_per_minute = {SPM:.1}\n{extra}\n[[upstreams]]\naddress = \"127.0.0.1:{port}\"\nauthority_public_key = \"{}\"\n",
            tower_stratum_codec::SRI_TEST_AUTHORITY_PUBLIC_KEY
        ),
    );
    let mut proxy = PeerProcess::spawn(
        &bin("translator-proxy").await,
        &["--config", cfg.to_str().unwrap()],
    );
    proxy.keep(cfg);
    proxy.wait_for("upstream=connected", 60).await;
    (server, proxy, sv1)
}

/// The next translator status line: (when it arrived, shares accepted).
async fn accepted_now(proxy: &mut PeerProcess) -> (Instant, u64) {
    let line = proxy.wait_for("status: upstream=", 10).await;
    (Instant::now(), status_count(&line, "shares accepted"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_1000x_faster_than_its_start_is_at_its_target_rate_after_30_s() {
    let miner_bin = bin("cpu-miner").await;
    let h = one_thread_hashrate(&miner_bin).await;
    // Start 1000x too easy for this miner (vardiff alone: three 10x steps of at least 16 s).
    let right = h * 60.0 / SPM / 4_294_967_296.0;
    let start = right / 1000.0;
    let (_server, mut proxy, sv1) = stack(&format!("start_difficulty = {start:e}\n")).await;
    let url = format!("stratum+tcp://127.0.0.1:{sv1}");
    let mut miner = PeerProcess::spawn(
        &miner_bin,
        &[
            &url,
            "--threads",
            "1",
            "--suggest-difficulty",
            "0",
            "--user",
            "acct.fast",
        ],
    );
    miner.wait_for("share accepted", 60).await;
    let t0 = Instant::now();
    // Skip the first 30 s, then count the shares the upstream accepted over 25 s.
    let mut first = accepted_now(&mut proxy).await;
    while first.0 < t0 + Duration::from_secs(30) {
        first = accepted_now(&mut proxy).await;
    }
    let mut last = accepted_now(&mut proxy).await;
    while last.0 < first.0 + Duration::from_secs(25) {
        last = accepted_now(&mut proxy).await;
    }
    // VARDIFF_TEST_LOG=1 prints the proxy log of a passing run too (with PEER_RUST_LOG=debug).
    if std::env::var("VARDIFF_TEST_LOG").is_ok() {
        eprintln!("{}", proxy.log.join("\n"));
    }
    let minutes = (last.0 - first.0).as_secs_f64() / 60.0;
    let rate = (last.1 - first.1) as f64 / minutes;
    println!(
        "miner {h:.0} H/s, start difficulty {start:e} (right: {right:e}): {rate:.1} shares/min after 30 s (target {SPM})"
    );
    assert!(
        (SPM / 2.0..=SPM * 2.0).contains(&rate),
        "{rate:.1} shares/min, target {SPM}: miner {h:.0} H/s started at {start:e}; log:\n{}",
        proxy.log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suggested_difficulty_is_the_start() {
    let (_server, _proxy, sv1) = stack("").await;
    let url = format!("stratum+tcp://127.0.0.1:{sv1}");
    let mut miner = PeerProcess::spawn(
        &bin("cpu-miner").await,
        &[
            &url,
            "--threads",
            "1",
            "--suggest-difficulty",
            "0.0001",
            "--dump-protocol",
        ],
    );
    // Sent before mining.authorize: the first difficulty is the suggestion, not the
    // translator-proxy default (16384).
    miner.wait_for("suggested difficulty: 0.0001", 60).await;
    let set = miner
        .wait_for("\"method\":\"mining.set_difficulty\"", 30)
        .await;
    assert!(
        set.starts_with("<- ") && set.contains("\"params\":[0.0001]"),
        "the first difficulty: {set}"
    );
    miner.wait_for("share accepted", 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_miner_that_suggests_nothing_finds_shares_on_the_asic_default_within_a_minute() {
    // translator-proxy's defaults: start at 16384 (about 10^8 times too hard for this
    // miner), first-share search every 3 s.
    let (_server, _proxy, sv1) = stack("").await;
    let url = format!("stratum+tcp://127.0.0.1:{sv1}");
    let mut miner = PeerProcess::spawn(
        &bin("cpu-miner").await,
        &[&url, "--threads", "1", "--suggest-difficulty", "0"],
    );
    miner.wait_for("difficulty: 16384", 60).await;
    let t0 = Instant::now();
    miner.wait_for("share accepted", 90).await;
    println!("first share after {:.1} s", t0.elapsed().as_secs_f64());
}
