//! [`BlockStore`]: found blocks written durably to a directory, for an operator (or a later
//! process) to find and submit by hand.
//!
//! Per block, in the store's directory:
//! - `<height>-<hash>.block`: the whole block, consensus-serialized (what `submitblock` takes
//!   as hex), written as soon as it is known: at once for a template without transactions,
//!   after `RequestTransactionData.Success` otherwise;
//! - `<height>-<hash>.json`: a [`BlockRecord`] (height, hash, time, channel, worker, template
//!   id, header and coinbase, every submission attempt and the outcome), rewritten on every
//!   change. It alone is enough to rebuild the `SubmitSolution` (spec 7.7).
//!
//! `<height>` is `unknown` when the coinbase has no BIP34 height; `<hash>` is the usual
//! (reversed) hex. Every write is durable before the call returns: write a temporary file in
//! the same directory, `fsync` it, rename it over the final name, `fsync` the directory. A
//! crash leaves either the previous version or the new one, never a torn file (a leftover
//! `.*.tmp` at worst).
//!
//! Blocking `std::fs`: a found block is rare and worth the few milliseconds; the store is
//! meant to be called from the server's [`BlockKeeper`](crate::BlockKeeper) hook.

use crate::block::FoundBlock;
use crate::keeper::{BlockEvent, SubmitTrigger};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::hex::{DisplayHex, FromHex};
use tower_stratum_core::stratum_core::bitcoin::BlockHash;

/// Extension of the raw block files.
pub const BLOCK_EXTENSION: &str = "block";
/// Extension of the record files.
pub const RECORD_EXTENSION: &str = "json";
/// Pending records the store keeps in memory to update (oldest forgotten first; their files
/// stay).
const MAX_OPEN_RECORDS: usize = 1024;

/// Where a kept block stands with the template source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BlockStatus {
    /// Submitted, not confirmed yet (or the process stopped before it was).
    Pending,
    /// The template source's tip became this block.
    Confirmed,
    /// The template source's tip reached this height with another block.
    Stale,
    /// No confirmation after the last allowed submission: submit it by hand.
    Abandoned,
}

impl std::fmt::Display for BlockStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Stale => "stale",
            Self::Abandoned => "abandoned",
        })
    }
}

/// One `SubmitSolution` sent (or sent by hand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitAttempt {
    /// 1 for the first.
    pub attempt: u32,
    /// Unix seconds (wall clock) when it was sent.
    pub time: u64,
    /// Why: `found`, `retry`, `tip-without-block`, `hand`.
    pub trigger: String,
}

/// The `.json` beside a kept block. Hashes are the usual (reversed) hex; `header` and
/// `coinbase_tx` are consensus bytes as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// BIP34 height from the coinbase, if it has one.
    pub height: Option<u64>,
    /// Block hash.
    pub hash: String,
    /// The parent (the header's `prev_blockhash`).
    pub prev_hash: String,
    /// Unix seconds (wall clock) when the share was received.
    pub found_at: u64,
    /// Mining connection that submitted the share.
    pub connection: String,
    /// Channel id of the share.
    pub channel_id: u32,
    /// Worker (user identity) credited with the share.
    pub worker: String,
    /// Template Distribution `template_id` the job came from.
    pub template_id: u64,
    /// The 80-byte header, hex.
    pub header: String,
    /// The coinbase transaction with its BIP141 witness, hex (the `SubmitSolution` bytes).
    pub coinbase_tx: String,
    /// File name of the whole block beside this record, once known.
    pub block_file: Option<String>,
    /// Where it stands.
    pub status: BlockStatus,
    /// Every submission, oldest first.
    pub attempts: Vec<SubmitAttempt>,
    /// A sentence on the outcome (the tip that made it stale, why it was abandoned).
    #[serde(default)]
    pub outcome: Option<String>,
}

impl BlockRecord {
    /// The header fields and coinbase a `SubmitSolution` needs:
    /// `(version, header_timestamp, header_nonce, coinbase_tx)`.
    ///
    /// Errors with [`StoreError::Corrupt`] if `header` is not 80 bytes of hex or `coinbase_tx`
    /// is not hex.
    pub fn solution_parts(&self) -> Result<(u32, u32, u32, Vec<u8>), StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt {
            path: PathBuf::from(&self.hash),
            detail: what.to_owned(),
        };
        let header = Vec::<u8>::from_hex(&self.header).map_err(|_| corrupt("header hex"))?;
        if header.len() != 80 {
            return Err(corrupt("header is not 80 bytes"));
        }
        let word = |at: usize| {
            header
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .unwrap_or(0)
        };
        let coinbase =
            Vec::<u8>::from_hex(&self.coinbase_tx).map_err(|_| corrupt("coinbase_tx hex"))?;
        Ok((word(0), word(68), word(76), coinbase))
    }

    /// The file stem both files share: `<height>-<hash>`.
    pub fn stem(&self) -> String {
        stem(self.height, &self.hash)
    }
}

fn stem(height: Option<u64>, hash: &str) -> String {
    match height {
        Some(h) => format!("{h}-{hash}"),
        None => format!("unknown-{hash}"),
    }
}

/// Why the store could not write or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem call failed (directory not creatable, disk full, permission).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record does not parse or does not describe a block.
    #[error("{}: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` durably: temporary file in the same directory, `fsync`, rename,
/// `fsync` of the directory. Errors with [`StoreError::Io`].
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io(path))?;
        // The rename is durable once the directory entry is.
        fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A kept block as listed by [`BlockStore::list`].
#[derive(Debug, Clone)]
pub struct KeptBlock {
    /// The `.json` record's path.
    pub record_path: PathBuf,
    /// The `.block` path, if that file exists.
    pub block_path: Option<PathBuf>,
    /// The record.
    pub record: BlockRecord,
}

/// A directory of kept blocks (see the module docs), with an optional limit.
///
/// `keep`: at most this many blocks (record + block file) are kept; when a new block would
/// exceed it, the oldest (by the record's modification time when the store opened, then in
/// the order written) are deleted. `None`: unlimited. The limit never deletes the block just
/// written nor a block this store still has pending (submitted, not yet confirmed, stale or
/// abandoned), so it can be exceeded while blocks are pending.
#[derive(Debug)]
pub struct BlockStore {
    dir: PathBuf,
    keep: Option<usize>,
    /// Stems of the kept blocks, oldest first (`None` until the directory was first read).
    index: Option<VecDeque<String>>,
    /// Records of blocks still pending, by block hash, to update.
    open: HashMap<BlockHash, BlockRecord>,
    open_order: VecDeque<BlockHash>,
}

impl BlockStore {
    /// A store in `dir`, created (with its parents) at the first write. Nothing is touched
    /// here, so a directory that cannot be created is reported by the first write.
    pub fn new(dir: impl Into<PathBuf>, keep: Option<usize>) -> Self {
        Self {
            dir: dir.into(),
            keep,
            index: None,
            open: HashMap::new(),
            open_order: VecDeque::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limit (`None` = unlimited).
    pub fn keep_limit(&self) -> Option<usize> {
        self.keep
    }

    /// The path of the `.block` file for `block`.
    pub fn block_path(&self, block: &FoundBlock) -> PathBuf {
        self.dir.join(format!(
            "{}.{BLOCK_EXTENSION}",
            stem(block.height, &block.hash.to_string())
        ))
    }

    /// The path of the `.json` record for `block`.
    pub fn record_path(&self, block: &FoundBlock) -> PathBuf {
        self.dir.join(format!(
            "{}.{RECORD_EXTENSION}",
            stem(block.height, &block.hash.to_string())
        ))
    }

    /// Records `event` at wall-clock time `now`: `Found` writes the block file (when the
    /// block is whole) and then the record; `Completed` writes the block file; the others
    /// update the record. Returns the path an operator wants: the `.block` file if written,
    /// else the `.json`.
    ///
    /// Errors with [`StoreError::Io`] when the directory cannot be created or a file cannot
    /// be written (the in-memory record is still updated, so a later write may succeed).
    pub fn record(
        &mut self,
        event: &BlockEvent<'_>,
        now: SystemTime,
    ) -> Result<Option<PathBuf>, StoreError> {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match *event {
            BlockEvent::Found(block) => self.found(block, secs).map(Some),
            BlockEvent::Completed(block) => self.completed(block).map(Some),
            // Attempt 1 is in the record `Found` wrote (it goes out right after).
            BlockEvent::Submitted {
                trigger: SubmitTrigger::Found,
                ..
            } => Ok(None),
            BlockEvent::Submitted {
                hash,
                attempt,
                trigger,
            } => self.update(hash, |r| {
                r.attempts.push(SubmitAttempt {
                    attempt,
                    time: secs,
                    trigger: trigger.as_str().to_owned(),
                });
            }),
            BlockEvent::Confirmed { hash, .. } => self.finish(hash, BlockStatus::Confirmed, None),
            BlockEvent::Stale {
                hash,
                tip_height,
                tip_hash,
                ..
            } => self.finish(
                hash,
                BlockStatus::Stale,
                Some(format!(
                    "the template source's tip reached height {tip_height} with {tip_hash}"
                )),
            ),
            BlockEvent::Abandoned { hash, attempts } => self.finish(
                hash,
                BlockStatus::Abandoned,
                Some(format!(
                    "not confirmed after {attempts} submissions; submit it by hand"
                )),
            ),
        }
    }

    /// Creates the directory if needed; a new directory's entry is made durable too.
    fn ensure_dir(&self) -> Result<(), StoreError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
        Ok(())
    }

    fn found(&mut self, block: &FoundBlock, secs: u64) -> Result<PathBuf, StoreError> {
        self.ensure_dir()?;
        let block_path = self.block_path(block);
        let mut block_file = None;
        if let Some(bytes) = &block.block {
            write_durably(&block_path, bytes)?;
            block_file = block_path.file_name().map(|n| n.to_string_lossy().into());
        }
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&block.header[4..36]);
        let record = BlockRecord {
            height: block.height,
            hash: block.hash.to_string(),
            prev_hash: BlockHash::from_byte_array(prev).to_string(),
            found_at: secs,
            connection: block.connection.to_string(),
            channel_id: block.channel_id,
            worker: block.user_identity.clone(),
            template_id: block.template_id,
            header: block.header.to_lower_hex_string(),
            coinbase_tx: block.coinbase_tx.to_lower_hex_string(),
            block_file: block_file.clone(),
            status: BlockStatus::Pending,
            // Sent with the same handler call, right after this record is on disk.
            attempts: vec![SubmitAttempt {
                attempt: 1,
                time: secs,
                trigger: SubmitTrigger::Found.as_str().to_owned(),
            }],
            outcome: None,
        };
        let record_path = self.record_path(block);
        // Remember it first: a failed write still leaves a record to update later.
        self.remember(block.hash, record.clone());
        write_record(&record_path, &record)?;
        let stem = record.stem();
        self.prune_for(&stem)?;
        Ok(if block_file.is_some() {
            block_path
        } else {
            record_path
        })
    }

    fn completed(&mut self, block: &FoundBlock) -> Result<PathBuf, StoreError> {
        let Some(bytes) = &block.block else {
            return Ok(self.record_path(block));
        };
        self.ensure_dir()?;
        let path = self.block_path(block);
        write_durably(&path, bytes)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.update(block.hash, |r| r.block_file = name.clone())?;
        Ok(path)
    }

    fn remember(&mut self, hash: BlockHash, record: BlockRecord) {
        if self.open.insert(hash, record).is_none() {
            self.open_order.push_back(hash);
        }
        while self.open_order.len() > MAX_OPEN_RECORDS {
            if let Some(old) = self.open_order.pop_front() {
                self.open.remove(&old);
            }
        }
    }

    fn update(
        &mut self,
        hash: BlockHash,
        f: impl FnOnce(&mut BlockRecord),
    ) -> Result<Option<PathBuf>, StoreError> {
        let Some(record) = self.open.get_mut(&hash) else {
            return Ok(None);
        };
        f(record);
        let path = self
            .dir
            .join(format!("{}.{RECORD_EXTENSION}", record.stem()));
        write_record(&path, record)?;
        Ok(Some(path))
    }

    fn finish(
        &mut self,
        hash: BlockHash,
        status: BlockStatus,
        outcome: Option<String>,
    ) -> Result<Option<PathBuf>, StoreError> {
        let r = self.update(hash, |r| {
            r.status = status;
            r.outcome = outcome;
        });
        self.open.remove(&hash);
        self.open_order.retain(|h| *h != hash);
        r
    }

    /// Deletes the oldest blocks beyond the limit, never `newest`.
    fn prune_for(&mut self, newest: &str) -> Result<(), StoreError> {
        let Some(keep) = self.keep else {
            return Ok(());
        };
        if self.index.is_none() {
            let mut listed: Vec<(SystemTime, String)> = Vec::new();
            for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some(RECORD_EXTENSION) {
                    continue;
                }
                let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                if stem == newest {
                    continue;
                }
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH);
                listed.push((mtime, stem.to_owned()));
            }
            listed.sort();
            self.index = Some(listed.into_iter().map(|(_, s)| s).collect());
        }
        // Blocks still pending (being resubmitted) are never pruned.
        let pending: std::collections::HashSet<String> =
            self.open.values().map(BlockRecord::stem).collect();
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        index.retain(|s| s != newest);
        index.push_back(newest.to_owned());
        let mut kept_pending = VecDeque::new();
        while index.len() + kept_pending.len() > keep.max(1) {
            let Some(old) = index.pop_front() else { break };
            if pending.contains(&old) && old != newest {
                kept_pending.push_back(old);
                continue;
            }
            if old == newest {
                index.push_front(old);
                break;
            }
            for ext in [BLOCK_EXTENSION, RECORD_EXTENSION] {
                let p = self.dir.join(format!("{old}.{ext}"));
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::Io { path: p, source: e }),
                }
            }
        }
        // The pending ones stay, oldest first.
        while let Some(p) = kept_pending.pop_back() {
            index.push_front(p);
        }
        Ok(())
    }

    /// Every block kept in `dir`, oldest found first. A record that does not parse is an
    /// error ([`StoreError::Corrupt`]); a missing directory is an empty list.
    pub fn list(dir: &Path) -> Result<Vec<KeptBlock>, StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(RECORD_EXTENSION) {
                continue;
            }
            out.push(Self::read(&path)?);
        }
        out.sort_by(|a, b| {
            (a.record.found_at, a.record.height, &a.record.hash).cmp(&(
                b.record.found_at,
                b.record.height,
                &b.record.hash,
            ))
        });
        Ok(out)
    }

    /// Reads the kept block at `path`: its `.json` record or its `.block` file (the other is
    /// found beside it).
    pub fn read(path: &Path) -> Result<KeptBlock, StoreError> {
        let record_path = path.with_extension(RECORD_EXTENSION);
        let text = fs::read_to_string(&record_path).map_err(io(&record_path))?;
        let record: BlockRecord = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: record_path.clone(),
            detail: e.to_string(),
        })?;
        let block_path = path.with_extension(BLOCK_EXTENSION);
        Ok(KeptBlock {
            block_path: block_path.exists().then_some(block_path),
            record_path,
            record,
        })
    }

    /// Rewrites the record of a kept block (e.g. after a hand submission), durably.
    pub fn write_record(path: &Path, record: &BlockRecord) -> Result<(), StoreError> {
        write_record(&path.with_extension(RECORD_EXTENSION), record)
    }
}

fn write_record(path: &Path, record: &BlockRecord) -> Result<(), StoreError> {
    let mut text = serde_json::to_string_pretty(record).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    text.push('\n');
    write_durably(path, text.as_bytes())
}
