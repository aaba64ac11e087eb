//! Issue 15, "a found block is never lost", with the real binaries: `solo-mining-server` fed
//! by our `template-provider` (its own process), and `cpu-miner` finding the block (on
//! regtest every share is a block: the channel target is capped at the network target).
//!
//! - A block found while the template provider is stopped (SIGSTOP, until the server's
//!   Template Distribution connection times out) is on disk at once, is resubmitted when the
//!   provider comes back (SIGCONT), and the provider's tip becomes it (`.json` confirmed).
//! - SIGKILL right after `BLOCK FOUND`: the `.block` file is complete and valid (rust-bitcoin:
//!   merkle root, proof of work against nBits, witness commitment, BIP34 height), and
//!   `blocks submit` hands it to the provider, whose tip becomes it.
//! - A blocks directory that cannot be created: ERROR, the block is still submitted (the
//!   provider's tip becomes it), and the server keeps serving.
//!
//! Why SIGSTOP and not a restart: our `template-provider` keeps its templates in memory and a
//! Template Distribution `SubmitSolution` names a template id, so a restarted provider cannot
//! accept an old block (that case is the "abandoned / stale" path, tested deterministically in
//! tower-stratum-mining's unit tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use tower_stratum::codec::SRI_TEST_AUTHORITY_PUBLIC_KEY;
use tower_stratum::mining::{BlockStatus, BlockStore};
use tower_stratum::stratum_core::bitcoin::consensus::deserialize;
use tower_stratum::stratum_core::bitcoin::{Block, CompactTarget, Target};
use tower_stratum_test_kit::process::{workspace_bin, PeerProcess};
use tower_stratum_test_kit::solo::{
    drain, kept_path, seen_or_wait, signal, start_solo, start_template_provider, TempDir,
};
use tower_stratum_test_kit::within;

struct Bins {
    server: PathBuf,
    provider: PathBuf,
    miner: PathBuf,
}

async fn bins() -> Bins {
    tokio::task::spawn_blocking(|| Bins {
        server: workspace_bin("solo-mining-server"),
        provider: workspace_bin("template-provider"),
        miner: workspace_bin("cpu-miner"),
    })
    .await
    .unwrap()
}

/// The server's config for an Sv2 template source at `tp` with a 2 s inactivity timeout (so a
/// stopped provider is noticed quickly) and blocks kept in `blocks_dir`.
fn sv2_config(tp: &str, blocks_dir: &Path) -> String {
    format!(
        "status_interval_secs = 1\nblocks_dir = {:?}\n\
         [template_source]\nkind = \"sv2\"\naddress = \"{tp}\"\n\
         authority_public_key = \"{SRI_TEST_AUTHORITY_PUBLIC_KEY}\"\ninactivity_timeout_secs = 2\n",
        blocks_dir.display().to_string()
    )
}

/// A cpu-miner that stops after one accepted share (on regtest: one block).
fn one_share_miner(bin: &Path, server: std::net::SocketAddr) -> PeerProcess {
    let url = format!("stratum2+tcp://{server}");
    PeerProcess::spawn(
        bin,
        &[
            "--url",
            &url,
            "--threads",
            "1",
            "--max-shares",
            "1",
            "--exit-after-secs",
            "120",
        ],
    )
}

/// Server and provider running, the server's first template received; then the provider is
/// stopped and the server has seen its connection time out.
async fn server_with_stopped_provider(
    bins: &Bins,
    dir: &TempDir,
) -> (PeerProcess, std::net::SocketAddr, PeerProcess, String) {
    let (tp, tp_addr) = start_template_provider(&bins.provider).await;
    let blocks = dir.path().join("blocks");
    let (mut server, addr) =
        start_solo(&bins.server, dir.path(), &sv2_config(&tp_addr, &blocks)).await;
    server.wait_status("templates", 1, 60).await;
    signal(&tp, "STOP");
    // A quiet provider is reconnected every 2 s: only a loss after the stop counts.
    drain(&mut server);
    server
        .wait_for("template provider connection lost", 60)
        .await;
    (server, addr, tp, tp_addr)
}

/// Checks `path` is a whole, valid regtest block (rust-bitcoin) and returns it.
fn valid_block(path: &Path) -> Block {
    let bytes = std::fs::read(path).unwrap();
    let block: Block = deserialize(&bytes).expect("the .block file is a whole block");
    assert!(block.check_merkle_root(), "merkle root");
    assert_eq!(
        block.header.bits,
        CompactTarget::from_consensus(0x207f_ffff),
        "regtest nBits"
    );
    let target = Target::from_compact(block.header.bits);
    block
        .header
        .validate_pow(target)
        .expect("proof of work meets nBits");
    assert!(block.check_witness_commitment(), "witness commitment");
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_found_while_the_provider_is_stopped_is_kept_and_confirmed_when_it_returns() {
    let bins = bins().await;
    let dir = TempDir::new("found-stopped");
    let (mut server, addr, mut tp, _) = server_with_stopped_provider(&bins, &dir).await;

    let _miner = one_share_miner(&bins.miner, addr);
    let line = server.wait_for("BLOCK FOUND", 120).await;
    let path = kept_path(&line);
    // On disk as soon as it is found, while the provider cannot take it.
    let block = valid_block(&path);
    let kept = BlockStore::read(&path).unwrap();
    assert_eq!(kept.record.hash, block.block_hash().to_string());
    assert_eq!(kept.record.status, BlockStatus::Pending);
    assert_eq!(
        kept.record.height,
        tower_stratum::mining::bip34_height(block.txdata[0].input[0].script_sig.as_bytes())
    );
    // The first SubmitSolution could not be delivered.
    seen_or_wait(
        &mut server,
        "SubmitSolution while the template provider is disconnected",
        30,
    )
    .await;

    signal(&tp, "CONT");
    // The provider's tip becomes the block...
    let accepted = tp.wait_for("(solution for template", 120).await;
    assert!(
        accepted.contains(&block.block_hash().to_string()),
        "{accepted}"
    );
    // ...and the server sees it (SetNewPrevHash with the block as prev_hash).
    server.wait_for("block confirmed", 60).await;
    let kept = BlockStore::read(&path).unwrap();
    assert_eq!(kept.record.status, BlockStatus::Confirmed);
    assert!(
        kept.record.attempts.len() >= 2,
        "resubmitted after the provider came back: {:?}",
        kept.record.attempts
    );
    assert!(kept
        .record
        .attempts
        .iter()
        .skip(1)
        .any(|a| a.trigger == "tip-without-block" || a.trigger == "retry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_block_found_leaves_a_valid_block_that_can_be_submitted_by_hand() {
    let bins = bins().await;
    let dir = TempDir::new("found-sigkill");
    let (mut server, addr, mut tp, tp_addr) = server_with_stopped_provider(&bins, &dir).await;

    let _miner = one_share_miner(&bins.miner, addr);
    let line = server.wait_for("BLOCK FOUND", 120).await;
    signal(&server, "KILL");
    let _ = within(30, "the server to die", server.child.wait()).await;
    let path = kept_path(&line);
    let block = valid_block(&path);
    let kept = BlockStore::read(&path).unwrap();
    assert_eq!(kept.record.hash, block.block_hash().to_string());
    assert_eq!(kept.record.status, BlockStatus::Pending);
    // No temporary file left next to it.
    for e in std::fs::read_dir(path.parent().unwrap()).unwrap().flatten() {
        assert!(!e.file_name().to_string_lossy().ends_with(".tmp"));
    }

    // Hand submission to the provider once it is back.
    signal(&tp, "CONT");
    let out = tokio::process::Command::new(&bins.server)
        .args([
            "blocks",
            "submit",
            path.to_str().unwrap(),
            "--template-provider",
            &tp_addr,
            "--authority-key",
            SRI_TEST_AUTHORITY_PUBLIC_KEY,
            "--wait-secs",
            "60",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "blocks submit: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("CONFIRMED"), "{stdout}");
    let accepted = tp.wait_for("(solution for template", 60).await;
    assert!(accepted.contains(&block.block_hash().to_string()));

    // `blocks list --json` shows it confirmed, with the hand attempt.
    let out = tokio::process::Command::new(&bins.server)
        .args([
            "blocks",
            "list",
            "--json",
            "--blocks-dir",
            path.parent().unwrap().to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["status"], "confirmed");
    assert_eq!(list[0]["hash"], block.block_hash().to_string());
    let triggers: Vec<&str> = list[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["found", "hand"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_blocks_dir_logs_an_error_still_submits_and_keeps_serving() {
    let bins = bins().await;
    let dir = TempDir::new("found-unwritable");
    // A directory under a regular file cannot be created, whoever we are.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let (mut tp, tp_addr) = start_template_provider(&bins.provider).await;
    let (mut server, addr) = start_solo(
        &bins.server,
        dir.path(),
        &sv2_config(&tp_addr, &file.join("blocks")),
    )
    .await;
    server.wait_status("templates", 1, 60).await;

    let _miner = one_share_miner(&bins.miner, addr);
    let err = server
        .wait_for("cannot keep the found block on disk", 120)
        .await;
    assert!(err.contains("ERROR"), "{err}");
    assert!(err.contains("block_hex="), "the block is in the log: {err}");
    let line = seen_or_wait(&mut server, "BLOCK FOUND", 30).await;
    assert!(line.contains("NOT kept on disk"), "{line}");
    // Still submitted: the provider's tip becomes it.
    let accepted = tp.wait_for("(solution for template", 60).await;
    let hash = line
        .split("hash=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    assert!(accepted.contains(hash), "{accepted}");
    seen_or_wait(&mut server, "block confirmed", 60).await;

    // Still serving: another miner gets a share accepted, the server counts a second block.
    let mut miner2 = one_share_miner(&bins.miner, addr);
    miner2.wait_for("share accepted", 120).await;
    server.wait_status("blocks found", 2, 60).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "server still running"
    );
}
