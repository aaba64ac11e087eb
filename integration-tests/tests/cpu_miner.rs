//! Interop: our `cpu-miner` example (examples/cpu-miner) mining on SRI's `pool_sv2` 0.7.0, fed
//! by SRI's scripted Template Provider (`sri-harness tp`), all installed by
//! `scripts/install-peers`. Noise with SRI's public test authority key, on 127.0.0.1.
//!
//! Each test: the miner opens its channel, gets a share accepted (`SubmitShares.Success`, seen
//! through `--dump-protocol`), then the TP announces a new block (`new-block` on its stdin);
//! the miner must switch to the new job and get a share accepted on it. The only rejection
//! tolerated is `stale-share` (a share in flight while the pool switches tips).
//!
//! Also: the miner with every default (but the port) on our `solo-mining-server` example with
//! its defaults: the two default to the same authority key.
//!
//! The binaries run as child processes. They are built by `cargo build -p <package>` with this
//! test's profile and target directory (a no-op when `cargo test --workspace` already built
//! them), because `CARGO_BIN_EXE_*` only exists for a package's own tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use tokio::io::AsyncWriteExt;
use tower_stratum::codec::SRI_TEST_AUTHORITY_PUBLIC_KEY;
use tower_stratum_test_kit::process::{
    free_port, peer_bin, render_config, workspace_bin, PeerProcess,
};
use tower_stratum_test_kit::solo::TempDir;

fn cpu_miner_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("cpu-miner")).clone()
}

/// SRI's scripted TP and SRI's pool, ready for miners.
struct SriPool {
    tp: PeerProcess,
    _pool: PeerProcess,
    addr: SocketAddr,
}

impl SriPool {
    async fn start() -> Self {
        let mut tp =
            PeerProcess::spawn(&peer_bin("sri-harness"), &["tp", "--listen", "127.0.0.1:0"]);
        let line = tp.wait_for("LISTENING ", 60).await;
        let tp_addr = line.split_whitespace().last().unwrap().to_string();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = render_config(
            "pool.toml",
            &[("LISTEN_ADDR", addr.to_string()), ("TP_ADDR", tp_addr)],
        );
        let mut pool = PeerProcess::spawn(&peer_bin("pool_sv2"), &["-c", cfg.to_str().unwrap()]);
        pool.keep(cfg);
        // The pool accepts miners only after its first template + prev hash (docs/INTEROP.md).
        pool.wait_for("ready to accept connections", 120).await;
        Self {
            tp,
            _pool: pool,
            addr,
        }
    }

    /// A new block on the TP: future template + SetNewPrevHash, which the pool turns into a
    /// new job + SetNewPrevHash for every channel.
    async fn new_block(&mut self) {
        let stdin = self.tp.child.stdin.as_mut().unwrap();
        stdin.write_all(b"new-block\n").await.unwrap();
        stdin.flush().await.unwrap();
    }
}

/// The decimal number after `key` in `line`.
fn field(line: &str, key: &str) -> u32 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Runs the miner on a fresh SRI pool with `extra` arguments; see the module docs.
/// `new_job_line` is the dump line that announces the job of the new block.
async fn mine_across_a_new_block(extra: &[&str], new_job_line: &str) {
    let bin = tokio::task::spawn_blocking(cpu_miner_bin).await.unwrap();
    let mut sri = SriPool::start().await;
    let url = format!("stratum2+tcp://{}", sri.addr);
    let mut args = vec![
        "--url",
        url.as_str(),
        "--authority-key",
        SRI_TEST_AUTHORITY_PUBLIC_KEY,
        "--threads",
        "1",
        // Advertise a tenth of the measured hashrate: the pool (6 shares/min for the nominal
        // rate) then sets a target giving about one share a second.
        "--nominal-hashrate-multiplier",
        "0.1",
        "--dump-protocol",
        "--exit-after-secs",
        "300",
    ];
    args.extend_from_slice(extra);
    let mut miner = PeerProcess::spawn(&bin, &args);
    miner.wait_for("channel opened", 60).await;
    miner.wait_for("<- SubmitSharesSuccess", 120).await;
    miner.wait_for("share accepted", 30).await;

    sri.new_block().await;
    miner.wait_for(new_job_line, 60).await;
    let snph = miner.wait_for("<- SetNewPrevHash", 60).await;
    let new_job = field(&snph, "job_id=");
    // A share of the old job may still be in flight (the dump prints SetNewPrevHash before
    // the handler switches); wait for one on the new job and for its own SubmitShares.Success.
    let sequence_number = loop {
        let submit = miner.wait_for("-> SubmitShares", 120).await;
        if field(&submit, "job_id=") == new_job {
            break field(&submit, "sequence_number=");
        }
    };
    let success = miner
        .wait_for(&format!("last_sequence_number={sequence_number},"), 120)
        .await;
    assert!(
        success.starts_with("<- SubmitSharesSuccess"),
        "share {sequence_number} on job {new_job}: {success}"
    );
    for l in &miner.log {
        if l.starts_with("share rejected") {
            assert!(l.contains("error=stale-share"), "unexpected rejection: {l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_standard_channel_gets_shares_accepted_by_sri_pool() {
    // REQUIRES_STANDARD_JOBS: NewMiningJob (fixed merkle root) for every block.
    mine_across_a_new_block(&["--channel", "standard"], "<- NewMiningJob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_extended_channel_gets_shares_accepted_by_sri_pool() {
    mine_across_a_new_block(&["--channel", "extended"], "<- NewExtendedMiningJob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_standard_channel_mines_sri_group_channel_jobs() {
    // Without REQUIRES_STANDARD_JOBS, SRI's pool sends the next block's job to the group
    // channel as a NewExtendedMiningJob; the miner completes the coinbase with its
    // extranonce_prefix and submits standard shares.
    mine_across_a_new_block(
        &["--channel", "standard", "--accept-group-jobs"],
        "<- NewExtendedMiningJob(channel_id: 1,",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_defaults_mine_on_solo_mining_server_defaults() {
    let (miner_bin, server_bin) =
        tokio::task::spawn_blocking(|| (cpu_miner_bin(), workspace_bin("solo-mining-server")))
            .await
            .unwrap();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    // Every default but the port and where found blocks go (a temporary directory, not the
    // source tree the test runs in).
    let dir = TempDir::new("cpu-miner-defaults");
    let blocks = dir.path().join("blocks");
    let mut server = PeerProcess::spawn(
        &server_bin,
        &[
            "--listen",
            &listen,
            "--blocks-dir",
            blocks.to_str().unwrap(),
        ],
    );
    server.wait_for("listening", 60).await;
    let url = format!("stratum2+tcp://{listen}");
    // No --authority-key: the default (SRI's public test key) is also the server's default.
    let mut miner = PeerProcess::spawn(
        &miner_bin,
        &["--url", &url, "--threads", "1", "--max-shares", "2"],
    );
    miner.wait_for("channel opened", 60).await;
    miner.wait_for("share accepted", 120).await;
    miner.wait_for("summary:", 120).await;
    let summary = miner.log.last().unwrap().clone();
    assert!(summary.contains("rejected=0"), "{summary}");
}

/// Our `template-provider` binary and SRI's pool fed by it: this also proves SRI's TD client
/// accepts our TD server.
async fn sri_pool_on_our_template_provider() -> (PeerProcess, PeerProcess, SocketAddr) {
    let tp_bin = tokio::task::spawn_blocking(|| workspace_bin("template-provider"))
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
    let mut pool = PeerProcess::spawn(&peer_bin("pool_sv2"), &["-c", cfg.to_str().unwrap()]);
    pool.keep(cfg);
    pool.wait_for("ready to accept connections", 120).await;
    (tp, pool, addr)
}

async fn mine_on_sri_pool_fed_by_our_tp(channel: &str) {
    let bin = tokio::task::spawn_blocking(cpu_miner_bin).await.unwrap();
    let (mut tp, mut pool, addr) = sri_pool_on_our_template_provider().await;
    let url = format!("stratum2+tcp://{addr}");
    let mut miner = PeerProcess::spawn(
        &bin,
        &[
            "--url",
            &url,
            "--authority-key",
            SRI_TEST_AUTHORITY_PUBLIC_KEY,
            "--channel",
            channel,
            "--threads",
            "1",
            "--nominal-hashrate-multiplier",
            "0.1",
            "--max-shares",
            "3",
            "--exit-after-secs",
            "300",
        ],
    );
    miner.wait_for("channel opened", 60).await;
    miner.wait_for("share accepted", 120).await;
    // On regtest nearly every share is a block: SRI's pool says so and sends SubmitSolution
    // to our TP, which validates the block and moves the tip.
    pool.wait_for("Block Found", 60).await;
    let block = tp.wait_for("(solution", 60).await;
    assert!(block.starts_with("block "), "{block}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_standard_channel_on_sri_pool_fed_by_our_template_provider() {
    mine_on_sri_pool_fed_by_our_tp("standard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_miner_extended_channel_on_sri_pool_fed_by_our_template_provider() {
    mine_on_sri_pool_fed_by_our_tp("extended").await;
}
