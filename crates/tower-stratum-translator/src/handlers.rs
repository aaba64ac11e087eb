//! The two handlers of the translator: [`TranslatorSv1Handler`] (the Sv1 server side; owns
//! the [`TranslatorCore`]) and [`TranslatorSv2Handler`] (the Sv2 Mining client side; a relay).

use crate::core::{TranslatorCore, UpstreamEvent};
use crate::stats::TranslatorStats;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower_stratum_core::extensions::WORKER_HASHRATE_TRACKING;
use tower_stratum_core::handler::Sv2MiningClientHandler;
use tower_stratum_core::session::REQUIRES_VERSION_ROLLING;
use tower_stratum_core::stratum_core::common_messages_sv2::ChannelEndpointChangedOwned;
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned, SetExtranoncePrefixOwned, SetGroupChannelOwned,
    SetNewPrevHashOwned, SetTargetOwned, SubmitSharesErrorOwned, SubmitSharesSuccessOwned,
    UpdateChannelErrorOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{
    Action, Actions, CloseReason, ConnectionContext, ExtensionSet, SiblingMessage, Subprotocol,
    Sv2Message,
};
use tower_stratum_service::sv1::{
    Sv1Actions, Sv1CloseReason, Sv1ConnectionContext, Sv1ServerHandler,
};
use tower_stratum_sv1::{Authorize, Configure, Id, Submit, Subscribe, Target};
use tracing::debug;

/// The Sv1 server handler of the translator: owns the [`TranslatorCore`], feeds it the
/// miners' requests and the upstream's messages (sibling messages from
/// [`TranslatorSv2Handler`]), runs its periodic work on the handler timer (every
/// `tick_interval`: verdict timeouts, vardiff, `UpdateChannel`, keepalive jobs) and publishes
/// [`TranslatorStats`] after each.
#[derive(Debug)]
pub struct TranslatorSv1Handler {
    core: TranslatorCore,
    stats: watch::Sender<TranslatorStats>,
    tick_interval: Duration,
    next_tick: Instant,
}

/// The monotonic clock (tokio's, so paused-time tests work).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl TranslatorSv1Handler {
    /// A handler around `core`, publishing stats to `stats`, with its periodic work every
    /// `tick_interval` (at least 10 ms) from now.
    pub fn new(
        core: TranslatorCore,
        stats: watch::Sender<TranslatorStats>,
        tick_interval: Duration,
    ) -> Self {
        let tick_interval = tick_interval.max(Duration::from_millis(10));
        Self {
            core,
            stats,
            tick_interval,
            next_tick: now() + tick_interval,
        }
    }
}

impl Sv1ServerHandler for TranslatorSv1Handler {
    async fn on_connection_added(&mut self, ctx: Sv1ConnectionContext) -> Sv1Actions {
        self.core.connection_added(ctx, now())
    }

    async fn on_connection_removed(
        &mut self,
        ctx: Sv1ConnectionContext,
        reason: Sv1CloseReason,
    ) -> Sv1Actions {
        debug!(connection = %ctx.id, %reason, "miner left");
        self.core.connection_removed(ctx, now())
    }

    async fn handle_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Subscribe,
    ) -> Sv1Actions {
        self.core.subscribe(ctx, id, msg, now())
    }

    async fn handle_authorize(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Authorize,
    ) -> Sv1Actions {
        self.core.authorize(ctx, id, msg, now())
    }

    async fn handle_submit(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Submit,
    ) -> Sv1Actions {
        self.core.submit(ctx, id, msg, now())
    }

    async fn handle_configure(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Configure,
    ) -> Sv1Actions {
        self.core.configure(ctx, id, msg)
    }

    async fn handle_extranonce_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
    ) -> Sv1Actions {
        self.core.extranonce_subscribe(ctx, id)
    }

    async fn handle_suggest_difficulty(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        difficulty: f64,
    ) -> Sv1Actions {
        self.core.suggest_difficulty(ctx, id, difficulty, now())
    }

    async fn handle_suggest_target(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        target: Target,
    ) -> Sv1Actions {
        self.core.suggest_target(ctx, id, target, now())
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Sv1Actions {
        let t = now();
        match msg {
            SiblingMessage::Sv2(Sv2Message::Mining(m)) => self.core.upstream_message(m, t),
            SiblingMessage::Sv2(_) => Sv1Actions::none(),
            custom => {
                if let Some(ev) = custom.downcast_ref::<UpstreamEvent>() {
                    match ev {
                        UpstreamEvent::Disconnected { reason } => {
                            self.core.upstream_disconnected(reason.clone(), t)
                        }
                        UpstreamEvent::Failed { reason } => {
                            self.core.upstream_failed(reason.clone())
                        }
                        connected => self.core.upstream_connected(connected.clone(), t),
                    }
                } else {
                    Sv1Actions::none()
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    async fn on_timer(&mut self, now: Instant) -> Sv1Actions {
        // The next deadline from this one (not from `now`): a late wake-up does not drift.
        self.next_tick = (self.next_tick + self.tick_interval).max(now);
        let out = self.core.tick(now);
        self.stats.send_replace(self.core.stats(now));
        out
    }

    async fn handle_sibling_closed(&mut self) -> Sv1Actions {
        self.core
            .upstream_disconnected("upstream side stopped".into(), now())
    }
}

/// The Sv2 Mining client handler of the translator: relays every Mining message it receives
/// to the Sv1 side, reports the connection's setup and loss as [`UpstreamEvent`]s, and sends
/// upstream whatever the Sv1 side hands it (`SiblingMessage::Sv2`).
///
/// With [`request_worker_hashrate_tracking`](Self::request_worker_hashrate_tracking) it
/// requests extension `0x0002` after `SetupConnection` (extension `0x0001`) and reports the
/// outcome in [`UpstreamEvent::Connected`]; TLV fields are stripped from what the Sv1 side
/// hands it unless the current connection negotiated them (extension `0x0001` section 1.1).
#[derive(Debug, Clone)]
pub struct TranslatorSv2Handler {
    version_rolling: bool,
    user_identity: String,
    index: usize,
    request_extensions: ExtensionSet,
    /// The extensions the current connection negotiated.
    negotiated: ExtensionSet,
}

impl TranslatorSv2Handler {
    /// A relay for upstream number `index` whose channels use `user_identity`; with
    /// `require_version_rolling`, `SetupConnection` carries `REQUIRES_VERSION_ROLLING`.
    pub fn new(require_version_rolling: bool, user_identity: String, index: usize) -> Self {
        Self {
            version_rolling: require_version_rolling,
            user_identity,
            index,
            request_extensions: ExtensionSet::EMPTY,
            negotiated: ExtensionSet::EMPTY,
        }
    }

    /// Whether to request extension `0x0002` (Worker-Specific Hashrate Tracking) from the
    /// upstream. Default (from [`new`](Self::new)): no.
    pub fn request_worker_hashrate_tracking(mut self, on: bool) -> Self {
        self.request_extensions = if on {
            ExtensionSet::from_ids(&[WORKER_HASHRATE_TRACKING])
        } else {
            ExtensionSet::EMPTY
        };
        self
    }

    fn relay(m: MiningOwned) -> Actions {
        Action::ToSibling(SiblingMessage::Sv2(Sv2Message::Mining(m))).into()
    }
}

impl Sv2MiningClientHandler for TranslatorSv2Handler {
    fn setup_connection_flags(&self) -> Option<u32> {
        Some(if self.version_rolling {
            REQUIRES_VERSION_ROLLING
        } else {
            0
        })
    }

    fn requested_extensions(&self) -> ExtensionSet {
        self.request_extensions
    }

    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        self.negotiated = ctx.info.extensions;
        Action::ToSibling(SiblingMessage::custom(UpstreamEvent::Connected {
            success_flags: ctx.info.success_flags,
            version_rolling_required: self.version_rolling,
            user_identity: self.user_identity.clone(),
            index: self.index,
            worker_hashrate_tracking: ctx.info.extensions.contains(WORKER_HASHRATE_TRACKING),
        }))
        .into()
    }

    async fn on_connection_removed(
        &mut self,
        _ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        self.negotiated = ExtensionSet::EMPTY;
        Action::ToSibling(SiblingMessage::custom(UpstreamEvent::Disconnected {
            reason: reason.to_string(),
        }))
        .into()
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        match msg {
            // A share built while the previous connection had the extension never carries its
            // TLV to one that did not negotiate it.
            SiblingMessage::Sv2(m @ Sv2Message::WithTlvs(_))
                if !self.negotiated.contains(WORKER_HASHRATE_TRACKING) =>
            {
                Action::SendUpstream(Subprotocol::Mining, m.without_tlvs()).into()
            }
            SiblingMessage::Sv2(m) => Action::SendUpstream(Subprotocol::Mining, m).into(),
            SiblingMessage::Custom(_) => Actions::none(),
        }
    }

    async fn handle_open_extended_mining_channel_success(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenExtendedMiningChannelSuccessOwned,
    ) -> Actions {
        Self::relay(MiningOwned::OpenExtendedMiningChannelSuccess(m))
    }

    async fn handle_open_mining_channel_error(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenMiningChannelErrorOwned,
    ) -> Actions {
        Self::relay(MiningOwned::OpenMiningChannelError(m))
    }

    async fn handle_update_channel_error(
        &mut self,
        _ctx: ConnectionContext,
        m: UpdateChannelErrorOwned,
    ) -> Actions {
        Self::relay(MiningOwned::UpdateChannelError(m))
    }

    async fn handle_close_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: CloseChannelOwned,
    ) -> Actions {
        Self::relay(MiningOwned::CloseChannel(m))
    }

    async fn handle_set_extranonce_prefix(
        &mut self,
        _ctx: ConnectionContext,
        m: SetExtranoncePrefixOwned,
    ) -> Actions {
        Self::relay(MiningOwned::SetExtranoncePrefix(m))
    }

    async fn handle_submit_shares_success(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesSuccessOwned,
    ) -> Actions {
        Self::relay(MiningOwned::SubmitSharesSuccess(m))
    }

    async fn handle_submit_shares_error(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesErrorOwned,
    ) -> Actions {
        Self::relay(MiningOwned::SubmitSharesError(m))
    }

    async fn handle_new_extended_mining_job(
        &mut self,
        _ctx: ConnectionContext,
        m: NewExtendedMiningJobOwned,
    ) -> Actions {
        Self::relay(MiningOwned::NewExtendedMiningJob(m))
    }

    async fn handle_set_new_prev_hash(
        &mut self,
        _ctx: ConnectionContext,
        m: SetNewPrevHashOwned,
    ) -> Actions {
        Self::relay(MiningOwned::SetNewPrevHash(m))
    }

    async fn handle_set_target(&mut self, _ctx: ConnectionContext, m: SetTargetOwned) -> Actions {
        Self::relay(MiningOwned::SetTarget(m))
    }

    async fn handle_set_group_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: SetGroupChannelOwned,
    ) -> Actions {
        Self::relay(MiningOwned::SetGroupChannel(m))
    }

    async fn handle_channel_endpoint_changed(
        &mut self,
        _ctx: ConnectionContext,
        m: ChannelEndpointChangedOwned,
    ) -> Actions {
        debug!(
            channel_id = m.channel_id,
            "ChannelEndpointChanged (no extension state to reset)"
        );
        Actions::none()
    }
}
