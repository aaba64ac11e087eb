//! The client's list of upstreams over loopback, against our own `Sv2ServerService`: fail-over
//! to the next upstream after `failover_attempts` failed attempts, fail-back to the primary
//! when a probe connects (the backup connection closed), the handlers seeing the old
//! connection removed and the new one added, a single upstream retried, rotation wrapping
//! around, and `ClientHandle::watch_upstream` telling which upstream is in use.
//!
//! "Down" upstreams are addresses taken from a listener bound to port 0 and dropped (so they
//! refuse); "coming back" is a server started later on that same address. Waits are on events
//! with deadlines; retries are fast (tens of milliseconds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tower_stratum_core::{CloseReason, ConnectionId, Subprotocol};
use tower_stratum_service::{
    ActiveUpstream, Backoff, ClientConfig, ClientHandle, Endpoint, ServerConfig, ServerHandle,
    ServerTransport, Sv2ClientService, Sv2ServerService, SwitchReason,
};
use tower_stratum_test_kit::recording::{
    Event, Events, MinimalMiningServer, RecordingMiningClient,
};
use tower_stratum_test_kit::{logs, within};

/// Fast retries, so a test sees many attempts in a few seconds.
fn fast_retries() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(30),
        ..Backoff::default()
    }
}

/// An address nothing listens on (refuses connections): a port-0 listener's, dropped.
async fn down_address() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A plaintext Mining server on `addr` (port 0 for a fresh one); its events and address.
async fn server(addr: SocketAddr) -> (ServerHandle, mpsc::Receiver<Event>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events, rx) = Events::new(100);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::Plaintext))
        .mining(MinimalMiningServer::new(events))
        .serve(listener);
    (handle, rx, addr)
}

/// A Mining client on `upstreams` with fast retries; its handle and handler events.
fn client(upstreams: &[SocketAddr], cfg: ClientConfig) -> (ClientHandle, mpsc::Receiver<Event>) {
    let cfg = ClientConfig {
        reconnect: Some(fast_retries()),
        ..cfg
    }
    .upstreams(
        Subprotocol::Mining,
        upstreams
            .iter()
            .map(|a| Endpoint::plaintext(a.to_string()))
            .collect(),
    );
    let (events, rx) = Events::new(100);
    let (_svc, handle) = Sv2ClientService::builder()
        .config(cfg)
        .mining(RecordingMiningClient { events, flags: 0 })
        .start();
    (handle, rx)
}

/// The next lifecycle event (Added/Removed) of a handler, skipping messages.
async fn next_lifecycle(rx: &mut mpsc::Receiver<Event>, what: &str) -> Event {
    within(20, what, async {
        loop {
            let e = rx.recv().await.expect("events closed");
            if matches!(e, Event::Added(_) | Event::Removed(..)) {
                return e;
            }
        }
    })
    .await
}

async fn added(
    rx: &mut mpsc::Receiver<Event>,
    what: &str,
) -> tower_stratum_core::ConnectionContext {
    match next_lifecycle(rx, what).await {
        Event::Added(ctx) => ctx,
        e => panic!("{what}: expected Added, got {e:?}"),
    }
}

async fn removed(
    rx: &mut mpsc::Receiver<Event>,
    what: &str,
) -> (tower_stratum_core::ConnectionContext, CloseReason) {
    match next_lifecycle(rx, what).await {
        Event::Removed(ctx, reason) => (ctx, reason),
        e => panic!("{what}: expected Removed, got {e:?}"),
    }
}

/// Waits until the watched upstream satisfies `f`; returns it.
async fn upstream_where(
    rx: &mut watch::Receiver<Option<ActiveUpstream>>,
    what: &str,
    f: impl Fn(&ActiveUpstream) -> bool,
) -> ActiveUpstream {
    within(20, what, rx.wait_for(|a| a.as_ref().is_some_and(&f)))
        .await
        .unwrap()
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_backup_after_n_failed_attempts_on_the_primary() {
    logs::capture();
    let primary = down_address().await;
    let (backup_server, mut backup_events, backup) = server("127.0.0.1:0".parse().unwrap()).await;
    let cfg = ClientConfig {
        failover_attempts: 4,
        failback_interval: None,
        ..ClientConfig::default()
    };
    let (handle, mut rx) = client(&[primary, backup], cfg);
    let ctx = added(&mut rx, "the connection to the backup").await;
    assert_eq!(ctx.peer, Some(backup));
    // Connection ids are one per attempt, from 1: attempts 1..=4 went to the primary.
    assert_eq!(
        ctx.id,
        ConnectionId(5),
        "exactly 4 attempts on the primary first"
    );
    let active = handle
        .watch_upstream(Subprotocol::Mining)
        .borrow()
        .clone()
        .unwrap();
    assert_eq!(
        active,
        ActiveUpstream {
            protocol: Subprotocol::Mining,
            index: 1,
            address: backup.to_string(),
            connection: ctx.id,
            reason: SwitchReason::FailOver,
        }
    );
    assert!(matches!(backup_events.recv().await, Some(Event::Added(_))));
    assert_eq!(
        logs::count(&format!(
            "switching upstream: the previous one failed index=1 of=2 address={backup} reason=fail-over from=0 failover_attempts=4 last_failure=io error: "
        )),
        1,
        "the switch is logged at INFO"
    );
    // The failure log still says why the primary could not be reached.
    assert!(
        logs::count(&format!(
            "cannot reach the upstream; retrying address={primary}"
        )) >= 1
    );
    assert!(matches!(
        handle.watch_failures().borrow().as_ref(),
        Some(CloseReason::Io(_))
    ));
    assert!(handle
        .watch_upstream(Subprotocol::JobDeclaration)
        .borrow()
        .is_none());
    handle.shutdown().await;
    backup_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_back_to_the_primary_when_it_comes_back_closing_the_backup_connection() {
    logs::capture();
    let primary = down_address().await;
    let (backup_server, mut backup_events, backup) = server("127.0.0.1:0".parse().unwrap()).await;
    let cfg = ClientConfig {
        failover_attempts: 1,
        failback_interval: Some(Duration::from_millis(100)),
        ..ClientConfig::default()
    };
    let (handle, mut rx) = client(&[primary, backup], cfg);
    let mut watch = handle.watch_upstream(Subprotocol::Mining);
    let on_backup = added(&mut rx, "the connection to the backup").await;
    assert_eq!(on_backup.peer, Some(backup));
    assert!(matches!(backup_events.recv().await, Some(Event::Added(_))));

    // The primary comes back on its address: the next probe connects.
    let (primary_server, mut primary_events, _) = server(primary).await;
    // The handler sees the backup connection removed (closed by us), then the primary added.
    let (gone, reason) = removed(&mut rx, "the backup connection closed for fail-back").await;
    assert_eq!(gone.id, on_backup.id);
    assert_eq!(gone.peer, Some(backup));
    assert_eq!(reason, CloseReason::Shutdown);
    let on_primary = added(&mut rx, "the connection to the primary").await;
    assert_eq!(on_primary.peer, Some(primary));
    let active = upstream_where(&mut watch, "on the primary", |a| a.index == 0).await;
    assert_eq!(active.reason, SwitchReason::FailBack);
    assert_eq!(active.connection, on_primary.id);
    assert_eq!(active.address, primary.to_string());
    // The backup server saw its client leave.
    within(20, "the backup server's Removed", async {
        loop {
            if let Some(Event::Removed(..)) = backup_events.recv().await {
                return;
            }
        }
    })
    .await;
    // The primary server has the client's session.
    within(20, "the primary server's Added", async {
        loop {
            if let Some(Event::Added(_)) = primary_events.recv().await {
                return;
            }
        }
    })
    .await;
    assert_eq!(
        logs::count(&format!(
            "switching upstream: the primary answers again index=0 of=2 address={primary} reason=fail-back from=1"
        )),
        1
    );
    handle.shutdown().await;
    primary_server.shutdown().await;
    backup_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_primary_is_removed_and_the_backup_added_after_the_failed_attempts() {
    let (primary_server, _primary_events, primary) = server("127.0.0.1:0".parse().unwrap()).await;
    let (backup_server, _backup_events, backup) = server("127.0.0.1:0".parse().unwrap()).await;
    let cfg = ClientConfig {
        failover_attempts: 2,
        failback_interval: None,
        ..ClientConfig::default()
    };
    let (handle, mut rx) = client(&[primary, backup], cfg);
    let first = added(&mut rx, "the connection to the primary").await;
    assert_eq!(first.peer, Some(primary));
    assert_eq!(
        handle
            .watch_upstream(Subprotocol::Mining)
            .borrow()
            .as_ref()
            .map(|a| (a.index, a.reason)),
        Some((0, SwitchReason::Start))
    );
    // The primary goes away (and stops listening).
    primary_server.shutdown().await;
    let (gone, _) = removed(&mut rx, "the primary connection removed").await;
    assert_eq!(gone.id, first.id);
    let second = added(&mut rx, "the connection to the backup").await;
    assert_eq!(second.peer, Some(backup));
    // One reconnection attempt per failure after the loss: ids first+1, first+2 failed.
    assert_eq!(second.id, ConnectionId(first.id.0 + 3));
    let active = handle
        .watch_upstream(Subprotocol::Mining)
        .borrow()
        .clone()
        .unwrap();
    assert_eq!((active.index, active.connection), (1, second.id));
    handle.shutdown().await;
    backup_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_upstream_is_retried_until_it_answers() {
    let only = down_address().await;
    let cfg = ClientConfig {
        failover_attempts: 1,
        failback_interval: Some(Duration::from_millis(10)),
        ..ClientConfig::default()
    };
    let (handle, mut rx) = client(&[only], cfg);
    let mut watch = handle.watch_upstream(Subprotocol::Mining);
    // Far more attempts than `failover_attempts`, all on the only upstream.
    let seen = upstream_where(&mut watch, "10 attempts", |a| a.connection.0 >= 10).await;
    assert_eq!((seen.index, seen.reason), (0, SwitchReason::Start));
    let (server_handle, _events, _) = server(only).await;
    let ctx = added(&mut rx, "the connection once the upstream answers").await;
    assert_eq!(ctx.peer, Some(only));
    let active = watch.borrow().clone().unwrap();
    assert_eq!(
        (active.index, active.reason, active.connection),
        (0, SwitchReason::Start, ctx.id)
    );
    handle.shutdown().await;
    server_handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_wraps_around_from_the_last_upstream_to_the_first() {
    let a = down_address().await;
    let b = down_address().await;
    let c = down_address().await;
    let cfg = ClientConfig {
        failover_attempts: 2,
        failback_interval: None,
        ..ClientConfig::default()
    };
    let (handle, mut rx) = client(&[a, b, c], cfg);
    let mut watch = handle.watch_upstream(Subprotocol::Mining);
    // 2 attempts each on a, b, c: the 7th is on a again, by fail-over (not a fail-back).
    let again = upstream_where(&mut watch, "back on the first", |u| {
        u.index == 0 && u.reason == SwitchReason::FailOver
    })
    .await;
    assert_eq!(again.address, a.to_string());
    // Attempts go a, a, b, b, c, c, a, a, ...: ids 7, 8, 13, 14, ... are on `a` again.
    assert!(
        again.connection.0 >= 7 && matches!(again.connection.0 % 6, 1 | 2),
        "after 2 attempts on each of 3: {:?}",
        again.connection
    );
    // The first upstream comes up: the client gets to it on one of its next turns.
    let (server_handle, _events, _) = server(a).await;
    let ctx = added(&mut rx, "the connection to the first upstream").await;
    assert_eq!(ctx.peer, Some(a));
    handle.shutdown().await;
    server_handle.shutdown().await;
}
