//! `JobDeclarationServer` on the one runtime: served by `Sv2ServerService` over Noise on
//! loopback, driven by a raw Sv2 peer as a Full-Template JD client would drive it. The whole
//! exchange of spec 6.4: SetupConnection for Job Declaration with `DECLARE_TX_DATA`,
//! `AllocateMiningJobToken`, `DeclareMiningJob` with one transaction the node does not know,
//! `ProvideMissingTransactions` and its `.Success`, `DeclareMiningJob.Success`, `PushSolution`,
//! and the block the server reassembles reaching the node (checked with rust-bitcoin). A token
//! used twice gets `invalid-mining-job-token`; the connection keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../crates/tower-stratum-jd/tests/common/mod.rs"]
mod common;

use common::*;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower_stratum::codec::{
    AuthorityKeypair, SRI_TEST_AUTHORITY_PUBLIC_KEY, SRI_TEST_AUTHORITY_SECRET_KEY,
};
use tower_stratum::{ServerConfig, ServerTransport, Sv2ServerService};
use tower_stratum_core::message::JobDeclarationOwned;
use tower_stratum_core::stratum_core::bitcoin::consensus::serialize;
use tower_stratum_core::stratum_core::bitcoin::{Block, Transaction, Wtxid};
use tower_stratum_core::{Subprotocol, Sv2Message};
use tower_stratum_jd::{
    ChainTip, JdNode, JobDeclarationServer, MemoryNode, SubmitBlockError, DECLARE_TX_DATA,
};
use tower_stratum_test_kit::msg::setup_connection;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::within;

/// A `MemoryNode` that also hands every submitted block to the test.
struct ReportingNode {
    inner: MemoryNode,
    blocks: mpsc::UnboundedSender<Block>,
}

impl JdNode for ReportingNode {
    fn transaction(&self, wtxid: &Wtxid) -> Option<Arc<Transaction>> {
        self.inner.transaction(wtxid)
    }
    fn chain_tip(&self) -> Option<ChainTip> {
        self.inner.chain_tip()
    }
    fn submit_block(&mut self, block: Block) -> Result<(), SubmitBlockError> {
        let _ = self.blocks.send(block.clone());
        self.inner.submit_block(block)
    }
}

async fn recv_jd(peer: &mut RawPeer<TcpStream>) -> JobDeclarationOwned {
    match within(10, "a JD message", peer.recv()).await {
        Some(Sv2Message::JobDeclaration(m)) => m,
        other => panic!("not a JD message: {other:?}"),
    }
}

#[tokio::test]
async fn a_full_template_declaration_with_a_missing_transaction_ends_in_a_submitted_block() {
    // The node knows the first transaction, not the second (the client provides it).
    let (t, w) = txs(2);
    let mut inner = MemoryNode::new(tip());
    inner.add_transaction(t[0].clone());
    let (blocks_tx, mut blocks) = mpsc::unbounded_channel();
    let node = ReportingNode {
        inner,
        blocks: blocks_tx,
    };
    let jds = JobDeclarationServer::new(config(), node).unwrap();
    let keys = AuthorityKeypair::from_secret(SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(keys)))
        .job_declaration(jds)
        .serve(listener);

    let stream = TcpStream::connect(addr).await.unwrap();
    let mut peer = RawPeer::noise(stream, Some(SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap()))
        .await
        .unwrap();
    peer.send(setup_connection(
        Subprotocol::JobDeclaration,
        2,
        2,
        DECLARE_TX_DATA,
    ))
    .await;
    match within(10, "SetupConnection's answer", peer.recv()).await {
        Some(Sv2Message::Common(c)) => assert!(format!("{c:?}").contains("Success"), "{c:?}"),
        other => panic!("{other:?}"),
    }

    peer.send(Sv2Message::JobDeclaration(
        JobDeclarationOwned::AllocateMiningJobToken(allocate_msg(1)),
    ))
    .await;
    let token = match recv_jd(&mut peer).await {
        JobDeclarationOwned::AllocateMiningJobTokenSuccess(s) => {
            assert_eq!(s.request_id, 1);
            s.mining_job_token.as_bytes().to_vec()
        }
        other => panic!("not AllocateMiningJobToken.Success: {other:?}"),
    };

    let (prefix, suffix) = job_parts(&w, 5_000_000_000);
    peer.send(Sv2Message::JobDeclaration(
        JobDeclarationOwned::DeclareMiningJob(declare_msg(2, &token, &prefix, &suffix, &w)),
    ))
    .await;
    match recv_jd(&mut peer).await {
        JobDeclarationOwned::ProvideMissingTransactions(p) => {
            assert_eq!(p.request_id, 2);
            assert_eq!(p.unknown_tx_position_list.as_slice().to_vec(), vec![1u16]);
        }
        other => panic!("not ProvideMissingTransactions: {other:?}"),
    }
    peer.send(Sv2Message::JobDeclaration(
        JobDeclarationOwned::ProvideMissingTransactionsSuccess(provide_msg(2, &[serialize(&t[1])])),
    ))
    .await;
    match recv_jd(&mut peer).await {
        JobDeclarationOwned::DeclareMiningJobSuccess(s) => assert_eq!(s.request_id, 2),
        other => panic!("not DeclareMiningJob.Success: {other:?}"),
    }

    // The same token again: refused with the spec's code, and the connection goes on.
    peer.send(Sv2Message::JobDeclaration(
        JobDeclarationOwned::DeclareMiningJob(declare_msg(3, &token, &prefix, &suffix, &w)),
    ))
    .await;
    match recv_jd(&mut peer).await {
        JobDeclarationOwned::DeclareMiningJobError(e) => {
            assert_eq!(e.error_code.as_bytes(), b"invalid-mining-job-token");
        }
        other => panic!("not DeclareMiningJob.Error: {other:?}"),
    }

    let (solution, expected) = solve(&prefix, &suffix, &t);
    peer.send(Sv2Message::JobDeclaration(
        JobDeclarationOwned::PushSolution(solution),
    ))
    .await;
    let block = within(10, "the submitted block", blocks.recv())
        .await
        .unwrap();
    assert_eq!(block, expected);
    assert!(block.check_merkle_root());
    assert!(block.check_witness_commitment());
    assert_eq!(block.txdata.len(), 3);
    handle.shutdown().await;
}
