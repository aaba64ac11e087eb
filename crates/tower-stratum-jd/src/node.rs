//! What a Job Declarator Server needs from a Bitcoin node (spec 6.1): a mempool to look
//! declared transactions up in, the chain tip declared jobs must build on, and a way to
//! publish the blocks `PushSolution` completes. [`MemoryNode`] is an in-memory implementation.

use std::collections::HashMap;
use std::sync::Arc;
use tower_stratum_core::stratum_core::bitcoin::{Block, BlockHash, Transaction, Wtxid};

/// The best block of the node's chain: a declared job builds on it.
///
/// A job is on this tip when its coinbase's BIP34 height is `height + 1`; the block
/// `PushSolution` completes has `hash` as its `prev_blockhash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainTip {
    /// Hash of the tip block (internal byte order inside; `Display` prints the usual reversed
    /// hex). The `prev_hash` of the next block.
    pub hash: BlockHash,
    /// Height of the tip block (the genesis block is 0); the next block's height is one more.
    pub height: u64,
}

/// Why a node did not take a block from [`JdNode::submit_block`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitBlockError {
    /// The node checked the block and refused it (e.g. Bitcoin Core's `submitblock` reason
    /// such as `"bad-txnmrklroot"`).
    #[error("block rejected: {0}")]
    Rejected(String),
    /// The node could not be reached or its queue is full; the block was not handed over.
    #[error("node unavailable: {0}")]
    Unavailable(String),
}

/// The node behind a [`JobDeclarationServer`](crate::JobDeclarationServer).
///
/// The server owns its node and calls it from its handler task, one message at a time, so
/// the methods must not block: an implementation backed by RPC keeps a local mirror of the
/// mempool and tip (spec 6.1, "Maintaining an internal mempool") and hands blocks to a task
/// through a bounded queue.
pub trait JdNode: Send + 'static {
    /// The mempool transaction whose wtxid (BIP141: `sha256d` of the serialization *with*
    /// witness; the txid for a transaction without witness) is `wtxid`, or `None` if the
    /// mempool does not have it. Shared (`Arc`) because a declared job keeps every transaction
    /// until its block could be pushed.
    fn transaction(&self, wtxid: &Wtxid) -> Option<Arc<Transaction>>;

    /// The current chain tip. `None` while the node knows none (still syncing); every
    /// declaration is then refused with `stale-chain-tip`.
    fn chain_tip(&self) -> Option<ChainTip>;

    /// Publishes a block `PushSolution` completed (spec 6.4.9: "JDS MUST attempt to
    /// reconstruct and propagate the block"). Returns once the block is handed over; errors
    /// are logged by the server, which does not retry.
    fn submit_block(&mut self, block: Block) -> Result<(), SubmitBlockError>;
}

/// A [`JdNode`] in memory: a map of transactions by wtxid, a settable tip and a record of every
/// submitted block (accepted without validation; the tip does not move, set it with
/// [`set_tip`](Self::set_tip)). For tests and small deployments whose mempool is fed by the
/// application (e.g. a regtest template source).
///
/// ```
/// use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
/// use tower_stratum_core::stratum_core::bitcoin::BlockHash;
/// use tower_stratum_jd::{ChainTip, JdNode, MemoryNode};
///
/// let node = MemoryNode::new(ChainTip { hash: BlockHash::all_zeros(), height: 0 });
/// assert_eq!(node.chain_tip().map(|t| t.height), Some(0));
/// assert!(node.submitted_blocks().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryNode {
    mempool: HashMap<Wtxid, Arc<Transaction>>,
    tip: Option<ChainTip>,
    submitted: Vec<Block>,
}

impl MemoryNode {
    /// An empty mempool on `tip`.
    pub fn new(tip: ChainTip) -> Self {
        Self {
            tip: Some(tip),
            ..Self::default()
        }
    }

    /// Adds a transaction to the mempool (keyed by its computed wtxid, which is returned).
    pub fn add_transaction(&mut self, tx: Transaction) -> Wtxid {
        let wtxid = tx.compute_wtxid();
        self.mempool.insert(wtxid, Arc::new(tx));
        wtxid
    }

    /// Removes a transaction from the mempool; whether it was there.
    pub fn remove_transaction(&mut self, wtxid: &Wtxid) -> bool {
        self.mempool.remove(wtxid).is_some()
    }

    /// Number of transactions in the mempool.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// Sets the chain tip (`None`: no tip known).
    pub fn set_tip(&mut self, tip: Option<ChainTip>) {
        self.tip = tip;
    }

    /// Every block passed to [`JdNode::submit_block`], in order.
    pub fn submitted_blocks(&self) -> &[Block] {
        &self.submitted
    }
}

impl JdNode for MemoryNode {
    fn transaction(&self, wtxid: &Wtxid) -> Option<Arc<Transaction>> {
        self.mempool.get(wtxid).cloned()
    }

    fn chain_tip(&self) -> Option<ChainTip> {
        self.tip
    }

    fn submit_block(&mut self, block: Block) -> Result<(), SubmitBlockError> {
        self.submitted.push(block);
        Ok(())
    }
}
