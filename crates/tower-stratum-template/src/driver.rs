//! The tokio shell that runs an [`EmbeddedRegtestSource`] as the sibling of a mining server.

use crate::regtest::check_constraints;
use crate::source::{unix_time_now, ConnectedBlock, EmbeddedRegtestSource, Now, SourceConfig};
use crate::{SolutionError, TemplateUpdate};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower_stratum_core::stratum_core::parsers_sv2::TemplateDistributionOwned;
use tower_stratum_core::{SiblingMessage, Sv2Message};
use tower_stratum_service::SiblingIo;
use tracing::{debug, info, warn, Instrument};

/// What a template source did, for observers (status lines, tests). Sent with `try_send`: an
/// observer that does not keep up loses events, the source never waits for it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceEvent {
    /// Templates for a new tip were sent (the first ones, or after a new block).
    Templates(TemplateUpdate),
    /// A block became the tip (`next` in it are the templates sent after it).
    Block(Box<ConnectedBlock>),
    /// A `SubmitSolution` was refused; the tip did not move.
    SolutionRejected {
        /// The solution's `template_id`.
        template_id: u64,
        /// Why.
        error: SolutionError,
    },
}

/// The shells' clock: tokio's (so paused-time tests drive timers) and the wall clock.
pub(crate) fn shell_now() -> Now {
    Now::new(tokio::time::Instant::now().into_std(), unix_time_now())
}

pub(crate) fn emit(events: &Option<mpsc::Sender<SourceEvent>>, e: SourceEvent) {
    if let Some(tx) = events {
        let _ = tx.try_send(e);
    }
}

/// Runs an [`EmbeddedRegtestSource`] as the sibling of a mining server: `sibling` is the
/// [`SiblingIo`] from `Sv2ServerService::new_with_sibling_io` (or `ServerBuilder::with_sibling_io`).
///
/// The task
/// - sends the first template at once: `NewTemplate` (future) then `SetNewPrevHash`, each as
///   `SiblingMessage::Sv2(Sv2Message::TemplateDistribution(..))`;
/// - on `SubmitSolution` from the server, validates the block and, if valid, moves the tip and
///   sends the next `NewTemplate` + `SetNewPrevHash` (invalid solutions are logged and
///   dropped: the Template Distribution Protocol has no reply to `SubmitSolution`);
/// - on `CoinbaseOutputConstraints`, checks that an empty block can honour them (logs a
///   warning if not); the templates do not change (the weight they leave for the coinbase is
///   [`MempoolConfig::coinbase_reserved_weight`](crate::mempool::MempoolConfig));
/// - answers `RequestTransactionData` with the template's transactions (see
///   [`EmbeddedRegtestSource::request_transaction_data`]);
/// - generates mempool transactions on `config.mempool`'s interval (when enabled);
/// - when `config.tip_interval` elapses without a new tip, simulates another miner's block and
///   sends the templates on top of it;
/// - ends when the server side of the link closes (it stops polling then: no spin), or when
///   the server's queue is gone on send.
///
/// Returns the task's handle; abort it to stop the source early.
pub fn spawn_embedded_source(config: SourceConfig, sibling: SiblingIo) -> JoinHandle<()> {
    spawn_embedded_source_with_events(config, sibling, None)
}

/// [`spawn_embedded_source`], also reporting [`SourceEvent`]s to `events`.
pub fn spawn_embedded_source_with_events(
    config: SourceConfig,
    sibling: SiblingIo,
    events: Option<mpsc::Sender<SourceEvent>>,
) -> JoinHandle<()> {
    let (tx, rx) = sibling.into_channels();
    tokio::spawn(run(config, tx, rx, events).instrument(tracing::info_span!("template_source")))
}

async fn send_update(tx: &mpsc::Sender<SiblingMessage>, update: &TemplateUpdate) -> bool {
    for m in update.messages() {
        if tx.send(SiblingMessage::Sv2(m)).await.is_err() {
            return false;
        }
    }
    true
}

async fn run(
    config: SourceConfig,
    tx: mpsc::Sender<SiblingMessage>,
    mut rx: mpsc::Receiver<SiblingMessage>,
    events: Option<mpsc::Sender<SourceEvent>>,
) {
    let mut source = match EmbeddedRegtestSource::new(config, shell_now()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot start the template source");
            return;
        }
    };
    let first = source.current().clone();
    info!(
        template_id = first.template_id(),
        height = first.height,
        "sending first template"
    );
    if !send_update(&tx, &first).await {
        debug!("mining server gone before the first template");
        return;
    }
    emit(&events, SourceEvent::Templates(first));
    loop {
        let deadline = source.poll_timeout();
        let found = tokio::select! {
            msg = rx.recv() => match msg {
                None => {
                    debug!("mining server closed the sibling link");
                    return;
                }
                Some(msg) => {
                    let (found, reply) = on_message(&mut source, msg, &events);
                    if let Some(reply) = reply {
                        if tx.send(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(reply))).await.is_err() {
                            debug!("mining server gone");
                            return;
                        }
                    }
                    found
                }
            },
            _ = sleep_until(deadline) => source.on_tick(shell_now()),
        };
        if let Some(found) = found {
            info!(
                height = found.height,
                hash = %found.hash,
                origin = ?found.origin,
                next_template = found.next.template_id(),
                "new tip"
            );
            if !send_update(&tx, &found.next).await {
                debug!("mining server gone");
                return;
            }
            let next = found.next.clone();
            emit(&events, SourceEvent::Block(Box::new(found)));
            emit(&events, SourceEvent::Templates(next));
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
pub(crate) async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Handles one message from the mining server: a new tip, and/or a reply to send back.
fn on_message(
    source: &mut EmbeddedRegtestSource,
    msg: SiblingMessage,
    events: &Option<mpsc::Sender<SourceEvent>>,
) -> (Option<ConnectedBlock>, Option<TemplateDistributionOwned>) {
    let td = match msg {
        SiblingMessage::Sv2(Sv2Message::TemplateDistribution(td)) => td,
        SiblingMessage::Sv2(other) => {
            debug!(message = other.name(), "ignoring sibling message");
            return (None, None);
        }
        _ => {
            debug!("ignoring non-Sv2 sibling message");
            return (None, None);
        }
    };
    match td {
        TemplateDistributionOwned::SubmitSolution(s) => {
            let template_id = s.template_id;
            match source.on_submit_solution(s, shell_now()) {
                Ok(found) => (Some(found), None),
                Err(error) => {
                    warn!(template_id, %error, "solution rejected");
                    emit(events, SourceEvent::SolutionRejected { template_id, error });
                    (None, None)
                }
            }
        }
        TemplateDistributionOwned::CoinbaseOutputConstraints(c) => {
            match check_constraints(&c) {
                Ok(()) => debug!(
                    size = c.coinbase_output_max_additional_size,
                    sigops = c.coinbase_output_max_additional_sigops,
                    "coinbase output constraints accepted"
                ),
                Err(e) => warn!(error = %e, "coinbase output constraints cannot be honoured"),
            }
            (None, None)
        }
        TemplateDistributionOwned::RequestTransactionData(r) => {
            match source.request_transaction_data(&r) {
                Ok(reply) => (None, Some(reply)),
                Err(e) => {
                    warn!(error = %e, "cannot answer RequestTransactionData");
                    (None, None)
                }
            }
        }
        other => {
            let name = Sv2Message::TemplateDistribution(other).name();
            debug!(
                message = name,
                "ignoring Template Distribution message from the mining server"
            );
            (None, None)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::mempool::MempoolConfig;
    use crate::regtest::coinbase_merkle_path;
    use std::time::Duration;
    use tower_stratum_core::stratum_core::bitcoin::{consensus::deserialize, Transaction};
    use tower_stratum_core::stratum_core::template_distribution_sv2::RequestTransactionDataOwned;

    async fn next_td(rx: &mut mpsc::Receiver<SiblingMessage>) -> TemplateDistributionOwned {
        // Paused time: the clock jumps to the source's timers first (they are earlier).
        match tokio::time::timeout(Duration::from_secs(3_600), rx.recv()).await {
            Ok(Some(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m)))) => m,
            other => panic!("expected a Template Distribution message, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn mempool_transactions_arrive_on_the_interval_and_are_listed_on_request() {
        let (server_end, source_end) = SiblingIo::pair(16);
        let config = SourceConfig {
            tip_interval: Duration::from_secs(30),
            history_blocks: 2,
            mempool: MempoolConfig {
                tx_interval: Duration::from_secs(1),
                txs_per_interval: 3,
                ..MempoolConfig::default()
            },
            ..SourceConfig::default()
        };
        let (events_tx, mut events) = mpsc::channel(16);
        let task = spawn_embedded_source_with_events(config, source_end, Some(events_tx));
        let (tx, mut rx) = server_end.into_channels();
        let start = tokio::time::Instant::now();
        // The first template: coinbase-only (the mempool was empty).
        let TemplateDistributionOwned::NewTemplate(first) = next_td(&mut rx).await else {
            panic!("NewTemplate first");
        };
        assert!(first.merkle_path.is_empty());
        next_td(&mut rx).await;
        // 30 s later a simulated block; the templates on it carry what arrived meanwhile.
        let TemplateDistributionOwned::NewTemplate(next) = next_td(&mut rx).await else {
            panic!("NewTemplate after the block");
        };
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(!next.merkle_path.is_empty());
        assert!(matches!(
            next_td(&mut rx).await,
            TemplateDistributionOwned::SetNewPrevHash(_)
        ));
        tx.send(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::RequestTransactionData(RequestTransactionDataOwned {
                template_id: next.template_id,
            }),
        )))
        .await
        .unwrap();
        let TemplateDistributionOwned::RequestTransactionDataSuccess(s) = next_td(&mut rx).await
        else {
            panic!("RequestTransactionData.Success");
        };
        let txs: Vec<Transaction> = s
            .transaction_list
            .into_inner()
            .iter()
            .map(|t| deserialize(t.as_bytes()).unwrap())
            .collect();
        // Up to 30 rounds of 3 (1 s to 30 s; the one at 30 s runs before the block).
        assert!(txs.len() >= 3 * 29, "{} transactions", txs.len());
        let path: Vec<[u8; 32]> = next
            .merkle_path
            .iter()
            .map(|h| h.as_bytes().try_into().unwrap())
            .collect();
        assert_eq!(path, coinbase_merkle_path(&txs));
        let mut saw_block = false;
        while let Ok(e) = events.try_recv() {
            saw_block |= matches!(e, SourceEvent::Block(_));
        }
        assert!(saw_block);
        drop(tx);
        drop(rx);
        task.await.unwrap();
    }
}
