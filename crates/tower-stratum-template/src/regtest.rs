//! Regtest consensus constants and the small building blocks of a template: BIP34 coinbase
//! prefix, block subsidy, the BIP141 witness commitment output, and the
//! `CoinbaseOutputConstraints` arithmetic of spec 7.1.
//!
//! Values follow Bitcoin Core's regtest chain parameters (`chainparams.cpp`, `CRegTestParams`):
//! no difficulty retargeting, BIP34/65/66 and SegWit active from height 1 (0 for SegWit), a
//! subsidy halving every 150 blocks.

use tower_stratum_core::stratum_core::bitcoin::{
    self, absolute::LockTime, consensus::serialize, constants::genesis_block, hashes::Hash,
    script::Builder, transaction::Version as TxVersion, Amount, Block, BlockHash, CompactTarget,
    Network, OutPoint, ScriptBuf, Sequence, Target, Transaction, TxIn, TxMerkleNode, TxOut,
    Witness, WitnessMerkleNode,
};
use tower_stratum_core::stratum_core::template_distribution_sv2::CoinbaseOutputConstraintsOwned;

/// Compact target (`nBits`) of every regtest block: `0x207fffff`, i.e. a target of
/// `0x7fffff << 232`, met by about every second header hash.
pub const REGTEST_NBITS: u32 = 0x207f_ffff;

/// Blocks between subsidy halvings on regtest (`nSubsidyHalvingInterval = 150`).
pub const REGTEST_HALVING_INTERVAL: u32 = 150;

/// Subsidy of the first halving epoch, in satoshis (50 BTC).
pub const INITIAL_SUBSIDY_SAT: u64 = 50 * 100_000_000;

/// Maximum block weight, in weight units (BIP141 `MAX_BLOCK_WEIGHT`).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;

/// Maximum signature-operation cost of a block (BIP141 `MAX_BLOCK_SIGOPS_COST`).
pub const MAX_BLOCK_SIGOPS_COST: u64 = 80_000;

/// The witness reserved value this crate puts in the coinbase witness and commits to: 32 zero
/// bytes, as spec 7.2 assumes.
pub const WITNESS_RESERVED_VALUE: [u8; 32] = [0; 32];

/// Header version bits BIP320 frees for version rolling (`0x1fffe000`); every other bit of a
/// solution's version must equal the template's.
pub const BIP320_VERSION_MASK: u32 = 0x1fff_e000;

/// Largest coinbase `scriptSig`, in bytes (consensus `bad-cb-length`).
pub const MAX_COINBASE_SCRIPT_SIG_LEN: usize = 100;

/// Weight a Template Provider reserves for a SegWit block besides the Pool's outputs (spec 7.1):
/// header 320 + transaction count 12 + coinbase fixed fields 236 + `scriptSig` 400 + output
/// count 12 + witness commitment output 188 = 1168 weight units.
pub const SEGWIT_RESERVED_WEIGHT: u64 = 1168;

/// Bitcoin Core's floor for the coinbase reservation, in weight units (spec 7.1 note).
pub const MIN_RESERVED_WEIGHT: u64 = 2000;

/// Hash of the regtest genesis block (height 0), the `prev_hash` of the first template:
/// `0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206` (displayed, i.e.
/// byte-reversed, order).
pub fn genesis_hash() -> BlockHash {
    genesis().block_hash()
}

/// The regtest genesis block (timestamp 1296688602, `nBits` `0x207fffff`).
pub fn genesis() -> Block {
    genesis_block(Network::Regtest)
}

/// The block subsidy at `height`, in satoshis: 50 BTC halved every
/// [`REGTEST_HALVING_INTERVAL`] blocks, 0 after 64 halvings.
pub fn block_subsidy(height: u32) -> u64 {
    let halvings = height / REGTEST_HALVING_INTERVAL;
    if halvings >= 64 {
        0
    } else {
        INITIAL_SUBSIDY_SAT >> halvings
    }
}

/// The target `nBits` encodes (a 256-bit number; a header hash, read as a little-endian number,
/// must be at or below it).
pub fn regtest_target() -> Target {
    Target::from_compact(CompactTarget::from_consensus(REGTEST_NBITS))
}

/// The `coinbase_prefix` of a template for a block at `height` (spec 7.2): the BIP34 height
/// push exactly as Bitcoin Core writes it (`CScript() << height`: `OP_1`..`OP_16` for heights
/// 1 to 16, else a minimal little-endian number push), followed by `OP_0` when that alone is a
/// single byte, so the prefix meets the 2-byte minimum of a coinbase `scriptSig` like Core's
/// templates. At most 6 bytes.
pub fn bip34_coinbase_prefix(height: u32) -> Vec<u8> {
    let mut bytes = Builder::new()
        .push_int(i64::from(height))
        .into_script()
        .into_bytes();
    if bytes.len() < 2 {
        bytes.push(0x00);
    }
    bytes
}

/// The BIP141 witness commitment output: value 0, `scriptPubKey` `OP_RETURN` pushing
/// `aa21a9ed` followed by `SHA256d(witness_root || WITNESS_RESERVED_VALUE)`.
pub fn witness_commitment_output(witness_root: WitnessMerkleNode) -> TxOut {
    let commitment = Block::compute_witness_commitment(&witness_root, &WITNESS_RESERVED_VALUE);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(&commitment.to_byte_array());
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(script),
    }
}

/// The witness commitment output of a block whose only transaction is the coinbase: the witness
/// merkle tree has the single leaf 0 (the coinbase's wtxid is defined as 0), so the commitment
/// is `SHA256d(0^32 || 0^32)` = `e2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9`.
pub fn empty_block_witness_commitment_output() -> TxOut {
    witness_commitment_output(WitnessMerkleNode::all_zeros())
}

/// The witness commitment output of a block whose transactions after the coinbase are
/// `transactions` (BIP141): the witness merkle tree's leaves are 0 for the coinbase, then each
/// transaction's wtxid (its txid when it has no witness), in block order.
pub fn witness_commitment_output_for(transactions: &[Transaction]) -> TxOut {
    let leaves = std::iter::once(WitnessMerkleNode::all_zeros()).chain(
        transactions
            .iter()
            .map(|t| WitnessMerkleNode::from_raw_hash(t.compute_wtxid().to_raw_hash())),
    );
    let root =
        bitcoin::merkle_tree::calculate_root(leaves).unwrap_or(WitnessMerkleNode::all_zeros());
    witness_commitment_output(root)
}

/// The Sv2 `merkle_path` of a template (spec 7.2 `NewTemplate.merkle_path`): the sibling
/// hashes, leaf level first, on the path from the coinbase (leaf 0) to the merkle root of a
/// block whose transactions after the coinbase are `transactions`. Each hash is in internal
/// byte order (as in a header, the reverse of the displayed hex). Empty for a coinbase-only
/// block. An odd level pairs its last node with itself, as Bitcoin's merkle tree does.
pub fn coinbase_merkle_path(transactions: &[Transaction]) -> Vec<[u8; 32]> {
    // Level 0 with a placeholder for the coinbase: it is never a sibling on its own path.
    let mut level: Vec<TxMerkleNode> = std::iter::once(TxMerkleNode::all_zeros())
        .chain(
            transactions
                .iter()
                .map(|t| TxMerkleNode::from_raw_hash(t.compute_txid().to_raw_hash())),
        )
        .collect();
    let mut path = Vec::new();
    while level.len() > 1 {
        if let Some(sibling) = level.get(1) {
            path.push(sibling.to_byte_array());
        }
        level = level
            .chunks(2)
            .map(|pair| {
                let left = pair[0];
                let right = pair.get(1).copied().unwrap_or(left);
                merkle_parent(left, right)
            })
            .collect();
    }
    path
}

/// The merkle root of a block from its coinbase txid and the template's `merkle_path`
/// ([`coinbase_merkle_path`]; internal byte order): `root = sha256d(root || branch)` for each
/// branch, starting from the coinbase txid.
pub fn merkle_root_from_path(coinbase_txid: TxMerkleNode, path: &[[u8; 32]]) -> TxMerkleNode {
    path.iter().fold(coinbase_txid, |acc, branch| {
        merkle_parent(acc, TxMerkleNode::from_byte_array(*branch))
    })
}

fn merkle_parent(left: TxMerkleNode, right: TxMerkleNode) -> TxMerkleNode {
    let mut engine = TxMerkleNode::engine();
    bitcoin::hashes::HashEngine::input(&mut engine, &left.to_byte_array());
    bitcoin::hashes::HashEngine::input(&mut engine, &right.to_byte_array());
    TxMerkleNode::from_engine(engine)
}

/// `CoinbaseOutputConstraints` for a Pool or JDC that will add exactly `outputs`: their
/// serialized size in bytes, and their signature-operation cost counted as Bitcoin Core does
/// for a coinbase (legacy sigops × 4), saturated to `u16`.
pub fn constraints_for_outputs(outputs: &[TxOut]) -> CoinbaseOutputConstraintsOwned {
    let size: usize = outputs.iter().map(|o| serialize(o).len()).sum();
    let probe = Transaction {
        version: TxVersion::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[WITNESS_RESERVED_VALUE]),
        }],
        output: outputs.to_vec(),
    };
    let sigops = probe.total_sigop_cost(|_| None);
    CoinbaseOutputConstraintsOwned {
        coinbase_output_max_additional_size: u32::try_from(size).unwrap_or(u32::MAX),
        coinbase_output_max_additional_sigops: u16::try_from(sigops).unwrap_or(u16::MAX),
    }
}

/// Room for one payout output of any standard type: 43 bytes (a P2TR output: 8-byte value,
/// 1-byte script length, 34-byte script) and 4 sigops (a P2PKH output). The default constraints
/// [`TemplateDistributionClient`](crate::TemplateDistributionClient) sends.
pub fn one_output_constraints() -> CoinbaseOutputConstraintsOwned {
    CoinbaseOutputConstraintsOwned {
        coinbase_output_max_additional_size: 43,
        coinbase_output_max_additional_sigops: 4,
    }
}

/// Weight, in weight units, spec 7.1 says a Template Provider must reserve for a SegWit block
/// whose Pool adds `max_additional_size` bytes of outputs: `1168 + 4 * size`, with Bitcoin
/// Core's 2000 WU floor.
pub fn reserved_weight(max_additional_size: u32) -> u64 {
    (SEGWIT_RESERVED_WEIGHT + 4 * u64::from(max_additional_size)).max(MIN_RESERVED_WEIGHT)
}

/// Why a `CoinbaseOutputConstraints` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintsError {
    /// Even an empty block would exceed [`MAX_BLOCK_WEIGHT`] once the reserved weight is added.
    #[error("coinbase outputs of {size} bytes need {weight} WU, more than a block holds")]
    TooLarge {
        /// The requested `coinbase_output_max_additional_size`, bytes.
        size: u32,
        /// The weight it requires (spec 7.1 formula), weight units.
        weight: u64,
    },
    /// The requested sigops plus the template's exceed [`MAX_BLOCK_SIGOPS_COST`].
    #[error("{sigops} additional sigops exceed the block limit")]
    TooManySigops {
        /// The requested `coinbase_output_max_additional_sigops`.
        sigops: u16,
    },
}

/// Checks that a block with no transactions but the coinbase can honour `constraints` (spec
/// 7.1): the reserved weight fits in [`MAX_BLOCK_WEIGHT`] and the sigops in
/// [`MAX_BLOCK_SIGOPS_COST`] (the template's own outputs have no sigops).
pub fn check_constraints(
    constraints: &CoinbaseOutputConstraintsOwned,
) -> Result<(), ConstraintsError> {
    let size = constraints.coinbase_output_max_additional_size;
    let weight = reserved_weight(size);
    if weight > MAX_BLOCK_WEIGHT {
        return Err(ConstraintsError::TooLarge { size, weight });
    }
    let sigops = constraints.coinbase_output_max_additional_sigops;
    if u64::from(sigops) > MAX_BLOCK_SIGOPS_COST {
        return Err(ConstraintsError::TooManySigops { sigops });
    }
    Ok(())
}

/// The regtest genesis block's hash as an Sv2 `U256` (internal byte order, as it appears in a
/// header), for comparing with `SetNewPrevHash.prev_hash`.
pub fn genesis_prev_hash_bytes() -> [u8; 32] {
    genesis_hash().to_byte_array()
}

/// The `scriptPubKey` simulated foreign blocks pay to by default: `OP_TRUE` (anyone can spend).
pub fn op_true_script() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![bitcoin::opcodes::OP_TRUE.to_u8()])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn genesis_hash_is_regtest() {
        assert_eq!(
            genesis_hash().to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
    }

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(block_subsidy(1), 5_000_000_000);
        assert_eq!(block_subsidy(149), 5_000_000_000);
        assert_eq!(block_subsidy(150), 2_500_000_000);
        assert_eq!(block_subsidy(300), 1_250_000_000);
        assert_eq!(block_subsidy(150 * 64), 0);
    }

    #[test]
    fn bip34_prefix_matches_bitcoin_core() {
        assert_eq!(bip34_coinbase_prefix(1), vec![0x51, 0x00]);
        assert_eq!(bip34_coinbase_prefix(2), vec![0x52, 0x00]); // SRI's test vector [82, 0]
        assert_eq!(bip34_coinbase_prefix(16), vec![0x60, 0x00]);
        assert_eq!(bip34_coinbase_prefix(17), vec![0x01, 0x11]);
        assert_eq!(bip34_coinbase_prefix(128), vec![0x02, 0x80, 0x00]);
        assert_eq!(bip34_coinbase_prefix(500_000), vec![0x03, 0x20, 0xa1, 0x07]);
        assert!(bip34_coinbase_prefix(u32::MAX).len() <= 8);
    }

    #[test]
    fn empty_block_commitment_matches_sri_test_vector() {
        // SRI's scripted TP vector: 8-byte zero value, 0x26 script length, then the script.
        let expected: [u8; 47] = [
            0, 0, 0, 0, 0, 0, 0, 0, 38, 106, 36, 170, 33, 169, 237, 226, 246, 28, 63, 113, 209,
            222, 253, 63, 169, 153, 223, 163, 105, 83, 117, 92, 105, 6, 137, 121, 153, 98, 180,
            139, 235, 216, 54, 151, 78, 140, 249,
        ];
        assert_eq!(
            serialize(&empty_block_witness_commitment_output()),
            expected
        );
    }

    #[test]
    fn constraints_for_one_p2tr_and_p2pkh_output() {
        let p2tr = TxOut {
            value: Amount::from_sat(1),
            script_pubkey: ScriptBuf::from_bytes([&[0x51, 0x20][..], &[7; 32]].concat()),
        };
        let p2pkh = TxOut {
            value: Amount::from_sat(1),
            script_pubkey: ScriptBuf::from_bytes(
                [&[0x76, 0xa9, 0x14][..], &[7; 20], &[0x88, 0xac]].concat(),
            ),
        };
        let c = constraints_for_outputs(&[p2tr]);
        assert_eq!(c.coinbase_output_max_additional_size, 43);
        assert_eq!(c.coinbase_output_max_additional_sigops, 0);
        let c = constraints_for_outputs(&[p2pkh]);
        assert_eq!(c.coinbase_output_max_additional_size, 34);
        assert_eq!(c.coinbase_output_max_additional_sigops, 4);
    }

    #[test]
    fn constraints_limits() {
        assert!(check_constraints(&one_output_constraints()).is_ok());
        let max_ok = ((MAX_BLOCK_WEIGHT - SEGWIT_RESERVED_WEIGHT) / 4) as u32;
        let ok = CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: max_ok,
            coinbase_output_max_additional_sigops: u16::MAX,
        };
        assert!(check_constraints(&ok).is_ok());
        let too_big = CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: max_ok + 1,
            coinbase_output_max_additional_sigops: 0,
        };
        assert!(matches!(
            check_constraints(&too_big),
            Err(ConstraintsError::TooLarge { .. })
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod merkle_tests {
    use super::*;
    use bitcoin::consensus::deserialize;
    use bitcoin::hex::FromHex;

    /// Known answer: Bitcoin mainnet block 170 (hash
    /// `00000000d1145790a8694403d4063f323d499e655c83426834d4ce2f8dd4a2ee`, merkle root
    /// `7dac2c5666815c17a3b36427de37bb9d2e2c5ccec3f8633eb91a4205cb4c10ff` displayed): its
    /// coinbase, the one merkle branch (the txid of `f4184fc5...`, internal byte order) and the
    /// root in header byte order. Copied from the shared vectors (`share_vectors.json`, entry
    /// `mainnet_block170_as_stratum_job_one_branch`; source: the mainnet block itself).
    #[test]
    fn merkle_root_from_path_matches_block_170() {
        let v: [&str; 3] = [
            "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0704ffff001d0102ffffffff0100f2052a01000000434104d46c4968bde02899d2aa0963367c7a6ce34eec332b32e42e5f3407e052d64ac625da6f0718e7b302140434bd725706957c092db53805b821a85b23a7ac61725bac00000000",
            "169e1e83e930853391bc6f35f605c6754cfead57cf8387639d3b4096c54f18f4",
            "ff104ccb05421ab93e63f8c3ce5c2c2e9dbb37de2764b3a3175c8166562cac7d",
        ];
        let coinbase: Transaction = deserialize(&Vec::<u8>::from_hex(v[0]).unwrap()).unwrap();
        let branch: [u8; 32] = <[u8; 32]>::from_hex(v[1]).unwrap();
        let root = merkle_root_from_path(
            TxMerkleNode::from_raw_hash(coinbase.compute_txid().to_raw_hash()),
            &[branch],
        );
        assert_eq!(root.to_byte_array(), <[u8; 32]>::from_hex(v[2]).unwrap());
    }

    fn tx(n: u8, witness: bool) -> Transaction {
        Transaction {
            version: TxVersion::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(bitcoin::Txid::from_byte_array([n; 32]), 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: if witness {
                    Witness::from_slice(&[[n]])
                } else {
                    Witness::new()
                },
            }],
            output: vec![TxOut {
                value: Amount::from_sat(u64::from(n)),
                script_pubkey: op_true_script(),
            }],
        }
    }

    #[test]
    fn path_and_commitment_agree_with_rust_bitcoin_blocks() {
        for n in 0..9u8 {
            let txs: Vec<Transaction> = (1..=n).map(|i| tx(i, i % 2 == 0)).collect();
            let mut coinbase = tx(200, false);
            coinbase.input[0].previous_output = OutPoint::null();
            coinbase.input[0].script_sig = ScriptBuf::from_bytes(vec![0x51, 0x00]);
            coinbase.input[0].witness = Witness::from_slice(&[WITNESS_RESERVED_VALUE]);
            coinbase.output.push(witness_commitment_output_for(&txs));
            let mut block = genesis();
            block.txdata = std::iter::once(coinbase.clone())
                .chain(txs.clone())
                .collect();
            let root = merkle_root_from_path(
                TxMerkleNode::from_raw_hash(coinbase.compute_txid().to_raw_hash()),
                &coinbase_merkle_path(&txs),
            );
            assert_eq!(Some(root), block.compute_merkle_root(), "{n} transactions");
            block.header.merkle_root = root;
            assert!(block.check_witness_commitment(), "{n} transactions");
            assert_eq!(coinbase_merkle_path(&txs).is_empty(), n == 0);
        }
        assert_eq!(
            witness_commitment_output_for(&[]),
            empty_block_witness_commitment_output()
        );
    }
}
