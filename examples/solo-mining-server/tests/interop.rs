//! The `solo-mining-server` binary against real peers (pinned, installed by
//! `scripts/install-peers`), all over Noise with the default (SRI test) authority key:
//! SRI's `mining_device` (standard channel) and SRI's `translator_sv2` (aggregated and
//! per-miner) with `para` (an independent Sv1 CPU miner) behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use tower_stratum_test_kit::process::{self, free_port, peer_bin, render_config, PeerProcess};

const SRI_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
/// para requires Bitcoin addresses as usernames.
const PARA_USER: &str = "tb1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u96w3p8";

/// Starts our server on a free port with a fast share rate and a short vardiff period; its
/// found blocks go to a temporary directory removed with it, not the package directory.
async fn solo_server(extra: &str) -> (PeerProcess, u16) {
    process::solo_server(
        &PathBuf::from(env!("CARGO_BIN_EXE_solo-mining-server")),
        extra,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_mining_device_shares_are_accepted_and_target_updates_honoured() {
    // Vardiff's SetTarget on regtest needs the network-target cap off: with it, every
    // channel's target is pinned at the (regtest) network target, which vardiff cannot move.
    let (mut server, port) = solo_server("cap_share_target_at_network = false\n").await;
    let mut dev = PeerProcess::spawn(
        &peer_bin("mining_device"),
        &[
            "--address-pool",
            &format!("127.0.0.1:{port}"),
            "--pubkey-pool",
            SRI_PUBLIC,
            "--id-device",
            "interop",
            "--id-user",
            "interop",
            "--cores",
            "1",
            // Advertise half the real hashrate: the first target is too easy, so
            // vardiff must raise it with SetTarget.
            "--nominal-hashrate-multiplier",
            "0.5",
        ],
    );
    dev.wait_for("channel opened", 60).await;
    // The target from OpenStandardMiningChannel.Success, then shares accepted.
    dev.wait_for("Received SubmitSharesSuccess", 60).await;
    // Vardiff (3 s period) moves the target with SetTarget; the device adopts it.
    dev.wait_for("Set target to", 60).await;
    dev.wait_for("Received SubmitSharesSuccess", 60).await;
    let line = server.wait_status("shares accepted", 3, 60).await;
    assert!(line.contains("rejected=0"), "{line}");
}

async fn translator_with_para(aggregated: bool) {
    let (mut server, port) = solo_server("").await;
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
    let _para = PeerProcess::spawn(
        &peer_bin("para"),
        &[
            "miner",
            &format!("127.0.0.1:{sv1_port}"),
            "--username",
            &format!("{PARA_USER}.interop"),
            "--password",
            "x",
            "--cpu-cores",
            "1",
        ],
    );
    // The translator forwards para's shares upstream and our server accepts them.
    tproxy.wait_for("SubmitSharesSuccess", 120).await;
    if !aggregated {
        // Per-miner: after the first block (regtest: about every second share) the new
        // template reaches the translator as ONE job on the group channel (id 1) for all its
        // extended channels, and shares on it are accepted too.
        tproxy
            .wait_for("NewExtendedMiningJob(channel_id: 1,", 120)
            .await;
        tproxy.wait_for("SubmitSharesSuccess", 120).await;
    }
    let line = server.wait_status("shares accepted", 1, 60).await;
    assert!(line.contains("channels=1") || !aggregated, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_translator_aggregated_with_para_shares_accepted() {
    translator_with_para(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_translator_per_miner_with_para_shares_accepted() {
    translator_with_para(false).await;
}

/// SRI's `translator_sv2` requiring extension 0x0002: our server negotiates it and counts
/// para's shares under the worker name in each share's `user_identity` TLV (SRI sends the part
/// of the Sv1 username after the first '.', here `interop`), not under the channel's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_translator_worker_names_reach_our_per_worker_stats() {
    let (mut server, port) = solo_server("").await;
    let sv1_port = free_port();
    let cfg = render_config(
        "translator-aggregated.toml",
        &[
            ("DOWNSTREAM_HOST", "127.0.0.1".into()),
            ("DOWNSTREAM_PORT", sv1_port.to_string()),
            ("UPSTREAM_HOST", "127.0.0.1".into()),
            ("UPSTREAM_PORT", port.to_string()),
            ("MIN_HASHRATE", "10_000.0".into()),
        ],
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("supported_extensions = []"));
    std::fs::write(
        &cfg,
        text.replace(
            "supported_extensions = []",
            "supported_extensions = [2]\nrequired_extensions = [2]",
        ),
    )
    .unwrap();
    let mut tproxy =
        PeerProcess::spawn(&peer_bin("translator_sv2"), &["-c", cfg.to_str().unwrap()]);
    tproxy.keep(cfg);
    tproxy.wait_for("listening on", 60).await;
    let _para = PeerProcess::spawn(
        &peer_bin("para"),
        &[
            "miner",
            &format!("127.0.0.1:{sv1_port}"),
            "--username",
            &format!("{PARA_USER}.interop"),
            "--password",
            "x",
            "--cpu-cores",
            "1",
        ],
    );
    tproxy.wait_for("SubmitSharesSuccess", 120).await;
    // The status line is followed by one line per worker.
    let line = server.wait_for("  worker interop: ", 60).await;
    let n: u64 = line
        .split("accepted=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(n >= 1, "{line}");
    assert!(
        !server
            .log
            .iter()
            .any(|l| l.starts_with("  worker ") && !l.starts_with("  worker interop: ")),
        "every share carried the worker name: {:?}",
        server.log
    );
}
