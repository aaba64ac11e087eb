//! Interop with real, pinned SRI peers (installed by `scripts/install-peers`): SRI's
//! `mining_device` and `translator_sv2` against our `Sv2ServerService`, and our
//! `Sv2ClientService` against SRI's `pool_sv2` fed by SRI's scripted Template Provider.
//!
//! All over Noise with SRI's public test authority key, on 127.0.0.1. Peers are killed when
//! their handle drops. Peer configs need concrete ports, taken from `free_port()`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_stratum::codec::{
    AuthorityKeypair, AuthorityPublicKey, SRI_TEST_AUTHORITY_PUBLIC_KEY,
    SRI_TEST_AUTHORITY_SECRET_KEY,
};
use tower_stratum::session::REQUIRES_VERSION_ROLLING;
use tower_stratum::{
    ClientConfig, Endpoint, ServerConfig, ServerHandle, ServerTransport, Subprotocol,
    Sv2ClientService, Sv2ServerService,
};
use tower_stratum_test_kit::process::{free_port, peer_bin, render_config, PeerProcess};
use tower_stratum_test_kit::recording::{
    Event, Events, MinimalMiningServer, RecordingMiningClient,
};
use tower_stratum_test_kit::{logs, within};

/// Null-handler tests assert on our log; run them one at a time so counts are theirs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sri_keys() -> AuthorityKeypair {
    AuthorityKeypair::from_secret(SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap())
}

fn sri_public() -> AuthorityPublicKey {
    SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap()
}

async fn serve_minimal() -> (ServerHandle, SocketAddr, mpsc::Receiver<Event>) {
    let (events, rx) = Events::new(1000);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(
            sri_keys(),
        )))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    (handle, addr, rx)
}

async fn serve_null() -> (ServerHandle, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(
            sri_keys(),
        )))
        .serve(l);
    (handle, addr)
}

fn mining_device(addr: SocketAddr) -> PeerProcess {
    PeerProcess::spawn(
        &peer_bin("mining_device"),
        &[
            "--address-pool",
            &addr.to_string(),
            "--pubkey-pool",
            SRI_TEST_AUTHORITY_PUBLIC_KEY,
            "--id-device",
            "interop",
            "--id-user",
            "interop",
            "--cores",
            "1",
            // Slow the hasher down: this test is about the protocol, not hashrate.
            "--handicap",
            "1000",
        ],
    )
}

fn translator(upstream: SocketAddr, aggregated: bool) -> PeerProcess {
    let cfg = render_config(
        if aggregated {
            "translator-aggregated.toml"
        } else {
            "translator-per-miner.toml"
        },
        &[
            ("DOWNSTREAM_HOST", "127.0.0.1".into()),
            ("DOWNSTREAM_PORT", free_port().to_string()),
            ("UPSTREAM_HOST", upstream.ip().to_string()),
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("MIN_HASHRATE", "1_000_000.0".into()),
        ],
    );
    let mut translator =
        PeerProcess::spawn(&peer_bin("translator_sv2"), &["-c", cfg.to_str().unwrap()]);
    translator.keep(cfg);
    translator
}

async fn wait_event(
    rx: &mut mpsc::Receiver<Event>,
    what: &str,
    f: impl Fn(&Event) -> bool,
) -> Event {
    loop {
        let e = within(60, what, rx.recv()).await.expect("events closed");
        if f(&e) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_mining_device_sets_up_and_opens_a_standard_channel() {
    let (handle, addr, mut rx) = serve_minimal().await;
    let mut dev = mining_device(addr);
    let added = wait_event(&mut rx, "mining_device connection added", |e| {
        matches!(e, Event::Added(_))
    })
    .await;
    let Event::Added(ctx) = added else {
        unreachable!()
    };
    assert_eq!(ctx.protocol(), Subprotocol::Mining);
    assert_eq!(ctx.info.version, 2);
    dev.wait_for("Received `SetupConnectionSuccess`", 30).await;
    wait_event(
        &mut rx,
        "OpenStandardMiningChannel from mining_device",
        |e| matches!(e, Event::Message(_, "OpenStandardMiningChannel")),
    )
    .await;
    dev.wait_for("channel opened", 30).await;
    drop(dev);
    wait_event(&mut rx, "mining_device removed", |e| {
        matches!(e, Event::Removed(..))
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_mining_device_is_refused_by_the_null_handler() {
    let _serial = SERIAL.lock().await;
    logs::capture();
    let before = logs::count("setup rejected: unsupported-protocol");
    let (handle, addr) = serve_null().await;
    let mut dev = mining_device(addr);
    dev.wait_for("Setup connection sent", 30).await;
    logs::wait_for("setup rejected: unsupported-protocol", before, 30).await;
    assert!(
        !dev.log.iter().any(|l| l.contains("SetupConnectionSuccess")),
        "mining_device must not see a SetupConnection.Success"
    );
    handle.shutdown().await;
}

async fn translator_sets_up(aggregated: bool) {
    let (handle, addr, mut rx) = serve_minimal().await;
    let _tproxy = translator(addr, aggregated);
    let Event::Added(ctx) = wait_event(&mut rx, "translator connection added", |e| {
        matches!(e, Event::Added(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(ctx.protocol(), Subprotocol::Mining);
    assert_eq!(
        ctx.info.flags & REQUIRES_VERSION_ROLLING,
        REQUIRES_VERSION_ROLLING
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_translator_aggregated_sets_up() {
    translator_sets_up(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_translator_per_miner_sets_up() {
    translator_sets_up(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_translator_is_refused_by_the_null_handler() {
    let _serial = SERIAL.lock().await;
    logs::capture();
    let before = logs::count("setup rejected: unsupported-protocol");
    let (handle, addr) = serve_null().await;
    let _tproxy = translator(addr, true);
    logs::wait_for("setup rejected: unsupported-protocol", before, 60).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_sets_up_with_sri_pool() {
    // SRI's scripted Template Provider, then SRI's pool fed by it.
    let mut tp = PeerProcess::spawn(&peer_bin("sri-harness"), &["tp", "--listen", "127.0.0.1:0"]);
    let line = tp.wait_for("LISTENING ", 60).await;
    let tp_addr = line.split_whitespace().last().unwrap().to_string();
    let pool_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = render_config(
        "pool.toml",
        &[("LISTEN_ADDR", pool_addr.to_string()), ("TP_ADDR", tp_addr)],
    );
    let mut pool = PeerProcess::spawn(&peer_bin("pool_sv2"), &["-c", cfg.to_str().unwrap()]);
    pool.keep(cfg);
    // The pool accepts miners only after its first template + prev hash (docs/INTEROP.md).
    pool.wait_for("ready to accept connections", 120).await;
    let (events, mut rx) = Events::new(100);
    let (_client, handle) = Sv2ClientService::builder()
        .config(ClientConfig::default().endpoint(
            Subprotocol::Mining,
            Endpoint::noise(pool_addr.to_string(), sri_public()),
        ))
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    let Event::Added(ctx) = wait_event(&mut rx, "SRI pool accepts our client", |e| {
        matches!(e, Event::Added(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(ctx.info.version, 2);
    handle.shutdown().await;
}
