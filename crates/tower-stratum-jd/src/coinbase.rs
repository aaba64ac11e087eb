//! The declared coinbase (spec 6.4.4): parsing `coinbase_tx_prefix || extranonce ||
//! coinbase_tx_suffix`, the pool's required outputs (spec 6.4.3), the witness commitment
//! (BIP141) and the merkle path of a job.

use crate::config::JobDeclarationServerConfig;
use crate::reject::Rejection;
use tower_stratum_core::stratum_core::bitcoin::consensus::deserialize;
use tower_stratum_core::stratum_core::bitcoin::hashes::{sha256d, Hash, HashEngine};
use tower_stratum_core::stratum_core::bitcoin::{Transaction, Wtxid};

/// The longest extranonce a `PushSolution` can carry (its `extranonce` is a `B0_32`).
pub(crate) const MAX_EXTRANONCE_LEN: usize = 32;

/// Consensus limits on the coinbase `scriptSig` length, in bytes (Bitcoin Core `bad-cb-length`).
const SCRIPT_SIG_LEN: std::ops::RangeInclusive<usize> = 2..=100;

/// First bytes of a BIP141 witness commitment output script: `OP_RETURN`, push 36,
/// `0xaa21a9ed`.
const WITNESS_COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// A declared coinbase that parsed.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredCoinbase {
    /// The transaction with a zero-filled extranonce of `extranonce_len` bytes.
    pub(crate) tx: Transaction,
    /// The extranonce length the prefix's `scriptSig` length leaves room for.
    pub(crate) extranonce_len: usize,
    /// BIP34 height at the start of the `scriptSig`.
    pub(crate) height: u64,
}

/// Reads a CompactSize at `*at`, moving `*at` past it.
fn compact_size(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    let (len, v) = match first {
        0xfd => (
            3,
            u64::from(u16::from_le_bytes(
                b.get(*at + 1..*at + 3)?.try_into().ok()?,
            )),
        ),
        0xfe => (
            5,
            u64::from(u32::from_le_bytes(
                b.get(*at + 1..*at + 5)?.try_into().ok()?,
            )),
        ),
        0xff => (
            9,
            u64::from_le_bytes(b.get(*at + 1..*at + 9)?.try_into().ok()?),
        ),
        n => (1, u64::from(n)),
    };
    *at += len;
    Some(v)
}

/// Parses a declared coinbase.
///
/// The prefix ends inside the `scriptSig`, whose length (in the prefix) counts the extranonce
/// the JDC leaves out, so the extranonce length is the unique `n` in `0..=32` for which
/// `prefix || 0^n || suffix` deserializes exactly (BIP141 fields included, spec 6.4.4).
///
/// Errors: `invalid-coinbase-tx-input` for a prefix whose single input is not a coinbase input
/// (one input spending the null outpoint, a `scriptSig` of 2-100 bytes starting with the BIP34
/// height, the extranonce inside it); `invalid-coinbase-tx` when no `n` (or more than one)
/// gives a transaction, or when it is larger than `max_size` bytes.
pub(crate) fn parse(
    prefix: &[u8],
    suffix: &[u8],
    max_size: usize,
) -> Result<DeclaredCoinbase, Rejection> {
    let input_err = |d: &str| Rejection::invalid_coinbase_tx_input(d.to_owned());
    let mut at = 4;
    if prefix.get(4..6) == Some(&[0x00, 0x01]) {
        at = 6; // BIP141 marker and flag
    }
    match compact_size(prefix, &mut at) {
        Some(1) => {}
        Some(n) => return Err(input_err(&format!("coinbase has {n} inputs, not 1"))),
        None => return Err(input_err("coinbase_tx_prefix ends before the input")),
    }
    let outpoint = prefix
        .get(at..at + 36)
        .ok_or_else(|| input_err("coinbase_tx_prefix ends inside the outpoint"))?;
    if outpoint[..32].iter().any(|b| *b != 0) || outpoint[32..] != [0xff; 4] {
        return Err(input_err("the input does not spend the null outpoint"));
    }
    at += 36;
    let script_len = compact_size(prefix, &mut at)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(|| input_err("coinbase_tx_prefix ends before the scriptSig"))?;
    if !SCRIPT_SIG_LEN.contains(&script_len) {
        return Err(input_err(&format!(
            "scriptSig of {script_len} bytes (consensus: 2 to 100)"
        )));
    }
    let script_in_prefix = prefix.get(at..).unwrap_or_default();
    if script_in_prefix.len() > script_len {
        return Err(input_err("coinbase_tx_prefix extends past the scriptSig"));
    }
    let height = tower_stratum_mining::bip34_height(script_in_prefix)
        .ok_or_else(|| input_err("no BIP34 height at the start of the scriptSig"))?;

    let room = script_len - script_in_prefix.len();
    let mut found: Option<DeclaredCoinbase> = None;
    let mut buf = Vec::with_capacity(prefix.len() + MAX_EXTRANONCE_LEN + suffix.len());
    for n in 0..=room.min(MAX_EXTRANONCE_LEN) {
        buf.clear();
        buf.extend_from_slice(prefix);
        buf.resize(prefix.len() + n, 0);
        buf.extend_from_slice(suffix);
        if let Ok(tx) = deserialize::<Transaction>(&buf) {
            if found.is_some() {
                return Err(Rejection::invalid_coinbase_tx(
                    "coinbase parses with more than one extranonce length".into(),
                ));
            }
            found = Some(DeclaredCoinbase {
                tx,
                extranonce_len: n,
                height,
            });
        }
    }
    let cb = found.ok_or_else(|| {
        Rejection::invalid_coinbase_tx(
            "coinbase_tx_prefix || extranonce || coinbase_tx_suffix is not a transaction for \
             any extranonce length up to 32 bytes"
                .into(),
        )
    })?;
    let size = prefix.len() + cb.extranonce_len + suffix.len();
    if size > max_size {
        return Err(Rejection::invalid_coinbase_tx(format!(
            "coinbase of {size} bytes exceeds the limit of {max_size}"
        )));
    }
    Ok(cb)
}

/// Checks that `tx` pays the pool's required outputs (spec 6.4.3): an output locked to
/// `pool_payout_script` with at least `min_pool_payout`, and an output for each additional
/// script. Order and other outputs are free. Error: `invalid-coinbase-tx`.
pub(crate) fn check_required_outputs(
    tx: &Transaction,
    config: &JobDeclarationServerConfig,
) -> Result<(), Rejection> {
    let payout = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == config.pool_payout_script)
        .map(|o| o.value)
        .max();
    match payout {
        None => {
            return Err(Rejection::invalid_coinbase_tx(
                "the coinbase has no pool payout output".into(),
            ))
        }
        Some(v) if v < config.min_pool_payout => {
            return Err(Rejection::invalid_coinbase_tx(format!(
                "the pool payout output pays {} sat, less than the required {} sat",
                v.to_sat(),
                config.min_pool_payout.to_sat()
            )))
        }
        Some(_) => {}
    }
    for (i, script) in config.additional_outputs.iter().enumerate() {
        if !tx.output.iter().any(|o| &o.script_pubkey == script) {
            return Err(Rejection::invalid_coinbase_tx(format!(
                "the coinbase lacks required output {} of AllocateMiningJobToken.Success",
                i + 1
            )));
        }
    }
    Ok(())
}

fn sha256d_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut e = sha256d::Hash::engine();
    e.input(left);
    e.input(right);
    sha256d::Hash::from_engine(e).to_byte_array()
}

/// Merkle root of `first` followed by `rest` (internal byte order), Bitcoin's rule: an odd
/// last node is paired with itself.
fn merkle_root(first: [u8; 32], rest: &[[u8; 32]]) -> [u8; 32] {
    let mut level: Vec<[u8; 32]> = Vec::with_capacity(rest.len() + 1);
    level.push(first);
    level.extend_from_slice(rest);
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| sha256d_pair(&p[0], p.get(1).unwrap_or(&p[0])))
            .collect();
    }
    level[0]
}

/// The merkle path of the coinbase (index 0) over the job's other txids (internal byte order,
/// deepest first): what `merkle_root_from_txid` folds the coinbase txid with.
pub(crate) fn merkle_path(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut path = Vec::new();
    let mut level: Vec<[u8; 32]> = txids.to_vec();
    while let Some(first) = level.first().copied() {
        path.push(first);
        level = level[1..]
            .chunks(2)
            .map(|p| sha256d_pair(&p[0], p.get(1).unwrap_or(&p[0])))
            .collect();
    }
    path
}

/// Checks the coinbase's BIP141 witness commitment against the declared wtxids (the
/// transactions were found by them, so they are their real wtxids), as Bitcoin Core's
/// `CheckWitnessMalleation`: the commitment is the last output starting with
/// `OP_RETURN 0xaa21a9ed`; if there is one, the coinbase witness must be one 32-byte reserved
/// value and `sha256d(witness_root || reserved)` must match; if there is none, no transaction
/// may carry a witness. Error: `invalid-job`.
pub(crate) fn check_witness_commitment(
    coinbase: &Transaction,
    wtxids: &[Wtxid],
    any_witness: bool,
) -> Result<(), Rejection> {
    let commitment = coinbase.output.iter().rev().find_map(|o| {
        let s = o.script_pubkey.as_bytes();
        (s.len() >= 38 && s[..6] == WITNESS_COMMITMENT_MAGIC).then(|| &s[6..38])
    });
    let Some(commitment) = commitment else {
        if any_witness {
            return Err(Rejection::invalid_job(
                "transactions with witnesses but no witness commitment in the coinbase".into(),
            ));
        }
        return Ok(());
    };
    let reserved: Option<[u8; 32]> = match coinbase.input.first().map(|i| &i.witness) {
        Some(w) if w.len() == 1 => w.nth(0).and_then(|r| r.try_into().ok()),
        _ => None,
    };
    let Some(reserved) = reserved else {
        return Err(Rejection::invalid_job(
            "the coinbase witness is not one 32-byte witness reserved value".into(),
        ));
    };
    let rest: Vec<[u8; 32]> = wtxids.iter().map(|w| w.to_byte_array()).collect();
    let root = merkle_root([0; 32], &rest);
    if sha256d_pair(&root, &reserved) != commitment {
        return Err(Rejection::invalid_job(
            "the witness commitment does not match the declared transactions".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn merkle_path_folds_to_the_root() {
        for n in 0..12u8 {
            let txids: Vec<[u8; 32]> = (0..n).map(|i| [i + 1; 32]).collect();
            let cb = [0xcc; 32];
            let path = merkle_path(&txids);
            let folded = tower_stratum_core::share_math::merkle_root_from_txid(cb, &path);
            assert_eq!(folded, merkle_root(cb, &txids), "{n} transactions");
        }
    }

    #[test]
    fn compact_sizes() {
        let mut at = 0;
        assert_eq!(compact_size(&[0xfd, 0x01, 0x02], &mut at), Some(0x0201));
        assert_eq!(at, 3);
        let mut at = 0;
        assert_eq!(compact_size(&[0xfe, 1], &mut at), None);
    }
}
