//! SRI's JD client (`jd_client_sv2` 0.6.0) on our `template-provider`, in SOLOMINING mode (a
//! standalone Sv2 mining server fed by the Template Provider), with SRI's `mining_device`
//! mining on it. Our TP keeps a synthetic mempool (`--mempool-txs`), so after the first block
//! the templates carry transactions: the blocks SRI's JD client submits (`SubmitSolution`)
//! must rebuild, with those transactions, into valid blocks at our TP (it checks every block
//! with `validate_block` and the regtest rules before taking it as its tip).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use tower_stratum::codec::SRI_TEST_AUTHORITY_PUBLIC_KEY;
use tower_stratum_test_kit::process::{
    free_port, peer_bin, render_config, workspace_bin, PeerProcess,
};

/// `block <hash> height <h> (solution for template <id>) transactions <n>`: `n`.
fn block_transactions(line: &str) -> Option<u64> {
    if !line.contains("(solution for template") {
        return None;
    }
    line.split("transactions ").nth(1)?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_jd_client_solo_mines_blocks_with_transactions_on_our_template_provider() {
    let tp_bin = tokio::task::spawn_blocking(|| workspace_bin("template-provider"))
        .await
        .unwrap();
    let mut tp = PeerProcess::spawn(
        &tp_bin,
        &[
            "--listen",
            "127.0.0.1:0",
            "--interval-secs",
            "0",
            "--history-blocks",
            "3",
            "--mempool-txs",
            "5",
            "--mempool-interval-secs",
            "1",
        ],
    );
    let line = tp.wait_for("LISTENING ", 60).await;
    let tp_addr = line.split_whitespace().last().unwrap().to_string();

    let jdc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = render_config(
        "jd-client-solo.toml",
        &[("LISTEN_ADDR", jdc_addr.to_string()), ("TP_ADDR", tp_addr)],
    );
    let mut jdc = PeerProcess::spawn(&peer_bin("jd_client_sv2"), &["-c", cfg.to_str().unwrap()]);
    jdc.keep(cfg);
    // The JDC accepts miners once it has a template and a prev hash from the TP.
    jdc.wait_for("ready to accept connections", 120).await;

    let _miner = PeerProcess::spawn(
        &peer_bin("mining_device"),
        &[
            "--address-pool",
            &jdc_addr.to_string(),
            "--pubkey-pool",
            SRI_TEST_AUTHORITY_PUBLIC_KEY,
            "--id-device",
            "jdc-interop",
            "--id-user",
            "jdc-interop",
            "--cores",
            "1",
        ],
    );

    // Regtest difficulty: blocks come quickly. Wait for one that carries mempool transactions.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    let with_transactions = loop {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs()
            .max(1);
        let line = tp.wait_for("(solution for template", left).await;
        if block_transactions(&line).is_some_and(|n| n > 0) {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no block with transactions from SRI's JD client; TP log:\n{}",
            tp.log.join("\n")
        );
    };
    println!("{with_transactions}");
    assert!(
        !tp.log.iter().any(|l| l.contains("rejected")),
        "a solution was rejected: {with_transactions}\n{}",
        tp.log.join("\n")
    );
}
