//! Client-side handler traits (messages a client receives) and their Null implementations.
//!
//! Server-to-client messages have no spec-defined rejection, so every default ignores the
//! message. `Reconnect` is handled by the client service itself (spec 3.6.5).

use super::{Actions, ConnectionContext, InboundMessage, SiblingMessage};
use crate::extensions::ExtensionSet;
use crate::message::{ExtensionMessage, Sv2Message};
use crate::session::CloseReason;
use std::future::Future;
use stratum_core::common_messages_sv2::ChannelEndpointChangedOwned;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenSuccessOwned, DeclareMiningJobErrorOwned, DeclareMiningJobSuccessOwned,
    ProvideMissingTransactionsOwned,
};
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned,
    OpenStandardMiningChannelSuccessOwned, SetCustomMiningJobErrorOwned,
    SetCustomMiningJobSuccessOwned, SetExtranoncePrefixOwned, SetGroupChannelOwned,
    SetNewPrevHashOwned as MiningSetNewPrevHashOwned, SetTargetOwned, SubmitSharesErrorOwned,
    SubmitSharesSuccessOwned, UpdateChannelErrorOwned,
};
use stratum_core::parsers_sv2::{
    CommonMessagesOwned, JobDeclarationOwned, MiningOwned, TemplateDistributionOwned,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataErrorOwned, RequestTransactionDataSuccessOwned,
    SetNewPrevHashOwned as TemplateSetNewPrevHashOwned,
};

macro_rules! ignore {
    ($(#[$doc:meta])* $fn:ident, $ty:ty) => {
        $(#[$doc])*
        fn $fn(
            &mut self,
            ctx: ConnectionContext,
            msg: $ty,
        ) -> impl Future<Output = Actions> + Send {
            let _ = (ctx, msg);
            async { Actions::none() }
        }
    };
}

/// Mining Protocol, client side (spec 5): miners, proxies' upstream side.
pub trait Sv2MiningClientHandler: Send + 'static {
    /// `SetupConnection.flags` to send for `protocol = 0` (spec 5.2); `None` = this client does
    /// not use the Mining Protocol (no connection is made). Default: `Some(0)`.
    fn setup_connection_flags(&self) -> Option<u32> {
        Some(0)
    }

    /// Extensions to request with `RequestExtensions` (extension `0x0001`) right after
    /// `SetupConnection.Success`; the connection is reported established (and
    /// `on_connection_added` called) once the server answered or the reply timeout passed,
    /// with the negotiated set in [`ConnectionInfo::extensions`](crate::ConnectionInfo::extensions).
    /// Default: none (no request is sent).
    fn requested_extensions(&self) -> ExtensionSet {
        ExtensionSet::EMPTY
    }

    common_methods!();

    /// Every Mining Protocol message from the server, before it is routed to the method named
    /// after it. Default: [`dispatch_mining_client`] (that routing). Override it to take every
    /// message as one [`MiningOwned`] value — a proxy's upstream side that hands each one to
    /// its sibling, say — instead of one method per message.
    fn handle_mining_message(
        &mut self,
        ctx: ConnectionContext,
        msg: MiningOwned,
    ) -> impl Future<Output = Actions> + Send
    where
        Self: Sized,
    {
        dispatch_mining_client(self, ctx, msg)
    }

    ignore!(
        /// `OpenStandardMiningChannel.Success` (0x11).
        handle_open_standard_mining_channel_success,
        OpenStandardMiningChannelSuccessOwned
    );
    ignore!(
        /// `OpenExtendedMiningChannel.Success` (0x14).
        handle_open_extended_mining_channel_success,
        OpenExtendedMiningChannelSuccessOwned
    );
    ignore!(
        /// `OpenMiningChannel.Error` (0x12).
        handle_open_mining_channel_error,
        OpenMiningChannelErrorOwned
    );
    ignore!(
        /// `UpdateChannel.Error` (0x17).
        handle_update_channel_error,
        UpdateChannelErrorOwned
    );
    ignore!(
        /// `CloseChannel` (0x18).
        handle_close_channel,
        CloseChannelOwned
    );
    ignore!(
        /// `SetExtranoncePrefix` (0x19).
        handle_set_extranonce_prefix,
        SetExtranoncePrefixOwned
    );
    ignore!(
        /// `SubmitShares.Success` (0x1c).
        handle_submit_shares_success,
        SubmitSharesSuccessOwned
    );
    ignore!(
        /// `SubmitShares.Error` (0x1d).
        handle_submit_shares_error,
        SubmitSharesErrorOwned
    );
    ignore!(
        /// `NewMiningJob` (0x15).
        handle_new_mining_job,
        NewMiningJobOwned
    );
    ignore!(
        /// `NewExtendedMiningJob` (0x1f).
        handle_new_extended_mining_job,
        NewExtendedMiningJobOwned
    );
    ignore!(
        /// `SetNewPrevHash` (0x20, Mining Protocol).
        handle_set_new_prev_hash,
        MiningSetNewPrevHashOwned
    );
    ignore!(
        /// `SetCustomMiningJob.Success` (0x23).
        handle_set_custom_mining_job_success,
        SetCustomMiningJobSuccessOwned
    );
    ignore!(
        /// `SetCustomMiningJob.Error` (0x24).
        handle_set_custom_mining_job_error,
        SetCustomMiningJobErrorOwned
    );
    ignore!(
        /// `SetTarget` (0x21).
        handle_set_target,
        SetTargetOwned
    );
    ignore!(
        /// `SetGroupChannel` (0x25).
        handle_set_group_channel,
        SetGroupChannelOwned
    );
    ignore!(
        /// `ChannelEndpointChanged` (0x03, spec 3.6.4): reset extension state of the channel.
        handle_channel_endpoint_changed,
        ChannelEndpointChangedOwned
    );
}

/// Job Declaration Protocol, client side (spec 6): a Job Declarator Client.
pub trait Sv2JobDeclarationClientHandler: Send + 'static {
    /// `SetupConnection.flags` for `protocol = 1`; `None` = not used. Default: `Some(0)`.
    fn setup_connection_flags(&self) -> Option<u32> {
        Some(0)
    }

    /// Extensions to request with `RequestExtensions` (extension `0x0001`) right after
    /// `SetupConnection.Success`; the connection is reported established (and
    /// `on_connection_added` called) once the server answered or the reply timeout passed,
    /// with the negotiated set in [`ConnectionInfo::extensions`](crate::ConnectionInfo::extensions).
    /// Default: none (no request is sent).
    fn requested_extensions(&self) -> ExtensionSet {
        ExtensionSet::EMPTY
    }

    common_methods!();

    ignore!(
        /// `AllocateMiningJobToken.Success` (0x51).
        handle_allocate_mining_job_token_success,
        AllocateMiningJobTokenSuccessOwned
    );
    ignore!(
        /// `DeclareMiningJob.Success` (0x58).
        handle_declare_mining_job_success,
        DeclareMiningJobSuccessOwned
    );
    ignore!(
        /// `DeclareMiningJob.Error` (0x59).
        handle_declare_mining_job_error,
        DeclareMiningJobErrorOwned
    );
    ignore!(
        /// `ProvideMissingTransactions` (0x55).
        handle_provide_missing_transactions,
        ProvideMissingTransactionsOwned
    );
}

/// Template Distribution Protocol, client side (spec 7): pools and JD clients taking
/// templates from a Template Provider.
pub trait Sv2TemplateDistributionClientHandler: Send + 'static {
    /// `SetupConnection.flags` for `protocol = 2`; `None` = not used. Default: `Some(0)`.
    fn setup_connection_flags(&self) -> Option<u32> {
        Some(0)
    }

    /// Extensions to request with `RequestExtensions` (extension `0x0001`) right after
    /// `SetupConnection.Success`; the connection is reported established (and
    /// `on_connection_added` called) once the server answered or the reply timeout passed,
    /// with the negotiated set in [`ConnectionInfo::extensions`](crate::ConnectionInfo::extensions).
    /// Default: none (no request is sent).
    fn requested_extensions(&self) -> ExtensionSet {
        ExtensionSet::EMPTY
    }

    common_methods!();

    ignore!(
        /// `NewTemplate` (0x71).
        handle_new_template,
        NewTemplateOwned
    );
    ignore!(
        /// `SetNewPrevHash` (0x72, Template Distribution Protocol).
        handle_set_new_prev_hash,
        TemplateSetNewPrevHashOwned
    );
    ignore!(
        /// `RequestTransactionData.Success` (0x74).
        handle_request_transaction_data_success,
        RequestTransactionDataSuccessOwned
    );
    ignore!(
        /// `RequestTransactionData.Error` (0x75).
        handle_request_transaction_data_error,
        RequestTransactionDataErrorOwned
    );
}

macro_rules! null_client {
    ($name:ident, $tr:ident, $what:literal) => {
        #[doc = concat!("Does not use the ", $what, " subprotocol: `setup_connection_flags` is `None`,")]
        #[doc = "so the client service opens no connection for it and none of its methods is"]
        #[doc = "called. Never panics. The default for clients that do not need this subprotocol."]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl $tr for $name {
            fn setup_connection_flags(&self) -> Option<u32> {
                None
            }
        }
    };
}

null_client!(NullSv2MiningClientHandler, Sv2MiningClientHandler, "Mining");
null_client!(
    NullSv2JobDeclarationClientHandler,
    Sv2JobDeclarationClientHandler,
    "Job Declaration"
);
null_client!(
    NullSv2TemplateDistributionClientHandler,
    Sv2TemplateDistributionClientHandler,
    "Template Distribution"
);

/// Routes one Mining Protocol message from the server to the method of `m` named after it
/// (messages a client never receives are ignored). The default of
/// [`Sv2MiningClientHandler::handle_mining_message`].
pub async fn dispatch_mining_client<M: Sv2MiningClientHandler>(
    m: &mut M,
    ctx: ConnectionContext,
    msg: MiningOwned,
) -> Actions {
    match msg {
        MiningOwned::OpenStandardMiningChannelSuccess(x) => {
            m.handle_open_standard_mining_channel_success(ctx, x).await
        }
        MiningOwned::OpenExtendedMiningChannelSuccess(x) => {
            m.handle_open_extended_mining_channel_success(ctx, x).await
        }
        MiningOwned::OpenMiningChannelError(x) => m.handle_open_mining_channel_error(ctx, x).await,
        MiningOwned::UpdateChannelError(x) => m.handle_update_channel_error(ctx, x).await,
        MiningOwned::CloseChannel(x) => m.handle_close_channel(ctx, x).await,
        MiningOwned::SetExtranoncePrefix(x) => m.handle_set_extranonce_prefix(ctx, x).await,
        MiningOwned::SubmitSharesSuccess(x) => m.handle_submit_shares_success(ctx, x).await,
        MiningOwned::SubmitSharesError(x) => m.handle_submit_shares_error(ctx, x).await,
        MiningOwned::NewMiningJob(x) => m.handle_new_mining_job(ctx, x).await,
        MiningOwned::NewExtendedMiningJob(x) => m.handle_new_extended_mining_job(ctx, x).await,
        MiningOwned::SetNewPrevHash(x) => m.handle_set_new_prev_hash(ctx, x).await,
        MiningOwned::SetCustomMiningJobSuccess(x) => {
            m.handle_set_custom_mining_job_success(ctx, x).await
        }
        MiningOwned::SetCustomMiningJobError(x) => {
            m.handle_set_custom_mining_job_error(ctx, x).await
        }
        MiningOwned::SetTarget(x) => m.handle_set_target(ctx, x).await,
        MiningOwned::SetGroupChannel(x) => m.handle_set_group_channel(ctx, x).await,
        _ => Actions::none(),
    }
}

/// Routes a message received from a server to the method named after it.
pub async fn dispatch_client<M, J, T>(
    m: &mut M,
    j: &mut J,
    t: &mut T,
    inbound: InboundMessage,
) -> Actions
where
    M: Sv2MiningClientHandler,
    J: Sv2JobDeclarationClientHandler,
    T: Sv2TemplateDistributionClientHandler,
{
    use crate::message::Subprotocol as P;
    let ctx = inbound.ctx;
    // No server-to-client message takes TLV fields yet: they are dropped.
    match inbound.message.without_tlvs() {
        Sv2Message::Mining(msg) => m.handle_mining_message(ctx, msg).await,
        Sv2Message::JobDeclaration(msg) => match msg {
            JobDeclarationOwned::AllocateMiningJobTokenSuccess(x) => {
                j.handle_allocate_mining_job_token_success(ctx, x).await
            }
            JobDeclarationOwned::DeclareMiningJobSuccess(x) => {
                j.handle_declare_mining_job_success(ctx, x).await
            }
            JobDeclarationOwned::DeclareMiningJobError(x) => {
                j.handle_declare_mining_job_error(ctx, x).await
            }
            JobDeclarationOwned::ProvideMissingTransactions(x) => {
                j.handle_provide_missing_transactions(ctx, x).await
            }
            _ => Actions::none(),
        },
        Sv2Message::TemplateDistribution(msg) => match msg {
            TemplateDistributionOwned::NewTemplate(x) => t.handle_new_template(ctx, x).await,
            TemplateDistributionOwned::SetNewPrevHash(x) => {
                t.handle_set_new_prev_hash(ctx, x).await
            }
            TemplateDistributionOwned::RequestTransactionDataSuccess(x) => {
                t.handle_request_transaction_data_success(ctx, x).await
            }
            TemplateDistributionOwned::RequestTransactionDataError(x) => {
                t.handle_request_transaction_data_error(ctx, x).await
            }
            _ => Actions::none(),
        },
        Sv2Message::Common(CommonMessagesOwned::ChannelEndpointChanged(x)) => {
            m.handle_channel_endpoint_changed(ctx, x).await
        }
        Sv2Message::Common(_) | Sv2Message::WithTlvs(_) => Actions::none(),
        Sv2Message::Extension(x) => match ctx.protocol() {
            P::Mining => m.handle_extension_message(ctx, x).await,
            P::JobDeclaration => j.handle_extension_message(ctx, x).await,
            P::TemplateDistribution => t.handle_extension_message(ctx, x).await,
        },
    }
}
