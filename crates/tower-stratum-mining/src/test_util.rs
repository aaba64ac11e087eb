//! Test helpers (feature `test-util`): Template Distribution messages for an empty block, and
//! a tiny CPU miner that solves the jobs a [`MiningServer`](crate::MiningServer) sends.
//!
//! Not for production: the templates have fixed, made-up chain data, and the miner only suits
//! very easy targets (a few hundred hashes per share). Helpers panic (`expect`) on inputs no
//! test should give them (a merkle path over 255 nodes).
#![allow(clippy::expect_used)]

use crate::share_math;
use tower_stratum_core::stratum_core::binary_sv2::{Seq0255Owned, U256Owned};
use tower_stratum_core::stratum_core::bitcoin::consensus::Encodable;
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::script::Builder;
use tower_stratum_core::stratum_core::bitcoin::{
    Amount, Block, ScriptBuf, Target, TxOut, WitnessMerkleNode,
};
use tower_stratum_core::stratum_core::mining_sv2::{NewExtendedMiningJobOwned, NewMiningJobOwned};
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned,
};

/// Regtest `nBits` (`0x207fffff`): about every second hash solves a block.
pub const REGTEST_NBITS: u32 = 0x207f_ffff;
/// Mainnet difficulty-1 `nBits` (`0x1d00ffff`): no test share will ever solve a block.
pub const HARD_NBITS: u32 = 0x1d00_ffff;
/// The `header_timestamp` of the test tips.
pub const TIP_TIME: u32 = 1_700_000_000;

/// The BIP141 witness commitment output of a block with no transactions besides the coinbase
/// (witness root of the coinbase's zero wtxid, reserved value 32 zero bytes).
pub fn empty_block_witness_commitment() -> TxOut {
    let commitment = Block::compute_witness_commitment(&WitnessMerkleNode::all_zeros(), &[0; 32]);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(commitment.as_byte_array());
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(script),
    }
}

/// A `NewTemplate` for an empty block at `height` (BIP34 `coinbase_prefix`), paying
/// `value_sat`, carrying the witness commitment output, with merkle path `merkle_path`
/// (empty for an empty block).
pub fn template(
    template_id: u64,
    future: bool,
    height: u32,
    value_sat: u64,
    merkle_path: Vec<[u8; 32]>,
) -> NewTemplateOwned {
    let prefix = Builder::new().push_int(i64::from(height)).into_script();
    let mut outputs = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = empty_block_witness_commitment().consensus_encode(&mut outputs);
    let path: Vec<U256Owned> = merkle_path.into_iter().map(U256Owned::from).collect();
    NewTemplateOwned {
        template_id,
        future_template: future,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: prefix
            .to_bytes()
            .try_into()
            .expect("BIP34 push < 255 bytes"),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: value_sat,
        coinbase_tx_outputs_count: 1,
        coinbase_tx_outputs: outputs.try_into().expect("one output < 64 KiB"),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0255Owned::new(path).expect("merkle path of at most 255 nodes"),
    }
}

/// A Template Distribution `SetNewPrevHash` for `template_id` on tip `prev_hash` (header byte
/// order), at [`TIP_TIME`], with `nbits` and the matching target.
pub fn prev_hash(template_id: u64, prev_hash: [u8; 32], nbits: u32) -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        template_id,
        prev_hash: U256Owned::from(prev_hash),
        header_timestamp: TIP_TIME,
        n_bits: nbits,
        target: U256Owned::from(share_math::nbits_to_target(nbits).to_le_bytes()),
    }
}

/// A solved header: nonce, hash (internal byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solution {
    /// The header nonce.
    pub nonce: u32,
    /// `sha256d(header)`, internal byte order.
    pub hash: [u8; 32],
}

/// Searches nonces from `start` for a header of `merkle_root` whose hash meets `target` and
/// satisfies `accept` (e.g. "does not meet the network target"). `None` after 2^20 tries.
#[allow(clippy::too_many_arguments)]
pub fn solve(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    target: &Target,
    start: u32,
    accept: impl Fn(&[u8; 32]) -> bool,
) -> Option<Solution> {
    (start..start.saturating_add(1 << 20)).find_map(|nonce| {
        let header = share_math::header_bytes(version, prev_hash, merkle_root, ntime, nbits, nonce);
        let hash = share_math::header_hash(&header);
        (share_math::hash_meets_target(&hash, target) && accept(&hash))
            .then_some(Solution { nonce, hash })
    })
}

/// The merkle root a standard job commits to.
pub fn standard_merkle_root(job: &NewMiningJobOwned) -> [u8; 32] {
    job.merkle_root.to_array()
}

/// The merkle root of an extended job for `extranonce_prefix || extranonce`, as a miner
/// computes it (spec 5.3.16). `None` if the coinbase does not parse.
pub fn extended_merkle_root(
    job: &NewExtendedMiningJobOwned,
    extranonce_prefix: &[u8],
    extranonce: &[u8],
) -> Option<[u8; 32]> {
    let mut full = extranonce_prefix.to_vec();
    full.extend_from_slice(extranonce);
    let path: Vec<[u8; 32]> = job.merkle_path.iter().map(|n| n.to_array()).collect();
    share_math::merkle_root(
        job.coinbase_tx_prefix.as_bytes(),
        &full,
        job.coinbase_tx_suffix.as_bytes(),
        &path,
    )
}

/// A made-up outpoint: txid of 32 bytes `n`, output `vout`.
pub fn outpoint(n: u8, vout: u32) -> tower_stratum_core::stratum_core::bitcoin::OutPoint {
    use tower_stratum_core::stratum_core::bitcoin::{OutPoint, Txid};
    OutPoint::new(Txid::from_byte_array([n; 32]), vout)
}

/// A version-2 transaction spending `inputs` (with an `OP_TRUE` witness when `witness`, so it
/// is SegWit, else none) into `outputs` P2WSH(`OP_TRUE`) outputs of 1,000 sat each. Not
/// checked for fees or signatures: for block-structure tests.
pub fn tx_spending(
    inputs: &[tower_stratum_core::stratum_core::bitcoin::OutPoint],
    outputs: usize,
    witness: bool,
) -> tower_stratum_core::stratum_core::bitcoin::Transaction {
    use tower_stratum_core::stratum_core::bitcoin::{
        absolute::LockTime, transaction::Version, Sequence, Transaction, TxIn, Witness,
    };
    let op_true = ScriptBuf::from_bytes(vec![0x51]);
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|op| TxIn {
                previous_output: *op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: if witness {
                    Witness::from_slice(&[op_true.as_bytes()])
                } else {
                    Witness::new()
                },
            })
            .collect(),
        output: (0..outputs)
            .map(|_| TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::new_p2wsh(&op_true.wscript_hash()),
            })
            .collect(),
    }
}

/// A legacy parent (2 outputs), its SegWit child spending the parent's first output, and an
/// unrelated legacy transaction, in that (valid) block order.
pub fn family() -> Vec<tower_stratum_core::stratum_core::bitcoin::Transaction> {
    use tower_stratum_core::stratum_core::bitcoin::OutPoint;
    let parent = tx_spending(&[outpoint(1, 0)], 2, false);
    let child = tx_spending(&[OutPoint::new(parent.compute_txid(), 0)], 1, true);
    let other = tx_spending(&[outpoint(2, 0)], 1, false);
    vec![parent, child, other]
}
