//! `tower_stratum_mining::MiningServer` served by `Sv2ServerService` over in-memory streams
//! (`tokio::io::duplex`, plaintext), driven by raw Sv2 peers, with the test acting as the
//! template source on the server's sibling channels. Every wait has a deadline; shares are
//! mined in the test against very easy targets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tower_stratum::handler::{
    NullSv2JobDeclarationServerHandler, NullSv2TemplateDistributionServerHandler,
};
use tower_stratum::session::{str0255, REQUIRES_STANDARD_JOBS};
use tower_stratum::stratum_core::binary_sv2::{B032Owned, U256Owned};
use tower_stratum::stratum_core::bitcoin::consensus::deserialize;
use tower_stratum::stratum_core::bitcoin::hashes::Hash;
use tower_stratum::stratum_core::bitcoin::{Block, ScriptBuf, Target, Transaction};
use tower_stratum::stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, NewMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenStandardMiningChannelOwned, SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use tower_stratum::stratum_core::parsers_sv2::{
    CommonMessagesOwned, MiningOwned, TemplateDistributionOwned,
};
use tower_stratum::stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tower_stratum::{
    ServerConfig, ServerHandle, ServerTransport, SiblingMessage, StreamListener, Subprotocol,
    Sv2Message, Sv2ServerService,
};
use tower_stratum_mining::share_math::{hash_meets_target, nbits_to_target};
use tower_stratum_mining::test_util::{self, HARD_NBITS, REGTEST_NBITS, TIP_TIME};
use tower_stratum_mining::{MiningEvent, MiningServer, MiningServerConfig};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::within;

const TIP_A: [u8; 32] = [0xaa; 32];
const TIP_B: [u8; 32] = [0xbb; 32];
const VALUE: u64 = 50 * 100_000_000;

/// A served MiningServer, its stream feeder, the template-source end of its sibling link, and
/// its events.
struct Harness {
    streams: mpsc::Sender<DuplexStream>,
    template_tx: mpsc::Sender<SiblingMessage>,
    template_rx: mpsc::Receiver<SiblingMessage>,
    events: mpsc::Receiver<MiningEvent>,
    handle: ServerHandle,
}

fn start() -> Harness {
    let (events_tx, events) = mpsc::channel(256);
    let server = MiningServer::new(MiningServerConfig {
        coinbase_output_script: ScriptBuf::from_bytes(vec![0x51]),
        pool_signature: "it".into(),
        ..MiningServerConfig::default()
    })
    .unwrap()
    .with_event_sink(move |e| {
        let _ = events_tx.try_send(e);
    });
    let (streams, listener) = StreamListener::new(8);
    let (_svc, handle, sibling) = Sv2ServerService::new_with_sibling_io(
        ServerConfig::with_transport(ServerTransport::Plaintext),
        listener,
        server,
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    );
    let (template_tx, template_rx) = sibling.into_channels();
    Harness {
        streams,
        template_tx,
        template_rx,
        events,
        handle,
    }
}

impl Harness {
    async fn connect(&self, flags: u32) -> RawPeer<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        self.streams.send(server).await.unwrap();
        let mut p = RawPeer::plaintext(client);
        p.send(msg::setup_connection(Subprotocol::Mining, 2, 2, flags))
            .await;
        match within(5, "SetupConnection.Success", p.recv()).await {
            Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))) => p,
            other => panic!("expected SetupConnection.Success, got {other:?}"),
        }
    }

    async fn template_source_sends(&self, m: TemplateDistributionOwned) {
        self.template_tx
            .send(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m)))
            .await
            .unwrap();
    }

    /// A future template `id` and the `SetNewPrevHash` activating it on `tip`.
    async fn new_block(&self, id: u64, tip: [u8; 32], nbits: u32) {
        self.template_source_sends(TemplateDistributionOwned::NewTemplate(test_util::template(
            id,
            true,
            200,
            VALUE,
            vec![],
        )))
        .await;
        self.template_source_sends(TemplateDistributionOwned::SetNewPrevHash(
            test_util::prev_hash(id, tip, nbits),
        ))
        .await;
    }
}

async fn next(p: &mut RawPeer<DuplexStream>, what: &str) -> MiningOwned {
    match within(5, what, p.recv()).await {
        Some(Sv2Message::Mining(m)) => m,
        other => panic!("waiting for {what}: got {other:?}"),
    }
}

fn open_standard(request_id: u32, nominal_hash_rate: f32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::OpenStandardMiningChannel(
        OpenStandardMiningChannelOwned {
            request_id,
            user_identity: str0255("it-standard").unwrap(),
            nominal_hash_rate,
            max_target: U256Owned::from([0xff; 32]),
        },
    ))
}

fn open_extended(request_id: u32) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(
        OpenExtendedMiningChannelOwned {
            request_id,
            user_identity: str0255("it-extended").unwrap(),
            nominal_hash_rate: 1.0,
            max_target: U256Owned::from([0xff; 32]),
            min_extranonce_size: 8,
        },
    ))
}

struct Channel {
    id: u32,
    target: Target,
    prefix: Vec<u8>,
}

/// Opens a standard channel announcing 1 H/s: at 6 shares/min its target is met by about one
/// hash in 11.
async fn open_standard_channel(p: &mut RawPeer<DuplexStream>, request_id: u32) -> Channel {
    open_standard_channel_at(p, request_id, 1.0).await
}

async fn open_standard_channel_at(
    p: &mut RawPeer<DuplexStream>,
    request_id: u32,
    nominal_hash_rate: f32,
) -> Channel {
    p.send(open_standard(request_id, nominal_hash_rate)).await;
    match next(p, "OpenStandardMiningChannel.Success").await {
        MiningOwned::OpenStandardMiningChannelSuccess(s) => {
            assert_eq!(s.request_id, request_id);
            Channel {
                id: s.channel_id,
                target: Target::from_le_bytes(s.target.to_array()),
                prefix: s.extranonce_prefix.as_bytes().to_vec(),
            }
        }
        other => panic!("{other:?}"),
    }
}

async fn open_extended_channel(p: &mut RawPeer<DuplexStream>, request_id: u32) -> (Channel, u16) {
    p.send(open_extended(request_id)).await;
    match next(p, "OpenExtendedMiningChannel.Success").await {
        MiningOwned::OpenExtendedMiningChannelSuccess(s) => (
            Channel {
                id: s.channel_id,
                target: Target::from_le_bytes(s.target.to_array()),
                prefix: s.extranonce_prefix.as_bytes().to_vec(),
            },
            s.extranonce_size,
        ),
        other => panic!("{other:?}"),
    }
}

async fn standard_job(p: &mut RawPeer<DuplexStream>) -> NewMiningJobOwned {
    match next(p, "NewMiningJob").await {
        MiningOwned::NewMiningJob(j) => j,
        other => panic!("expected NewMiningJob, got {other:?}"),
    }
}

async fn extended_job(p: &mut RawPeer<DuplexStream>) -> NewExtendedMiningJobOwned {
    match next(p, "NewExtendedMiningJob").await {
        MiningOwned::NewExtendedMiningJob(j) => j,
        other => panic!("expected NewExtendedMiningJob, got {other:?}"),
    }
}

/// Expects a `SetNewPrevHash` for `(channel_id, job_id)` on `tip`.
async fn expect_prev_hash(
    p: &mut RawPeer<DuplexStream>,
    channel_id: u32,
    job_id: u32,
    tip: [u8; 32],
) {
    match next(p, "SetNewPrevHash").await {
        MiningOwned::SetNewPrevHash(s) => {
            assert_eq!((s.channel_id, s.job_id), (channel_id, job_id));
            assert_eq!(s.prev_hash.to_array(), tip);
            assert_eq!(s.min_ntime, TIP_TIME);
        }
        other => panic!("expected SetNewPrevHash, got {other:?}"),
    }
}

fn mine_standard(
    ch: &Channel,
    seq: u32,
    job: &NewMiningJobOwned,
    tip: [u8; 32],
    nbits: u32,
    accept: impl Fn(&[u8; 32]) -> bool,
) -> Sv2Message {
    let sol = test_util::solve(
        job.version,
        &tip,
        &job.merkle_root.to_array(),
        TIP_TIME,
        nbits,
        &ch.target,
        0,
        accept,
    )
    .unwrap();
    Sv2Message::Mining(MiningOwned::SubmitSharesStandard(
        SubmitSharesStandardOwned {
            channel_id: ch.id,
            sequence_number: seq,
            job_id: job.job_id,
            nonce: sol.nonce,
            ntime: TIP_TIME,
            version: job.version,
        },
    ))
}

fn mine_extended(
    ch: &Channel,
    seq: u32,
    job: &NewExtendedMiningJobOwned,
    extranonce: &[u8],
    tip: [u8; 32],
    nbits: u32,
) -> Sv2Message {
    let root = test_util::extended_merkle_root(job, &ch.prefix, extranonce).unwrap();
    let sol = test_util::solve(
        job.version,
        &tip,
        &root,
        TIP_TIME,
        nbits,
        &ch.target,
        0,
        |_| true,
    )
    .unwrap();
    Sv2Message::Mining(MiningOwned::SubmitSharesExtended(
        SubmitSharesExtendedOwned {
            channel_id: ch.id,
            sequence_number: seq,
            job_id: job.job_id,
            nonce: sol.nonce,
            ntime: TIP_TIME,
            version: job.version,
            extranonce: B032Owned::try_from(extranonce.to_vec()).unwrap(),
        },
    ))
}

fn with_job_id(m: &Sv2Message, job_id: u32, seq: u32) -> Sv2Message {
    match m {
        Sv2Message::Mining(MiningOwned::SubmitSharesStandard(s)) => {
            let mut s = s.clone();
            s.job_id = job_id;
            s.sequence_number = seq;
            Sv2Message::Mining(MiningOwned::SubmitSharesStandard(s))
        }
        Sv2Message::Mining(MiningOwned::SubmitSharesExtended(s)) => {
            let mut s = s.clone();
            s.job_id = job_id;
            s.sequence_number = seq;
            Sv2Message::Mining(MiningOwned::SubmitSharesExtended(s))
        }
        other => panic!("{other:?}"),
    }
}

fn job_id_of(m: &Sv2Message) -> u32 {
    match m {
        Sv2Message::Mining(MiningOwned::SubmitSharesStandard(s)) => s.job_id,
        Sv2Message::Mining(MiningOwned::SubmitSharesExtended(s)) => s.job_id,
        other => panic!("{other:?}"),
    }
}

async fn expect_success(p: &mut RawPeer<DuplexStream>, channel_id: u32, seq: u32) {
    match next(p, "SubmitShares.Success").await {
        MiningOwned::SubmitSharesSuccess(s) => {
            assert_eq!(s.channel_id, channel_id);
            assert_eq!(s.last_sequence_number, seq);
            assert_eq!(s.new_submits_accepted_count, 1);
        }
        other => panic!("expected SubmitShares.Success, got {other:?}"),
    }
}

async fn expect_error(p: &mut RawPeer<DuplexStream>, channel_id: u32, seq: u32, code: &str) {
    match next(p, "SubmitShares.Error").await {
        MiningOwned::SubmitSharesError(e) => {
            assert_eq!((e.channel_id, e.sequence_number), (channel_id, seq));
            assert_eq!(e.error_code.as_utf8_or_hex(), code);
        }
        other => panic!("expected SubmitShares.Error {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_and_extended_channels_jobs_shares_and_errors() {
    let h = start();
    // A: an end device needing standard jobs; opens its channel before any template exists.
    let mut a = h.connect(REQUIRES_STANDARD_JOBS).await;
    let std_ch = open_standard_channel(&mut a, 1).await;
    assert_eq!(
        std_ch.id, 2,
        "channel ids start after the group channel (1)"
    );
    assert_eq!(std_ch.prefix.len(), 20);

    h.new_block(1, TIP_A, HARD_NBITS).await;
    let job_a = standard_job(&mut a).await;
    assert_eq!(job_a.channel_id, std_ch.id);
    assert!(
        job_a.min_ntime.clone().into_inner().is_none(),
        "future job first"
    );
    expect_prev_hash(&mut a, std_ch.id, job_a.job_id, TIP_A).await;

    // B: a proxy opening an extended channel once the template exists.
    let mut b = h.connect(0).await;
    let (ext_ch, extranonce_size) = open_extended_channel(&mut b, 7).await;
    assert_eq!(ext_ch.prefix.len() + usize::from(extranonce_size), 20);
    let job_b = extended_job(&mut b).await;
    assert_eq!(job_b.channel_id, ext_ch.id);
    expect_prev_hash(&mut b, ext_ch.id, job_b.job_id, TIP_A).await;

    // Valid shares.
    let share_a = mine_standard(&std_ch, 1, &job_a, TIP_A, HARD_NBITS, |_| true);
    a.send(share_a.clone()).await;
    expect_success(&mut a, std_ch.id, 1).await;
    let en = vec![0x42; usize::from(extranonce_size)];
    let share_b = mine_extended(&ext_ch, 1, &job_b, &en, TIP_A, HARD_NBITS);
    b.send(share_b.clone()).await;
    expect_success(&mut b, ext_ch.id, 1).await;

    // Unknown job id.
    a.send(with_job_id(&share_a, 0xdead, 2)).await;
    expect_error(&mut a, std_ch.id, 2, "invalid-job-id").await;
    // The same proof twice.
    b.send(with_job_id(&share_b, job_id_of(&share_b), 2)).await;
    expect_error(&mut b, ext_ch.id, 2, "duplicate-share").await;

    // A new block: A gets a standard job and its prevhash, B the group channel's.
    h.new_block(2, TIP_B, HARD_NBITS).await;
    let job_a2 = standard_job(&mut a).await;
    assert_ne!(job_a2.job_id, job_a.job_id);
    expect_prev_hash(&mut a, std_ch.id, job_a2.job_id, TIP_B).await;
    let group_job = extended_job(&mut b).await;
    assert_eq!(group_job.channel_id, 1, "broadcast on the group channel");
    assert_ne!(group_job.job_id, job_b.job_id);
    expect_prev_hash(&mut b, 1, group_job.job_id, TIP_B).await;

    // Shares for the old tip are stale.
    a.send(with_job_id(&share_a, job_a.job_id, 3)).await;
    expect_error(&mut a, std_ch.id, 3, "stale-share").await;
    let stale_b = mine_extended(&ext_ch, 3, &job_b, &[0x43; 16], TIP_A, HARD_NBITS);
    b.send(stale_b).await;
    expect_error(&mut b, ext_ch.id, 3, "stale-share").await;
    // And the group job is good on the extended channel.
    b.send(mine_extended(
        &ext_ch,
        4,
        &group_job,
        &[0x44; 16],
        TIP_B,
        HARD_NBITS,
    ))
    .await;
    expect_success(&mut b, ext_ch.id, 4).await;

    h.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_never_share_an_extranonce_prefix() {
    let h = start();
    h.new_block(1, TIP_A, HARD_NBITS).await;
    let mut allocated = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..3 {
        let mut p = h.connect(0).await;
        let s = open_standard_channel(&mut p, 1).await;
        // Skip its first job and prevhash.
        next(&mut p, "job").await;
        next(&mut p, "prevhash").await;
        let (e, size) = open_extended_channel(&mut p, 2).await;
        assert_eq!(s.prefix.len(), e.prefix.len() + usize::from(size));
        // The allocated part of a standard prefix is as long as an extended prefix; the rest
        // is zero padding.
        assert!(s.prefix[e.prefix.len()..].iter().all(|b| *b == 0));
        allocated.push(s.prefix[..e.prefix.len()].to_vec());
        allocated.push(e.prefix.clone());
        // Keep the connection open while the others allocate.
        peers.push(p);
    }
    for (i, x) in allocated.iter().enumerate() {
        for y in &allocated[i + 1..] {
            assert_ne!(x, y, "two channels got the same extranonce prefix");
        }
    }
    h.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_solution_goes_to_the_template_source() {
    let mut h = start();
    h.new_block(3, TIP_A, REGTEST_NBITS).await;
    let mut p = h.connect(REQUIRES_STANDARD_JOBS).await;
    let ch = open_standard_channel(&mut p, 1).await;
    let job = standard_job(&mut p).await;
    expect_prev_hash(&mut p, ch.id, job.job_id, TIP_A).await;
    let network = nbits_to_target(REGTEST_NBITS);
    let share = mine_standard(&ch, 1, &job, TIP_A, REGTEST_NBITS, |hash| {
        hash_meets_target(hash, &network)
    });
    p.send(share.clone()).await;
    expect_success(&mut p, ch.id, 1).await;

    // An empty template: SubmitSolution only (no RequestTransactionData).
    let solution: SubmitSolutionOwned =
        match within(5, "SubmitSolution", h.template_rx.recv()).await {
            Some(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::SubmitSolution(s),
            ))) => s,
            other => panic!("expected SubmitSolution, got {other:?}"),
        };
    let Sv2Message::Mining(MiningOwned::SubmitSharesStandard(sent)) = share else {
        unreachable!()
    };
    assert_eq!(solution.template_id, 3);
    assert_eq!(solution.header_nonce, sent.nonce);
    assert_eq!(solution.header_timestamp, sent.ntime);
    assert_eq!(solution.version, sent.version);
    let coinbase: Transaction = deserialize(solution.coinbase_tx.as_bytes()).unwrap();
    assert!(coinbase.is_coinbase());
    assert_eq!(
        coinbase.input[0].witness.len(),
        1,
        "with its BIP141 witness"
    );

    let found = loop {
        match within(5, "BlockFound event", h.events.recv()).await {
            Some(MiningEvent::BlockFound(b)) => break b,
            Some(_) => continue,
            None => panic!("events closed"),
        }
    };
    let block: Block = deserialize(found.block.as_ref().unwrap()).unwrap();
    assert_eq!(block.block_hash(), found.hash);
    assert!(block.check_merkle_root() && block.check_witness_commitment());
    assert!(block.header.validate_pow(network).is_ok());
    assert_eq!(block.txdata[0], coinbase);
    assert_eq!(found.height, Some(200));
    assert_eq!(
        found.hash.to_byte_array()[..],
        block.block_hash().to_byte_array()[..]
    );
    h.handle.shutdown().await;
}

/// The server's own handler timer, on paused tokio time, with no ticker task and nothing sent
/// to it: a Stats event every virtual second, and vardiff easing a silent channel's target
/// one vardiff period (60 s) after its first run.
#[tokio::test(start_paused = true)]
async fn the_handler_timer_drives_stats_and_vardiff_on_paused_time_with_no_ticker() {
    let mut h = start();
    // The first timer is due at once: it is what gives the server (and vardiff) its time.
    match within(5, "first Stats event", h.events.recv()).await {
        Some(MiningEvent::Stats(s)) => assert_eq!((s.connections, s.channels), (0, 0)),
        other => panic!("expected Stats, got {other:?}"),
    }
    let t0 = tokio::time::Instant::now();
    let mut p = h.connect(0).await;
    let ch = open_standard_channel_at(&mut p, 1, 1.0e12).await;
    // A silent channel for a whole vardiff period: its target is eased (hashrate / 3). The
    // virtual clock moves on by itself from timer to timer while the test waits.
    match within(300, "vardiff's SetTarget", p.recv()).await {
        Some(Sv2Message::Mining(MiningOwned::SetTarget(t))) => {
            assert_eq!(t.channel_id, ch.id);
            assert!(Target::from_le_bytes(t.maximum_target.to_array()) > ch.target);
        }
        other => panic!("expected SetTarget, got {other:?}"),
    }
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(60),
        "vardiff runs one vardiff_period after its first run"
    );
    // Meanwhile one Stats event per timer_period (1 s): 60 in those 60 s.
    let mut stats = Vec::new();
    while let Ok(e) = h.events.try_recv() {
        if let MiningEvent::Stats(s) = e {
            assert_eq!((s.connections, s.channels, s.shares_accepted), (1, 1, 0));
            stats.push(s);
        }
    }
    assert_eq!(stats.len(), 60, "one Stats per virtual second");
    // The next one exactly at its deadline, not before.
    let before = h.events.len();
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(h.events.len(), before, "no timer before the next deadline");
    let next = within(5, "next Stats event", h.events.recv()).await;
    assert!(matches!(next, Some(MiningEvent::Stats(_))), "{next:?}");
    assert_eq!(t0.elapsed(), Duration::from_secs(61));
    h.handle.shutdown().await;
}
