//! `cpu-miner` and `template-provider` as a user runs them (their own log defaults, output on
//! pipes): SIGTERM is a graceful stop with exit 0; usage errors exit 2 and runtime failures
//! exit 1 with one clear `error:` line; a rejected upstream certificate is logged at ERROR
//! once while the miner keeps retrying; a normal shutdown logs no WARN; peers are logged as
//! `peer=127.0.0.1:port`; no ANSI colours on a pipe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower_stratum_codec::{accept_noise, AuthorityKeypair, SRI_TEST_AUTHORITY_SECRET_KEY};
use tower_stratum_service::{ServerConfig, ServerTransport, Sv2ServerService};
use tower_stratum_test_kit::process::{workspace_bin, PeerProcess};
use tower_stratum_test_kit::recording::{Events, MinimalMiningServer};
use tower_stratum_test_kit::solo::seen_or_wait;
use tower_stratum_test_kit::tools::has_ansi;
use tower_stratum_test_kit::within;

async fn bin(name: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || workspace_bin(name))
        .await
        .unwrap()
}

/// Completes the Noise handshake (responder, `keys`) with every connection, counts them, hangs
/// up.
async fn handshake_only_server(keys: AuthorityKeypair) -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let keys = keys.clone();
            tokio::spawn(async move {
                let _ = accept_noise(&mut s, &keys, Duration::from_secs(3600), 1 << 16).await;
            });
        }
    });
    (address, count)
}

fn output_of(bin: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_refuses_zero_threads() {
    let out = output_of(&bin("cpu-miner").await, &["--threads", "0", "--benchmark"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_logs_a_rejected_certificate_at_error_once_and_stops_on_sigterm() {
    let (address, attempts) = handshake_only_server(AuthorityKeypair::generate()).await;
    let wrong = AuthorityKeypair::generate().public().to_string();
    let mut miner = PeerProcess::spawn_as_user(
        &bin("cpu-miner").await,
        &[
            "--url",
            &address,
            "--authority-key",
            &wrong,
            "--threads",
            "1",
            "--nominal-hashrate",
            "1000",
        ],
    );
    let line = miner.wait_for("certificate rejected", 30).await;
    assert!(line.contains("ERROR") && line.contains(&address), "{line}");
    // It keeps retrying (the key may be rotated), without repeating the line.
    within(60, "more attempts", async {
        while attempts.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    miner.sigterm();
    let status = miner.wait_exit(30).await;
    let log = miner.log.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(
        miner.count_lines(&["certificate rejected", "ERROR"]),
        1,
        "{log}"
    );
    assert!(
        miner.log.iter().any(|l| l.starts_with("summary: ")),
        "{log}"
    );
    assert!(!has_ansi(&miner.log), "no colours on a pipe: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_shutdown_is_not_a_warning_and_peers_are_addresses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let keys = AuthorityKeypair::from_secret(SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap());
    let (events, _rx) = Events::new(1024);
    let (_svc, server) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(keys)))
        .mining(MinimalMiningServer::new(events))
        .serve(listener);
    let mut miner = PeerProcess::spawn_as_user(
        &bin("cpu-miner").await,
        &[
            "--url",
            &address,
            "--threads",
            "1",
            "--nominal-hashrate",
            "1000",
        ],
    );
    let connected = miner.wait_for("connected upstream", 30).await;
    assert!(
        connected.contains(&format!("peer={address}")) && !connected.contains("Some("),
        "{connected}"
    );
    // Printed on stdout, possibly captured before the stderr line above.
    seen_or_wait(&mut miner, "channel opened", 30).await;
    miner.sigterm();
    let status = miner.wait_exit(30).await;
    let log = miner.log.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("upstream connection closed"), "{log}");
    assert_eq!(
        miner.count_lines(&["WARN"]),
        0,
        "a normal shutdown warns about nothing: {log}"
    );
    assert!(
        miner.log.iter().any(|l| l.starts_with("summary: ")),
        "{log}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_provider_stops_on_sigterm_with_exit_0() {
    let mut tp = PeerProcess::spawn_as_user(
        &bin("template-provider").await,
        &["--listen", "127.0.0.1:0"],
    );
    tp.wait_for("LISTENING 127.0.0.1:", 30).await;
    tp.sigterm();
    let status = tp.wait_exit(30).await;
    let log = tp.log.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!has_ansi(&tp.log), "no colours on a pipe: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_provider_port_clash_is_one_error_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = output_of(&bin("template-provider").await, &["--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains(&format!("cannot listen on {addr}")) && line.contains("in use"),
        "{line}"
    );
    assert!(!err.contains("Os {"), "{err}");
    let out = output_of(
        &bin("template-provider").await,
        &["--listen", "127.0.0.1:0", "--authority-secret-key", "bad"],
    );
    assert_eq!(out.status.code(), Some(2), "a bad key is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: --authority-secret-key"), "{err}");
}
