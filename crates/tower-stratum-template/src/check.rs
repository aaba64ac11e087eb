//! An independent block-validity checker for regtest blocks, built only on rust-bitcoin.
//!
//! [`validate_block`] shares no code with the template source that builds blocks: it parses
//! the consensus bytes and applies the context-free checks Bitcoin Core's `CheckBlock` and the
//! height-dependent checks of `ContextualCheckBlock` that need no UTXO set. The
//! network-independent ones are the mining crate's [`tower_stratum_mining::validate_block`]
//! (one implementation for found blocks and for this checker); this module adds regtest's
//! rules (version, proof-of-work limit, subsidy) and wraps its errors in [`BlockError::Invalid`]. Tests anywhere can
//! use it to confirm that a block mined from a template (by our mining server, SRI's pool, or a
//! test solver) is one a regtest node would accept.
//!
//! Checks, in order (a failure of steps 2 to 10 is a [`BlockError::Invalid`], of the others a variant of its own):
//! 1. consensus deserialization of the whole input (no trailing bytes);
//! 2. at least one transaction; the first, and only the first, is a coinbase;
//! 3. merkle root (`Block::check_merkle_root`);
//! 4. size and weight: the serialized size without witness data at most 1,000,000 bytes
//!    (Bitcoin Core's `bad-blk-length`: stripped size × 4 ≤ 4,000,000) and the weight at most
//!    4,000,000 WU (`bad-blk-weight`);
//! 5. transactions after the coinbase: none twice (`bad-txns-duplicate`, which also catches
//!    CVE-2012-2459's merkle-preserving duplication), none without inputs or outputs
//!    (`bad-txns-vin-empty`, `bad-txns-vout-empty`), no coin spent twice within a transaction
//!    (`bad-txns-inputs-duplicate`) or by two transactions of the block (a conflict), no spend
//!    of the block's own coinbase (immature), and a spend of another transaction of the block
//!    only if that one comes earlier and has that output (parents before children);
//! 6. proof of work: the header hash meets the target its `nBits` encodes
//!    (`Header::validate_pow`);
//! 7. coinbase `scriptSig` length 2..=100 bytes;
//! 8. BIP34: the `scriptSig` starts with the expected height (`OP_1`..`OP_16` for heights 1 to
//!    16, as Bitcoin Core writes them, else a number push; height 0 skips this);
//! 9. witness commitment: the coinbase carries a commitment output, its witness is a single
//!    32-byte reserved value, and the commitment matches (`Block::check_witness_commitment`).
//!    Stricter than consensus, which allows a block without witness data to omit the
//!    commitment: every template this crate and Bitcoin Core produce has one;
//! 10. signature-operation cost at most 80,000 (legacy sigops of every transaction × 4: a
//!     lower bound for non-coinbase transactions, whose spent outputs are unknown here);
//! 11. header version at least 4 (BIP34/66/65 are active from height 1 on regtest);
//! 12. the target encoded by `nBits` is at most regtest's proof-of-work limit;
//! 13. for a block with only the coinbase: its outputs pay at most the subsidy at that height
//!     (regtest: 50 BTC halved every 150 blocks). With more transactions the fees are unknown
//!     and this check is skipped.
//!
//! Steps 2 to 10 are [`tower_stratum_mining::validate_block`].
//!
//! Not checked (they need chain state): the timestamp against the median time past, the
//! previous block hash, and the inputs of non-coinbase transactions that spend coins from
//! earlier blocks (their existence, value and scripts).

use tower_stratum_core::stratum_core::bitcoin::{consensus::deserialize, Block, Target};
use tower_stratum_mining::BlockValidationError;

/// Why a block is not valid (see the [module docs](self) for the order of checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The bytes are not one consensus-serialized block.
    #[error("cannot decode block: {0}")]
    Decode(String),
    /// A network-independent check of [`tower_stratum_mining::validate_block`] failed (steps 2
    /// to 10 of the [module docs](self)).
    #[error(transparent)]
    Invalid(#[from] BlockValidationError),
    /// Header version below 4 (`bad-version`).
    #[error("obsolete header version {0}")]
    ObsoleteVersion(i32),
    /// `nBits` encodes a target above regtest's proof-of-work limit.
    #[error("nBits {nbits:#010x} is easier than regtest allows")]
    TargetAboveLimit {
        /// The header's `nBits`.
        nbits: u32,
    },
    /// A coinbase-only block pays more than the subsidy (`bad-cb-amount`).
    #[error("coinbase pays {paid} sat, subsidy is {allowed} sat")]
    CoinbaseValueTooHigh {
        /// Sum of the coinbase outputs, satoshis.
        paid: u64,
        /// The subsidy at the expected height, satoshis.
        allowed: u64,
    },
}

/// Validates a consensus-serialized regtest block that should be at `expected_height` (the
/// genesis block is height 0; height 0 skips the BIP34 check). See the [module docs](self) for
/// what is and is not checked.
///
/// ```
/// use tower_stratum_template::check::{validate_block, BlockError};
/// assert!(matches!(validate_block(&[0u8; 3], 1), Err(BlockError::Decode(_))));
/// ```
pub fn validate_block(block_bytes: &[u8], expected_height: u32) -> Result<(), BlockError> {
    let block: Block = deserialize(block_bytes).map_err(|e| BlockError::Decode(e.to_string()))?;
    validate_decoded_block(&block, expected_height)
}

/// [`validate_block`] on an already decoded block.
pub fn validate_decoded_block(block: &Block, expected_height: u32) -> Result<(), BlockError> {
    let height = (expected_height > 0).then_some(u64::from(expected_height));
    tower_stratum_mining::validate_block(block, height).map_err(BlockError::from)?;
    let version = block.header.version.to_consensus();
    if version < 4 {
        return Err(BlockError::ObsoleteVersion(version));
    }
    if block.header.target() > Target::MAX_ATTAINABLE_REGTEST {
        return Err(BlockError::TargetAboveLimit {
            nbits: block.header.bits.to_consensus(),
        });
    }
    if block.txdata.len() == 1 {
        let paid = block.txdata[0]
            .output
            .iter()
            .try_fold(0u64, |acc, o| acc.checked_add(o.value.to_sat()))
            .unwrap_or(u64::MAX);
        let halvings = expected_height / 150;
        let allowed = if halvings >= 64 {
            0
        } else {
            5_000_000_000u64 >> halvings
        };
        if paid > allowed {
            return Err(BlockError::CoinbaseValueTooHigh { paid, allowed });
        }
    }
    Ok(())
}

/// Step 5 of the module docs on its own, for a block whose header is not final yet
/// ([`tower_stratum_mining::check_transactions`]).
pub fn check_transactions(block: &Block) -> Result<(), BlockError> {
    tower_stratum_mining::check_transactions(block).map_err(BlockError::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::regtest::{op_true_script, witness_commitment_output_for};
    use crate::solver::{payout_all, solve, Solved};
    use crate::{EmbeddedRegtestSource, Now, SourceConfig};
    use std::collections::BTreeSet;
    use std::time::Instant;
    use tower_stratum_core::stratum_core::bitcoin::Transaction;
    use tower_stratum_core::stratum_core::bitcoin::{
        consensus::serialize, hashes::Hash, Amount, TxMerkleNode, Witness,
    };
    use tower_stratum_core::stratum_core::bitcoin::{OutPoint, Txid};
    use tower_stratum_mining::test_util::{family, outpoint, tx_spending};

    fn solved() -> Solved {
        let source = EmbeddedRegtestSource::new(
            SourceConfig::default(),
            Now::new(Instant::now(), 1_700_000_000),
        )
        .unwrap();
        let cur = source.current();
        let payout = payout_all(&cur.new_template, op_true_script());
        solve(
            &cur.new_template,
            &cur.set_new_prev_hash,
            &[payout],
            b"check",
        )
        .unwrap()
    }

    /// Re-grinds the nonce after the block changed (keeps the merkle root as it is).
    fn regrind(block: &mut Block) {
        block.header.nonce = 0;
        while !block.header.target().is_met_by(block.block_hash()) {
            block.header.nonce += 1;
        }
    }

    fn fix_merkle_and_regrind(block: &mut Block) {
        block.header.merkle_root = block.compute_merkle_root().unwrap();
        regrind(block);
    }

    #[test]
    fn accepts_a_solved_template() {
        let s = solved();
        validate_block(&s.block_bytes(), 1).unwrap();
    }

    #[test]
    fn rejects_tampered_merkle_root() {
        let mut b = solved().block;
        let mut root = b.header.merkle_root.to_byte_array();
        root[0] ^= 1;
        b.header.merkle_root = TxMerkleNode::from_byte_array(root);
        regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::Invalid(BlockValidationError::BadMerkleRoot))
        );
    }

    #[test]
    fn rejects_bad_proof_of_work() {
        let mut b = solved().block;
        while b.header.target().is_met_by(b.block_hash()) {
            b.header.nonce = b.header.nonce.wrapping_add(1);
        }
        assert!(matches!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::Invalid(
                BlockValidationError::BadProofOfWork { .. }
            ))
        ));
        // A valid hash under an nBits easier than regtest allows.
        let mut b = solved().block;
        b.header.bits =
            tower_stratum_core::stratum_core::bitcoin::CompactTarget::from_consensus(0x2100_ffff);
        regrind(&mut b);
        assert!(matches!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::TargetAboveLimit { .. })
        ));
    }

    #[test]
    fn rejects_missing_witness_commitment() {
        // Without commitment and without witness the block is consensus-valid, but every
        // template carries a commitment: the checker insists on it.
        let mut b = solved().block;
        b.txdata[0].output.pop();
        b.txdata[0].input[0].witness = Witness::new();
        fix_merkle_and_regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::Invalid(
                BlockValidationError::MissingWitnessCommitment
            ))
        );
    }

    #[test]
    fn rejects_bad_witness_commitment_or_reserved_value() {
        let mut b = solved().block;
        b.txdata[0].input[0].witness = Witness::from_slice(&[[1u8; 32]]);
        fix_merkle_and_regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::Invalid(
                BlockValidationError::BadWitnessCommitment
            ))
        );
        let mut b = solved().block;
        b.txdata[0].input[0].witness = Witness::new();
        fix_merkle_and_regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::Invalid(
                BlockValidationError::BadWitnessReservedValue
            ))
        );
    }

    #[test]
    fn rejects_wrong_height_and_overpaying_coinbase() {
        let s = solved();
        assert_eq!(
            validate_block(&s.block_bytes(), 2),
            Err(BlockError::Invalid(BlockValidationError::BadHeight {
                expected: 2,
                found: Some(1)
            }))
        );
        let mut b = s.block.clone();
        b.txdata[0].output[0].value = Amount::from_sat(5_000_000_001);
        fix_merkle_and_regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::CoinbaseValueTooHigh {
                paid: 5_000_000_001,
                allowed: 5_000_000_000
            })
        );
    }

    #[test]
    fn rejects_trailing_bytes_and_garbage() {
        let mut bytes = solved().block_bytes();
        bytes.push(0);
        assert!(matches!(
            validate_block(&bytes, 1),
            Err(BlockError::Decode(_))
        ));
        assert!(matches!(validate_block(&[], 1), Err(BlockError::Decode(_))));
    }

    /// The solved coinbase-only block with `txs` after the coinbase, its witness commitment
    /// recomputed over them, the merkle root fixed and the nonce re-ground.
    fn with_transactions(txs: &[Transaction]) -> Block {
        let mut b = solved().block;
        if let Some(last) = b.txdata[0].output.last_mut() {
            *last = witness_commitment_output_for(txs);
        }
        raw_with_transactions(b, txs)
    }

    /// `txs` after `b`'s coinbase, unchanged; merkle root fixed, nonce re-ground.
    fn raw_with_transactions(mut b: Block, txs: &[Transaction]) -> Block {
        b.txdata.truncate(1);
        b.txdata.extend(txs.iter().cloned());
        fix_merkle_and_regrind(&mut b);
        b
    }

    #[test]
    fn accepts_a_block_with_legacy_and_segwit_transactions_in_order() {
        let txs = family();
        let b = with_transactions(&txs);
        validate_block(&serialize(&b), 1).unwrap();
        assert_ne!(
            txs[1].compute_txid().to_raw_hash(),
            txs[1].compute_wtxid().to_raw_hash()
        );
        // Blocks the source builds from its mempool pass too (many, with chains).
        let base = Instant::now();
        let config = SourceConfig {
            history_blocks: 3,
            tip_interval: std::time::Duration::from_secs(5),
            mempool: crate::mempool::MempoolConfig {
                tx_interval: std::time::Duration::from_secs(1),
                txs_per_interval: 10,
                ..Default::default()
            },
            ..SourceConfig::default()
        };
        let mut source = EmbeddedRegtestSource::new(config, Now::new(base, 1_700_000_000)).unwrap();
        let mut with_chains = 0;
        for t in 1..=60u64 {
            let now = Now::new(
                base + std::time::Duration::from_secs(t),
                1_700_000_000 + t as u32,
            );
            if let Some(found) = source.on_tick(now) {
                validate_block(&found.block_bytes(), found.height).unwrap();
                let ids: BTreeSet<Txid> = found
                    .block
                    .txdata
                    .iter()
                    .map(|t| t.compute_txid())
                    .collect();
                if found.block.txdata.iter().any(|t| {
                    t.input
                        .iter()
                        .any(|i| ids.contains(&i.previous_output.txid))
                }) {
                    with_chains += 1;
                }
            }
        }
        assert!(with_chains > 0);
    }

    #[test]
    fn rejects_reordered_or_mutated_transaction_lists() {
        let txs = family();
        let good = with_transactions(&txs);
        // Reordered without a new header: the merkle root no longer matches.
        let mut b = good.clone();
        b.txdata.swap(1, 3);
        assert_eq!(
            validate_decoded_block(&b, 1),
            Err(BlockError::Invalid(BlockValidationError::BadMerkleRoot))
        );

        // CVE-2012-2459: [cb, a, b] and [cb, a, b, b] share a merkle root.
        let two = &txs[..2];
        let b = with_transactions(two);
        let mut mutated = b.clone();
        mutated.txdata.push(two[1].clone());
        assert_eq!(mutated.compute_merkle_root(), b.compute_merkle_root());
        assert_eq!(
            validate_decoded_block(&mutated, 1),
            Err(BlockError::Invalid(
                BlockValidationError::DuplicateTransaction {
                    txid: two[1].compute_txid(),
                    index: 3
                }
            ))
        );
    }

    #[test]
    fn rejects_a_child_before_its_parent_and_bad_in_block_spends() {
        let txs = family();
        let child_first = vec![txs[1].clone(), txs[0].clone(), txs[2].clone()];
        let parent_0 = OutPoint::new(txs[0].compute_txid(), 0);
        assert_eq!(
            validate_decoded_block(&with_transactions(&child_first), 1),
            Err(BlockError::Invalid(BlockValidationError::BadInBlockSpend {
                index: 1,
                outpoint: parent_0
            }))
        );
        // An output the parent does not have.
        let missing = OutPoint::new(txs[0].compute_txid(), 7);
        let mut bad = txs.clone();
        bad[1] = tx_spending(&[missing], 1, true);
        assert_eq!(
            validate_decoded_block(&with_transactions(&bad), 1),
            Err(BlockError::Invalid(BlockValidationError::BadInBlockSpend {
                index: 2,
                outpoint: missing
            }))
        );
        // The block's own coinbase (immature).
        let b = with_transactions(&[]);
        let cb = OutPoint::new(b.txdata[0].compute_txid(), 0);
        let b = raw_with_transactions(b, &[tx_spending(&[cb], 1, false)]);
        assert_eq!(
            validate_decoded_block(&b, 1),
            Err(BlockError::Invalid(BlockValidationError::BadInBlockSpend {
                index: 1,
                outpoint: cb
            }))
        );
    }

    #[test]
    fn rejects_conflicting_and_duplicate_spends_and_empty_transactions() {
        let mut txs = family();
        // A second spend of the parent's coin.
        txs.push(tx_spending(&[outpoint(1, 0)], 3, false));
        assert_eq!(
            validate_decoded_block(&with_transactions(&txs), 1),
            Err(BlockError::Invalid(BlockValidationError::DoubleSpend {
                index: 4,
                outpoint: outpoint(1, 0)
            }))
        );
        // One transaction spending a coin twice.
        let twice = tx_spending(&[outpoint(3, 1), outpoint(3, 1)], 1, false);
        assert_eq!(
            validate_decoded_block(&with_transactions(&[twice]), 1),
            Err(BlockError::Invalid(BlockValidationError::DoubleSpend {
                index: 1,
                outpoint: outpoint(3, 1)
            }))
        );
        let no_outputs = tx_spending(&[outpoint(4, 0)], 0, false);
        assert_eq!(
            validate_decoded_block(&with_transactions(&[no_outputs]), 1),
            Err(BlockError::Invalid(
                BlockValidationError::EmptyTransaction { index: 1 }
            ))
        );
        let no_inputs = tx_spending(&[], 1, false);
        // (Without inputs it would decode as a SegWit marker: checked on the decoded block.)
        assert_eq!(
            validate_decoded_block(&with_transactions(&[no_inputs]), 1),
            Err(BlockError::Invalid(
                BlockValidationError::EmptyTransaction { index: 1 }
            ))
        );
    }

    #[test]
    fn rejects_a_witness_commitment_that_misses_the_transactions() {
        let txs = family();
        // The coinbase-only commitment with transactions in the block.
        let b = raw_with_transactions(solved().block, &txs);
        assert_eq!(
            validate_decoded_block(&b, 1),
            Err(BlockError::Invalid(
                BlockValidationError::BadWitnessCommitment
            ))
        );
        // A witness changed after the commitment: same txids (merkle root), other wtxid.
        let mut b = with_transactions(&txs);
        b.txdata[2].input[0].witness = Witness::from_slice(&[[0x51, 0x51]]);
        fix_merkle_and_regrind(&mut b);
        assert!(b.check_merkle_root());
        assert_eq!(
            validate_decoded_block(&b, 1),
            Err(BlockError::Invalid(
                BlockValidationError::BadWitnessCommitment
            ))
        );
    }

    #[test]
    fn rejects_blocks_over_the_size_and_weight_limits() {
        use tower_stratum_core::stratum_core::bitcoin::ScriptBuf;
        // 1,000,001 bytes of output script: over the stripped-size limit.
        let mut big = tx_spending(&[outpoint(5, 0)], 1, false);
        big.output[0].script_pubkey = ScriptBuf::from_bytes(vec![0x6a; 1_000_001]);
        assert!(matches!(
            validate_decoded_block(&with_transactions(&[big]), 1),
            Err(BlockError::Invalid(BlockValidationError::TooLarge(n))) if n > 1_000_000
        ));
        // 4,000,000 bytes of witness: small without witness, too heavy with it.
        let mut heavy = tx_spending(&[outpoint(6, 0)], 1, true);
        heavy.input[0].witness = Witness::from_slice(&[vec![0u8; 4_000_000]]);
        assert!(matches!(
            validate_decoded_block(&with_transactions(&[heavy]), 1),
            Err(BlockError::Invalid(BlockValidationError::TooHeavy(w))) if w > 4_000_000
        ));
    }

    #[test]
    fn accepts_heights_above_16() {
        // Build through the source to height 20, checking each block.
        let now = Now::new(Instant::now(), 1_700_000_000);
        let mut source = EmbeddedRegtestSource::new(SourceConfig::default(), now).unwrap();
        for h in 1..=20u32 {
            let cur = source.current();
            let payout = payout_all(&cur.new_template, op_true_script());
            let s = solve(&cur.new_template, &cur.set_new_prev_hash, &[payout], b"h").unwrap();
            validate_block(&s.block_bytes(), h).unwrap();
            if h > 16 {
                assert_eq!(s.block.bip34_block_height(), Ok(u64::from(h)));
            }
            source.on_submit_solution(s.submit, now).unwrap();
        }
    }
}
