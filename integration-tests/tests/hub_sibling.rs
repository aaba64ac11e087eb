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
