//! Server-side handler traits (messages a server receives) and their Null implementations.

use super::{Actions, ConnectionContext, InboundMessage, SetupSupport, SiblingMessage};
use crate::extensions::{ExtensionSupport, TlvFields};
use crate::message::{ExtensionMessage, Sv2Message};
use crate::session::{str0255, CloseReason};
use std::future::Future;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, DeclareMiningJobErrorOwned, DeclareMiningJobOwned,
    ProvideMissingTransactionsSuccessOwned, PushSolutionOwned,
};
use stratum_core::mining_sv2::{
    CloseChannelOwned, OpenExtendedMiningChannelOwned, OpenMiningChannelErrorOwned,
    OpenStandardMiningChannelOwned, SetCustomMiningJobErrorOwned, SetCustomMiningJobOwned,
    SubmitSharesErrorOwned, SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
    UpdateChannelErrorOwned, UpdateChannelOwned,
};
use stratum_core::parsers_sv2::{JobDeclarationOwned, MiningOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, RequestTransactionDataErrorOwned, RequestTransactionDataOwned,
    SubmitSolutionOwned,
};

fn reply_if(m: Option<Sv2Message>) -> Actions {
    m.map(Actions::reply).unwrap_or_default()
}

/// Error code of the default `OpenMiningChannel.Error` for standard channels.
pub const ERROR_STANDARD_CHANNELS_UNSUPPORTED: &str = "standard-channels-not-supported";
/// Error code of the default `OpenMiningChannel.Error` for extended channels.
pub const ERROR_EXTENDED_CHANNELS_UNSUPPORTED: &str = "extended-channels-not-supported";
/// Error code used by default rejections of channel messages (spec 5.3.8, 5.3.14).
pub const ERROR_INVALID_CHANNEL_ID: &str = "invalid-channel-id";

/// Mining Protocol, server side (spec 5): pools, proxies' downstream side, solo servers.
///
/// Every `handle_*` method receives a message that has passed the session checks (setup done,
/// subprotocol and direction right) and returns the [`Actions`] to take.
pub trait Sv2MiningServerHandler: Send + 'static {
    /// `SetupConnection` policy for `protocol = 0`; `None` refuses the subprotocol with
    /// `unsupported-protocol`. Default: supported, no client flags honoured, no success flags.
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: 0,
            success_flags: 0,
        })
    }

    /// Extensions this handler supports and requires on its subprotocol, for Extensions
    /// Negotiation (extension `0x0001`): the session answers `RequestExtensions` from it and
    /// reports the result as [`ConnectionInfo::extensions`](crate::ConnectionInfo::extensions).
    /// Non-empty support delays `on_connection_added` until the negotiation is over (see
    /// [`Session`](crate::Session)). Default: none (every request gets
    /// `RequestExtensions.Error`).
    fn extension_support(&self) -> ExtensionSupport {
        ExtensionSupport::default()
    }

    common_methods!();

    /// `OpenStandardMiningChannel` (0x10). Default: `OpenMiningChannel.Error`
    /// `standard-channels-not-supported`.
    fn handle_open_standard_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenStandardMiningChannelOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = str0255(ERROR_STANDARD_CHANNELS_UNSUPPORTED).map(|error_code| {
            Sv2Message::Mining(MiningOwned::OpenMiningChannelError(
                OpenMiningChannelErrorOwned {
                    request_id: msg.request_id,
                    error_code,
                },
            ))
        });
        async move { reply_if(m) }
    }

    /// `OpenExtendedMiningChannel` (0x13). Default: `OpenMiningChannel.Error`
    /// `extended-channels-not-supported`.
    fn handle_open_extended_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenExtendedMiningChannelOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = str0255(ERROR_EXTENDED_CHANNELS_UNSUPPORTED).map(|error_code| {
            Sv2Message::Mining(MiningOwned::OpenMiningChannelError(
                OpenMiningChannelErrorOwned {
                    request_id: msg.request_id,
                    error_code,
                },
            ))
        });
        async move { reply_if(m) }
    }

    /// `UpdateChannel` (0x16). Default: `UpdateChannel.Error` `invalid-channel-id`.
    fn handle_update_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: UpdateChannelOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = str0255(ERROR_INVALID_CHANNEL_ID).map(|error_code| {
            Sv2Message::Mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                channel_id: msg.channel_id,
                error_code,
            }))
        });
        async move { reply_if(m) }
    }

    /// `CloseChannel` (0x18). Default: nothing (the spec defines no reply).
    fn handle_close_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: CloseChannelOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = (ctx, msg);
        async { Actions::none() }
    }

    /// `SubmitSharesStandard` (0x1a). Default: `SubmitShares.Error` `invalid-channel-id`.
    fn handle_submit_shares_standard(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSharesStandardOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = submit_error(msg.channel_id, msg.sequence_number);
        async move { reply_if(m) }
    }

    /// `SubmitSharesExtended` (0x1b). Default: `SubmitShares.Error` `invalid-channel-id`.
    fn handle_submit_shares_extended(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSharesExtendedOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = submit_error(msg.channel_id, msg.sequence_number);
        async move { reply_if(m) }
    }

    /// `SubmitSharesExtended` (0x1b) followed by TLV fields (spec 3.4.3) of extensions the
    /// connection negotiated, e.g. extension `0x0002`'s `user_identity`
    /// ([`TlvFields::user_identity_value`]). Only called when such fields are present; the
    /// fields of extensions not negotiated are already dropped. Default: ignores the fields and
    /// calls [`handle_submit_shares_extended`](Self::handle_submit_shares_extended).
    fn handle_submit_shares_extended_with_tlvs(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSharesExtendedOwned,
        tlvs: TlvFields,
    ) -> impl Future<Output = Actions> + Send {
        let _ = tlvs;
        self.handle_submit_shares_extended(ctx, msg)
    }

    /// `SetCustomMiningJob` (0x22). Default: `SetCustomMiningJob.Error` `invalid-channel-id`.
    fn handle_set_custom_mining_job(
        &mut self,
        ctx: ConnectionContext,
        msg: SetCustomMiningJobOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = str0255(ERROR_INVALID_CHANNEL_ID).map(|error_code| {
            Sv2Message::Mining(MiningOwned::SetCustomMiningJobError(
                SetCustomMiningJobErrorOwned {
                    channel_id: msg.channel_id,
                    request_id: msg.request_id,
                    error_code,
                },
            ))
        });
        async move { reply_if(m) }
    }
}

fn submit_error(channel_id: u32, sequence_number: u32) -> Option<Sv2Message> {
    str0255(ERROR_INVALID_CHANNEL_ID).map(|error_code| {
        Sv2Message::Mining(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
            channel_id,
            sequence_number,
            error_code,
        }))
    })
}

/// Job Declaration Protocol, server side (spec 6): a Job Declarator Server.
pub trait Sv2JobDeclarationServerHandler: Send + 'static {
    /// `SetupConnection` policy for `protocol = 1`; `None` refuses it.
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: 0,
            success_flags: 0,
        })
    }

    /// Extensions this handler supports and requires (extension `0x0001`); see
    /// [`Sv2MiningServerHandler::extension_support`]. Default: none.
    fn extension_support(&self) -> ExtensionSupport {
        ExtensionSupport::default()
    }

    common_methods!();

    /// `AllocateMiningJobToken` (0x50). The spec has no error reply, so the default closes the
    /// connection.
    fn handle_allocate_mining_job_token(
        &mut self,
        ctx: ConnectionContext,
        msg: AllocateMiningJobTokenOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = (ctx, msg);
        async { Actions::close("AllocateMiningJobToken not supported") }
    }

    /// `DeclareMiningJob` (0x57). Default: `DeclareMiningJob.Error` `invalid-mining-job-token`.
    fn handle_declare_mining_job(
        &mut self,
        ctx: ConnectionContext,
        msg: DeclareMiningJobOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = str0255("invalid-mining-job-token").and_then(|error_code| {
            Some(Sv2Message::JobDeclaration(
                JobDeclarationOwned::DeclareMiningJobError(DeclareMiningJobErrorOwned {
                    request_id: msg.request_id,
                    error_code,
                    error_details: Vec::new().try_into().ok()?,
                }),
            ))
        });
        async move { reply_if(m) }
    }

    /// `ProvideMissingTransactions.Success` (0x56). Default: ignore.
    fn handle_provide_missing_transactions_success(
        &mut self,
        ctx: ConnectionContext,
        msg: ProvideMissingTransactionsSuccessOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = (ctx, msg);
        async { Actions::none() }
    }

    /// `PushSolution` (0x60). Default: ignore.
    fn handle_push_solution(
        &mut self,
        ctx: ConnectionContext,
        msg: PushSolutionOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = (ctx, msg);
        async { Actions::none() }
    }
}

/// Template Distribution Protocol, server side (spec 7): a Template Provider.
pub trait Sv2TemplateDistributionServerHandler: Send + 'static {
    /// `SetupConnection` policy for `protocol = 2`; `None` refuses it.
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: 0,
            success_flags: 0,
        })
    }

    /// Extensions this handler supports and requires (extension `0x0001`); see
    /// [`Sv2MiningServerHandler::extension_support`]. Default: none.
    fn extension_support(&self) -> ExtensionSupport {
        ExtensionSupport::default()
    }

    common_methods!();

    /// `CoinbaseOutputConstraints` (0x70). Default: ignore.
    fn handle_coinbase_output_constraints(
        &mut self,
        ctx: ConnectionContext,
        msg: CoinbaseOutputConstraintsOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = (ctx, msg);
        async { Actions::none() }
    }

    /// `RequestTransactionData` (0x73). Default: `RequestTransactionData.Error`
    /// `template-id-not-found`.
    fn handle_request_transaction_data(
        &mut self,
        ctx: ConnectionContext,
        msg: RequestTransactionDataOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = ctx;
        let m = str0255("template-id-not-found").map(|error_code| {
            Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataError(
                    RequestTransactionDataErrorOwned {
                        template_id: msg.template_id,
                        error_code,
                    },
                ),
            )
        });
        async move { reply_if(m) }
    }

    /// `SubmitSolution` (0x76). Default: ignore.
    fn handle_submit_solution(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSolutionOwned,
    ) -> impl Future<Output = Actions> + Send {
        let _ = (ctx, msg);
        async { Actions::none() }
    }
}

macro_rules! null_server {
    ($name:ident, $tr:ident, $what:literal) => {
        #[doc = concat!("Refuses the ", $what, " subprotocol: `SetupConnection` for it is answered with ")]
        #[doc = "`SetupConnection.Error` `unsupported-protocol` and the connection closed, so none"]
        #[doc = "of its message methods is ever called. Never panics. The default for services that"]
        #[doc = "do not serve this subprotocol."]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl $tr for $name {
            fn setup_support(&self) -> Option<SetupSupport> {
                None
            }
        }
    };
}

null_server!(NullSv2MiningServerHandler, Sv2MiningServerHandler, "Mining");
null_server!(
    NullSv2JobDeclarationServerHandler,
    Sv2JobDeclarationServerHandler,
    "Job Declaration"
);
null_server!(
    NullSv2TemplateDistributionServerHandler,
    Sv2TemplateDistributionServerHandler,
    "Template Distribution"
);

/// Routes an inbound message to the method named after it on the handler of its subprotocol.
///
/// Client-to-server common messages never get here (the session consumes SetupConnection);
/// a message the server cannot receive yields no action (the session already closed on those).
pub async fn dispatch_server<M, J, T>(
    m: &mut M,
    j: &mut J,
    t: &mut T,
    inbound: InboundMessage,
) -> Actions
where
    M: Sv2MiningServerHandler,
    J: Sv2JobDeclarationServerHandler,
    T: Sv2TemplateDistributionServerHandler,
{
    use crate::message::Subprotocol as P;
    let ctx = inbound.ctx;
    // TLV fields reach only the methods that take them; the others get the bare message.
    let (message, tlvs) = match inbound.message {
        Sv2Message::WithTlvs(m) => (m.message, Some(m.tlvs)),
        m => (m, None),
    };
    match message {
        Sv2Message::Mining(msg) => match msg {
            MiningOwned::OpenStandardMiningChannel(x) => {
                m.handle_open_standard_mining_channel(ctx, x).await
            }
            MiningOwned::OpenExtendedMiningChannel(x) => {
                m.handle_open_extended_mining_channel(ctx, x).await
            }
            MiningOwned::UpdateChannel(x) => m.handle_update_channel(ctx, x).await,
            MiningOwned::CloseChannel(x) => m.handle_close_channel(ctx, x).await,
            MiningOwned::SubmitSharesStandard(x) => m.handle_submit_shares_standard(ctx, x).await,
            MiningOwned::SubmitSharesExtended(x) => match tlvs {
                Some(t) => m.handle_submit_shares_extended_with_tlvs(ctx, x, t).await,
                None => m.handle_submit_shares_extended(ctx, x).await,
            },
            MiningOwned::SetCustomMiningJob(x) => m.handle_set_custom_mining_job(ctx, x).await,
            _ => Actions::none(),
        },
        Sv2Message::JobDeclaration(msg) => match msg {
            JobDeclarationOwned::AllocateMiningJobToken(x) => {
                j.handle_allocate_mining_job_token(ctx, x).await
            }
            JobDeclarationOwned::DeclareMiningJob(x) => j.handle_declare_mining_job(ctx, x).await,
            JobDeclarationOwned::ProvideMissingTransactionsSuccess(x) => {
                j.handle_provide_missing_transactions_success(ctx, x).await
            }
            JobDeclarationOwned::PushSolution(x) => j.handle_push_solution(ctx, x).await,
            _ => Actions::none(),
        },
        Sv2Message::TemplateDistribution(msg) => match msg {
            TemplateDistributionOwned::CoinbaseOutputConstraints(x) => {
                t.handle_coinbase_output_constraints(ctx, x).await
            }
            TemplateDistributionOwned::RequestTransactionData(x) => {
                t.handle_request_transaction_data(ctx, x).await
            }
            TemplateDistributionOwned::SubmitSolution(x) => t.handle_submit_solution(ctx, x).await,
            _ => Actions::none(),
        },
        Sv2Message::Extension(x) => match ctx.protocol() {
            P::Mining => m.handle_extension_message(ctx, x).await,
            P::JobDeclaration => j.handle_extension_message(ctx, x).await,
            P::TemplateDistribution => t.handle_extension_message(ctx, x).await,
        },
        Sv2Message::Common(_) | Sv2Message::WithTlvs(_) => Actions::none(),
    }
}
