//! Sv1 over TLS (`tower-stratum-service`'s `tls` feature, `sv1::tls`, rustls): a TLS client gets
//! served; the handshake runs in each connection's task, so a silent peer delays nobody and the
//! setup deadline closes it; a plaintext peer and a client expecting another server name fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
use tokio::io::AsyncReadExt;
use tower_stratum::sv1_service::tls::{client_config, server_config, TlsListener};
use tower_stratum::sv1_service::{
    Sv1Action, Sv1Actions, Sv1ClientConfig, Sv1ClientService, Sv1ConnectionContext,
    Sv1ServerConfig, Sv1ServerHandler, Sv1ServerService, Sv1SessionConfig,
};
use tower_stratum_sv1::{
    Authorize, ClientMessage, Id, Response, ServerMessage, Subscribe, SubscribeResult,
};
use tower_stratum_test_kit::sv1::Sv1LinePeer;
use tower_stratum_test_kit::within;

struct Pool;

impl Sv1ServerHandler for Pool {
    async fn handle_subscribe(
        &mut self,
        _: Sv1ConnectionContext,
        id: Id,
        _: Subscribe,
    ) -> Sv1Actions {
        let r = SubscribeResult {
            subscriptions: vec![],
            extranonce1: vec![1, 2, 3, 4],
            extranonce2_size: 4,
        };
        Sv1Actions::reply(Response::ok(id, r.to_value()))
    }

    async fn handle_authorize(
        &mut self,
        _: Sv1ConnectionContext,
        id: Id,
        _: Authorize,
    ) -> Sv1Actions {
        Sv1Actions::reply(Response::ok(id, true))
            .and(Sv1Action::Reply(ServerMessage::SetDifficulty(2.0)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_over_tls_and_silent_or_plaintext_peers_delay_nobody() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = server_config(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = Sv1ServerConfig {
        session: Sv1SessionConfig {
            setup_timeout: Some(Duration::from_secs(2)),
            ..Sv1SessionConfig::default()
        },
        ..Sv1ServerConfig::default()
    };
    let (_svc, handle) = Sv1ServerService::builder()
        .config(cfg)
        .handler(Pool)
        .serve(TlsListener::new(listener, tls));

    // A peer that connects and says nothing (no TLS ClientHello).
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A plaintext Sv1 miner: its line is not a TLS record, the handshake fails, it is closed.
    let mut plain = Sv1LinePeer::connect(addr).await;
    plain
        .send(r#"{"id":1,"method":"mining.subscribe","params":[]}"#)
        .await;
    plain.expect_closed(5).await;

    // A TLS client is served meanwhile.
    let roots = client_config([ck.cert.der().clone()]).unwrap();
    let (mut c, mut notes, h) = within(
        5,
        "the TLS connection",
        Sv1ClientService::connect_tls(
            &addr.to_string(),
            "localhost",
            roots.clone(),
            Sv1ClientConfig::default(),
        ),
    )
    .await
    .unwrap();
    let r = c
        .request(ClientMessage::Subscribe(Id::Null, Subscribe::default()))
        .await
        .unwrap();
    assert_eq!(
        SubscribeResult::from_result(&r.result).unwrap().extranonce1,
        [1, 2, 3, 4]
    );
    let r = c
        .request(ClientMessage::Authorize(
            Id::Null,
            Authorize {
                username: "w".into(),
                password: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.bool_result(), Ok(true));
    assert_eq!(notes.recv().await, Some(ServerMessage::SetDifficulty(2.0)));

    // The silent peer is closed by the setup deadline.
    let mut buf = [0u8; 16];
    let n = within(10, "the silent peer to be closed", silent.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);

    // A client that expects another name refuses the certificate.
    let wrong = Sv1ClientService::connect_tls(
        &addr.to_string(),
        "pool.example",
        roots,
        Sv1ClientConfig::default(),
    )
    .await;
    assert!(wrong.is_err());

    let _ = h.shutdown().await;
    handle.shutdown().await;
}
