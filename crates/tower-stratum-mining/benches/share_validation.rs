//! Share validation throughput (shares/s) on `channels_sv2` server channels with a synthetic job
//! whose template has a 13-branch merkle path (a ~8k-transaction block), and through the whole
//! `MiningServer` handler.
//!
//! - `*/accepted`: every share is new and meets the channel target (maximum target), so each
//!   one takes the full path: job lookup, (extended: coinbase parse, txid, 13 merkle hashes),
//!   header hash, duplicate check and insert, accounting.
//! - `*/rejected-difficulty`: a hard channel target; same hashing, rejected with
//!   `difficulty-too-low` (no insert).
//! - `handler/extended/accepted`: `MiningServer::handle_submit_shares_extended` (lookup,
//!   vardiff count, validation, `SubmitShares.Success` per share).
//! - `baseline/sha256d-header`: one `sha256d` of an 80-byte header (`bitcoin_hashes`, as
//!   `channels_sv2` uses): the floor of any share validation. An extended share costs one for
//!   the header, one for the coinbase txid and one per merkle branch.
//!
//! Shares are built outside the timed region; channels are rebuilt every 200 000 shares so the
//! duplicate set stays below `channels_sv2`'s budget.
//!
//! Run: `cargo bench -p tower-stratum-mining --bench share_validation -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::session::{str0255, ConnectionInfo, Role};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, Seq0255Owned, U256Owned};
use tower_stratum_core::stratum_core::bitcoin::consensus::Encodable;
use tower_stratum_core::stratum_core::bitcoin::{Amount, ScriptBuf, Target, TxOut};
use tower_stratum_core::stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use tower_stratum_core::stratum_core::channels_sv2::server::extended::ExtendedChannel;
use tower_stratum_core::stratum_core::channels_sv2::server::standard::StandardChannel;
use tower_stratum_core::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::{MiningOwned, TemplateDistributionOwned};
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned,
};
use tower_stratum_core::{
    Action, ConnectionContext, ConnectionId, SiblingMessage, Subprotocol, Sv2Message,
};
use tower_stratum_mining::{MiningServer, MiningServerConfig};

const BRANCHES: usize = 13;
const NTIME: u32 = 1_700_000_000;
/// Mainnet difficulty-1 `nBits`: no share solves a block.
const NBITS: u32 = 0x1d00_ffff;
const VALUE: u64 = 312_500_000;
const CHUNK: u64 = 200_000;
/// High enough that the duplicate-set budget (`spm * 1200`, capped at 2^20) exceeds CHUNK.
const SHARES_PER_MINUTE: f32 = 1000.0;

fn payout() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![0x00, 0x14].into_iter().chain([0x11; 20]).collect())
}

fn merkle_path() -> Vec<[u8; 32]> {
    (0..BRANCHES as u8)
        .map(|i| [i.wrapping_mul(37).wrapping_add(1); 32])
        .collect()
}

fn template() -> NewTemplateOwned {
    // A witness commitment output, as a real template has (value 0, OP_RETURN 36 bytes).
    let commitment = TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(
            [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]
                .into_iter()
                .chain([0x5a; 32])
                .collect(),
        ),
    };
    let mut outputs = Vec::new();
    commitment.consensus_encode(&mut outputs).unwrap();
    let path: Vec<U256Owned> = merkle_path().into_iter().map(U256Owned::from).collect();
    NewTemplateOwned {
        template_id: 1,
        future_template: true,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        coinbase_prefix: vec![0x03, 0x40, 0x0d, 0x03].try_into().unwrap(),
        coinbase_tx_input_sequence: u32::MAX,
        coinbase_tx_value_remaining: VALUE,
        coinbase_tx_outputs_count: 1,
        coinbase_tx_outputs: outputs.try_into().unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: Seq0255Owned::new(path).unwrap(),
    }
}

fn prev_hash() -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        template_id: 1,
        prev_hash: U256Owned::from([0xab; 32]),
        header_timestamp: NTIME,
        n_bits: NBITS,
        target: U256Owned::from([0; 32]),
    }
}

fn outputs() -> Vec<TxOut> {
    vec![TxOut {
        value: Amount::from_sat(VALUE),
        script_pubkey: payout(),
    }]
}

fn max_target() -> Target {
    Target::from_le_bytes([0xff; 32])
}

/// `easy`: maximum target (every share valid); otherwise a 10^15 H/s channel's target.
fn nominal(easy: bool) -> f32 {
    if easy {
        0.0
    } else {
        1.0e15
    }
}

fn allocator() -> ExtranonceAllocator {
    ExtranonceAllocator::new(vec![0], 20, 65_536).unwrap()
}

fn extended_channel(a: &mut ExtranonceAllocator, easy: bool) -> (ExtendedChannel, u32, u16) {
    let rollable = u16::from(a.rollable_extranonce_size());
    let mut ch = ExtendedChannel::new_for_pool(
        2,
        "bench".into(),
        a.allocate_extended(0).unwrap(),
        max_target(),
        nominal(easy),
        true,
        rollable,
        1,
        SHARES_PER_MINUTE,
        "bench".into(),
        None,
    )
    .unwrap();
    ch.on_new_template(template(), outputs()).unwrap();
    ch.on_set_new_prev_hash(prev_hash()).unwrap();
    let job_id = ch.get_active_job().unwrap().get_job_id();
    (ch, job_id, rollable)
}

fn standard_channel(a: &mut ExtranonceAllocator, easy: bool) -> (StandardChannel, u32) {
    let mut ch = StandardChannel::new_for_pool(
        2,
        "bench".into(),
        a.allocate_standard().unwrap(),
        max_target(),
        nominal(easy),
        1,
        SHARES_PER_MINUTE,
        "bench".into(),
        None,
    )
    .unwrap();
    ch.on_new_template(template(), outputs()).unwrap();
    ch.on_set_new_prev_hash(prev_hash()).unwrap();
    let job_id = ch.get_active_job().unwrap().get_job_id();
    (ch, job_id)
}

fn extended_share(job_id: u32, i: u64, rollable: u16) -> SubmitSharesExtendedOwned {
    SubmitSharesExtendedOwned {
        channel_id: 2,
        sequence_number: i as u32,
        job_id,
        nonce: i as u32,
        ntime: NTIME,
        version: 0x2000_0000,
        extranonce: B032Owned::try_from(vec![0x5c; usize::from(rollable)]).unwrap(),
    }
}

fn standard_share(job_id: u32, i: u64) -> SubmitSharesStandardOwned {
    SubmitSharesStandardOwned {
        channel_id: 2,
        sequence_number: i as u32,
        job_id,
        nonce: i as u32,
        ntime: NTIME,
        version: 0x2000_0000,
    }
}

/// Times `iters` validations in chunks, each on a fresh channel, shares prebuilt untimed.
fn timed<S, C>(
    iters: u64,
    mut setup: impl FnMut() -> (C, Box<dyn Fn(u64) -> S>),
    mut validate: impl FnMut(&mut C, S),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        let (mut ch, make) = setup();
        let shares: Vec<S> = (0..n).map(&make).collect();
        let start = Instant::now();
        for s in shares {
            validate(&mut ch, s);
        }
        elapsed += start.elapsed();
        done += n;
    }
    elapsed
}

/// Polls a handler future once: `MiningServer`'s futures never wait.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("handler future pending"),
    }
}

fn server_with_channel() -> (MiningServer, ConnectionContext, u32, u32, u16) {
    let mut s = MiningServer::new(MiningServerConfig {
        coinbase_output_script: payout(),
        shares_per_minute: SHARES_PER_MINUTE,
        max_channels: 65_536,
        ..MiningServerConfig::default()
    })
    .unwrap();
    let ctx = ConnectionContext {
        id: ConnectionId(1),
        peer: None,
        role: Role::Server,
        info: ConnectionInfo {
            protocol: Subprotocol::Mining,
            version: 2,
            flags: 0,
            success_flags: 0,
            extensions: Default::default(),
        },
    };
    ready(s.on_connection_added(ctx));
    let td = |m| SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m));
    ready(s.handle_sibling_message(td(TemplateDistributionOwned::NewTemplate(template()))));
    ready(s.handle_sibling_message(td(TemplateDistributionOwned::SetNewPrevHash(prev_hash()))));
    let actions = ready(s.handle_open_extended_mining_channel(
        ctx,
        OpenExtendedMiningChannelOwned {
            request_id: 1,
            user_identity: str0255("bench").unwrap(),
            nominal_hash_rate: 0.0,
            max_target: U256Owned::from([0xff; 32]),
            min_extranonce_size: 0,
        },
    ));
    let mut channel = None;
    let mut job = None;
    for a in actions {
        if let Action::Reply(Sv2Message::Mining(m)) = a {
            match m {
                MiningOwned::OpenExtendedMiningChannelSuccess(ok) => {
                    channel = Some((ok.channel_id, ok.extranonce_size))
                }
                MiningOwned::NewExtendedMiningJob(j) => job = Some(j.job_id),
                _ => {}
            }
        }
    }
    let (channel_id, rollable) = channel.unwrap();
    (s, ctx, channel_id, job.unwrap(), rollable)
}

/// Checks that each case takes the path it claims before timing it.
fn probe() {
    use tower_stratum_core::stratum_core::channels_sv2::server::share_accounting::{
        ShareValidationError, ShareValidationResult,
    };
    for easy in [true, false] {
        let mut a = allocator();
        let (mut ch, job_id, rollable) = extended_channel(&mut a, easy);
        let r = ch.validate_share(extended_share(job_id, 1, rollable));
        let (mut sc, sjob) = standard_channel(&mut a, easy);
        let rs = sc.validate_share(standard_share(sjob, 1));
        for r in [r, rs] {
            match (easy, r) {
                (true, Ok(ShareValidationResult::Valid(_))) => {}
                (false, Err(ShareValidationError::DoesNotMeetTarget(_))) => {}
                (e, other) => panic!("easy={e}: unexpected {other:?}"),
            }
        }
    }
    let (mut s, ctx, channel_id, job_id, rollable) = server_with_channel();
    let mut share = extended_share(job_id, 1, rollable);
    share.channel_id = channel_id;
    let actions = ready(s.handle_submit_shares_extended(ctx, share));
    assert!(matches!(
        actions.as_slice(),
        [Action::Reply(Sv2Message::Mining(
            MiningOwned::SubmitSharesSuccess(_)
        ))]
    ));
}

fn bench(c: &mut Criterion) {
    probe();
    let mut g = c.benchmark_group("share_validation");
    g.throughput(Throughput::Elements(1));
    for (name, easy) in [("accepted", true), ("rejected-difficulty", false)] {
        g.bench_function(format!("extended/{name}"), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let mut a = allocator();
                        let (ch, job_id, rollable) = extended_channel(&mut a, easy);
                        // The allocator must outlive the channel's prefix only for accounting;
                        // dropping it early is harmless.
                        (
                            ch,
                            Box::new(move |i| extended_share(job_id, i, rollable)) as Box<_>,
                        )
                    },
                    |ch, s| {
                        black_box(ch.validate_share(s)).ok();
                    },
                )
            })
        });
        g.bench_function(format!("standard/{name}"), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let mut a = allocator();
                        let (ch, job_id) = standard_channel(&mut a, easy);
                        (ch, Box::new(move |i| standard_share(job_id, i)) as Box<_>)
                    },
                    |ch, s| {
                        black_box(ch.validate_share(s)).ok();
                    },
                )
            })
        });
    }
    g.bench_function("baseline/sha256d-header", |b| {
        let mut header = [0x5au8; 80];
        let mut nonce = 0u32;
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            header[76..].copy_from_slice(&nonce.to_le_bytes());
            black_box(tower_stratum_mining::share_math::header_hash(black_box(
                &header,
            )))
        })
    });
    g.bench_function("handler/extended/accepted", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let (s, ctx, channel_id, job_id, rollable) = server_with_channel();
                    let make = move |i| {
                        let mut share = extended_share(job_id, i, rollable);
                        share.channel_id = channel_id;
                        share
                    };
                    ((s, ctx), Box::new(make) as Box<_>)
                },
                |(s, ctx), share| {
                    black_box(ready(s.handle_submit_shares_extended(*ctx, share)));
                },
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
