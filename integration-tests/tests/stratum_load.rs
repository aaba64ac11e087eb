//! Smoke test of the load generator (`crates/stratum-load`, the binary) in both protocols,
//! against our `solo-mining-server` binary (embedded regtest templates, its easiest share
//! target) and, for Sv1, our translator (in process, aggregated, vardiff off, its easiest
//! difficulty) in front of it. Small and bounded: a few miners for about a second each; the
//! load generator stops by itself, and each run has a deadline.
//!
//! Checked: every connection is set up (Sv1: version rolling granted), shares are sent and all
//! answered `true` (valid shares without mining), none is left unanswered, and the counts agree
//! with the translator's and the upstream's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tower_stratum::codec::SRI_TEST_AUTHORITY_PUBLIC_KEY;
use tower_stratum_test_kit::process::{solo_server_with, status_count, workspace_bin, PeerProcess};
use tower_stratum_translator::{
    spawn, ChannelMode, TranslatorConfig, TranslatorServiceConfig, UpstreamConfig,
};

/// Our solo-mining-server on a free port: embedded regtest templates (a new tip only when a
/// block is found), shares_per_minute so high that every channel gets the easiest target and
/// vardiff never makes it harder.
async fn solo_server() -> (PeerProcess, SocketAddr) {
    let exe = tokio::task::spawn_blocking(|| workspace_bin("solo-mining-server"))
        .await
        .unwrap();
    let (server, port) = solo_server_with(
        &exe,
        "shares_per_minute = 1000000000.0\nstatus_interval_secs = 1\n\n[template_source]\nkind = \"embedded\"\ninterval_secs = 0\n",
    )
    .await;
    (server, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Runs `stratum-load shares <args> --json --quiet` (at most 120 s) and returns its report.
async fn stratum_load(args: &[&str]) -> Value {
    let exe = tokio::task::spawn_blocking(|| workspace_bin("stratum-load"))
        .await
        .unwrap();
    let child = tokio::process::Command::new(&exe)
        .arg("shares")
        .args(args)
        .args(["--json", "--quiet"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("stratum-load finishes within 120 s")
        .unwrap();
    assert!(
        out.status.success(),
        "stratum-load {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn n(r: &Value, path: &[&str]) -> u64 {
    let mut v = r;
    for k in path {
        v = &v[*k];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {r:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stratum_load_sv1_through_our_translator_and_sv2_direct() {
    let (mut server, up) = solo_server().await;

    // Sv2, straight to the server.
    let key = SRI_TEST_AUTHORITY_PUBLIC_KEY.to_string();
    let up_s = up.to_string();
    let r = stratum_load(&[
        "--addr",
        &up_s,
        "--authority-key",
        &key,
        "--channel",
        "extended",
        "-n",
        "2",
        "--rate",
        "100",
        "--in-flight",
        "2",
        "--duration-secs",
        "1",
    ])
    .await;
    assert_eq!(r["protocol"], "sv2");
    assert_eq!(n(&r, &["connect", "established"]), 2, "{r:#}");
    let sv2_sent = n(&r, &["shares", "sent_total"]);
    assert!(sv2_sent > 0, "{r:#}");
    assert_eq!(n(&r, &["shares", "accepted"]), sv2_sent, "{r:#}");
    assert_eq!(n(&r, &["shares", "rejected"]), 0, "{r:#}");

    // Sv1, through our translator.
    let cfg = TranslatorServiceConfig {
        translator: TranslatorConfig {
            mode: ChannelMode::Aggregated,
            min_difficulty: 1e-12,
            vardiff: false,
            ..TranslatorConfig::default()
        },
        upstreams: vec![UpstreamConfig {
            address: up_s.clone(),
            authority_key: Some(SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap()),
            user_identity: "stratum-load-test".into(),
        }],
        ..TranslatorServiceConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sv1 = format!("stratum+tcp://{}", listener.local_addr().unwrap());
    let t = spawn(cfg, listener).unwrap();
    let r = stratum_load(&[
        "--addr",
        &sv1,
        "-n",
        "4",
        "--rate",
        "200",
        "--in-flight",
        "4",
        "--duration-secs",
        "1",
        "--processes",
        "2",
    ])
    .await;
    assert_eq!(r["protocol"], "sv1");
    assert_eq!(r["transport"], "tcp");
    assert_eq!(n(&r, &["connect", "established"]), 4, "{r:#}");
    assert_eq!(n(&r, &["sv1", "version_rolling_granted"]), 4, "{r:#}");
    let sent = n(&r, &["shares", "sent_total"]);
    assert!(sent > 0, "{r:#}");
    assert_eq!(n(&r, &["shares", "accepted"]), sent, "all valid: {r:#}");
    assert_eq!(n(&r, &["shares", "rejected"]), 0, "{r:#}");
    assert_eq!(n(&r, &["shares", "unacknowledged"]), 0, "{r:#}");
    assert_eq!(n(&r, &["shares", "below_target"]), 0, "{r:#}");
    assert_eq!(n(&r, &["shares", "blocks"]), 0, "{r:#}");
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r:#}");
    // The proxy set a tiny difficulty (the upstream's easiest target), not difficulty 1.
    assert!(r["sv1"]["difficulty_max"].as_f64().unwrap() < 1e-6, "{r:#}");

    // Truthful: the translator answered true only for shares the upstream accepted.
    let mut stats = t.watch_stats();
    let st = tokio::time::timeout(
        Duration::from_secs(30),
        stats.wait_for(|s| s.shares_pending == 0 && s.shares_accepted >= sent),
    )
    .await
    .expect("translator stats catch up")
    .unwrap()
    .clone();
    assert_eq!(st.shares_accepted, sent);
    let line = server
        .wait_status("shares accepted", sv2_sent + sent, 30)
        .await;
    assert_eq!(status_count(&line, "shares accepted"), sv2_sent + sent);
    t.shutdown().await;
}

/// Arguments that parse but do not make a run exit with 2, the usage-error status every binary
/// uses (README "Exit codes"), with the reason on stderr; no connection is attempted.
#[tokio::test]
async fn arguments_that_make_no_run_exit_with_status_2() {
    let exe = tokio::task::spawn_blocking(|| workspace_bin("stratum-load"))
        .await
        .unwrap();
    let out = tokio::process::Command::new(&exe)
        .args([
            "connect",
            "--addr",
            "127.0.0.1:9",
            "--no-setup",
            "--open-channel",
            "standard",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("stratum-load exits at once")
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--open-channel needs SetupConnection"));
}
