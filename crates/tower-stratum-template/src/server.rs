//! [`TemplateDistributionServer`]: the embedded regtest source served over the wire as a
//! Template Provider (spec 7, server side).

use crate::driver::{emit, shell_now, SourceEvent};
use crate::regtest::check_constraints;
use crate::source::{
    unix_time_now, ConnectedBlock, EmbeddedRegtestSource, EncodeError, Now, SourceConfig,
};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::mpsc;
use tower_stratum_core::handler::{
    NullSv2JobDeclarationServerHandler, NullSv2MiningServerHandler,
    Sv2TemplateDistributionServerHandler,
};
use tower_stratum_core::stratum_core::parsers_sv2::TemplateDistributionOwned;
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, RequestTransactionDataOwned, SubmitSolutionOwned,
};
use tower_stratum_core::{
    Action, Actions, CloseReason, ConnectionContext, ConnectionId, Sv2Message,
};
use tower_stratum_service::{Listener, ServerConfig, ServerHandle, Sv2ServerService};
use tracing::{debug, info, warn};

/// Configuration of a [`TemplateDistributionServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateServerConfig {
    /// The embedded source's configuration (simulated-block interval, template fields).
    pub source: SourceConfig,
    /// Send the current `NewTemplate` + `SetNewPrevHash` as soon as a connection finishes
    /// SetupConnection, without waiting for its `CoinbaseOutputConstraints`. A connection that
    /// already has the current template is not sent it again when its constraints arrive.
    /// `false` follows spec 7 to the letter (templates only after the constraints). Default
    /// `true`.
    pub send_on_connect: bool,
}

impl Default for TemplateServerConfig {
    fn default() -> Self {
        Self {
            source: SourceConfig::default(),
            send_on_connect: true,
        }
    }
}

#[derive(Debug, Default)]
struct ConnState {
    /// The last template id sent on this connection.
    sent_template: Option<u64>,
}

/// Template Distribution server handler around an [`EmbeddedRegtestSource`]: a regtest
/// Template Provider (spec 7).
///
/// - On a new connection (with [`TemplateServerConfig::send_on_connect`]) and on
///   `CoinbaseOutputConstraints` (if that connection does not have it yet): the current
///   `NewTemplate` (future) and `SetNewPrevHash`. Constraints an empty block cannot honour
///   close the connection (spec 7 defines no error message for them).
/// - `SubmitSolution`: the block is rebuilt and validated; if valid it becomes the tip and every
///   connection that received templates gets the next `NewTemplate` + `SetNewPrevHash`.
///   Invalid solutions are logged (and reported as [`SourceEvent::SolutionRejected`]).
/// - `RequestTransactionData` (spec 7.4-7.6): `.Success` for a template of the current tip,
///   listing its transactions after the coinbase in block order, serialized with their
///   witnesses, and the 32-byte witness reserved value as `excess_data`; `.Error`
///   `stale-template-id` or `template-id-not-found` otherwise (see
///   [`EmbeddedRegtestSource::request_transaction_data`]).
/// - Its handler timer: mempool transactions (the source's
///   [`mempool`](SourceConfig::mempool) interval) and simulated blocks (its
///   [`tip_interval`](SourceConfig::tip_interval)). `poll_timeout` is the source's
///   [`poll_timeout`](EmbeddedRegtestSource::poll_timeout) and `on_timer(now)` runs the
///   source's timers at `now` (monotonic, the service's clock; Unix time from the wall
///   clock), sending the templates of a simulated block like those after a solution. The
///   service drives it: no ticker task, no sibling link needed.
///
/// The handler owns the source; the service calls it one message at a time, so there is no
/// lock. [`TemplateDistributionServer::serve`] starts a server with it.
#[derive(Debug)]
pub struct TemplateDistributionServer {
    source: EmbeddedRegtestSource,
    send_on_connect: bool,
    conns: HashMap<ConnectionId, ConnState>,
    events: Option<mpsc::Sender<SourceEvent>>,
}

/// The service type [`TemplateDistributionServer::serve`] returns.
pub type TemplateProviderService = Sv2ServerService<
    NullSv2MiningServerHandler,
    NullSv2JobDeclarationServerHandler,
    TemplateDistributionServer,
>;

impl TemplateDistributionServer {
    /// A server whose source starts now at the regtest genesis block. Errors only if a
    /// template field cannot be encoded (not expected).
    pub fn new(config: TemplateServerConfig) -> Result<Self, EncodeError> {
        Ok(Self {
            source: EmbeddedRegtestSource::new(config.source, shell_now())?,
            send_on_connect: config.send_on_connect,
            conns: HashMap::new(),
            events: None,
        })
    }

    /// Also report [`SourceEvent`]s (new templates, blocks, rejected solutions) to `events`,
    /// with `try_send` (a slow observer loses events; the server never waits).
    pub fn with_events(mut self, events: mpsc::Sender<SourceEvent>) -> Self {
        emit(
            &Some(events.clone()),
            SourceEvent::Templates(self.source.current().clone()),
        );
        self.events = Some(events);
        self
    }

    /// The source (tip, current template).
    pub fn source(&self) -> &EmbeddedRegtestSource {
        &self.source
    }

    /// Serves this handler on `listener` with `config` (simulated blocks come from its
    /// handler timer). Returns the service and its handle: shut the handle down to stop.
    pub fn serve<L: Listener>(
        self,
        config: ServerConfig,
        listener: L,
    ) -> (TemplateProviderService, ServerHandle) {
        Sv2ServerService::builder()
            .config(config)
            .template_distribution(self)
            .serve(listener)
    }

    fn pair_for(&mut self, id: ConnectionId) -> Actions {
        let current = self.source.current();
        let template_id = current.template_id();
        let mut actions = Actions::none();
        for m in current.messages() {
            actions.push(Action::SendTo(id, m));
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.sent_template = Some(template_id);
        }
        actions
    }

    /// Templates after a new tip, to every connection that has received templates.
    fn on_new_tip(&mut self, found: ConnectedBlock) -> Actions {
        let targets: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.sent_template.is_some())
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Actions::none();
        for id in targets {
            actions.extend(self.pair_for(id));
        }
        info!(
            height = found.height,
            hash = %found.hash,
            origin = ?found.origin,
            next_template = found.next.template_id(),
            "new tip: templates sent"
        );
        let next = found.next.clone();
        emit(&self.events, SourceEvent::Block(Box::new(found)));
        emit(&self.events, SourceEvent::Templates(next));
        actions
    }
}

fn td(m: TemplateDistributionOwned) -> Sv2Message {
    Sv2Message::TemplateDistribution(m)
}

impl Sv2TemplateDistributionServerHandler for TemplateDistributionServer {
    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        self.conns.insert(ctx.id, ConnState::default());
        if self.send_on_connect {
            self.pair_for(ctx.id)
        } else {
            Actions::none()
        }
    }

    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        debug!(connection = %ctx.id, %reason, "template client gone");
        self.conns.remove(&ctx.id);
        Actions::none()
    }

    async fn handle_coinbase_output_constraints(
        &mut self,
        ctx: ConnectionContext,
        msg: CoinbaseOutputConstraintsOwned,
    ) -> Actions {
        if let Err(e) = check_constraints(&msg) {
            warn!(connection = %ctx.id, error = %e, "refusing coinbase output constraints");
            return Actions::close(format!("coinbase output constraints: {e}"));
        }
        debug!(
            connection = %ctx.id,
            size = msg.coinbase_output_max_additional_size,
            sigops = msg.coinbase_output_max_additional_sigops,
            "coinbase output constraints"
        );
        let current = self.source.current().template_id();
        let state = self.conns.entry(ctx.id).or_default();
        if state.sent_template == Some(current) {
            Actions::none()
        } else {
            self.pair_for(ctx.id)
        }
    }

    async fn handle_request_transaction_data(
        &mut self,
        ctx: ConnectionContext,
        msg: RequestTransactionDataOwned,
    ) -> Actions {
        match self.source.request_transaction_data(&msg) {
            Ok(reply) => {
                debug!(connection = %ctx.id, template_id = msg.template_id, "RequestTransactionData");
                Actions::reply(td(reply))
            }
            Err(e) => {
                warn!(connection = %ctx.id, error = %e, "cannot answer RequestTransactionData");
                Actions::none()
            }
        }
    }

    async fn handle_submit_solution(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSolutionOwned,
    ) -> Actions {
        let template_id = msg.template_id;
        match self.source.on_submit_solution(msg, shell_now()) {
            Ok(found) => {
                info!(connection = %ctx.id, template_id, hash = %found.hash, "block found");
                self.on_new_tip(found)
            }
            Err(error) => {
                warn!(connection = %ctx.id, template_id, %error, "solution rejected");
                emit(
                    &self.events,
                    SourceEvent::SolutionRejected { template_id, error },
                );
                Actions::none()
            }
        }
    }

    /// The source's simulated-block deadline (`None` with simulated blocks off).
    fn poll_timeout(&self) -> Option<Instant> {
        self.source.poll_timeout()
    }

    /// Runs the source's timers at `now` (monotonic; Unix time from the wall clock): a due
    /// simulated block becomes the tip and every connection that received templates gets the
    /// next `NewTemplate` + `SetNewPrevHash`. Nothing when nothing is due.
    async fn on_timer(&mut self, now: Instant) -> Actions {
        match self.source.on_tick(Now::new(now, unix_time_now())) {
            Some(found) => self.on_new_tip(found),
            None => Actions::none(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::regtest::op_true_script;
    use crate::solver::{payout_all, solve};
    use crate::source::ERROR_STALE_TEMPLATE_ID;
    use std::time::Duration;
    use tower_stratum_core::session::ConnectionInfo;
    use tower_stratum_core::{Role, SiblingMessage, Subprotocol};

    fn ctx(id: u64) -> ConnectionContext {
        ConnectionContext {
            id: ConnectionId(id),
            peer: None,
            role: Role::Server,
            info: ConnectionInfo {
                protocol: Subprotocol::TemplateDistribution,
                version: 2,
                flags: 0,
                success_flags: 0,
                extensions: Default::default(),
            },
        }
    }

    fn names(a: &Actions) -> Vec<String> {
        a.iter()
            .map(|a| match a {
                Action::SendTo(id, m) => format!("{id} {}", m.name()),
                Action::Reply(m) => format!("reply {}", m.name()),
                Action::Close(_) => "close".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn constraints(size: u32) -> CoinbaseOutputConstraintsOwned {
        CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: size,
            coinbase_output_max_additional_sigops: 4,
        }
    }

    #[tokio::test]
    async fn serves_templates_and_moves_the_tip_on_a_solution() {
        let mut tp = TemplateDistributionServer::new(TemplateServerConfig::default()).unwrap();
        let a = tp.on_connection_added(ctx(1)).await;
        assert_eq!(
            names(&a),
            [
                "#1 NewTemplate",
                "#1 SetNewPrevHashTemplateDistributionProtocol"
            ]
        );
        // Already has the current template: the constraints get no duplicate.
        let a = tp
            .handle_coinbase_output_constraints(ctx(1), constraints(43))
            .await;
        assert!(a.is_empty());
        // Infeasible constraints close the connection.
        let a = tp
            .handle_coinbase_output_constraints(ctx(1), constraints(1_000_000))
            .await;
        assert_eq!(names(&a), ["close"]);
        tp.on_connection_added(ctx(2)).await;

        let cur = tp.source().current().clone();
        let payout = payout_all(&cur.new_template, op_true_script());
        let solved = solve(&cur.new_template, &cur.set_new_prev_hash, &[payout], b"u").unwrap();
        let mut bad = solved.submit.clone();
        bad.coinbase_tx = vec![0u8; 4].try_into().unwrap();
        assert!(tp.handle_submit_solution(ctx(2), bad).await.is_empty());
        assert_eq!(tp.source().tip().height, 0);

        let mut a = names(&tp.handle_submit_solution(ctx(2), solved.submit).await);
        a.sort();
        assert_eq!(
            a,
            [
                "#1 NewTemplate",
                "#1 SetNewPrevHashTemplateDistributionProtocol",
                "#2 NewTemplate",
                "#2 SetNewPrevHashTemplateDistributionProtocol"
            ]
        );
        assert_eq!(tp.source().tip().height, 1);

        // The old template is now stale for RequestTransactionData.
        let a = tp
            .handle_request_transaction_data(
                ctx(1),
                RequestTransactionDataOwned {
                    template_id: cur.template_id(),
                },
            )
            .await;
        match a.as_slice() {
            [Action::Reply(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataError(e),
            ))] => assert_eq!(e.error_code.as_bytes(), ERROR_STALE_TEMPLATE_ID.as_bytes()),
            other => panic!("expected RequestTransactionData.Error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn request_transaction_data_lists_the_templates_transactions() {
        use crate::mempool::MempoolConfig;
        use tower_stratum_core::stratum_core::bitcoin::{consensus::deserialize, Transaction};
        let config = TemplateServerConfig {
            source: SourceConfig {
                tip_interval: Duration::from_secs(60),
                history_blocks: 2,
                mempool: MempoolConfig {
                    tx_interval: Duration::from_secs(1),
                    txs_per_interval: 4,
                    ..MempoolConfig::default()
                },
                ..SourceConfig::default()
            },
            send_on_connect: true,
        };
        let mut tp = TemplateDistributionServer::new(config).unwrap();
        tp.on_connection_added(ctx(1)).await;
        // The handler timer first generates transactions, then (at 60 s) a block; the
        // templates on top of it carry what is left of the mempool.
        let mut found_with_transactions = None;
        for _ in 0..200 {
            let due = tp.poll_timeout().unwrap();
            let a = tp.on_timer(due).await;
            if !a.is_empty() {
                let id = tp.source().current().template_id();
                if !tp.source().template_transactions(id).unwrap().is_empty() {
                    found_with_transactions = Some(id);
                    break;
                }
            }
        }
        let id = found_with_transactions.expect("a template with transactions");
        let a = tp
            .handle_request_transaction_data(
                ctx(1),
                RequestTransactionDataOwned { template_id: id },
            )
            .await;
        match a.as_slice() {
            [Action::Reply(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataSuccess(s),
            ))] => {
                assert_eq!(s.template_id, id);
                assert_eq!(s.excess_data.as_bytes(), &[0u8; 32]);
                let txs: Vec<Transaction> = s
                    .transaction_list
                    .clone()
                    .into_inner()
                    .iter()
                    .map(|t| deserialize(t.as_bytes()).unwrap())
                    .collect();
                assert_eq!(txs, tp.source().template_transactions(id).unwrap());
            }
            other => panic!("expected RequestTransactionData.Success, got {other:?}"),
        }
        let a = tp
            .handle_request_transaction_data(
                ctx(1),
                RequestTransactionDataOwned { template_id: 9_999 },
            )
            .await;
        match a.as_slice() {
            [Action::Reply(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataError(e),
            ))] => assert_eq!(e.error_code.as_bytes(), b"template-id-not-found"),
            other => panic!("expected RequestTransactionData.Error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_handler_timer_is_the_sources_simulated_block() {
        let config = TemplateServerConfig {
            source: SourceConfig::with_tip_interval(Duration::from_secs(600)),
            send_on_connect: false,
        };
        let mut tp = TemplateDistributionServer::new(config).unwrap();
        assert!(tp.on_connection_added(ctx(1)).await.is_empty());
        tp.on_connection_added(ctx(2)).await;
        // #2 has templates, #1 (waiting for its constraints) has none.
        tp.handle_coinbase_output_constraints(ctx(2), constraints(43))
            .await;
        let due = tp.poll_timeout().unwrap();
        assert_eq!(Some(due), tp.source().poll_timeout());
        // Early: nothing, and the deadline stays.
        assert!(tp.on_timer(due - Duration::from_secs(1)).await.is_empty());
        assert_eq!(tp.poll_timeout(), Some(due));
        assert_eq!(tp.source().tip().height, 0);
        // Due: a simulated block, templates to the connection that has templates, the next
        // deadline one tip_interval on.
        let a = tp.on_timer(due).await;
        assert_eq!(
            names(&a),
            [
                "#2 NewTemplate",
                "#2 SetNewPrevHashTemplateDistributionProtocol"
            ]
        );
        assert_eq!(tp.source().tip().height, 1);
        assert_eq!(tp.poll_timeout(), Some(due + Duration::from_secs(600)));
        // Sibling messages are no timer (there is no tick message): ignored.
        assert!(tp
            .handle_sibling_message(SiblingMessage::custom(due + Duration::from_secs(600)))
            .await
            .is_empty());
        assert_eq!(tp.source().tip().height, 1);
    }
}
