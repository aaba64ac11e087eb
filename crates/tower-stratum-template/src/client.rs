//! [`TemplateDistributionClient`]: a Template Distribution client handler (spec 7, client
//! side) that bridges a Template Provider to a sibling mining server.

use crate::regtest::one_output_constraints;
use tower_stratum_core::handler::Sv2TemplateDistributionClientHandler;
use tower_stratum_core::stratum_core::parsers_sv2::TemplateDistributionOwned;
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, RequestTransactionDataErrorOwned,
    RequestTransactionDataSuccessOwned, SetNewPrevHashOwned,
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
        }
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
        to_sibling(TemplateDistributionOwned::NewTemplate(msg))
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
        to_sibling(TemplateDistributionOwned::RequestTransactionDataSuccess(
            msg,
        ))
    }

    async fn handle_request_transaction_data_error(
        &mut self,
        _ctx: ConnectionContext,
        msg: RequestTransactionDataErrorOwned,
    ) -> Actions {
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
            m @ TemplateDistributionOwned::RequestTransactionData(_) => upstream(m),
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
