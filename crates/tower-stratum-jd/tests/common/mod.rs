//! Fixtures for the JDS tests and bench: connections, transactions, declared coinbases split at
//! the extranonce, messages, and a solution search at regtest difficulty.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::FutureExt;
use std::future::Future;
use tower_stratum_core::handler::Sv2JobDeclarationServerHandler;
use tower_stratum_core::message::JobDeclarationOwned;
use tower_stratum_core::session::ConnectionInfo;
use tower_stratum_core::stratum_core::bitcoin::absolute::LockTime;
use tower_stratum_core::stratum_core::bitcoin::block::{Header, Version as BlockVersion};
use tower_stratum_core::stratum_core::bitcoin::consensus::serialize;
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::script::{Builder, PushBytesBuf};
use tower_stratum_core::stratum_core::bitcoin::transaction::Version;
use tower_stratum_core::stratum_core::bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Txid, Witness, Wtxid,
};
use tower_stratum_core::stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, DeclareMiningJobOwned, ProvideMissingTransactionsSuccessOwned,
    PushSolutionOwned,
};
use tower_stratum_core::{
    Action, Actions, ConnectionContext, ConnectionId, Role, Subprotocol, Sv2Message,
};
use tower_stratum_jd::{
    ChainTip, JdNode, JobDeclarationServer, JobDeclarationServerConfig, MemoryNode,
};

/// Regtest `nBits`: about every other header hash meets it.
pub(crate) const REGTEST_NBITS: u32 = 0x207f_ffff;
/// The tip the tests build on.
pub(crate) const TIP_HEIGHT: u64 = 100;
/// Extranonce length of the test coinbases, in bytes.
pub(crate) const EXTRANONCE_LEN: usize = 8;

pub(crate) fn run<F: Future>(f: F) -> F::Output {
    f.now_or_never()
        .expect("the handler's futures are always ready")
}

pub(crate) fn ctx(id: u64) -> ConnectionContext {
    ConnectionContext {
        id: ConnectionId(id),
        peer: None,
        role: Role::Server,
        info: ConnectionInfo {
            protocol: Subprotocol::JobDeclaration,
            version: 2,
            flags: 1,
            success_flags: 0,
            extensions: Default::default(),
        },
    }
}

pub(crate) fn tip() -> ChainTip {
    ChainTip {
        hash: BlockHash::from_byte_array([0x11; 32]),
        height: TIP_HEIGHT,
    }
}

/// P2WPKH-shaped pool payout script.
pub(crate) fn payout_script() -> ScriptBuf {
    let mut s = vec![0x00, 0x14];
    s.extend_from_slice(&[0xab; 20]);
    ScriptBuf::from_bytes(s)
}

/// An `OP_RETURN` the pool imposes.
pub(crate) fn pool_op_return() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![0x6a, 0x04, b'p', b'o', b'o', b'l'])
}

pub(crate) fn config() -> JobDeclarationServerConfig {
    let mut c = JobDeclarationServerConfig::new(payout_script());
    c.additional_outputs = vec![pool_op_return()];
    c
}

pub(crate) fn server(node: MemoryNode) -> JobDeclarationServer<MemoryNode> {
    JobDeclarationServer::new(config(), node).unwrap()
}

/// A SegWit transaction spending a made-up outpoint `i` (distinct wtxid per `i`).
pub(crate) fn tx(i: u32) -> Transaction {
    let mut prev = [0u8; 32];
    prev[..4].copy_from_slice(&i.to_le_bytes());
    prev[31] = 0x01;
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array(prev),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![0x30; 72], vec![0x02; 33]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: payout_script(),
        }],
    }
}

/// `n` transactions and their wtxids.
pub(crate) fn txs(n: u32) -> (Vec<Transaction>, Vec<Wtxid>) {
    let t: Vec<Transaction> = (0..n).map(tx).collect();
    let w = t.iter().map(|t| t.compute_wtxid()).collect();
    (t, w)
}

/// The standard outputs of a declared coinbase: the pool payout (`payout` sat) and the pool's
/// `OP_RETURN`.
pub(crate) fn pool_outputs(payout: u64) -> Vec<TxOut> {
    vec![
        TxOut {
            value: Amount::from_sat(payout),
            script_pubkey: payout_script(),
        },
        TxOut {
            value: Amount::ZERO,
            script_pubkey: pool_op_return(),
        },
    ]
}

/// The BIP141 commitment output for `wtxids` with a zero witness reserved value.
pub(crate) fn witness_commitment_output(wtxids: &[Wtxid]) -> TxOut {
    let mut hashes = vec![[0u8; 32]];
    hashes.extend(wtxids.iter().map(|w| w.to_byte_array()));
    let root = tower_stratum_core::share_math::merkle_root_of_txids(&hashes).unwrap();
    let root = tower_stratum_core::stratum_core::bitcoin::WitnessMerkleNode::from_byte_array(root);
    let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(commitment.as_byte_array());
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(script),
    }
}

/// A SegWit coinbase at `height` with `outputs`, its scriptSig `push(height) push8(extranonce)`.
pub(crate) fn coinbase_tx(
    height: u64,
    outputs: Vec<TxOut>,
    extranonce: [u8; EXTRANONCE_LEN],
) -> Transaction {
    let script_sig = Builder::new()
        .push_int(height as i64)
        .push_slice(PushBytesBuf::try_from(extranonce.to_vec()).unwrap())
        .into_script();
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: outputs,
    }
}

/// `(coinbase_tx_prefix, coinbase_tx_suffix)` of `coinbase_tx(height, outputs, _)`: split around
/// the extranonce, BIP141 fields kept (spec 6.4.4).
pub(crate) fn split_coinbase(height: u64, outputs: Vec<TxOut>) -> (Vec<u8>, Vec<u8>) {
    let marker = [0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8];
    let raw = serialize(&coinbase_tx(height, outputs, marker));
    let at = raw
        .windows(EXTRANONCE_LEN)
        .position(|w| w == marker)
        .unwrap();
    (raw[..at].to_vec(), raw[at + EXTRANONCE_LEN..].to_vec())
}

/// A well-formed job on [`tip`] for `wtxids`: the pool outputs paying `payout` and the witness
/// commitment.
pub(crate) fn job_parts(wtxids: &[Wtxid], payout: u64) -> (Vec<u8>, Vec<u8>) {
    let mut outputs = pool_outputs(payout);
    outputs.push(witness_commitment_output(wtxids));
    split_coinbase(TIP_HEIGHT + 1, outputs)
}

pub(crate) fn allocate_msg(request_id: u32) -> AllocateMiningJobTokenOwned {
    AllocateMiningJobTokenOwned {
        user_identifier: "miner".try_into().unwrap(),
        request_id,
    }
}

pub(crate) fn declare_msg(
    request_id: u32,
    token: &[u8],
    prefix: &[u8],
    suffix: &[u8],
    wtxids: &[Wtxid],
) -> DeclareMiningJobOwned {
    let list: Vec<_> = wtxids.iter().map(|w| w.to_byte_array().into()).collect();
    DeclareMiningJobOwned {
        request_id,
        mining_job_token: token.to_vec().try_into().unwrap(),
        version: 0x2000_0000,
        coinbase_tx_prefix: prefix.to_vec().try_into().unwrap(),
        coinbase_tx_suffix: suffix.to_vec().try_into().unwrap(),
        wtxid_list: list.try_into().unwrap(),
        excess_data: Vec::new().try_into().unwrap(),
    }
}

pub(crate) fn provide_msg(
    request_id: u32,
    txs: &[Vec<u8>],
) -> ProvideMissingTransactionsSuccessOwned {
    let list: Vec<_> = txs.iter().map(|t| t.clone().try_into().unwrap()).collect();
    ProvideMissingTransactionsSuccessOwned {
        request_id,
        transaction_list: list.try_into().unwrap(),
    }
}

/// The one message of `a` (a reply).
pub(crate) fn reply(a: &Actions) -> &JobDeclarationOwned {
    assert_eq!(a.len(), 1, "{a:?}");
    match &a.as_slice()[0] {
        Action::Reply(Sv2Message::JobDeclaration(m)) => m,
        other => panic!("not a JD reply: {other:?}"),
    }
}

/// The `error_code` of a `DeclareMiningJob.Error` reply.
pub(crate) fn error_code(a: &Actions) -> String {
    match reply(a) {
        JobDeclarationOwned::DeclareMiningJobError(e) => {
            String::from_utf8(e.error_code.as_bytes().to_vec()).unwrap()
        }
        other => panic!("not DeclareMiningJob.Error: {other:?}"),
    }
}

/// Allocates a token on `conn` and returns its bytes.
pub(crate) fn allocate<N: JdNode>(jds: &mut JobDeclarationServer<N>, conn: u64) -> Vec<u8> {
    let a = run(jds.handle_allocate_mining_job_token(ctx(conn), allocate_msg(7)));
    match reply(&a) {
        JobDeclarationOwned::AllocateMiningJobTokenSuccess(s) => {
            s.mining_job_token.as_bytes().to_vec()
        }
        other => panic!("not AllocateMiningJobToken.Success: {other:?}"),
    }
}

/// The block of the job `(prefix, suffix, txs)` on [`tip`] with the fixed test extranonce and
/// `nonce`.
pub(crate) fn block_for(prefix: &[u8], suffix: &[u8], txs: &[Transaction], nonce: u32) -> Block {
    let mut raw = prefix.to_vec();
    raw.extend_from_slice(&EXTRANONCE);
    raw.extend_from_slice(suffix);
    let coinbase: Transaction =
        tower_stratum_core::stratum_core::bitcoin::consensus::deserialize(&raw).unwrap();
    let mut txdata = vec![coinbase];
    txdata.extend(txs.iter().cloned());
    let mut block = Block {
        header: Header {
            version: BlockVersion::from_consensus(0x2000_0000),
            prev_blockhash: tip().hash,
            merkle_root: TxMerkleNode::all_zeros(),
            time: 1_700_000_000,
            bits: CompactTarget::from_consensus(REGTEST_NBITS),
            nonce,
        },
        txdata,
    };
    block.header.merkle_root = block.compute_merkle_root().unwrap();
    block
}

pub(crate) const EXTRANONCE: [u8; EXTRANONCE_LEN] = [0x42; EXTRANONCE_LEN];

pub(crate) fn meets_target(b: &Block) -> bool {
    b.header.validate_pow(b.header.target()).is_ok()
}

/// The `PushSolution` of `block` (from [`block_for`]).
pub(crate) fn solution_of(block: &Block) -> PushSolutionOwned {
    PushSolutionOwned {
        extranonce: EXTRANONCE.to_vec().try_into().unwrap(),
        prev_hash: tip().hash.to_byte_array().into(),
        nonce: block.header.nonce,
        ntime: block.header.time,
        nbits: REGTEST_NBITS,
        version: 0x2000_0000,
    }
}

/// A `PushSolution` for the job `(prefix, suffix, txs)` on [`tip`] whose header meets
/// [`REGTEST_NBITS`], and the block it completes.
pub(crate) fn solve(
    prefix: &[u8],
    suffix: &[u8],
    txs: &[Transaction],
) -> (PushSolutionOwned, Block) {
    let block = (0..)
        .map(|n| block_for(prefix, suffix, txs, n))
        .find(meets_target)
        .unwrap();
    (solution_of(&block), block)
}
