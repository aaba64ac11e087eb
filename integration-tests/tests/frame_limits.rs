//! Frames that never finish: per-subprotocol payload limits, the frame-completion deadline and
//! the partial-frame budget (issue 8, item 1). A peer that completed SetupConnection (which
//! needs no credential) declares a large frame and sends only part of it: the server must not
//! keep its buffer until the inactivity timeout, and other peers must still be served.
//!
//! Over Noise on 127.0.0.1 (port 0). Waits have deadlines; no sleeps as synchronisation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;
use tower_stratum::codec::{AuthorityKeypair, SRI_TEST_AUTHORITY_PUBLIC_KEY};
use tower_stratum::session::{MaxPayload, Timer};
use tower_stratum::stratum_core::parsers_sv2::CommonMessagesOwned;
use tower_stratum::{
    CloseReason, Frame, ServerConfig, ServerTransport, Subprotocol, Sv2Message, Sv2ServerService,
};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::process::{self, peer_bin, PeerProcess};
use tower_stratum_test_kit::recording::{Event, Events, MinimalMiningServer};
use tower_stratum_test_kit::{logs, within};

/// A raw Noise peer that completed SetupConnection for Mining.
async fn setup_peer(addr: SocketAddr, keys: Option<&AuthorityKeypair>) -> RawPeer<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let authority = match keys {
        Some(k) => k.public(),
        None => SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap(),
    };
    let mut p = RawPeer::noise(tcp, Some(authority)).await.unwrap();
    p.send(msg::setup_connection(Subprotocol::Mining, 2, 2, 0))
        .await;
    match within(10, "SetupConnection.Success", p.recv()).await {
        Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))) => {}
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
    p
}

/// Encrypts a frame of `payload_len` bytes (an unassigned Mining message type, so a frame that
/// does arrive whole closes the connection as malformed) and sends only its first `send` bytes.
/// Write errors are ignored: the server may close the connection while we write.
async fn send_unfinished(p: &mut RawPeer<TcpStream>, payload_len: usize, send: usize) {
    let frame = Frame {
        extension_type: 0,
        msg_type: 0x7e,
        payload: vec![0xab; payload_len].into(),
    };
    let mut wire = BytesMut::new();
    p.framed.codec_mut().encode(frame, &mut wire).unwrap();
    assert!(send < wire.len());
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        p.framed.get_mut().write_all(&wire[..send]),
    )
    .await;
}

/// The rest of a frame begun with [`send_unfinished`] cannot be produced again (the cipher has
/// moved on), so the tests that complete frames encode them whole and split the bytes.
struct SplitFrame {
    wire: BytesMut,
    sent: usize,
}

impl SplitFrame {
    async fn start(p: &mut RawPeer<TcpStream>, payload_len: usize, send: usize) -> Self {
        let frame = Frame {
            extension_type: 0,
            msg_type: 0x7e,
            payload: vec![0xcd; payload_len].into(),
        };
        let mut wire = BytesMut::new();
        p.framed.codec_mut().encode(frame, &mut wire).unwrap();
        p.framed.get_mut().write_all(&wire[..send]).await.unwrap();
        Self { wire, sent: send }
    }

    async fn finish(self, p: &mut RawPeer<TcpStream>) {
        let _ = p.framed.get_mut().write_all(&self.wire[self.sent..]).await;
    }
}

async fn next_removed(
    rx: &mut mpsc::Receiver<Event>,
) -> (tower_stratum::ConnectionId, CloseReason) {
    loop {
        match within(20, "a connection removed", rx.recv()).await {
            Some(Event::Removed(c, r)) => return (c.id, r),
            Some(_) => continue,
            None => panic!("event channel closed"),
        }
    }
}

fn is_budget(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::Transport(t) if t.contains("partial-frame budget exhausted"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_declaring_a_megabyte_frame_is_closed_at_once() {
    logs::capture();
    let logged = logs::count("dropped peer");
    let keys = AuthorityKeypair::generate();
    let (events, mut rx) = Events::new(100);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(
            keys.clone(),
        )))
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    let mut p = setup_peer(addr, Some(&keys)).await;
    // Just under the old 1 MiB limit, with only the first 64 KiB of the payload sent.
    send_unfinished(&mut p, (1 << 20) - 64, 64 * 1024).await;
    let (_, reason) = next_removed(&mut rx).await;
    match &reason {
        CloseReason::Transport(t) => assert!(
            t.contains("exceeds the maximum of 4096 bytes"),
            "reason: {reason}"
        ),
        other => panic!("expected a frame-too-large close, got {other}"),
    }
    assert!(within(5, "server closes the socket", p.recv())
        .await
        .is_none());
    // The operator's log says who was dropped and why (INFO, target tower_stratum::peer),
    // with the address as an address (not `Some(..)`).
    logs::wait_for("dropped peer", logged, 5).await;
    assert!(
        logs::count("exceeds the maximum of 4096 bytes") > 0
            && logs::count("peer=127.0.0.1:") > 0
            && logs::count("peer=Some(") == 0,
        "dropped-peer line missing or malformed"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_stops_arriving_is_closed_at_the_frame_deadline() {
    let keys = AuthorityKeypair::generate();
    let (events, mut rx) = Events::new(100);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = ServerConfig::with_transport(ServerTransport::noise(keys.clone()));
    cfg.session.frame_timeout = Duration::from_millis(500);
    // Inactivity far away: only the frame deadline can close it.
    cfg.inactivity_timeout[Subprotocol::Mining] = Some(Duration::from_secs(600));
    let (_svc, handle) = Sv2ServerService::builder()
        .config(cfg)
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    // A peer that keeps completing small frames is not affected by the deadline...
    let mut busy = setup_peer(addr, Some(&keys)).await;
    let mut slow = setup_peer(addr, Some(&keys)).await;
    // ...while one that sends 3,000 of a 4,000-byte frame and stops is closed.
    send_unfinished(&mut slow, 4000, 3000).await;
    let started = tokio::time::Instant::now();
    for i in 0..20 {
        busy.send(msg::open_standard(i)).await;
        assert!(within(5, "channel reply", busy.recv()).await.is_some());
    }
    let (_, reason) = next_removed(&mut rx).await;
    assert_eq!(reason, CloseReason::TimedOut(Timer::Frame));
    assert!(started.elapsed() < Duration::from_secs(10));
    busy.send(msg::open_standard(99)).await;
    assert!(
        within(5, "busy peer still served", busy.recv())
            .await
            .is_some(),
        "the peer completing its frames was closed too"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_frame_budget_closes_the_connection_that_would_exceed_it() {
    let keys = AuthorityKeypair::generate();
    let (events, mut rx) = Events::new(100);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = ServerConfig::with_transport(ServerTransport::noise(keys.clone()));
    // Large frames allowed on Mining, but only 256 KiB of unfinished frames in all.
    cfg.max_payload = MaxPayload {
        mining: 1 << 20,
        ..MaxPayload::server()
    };
    cfg.partial_frame_budget = 256 * 1024;
    let (_svc, handle) = Sv2ServerService::builder()
        .config(cfg)
        .mining(MinimalMiningServer::new(events))
        .serve(l);
    // Three peers each hold 100 KiB of a 150 KiB frame: any two fit (2 x 96 KiB charged), the
    // third does not, whichever the server reads last.
    let mut peers = Vec::new();
    for _ in 0..3 {
        let mut p = setup_peer(addr, Some(&keys)).await;
        let split = SplitFrame::start(&mut p, 150 * 1024, 100 * 1024).await;
        peers.push((p, Some(split)));
    }
    let (_, reason) = next_removed(&mut rx).await;
    assert!(is_budget(&reason), "expected a budget close, got {reason}");
    // A miner sending ordinary frames is still served.
    let mut miner = setup_peer(addr, Some(&keys)).await;
    miner.send(msg::open_standard(1)).await;
    assert!(within(5, "miner served", miner.recv()).await.is_some());
    // The two others were holding their frames: completed one after the other (146 + 96 KiB
    // fit the budget), each arrives whole (and, an unassigned message type, closes its
    // connection as a protocol violation, not for the budget). The refused one's rest is
    // written to a closed socket.
    for (p, split) in &mut peers {
        split.take().unwrap().finish(p).await;
        assert!(within(10, "connection closed", p.recv()).await.is_none());
    }
    for _ in 0..2 {
        let (_, reason) = next_removed(&mut rx).await;
        assert!(
            matches!(reason, CloseReason::PeerMisbehaved(_)),
            "expected the completed frame to be read, got {reason}"
        );
    }
    handle.shutdown().await;
}

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// The attack of issue 8 against the real `solo-mining-server` binary: 100 connections
/// declaring a frame just under 1 MiB and sending 300 KiB of it (before the fix each pinned
/// about 1 MB until the 900 s inactivity timeout), and 200 holding a near-maximum 4,000-byte
/// Mining frame unfinished. The server's RSS stays bounded, and SRI's `mining_device` still
/// gets its shares accepted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_frames_do_not_pin_server_memory_and_a_real_miner_is_served() {
    let bin = process::workspace_bin("solo-mining-server");
    let (mut server, port) = process::solo_server(&bin, "").await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pid = server.child.id().unwrap();
    // Warm up the allocator with an ordinary connection first.
    drop(setup_peer(addr, None).await);
    let before = rss(pid);

    let mut big = Vec::new();
    for _ in 0..100 {
        let mut p = setup_peer(addr, None).await;
        send_unfinished(&mut p, (1 << 20) - 64, 300 * 1024).await;
        big.push(p);
    }
    let mut small = Vec::new();
    for _ in 0..200 {
        let mut p = setup_peer(addr, None).await;
        send_unfinished(&mut p, 4000, 3900).await;
        small.push(p);
    }
    // Every megabyte frame is refused: the server closes those connections.
    for p in &mut big {
        assert!(
            within(10, "oversized frame refused", p.recv())
                .await
                .is_none(),
            "a connection with a 1 MiB frame was kept"
        );
    }
    let after = rss(pid);
    let grown = after.saturating_sub(before);
    eprintln!(
        "server RSS {} KiB -> {} KiB with 200 unfinished frames held",
        before / 1024,
        after / 1024
    );
    // 200 live connections holding 4 KB each: well under 40 KiB each (before the fix the
    // megabyte frames alone took about 100 MB).
    assert!(
        grown < 200 * 40 * 1024,
        "server RSS grew by {} KiB ({before} -> {after} bytes)",
        grown / 1024
    );

    // A real miner, while the 200 unfinished frames are held.
    let _miner = PeerProcess::spawn(
        &peer_bin("mining_device"),
        &[
            "--address-pool",
            &addr.to_string(),
            "--pubkey-pool",
            SRI_TEST_AUTHORITY_PUBLIC_KEY,
            "--id-device",
            "frame-limits",
            "--id-user",
            "frame-limits",
            "--cores",
            "1",
        ],
    );
    server.wait_status("shares accepted", 1, 60).await;
    drop(small);
}
