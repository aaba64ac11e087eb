//! [`TemplateDistributionClient`]: a Template Distribution client handler (spec 7, client
//! side) that bridges a Template Provider to a sibling mining server.

use crate::regtest::one_output_constraints;
use std::collections::{BTreeMap, BTreeSet};
use tower_stratum_core::handler::Sv2TemplateDistributionClientHandler;
use tower_stratum_core::stratum_core::parsers_sv2::TemplateDistributionOwned;
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, RequestTransactionDataErrorOwned,
    RequestTransactionDataOwned, RequestTransactionDataSuccessOwned, SetNewPrevHashOwned,
};
use tower_stratum_core::{
    Action, Actions, CloseReason, ConnectionContext, SiblingMessage, Subprotocol, Sv2Message,
};
use tracing::{debug, info, warn};

/// Template Distribution client for Bitcoin Core's Sv2 Template Provider or any TD server,
/// meant to be the sibling of a mining server (`Sv2ClientService::new_from_sibling_io`).
///
/// - On connection added (also after every reconnect): sends `CoinbaseOutputConstraints`
///   (spec 7.1) with the configured values.
/// - Forwards `NewTemplate`, `SetNewPrevHash` and `RequestTransactionData.Success`/`.Error` to
///   the sibling unchanged, as `SiblingMessage::Sv2(Sv2Message::TemplateDistribution(..))`.
/// - Sends `SubmitSolution`, `RequestTransactionData` and `CoinbaseOutputConstraints` it
///   receives from the sibling (same wrapping) to the Template Provider; constraints from the
///   sibling also replace the configured ones for later reconnects. A `SubmitSolution` while
///   disconnected cannot be delivered and is logged as an error; a `MiningServer` sibling
///   resubmits unconfirmed blocks when the provider's tip arrives again after the reconnect
///   (its `keeper` module).
/// - With [`with_transaction_prefetch`](Self::with_transaction_prefetch)`(n)`: asks the
///   provider for the transactions of every template that has some (`RequestTransactionData`
///   right after its `NewTemplate`, spec 7.4), keeps the answers of the `n` newest such
///   templates, and answers the sibling's `RequestTransactionData` for them from that store.
///   A mining server asks for a template's transactions after it found a block on it, which
///   is after its `SubmitSolution` moved the provider's tip: by then the provider answers
///   `stale-template-id`, the store still has them. Without prefetch (the default) requests
///   and answers pass through unchanged.
///
/// Authenticating the Template Provider: configure the endpoint with the TP's authority public
/// key (`Endpoint::noise(addr, key)`) when you know it. SRI's scripted TP (`sri-harness tp`)
/// and this crate's `template-provider` example sign with SRI's public test authority key
/// (`SRI_TEST_AUTHORITY_PUBLIC_KEY`), which the interop tests verify. When the key is not
/// known, `ClientTransport::Noise { authority: None }` still encrypts but accepts any server,
/// which is what SRI's pool does when its config has no TP `public_key`: use it only where the
/// path to the TP is trusted (usually localhost).
///
/// ```no_run
/// use tower_stratum_core::handler::{NullSv2JobDeclarationClientHandler, NullSv2MiningClientHandler};
/// use tower_stratum_core::Subprotocol;
/// use tower_stratum_service::{ClientConfig, ClientTransport, Endpoint, SiblingIo, Sv2ClientService};
/// use tower_stratum_template::TemplateDistributionClient;
///
/// # fn link(sibling: SiblingIo) {
/// // `sibling` comes from the mining server's `Sv2ServerService::new_with_sibling_io`.
/// let tp = Endpoint {
///     address: "127.0.0.1:8442".into(),
///     transport: ClientTransport::Noise { authority: None }, // encrypted, NOT authenticated
/// };
/// let (_client, _handle) = Sv2ClientService::new_from_sibling_io(
///     ClientConfig::default().endpoint(Subprotocol::TemplateDistribution, tp),
///     NullSv2MiningClientHandler,
///     NullSv2JobDeclarationClientHandler,
///     TemplateDistributionClient::default(),
///     sibling,
/// );
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TemplateDistributionClient {
    constraints: CoinbaseOutputConstraintsOwned,
    connected: bool,
    transactions: TransactionStore,
}

/// The prefetched `RequestTransactionData.Success` answers, bounded.
#[derive(Debug, Clone, Default)]
struct TransactionStore {
    /// Most templates kept; 0 disables prefetch.
    capacity: usize,
    /// Answers by template id (the lowest id is evicted first).
    answers: BTreeMap<u64, RequestTransactionDataSuccessOwned>,
    /// Requests this client sent and not yet answered (at most `capacity`).
    pending: BTreeSet<u64>,
    /// Templates the sibling asked for while this client's own request was pending.
    sibling_waiting: BTreeSet<u64>,
}

impl Default for TemplateDistributionClient {
    /// Constraints for one payout output of any standard type
    /// ([`one_output_constraints`]: 43 bytes, 4 sigops).
    fn default() -> Self {
        Self::new(one_output_constraints())
    }
}

impl TemplateDistributionClient {
    /// A client that announces `constraints` (spec 7.1: the bytes and sigops the mining server
    /// adds to the coinbase; see [`crate::regtest::constraints_for_outputs`]).
    pub fn new(constraints: CoinbaseOutputConstraintsOwned) -> Self {
        Self {
            constraints,
            connected: false,
            transactions: TransactionStore::default(),
        }
    }

    /// Prefetches the transactions of every template with transactions and keeps those of the
    /// `templates` newest (see the type docs); 0 turns prefetch off. Each kept answer holds
    /// up to a block's transactions (under 4 MB serialized), so the store stays under about
    /// `templates` × 4 MB.
    pub fn with_transaction_prefetch(mut self, templates: usize) -> Self {
        self.transactions.capacity = templates;
        self
    }

    /// A prefetched `RequestTransactionData.Success` for `template_id`, if kept: its
    /// `transaction_list` (consensus-serialized transactions with witnesses, block order after
    /// the coinbase) and `excess_data` as the provider sent them.
    pub fn transaction_data(
        &self,
        template_id: u64,
    ) -> Option<&RequestTransactionDataSuccessOwned> {
        self.transactions.answers.get(&template_id)
    }

    /// Number of templates whose transactions are kept.
    pub fn transaction_data_len(&self) -> usize {
        self.transactions.answers.len()
    }

    /// The constraints sent on every connection.
    pub fn constraints(&self) -> &CoinbaseOutputConstraintsOwned {
        &self.constraints
    }
}

fn to_sibling(m: TemplateDistributionOwned) -> Actions {
    Action::ToSibling(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m))).into()
}

impl Sv2TemplateDistributionClientHandler for TemplateDistributionClient {
    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        self.connected = true;
        info!(
            connection = %ctx.id,
            peer = ctx.peer.map(tracing::field::display),
            size = self.constraints.coinbase_output_max_additional_size,
            sigops = self.constraints.coinbase_output_max_additional_sigops,
            "connected to template provider; sending CoinbaseOutputConstraints"
        );
        Actions::reply(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::CoinbaseOutputConstraints(self.constraints),
        ))
    }

    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        self.connected = false;
        warn!(connection = %ctx.id, %reason, "template provider connection lost");
        Actions::none()
    }

    async fn handle_new_template(
        &mut self,
        _ctx: ConnectionContext,
        msg: NewTemplateOwned,
    ) -> Actions {
        debug!(
            template_id = msg.template_id,
            future = msg.future_template,
            value_remaining = msg.coinbase_tx_value_remaining,
            "NewTemplate"
        );
        let template_id = msg.template_id;
        let prefetch = self.transactions.capacity > 0 && !msg.merkle_path.is_empty();
        let mut actions = to_sibling(TemplateDistributionOwned::NewTemplate(msg));
        if prefetch && self.transactions.pending.insert(template_id) {
            // Bounded: an answer that never comes is forgotten after `capacity` newer ones.
            while self.transactions.pending.len() > self.transactions.capacity {
                if let Some(old) = self.transactions.pending.pop_first() {
                    self.transactions.sibling_waiting.remove(&old);
                }
            }
            actions.extend(upstream(TemplateDistributionOwned::RequestTransactionData(
                RequestTransactionDataOwned { template_id },
            )));
        }
        actions
    }

    async fn handle_set_new_prev_hash(
        &mut self,
        _ctx: ConnectionContext,
        msg: SetNewPrevHashOwned,
    ) -> Actions {
        debug!(
            template_id = msg.template_id,
            n_bits = msg.n_bits,
            header_timestamp = msg.header_timestamp,
            "SetNewPrevHash"
        );
        to_sibling(TemplateDistributionOwned::SetNewPrevHash(msg))
    }

    async fn handle_request_transaction_data_success(
        &mut self,
        _ctx: ConnectionContext,
        msg: RequestTransactionDataSuccessOwned,
    ) -> Actions {
        let id = msg.template_id;
        let store = &mut self.transactions;
        if !store.pending.remove(&id) {
            // The sibling's own request.
            return to_sibling(TemplateDistributionOwned::RequestTransactionDataSuccess(
                msg,
            ));
        }
        debug!(
            template_id = id,
            transactions = msg.transaction_list.iter().count(),
            "template transactions prefetched"
        );
        let waiting = store.sibling_waiting.remove(&id);
        let reply = waiting.then(|| msg.clone());
        store.answers.insert(id, msg);
        while store.answers.len() > store.capacity {
            store.answers.pop_first();
        }
        match reply {
            Some(m) => to_sibling(TemplateDistributionOwned::RequestTransactionDataSuccess(m)),
            None => Actions::none(),
        }
    }

    async fn handle_request_transaction_data_error(
        &mut self,
        _ctx: ConnectionContext,
        msg: RequestTransactionDataErrorOwned,
    ) -> Actions {
        let id = msg.template_id;
        if self.transactions.pending.remove(&id) && !self.transactions.sibling_waiting.remove(&id) {
            debug!(
                template_id = id,
                "prefetch of template transactions refused"
            );
            return Actions::none();
        }
        to_sibling(TemplateDistributionOwned::RequestTransactionDataError(msg))
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        let SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m)) = msg else {
            return Actions::none();
        };
        match m {
            TemplateDistributionOwned::SubmitSolution(s) => {
                if self.connected {
                    info!(
                        template_id = s.template_id,
                        "sending SubmitSolution upstream"
                    );
                } else {
                    tracing::error!(
                        template_id = s.template_id,
                        "SubmitSolution while the template provider is disconnected: not \
                         delivered (a MiningServer resubmits unconfirmed blocks when the \
                         provider is back)"
                    );
                    return Actions::none();
                }
                upstream(TemplateDistributionOwned::SubmitSolution(s))
            }
            TemplateDistributionOwned::CoinbaseOutputConstraints(c) => {
                // Also used after every reconnect from now on.
                self.constraints = c;
                upstream(TemplateDistributionOwned::CoinbaseOutputConstraints(c))
            }
            TemplateDistributionOwned::RequestTransactionData(r) => {
                let id = r.template_id;
                if let Some(answer) = self.transactions.answers.get(&id) {
                    debug!(
                        template_id = id,
                        "template transactions from the prefetch store"
                    );
                    return to_sibling(TemplateDistributionOwned::RequestTransactionDataSuccess(
                        answer.clone(),
                    ));
                }
                if self.transactions.pending.contains(&id) {
                    // Our own request is on its way: its answer goes to the sibling too.
                    self.transactions.sibling_waiting.insert(id);
                    return Actions::none();
                }
                upstream(TemplateDistributionOwned::RequestTransactionData(r))
            }
            _ => Actions::none(),
        }
    }
}

fn upstream(m: TemplateDistributionOwned) -> Actions {
    Action::SendUpstream(
        Subprotocol::TemplateDistribution,
        Sv2Message::TemplateDistribution(m),
    )
    .into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tower_stratum_core::session::ConnectionInfo;
    use tower_stratum_core::stratum_core::template_distribution_sv2::SubmitSolutionOwned;
    use tower_stratum_core::{ConnectionId, Role};

    fn ctx() -> ConnectionContext {
        ConnectionContext {
            id: ConnectionId(1),
            peer: None,
            role: Role::Client,
            info: ConnectionInfo {
                protocol: Subprotocol::TemplateDistribution,
                version: 2,
                flags: 0,
                success_flags: 0,
                extensions: Default::default(),
            },
        }
    }

    fn solution() -> SiblingMessage {
        SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::SubmitSolution(SubmitSolutionOwned {
                template_id: 1,
                version: 0x2000_0000,
                header_timestamp: 0,
                header_nonce: 0,
                coinbase_tx: vec![0u8; 4].try_into().unwrap(),
            }),
        ))
    }

    fn template(id: u64, with_transactions: bool) -> NewTemplateOwned {
        NewTemplateOwned {
            template_id: id,
            future_template: true,
            version: 0x2000_0000,
            coinbase_tx_version: 2,
            coinbase_prefix: vec![0x51, 0x00].try_into().unwrap(),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: 5_000_000_000,
            coinbase_tx_outputs_count: 0,
            coinbase_tx_outputs: Vec::new().try_into().unwrap(),
            coinbase_tx_locktime: 0,
            merkle_path: if with_transactions {
                vec![[7u8; 32].into()].try_into().unwrap()
            } else {
                Vec::new().try_into().unwrap()
            },
        }
    }

    fn success(id: u64) -> RequestTransactionDataSuccessOwned {
        RequestTransactionDataSuccessOwned {
            template_id: id,
            excess_data: vec![0u8; 32].try_into().unwrap(),
            transaction_list: vec![vec![id as u8; 60].try_into().unwrap()]
                .try_into()
                .unwrap(),
        }
    }

    fn sibling_request(id: u64) -> SiblingMessage {
        SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::RequestTransactionData(RequestTransactionDataOwned {
                template_id: id,
            }),
        ))
    }

    fn kinds(a: &Actions) -> Vec<String> {
        a.iter()
            .map(|a| match a {
                Action::ToSibling(SiblingMessage::Sv2(m)) => format!("sibling {}", m.name()),
                Action::SendUpstream(_, m) => format!("upstream {}", m.name()),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn prefetches_template_transactions_and_keeps_them_bounded() {
        let mut c = TemplateDistributionClient::default().with_transaction_prefetch(2);
        c.on_connection_added(ctx()).await;
        // A coinbase-only template: nothing to ask.
        let a = c.handle_new_template(ctx(), template(1, false)).await;
        assert_eq!(kinds(&a), ["sibling NewTemplate"]);
        // With transactions: forwarded, and their transactions requested.
        let a = c.handle_new_template(ctx(), template(2, true)).await;
        assert_eq!(
            kinds(&a),
            ["sibling NewTemplate", "upstream RequestTransactionData"]
        );
        // The sibling asks before the answer came: no second request, the answer goes to it.
        assert!(c
            .handle_sibling_message(sibling_request(2))
            .await
            .is_empty());
        let a = c
            .handle_request_transaction_data_success(ctx(), success(2))
            .await;
        assert_eq!(kinds(&a), ["sibling RequestTransactionDataSuccess"]);
        assert_eq!(c.transaction_data(2), Some(&success(2)));
        // Later requests are answered from the store, even after the provider moved on.
        let a = c.handle_sibling_message(sibling_request(2)).await;
        match a.as_slice() {
            [Action::ToSibling(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataSuccess(s),
            )))] => assert_eq!(s, &success(2)),
            other => panic!("expected the stored answer, got {other:?}"),
        }
        // Prefetched answers nobody asked for stay here; the store keeps the 2 newest.
        for id in 3..=5 {
            c.handle_new_template(ctx(), template(id, true)).await;
            let a = c
                .handle_request_transaction_data_success(ctx(), success(id))
                .await;
            assert!(a.is_empty());
        }
        assert_eq!(c.transaction_data_len(), 2);
        assert!(c.transaction_data(3).is_none());
        assert!(c.transaction_data(5).is_some());
        // Not in the store: the request goes upstream, the answer to the sibling.
        let a = c.handle_sibling_message(sibling_request(3)).await;
        assert_eq!(kinds(&a), ["upstream RequestTransactionData"]);
        let a = c
            .handle_request_transaction_data_success(ctx(), success(3))
            .await;
        assert_eq!(kinds(&a), ["sibling RequestTransactionDataSuccess"]);
        // A refused prefetch nobody waited for is dropped; the sibling's errors pass.
        c.handle_new_template(ctx(), template(6, true)).await;
        let err = |id| RequestTransactionDataErrorOwned {
            template_id: id,
            error_code: "stale-template-id".to_string().try_into().unwrap(),
        };
        assert!(c
            .handle_request_transaction_data_error(ctx(), err(6))
            .await
            .is_empty());
        let a = c.handle_request_transaction_data_error(ctx(), err(9)).await;
        assert_eq!(kinds(&a), ["sibling RequestTransactionDataError"]);
        // Unanswered prefetches are bounded too.
        for id in 10..20 {
            c.handle_new_template(ctx(), template(id, true)).await;
        }
        assert!(c.transactions.pending.len() <= 2);
    }

    #[tokio::test]
    async fn without_prefetch_requests_pass_through() {
        let mut c = TemplateDistributionClient::default();
        c.on_connection_added(ctx()).await;
        let a = c.handle_new_template(ctx(), template(2, true)).await;
        assert_eq!(kinds(&a), ["sibling NewTemplate"]);
        let a = c.handle_sibling_message(sibling_request(2)).await;
        assert_eq!(kinds(&a), ["upstream RequestTransactionData"]);
        let a = c
            .handle_request_transaction_data_success(ctx(), success(2))
            .await;
        assert_eq!(kinds(&a), ["sibling RequestTransactionDataSuccess"]);
        assert_eq!(c.transaction_data_len(), 0);
    }

    #[tokio::test]
    async fn bridges_template_provider_and_sibling() {
        let mut c = TemplateDistributionClient::default();
        // Not connected yet: a solution cannot go anywhere.
        assert!(c.handle_sibling_message(solution()).await.is_empty());

        let a = c.on_connection_added(ctx()).await;
        match a.as_slice() {
            [Action::Reply(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::CoinbaseOutputConstraints(k),
            ))] => {
                assert_eq!(k.coinbase_output_max_additional_size, 43);
                assert_eq!(k.coinbase_output_max_additional_sigops, 4);
            }
            other => panic!("expected CoinbaseOutputConstraints, got {other:?}"),
        }

        let a = c.handle_sibling_message(solution()).await;
        assert!(matches!(
            a.as_slice(),
            [Action::SendUpstream(
                Subprotocol::TemplateDistribution,
                Sv2Message::TemplateDistribution(TemplateDistributionOwned::SubmitSolution(_))
            )]
        ));

        // New constraints from the sibling go upstream and are kept for reconnects.
        let k = CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: 100,
            coinbase_output_max_additional_sigops: 8,
        };
        let a = c
            .handle_sibling_message(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::CoinbaseOutputConstraints(k),
            )))
            .await;
        assert!(matches!(a.as_slice(), [Action::SendUpstream(..)]));
        assert_eq!(c.constraints().coinbase_output_max_additional_size, 100);

        // Server messages that are not templates are ignored when they come from the sibling.
        assert!(c
            .handle_sibling_message(SiblingMessage::custom("x"))
            .await
            .is_empty());

        c.on_connection_removed(ctx(), CloseReason::Shutdown).await;
        assert!(c.handle_sibling_message(solution()).await.is_empty());
    }
}
