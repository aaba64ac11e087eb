//! Loopback tests of Sv2ServerService / Sv2ClientService over real TCP on 127.0.0.1 (port 0)
//! and over in-memory streams. Every wait has a deadline; no sleeps as synchronisation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum::codec::{AuthorityKeypair, HandshakeError};
use tower_stratum::handler::{
    NullSv2JobDeclarationClientHandler, NullSv2JobDeclarationServerHandler,
    NullSv2TemplateDistributionClientHandler, NullSv2TemplateDistributionServerHandler,
};
use tower_stratum::session::Timer;
use tower_stratum::stratum_core::parsers_sv2::CommonMessagesOwned;
use tower_stratum::{
    Backoff, ClientConfig, CloseReason, Endpoint, InboundMessage, Request, Response, ServerConfig,
    ServerTransport, Subprotocol, Sv2ClientService, Sv2Message, Sv2ServerService,
};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::recording::{
    Event, Events, MinimalMiningServer, RecordingMiningClient,
};
use tower_stratum_test_kit::within;

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn noise_config(keys: &AuthorityKeypair) -> ServerConfig {
    ServerConfig::with_transport(ServerTransport::noise(keys.clone()))
}

async fn next_event(rx: &mut mpsc::Receiver<Event>, what: &str) -> Event {
    within(10, what, rx.recv())
        .await
        .expect("event channel closed")
}

async fn wait_added(rx: &mut mpsc::Receiver<Event>) -> tower_stratum::ConnectionContext {
    loop {
        if let Event::Added(c) = next_event(rx, "connection added").await {
            return c;
        }
    }
}

async fn wait_removed(
    rx: &mut mpsc::Receiver<Event>,
) -> (tower_stratum::ConnectionContext, CloseReason) {
    loop {
        if let Event::Removed(c, r) = next_event(rx, "connection removed").await {
            return (c, r);
        }
    }
}

/// A raw Noise client completing SetupConnection for Mining.
async fn setup_peer(addr: std::net::SocketAddr, keys: &AuthorityKeypair) -> RawPeer<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut p = RawPeer::noise(tcp, Some(keys.public())).await.unwrap();
    p.send(msg::setup_connection(Subprotocol::Mining, 2, 2, 0))
        .await;
    match within(5, "SetupConnection.Success", p.recv()).await {
        Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(s))) => {
            assert_eq!(s.used_version, 2)
        }
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_setup_and_channel_open_reach_the_handler() {
    let keys = AuthorityKeypair::generate();
    let (events, mut rx) = Events::new(100);
    let (l, addr) = listener().await;
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    let mut p = setup_peer(addr, &keys).await;
    let ctx = wait_added(&mut rx).await;
    assert_eq!(ctx.protocol(), Subprotocol::Mining);
    p.send(msg::open_standard(42)).await;
    match within(5, "channel open reply", p.recv()).await {
        Some(m) => assert_eq!(m.name(), "OpenStandardMiningChannelSuccess"),
        None => panic!("closed"),
    }
    drop(p);
    let (c, reason) = wait_removed(&mut rx).await;
    assert_eq!(c.id, ctx.id);
    assert_eq!(reason, CloseReason::PeerClosed);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_handler_refuses_with_unsupported_protocol() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .serve(l);
    for p in Subprotocol::ALL {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut peer = RawPeer::noise(tcp, Some(keys.public())).await.unwrap();
        peer.send(msg::setup_connection(p, 2, 2, 0)).await;
        match within(5, "SetupConnection.Error", peer.recv()).await {
            Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionError(e))) => {
                assert_eq!(e.error_code.as_bytes(), b"unsupported-protocol");
                assert_eq!(e.flags, 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(within(5, "close after error", peer.recv()).await.is_none());
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rejects_wrong_authority_key() {
    let server_keys = AuthorityKeypair::generate();
    let other_keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (server_events, mut server_rx) = Events::new(100);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&server_keys))
        .mining(MinimalMiningServer::new(server_events))
        .serve(l);

    // Transport level: the handshake fails with a certificate error.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = RawPeer::noise(tcp, Some(other_keys.public()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::CertificateRejected(_)),
        "{err:?}"
    );

    // Service level: the client never establishes and, with reconnection off, stops.
    let (events, mut rx) = Events::new(100);
    let cfg = ClientConfig {
        reconnect: None,
        ..ClientConfig::default()
    }
    .endpoint(
        Subprotocol::Mining,
        Endpoint::noise(addr.to_string(), other_keys.public()),
    );
    let (_client, mut client_handle) = Sv2ClientService::builder()
        .config(cfg)
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    within(10, "client to give up", client_handle.finished()).await;
    assert!(
        rx.try_recv().is_err(),
        "no lifecycle event for a rejected server"
    );
    assert!(
        server_rx.try_recv().is_err(),
        "server never added the connection"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_noise_client_connects() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (server_events, mut server_rx) = Events::new(100);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(server_events))
        .serve(l);
    let (events, mut rx) = Events::new(100);
    let cfg = ClientConfig::default().endpoint(
        Subprotocol::Mining,
        Endpoint {
            address: addr.to_string(),
            transport: tower_stratum::ClientTransport::Noise { authority: None },
        },
    );
    let (_client, client_handle) = Sv2ClientService::builder()
        .config(cfg)
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    let ctx = wait_added(&mut rx).await;
    assert_eq!(ctx.info.version, 2);
    wait_added(&mut server_rx).await;
    client_handle.shutdown().await;
    wait_removed(&mut server_rx).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_does_not_delay_other_clients() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (events, mut rx) = Events::new(100);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    // Several peers connect and say nothing (and one sends half a handshake).
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    silent[0].write_all(&[0u8; 10]).await.unwrap();
    let start = tokio::time::Instant::now();
    let _p = setup_peer(addr, &keys).await;
    wait_added(&mut rx).await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "full setup took {took:?} behind silent peers"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_client_is_reaped_and_removed_once() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (events, mut rx) = Events::new(100);
    let mut cfg = noise_config(&keys);
    cfg.inactivity_timeout[Subprotocol::Mining] = Some(Duration::from_millis(300));
    let (mut svc, handle) = Sv2ServerService::builder()
        .config(cfg)
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    let mut p = setup_peer(addr, &keys).await;
    let ctx = wait_added(&mut rx).await;
    let (c, reason) = wait_removed(&mut rx).await;
    assert_eq!(c.id, ctx.id);
    assert_eq!(reason, CloseReason::TimedOut(Timer::Inactivity));
    assert!(within(5, "server closes the socket", p.recv())
        .await
        .is_none());
    // Its state is gone from the service, and no second removal comes.
    match svc
        .ready()
        .await
        .unwrap()
        .call(Request::ListConnections)
        .await
        .unwrap()
    {
        Response::Connections(v) => assert!(v.is_empty()),
        other => panic!("{other:?}"),
    }
    handle.shutdown().await;
    while let Some(e) = rx.recv().await {
        assert!(!matches!(e, Event::Removed(..)), "removed twice: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_with_backoff_after_server_restart() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(Events::new(100).0))
        .serve(l);
    let (events, mut rx) = Events::new(100);
    let cfg = ClientConfig {
        reconnect: Some(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            multiplier: 2.0,
            max_attempts: None,
        }),
        ..ClientConfig::default()
    }
    .endpoint(
        Subprotocol::Mining,
        Endpoint::noise(addr.to_string(), keys.public()),
    );
    let (_client, client_handle) = Sv2ClientService::builder()
        .config(cfg)
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    let first = wait_added(&mut rx).await;
    handle.shutdown().await;
    let (gone, _) = wait_removed(&mut rx).await;
    assert_eq!(gone.id, first.id);
    // Restart on the same address; the client comes back by itself.
    let l2 = TcpListener::bind(addr).await.unwrap();
    let (_svc2, handle2) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(Events::new(100).0))
        .serve(l2);
    let second = wait_added(&mut rx).await;
    assert_ne!(second.id, first.id);
    client_handle.shutdown().await;
    handle2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sibling_link_carries_messages_and_reports_one_close() {
    let keys = AuthorityKeypair::generate();
    // Upstream pool for the sibling client.
    let (pl, paddr) = listener().await;
    let (_pool, pool_handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(Events::new(100).0))
        .serve(pl);
    let (sevents, mut srx) = Events::new(100);
    let (l, _) = listener().await;
    let (mut server, server_handle, sibling) = Sv2ServerService::new_with_sibling_io(
        noise_config(&keys),
        l,
        MinimalMiningServer::new(sevents),
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    );
    let (cevents, mut crx) = Events::new(100);
    let (_client, client_handle) = Sv2ClientService::new_from_sibling_io(
        ClientConfig::default().endpoint(
            Subprotocol::Mining,
            Endpoint::noise(paddr.to_string(), keys.public()),
        ),
        RecordingMiningClient {
            events: cevents,
            flags: 0,
        },
        NullSv2JobDeclarationClientHandler,
        NullSv2TemplateDistributionClientHandler,
        sibling,
    );
    let ping = || tower_stratum::SiblingMessage::custom(String::from("ping"));
    let is = |e: &Event, text: &str| match e {
        Event::Sibling(m) => m.downcast_ref::<String>().map(String::as_str) == Some(text),
        _ => false,
    };
    // Server side -> client handler.
    server
        .ready()
        .await
        .unwrap()
        .call(Request::ToSibling(ping()))
        .await
        .unwrap();
    while !is(&next_event(&mut crx, "client sees ping").await, "ping") {}
    // Client side -> server handler, which answers "pong" -> client handler.
    let mut client = _client;
    client
        .ready()
        .await
        .unwrap()
        .call(Request::ToSibling(ping()))
        .await
        .unwrap();
    while !is(&next_event(&mut srx, "server sees ping").await, "ping") {}
    while !is(&next_event(&mut crx, "client sees pong").await, "pong") {}
    client_handle.shutdown().await;
    loop {
        if let Event::SiblingClosed = next_event(&mut srx, "server sees sibling closed").await {
            break;
        }
    }
    server_handle.shutdown().await;
    while let Some(e) = srx.recv().await {
        assert!(
            !matches!(e, Event::SiblingClosed),
            "sibling close reported twice"
        );
    }
    pool_handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_live_and_half_open_connections() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (events, mut rx) = Events::new(100);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    let mut live = setup_peer(addr, &keys).await;
    let ctx = wait_added(&mut rx).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[1u8; 20]).await.unwrap();
    within(5, "shutdown", handle.shutdown()).await;
    let (c, reason) = wait_removed(&mut rx).await;
    assert_eq!(c.id, ctx.id);
    assert_eq!(reason, CloseReason::Shutdown);
    assert!(within(5, "live connection closed", live.recv())
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_layer_sees_every_inbound_message() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let layer = tower::layer::layer_fn(move |inner: tower_stratum::HandlerService| {
        let counter = counter.clone();
        tower::service_fn(move |m: InboundMessage| {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut inner = inner.clone();
            async move { inner.ready().await?.call(m).await }
        })
    });
    let (_svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(Events::new(100).0))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .layer(layer)
        .serve(l);
    let mut p = setup_peer(addr, &keys).await;
    for i in 0..10 {
        p.send(msg::open_standard(i)).await;
        within(5, "reply", p.recv()).await.unwrap();
    }
    assert_eq!(seen.load(Ordering::SeqCst), 10);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_list_broadcast_and_disconnect() {
    let keys = AuthorityKeypair::generate();
    let (l, addr) = listener().await;
    let (events, mut rx) = Events::new(100);
    let (mut svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    let mut a = setup_peer(addr, &keys).await;
    let ca = wait_added(&mut rx).await;
    let mut b = setup_peer(addr, &keys).await;
    let cb = wait_added(&mut rx).await;
    match svc
        .ready()
        .await
        .unwrap()
        .call(Request::ListConnections)
        .await
        .unwrap()
    {
        Response::Connections(v) => {
            assert_eq!(
                v.iter().map(|c| c.id).collect::<Vec<_>>(),
                vec![ca.id, cb.id]
            )
        }
        other => panic!("{other:?}"),
    }
    svc.ready()
        .await
        .unwrap()
        .call(Request::Broadcast(
            Subprotocol::Mining,
            msg::new_mining_job(1),
        ))
        .await
        .unwrap();
    assert_eq!(
        within(5, "a job", a.recv()).await.unwrap().name(),
        "NewMiningJob"
    );
    assert_eq!(
        within(5, "b job", b.recv()).await.unwrap().name(),
        "NewMiningJob"
    );
    svc.ready()
        .await
        .unwrap()
        .call(Request::Disconnect(ca.id))
        .await
        .unwrap();
    assert!(within(5, "a closed", a.recv()).await.is_none());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::SendTo(
            tower_stratum::ConnectionId(999),
            msg::new_mining_job(1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        tower_stratum::ServiceError::UnknownConnection(tower_stratum::ConnectionId(999))
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_disconnected_without_stalling_others() {
    // Plaintext over in-memory pipes with tiny buffers: the slow client never reads.
    let (tx, listener) = tower_stratum::StreamListener::new(4);
    let (events, mut rx) = Events::new(1000);
    let mut cfg = ServerConfig::with_transport(ServerTransport::Plaintext);
    cfg.outbound_queue = 8;
    let (mut svc, handle) = Sv2ServerService::builder()
        .config(cfg)
        .mining(MinimalMiningServer::new(events))
        .serve(listener);
    let mut peers = Vec::new();
    for _ in 0..2 {
        let (client, server) = tokio::io::duplex(256);
        tx.send(server).await.unwrap();
        let mut p = RawPeer::plaintext(client);
        p.send(msg::setup_connection(Subprotocol::Mining, 2, 2, 0))
            .await;
        within(5, "setup success", p.recv()).await.unwrap();
        peers.push((p, wait_added(&mut rx).await));
    }
    let (mut fast, _) = peers.pop().unwrap();
    let (_slow, slow_ctx) = peers.pop().unwrap();
    let mut received = 0;
    for _ in 0..200 {
        svc.ready()
            .await
            .unwrap()
            .call(Request::Broadcast(
                Subprotocol::Mining,
                msg::new_mining_job(1),
            ))
            .await
            .unwrap();
        within(5, "fast client keeps receiving", fast.recv())
            .await
            .unwrap();
        received += 1;
    }
    assert_eq!(received, 200);
    let (c, reason) = wait_removed(&mut rx).await;
    assert_eq!(c.id, slow_ctx.id);
    assert_eq!(reason, CloseReason::SlowConsumer);
    handle.shutdown().await;
}

/// A mining server that tells every client to reconnect to `port` (spec 3.6.5 Reconnect).
struct Redirect {
    port: u16,
}

impl tower_stratum::handler::Sv2MiningServerHandler for Redirect {
    async fn on_connection_added(
        &mut self,
        _ctx: tower_stratum::ConnectionContext,
    ) -> tower_stratum::Actions {
        tower_stratum::Actions::reply(msg::reconnect("127.0.0.1", self.port))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_reconnect_with_the_same_authority_key() {
    let keys = AuthorityKeypair::generate();
    let (lb, addr_b) = listener().await;
    let (events_b, mut rx_b) = Events::new(100);
    let (_b, handle_b) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(events_b))
        .serve(lb);
    let (la, addr_a) = listener().await;
    let (_a, handle_a) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(Redirect {
            port: addr_b.port(),
        })
        .serve(la);
    let (events, mut rx) = Events::new(100);
    let (_client, client_handle) = Sv2ClientService::builder()
        .config(ClientConfig::default().endpoint(
            Subprotocol::Mining,
            Endpoint::noise(addr_a.to_string(), keys.public()),
        ))
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    let first = wait_added(&mut rx).await;
    assert_eq!(first.peer, Some(addr_a));
    let (_, reason) = wait_removed(&mut rx).await;
    assert_eq!(
        reason,
        CloseReason::Reconnect {
            host: "127.0.0.1".into(),
            port: addr_b.port()
        }
    );
    let second = wait_added(&mut rx).await;
    assert_eq!(second.peer, Some(addr_b));
    wait_added(&mut rx_b).await;
    client_handle.shutdown().await;
    handle_a.shutdown().await;
    handle_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_tcp_when_explicitly_chosen() {
    let (l, addr) = listener().await;
    let (server_events, mut server_rx) = Events::new(100);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::Plaintext))
        .mining(MinimalMiningServer::new(server_events))
        .serve(l);
    let (events, mut rx) = Events::new(100);
    let (_client, client_handle) = Sv2ClientService::builder()
        .config(
            ClientConfig::default()
                .endpoint(Subprotocol::Mining, Endpoint::plaintext(addr.to_string())),
        )
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    wait_added(&mut rx).await;
    wait_added(&mut server_rx).await;
    // A Noise client cannot talk to a plaintext server: its handshake fails.
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        within(15, "noise against plaintext", RawPeer::noise(tcp, None))
            .await
            .is_err()
    );
    client_handle.shutdown().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_handlers_request_reaches_the_services_own_handlers() {
    let keys = AuthorityKeypair::generate();
    let (l, _) = listener().await;
    let (events, mut rx) = Events::new(100);
    let (mut svc, handle) = Sv2ServerService::builder()
        .config(noise_config(&keys))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    svc.ready()
        .await
        .unwrap()
        .call(Request::ToHandlers(tower_stratum::SiblingMessage::custom(
            String::from("tick"),
        )))
        .await
        .unwrap();
    match next_event(&mut rx, "handler sees the app message").await {
        Event::Sibling(m) => {
            assert_eq!(m.downcast_ref::<String>().map(String::as_str), Some("tick"))
        }
        other => panic!("{other:?}"),
    }
    handle.shutdown().await;
}
