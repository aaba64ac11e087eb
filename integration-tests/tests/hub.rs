//! The hub never waits for its sibling: with the sibling's queue full (a template source that
//! is busy or stalled when a block is found), other connections are still answered at once, and
//! what was queued for the sibling reaches it, in order, once it reads again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tower_stratum::codec::AuthorityKeypair;
use tower_stratum::handler::{
    NullSv2JobDeclarationServerHandler, NullSv2TemplateDistributionServerHandler,
    Sv2MiningServerHandler,
};
use tower_stratum::stratum_core::mining_sv2::OpenStandardMiningChannelOwned;
use tower_stratum::stratum_core::parsers_sv2::CommonMessagesOwned;
use tower_stratum::{
    Action, Actions, ConnectionContext, ServerConfig, ServerTransport, SetupSupport,
    SiblingMessage, Subprotocol, Sv2Message, Sv2ServerService,
};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::recording::{Events, MinimalMiningServer};
use tower_stratum_test_kit::within;

/// Answers channel opens like [`MinimalMiningServer`] and, for each, also sends the request id
/// to its sibling (as a mining server sends a found block's `SubmitSolution`).
struct ForwardsToSibling(MinimalMiningServer);

impl Sv2MiningServerHandler for ForwardsToSibling {
    fn setup_support(&self) -> Option<SetupSupport> {
        self.0.setup_support()
    }

    async fn handle_open_standard_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenStandardMiningChannelOwned,
    ) -> Actions {
        let id = msg.request_id;
        let mut actions = self.0.handle_open_standard_mining_channel(ctx, msg).await;
        actions.push(Action::ToSibling(SiblingMessage::custom(id)));
        actions
    }
}

async fn peer(addr: std::net::SocketAddr, keys: &AuthorityKeypair) -> RawPeer<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut p = RawPeer::noise(tcp, Some(keys.public())).await.unwrap();
    p.send(msg::setup_connection(Subprotocol::Mining, 2, 2, 0))
        .await;
    match within(5, "SetupConnection.Success", p.recv()).await {
        Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))) => p,
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sibling_does_not_stall_other_connections() {
    let keys = AuthorityKeypair::generate();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = ServerConfig::with_transport(ServerTransport::noise(keys.clone()));
    cfg.sibling_queue = 1;
    let (_svc, handle, sibling) = Sv2ServerService::new_with_sibling_io(
        cfg,
        l,
        ForwardsToSibling(MinimalMiningServer::new(Events::new(1000).0)),
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    );
    // The sibling reads nothing for now: its one-message queue fills at the first message.
    let (_to_server, mut from_server) = sibling.into_channels();

    let mut a = peer(addr, &keys).await;
    for i in 0..50 {
        a.send(msg::open_standard(i)).await;
        assert!(within(5, "reply to A", a.recv()).await.is_some());
    }
    // Another connection is answered at once (before, the hub waited up to 5 s per message for
    // room in the sibling's queue).
    let mut b = peer(addr, &keys).await;
    let sent = Instant::now();
    b.send(msg::open_standard(1000)).await;
    assert!(within(5, "reply to B", b.recv()).await.is_some());
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_millis(500),
        "B waited {waited:?} behind the stalled sibling"
    );
    // The sibling reads again: everything queued for it arrives, in order, nothing lost.
    for want in (0..50u32).chain([1000]) {
        let m = within(5, "message for the sibling", from_server.recv())
            .await
            .unwrap();
        assert_eq!(m.downcast_ref::<u32>(), Some(&want));
    }
    handle.shutdown().await;
}

/// Asks for a wake-up every second and records the times it is called with.
struct Ticker {
    next: Option<std::time::Instant>,
    calls: tokio::sync::mpsc::UnboundedSender<std::time::Instant>,
    left: u32,
}

impl Sv2MiningServerHandler for Ticker {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: 0,
            success_flags: 0,
        })
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.next
    }

    async fn on_timer(&mut self, now: std::time::Instant) -> Actions {
        let _ = self.calls.send(now);
        self.left -= 1;
        self.next = (self.left > 0).then(|| now + Duration::from_secs(1));
        Actions::none()
    }
}

#[tokio::test(start_paused = true)]
async fn handler_timers_fire_at_the_deadlines_they_ask_for_on_the_runtime_clock() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t0 = tokio::time::Instant::now().into_std();
    let (calls, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::Plaintext))
        .mining(Ticker {
            next: Some(t0 + Duration::from_secs(10)),
            calls,
            left: 3,
        })
        .serve(l);
    // Virtual time: exactly the deadlines asked for, then nothing more.
    for want in [10, 11, 12] {
        let at = rx.recv().await.unwrap();
        assert_eq!(at - t0, Duration::from_secs(want));
    }
    handle.shutdown().await;
    assert!(rx.recv().await.is_none(), "called after its last deadline");
}
