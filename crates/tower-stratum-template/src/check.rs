//! An independent block-validity checker for regtest blocks, built only on rust-bitcoin.
//!
//! [`validate_block`] shares no code with the template source that builds blocks: it parses
//! the consensus bytes and applies the context-free checks Bitcoin Core's `CheckBlock` and the
//! height-dependent checks of `ContextualCheckBlock` that need no UTXO set. Tests anywhere can
//! use it to confirm that a block mined from a template (by our mining server, SRI's pool, or a
//! test solver) is one a regtest node would accept.
//!
//! Checks, in order (each failure is one [`BlockError`] variant):
//! 1. consensus deserialization of the whole input (no trailing bytes);
//! 2. at least one transaction; the first, and only the first, is a coinbase;
//! 3. merkle root (`Block::check_merkle_root`);
//! 4. header version at least 4 (BIP34/66/65 are active from height 1 on regtest);
//! 5. proof of work: the target encoded by `nBits` is at most regtest's proof-of-work limit and
//!    the header hash meets it (`Header::validate_pow`);
//! 6. coinbase `scriptSig` length 2..=100 bytes;
//! 7. BIP34: the `scriptSig` starts with the expected height (`Block::bip34_block_height`, or
//!    `OP_1`..`OP_16` for heights 1 to 16, which that function does not decode);
//! 8. witness commitment: the coinbase carries a commitment output, its witness is a single
//!    32-byte reserved value, and the commitment matches (`Block::check_witness_commitment`).
//!    Stricter than consensus, which allows a block without witness data to omit the
//!    commitment: every template this crate and Bitcoin Core produce has one;
//! 9. weight at most 4,000,000 WU and signature-operation cost at most 80,000 (legacy sigops of
//!    every transaction × 4: a lower bound for non-coinbase transactions, whose spent outputs
//!    are unknown here);
//! 10. for a block with only the coinbase: its outputs pay at most the subsidy at that height
//!     (regtest: 50 BTC halved every 150 blocks). With more transactions the fees are unknown
//!     and this check is skipped.
//!
//! Not checked (they need chain state): the timestamp against the median time past, the
//! previous block hash, and the inputs of non-coinbase transactions.

use tower_stratum_core::stratum_core::bitcoin::{
    block::{Bip34Error, ValidationError},
    consensus::deserialize,
    opcodes::all::{OP_PUSHNUM_1, OP_PUSHNUM_16},
    script::Instruction,
    Block, BlockHash, Target,
};

const COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// Why a block is not valid (see the [module docs](self) for the order of checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The bytes are not one consensus-serialized block.
    #[error("cannot decode block: {0}")]
    Decode(String),
    /// The block has no transactions.
    #[error("block has no transactions")]
    NoTransactions,
    /// The first transaction is not a coinbase.
    #[error("first transaction is not a coinbase")]
    FirstNotCoinbase,
    /// A transaction other than the first is a coinbase.
    #[error("transaction {index} is a second coinbase")]
    ExtraCoinbase {
        /// Its position in the block.
        index: usize,
    },
    /// The header's merkle root is not the root of the transactions' txids.
    #[error("merkle root does not match the transactions")]
    BadMerkleRoot,
    /// Header version below 4 (`bad-version`).
    #[error("obsolete header version {0}")]
    ObsoleteVersion(i32),
    /// `nBits` encodes a target above regtest's proof-of-work limit.
    #[error("nBits {nbits:#010x} is easier than regtest allows")]
    TargetAboveLimit {
        /// The header's `nBits`.
        nbits: u32,
    },
    /// The header hash does not meet the target encoded by `nBits`.
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
        expected: u32,
        /// The height found, if one could be decoded.
        found: Option<u64>,
    },
    /// No output of the coinbase carries a witness commitment.
    #[error("coinbase has no witness commitment")]
    MissingWitnessCommitment,
    /// The coinbase witness is not a single 32-byte reserved value
    /// (`bad-witness-nonce-size`).
    #[error("coinbase witness is not one 32-byte reserved value")]
    BadWitnessReservedValue,
    /// The witness commitment does not match the transactions (`bad-witness-merkle-match`).
    #[error("witness commitment does not match")]
    BadWitnessCommitment,
    /// The block weighs more than 4,000,000 WU.
    #[error("block weight {0} WU exceeds the limit")]
    TooHeavy(u64),
    /// The block's signature-operation cost exceeds 80,000.
    #[error("block sigop cost {0} exceeds the limit")]
    TooManySigops(u64),
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
    let coinbase = block.txdata.first().ok_or(BlockError::NoTransactions)?;
    if !coinbase.is_coinbase() {
        return Err(BlockError::FirstNotCoinbase);
    }
    if let Some(index) = block.txdata.iter().skip(1).position(|t| t.is_coinbase()) {
        return Err(BlockError::ExtraCoinbase { index: index + 1 });
    }
    if !block.check_merkle_root() {
        return Err(BlockError::BadMerkleRoot);
    }
    let version = block.header.version.to_consensus();
    if version < 4 {
        return Err(BlockError::ObsoleteVersion(version));
    }
    let target = block.header.target();
    if target > Target::MAX_ATTAINABLE_REGTEST {
        return Err(BlockError::TargetAboveLimit {
            nbits: block.header.bits.to_consensus(),
        });
    }
    match block.header.validate_pow(target) {
        Ok(_) => {}
        Err(ValidationError::BadProofOfWork) | Err(ValidationError::BadTarget) | Err(_) => {
            return Err(BlockError::BadProofOfWork {
                hash: block.block_hash(),
            })
        }
    }
    let script_sig = &coinbase.input[0].script_sig;
    if !(2..=100).contains(&script_sig.len()) {
        return Err(BlockError::BadCoinbaseLength(script_sig.len()));
    }
    check_height(block, expected_height)?;
    check_witness(block)?;
    let weight = block.weight().to_wu();
    if weight > 4_000_000 {
        return Err(BlockError::TooHeavy(weight));
    }
    let sigops: u64 = block
        .txdata
        .iter()
        .map(|t| t.total_sigop_cost(|_| None) as u64)
        .sum();
    if sigops > 80_000 {
        return Err(BlockError::TooManySigops(sigops));
    }
    if block.txdata.len() == 1 {
        let paid = coinbase
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

fn check_height(block: &Block, expected: u32) -> Result<(), BlockError> {
    if expected == 0 {
        return Ok(());
    }
    let bad = |found| BlockError::BadHeight { expected, found };
    if expected <= 16 {
        // Bitcoin Core writes heights 1..=16 as OP_1..OP_16; rust-bitcoin's
        // `bip34_block_height` only decodes number pushes.
        let first = block.txdata[0].input[0].script_sig.instructions().next();
        return match first {
            Some(Ok(Instruction::Op(op)))
                if (OP_PUSHNUM_1.to_u8()..=OP_PUSHNUM_16.to_u8()).contains(&op.to_u8()) =>
            {
                let h = u64::from(op.to_u8() - OP_PUSHNUM_1.to_u8() + 1);
                if h == u64::from(expected) {
                    Ok(())
                } else {
                    Err(bad(Some(h)))
                }
            }
            _ => Err(bad(None)),
        };
    }
    match block.bip34_block_height() {
        Ok(h) if h == u64::from(expected) => Ok(()),
        Ok(h) => Err(bad(Some(h))),
        Err(Bip34Error::Unsupported)
        | Err(Bip34Error::NotPresent)
        | Err(Bip34Error::UnexpectedPush(_))
        | Err(Bip34Error::NegativeHeight)
        | Err(_) => Err(bad(None)),
    }
}

fn check_witness(block: &Block) -> Result<(), BlockError> {
    let coinbase = &block.txdata[0];
    let has_commitment = coinbase.output.iter().any(|o| {
        let s = o.script_pubkey.as_bytes();
        s.len() >= 38 && s[..6] == COMMITMENT_MAGIC
    });
    if !has_commitment {
        return Err(BlockError::MissingWitnessCommitment);
    }
    let witness = &coinbase.input[0].witness;
    if witness.len() != 1 || witness.iter().any(|item| item.len() != 32) {
        return Err(BlockError::BadWitnessReservedValue);
    }
    if !block.check_witness_commitment() {
        return Err(BlockError::BadWitnessCommitment);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::regtest::op_true_script;
    use crate::solver::{payout_all, solve, Solved};
    use crate::{EmbeddedRegtestSource, Now, SourceConfig};
    use std::time::Instant;
    use tower_stratum_core::stratum_core::bitcoin::{
        consensus::serialize, hashes::Hash, Amount, TxMerkleNode, Witness,
    };

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
            Err(BlockError::BadMerkleRoot)
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
            Err(BlockError::BadProofOfWork { .. })
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
            Err(BlockError::MissingWitnessCommitment)
        );
    }

    #[test]
    fn rejects_bad_witness_commitment_or_reserved_value() {
        let mut b = solved().block;
        b.txdata[0].input[0].witness = Witness::from_slice(&[[1u8; 32]]);
        fix_merkle_and_regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::BadWitnessCommitment)
        );
        let mut b = solved().block;
        b.txdata[0].input[0].witness = Witness::new();
        fix_merkle_and_regrind(&mut b);
        assert_eq!(
            validate_block(&serialize(&b), 1),
            Err(BlockError::BadWitnessReservedValue)
        );
    }

    #[test]
    fn rejects_wrong_height_and_overpaying_coinbase() {
        let s = solved();
        assert_eq!(
            validate_block(&s.block_bytes(), 2),
            Err(BlockError::BadHeight {
                expected: 2,
                found: Some(1)
            })
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
