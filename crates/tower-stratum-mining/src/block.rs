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
use tower_stratum_core::stratum_core::bitcoin::consensus::{deserialize, encode, Encodable};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::{BlockHash, Transaction, VarInt};
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
mod tests {
    use super::*;

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
