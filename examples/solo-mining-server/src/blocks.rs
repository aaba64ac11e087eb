//! `solo-mining-server blocks list` and `blocks submit`: the kept blocks (see
//! `tower_stratum::mining::BlockStore`) and their hand submission to a Template Provider.

use crate::serve::Failure;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tower_stratum::codec::AuthorityPublicKey;
use tower_stratum::handler::{NullSv2JobDeclarationClientHandler, NullSv2MiningClientHandler};
use tower_stratum::mining::{BlockStatus, BlockStore, SubmitAttempt};
use tower_stratum::stratum_core::bitcoin::consensus::deserialize;
use tower_stratum::stratum_core::bitcoin::hashes::Hash;
use tower_stratum::stratum_core::bitcoin::{Block, BlockHash};
use tower_stratum::stratum_core::parsers_sv2::TemplateDistributionOwned;
use tower_stratum::stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tower_stratum::template::TemplateDistributionClient;
use tower_stratum::{
    ClientConfig, ClientTransport, Endpoint, SiblingIo, SiblingMessage, Subprotocol,
    Sv2ClientService, Sv2Message,
};

/// Prints the kept blocks of `dir`, oldest first: a table, or a JSON array of records (each
/// with `record_path` and `block_path` added) with `json`.
pub(crate) fn list(dir: &Path, json: bool) -> Result<(), Failure> {
    let kept = BlockStore::list(dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    if json {
        let mut out = Vec::with_capacity(kept.len());
        for k in &kept {
            let mut v = serde_json::to_value(&k.record)
                .map_err(|e| Failure::Runtime(format!("json: {e}")))?;
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "record_path".into(),
                    k.record_path.display().to_string().into(),
                );
                o.insert(
                    "block_path".into(),
                    k.block_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .into(),
                );
            }
            out.push(v);
        }
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Failure::Runtime(format!("json: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if kept.is_empty() {
        println!("no blocks kept in {}", dir.display());
        return Ok(());
    }
    println!(
        "{:>8}  {:<64}  {:<9}  {:>8}  {:<16}  file",
        "height", "hash", "status", "attempts", "worker"
    );
    for k in &kept {
        let r = &k.record;
        println!(
            "{:>8}  {:<64}  {:<9}  {:>8}  {:<16}  {}",
            r.height
                .map(|h| h.to_string())
                .unwrap_or_else(|| "?".into()),
            r.hash,
            r.status.to_string(),
            r.attempts.len(),
            r.worker.escape_debug().to_string(),
            k.block_path.as_ref().unwrap_or(&k.record_path).display()
        );
    }
    Ok(())
}

/// Sends the kept block at `file` (its `.block` or `.json`) to the Template Provider at
/// `address` as `SubmitSolution` (spec 7.7), then waits up to `wait` for a `SetNewPrevHash`
/// whose `prev_hash` is the block (the provider's tip became it). Prints the outcome and
/// records the attempt in the block's `.json`.
///
/// Errors (exit code 1): unreadable or inconsistent files, the provider unreachable within
/// `wait`, or no confirmation within `wait` (e.g. a provider that no longer knows the
/// template id: a Template Provider keeps templates only while they are current; Bitcoin
/// Core also takes the `.block` file's hex through `bitcoin-cli submitblock`).
pub(crate) async fn submit(
    file: &Path,
    address: &str,
    authority: Option<AuthorityPublicKey>,
    wait: Duration,
) -> Result<(), Failure> {
    let kept = BlockStore::read(file).map_err(|e| Failure::Runtime(e.to_string()))?;
    let record = &kept.record;
    let (version, header_timestamp, header_nonce, coinbase) = record
        .solution_parts()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let hash: BlockHash = record
        .hash
        .parse()
        .map_err(|e| Failure::Runtime(format!("{}: hash: {e}", kept.record_path.display())))?;
    if let Some(p) = &kept.block_path {
        let bytes =
            std::fs::read(p).map_err(|e| Failure::Runtime(format!("{}: {e}", p.display())))?;
        let block: Block = deserialize(&bytes)
            .map_err(|e| Failure::Runtime(format!("{}: not a block: {e}", p.display())))?;
        if block.block_hash() != hash {
            return Err(Failure::Runtime(format!(
                "{}: the block's hash {} is not the record's {hash}",
                p.display(),
                block.block_hash()
            )));
        }
    }
    let solution = SubmitSolutionOwned {
        template_id: record.template_id,
        version,
        header_timestamp,
        header_nonce,
        coinbase_tx: coinbase
            .try_into()
            .map_err(|_| Failure::Runtime("coinbase too large for SubmitSolution".into()))?,
    };

    let (ours, theirs) = SiblingIo::pair(16);
    let (tx, mut rx) = ours.into_channels();
    let mut cfg = ClientConfig::default().endpoint(
        Subprotocol::TemplateDistribution,
        Endpoint {
            address: address.to_owned(),
            transport: ClientTransport::Noise { authority },
        },
    );
    cfg.connect_timeout = wait;
    let (_svc, handle) = Sv2ClientService::new_from_sibling_io(
        cfg,
        NullSv2MiningClientHandler,
        NullSv2JobDeclarationClientHandler,
        TemplateDistributionClient::default(),
        theirs,
    );
    let deadline = Instant::now() + wait;
    let tip = |m: &SiblingMessage| match m {
        SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::SetNewPrevHash(p),
        )) => Some(BlockHash::from_byte_array(p.prev_hash.to_array())),
        _ => None,
    };
    // Connected once the provider announces its tip.
    let first = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => {
                if let Some(t) = tip(&m) {
                    break Some(t);
                }
            }
            Ok(None) | Err(_) => break None,
        }
    };
    let Some(first) = first else {
        handle.shutdown().await;
        return Err(Failure::Runtime(format!(
            "no template from the Template Provider at {address} within {} s (unreachable, \
             wrong authority key, or not serving templates); nothing sent",
            wait.as_secs()
        )));
    };
    let mut confirmed = first == hash;
    let mut sent = false;
    if !confirmed {
        let msg = SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::SubmitSolution(solution),
        ));
        if tx.send(msg).await.is_err() {
            handle.shutdown().await;
            return Err(Failure::Runtime(
                "the Template Distribution client stopped".into(),
            ));
        }
        sent = true;
        println!(
            "SubmitSolution sent to {address} (template {}, block {hash})",
            record.template_id
        );
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if tip(&m) == Some(hash) {
                confirmed = true;
                break;
            }
        }
    }
    handle.shutdown().await;

    let mut updated = record.clone();
    if sent {
        updated.attempts.push(SubmitAttempt {
            attempt: u32::try_from(updated.attempts.len() + 1).unwrap_or(u32::MAX),
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            trigger: "hand".into(),
        });
    }
    if confirmed {
        updated.status = BlockStatus::Confirmed;
        updated.outcome = Some(format!("confirmed by the Template Provider at {address}"));
    }
    if let Err(e) = BlockStore::write_record(&kept.record_path, &updated) {
        eprintln!("warning: cannot update {}: {e}", kept.record_path.display());
    }
    if confirmed {
        println!("CONFIRMED: the Template Provider's tip is now {hash}");
        Ok(())
    } else {
        Err(Failure::Runtime(format!(
            "NOT CONFIRMED: the Template Provider's tip did not become {hash} within {} s. It \
             may not know template {} any more (templates are kept only while current); for \
             Bitcoin Core use `bitcoin-cli submitblock $(xxd -p -c0 {})`",
            wait.as_secs(),
            record.template_id,
            kept.block_path
                .as_ref()
                .unwrap_or(&kept.record_path)
                .display()
        )))
    }
}
