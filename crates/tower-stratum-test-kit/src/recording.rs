//! Handlers that report what they see on a bounded channel, and a minimal mining server.

use tokio::sync::mpsc;
use tower_stratum_core::handler::{
    Sv2MiningClientHandler, Sv2MiningServerHandler, Sv2TemplateDistributionClientHandler,
};
use tower_stratum_core::session::{REQUIRES_STANDARD_JOBS, REQUIRES_VERSION_ROLLING};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, U256Owned};
use tower_stratum_core::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{
    Action, Actions, CloseReason, ConnectionContext, SetupSupport, SiblingMessage, Sv2Message,
};

/// What a recording handler saw.
#[derive(Debug, Clone)]
pub enum Event {
    Added(ConnectionContext),
    Removed(ConnectionContext, CloseReason),
    Message(ConnectionContext, &'static str),
    Sibling(SiblingMessage),
    SiblingClosed,
}

/// A bounded event sink (tests read it with deadlines). Events beyond the capacity are
/// dropped, which a test notices as a missing event.
#[derive(Debug, Clone)]
pub struct Events(pub mpsc::Sender<Event>);

impl Events {
    pub fn new(cap: usize) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(cap);
        (Self(tx), rx)
    }
    pub fn emit(&self, e: Event) {
        let _ = self.0.try_send(e);
    }
}

/// A minimal Mining server: accepts standard and extended channels (channel ids from 1, a
/// fixed easy target, a 4-byte extranonce prefix per channel), records everything, and
/// forwards sibling messages it receives to the events.
#[derive(Debug)]
pub struct MinimalMiningServer {
    pub events: Events,
    pub next_channel: u32,
    pub supported_flags: u32,
}

impl MinimalMiningServer {
    pub fn new(events: Events) -> Self {
        Self {
            events,
            next_channel: 1,
            supported_flags: REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING,
        }
    }

    fn channel(&mut self) -> u32 {
        let c = self.next_channel;
        self.next_channel += 1;
        c
    }
}

fn easy_target() -> U256Owned {
    let mut t = [0xffu8; 32];
    t[31] = 0x00;
    U256Owned::from(t)
}

impl Sv2MiningServerHandler for MinimalMiningServer {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: self.supported_flags,
            success_flags: 0,
        })
    }

    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        self.events.emit(Event::Added(ctx));
        Actions::none()
    }

    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        self.events.emit(Event::Removed(ctx, reason));
        Actions::none()
    }

    async fn handle_open_standard_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenStandardMiningChannelOwned,
    ) -> Actions {
        self.events
            .emit(Event::Message(ctx, "OpenStandardMiningChannel"));
        let channel_id = self.channel();
        Actions::reply(Sv2Message::Mining(
            MiningOwned::OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccessOwned {
                request_id: msg.request_id,
                channel_id,
                target: easy_target(),
                extranonce_prefix: B032Owned::try_from(channel_id.to_le_bytes().to_vec()).unwrap(),
                group_channel_id: 0,
            }),
        ))
    }

    async fn handle_open_extended_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenExtendedMiningChannelOwned,
    ) -> Actions {
        self.events
            .emit(Event::Message(ctx, "OpenExtendedMiningChannel"));
        let channel_id = self.channel();
        Actions::reply(Sv2Message::Mining(
            MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
                request_id: msg.request_id,
                channel_id,
                target: easy_target(),
                extranonce_size: msg.min_extranonce_size.max(4),
                extranonce_prefix: B032Owned::try_from(channel_id.to_le_bytes().to_vec()).unwrap(),
                group_channel_id: 0,
            }),
        ))
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        self.events.emit(Event::Sibling(msg.clone()));
        // Echo custom strings back so a test can see both directions.
        if let Some(s) = msg.downcast_ref::<String>() {
            if s == "ping" {
                return Action::ToSibling(SiblingMessage::custom(String::from("pong"))).into();
            }
        }
        Actions::none()
    }

    async fn handle_sibling_closed(&mut self) -> Actions {
        self.events.emit(Event::SiblingClosed);
        Actions::none()
    }
}

/// A Mining client that records lifecycle and messages.
#[derive(Debug)]
pub struct RecordingMiningClient {
    pub events: Events,
    pub flags: u32,
}

impl Sv2MiningClientHandler for RecordingMiningClient {
    fn setup_connection_flags(&self) -> Option<u32> {
        Some(self.flags)
    }
    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        self.events.emit(Event::Added(ctx));
        Actions::none()
    }
    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        self.events.emit(Event::Removed(ctx, reason));
        Actions::none()
    }
    async fn handle_open_standard_mining_channel_success(
        &mut self,
        ctx: ConnectionContext,
        _msg: OpenStandardMiningChannelSuccessOwned,
    ) -> Actions {
        self.events
            .emit(Event::Message(ctx, "OpenStandardMiningChannelSuccess"));
        Actions::none()
    }
    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        self.events.emit(Event::Sibling(msg));
        Actions::none()
    }
    async fn handle_sibling_closed(&mut self) -> Actions {
        self.events.emit(Event::SiblingClosed);
        Actions::none()
    }
}

/// A Template Distribution client that records lifecycle and templates.
#[derive(Debug)]
pub struct RecordingTdClient {
    pub events: Events,
}

impl Sv2TemplateDistributionClientHandler for RecordingTdClient {
    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        self.events.emit(Event::Added(ctx));
        Actions::none()
    }
    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        self.events.emit(Event::Removed(ctx, reason));
        Actions::none()
    }
    async fn handle_new_template(
        &mut self,
        ctx: ConnectionContext,
        _msg: tower_stratum_core::stratum_core::template_distribution_sv2::NewTemplateOwned,
    ) -> Actions {
        self.events.emit(Event::Message(ctx, "NewTemplate"));
        Actions::none()
    }
    async fn handle_set_new_prev_hash(
        &mut self,
        ctx: ConnectionContext,
        _msg: tower_stratum_core::stratum_core::template_distribution_sv2::SetNewPrevHashOwned,
    ) -> Actions {
        self.events.emit(Event::Message(ctx, "SetNewPrevHash"));
        Actions::none()
    }
}
