//! A CPU solver for regtest templates, for tests and examples: builds the coinbase a Pool would
//! build from a `NewTemplate` (spec 7.2), grinds the header nonce against the
//! `SetNewPrevHash` target and returns the `SubmitSolution` (spec 7.7) plus the block.
//!
//! Regtest's target is met by about every second hash, so [`solve`] returns after a few
//! hashes. On mainnet difficulty it would practically never return: it is not a miner.

use crate::regtest::{coinbase_merkle_path, merkle_root_from_path};
use tower_stratum_core::stratum_core::bitcoin::{
    absolute::LockTime,
    block::{Header, Version as BlockVersion},
    consensus::{serialize, Decodable},
    hashes::Hash,
    script::PushBytesBuf,
    transaction::Version as TxVersion,
    Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Target, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness,
};
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};

/// Why a template could not be solved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SolverError {
    /// `coinbase_tx_outputs` does not hold `coinbase_tx_outputs_count` outputs.
    #[error("cannot decode the template's coinbase_tx_outputs")]
    BadTemplateOutputs,
    /// The template carries transactions (`merkle_path` not empty) but none were given
    /// ([`solve`]; use [`solve_with_transactions`]).
    #[error("template has transactions")]
    NotEmpty,
    /// The given transactions are not the ones the template's `merkle_path` commits to.
    #[error("transactions do not match the template's merkle_path")]
    MerklePathMismatch,
    /// The extranonce is longer than a script push allows here, or the coinbase does not fit
    /// an Sv2 `B0_64K`.
    #[error("coinbase too large")]
    TooLarge,
    /// No nonce (at this timestamp) meets the target.
    #[error("nonce space exhausted")]
    Exhausted,
}

/// A solved template.
#[derive(Debug, Clone, PartialEq)]
pub struct Solved {
    /// The message for the template provider.
    pub submit: SubmitSolutionOwned,
    /// The block it describes.
    pub block: Block,
}

impl Solved {
    /// The block's consensus serialization.
    pub fn block_bytes(&self) -> Vec<u8> {
        serialize(&self.block)
    }

    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        self.block.block_hash()
    }
}

/// The coinbase a Pool builds from `template`: `scriptSig` = `coinbase_prefix` followed by a
/// push of `extranonce`; outputs = `payouts` followed by the template's `coinbase_tx_outputs`;
/// witness = the 32-byte zero reserved value; version, sequence and locktime from the template.
pub fn build_coinbase(
    template: &NewTemplateOwned,
    payouts: &[TxOut],
    extranonce: &[u8],
) -> Result<Transaction, SolverError> {
    let mut script_sig = template.coinbase_prefix.as_bytes().to_vec();
    let push = PushBytesBuf::try_from(extranonce.to_vec()).map_err(|_| SolverError::TooLarge)?;
    script_sig.extend(
        ScriptBuf::builder()
            .push_slice(push)
            .into_script()
            .into_bytes(),
    );
    let mut outputs = payouts.to_vec();
    let mut cursor = template.coinbase_tx_outputs.as_bytes();
    for _ in 0..template.coinbase_tx_outputs_count {
        outputs.push(
            TxOut::consensus_decode(&mut cursor).map_err(|_| SolverError::BadTemplateOutputs)?,
        );
    }
    if !cursor.is_empty() {
        return Err(SolverError::BadTemplateOutputs);
    }
    Ok(Transaction {
        version: TxVersion::non_standard(template.coinbase_tx_version as i32),
        lock_time: LockTime::from_consensus(template.coinbase_tx_locktime),
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence(template.coinbase_tx_input_sequence),
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: outputs,
    })
}

/// One payout output paying the whole `coinbase_tx_value_remaining` of `template` to `script`.
pub fn payout_all(template: &NewTemplateOwned, script: ScriptBuf) -> TxOut {
    TxOut {
        value: tower_stratum_core::stratum_core::bitcoin::Amount::from_sat(
            template.coinbase_tx_value_remaining,
        ),
        script_pubkey: script,
    }
}

/// Solves a coinbase-only `template` on `prev_hash`: builds the coinbase ([`build_coinbase`]),
/// then tries nonces from 0 with the template's version and `prev_hash.header_timestamp` until
/// the header hash meets `prev_hash.target` (a little-endian `U256`). A template with
/// transactions gives [`SolverError::NotEmpty`].
pub fn solve(
    template: &NewTemplateOwned,
    prev_hash: &SetNewPrevHashOwned,
    payouts: &[TxOut],
    extranonce: &[u8],
) -> Result<Solved, SolverError> {
    if !template.merkle_path.is_empty() {
        return Err(SolverError::NotEmpty);
    }
    solve_with_transactions(template, prev_hash, payouts, extranonce, &[])
}

/// [`solve`] for a template with transactions: `transactions` are the ones after the coinbase,
/// in block order, as `RequestTransactionData.Success` lists them. The header's merkle root
/// comes from the coinbase txid and the template's `merkle_path`; the transactions must be the
/// ones that path commits to ([`SolverError::MerklePathMismatch`] otherwise). The block is the
/// coinbase followed by `transactions`.
pub fn solve_with_transactions(
    template: &NewTemplateOwned,
    prev_hash: &SetNewPrevHashOwned,
    payouts: &[TxOut],
    extranonce: &[u8],
    transactions: &[Transaction],
) -> Result<Solved, SolverError> {
    let path: Vec<[u8; 32]> = template
        .merkle_path
        .iter()
        .map(|h| h.as_bytes().try_into().unwrap_or([0u8; 32]))
        .collect();
    if path != coinbase_merkle_path(transactions) {
        return Err(SolverError::MerklePathMismatch);
    }
    let coinbase = build_coinbase(template, payouts, extranonce)?;
    let mut prev = [0u8; 32];
    prev.copy_from_slice(prev_hash.prev_hash.as_bytes());
    let mut target = [0u8; 32];
    target.copy_from_slice(prev_hash.target.as_bytes());
    let target = Target::from_le_bytes(target);
    let mut header = Header {
        version: BlockVersion::from_consensus(template.version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev),
        merkle_root: merkle_root_from_path(
            TxMerkleNode::from_raw_hash(coinbase.compute_txid().to_raw_hash()),
            &path,
        ),
        time: prev_hash.header_timestamp,
        bits: CompactTarget::from_consensus(prev_hash.n_bits),
        nonce: 0,
    };
    while !target.is_met_by(header.block_hash()) {
        header.nonce = header.nonce.checked_add(1).ok_or(SolverError::Exhausted)?;
    }
    let submit = SubmitSolutionOwned {
        template_id: template.template_id,
        version: template.version,
        header_timestamp: header.time,
        header_nonce: header.nonce,
        coinbase_tx: serialize(&coinbase)
            .try_into()
            .map_err(|_| SolverError::TooLarge)?,
    };
    Ok(Solved {
        submit,
        block: Block {
            header,
            txdata: std::iter::once(coinbase)
                .chain(transactions.iter().cloned())
                .collect(),
        },
    })
}
