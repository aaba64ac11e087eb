//! The two handlers of the translator: [`TranslatorSv1Handler`] (the Sv1 server side; owns
//! the [`TranslatorCore`]) and [`TranslatorSv2Handler`] (the Sv2 Mining client side; a relay).

use crate::core::{TranslatorCore, UpstreamEvent};
use crate::stats::TranslatorStats;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower_stratum_core::extensions::WORKER_HASHRATE_TRACKING;
use tower_stratum_core::handler::Sv2MiningClientHandler;
use tower_stratum_core::session::REQUIRES_VERSION_ROLLING;
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{
    Action, Actions, CloseReason, ConnectionContext, ConnectionEvent, ExtensionSet, SiblingMessage,
    Subprotocol, Sv2Message,
};
use tower_stratum_service::sv1::{
    Sv1Actions, Sv1CloseReason, Sv1ConnectionContext, Sv1ServerHandler,
};
use tower_stratum_service::ActiveUpstream;
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
    /// `user_identity` per upstream of the client's list, in its order.
    user_identities: Vec<String>,
    /// The client's failed attempts (`ClientHandle::watch_failures`).
    failures: Option<watch::Receiver<Option<CloseReason>>>,
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
            user_identities: Vec::new(),
            failures: None,
        }
    }

    /// The `user_identity` of the channels opened on each upstream of the client's list, in
    /// its order (an established connection's `upstream` index picks one).
    pub fn with_user_identities(mut self, ids: Vec<String>) -> Self {
        self.user_identities = ids;
        self
    }

    /// Reads the client's failed attempts (`ClientHandle::watch_failures`) at each timer, for
    /// [`TranslatorStats::upstream_error`].
    pub fn watching_failures(mut self, rx: watch::Receiver<Option<CloseReason>>) -> Self {
        self.failures = Some(rx);
        self
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
            SiblingMessage::Connection(ConnectionEvent::Established { ctx, upstream }) => {
                let index = upstream.unwrap_or(0);
                let user_identity = self.user_identities.get(index).cloned().unwrap_or_default();
                let connected = UpstreamEvent::Connected {
                    success_flags: ctx.info.success_flags,
                    version_rolling_required: self.core.config().require_version_rolling,
                    user_identity,
                    index,
                    worker_hashrate_tracking: ctx
                        .info
                        .extensions
                        .contains(WORKER_HASHRATE_TRACKING),
                };
                self.core.upstream_connected(connected, t)
            }
            SiblingMessage::Connection(ConnectionEvent::Closed { reason, .. }) => {
                self.core.upstream_disconnected(reason.to_string(), t)
            }
            _ => Sv1Actions::none(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    async fn on_timer(&mut self, now: Instant) -> Sv1Actions {
        // The next deadline from this one (not from `now`): a late wake-up does not drift.
        self.next_tick = (self.next_tick + self.tick_interval).max(now);
        // A failed attempt to reach an upstream (shown in the stats until one connects).
        let failed = self.failures.as_mut().and_then(|rx| {
            rx.has_changed()
                .unwrap_or(false)
                .then(|| rx.borrow_and_update().as_ref().map(ToString::to_string))
                .flatten()
        });
        if let Some(reason) = failed {
            self.core.upstream_failed(reason);
        }
        let out = self.core.tick(now);
        self.stats.send_replace(self.core.stats(now));
        out
    }

    async fn handle_sibling_closed(&mut self) -> Sv1Actions {
        self.core
            .upstream_disconnected("upstream side stopped".into(), now())
    }
}

/// The Sv2 Mining client handler of the translator: hands every Mining message it receives
/// to the Sv1 side as it is (one [`handle_mining_message`](Sv2MiningClientHandler::handle_mining_message),
/// no method per message), tells it when a connection is established or closed
/// ([`SiblingMessage::Connection`], with the index of the upstream reached), and sends upstream
/// whatever the Sv1 side hands it (`SiblingMessage::Sv2`).
///
/// With [`request_worker_hashrate_tracking`](Self::request_worker_hashrate_tracking) it
/// requests extension `0x0002` after `SetupConnection` (extension `0x0001`); the outcome is in
/// the established connection's `ConnectionInfo::extensions`. TLV fields are stripped from
/// what the Sv1 side hands it unless the current connection negotiated them (extension
/// `0x0001` section 1.1).
#[derive(Debug, Clone)]
pub struct TranslatorSv2Handler {
    version_rolling: bool,
    request_extensions: ExtensionSet,
    /// The extensions the current connection negotiated.
    negotiated: ExtensionSet,
    /// Which upstream of the client's list each attempt is for.
    upstream: Option<watch::Receiver<Option<ActiveUpstream>>>,
}

impl Default for TranslatorSv2Handler {
    fn default() -> Self {
        Self::new()
    }
}

impl TranslatorSv2Handler {
    /// A handler that sets no `SetupConnection` flag and requests no extension.
    pub fn new() -> Self {
        Self {
            version_rolling: false,
            request_extensions: ExtensionSet::EMPTY,
            negotiated: ExtensionSet::EMPTY,
            upstream: None,
        }
    }

    /// Whether `SetupConnection` carries `REQUIRES_VERSION_ROLLING` (Mining Protocol flag
    /// bit 2: the upstream must let miners roll the BIP320 version bits). Default: no.
    pub fn require_version_rolling(mut self, on: bool) -> Self {
        self.version_rolling = on;
        self
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

    /// Reads the client's current upstream (`ClientBuilder::watch_upstream`) to report which
    /// one of the list each established connection reached. Without it the index is unknown
    /// (taken as 0, the primary, by the Sv1 side).
    pub fn watching_upstream(mut self, rx: watch::Receiver<Option<ActiveUpstream>>) -> Self {
        self.upstream = Some(rx);
        self
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
        // The attempt that made this connection published its upstream before connecting.
        let upstream = self.upstream.as_ref().and_then(|rx| {
            rx.borrow()
                .as_ref()
                .filter(|a| a.connection == ctx.id)
                .map(|a| a.index)
        });
        Action::ToSibling(SiblingMessage::Connection(ConnectionEvent::Established {
            ctx,
            upstream,
        }))
        .into()
    }

    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        self.negotiated = ExtensionSet::EMPTY;
        Action::ToSibling(SiblingMessage::Connection(ConnectionEvent::Closed {
            ctx,
            reason,
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
            _ => Actions::none(),
        }
    }

    async fn handle_mining_message(&mut self, _ctx: ConnectionContext, m: MiningOwned) -> Actions {
        Action::ToSibling(SiblingMessage::Sv2(Sv2Message::Mining(m))).into()
    }
}
