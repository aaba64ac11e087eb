//! Full in-memory round trip through a [`Sv2ServerService`]: a raw Sv2 client sends one
//! `SubmitSharesExtended` over `tokio::io::duplex`, the connection task decodes it, the handler
//! task answers `SubmitShares.Success`, the connection task writes it back and the client decodes
//! it. Plaintext and Noise.
//!
//! - `round_trip/*`: one share in flight (send, await the reply); latency-bound.
//! - `pipelined_100/*`: 100 shares sent while the 100 replies are read concurrently on the same
//!   connection; throughput with the service's backpressure (bounded queues, the connection reads
//!   nothing while a write is pending, a `PIPE`-byte pipe each way).
//!
//! Throughput is in messages (shares answered) per second. The client runs in `block_on` on the
//! bench thread, the server's connection and handler tasks on a 2-worker runtime built once.
//!
//! Run: `cargo bench -p tower-stratum-service --bench round_trip`
//!
//! Allocation probe (no criterion; the workspace forbids `unsafe`, so no counting
//! `GlobalAlloc` here, count with heaptrack instead): `ROUND_TRIP_PROBE=<variant>:<shares>`
//! with `<variant>` one of `plaintext`, `noise`, `plaintext-pipelined`, `noise-pipelined` runs
//! that many shares and exits; run it under `heaptrack` with two share counts and divide the
//! difference in allocation calls by the difference in shares (see docs/PERFORMANCE.md).
// Bench setup failing is a broken environment, not input: abort loudly (like the test kit).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::DuplexStream;
use tokio::runtime::Runtime;
use tower_stratum_codec::AuthorityKeypair;
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::message::MiningOwned;
use tower_stratum_core::stratum_core::mining_sv2::{
    SubmitSharesExtendedOwned, SubmitSharesSuccess,
};
use tower_stratum_core::{Actions, ConnectionContext, Frame, Subprotocol, Sv2Message};
use tower_stratum_service::{
    ServerConfig, ServerHandle, ServerTransport, StreamListener, Sv2ServerService,
};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;

/// Bytes buffered in each direction of the in-memory pipe.
const PIPE: usize = 64 * 1024;
/// Shares per pipelined batch.
const BATCH: u64 = 100;

/// Accepts every extended share with `SubmitShares.Success` for its sequence number.
#[derive(Debug)]
struct AcceptShares;

impl Sv2MiningServerHandler for AcceptShares {
    async fn handle_submit_shares_extended(
        &mut self,
        _ctx: ConnectionContext,
        msg: SubmitSharesExtendedOwned,
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

/// A `SubmitSharesExtended` as a miner sends it: 8-byte extranonce, 37-byte payload.
fn share(sequence_number: u32) -> Frame {
    Sv2Message::Mining(MiningOwned::SubmitSharesExtended(
        SubmitSharesExtendedOwned {
            channel_id: 1,
            sequence_number,
            job_id: 7,
            nonce: 0xdead_beef,
            ntime: 1_700_000_000,
            version: 0x2000_0000,
            extranonce: vec![0xab; 8].try_into().unwrap(),
        },
    ))
    .encode()
    .unwrap()
}

fn check_success(m: Option<Sv2Message>, sequence_number: u32) {
    match m {
        Some(Sv2Message::Mining(MiningOwned::SubmitSharesSuccess(s)))
            if s.last_sequence_number == sequence_number => {}
        other => panic!("expected SubmitShares.Success({sequence_number}), got {other:?}"),
    }
}

/// A server with [`AcceptShares`] and one client past SetupConnection (Mining).
struct Setup {
    peer: RawPeer<DuplexStream>,
    handle: ServerHandle,
    _service: Sv2ServerService<AcceptShares>,
    seq: u32,
}

async fn setup(noise: bool) -> Setup {
    let keys = AuthorityKeypair::generate();
    let transport = if noise {
        ServerTransport::noise(keys.clone())
    } else {
        ServerTransport::Plaintext
    };
    let (streams, listener) = StreamListener::new(1);
    let (service, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(transport))
        .mining(AcceptShares)
        .serve(listener);
    let (client_io, server_io) = tokio::io::duplex(PIPE);
    streams.send(server_io).await.unwrap();
    let mut peer = if noise {
        RawPeer::noise(client_io, Some(keys.public()))
            .await
            .unwrap()
    } else {
        RawPeer::plaintext(client_io)
    };
    peer.send(msg::setup_connection(Subprotocol::Mining, 2, 2, 0))
        .await;
    match peer.recv().await {
        Some(m) if m.name() == "SetupConnectionSuccess" => {}
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
    Setup {
        peer,
        handle,
        _service: service,
        seq: 0,
    }
}

impl Setup {
    /// `n` shares, one at a time.
    async fn one_by_one(&mut self, n: u64) {
        for _ in 0..n {
            self.seq = self.seq.wrapping_add(1);
            self.peer.send_frame(share(self.seq)).await;
            check_success(self.peer.recv().await, self.seq);
        }
    }

    /// `batches` batches of [`BATCH`] shares, written while the replies are read.
    async fn pipelined(&mut self, batches: u64) {
        let first = self.seq.wrapping_add(1);
        let n = (batches * BATCH) as u32;
        self.seq = self.seq.wrapping_add(n);
        let (mut sink, mut stream) = (&mut self.peer.framed).split();
        let send = async {
            for b in 0..batches as u32 {
                for i in 0..BATCH as u32 {
                    let seq = first.wrapping_add(b * BATCH as u32 + i);
                    sink.feed(share(seq)).await.unwrap();
                }
                sink.flush().await.unwrap();
            }
        };
        let recv = async {
            for i in 0..n {
                let f = stream
                    .next()
                    .await
                    .map(|f| Sv2Message::decode(f.unwrap()).unwrap());
                check_success(f, first.wrapping_add(i));
            }
        };
        tokio::join!(send, recv);
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    for (name, noise) in [("plaintext", false), ("noise", true)] {
        let mut s = rt.block_on(setup(noise));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    s.one_by_one(iters).await;
                    start.elapsed()
                })
            })
        });
        rt.block_on(s.handle.shutdown());
    }
    group.finish();

    let mut group = c.benchmark_group("pipelined_100");
    group.throughput(Throughput::Elements(BATCH));
    // A Noise batch takes ~1.5 ms: 50 samples fit the 5 s measurement time.
    group.sample_size(50);
    for (name, noise) in [("plaintext", false), ("noise", true)] {
        let mut s = rt.block_on(setup(noise));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    s.pipelined(iters).await;
                    start.elapsed()
                })
            })
        });
        rt.block_on(s.handle.shutdown());
    }
    group.finish();
}

/// `ROUND_TRIP_PROBE=<variant>:<shares>`: runs that many shares outside criterion.
fn probe(spec: &str) {
    let (variant, n) = spec
        .split_once(':')
        .and_then(|(v, n)| Some((v, n.parse::<u64>().ok()?)))
        .expect("ROUND_TRIP_PROBE=<variant>:<shares>");
    let (noise, pipelined) = match variant {
        "plaintext" => (false, false),
        "noise" => (true, false),
        "plaintext-pipelined" => (false, true),
        "noise-pipelined" => (true, true),
        v => panic!("unknown variant {v}"),
    };
    let rt = runtime();
    let elapsed = rt.block_on(async {
        let mut s = setup(noise).await;
        let start = Instant::now();
        if pipelined {
            s.pipelined(n.div_ceil(BATCH)).await;
        } else {
            s.one_by_one(n).await;
        }
        let elapsed = start.elapsed();
        s.handle.shutdown().await;
        elapsed
    });
    println!(
        "{variant}: {n} shares in {elapsed:?} ({:.0} shares/s)",
        n as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = round_trip
}

fn main() {
    if let Ok(spec) = std::env::var("ROUND_TRIP_PROBE") {
        return probe(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
