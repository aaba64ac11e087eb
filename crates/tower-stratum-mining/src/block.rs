//! Blocks found by the server's channels: [`FoundBlock`] and its assembly.
//!
//! A share whose header hash meets the network target (the `nBits` of the chain tip) solves a
//! block. The server then (1) sends `SubmitSolution` (spec 7.7) to the template source, which
//! owns the template's transactions and broadcasts the block, and (2) keeps its own copy here.
//!
//! # What a full block needs
//! `header || CompactSize(tx count) || coinbase (with its BIP141 witness) || transactions`.
//! The header and the coinbase are known from the share and the job. Template Distribution's
//! `NewTemplate` carries only the merkle path, not the transactions: for a template with no
//! transactions (empty merkle path) the coinbase alone makes the block; otherwise the
//! transactions come from `RequestTransactionData.Success` (spec 7.5, 7.6), which the server
//! requests when [`request_transaction_data`](crate::MiningServerConfig::request_transaction_data)
//! is set. Until (unless) they arrive, [`FoundBlock::block`] is `None`.

use crate::share_math;
use std::collections::{BTreeMap, BTreeSet};
use tower_stratum_core::stratum_core::bitcoin::consensus::{deserialize, encode, Encodable};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::{
    Block, BlockHash, OutPoint, Transaction, Txid, VarInt,
};
use tower_stratum_core::ConnectionId;

/// A block solved by a share, as the server kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundBlock {
    /// The block hash (`sha256d` of the header; `Display` prints the usual reversed hex).
    pub hash: BlockHash,
    /// Block height from the coinbase's BIP34 push, if the template's `coinbase_prefix` has one.
    pub height: Option<u64>,
    /// The Template Distribution `template_id` the job was built from.
    pub template_id: u64,
    /// The connection whose share solved it.
    pub connection: ConnectionId,
    /// The channel whose share solved it.
    pub channel_id: u32,
    /// The worker credited with the share: the `user_identity` TLV of the share (extension
    /// `0x0002`) if it had one, else the channel's `user_identity`; empty if unknown.
    pub user_identity: String,
    /// The 80-byte header (consensus serialization).
    pub header: [u8; 80],
    /// The coinbase transaction, consensus-serialized **with** its BIP141 marker, flag and
    /// witness (the 32-byte zero witness reserved value) — the bytes `SubmitSolution` carries.
    pub coinbase_tx: Vec<u8>,
    /// Number of non-coinbase transactions: `Some(0)` for an empty template (empty merkle
    /// path), `Some(n)` once the template's transaction list is known, `None` before.
    pub transaction_count: Option<usize>,
    /// The whole serialized block (`header || tx count || coinbase || transactions`), ready for
    /// `submitblock`, when it could be assembled: always for an empty template; for a template
    /// with transactions once `RequestTransactionData.Success` brought them and they matched
    /// the header's merkle root. `None` otherwise.
    pub block: Option<Vec<u8>>,
}

impl FoundBlock {
    /// Validates the assembled block ([`validate_block`] with this block's BIP34 height), or
    /// `None` while it is not assembled ([`FoundBlock::block`] is `None`).
    pub fn validate(&self) -> Option<Result<(), BlockValidationError>> {
        let bytes = self.block.as_ref()?;
        Some(match deserialize::<Block>(bytes) {
            Ok(block) => validate_block(&block, self.height),
            Err(e) => Err(BlockValidationError::Decode(e.to_string())),
        })
    }
}

/// Reads the BIP34 block height at the start of a coinbase `scriptSig` (the template's
/// `coinbase_prefix`): `OP_0` (0), `OP_1`..`OP_16` (1-16, Bitcoin Core's encoding of small
/// heights), or a 1-8 byte little-endian push. `None` if the script starts otherwise.
pub fn bip34_height(script_sig: &[u8]) -> Option<u64> {
    let (&op, rest) = script_sig.split_first()?;
    match op {
        0x00 => Some(0),
        0x51..=0x60 => Some(u64::from(op - 0x50)),
        n @ 0x01..=0x08 => {
            let bytes = rest.get(..usize::from(n))?;
            let mut v: u64 = 0;
            for (i, b) in bytes.iter().enumerate() {
                v |= u64::from(*b) << (8 * i);
            }
            Some(v)
        }
        _ => None,
    }
}

/// Serializes a block from its header, coinbase (with witness) and the other transactions
/// (each consensus-serialized, with witness where they have one).
pub fn serialize_block(header: &[u8; 80], coinbase_tx: &[u8], transactions: &[Vec<u8>]) -> Vec<u8> {
    let tx_bytes: usize = transactions.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(80 + 9 + coinbase_tx.len() + tx_bytes);
    out.extend_from_slice(header);
    let count = VarInt(1 + transactions.len() as u64);
    // Writing into a Vec cannot fail.
    let _ = count.consensus_encode(&mut out);
    out.extend_from_slice(coinbase_tx);
    for tx in transactions {
        out.extend_from_slice(tx);
    }
    out
}

/// Why the transactions of a template could not complete a found block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssemblyError {
    /// A transaction of the list does not deserialize.
    #[error("transaction {index} does not deserialize: {detail}")]
    BadTransaction {
        /// Position in the template's list (0 = first after the coinbase).
        index: usize,
        /// The decoder's message.
        detail: String,
    },
    /// The coinbase does not deserialize.
    #[error("coinbase does not deserialize: {0}")]
    BadCoinbase(String),
    /// The list's merkle root differs from the header's: not this template's transactions.
    #[error("transactions do not match the header's merkle root")]
    MerkleMismatch,
}

/// Largest block weight, weight units (BIP141 `MAX_BLOCK_WEIGHT`).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;

/// Largest block signature-operation cost (BIP141 `MAX_BLOCK_SIGOPS_COST`).
pub const MAX_BLOCK_SIGOPS_COST: u64 = 80_000;

const COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// Why a block is not valid ([`validate_block`]; the variants follow its order of checks and
/// name Bitcoin Core's reject reason where there is one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockValidationError {
    /// The bytes are not one consensus-serialized block.
    #[error("cannot decode block: {0}")]
    Decode(String),
    /// The block has no transactions.
    #[error("block has no transactions")]
    NoTransactions,
    /// The first transaction is not a coinbase (`bad-cb-missing`).
    #[error("first transaction is not a coinbase")]
    FirstNotCoinbase,
    /// A transaction other than the first is a coinbase (`bad-cb-multiple`).
    #[error("transaction {index} is a second coinbase")]
    ExtraCoinbase {
        /// Its position in the block.
        index: usize,
    },
    /// The header's merkle root is not the root of the transactions' txids (`bad-txnmrklroot`).
    #[error("merkle root does not match the transactions")]
    BadMerkleRoot,
    /// Without witness data the block is larger than 1,000,000 bytes (`bad-blk-length`).
    #[error("block is {0} bytes without witness data, more than 1,000,000")]
    TooLarge(usize),
    /// The block weighs more than [`MAX_BLOCK_WEIGHT`] (`bad-blk-weight`).
    #[error("block weight {0} WU exceeds the limit")]
    TooHeavy(u64),
    /// A transaction appears twice (`bad-txns-duplicate`; also CVE-2012-2459's
    /// merkle-preserving duplication).
    #[error("transaction {txid} appears twice (again at {index})")]
    DuplicateTransaction {
        /// Its txid.
        txid: Txid,
        /// Position of the second copy.
        index: usize,
    },
    /// A transaction other than the coinbase has no inputs or no outputs
    /// (`bad-txns-vin-empty`, `bad-txns-vout-empty`).
    #[error("transaction {index} has no inputs or no outputs")]
    EmptyTransaction {
        /// Its position in the block.
        index: usize,
    },
    /// A coin is spent twice: by one transaction (`bad-txns-inputs-duplicate`) or by two
    /// transactions of the block (a conflict).
    #[error("transaction {index} spends {outpoint}, already spent in this block")]
    DoubleSpend {
        /// Position of the second spender.
        index: usize,
        /// The coin.
        outpoint: OutPoint,
    },
    /// A transaction spends an output of the block's coinbase (immature), of itself or of a
    /// later transaction (a child before its parent), or an output an earlier transaction
    /// does not have.
    #[error("transaction {index} spends {outpoint}, which is not an earlier output of the block")]
    BadInBlockSpend {
        /// Position of the spender.
        index: usize,
        /// The coin.
        outpoint: OutPoint,
    },
    /// The header hash does not meet the target its `nBits` encodes (`high-hash`).
    #[error("block hash {hash} does not meet its nBits target")]
    BadProofOfWork {
        /// The header hash (displayed, byte-reversed, order).
        hash: BlockHash,
    },
    /// The coinbase `scriptSig` is shorter than 2 or longer than 100 bytes (`bad-cb-length`).
    #[error("coinbase scriptSig is {0} bytes (must be 2..=100)")]
    BadCoinbaseLength(usize),
    /// The coinbase does not start with the expected BIP34 height (`bad-cb-height`).
    #[error("coinbase height {found:?}, expected {expected}")]
    BadHeight {
        /// The height the caller expects.
        expected: u64,
        /// The height found ([`bip34_height`]), if one could be read.
        found: Option<u64>,
    },
    /// No coinbase output carries a witness commitment.
    #[error("coinbase has no witness commitment")]
    MissingWitnessCommitment,
    /// The coinbase witness is not one 32-byte reserved value (`bad-witness-nonce-size`).
    #[error("coinbase witness is not one 32-byte reserved value")]
    BadWitnessReservedValue,
    /// The witness commitment does not match the wtxids (`bad-witness-merkle-match`).
    #[error("witness commitment does not match")]
    BadWitnessCommitment,
    /// The block's signature-operation cost exceeds [`MAX_BLOCK_SIGOPS_COST`]
    /// (`bad-blk-sigops`; legacy sigops × 4, a lower bound: spent outputs are unknown here).
    #[error("block sigop cost {0} exceeds the limit")]
    TooManySigops(u64),
}

/// Validates a block with rust-bitcoin, on any network, without chain state. In order:
/// 1. at least one transaction, the first and only the first a coinbase;
/// 2. merkle root over all txids (`Block::check_merkle_root`);
/// 3. size without witness data at most 1,000,000 bytes, weight at most [`MAX_BLOCK_WEIGHT`];
/// 4. [`check_transactions`]: no duplicate transaction, none empty, no coin spent twice
///    (within one transaction or by two), in-block spends only of earlier outputs (parents
///    before children), none of the block's own coinbase;
/// 5. proof of work: the header hash meets the target `nBits` encodes (whether `nBits` is
///    right for the chain needs chain state and is not checked);
/// 6. coinbase `scriptSig` of 2 to 100 bytes and, when `expected_height` is given, starting
///    with that BIP34 height ([`bip34_height`]);
/// 7. BIP141 witness commitment over all wtxids (the coinbase's counted as zero), with a
///    single 32-byte witness reserved value. Required even for blocks without witness data
///    (stricter than consensus): every Sv2 template carries one;
/// 8. signature-operation cost at most [`MAX_BLOCK_SIGOPS_COST`] (legacy sigops × 4).
///
/// Not checked: the previous block hash, timestamps, `nBits` against the chain, version
/// rules, the coinbase value, and inputs spending coins of earlier blocks.
pub fn validate_block(
    block: &Block,
    expected_height: Option<u64>,
) -> Result<(), BlockValidationError> {
    let coinbase = block
        .txdata
        .first()
        .ok_or(BlockValidationError::NoTransactions)?;
    if !coinbase.is_coinbase() {
        return Err(BlockValidationError::FirstNotCoinbase);
    }
    if let Some(index) = block.txdata.iter().skip(1).position(|t| t.is_coinbase()) {
        return Err(BlockValidationError::ExtraCoinbase { index: index + 1 });
    }
    if !block.check_merkle_root() {
        return Err(BlockValidationError::BadMerkleRoot);
    }
    // Header, transaction count, transactions without witness data.
    let stripped = 80
        + VarInt(block.txdata.len() as u64).size()
        + block.txdata.iter().map(|t| t.base_size()).sum::<usize>();
    if stripped.saturating_mul(4) > MAX_BLOCK_WEIGHT as usize {
        return Err(BlockValidationError::TooLarge(stripped));
    }
    let weight = block.weight().to_wu();
    if weight > MAX_BLOCK_WEIGHT {
        return Err(BlockValidationError::TooHeavy(weight));
    }
    check_transactions(block)?;
    if block.header.validate_pow(block.header.target()).is_err() {
        return Err(BlockValidationError::BadProofOfWork {
            hash: block.block_hash(),
        });
    }
    let script_sig = coinbase
        .input
        .first()
        .map(|i| i.script_sig.as_bytes())
        .unwrap_or_default();
    if !(2..=100).contains(&script_sig.len()) {
        return Err(BlockValidationError::BadCoinbaseLength(script_sig.len()));
    }
    if let Some(expected) = expected_height {
        let found = bip34_height(script_sig);
        if found != Some(expected) {
            return Err(BlockValidationError::BadHeight { expected, found });
        }
    }
    check_witness_commitment(block, coinbase)?;
    let sigops: u64 = block
        .txdata
        .iter()
        .map(|t| t.total_sigop_cost(|_| None) as u64)
        .sum();
    if sigops > MAX_BLOCK_SIGOPS_COST {
        return Err(BlockValidationError::TooManySigops(sigops));
    }
    Ok(())
}

/// Step 4 of [`validate_block`] on its own (for a block whose header is not final yet): no
/// transaction twice, none after the coinbase without inputs or outputs, no coin spent twice,
/// and a spend of another transaction of the block only of an output it has, from a later
/// position (parents before children), never of the block's coinbase (immature).
pub fn check_transactions(block: &Block) -> Result<(), BlockValidationError> {
    // Position and output count of every transaction, by txid.
    let mut positions: BTreeMap<Txid, (usize, usize)> = BTreeMap::new();
    for (index, tx) in block.txdata.iter().enumerate() {
        let txid = tx.compute_txid();
        if positions.insert(txid, (index, tx.output.len())).is_some() {
            return Err(BlockValidationError::DuplicateTransaction { txid, index });
        }
    }
    let mut spent: BTreeSet<OutPoint> = BTreeSet::new();
    for (index, tx) in block.txdata.iter().enumerate().skip(1) {
        if tx.input.is_empty() || tx.output.is_empty() {
            return Err(BlockValidationError::EmptyTransaction { index });
        }
        for input in &tx.input {
            let outpoint = input.previous_output;
            if !spent.insert(outpoint) {
                return Err(BlockValidationError::DoubleSpend { index, outpoint });
            }
            if let Some(&(position, outputs)) = positions.get(&outpoint.txid) {
                if position == 0 || position >= index || outpoint.vout as usize >= outputs {
                    return Err(BlockValidationError::BadInBlockSpend { index, outpoint });
                }
            }
        }
    }
    Ok(())
}

fn check_witness_commitment(
    block: &Block,
    coinbase: &Transaction,
) -> Result<(), BlockValidationError> {
    let has_commitment = coinbase.output.iter().any(|o| {
        let s = o.script_pubkey.as_bytes();
        s.len() >= 38 && s[..6] == COMMITMENT_MAGIC
    });
    if !has_commitment {
        return Err(BlockValidationError::MissingWitnessCommitment);
    }
    let witness = coinbase.input.first().map(|i| &i.witness);
    if !witness.is_some_and(|w| w.len() == 1 && w.iter().all(|item| item.len() == 32)) {
        return Err(BlockValidationError::BadWitnessReservedValue);
    }
    if !block.check_witness_commitment() {
        return Err(BlockValidationError::BadWitnessCommitment);
    }
    Ok(())
}

/// Completes `block` with the template's transactions if they match its header's merkle root.
pub(crate) fn complete_with_transactions(
    block: &mut FoundBlock,
    transactions: &[Vec<u8>],
) -> Result<(), AssemblyError> {
    let coinbase: Transaction = deserialize(&block.coinbase_tx)
        .map_err(|e: encode::Error| AssemblyError::BadCoinbase(e.to_string()))?;
    let mut txids = Vec::with_capacity(transactions.len() + 1);
    txids.push(coinbase.compute_txid().to_byte_array());
    for (index, raw) in transactions.iter().enumerate() {
        let tx: Transaction =
            deserialize(raw).map_err(|e: encode::Error| AssemblyError::BadTransaction {
                index,
                detail: e.to_string(),
            })?;
        txids.push(tx.compute_txid().to_byte_array());
    }
    let mut header_root = [0u8; 32];
    header_root.copy_from_slice(&block.header[36..68]);
    if share_math::merkle_root_of_txids(&txids) != Some(header_root) {
        return Err(AssemblyError::MerkleMismatch);
    }
    block.transaction_count = Some(transactions.len());
    block.block = Some(serialize_block(
        &block.header,
        &block.coinbase_tx,
        transactions,
    ));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::test_util::{family, outpoint, tx_spending};
    use tower_stratum_core::stratum_core::bitcoin::{
        absolute::LockTime, block::Header, block::Version as BlockVersion, script::Builder,
        transaction::Version, Amount, CompactTarget, ScriptBuf, Sequence, TxIn, TxMerkleNode,
        TxOut, Witness, WitnessMerkleNode,
    };

    const HEIGHT: u64 = 300;

    fn op_true() -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51])
    }

    fn commitment(txs: &[Transaction]) -> TxOut {
        let leaves = std::iter::once(WitnessMerkleNode::all_zeros()).chain(
            txs.iter()
                .map(|t| WitnessMerkleNode::from_raw_hash(t.compute_wtxid().to_raw_hash())),
        );
        let root =
            tower_stratum_core::stratum_core::bitcoin::merkle_tree::calculate_root(leaves).unwrap();
        let c = Block::compute_witness_commitment(&root, &[0u8; 32]);
        let mut script = COMMITMENT_MAGIC.to_vec();
        script.extend_from_slice(&c.to_byte_array());
        TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(script),
        }
    }

    /// A regtest-difficulty block at [`HEIGHT`] with `txs` after a coinbase committing to them.
    fn block_with(txs: &[Transaction]) -> Block {
        let mut script_sig = Builder::new()
            .push_int(HEIGHT as i64)
            .into_script()
            .into_bytes();
        script_sig.extend_from_slice(&[0x04, 1, 2, 3, 4]);
        let coinbase = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[[0u8; 32]]),
            }],
            output: vec![
                TxOut {
                    value: Amount::from_sat(1_250_000_000),
                    script_pubkey: op_true(),
                },
                commitment(txs),
            ],
        };
        let mut b = Block {
            header: Header {
                version: BlockVersion::from_consensus(0x2000_0000),
                prev_blockhash: BlockHash::all_zeros(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: std::iter::once(coinbase)
                .chain(txs.iter().cloned())
                .collect(),
        };
        fix(&mut b);
        b
    }

    /// Merkle root recomputed, nonce re-ground.
    fn fix(b: &mut Block) {
        b.header.merkle_root = b.compute_merkle_root().unwrap();
        b.header.nonce = 0;
        while !b.header.target().is_met_by(b.block_hash()) {
            b.header.nonce += 1;
        }
    }

    fn check(b: &Block) -> Result<(), BlockValidationError> {
        validate_block(b, Some(HEIGHT))
    }

    #[test]
    fn accepts_good_blocks_with_and_without_transactions() {
        check(&block_with(&[])).unwrap();
        let txs = family();
        let b = block_with(&txs);
        check(&b).unwrap();
        validate_block(&b, None).unwrap();
        // Through FoundBlock: assembled from header, coinbase and the list.
        let mut header = [0u8; 80];
        header.copy_from_slice(
            &tower_stratum_core::stratum_core::bitcoin::consensus::serialize(&b.header),
        );
        let coinbase_tx =
            tower_stratum_core::stratum_core::bitcoin::consensus::serialize(&b.txdata[0]);
        let mut found = FoundBlock {
            hash: b.block_hash(),
            height: Some(HEIGHT),
            template_id: 1,
            connection: ConnectionId(1),
            channel_id: 1,
            user_identity: String::new(),
            header,
            coinbase_tx,
            transaction_count: None,
            block: None,
        };
        assert_eq!(found.validate(), None);
        let list: Vec<Vec<u8>> = txs
            .iter()
            .map(tower_stratum_core::stratum_core::bitcoin::consensus::serialize)
            .collect();
        complete_with_transactions(&mut found, &list).unwrap();
        assert_eq!(found.validate(), Some(Ok(())));
    }

    #[test]
    fn rejects_a_bad_merkle_root_and_duplicated_transactions() {
        let txs = family();
        let mut b = block_with(&txs);
        b.txdata.swap(1, 3);
        assert_eq!(check(&b), Err(BlockValidationError::BadMerkleRoot));
        // CVE-2012-2459: [cb, a, b] and [cb, a, b, b] share a merkle root.
        let b = block_with(&txs[..2]);
        let mut mutated = b.clone();
        mutated.txdata.push(txs[1].clone());
        assert_eq!(mutated.compute_merkle_root(), b.compute_merkle_root());
        assert_eq!(
            check(&mutated),
            Err(BlockValidationError::DuplicateTransaction {
                txid: txs[1].compute_txid(),
                index: 3
            })
        );
    }

    #[test]
    fn rejects_a_bad_witness_commitment() {
        let txs = family();
        // The empty block's commitment with transactions in the block.
        let mut b = block_with(&[]);
        b.txdata.extend(txs.iter().cloned());
        fix(&mut b);
        assert_eq!(check(&b), Err(BlockValidationError::BadWitnessCommitment));
        // A witness changed after the commitment: same txid, other wtxid.
        let mut b = block_with(&txs);
        b.txdata[2].input[0].witness = Witness::from_slice(&[[0x51, 0x51]]);
        fix(&mut b);
        assert_eq!(check(&b), Err(BlockValidationError::BadWitnessCommitment));
        let mut b = block_with(&txs);
        b.txdata[0].input[0].witness = Witness::new();
        fix(&mut b);
        assert_eq!(
            check(&b),
            Err(BlockValidationError::BadWitnessReservedValue)
        );
        let mut b = block_with(&txs);
        b.txdata[0].output.pop();
        fix(&mut b);
        assert_eq!(
            check(&b),
            Err(BlockValidationError::MissingWitnessCommitment)
        );
    }

    #[test]
    fn rejects_a_wrong_bip34_height_and_bad_coinbase() {
        let b = block_with(&family());
        assert_eq!(
            validate_block(&b, Some(HEIGHT + 1)),
            Err(BlockValidationError::BadHeight {
                expected: HEIGHT + 1,
                found: Some(HEIGHT)
            })
        );
        let mut b = block_with(&[]);
        b.txdata[0].input[0].script_sig = ScriptBuf::from_bytes(vec![0x51]);
        fix(&mut b);
        assert_eq!(check(&b), Err(BlockValidationError::BadCoinbaseLength(1)));
        let mut b = block_with(&[]);
        b.txdata.clear();
        assert_eq!(check(&b), Err(BlockValidationError::NoTransactions));
        let mut b = block_with(&family());
        b.txdata.swap(0, 1);
        fix(&mut b);
        assert_eq!(check(&b), Err(BlockValidationError::FirstNotCoinbase));
        let mut b = block_with(&[]);
        let mut second = b.txdata[0].clone();
        second.input[0].script_sig = ScriptBuf::from_bytes(vec![0x52, 0x00]);
        b.txdata.push(second);
        fix(&mut b);
        assert_eq!(
            check(&b),
            Err(BlockValidationError::ExtraCoinbase { index: 1 })
        );
    }

    #[test]
    fn rejects_insufficient_proof_of_work() {
        let mut b = block_with(&family());
        while b.header.target().is_met_by(b.block_hash()) {
            b.header.nonce += 1;
        }
        assert!(matches!(
            check(&b),
            Err(BlockValidationError::BadProofOfWork { .. })
        ));
    }

    #[test]
    fn rejects_conflicts_double_spends_and_children_before_parents() {
        let txs = family();
        let mut conflicting = txs.clone();
        conflicting.push(tx_spending(&[outpoint(1, 0)], 3, false));
        assert_eq!(
            check(&block_with(&conflicting)),
            Err(BlockValidationError::DoubleSpend {
                index: 4,
                outpoint: outpoint(1, 0)
            })
        );
        let twice = tx_spending(&[outpoint(3, 1), outpoint(3, 1)], 1, false);
        assert_eq!(
            check(&block_with(&[twice])),
            Err(BlockValidationError::DoubleSpend {
                index: 1,
                outpoint: outpoint(3, 1)
            })
        );
        let child_first = [txs[1].clone(), txs[0].clone(), txs[2].clone()];
        assert_eq!(
            check(&block_with(&child_first)),
            Err(BlockValidationError::BadInBlockSpend {
                index: 1,
                outpoint: OutPoint::new(txs[0].compute_txid(), 0)
            })
        );
        let missing = OutPoint::new(txs[0].compute_txid(), 9);
        let b = block_with(&[txs[0].clone(), tx_spending(&[missing], 1, false)]);
        assert_eq!(
            check(&b),
            Err(BlockValidationError::BadInBlockSpend {
                index: 2,
                outpoint: missing
            })
        );
        // The block's own coinbase.
        let mut b = block_with(&[]);
        let cb = OutPoint::new(b.txdata[0].compute_txid(), 0);
        b.txdata.push(tx_spending(&[cb], 1, false));
        fix(&mut b);
        assert_eq!(
            check(&b),
            Err(BlockValidationError::BadInBlockSpend {
                index: 1,
                outpoint: cb
            })
        );
        assert_eq!(
            check(&block_with(&[tx_spending(&[outpoint(4, 0)], 0, false)])),
            Err(BlockValidationError::EmptyTransaction { index: 1 })
        );
    }

    #[test]
    fn rejects_blocks_over_the_size_weight_and_sigop_limits() {
        let mut big = tx_spending(&[outpoint(5, 0)], 1, false);
        big.output[0].script_pubkey = ScriptBuf::from_bytes(vec![0x6a; 1_000_001]);
        assert!(matches!(
            check(&block_with(&[big])),
            Err(BlockValidationError::TooLarge(n)) if n > 1_000_000
        ));
        let mut heavy = tx_spending(&[outpoint(6, 0)], 1, true);
        heavy.input[0].witness = Witness::from_slice(&[vec![0u8; 4_000_000]]);
        assert!(matches!(
            check(&block_with(&[heavy])),
            Err(BlockValidationError::TooHeavy(w)) if w > MAX_BLOCK_WEIGHT
        ));
        // 20,001 legacy CHECKSIGs × 4 = 80,004.
        let mut sigops = tx_spending(&[outpoint(7, 0)], 1, false);
        sigops.output[0].script_pubkey = ScriptBuf::from_bytes(vec![0xac; 20_001]);
        assert_eq!(
            check(&block_with(&[sigops])),
            Err(BlockValidationError::TooManySigops(80_004))
        );
    }

    #[test]
    fn bip34_heights() {
        assert_eq!(bip34_height(&[0x00]), Some(0));
        assert_eq!(bip34_height(&[0x51, 0x00]), Some(1));
        assert_eq!(bip34_height(&[0x60]), Some(16));
        assert_eq!(bip34_height(&[0x01, 0x11]), Some(17));
        assert_eq!(bip34_height(&[0x02, 0xc8, 0x00]), Some(200));
        assert_eq!(bip34_height(&[0x03, 0x40, 0x0d, 0x03]), Some(200_000));
        assert_eq!(bip34_height(&[0x03, 0x40]), None);
        assert_eq!(bip34_height(&[]), None);
        assert_eq!(bip34_height(&[0x6a]), None);
    }

    #[test]
    fn block_with_no_transactions_has_count_one() {
        let header = [0u8; 80];
        let b = serialize_block(&header, &[1, 2, 3], &[]);
        assert_eq!(b.len(), 80 + 1 + 3);
        assert_eq!(b[80], 1);
    }
}
