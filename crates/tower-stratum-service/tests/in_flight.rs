//! Several messages per connection in flight (`max_in_flight`), batched writes, backpressure.
//!
//! A plaintext server over `tokio::io::duplex` whose Mining handler answers every
//! `SubmitSharesStandard` with `SubmitShares.Success` for its sequence number. A [`Gate`] layer
//! reports every call to the test and holds its answer until the test releases it, so the tests
//! see exactly which messages are in flight. No sleeps: every wait is on an event, under a
//! deadline (`within`) that only turns a hang into a failure.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::message::MiningOwned;
use tower_stratum_core::stratum_core::mining_sv2::{
    SubmitSharesStandardOwned, SubmitSharesSuccess,
};
use tower_stratum_core::{
    Actions, ConnectionContext, ConnectionId, InboundMessage, Subprotocol, Sv2Message,
};
use tower_stratum_service::{
    HandlerService, ServerConfig, ServerHandle, ServerTransport, StreamListener, Sv2ServerService,
};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::within;

/// Accepts every standard share with `SubmitShares.Success` for its sequence number.
#[derive(Debug)]
struct AcceptShares;

impl Sv2MiningServerHandler for AcceptShares {
    async fn handle_submit_shares_standard(
        &mut self,
        _ctx: ConnectionContext,
        msg: SubmitSharesStandardOwned,
    ) -> Actions {
        Actions::reply(Sv2Message::Mining(MiningOwned::SubmitSharesSuccess(
            SubmitSharesSuccess {
                channel_id: msg.channel_id,
                last_sequence_number: msg.sequence_number,
                new_submits_accepted_count: 1,
                new_shares_sum: 1,
            },
        )))
    }
}

/// One call through the [`Gate`]: which connection, which share, and the release of its
/// answer (send or drop it).
#[derive(Debug)]
struct Call {
    conn: ConnectionId,
    seq: u32,
    release: oneshot::Sender<()>,
}

/// A layer that forwards each message to the handlers inside `call` (so they see arrival
/// order), reports the call, and holds the answer until released.
#[derive(Clone)]
struct Gate {
    inner: HandlerService,
    calls: mpsc::UnboundedSender<Call>,
}

impl tower::Service<InboundMessage> for Gate {
    type Response = Actions;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Actions, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, m: InboundMessage) -> Self::Future {
        let seq = match &m.message {
            Sv2Message::Mining(MiningOwned::SubmitSharesStandard(s)) => s.sequence_number,
            _ => u32::MAX,
        };
        let (release, released) = oneshot::channel();
        let _ = self.calls.send(Call {
            conn: m.ctx.id,
            seq,
            release,
        });
        let answer = self.inner.call(m);
        Box::pin(async move {
            let r = answer.await;
            let _ = released.await;
            r
        })
    }
}

/// Counts the writes (`poll_write`/`poll_write_vectored` calls) the server makes to a stream.
struct CountingIo {
    io: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn config(max_in_flight: usize) -> ServerConfig {
    ServerConfig {
        max_in_flight,
        ..ServerConfig::with_transport(ServerTransport::Plaintext)
    }
}

/// A server with the [`Gate`] layer; returns the stream sender, the call reports and the handle.
fn gated_server(
    max_in_flight: usize,
) -> (
    mpsc::Sender<DuplexStream>,
    mpsc::UnboundedReceiver<Call>,
    ServerHandle,
    Sv2ServerService<AcceptShares>,
) {
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let (streams, listener) = StreamListener::new(4);
    let (service, handle) = Sv2ServerService::builder()
        .config(config(max_in_flight))
        .mining(AcceptShares)
        .layer(tower::layer::layer_fn(move |inner| Gate {
            inner,
            calls: calls_tx.clone(),
        }))
        .serve(listener);
    (streams, calls, handle, service)
}

/// A raw client over `io` past SetupConnection (Mining).
async fn connect<IO>(io: IO) -> RawPeer<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut peer = RawPeer::plaintext(io);
    peer.send(msg::setup_connection(Subprotocol::Mining, 2, 2, 0))
        .await;
    match within(10, "SetupConnection reply", peer.recv()).await {
        Some(m) if m.name() == "SetupConnectionSuccess" => {}
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
    peer
}

/// Writes shares `first..first + n` with one flush.
async fn send_burst<IO: AsyncRead + AsyncWrite + Unpin>(
    peer: &mut RawPeer<IO>,
    first: u32,
    n: u32,
) {
    for seq in first..first + n {
        peer.framed
            .feed(msg::submit_standard(1, seq).encode().unwrap())
            .await
            .unwrap();
    }
    peer.framed.flush().await.unwrap();
}

fn success_seq(m: Option<Sv2Message>) -> u32 {
    match m {
        Some(Sv2Message::Mining(MiningOwned::SubmitSharesSuccess(s))) => s.last_sequence_number,
        other => panic!("expected SubmitShares.Success, got {other:?}"),
    }
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    within(10, "a call through the gate", calls.recv())
        .await
        .expect("gate dropped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_stay_in_arrival_order_when_answers_complete_out_of_order() {
    let (streams, mut calls, handle, _svc) = gated_server(8);
    let (client, server) = tokio::io::duplex(64 * 1024);
    streams.send(server).await.unwrap();
    let mut peer = connect(client).await;

    send_burst(&mut peer, 1, 8).await;
    // All eight are in flight at once: the handlers saw them in arrival order...
    let mut held = Vec::new();
    for expected in 1..=8 {
        let c = next_call(&mut calls).await;
        assert_eq!(c.seq, expected);
        held.push(c);
    }
    // ...and their answers are released last one first.
    while let Some(c) = held.pop() {
        c.release.send(()).unwrap();
    }
    for expected in 1..=8 {
        assert_eq!(
            success_seq(within(10, "reply", peer.recv()).await),
            expected
        );
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_calls_then_reading_stops() {
    let (streams, mut calls, handle, _svc) = gated_server(4);
    let (client, server) = tokio::io::duplex(64 * 1024);
    streams.send(server).await.unwrap();
    let mut peer = connect(client).await;

    send_burst(&mut peer, 1, 10).await;
    let mut held: Vec<Call> = Vec::new();
    for expected in 1..=4 {
        let c = next_call(&mut calls).await;
        assert_eq!(c.seq, expected);
        held.push(c);
    }
    // The second answer completes first: it waits behind the first, still counted in flight.
    held.remove(1).release.send(()).unwrap();
    held.remove(0).release.send(()).unwrap();
    assert_eq!(success_seq(within(10, "reply 1", peer.recv()).await), 1);
    assert_eq!(success_seq(within(10, "reply 2", peer.recv()).await), 2);
    // Those two replies left in the same batch as the two calls their room allowed (shares 5
    // and 6, already received); share 7 must wait for another answer.
    let mut next = Vec::new();
    while let Ok(c) = calls.try_recv() {
        next.push(c);
    }
    assert_eq!(next.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![5, 6]);
    held.extend(next);

    // Release everything from now on: the rest is answered, in order.
    drop(held);
    let releaser = tokio::spawn(async move {
        while let Some(c) = calls.recv().await {
            drop(c.release);
        }
    });
    for expected in 3..=10 {
        assert_eq!(
            success_seq(within(10, "reply", peer.recv()).await),
            expected
        );
    }
    handle.shutdown().await;
    releaser.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_is_backpressured_without_stalling_another() {
    const MAX_IN_FLIGHT: usize = 4;
    const A_SHARES: u32 = 2_000; // ~68 KB: far more than the 1 KiB pipe and the read buffer
    let (streams, mut calls, handle, _svc) = gated_server(MAX_IN_FLIGHT);

    // A: its answers are held until `release`; its shares are written from another task.
    let (a_client, a_server) = tokio::io::duplex(1024);
    streams.send(a_server).await.unwrap();
    let a = connect(a_client).await;
    // B: answered at once.
    let (b_client, b_server) = tokio::io::duplex(64 * 1024);
    streams.send(b_server).await.unwrap();
    let mut b = connect(b_client).await;

    // How many of A's messages went through the gate so far.
    let (a_calls_tx, mut a_calls) = watch::channel(0usize);
    let (release_tx, mut release_rx) = oneshot::channel::<()>();
    let gatekeeper = tokio::spawn(async move {
        let mut a_conn: Option<ConnectionId> = None;
        let mut held = Vec::new();
        let mut released = false;
        loop {
            tokio::select! {
                c = calls.recv() => {
                    let Some(c) = c else { break };
                    // The first connection to send a share is A (B sends only after A's calls).
                    let conn = *a_conn.get_or_insert(c.conn);
                    if c.conn == conn {
                        a_calls_tx.send_modify(|n| *n += 1);
                        if !released {
                            held.push(c);
                        }
                    }
                }
                _ = &mut release_rx, if !released => {
                    released = true;
                    held.clear();
                }
            }
        }
    });

    let (mut a_sink, mut a_stream) = a.framed.split();
    let a_sent = Arc::new(AtomicBool::new(false));
    let sent = a_sent.clone();
    let a_writer = tokio::spawn(async move {
        for seq in 1..=A_SHARES {
            a_sink
                .feed(msg::submit_standard(1, seq).encode().unwrap())
                .await
                .unwrap();
        }
        a_sink.flush().await.unwrap();
        sent.store(true, Ordering::SeqCst);
    });
    within(
        10,
        "A's calls in flight",
        a_calls.wait_for(|n| *n >= MAX_IN_FLIGHT),
    )
    .await
    .unwrap();

    // B is served while A is held.
    for seq in 1..=50 {
        b.send(msg::submit_standard(1, seq)).await;
        assert_eq!(success_seq(within(10, "B's reply", b.recv()).await), seq);
    }
    // A: still exactly four calls, and its writer is blocked (the server stopped reading).
    assert_eq!(*a_calls.borrow(), MAX_IN_FLIGHT);
    assert!(
        !a_sent.load(Ordering::SeqCst),
        "A's 2000 shares all fitted in the pipe"
    );

    // Released, A gets every reply, in order.
    release_tx.send(()).unwrap();
    for expected in 1..=A_SHARES {
        let f = within(10, "A's reply", a_stream.next()).await;
        let m = f.map(|f| Sv2Message::decode(f.unwrap()).unwrap());
        assert_eq!(success_seq(m), expected);
    }
    within(10, "A's writer", a_writer).await.unwrap();
    within(
        10,
        "A's last call",
        a_calls.wait_for(|n| *n == A_SHARES as usize),
    )
    .await
    .unwrap();
    handle.shutdown().await;
    gatekeeper.abort();
}

/// One task per test thread: the connection task, the hub and the client take turns, so the
/// write count is deterministic.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_is_answered_in_order_with_few_writes() {
    const SHARES: u32 = 100;
    let (streams, listener) = StreamListener::new(1);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(config(tower_stratum_service::DEFAULT_MAX_IN_FLIGHT))
        .mining(AcceptShares)
        .serve(listener);
    let (client, server) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    streams
        .send(CountingIo {
            io: server,
            writes: writes.clone(),
        })
        .await
        .unwrap();
    let mut peer = connect(client).await;
    let before = writes.load(Ordering::SeqCst);

    send_burst(&mut peer, 1, SHARES).await;
    for expected in 1..=SHARES {
        assert_eq!(
            success_seq(within(10, "reply", peer.recv()).await),
            expected
        );
    }
    let n = writes.load(Ordering::SeqCst) - before;
    // One write per acknowledgement before; now at most one per four (in practice one per
    // batch of answers the hub produced while the connection task waited).
    assert!(n * 4 <= SHARES as usize, "{n} writes for {SHARES} replies");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_connection_does_not_starve_another() {
    let (streams, listener) = StreamListener::new(2);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(config(tower_stratum_service::DEFAULT_MAX_IN_FLIGHT))
        .mining(AcceptShares)
        .serve(listener);
    let (a_client, a_server) = tokio::io::duplex(64 * 1024);
    streams.send(a_server).await.unwrap();
    let a = connect(a_client).await;
    let (b_client, b_server) = tokio::io::duplex(64 * 1024);
    streams.send(b_server).await.unwrap();
    let mut b = connect(b_client).await;

    // A writes shares without pause and reads its replies until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (mut a_sink, mut a_stream) = a.framed.split();
    let stop_w = stop.clone();
    let a_writer = tokio::spawn(async move {
        let mut seq = 0u32;
        while !stop_w.load(Ordering::SeqCst) {
            for _ in 0..64 {
                seq = seq.wrapping_add(1);
                a_sink
                    .feed(msg::submit_standard(1, seq).encode().unwrap())
                    .await
                    .unwrap();
            }
            a_sink.flush().await.unwrap();
        }
        seq
    });
    let a_reader = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(Ok(_)) = a_stream.next().await {
            n += 1;
        }
        n
    });

    for seq in 1..=100 {
        b.send(msg::submit_standard(1, seq)).await;
        assert_eq!(success_seq(within(10, "B's reply", b.recv()).await), seq);
    }
    stop.store(true, Ordering::SeqCst);
    let sent = within(10, "A's writer", a_writer).await.unwrap();
    assert!(sent > 0);
    handle.shutdown().await;
    let answered = within(10, "A's reader", a_reader).await.unwrap();
    assert!(answered > 0 && answered <= sent);
}
