//! [`Mempool`]: the embedded regtest source's pool of synthetic transactions (sans-IO).
//!
//! The transactions are structurally valid and, when their funding coinbase pays to `OP_TRUE`
//! (the simulated blocks' default payout), script-valid too: every output this module creates
//! is either a bare `OP_TRUE` (spent with an empty `scriptSig`: a legacy input) or a P2WSH of
//! `OP_TRUE` (spent with the witness `[OP_TRUE]`: a SegWit input). A transaction with at least
//! one SegWit input is serialized with the BIP144 marker and witness, so templates mix legacy
//! and SegWit transactions with distinct txids and wtxids, computed by rust-bitcoin.
//!
//! Not consensus-complete on purpose: coinbase maturity (100 blocks) is not enforced, and bare
//! `OP_TRUE` outputs are non-standard (policy) though consensus-valid. A regtest node would
//! therefore reject blocks spending young coinbases; this source and [`crate::check`] do not
//! model the UTXO set.
//!
//! Bounds (spec-independent, this crate's choices, all in [`MempoolConfig`]): at most
//! [`max_transactions`](MempoolConfig::max_transactions) entries and
//! [`max_bytes`](MempoolConfig::max_bytes) serialized bytes (with witness); over either, the
//! entry with the lowest feerate (fee / weight; ties: the larger txid) is evicted together with
//! its in-mempool descendants, like Bitcoin Core's `TrimToSize` on individual feerates. The
//! spendable coins it tracks are bounded by [`max_coins`](MempoolConfig::max_coins).
//!
//! [`Mempool::select`] is Bitcoin Core's ancestor-feerate selection in its simplest form: take
//! the transaction whose package (it and its not yet selected in-mempool ancestors) has the
//! highest feerate, add the package parents first, repeat; packages that do not fit the weight
//! or sigop budget are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tower_stratum_core::stratum_core::bitcoin::{
    absolute::LockTime, transaction::Version as TxVersion, Amount, Block, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

use crate::regtest::op_true_script;

/// In-mempool ancestor depth limit of generated transactions (Bitcoin Core's default
/// `-limitancestorcount` is 25).
pub const MAX_GENERATED_DEPTH: u32 = 25;

/// Smallest output value the generator creates, satoshis (above every standard dust limit).
const MIN_OUTPUT_SAT: u64 = 1_000;

/// Configuration of the synthetic mempool. `Default` disables generation
/// (`txs_per_interval = 0`), so templates stay coinbase-only unless asked otherwise;
/// [`MempoolConfig::modest`] is a small, documented activity level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Period of transaction generation. `Duration::ZERO` disables it. Default 10 s.
    pub tx_interval: Duration,
    /// Transactions generated per period (fewer when not enough coins are spendable). 0
    /// disables generation. Default 0.
    pub txs_per_interval: u32,
    /// Most outputs a generated transaction has (at least 1). Default 3.
    pub max_outputs: u32,
    /// Highest feerate a generated transaction pays, sat/vB (they pay 1 to this, uniformly).
    /// Default 50.
    pub max_feerate_sat_vb: u64,
    /// Most transactions kept. Default 1000.
    pub max_transactions: usize,
    /// Most serialized bytes (with witness) kept. Default 1,000,000.
    pub max_bytes: usize,
    /// Most spendable coins (confirmed coinbase and transaction outputs, unconfirmed outputs)
    /// tracked; the lowest outpoints are forgotten first. Default 4096.
    pub max_coins: usize,
    /// Weight, in weight units, kept free in every block for the coinbase (header, coinbase
    /// fixed fields and the pool's outputs; spec 7.1's reservation). Default 8000 WU (covers
    /// `CoinbaseOutputConstraints` of up to 1708 bytes of outputs).
    pub coinbase_reserved_weight: u64,
    /// Signature-operation cost kept free in every block for the coinbase. Default 400.
    pub coinbase_reserved_sigops: u64,
    /// Seed of the deterministic generator. Default `0x5eed`.
    pub seed: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            tx_interval: Duration::from_secs(10),
            txs_per_interval: 0,
            max_outputs: 3,
            max_feerate_sat_vb: 50,
            max_transactions: 1000,
            max_bytes: 1_000_000,
            max_coins: 4096,
            coinbase_reserved_weight: 8000,
            coinbase_reserved_sigops: 400,
            seed: 0x5eed,
        }
    }
}

impl MempoolConfig {
    /// A modest activity level: 5 transactions every 10 s, the other fields at their
    /// defaults.
    pub fn modest() -> Self {
        Self {
            txs_per_interval: 5,
            ..Self::default()
        }
    }

    /// Whether generation is on (`tx_interval` and `txs_per_interval` both non-zero).
    pub fn generates(&self) -> bool {
        !self.tx_interval.is_zero() && self.txs_per_interval > 0
    }
}

/// Why [`Mempool::insert`] refused a transaction. The mempool does not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// The transaction is a coinbase.
    #[error("a coinbase cannot enter the mempool")]
    Coinbase,
    /// The transaction is already in the mempool.
    #[error("transaction {0} is already in the mempool")]
    Duplicate(Txid),
    /// An input spends a coin that is not spendable here: unknown, already spent by a mempool
    /// transaction, or spent twice by this one.
    #[error("input spends unknown or spent coin {0}")]
    MissingOrSpent(OutPoint),
    /// The outputs pay more than the inputs.
    #[error("outputs pay {paid} sat, inputs hold {available} sat")]
    NegativeFee {
        /// Sum of the outputs, satoshis.
        paid: u64,
        /// Sum of the spent coins, satoshis.
        available: u64,
    },
}

/// How a coin can be spent by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoinKind {
    /// `scriptPubKey` `OP_TRUE`: empty `scriptSig`, no witness.
    BareOpTrue,
    /// P2WSH of `OP_TRUE`: empty `scriptSig`, witness `[OP_TRUE]`.
    P2wshOpTrue,
    /// Any other script: not spent by the generator, accepted from [`Mempool::insert`].
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Coin {
    value: u64,
    kind: CoinKind,
}

#[derive(Debug, Clone)]
struct Entry {
    tx: Transaction,
    fee: u64,
    weight: u64,
    size: usize,
    sigops: u64,
    /// 1 + the largest depth of its in-mempool parents (when it entered): parents always have
    /// a smaller depth, so sorting by depth is a topological order.
    depth: u32,
    parents: BTreeSet<Txid>,
    children: BTreeSet<Txid>,
    /// The coins it spends, to give back when it is evicted.
    spent: Vec<(OutPoint, Coin)>,
}

/// A fee-ordered selection of mempool transactions for one block ([`Mempool::select`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The transactions in block order (every parent before its children).
    pub transactions: Vec<Transaction>,
    /// Sum of their fees, satoshis.
    pub fees: u64,
    /// Sum of their weights, weight units.
    pub weight: u64,
}

/// The synthetic mempool (see the [module docs](self)). Sans-IO: generation is a call
/// ([`Mempool::generate`]); the source decides when.
#[derive(Debug, Clone)]
pub struct Mempool {
    config: MempoolConfig,
    entries: BTreeMap<Txid, Entry>,
    bytes: usize,
    /// Coins no mempool transaction spends yet.
    coins: BTreeMap<OutPoint, Coin>,
    rng: u64,
}

impl Mempool {
    /// An empty mempool with no spendable coins.
    pub fn new(config: MempoolConfig) -> Self {
        let rng = config.seed | 1;
        Self {
            config,
            entries: BTreeMap::new(),
            bytes: 0,
            coins: BTreeMap::new(),
            rng,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no transactions.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serialized size of all transactions (with witness), bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of spendable coins tracked.
    pub fn coin_count(&self) -> usize {
        self.coins.len()
    }

    /// Whether `txid` is in the mempool.
    pub fn contains(&self, txid: &Txid) -> bool {
        self.entries.contains_key(txid)
    }

    /// A transaction and its fee (satoshis), if present.
    pub fn get(&self, txid: &Txid) -> Option<(&Transaction, u64)> {
        self.entries.get(txid).map(|e| (&e.tx, e.fee))
    }

    /// The txids, in txid order.
    pub fn txids(&self) -> impl Iterator<Item = &Txid> {
        self.entries.keys()
    }

    /// Adds `tx`, checking that each input spends a coin this mempool knows and no mempool
    /// transaction spends yet, and that the fee (inputs minus outputs) is not negative. Then
    /// evicts lowest-feerate entries (and their descendants) while over
    /// [`max_transactions`](MempoolConfig::max_transactions) or
    /// [`max_bytes`](MempoolConfig::max_bytes), which may evict `tx` itself. Returns its txid.
    pub fn insert(&mut self, tx: Transaction) -> Result<Txid, MempoolError> {
        if tx.is_coinbase() {
            return Err(MempoolError::Coinbase);
        }
        let txid = tx.compute_txid();
        if self.entries.contains_key(&txid) {
            return Err(MempoolError::Duplicate(txid));
        }
        let mut spent = Vec::with_capacity(tx.input.len());
        let mut seen = BTreeSet::new();
        for input in &tx.input {
            let op = input.previous_output;
            let coin = match self.coins.get(&op) {
                Some(c) if seen.insert(op) => *c,
                _ => return Err(MempoolError::MissingOrSpent(op)),
            };
            spent.push((op, coin));
        }
        let available = spent
            .iter()
            .try_fold(0u64, |a, (_, c)| a.checked_add(c.value))
            .unwrap_or(u64::MAX);
        let paid = tx
            .output
            .iter()
            .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()))
            .unwrap_or(u64::MAX);
        if paid > available {
            return Err(MempoolError::NegativeFee { paid, available });
        }
        let parents: BTreeSet<Txid> = spent
            .iter()
            .map(|(op, _)| op.txid)
            .filter(|p| self.entries.contains_key(p))
            .collect();
        let depth = parents
            .iter()
            .filter_map(|p| self.entries.get(p))
            .map(|e| e.depth)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        for (op, _) in &spent {
            self.coins.remove(op);
        }
        for p in &parents {
            if let Some(e) = self.entries.get_mut(p) {
                e.children.insert(txid);
            }
        }
        for (vout, out) in tx.output.iter().enumerate() {
            self.coins.insert(
                OutPoint::new(txid, vout as u32),
                Coin {
                    value: out.value.to_sat(),
                    kind: kind_of(&out.script_pubkey),
                },
            );
        }
        let size = tx.total_size();
        let entry = Entry {
            fee: available - paid,
            weight: tx.weight().to_wu(),
            size,
            sigops: tx.total_sigop_cost(|_| None) as u64,
            depth,
            parents,
            children: BTreeSet::new(),
            spent,
            tx,
        };
        self.bytes = self.bytes.saturating_add(size);
        self.entries.insert(txid, entry);
        self.trim();
        Ok(txid)
    }

    /// Makes the outputs of `coinbase` (a confirmed block's coinbase) spendable. Only outputs
    /// with a value go in; the generator spends those paying `OP_TRUE` or P2WSH(`OP_TRUE`).
    pub fn add_confirmed_coinbase(&mut self, coinbase: &Transaction) {
        let txid = coinbase.compute_txid();
        for (vout, out) in coinbase.output.iter().enumerate() {
            if out.value.to_sat() > 0 {
                self.coins.insert(
                    OutPoint::new(txid, vout as u32),
                    Coin {
                        value: out.value.to_sat(),
                        kind: kind_of(&out.script_pubkey),
                    },
                );
            }
        }
        self.trim_coins();
    }

    /// Applies a block that became the tip: its coinbase's outputs become spendable, its
    /// other transactions leave the mempool (their children stay, now with a confirmed
    /// parent), and mempool transactions spending a coin the block spent (conflicts) are
    /// removed with their descendants. Returns how many entries left.
    pub fn remove_confirmed(&mut self, block: &Block) -> usize {
        let before = self.entries.len();
        let mut spent_by_block = BTreeSet::new();
        for tx in block.txdata.iter().skip(1) {
            let txid = tx.compute_txid();
            for input in &tx.input {
                spent_by_block.insert(input.previous_output);
            }
            if let Some(e) = self.entries.remove(&txid) {
                self.bytes = self.bytes.saturating_sub(e.size);
                for c in &e.children {
                    if let Some(child) = self.entries.get_mut(c) {
                        child.parents.remove(&txid);
                    }
                }
                for p in &e.parents {
                    if let Some(parent) = self.entries.get_mut(p) {
                        parent.children.remove(&txid);
                    }
                }
            } else {
                // Not ours: its outputs become spendable (and the block's inputs not).
                for (vout, out) in tx.output.iter().enumerate() {
                    self.coins.insert(
                        OutPoint::new(txid, vout as u32),
                        Coin {
                            value: out.value.to_sat(),
                            kind: kind_of(&out.script_pubkey),
                        },
                    );
                }
            }
        }
        for op in &spent_by_block {
            self.coins.remove(op);
        }
        let conflicts: Vec<Txid> = self
            .entries
            .iter()
            .filter(|(_, e)| e.spent.iter().any(|(op, _)| spent_by_block.contains(op)))
            .map(|(t, _)| *t)
            .collect();
        for txid in conflicts {
            // The block spent its coin: do not give it back.
            self.remove_with_descendants(txid, &spent_by_block);
        }
        if let Some(cb) = block.txdata.first() {
            self.add_confirmed_coinbase(cb);
        }
        before.saturating_sub(self.entries.len())
    }

    /// Generates up to `count` transactions spending known `OP_TRUE` / P2WSH(`OP_TRUE`) coins
    /// (confirmed or from other mempool transactions), deterministically from the seed: 1 or 2
    /// inputs, 1 to [`max_outputs`](MempoolConfig::max_outputs) outputs of either kind, a
    /// feerate of 1 to [`max_feerate_sat_vb`](MempoolConfig::max_feerate_sat_vb) sat/vB, in-
    /// mempool depth at most [`MAX_GENERATED_DEPTH`]. Returns how many entered (eviction may
    /// remove some again at once).
    pub fn generate(&mut self, count: u32) -> usize {
        let mut added = 0;
        for _ in 0..count {
            let Some(tx) = self.next_transaction() else {
                break;
            };
            if self.insert(tx).is_ok() {
                added += 1;
            }
        }
        added
    }

    /// A fee-ordered selection for a block with `max_weight` weight units and `max_sigops`
    /// signature-operation cost available for non-coinbase transactions (see the
    /// [module docs](self)). Deterministic: ties go to the smaller txid.
    pub fn select(&self, max_weight: u64, max_sigops: u64) -> Selection {
        let mut selected: BTreeSet<Txid> = BTreeSet::new();
        let mut out = Selection::default();
        let mut sigops = 0u64;
        // (fee, weight, sigops) of each candidate's package; only the packages of descendants
        // of what was just selected change, so only those are recomputed.
        let mut packages: BTreeMap<Txid, (u64, u64, u64)> = self
            .entries
            .keys()
            .map(|t| (*t, self.package_totals(*t, &selected)))
            .collect();
        loop {
            let mut best: Option<(Txid, u64, u64, u64)> = None;
            for (txid, &(fee, weight, ops)) in &packages {
                let better = match best {
                    None => true,
                    // fee/weight > best_fee/best_weight, in integers; ties keep the smaller txid.
                    Some((_, bf, bw, _)) => {
                        u128::from(fee) * u128::from(bw) > u128::from(bf) * u128::from(weight)
                    }
                };
                if better {
                    best = Some((*txid, fee, weight, ops));
                }
            }
            let Some((txid, fee, weight, ops)) = best else {
                break;
            };
            packages.remove(&txid);
            if out.weight.saturating_add(weight) > max_weight
                || sigops.saturating_add(ops) > max_sigops
            {
                continue;
            }
            let mut package = self.unselected_ancestors(txid, &selected);
            package.sort_by_key(|t| (self.entries.get(t).map(|e| e.depth).unwrap_or(0), *t));
            let mut affected = BTreeSet::new();
            for t in &package {
                if let Some(e) = self.entries.get(t) {
                    out.transactions.push(e.tx.clone());
                    selected.insert(*t);
                    packages.remove(t);
                    self.collect_descendants(*t, &mut affected);
                }
            }
            for t in affected {
                if let Some(p) = packages.get_mut(&t) {
                    *p = self.package_totals(t, &selected);
                }
            }
            out.fees = out.fees.saturating_add(fee);
            out.weight = out.weight.saturating_add(weight);
            sigops = sigops.saturating_add(ops);
        }
        out
    }

    /// Fee, weight and sigops of `txid` and its in-mempool ancestors not in `selected`.
    fn package_totals(&self, txid: Txid, selected: &BTreeSet<Txid>) -> (u64, u64, u64) {
        self.unselected_ancestors(txid, selected)
            .iter()
            .filter_map(|t| self.entries.get(t))
            .fold((0, 0, 0), |(f, w, o), e| {
                (
                    f.saturating_add(e.fee),
                    w.saturating_add(e.weight),
                    o.saturating_add(e.sigops),
                )
            })
    }

    /// Adds every in-mempool descendant of `txid` (not `txid` itself) to `into`.
    fn collect_descendants(&self, txid: Txid, into: &mut BTreeSet<Txid>) {
        let mut stack: Vec<Txid> = self
            .entries
            .get(&txid)
            .map(|e| e.children.iter().copied().collect())
            .unwrap_or_default();
        while let Some(t) = stack.pop() {
            if into.insert(t) {
                if let Some(e) = self.entries.get(&t) {
                    stack.extend(e.children.iter().copied());
                }
            }
        }
    }

    /// `txid` and its in-mempool ancestors not in `selected`.
    fn unselected_ancestors(&self, txid: Txid, selected: &BTreeSet<Txid>) -> Vec<Txid> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![txid];
        while let Some(t) = stack.pop() {
            if selected.contains(&t) || !seen.insert(t) {
                continue;
            }
            if let Some(e) = self.entries.get(&t) {
                stack.extend(e.parents.iter().copied());
            }
        }
        seen.into_iter().collect()
    }

    /// Evicts lowest-feerate entries while over a bound.
    fn trim(&mut self) {
        while self.entries.len() > self.config.max_transactions
            || self.bytes > self.config.max_bytes
        {
            let worst = self
                .entries
                .iter()
                .min_by(|(ta, a), (tb, b)| {
                    // a.fee/a.weight vs b.fee/b.weight; ties: the larger txid goes first.
                    (u128::from(a.fee) * u128::from(b.weight))
                        .cmp(&(u128::from(b.fee) * u128::from(a.weight)))
                        .then(tb.cmp(ta))
                })
                .map(|(t, _)| *t);
            match worst {
                Some(t) => {
                    self.remove_with_descendants(t, &BTreeSet::new());
                }
                None => break,
            }
        }
        self.trim_coins();
    }

    fn trim_coins(&mut self) {
        while self.coins.len() > self.config.max_coins {
            if self.coins.pop_first().is_none() {
                break;
            }
        }
    }

    /// Removes `txid` and every in-mempool descendant; coins they spent become spendable
    /// again unless created by a removed transaction or listed in `gone`.
    fn remove_with_descendants(&mut self, txid: Txid, gone: &BTreeSet<OutPoint>) {
        let mut doomed = BTreeSet::new();
        let mut stack = vec![txid];
        while let Some(t) = stack.pop() {
            if !doomed.insert(t) {
                continue;
            }
            if let Some(e) = self.entries.get(&t) {
                stack.extend(e.children.iter().copied());
            }
        }
        for t in &doomed {
            let Some(e) = self.entries.remove(t) else {
                continue;
            };
            self.bytes = self.bytes.saturating_sub(e.size);
            for vout in 0..e.tx.output.len() {
                self.coins.remove(&OutPoint::new(*t, vout as u32));
            }
            for (op, coin) in e.spent {
                if !doomed.contains(&op.txid) && !gone.contains(&op) {
                    self.coins.insert(op, coin);
                }
            }
            for p in &e.parents {
                if let Some(parent) = self.entries.get_mut(p) {
                    parent.children.remove(t);
                }
            }
        }
    }

    /// xorshift64: deterministic, no dependency.
    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A random number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One generated transaction, or `None` when no coin can fund one.
    fn next_transaction(&mut self) -> Option<Transaction> {
        let spendable: Vec<OutPoint> = self
            .coins
            .iter()
            .filter(|(op, c)| {
                c.kind != CoinKind::Other
                    && c.value >= 2 * MIN_OUTPUT_SAT
                    && self
                        .entries
                        .get(&op.txid)
                        .is_none_or(|e| e.depth < MAX_GENERATED_DEPTH)
            })
            .map(|(op, _)| *op)
            .collect();
        if spendable.is_empty() {
            return None;
        }
        let n_inputs = if spendable.len() > 1 && self.below(4) == 0 {
            2
        } else {
            1
        };
        let mut inputs: Vec<OutPoint> = Vec::with_capacity(n_inputs);
        while inputs.len() < n_inputs {
            let i = self.below(spendable.len() as u64) as usize;
            let op = *spendable.get(i)?;
            if !inputs.contains(&op) {
                inputs.push(op);
            }
        }
        let coins: Vec<Coin> = inputs
            .iter()
            .filter_map(|op| self.coins.get(op).copied())
            .collect();
        let total: u64 = coins.iter().map(|c| c.value).sum();
        let feerate = 1 + self.below(self.config.max_feerate_sat_vb.max(1));
        let max_outputs = u64::from(self.config.max_outputs.max(1));
        let mut n_outputs = 1 + self.below(max_outputs);
        let input = inputs
            .iter()
            .zip(&coins)
            .map(|(op, c)| TxIn {
                previous_output: *op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: match c.kind {
                    CoinKind::P2wshOpTrue => Witness::from_slice(&[op_true_script().as_bytes()]),
                    _ => Witness::new(),
                },
            })
            .collect();
        let mut tx = Transaction {
            version: TxVersion::TWO,
            lock_time: LockTime::ZERO,
            input,
            output: Vec::new(),
        };
        loop {
            tx.output = (0..n_outputs)
                .map(|_| TxOut {
                    value: Amount::ZERO,
                    script_pubkey: if self.below(2) == 0 {
                        op_true_script()
                    } else {
                        ScriptBuf::new_p2wsh(&op_true_script().wscript_hash())
                    },
                })
                .collect();
            let fee = feerate.saturating_mul(tx.vsize() as u64);
            let share = total.saturating_sub(fee) / n_outputs;
            if share >= MIN_OUTPUT_SAT {
                let rest = total - fee - share * n_outputs;
                for (i, o) in tx.output.iter_mut().enumerate() {
                    o.value = Amount::from_sat(if i == 0 { share + rest } else { share });
                }
                return Some(tx);
            }
            if n_outputs == 1 {
                return None;
            }
            n_outputs = 1;
        }
    }
}

fn kind_of(script: &ScriptBuf) -> CoinKind {
    let op_true = op_true_script();
    if *script == op_true {
        CoinKind::BareOpTrue
    } else if *script == ScriptBuf::new_p2wsh(&op_true.wscript_hash()) {
        CoinKind::P2wshOpTrue
    } else {
        CoinKind::Other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A coinbase paying `values` to `OP_TRUE`.
    fn funding(values: &[u64]) -> Transaction {
        Transaction {
            version: TxVersion::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(vec![0x51, 0x00]),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: values
                .iter()
                .map(|v| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: op_true_script(),
                })
                .collect(),
        }
    }

    /// A transaction spending `inputs` (bare `OP_TRUE` coins) into one `OP_TRUE` output of
    /// `value`.
    fn spend(inputs: &[OutPoint], value: u64) -> Transaction {
        Transaction {
            version: TxVersion::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|op| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(value),
                script_pubkey: op_true_script(),
            }],
        }
    }

    fn pool(config: MempoolConfig, values: &[u64]) -> (Mempool, Txid) {
        let mut m = Mempool::new(config);
        let cb = funding(values);
        m.add_confirmed_coinbase(&cb);
        (m, cb.compute_txid())
    }

    fn txids(s: &Selection) -> Vec<Txid> {
        s.transactions.iter().map(|t| t.compute_txid()).collect()
    }

    #[test]
    fn selection_is_in_feerate_order() {
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 3]);
        // Same size, fees 1000, 3000, 2000 sat.
        let a = m.insert(spend(&[OutPoint::new(cb, 0)], 99_000)).unwrap();
        let b = m.insert(spend(&[OutPoint::new(cb, 1)], 97_000)).unwrap();
        let c = m.insert(spend(&[OutPoint::new(cb, 2)], 98_000)).unwrap();
        let s = m.select(4_000_000, 80_000);
        assert_eq!(txids(&s), [b, c, a]);
        assert_eq!(s.fees, 6_000);
        let w: u64 = s.transactions.iter().map(|t| t.weight().to_wu()).sum();
        assert_eq!(s.weight, w);
    }

    #[test]
    fn parents_come_before_children_and_pay_for_them() {
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 2]);
        // A parent paying 1 sat with a child paying 50,000 sat, and an unrelated 2000 sat one.
        let parent = m.insert(spend(&[OutPoint::new(cb, 0)], 99_999)).unwrap();
        let child = m
            .insert(spend(&[OutPoint::new(parent, 0)], 49_999))
            .unwrap();
        let other = m.insert(spend(&[OutPoint::new(cb, 1)], 98_000)).unwrap();
        let s = m.select(4_000_000, 80_000);
        // The package (parent + child) has the best feerate: it goes first, parent first.
        assert_eq!(txids(&s), [parent, child, other]);
        assert_eq!(s.fees, 1 + 50_000 + 2_000);

        // A low-fee child of a high-fee parent: parent, then the other, then the child.
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 2]);
        let parent = m.insert(spend(&[OutPoint::new(cb, 0)], 50_000)).unwrap();
        let child = m
            .insert(spend(&[OutPoint::new(parent, 0)], 49_999))
            .unwrap();
        let other = m.insert(spend(&[OutPoint::new(cb, 1)], 98_000)).unwrap();
        assert_eq!(txids(&m.select(4_000_000, 80_000)), [parent, other, child]);
    }

    #[test]
    fn selection_respects_the_weight_and_sigop_budget() {
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 3]);
        let a = m.insert(spend(&[OutPoint::new(cb, 0)], 97_000)).unwrap();
        let b = m.insert(spend(&[OutPoint::new(cb, 1)], 98_000)).unwrap();
        m.insert(spend(&[OutPoint::new(cb, 2)], 99_000)).unwrap();
        let one = m.get(&a).unwrap().0.weight().to_wu();
        let s = m.select(2 * one, 80_000);
        assert_eq!(txids(&s), [a, b]);
        assert!(s.weight <= 2 * one);
        assert!(m.select(one - 1, 80_000).transactions.is_empty());

        // A child whose package does not fit is skipped; smaller ones still go in.
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 2]);
        let parent = m.insert(spend(&[OutPoint::new(cb, 0)], 99_999)).unwrap();
        m.insert(spend(&[OutPoint::new(parent, 0)], 9_999)).unwrap();
        let other = m.insert(spend(&[OutPoint::new(cb, 1)], 99_000)).unwrap();
        assert_eq!(txids(&m.select(one, 80_000)), [other]);

        // Sigops: a transaction with a legacy CHECKSIG output costs 4.
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000]);
        let mut t = spend(&[OutPoint::new(cb, 0)], 90_000);
        t.output[0].script_pubkey = ScriptBuf::from_bytes(vec![0xac]);
        m.insert(t).unwrap();
        assert!(m.select(4_000_000, 3).transactions.is_empty());
        assert_eq!(m.select(4_000_000, 4).transactions.len(), 1);
    }

    #[test]
    fn eviction_drops_the_lowest_feerate_and_its_descendants() {
        let config = MempoolConfig {
            max_transactions: 3,
            ..MempoolConfig::default()
        };
        let (mut m, cb) = pool(config, &[100_000; 4]);
        let low = m.insert(spend(&[OutPoint::new(cb, 0)], 99_900)).unwrap();
        let low_child = m.insert(spend(&[OutPoint::new(low, 0)], 90_000)).unwrap();
        let mid = m.insert(spend(&[OutPoint::new(cb, 1)], 98_000)).unwrap();
        assert_eq!(m.len(), 3);
        // A fourth: over the bound, the lowest individual feerate (`low`) goes, with its child.
        let high = m.insert(spend(&[OutPoint::new(cb, 2)], 90_000)).unwrap();
        assert!(!m.contains(&low) && !m.contains(&low_child));
        assert!(m.contains(&mid) && m.contains(&high));
        assert_eq!(m.len(), 2);
        // `low`'s coin is spendable again, its outputs are gone.
        assert!(m.insert(spend(&[OutPoint::new(low, 0)], 1)).is_err());
        let again = m.insert(spend(&[OutPoint::new(cb, 0)], 99_000)).unwrap();
        assert!(m.contains(&again));
        let bytes: usize = m.txids().map(|t| m.get(t).unwrap().0.total_size()).sum();
        assert_eq!(m.bytes(), bytes);

        // The byte bound: room for two transactions of this size.
        let size = m.get(&mid).unwrap().0.total_size();
        let config = MempoolConfig {
            max_bytes: 2 * size + size / 2,
            ..MempoolConfig::default()
        };
        let (mut m, cb) = pool(config, &[100_000; 3]);
        let a = m.insert(spend(&[OutPoint::new(cb, 0)], 99_000)).unwrap();
        let b = m.insert(spend(&[OutPoint::new(cb, 1)], 98_000)).unwrap();
        // The newcomer has the lowest feerate: it is evicted at once.
        let c = m.insert(spend(&[OutPoint::new(cb, 2)], 99_500)).unwrap();
        assert!(m.contains(&a) && m.contains(&b) && !m.contains(&c));
        assert!(m.bytes() <= 2 * size + size / 2);
    }

    #[test]
    fn refuses_double_spends_unknown_coins_and_negative_fees() {
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 2]);
        let op = OutPoint::new(cb, 0);
        m.insert(spend(&[op], 90_000)).unwrap();
        assert_eq!(
            m.insert(spend(&[op], 80_000)),
            Err(MempoolError::MissingOrSpent(op))
        );
        let unknown = OutPoint::new(cb, 9);
        assert_eq!(
            m.insert(spend(&[unknown], 1)),
            Err(MempoolError::MissingOrSpent(unknown))
        );
        let op1 = OutPoint::new(cb, 1);
        assert_eq!(
            m.insert(spend(&[op1, op1], 1)),
            Err(MempoolError::MissingOrSpent(op1))
        );
        assert_eq!(
            m.insert(spend(&[op1], 100_001)),
            Err(MempoolError::NegativeFee {
                paid: 100_001,
                available: 100_000
            })
        );
        assert_eq!(m.insert(funding(&[1])), Err(MempoolError::Coinbase));
        let t = spend(&[op1], 1);
        let id = m.insert(t.clone()).unwrap();
        assert_eq!(m.insert(t), Err(MempoolError::Duplicate(id)));
    }

    #[test]
    fn generated_transactions_mix_segwit_and_legacy_in_chains_within_bounds() {
        let config = MempoolConfig {
            max_transactions: 60,
            max_coins: 200,
            ..MempoolConfig::modest()
        };
        let (mut m, _) = pool(config.clone(), &[5_000_000_000]);
        let added = m.generate(40);
        assert!(added >= 20, "only {added} generated");
        let (mut again, _) = pool(config, &[5_000_000_000]);
        again.generate(40);
        // Deterministic from the seed.
        assert_eq!(
            m.txids().collect::<Vec<_>>(),
            again.txids().collect::<Vec<_>>()
        );
        let txs: Vec<&Transaction> = m.txids().map(|t| m.get(t).unwrap().0).collect();
        let segwit = txs
            .iter()
            .filter(|t| t.input.iter().any(|i| !i.witness.is_empty()));
        let segwit: Vec<_> = segwit.collect();
        assert!(!segwit.is_empty());
        assert!(segwit.len() < txs.len(), "legacy ones too");
        for t in &segwit {
            assert_ne!(
                t.compute_txid().to_raw_hash(),
                t.compute_wtxid().to_raw_hash()
            );
        }
        // Chains: some spend other mempool transactions.
        assert!(txs
            .iter()
            .any(|t| t.input.iter().any(|i| m.contains(&i.previous_output.txid))));
        // Every selected transaction comes after the mempool parents it spends.
        let s = m.select(4_000_000, 80_000);
        assert_eq!(s.transactions.len(), m.len());
        let mut seen = BTreeSet::new();
        for t in &s.transactions {
            for i in &t.input {
                let p = i.previous_output.txid;
                assert!(!m.contains(&p) || seen.contains(&p), "parent first");
            }
            seen.insert(t.compute_txid());
        }
        // Many more rounds stay within the bounds.
        for _ in 0..20 {
            m.generate(40);
            assert!(m.len() <= 60);
            assert!(m.coin_count() <= 200);
        }
    }

    #[test]
    fn a_block_removes_its_transactions_and_conflicts() {
        let (mut m, cb) = pool(MempoolConfig::default(), &[100_000; 3]);
        let a = m.insert(spend(&[OutPoint::new(cb, 0)], 99_000)).unwrap();
        let a_child = m.insert(spend(&[OutPoint::new(a, 0)], 98_000)).unwrap();
        let b = m.insert(spend(&[OutPoint::new(cb, 1)], 99_000)).unwrap();
        let b_child = m.insert(spend(&[OutPoint::new(b, 0)], 98_000)).unwrap();
        // A block with `a` and a foreign spend of cb:1 (conflicting with `b`).
        let foreign = spend(&[OutPoint::new(cb, 1)], 50_000);
        let next_cb = funding(&[5_000]);
        let block = Block {
            header: crate::regtest::genesis().header,
            txdata: vec![
                next_cb.clone(),
                m.get(&a).unwrap().0.clone(),
                foreign.clone(),
            ],
        };
        assert_eq!(m.remove_confirmed(&block), 3);
        assert_eq!(m.txids().collect::<Vec<_>>(), [&a_child]);
        assert!(!m.contains(&b) && !m.contains(&b_child));
        // The child of a confirmed parent has no in-mempool parent now.
        assert_eq!(txids(&m.select(4_000_000, 80_000)), [a_child]);
        // The new coinbase and the foreign output are spendable; cb:1 is not.
        m.insert(spend(&[OutPoint::new(next_cb.compute_txid(), 0)], 1))
            .unwrap();
        m.insert(spend(&[OutPoint::new(foreign.compute_txid(), 0)], 1))
            .unwrap();
        assert!(m.insert(spend(&[OutPoint::new(cb, 1)], 1)).is_err());
    }
}
