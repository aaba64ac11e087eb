//! The client service reports why an upstream cannot be reached: a refused TCP connect and a
//! refused SetupConnection are each logged once at WARN with the address and the reason while
//! the attempts go on (rate-limited, `ClientHandle::FAILURE_LOG_INTERVAL`), and published on
//! `ClientHandle::watch_failures`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
use tower_stratum_core::{CloseReason, Subprotocol};
use tower_stratum_service::{
    Backoff, ClientConfig, Endpoint, ServerConfig, ServerTransport, Sv2ClientService,
    Sv2ServerService,
};
use tower_stratum_test_kit::recording::{Events, RecordingMiningClient};
use tower_stratum_test_kit::{logs, within};

/// Fast retries, so a test sees many attempts in a few seconds.
fn fast_retries() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(50),
        ..Backoff::default()
    }
}

/// Waits until the failure watch has seen `n` more changes; returns the last reason.
async fn failures(
    rx: &mut tokio::sync::watch::Receiver<Option<CloseReason>>,
    n: usize,
) -> CloseReason {
    within(30, "failed attempts", async {
        for _ in 0..n {
            rx.changed().await.unwrap();
        }
    })
    .await;
    rx.borrow().clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_setup_is_logged_once_with_the_reason_while_retrying() {
    logs::capture();
    // A server with no Mining handler: SetupConnection(Mining) gets `unsupported-protocol`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (_svc, server) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::Plaintext))
        .serve(listener);
    let (events, _rx) = Events::new(100);
    let cfg = ClientConfig {
        reconnect: Some(fast_retries()),
        ..ClientConfig::default()
    }
    .endpoint(Subprotocol::Mining, Endpoint::plaintext(addr.clone()));
    let (_client, handle) = Sv2ClientService::builder()
        .config(cfg)
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    let mut watch = handle.watch_failures();
    let reason = failures(&mut watch, 5).await;
    assert!(
        matches!(&reason, CloseReason::SetupRejected { error_code, .. } if error_code == "unsupported-protocol"),
        "{reason:?}"
    );
    let needle = format!("address={addr}");
    assert_eq!(
        logs::count(&needle),
        1,
        "one line for five or more attempts"
    );
    assert_eq!(
        logs::count(&format!(
            "cannot reach the upstream; retrying address={addr} attempts=1 reason=setup rejected: unsupported-protocol"
        )),
        1,
        "the line gives the reason"
    );
    handle.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_logged_once_at_warn() {
    logs::capture();
    // A port nobody listens on (bound, then released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (events, _rx) = Events::new(100);
    let cfg = ClientConfig {
        reconnect: Some(fast_retries()),
        ..ClientConfig::default()
    }
    .endpoint(Subprotocol::Mining, Endpoint::plaintext(addr.clone()));
    let (_client, handle) = Sv2ClientService::builder()
        .config(cfg)
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    let mut watch = handle.watch_failures();
    let reason = failures(&mut watch, 5).await;
    assert!(matches!(reason, CloseReason::Io(_)), "{reason:?}");
    let needle = format!("address={addr}");
    assert_eq!(
        logs::count(&needle),
        1,
        "one line for five or more attempts"
    );
    assert_eq!(
        logs::count(&format!(
            "cannot reach the upstream; retrying address={addr} attempts=1 reason=io error: Connection refused"
        )),
        1,
        "the line gives the reason"
    );
    handle.shutdown().await;
}
