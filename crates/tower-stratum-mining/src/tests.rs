//! Deterministic tests of [`MiningServer`] driven directly through its handler methods, with
//! the time passed in (no service, no IO).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::share_math::{self, hash_meets_target, nbits_to_target};
use crate::test_util::{self, HARD_NBITS, REGTEST_NBITS, TIP_TIME};
use crate::{ConfigError, MiningEvent, MiningServer, MiningServerConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::session::{
    str0255, CloseReason, ConnectionInfo, Role, REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING,
};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, Seq064KOwned, U256Owned};
use tower_stratum_core::stratum_core::bitcoin::consensus::{deserialize, serialize};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::{
    absolute::LockTime, transaction::Version, Amount, Block, OutPoint, ScriptBuf, Sequence, Target,
    Transaction, TxIn, TxOut, Txid, Witness,
};
use tower_stratum_core::stratum_core::mining_sv2::*;
use tower_stratum_core::stratum_core::parsers_sv2::{MiningOwned, TemplateDistributionOwned};
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataSuccessOwned, SetNewPrevHashOwned,
};
use tower_stratum_core::{
    Action, Actions, ConnectionContext, ConnectionId, SiblingMessage, Subprotocol, Sv2Message,
};

const TIP_A: [u8; 32] = [0xaa; 32];
const TIP_B: [u8; 32] = [0xbb; 32];
const VALUE: u64 = 50 * 100_000_000;

fn payout() -> ScriptBuf {
    // OP_TRUE: any non-empty script will do for tests.
    ScriptBuf::from_bytes(vec![0x51])
}

fn config() -> MiningServerConfig {
    MiningServerConfig {
        coinbase_output_script: payout(),
        pool_signature: "test".into(),
        ..MiningServerConfig::default()
    }
}

fn server() -> MiningServer {
    MiningServer::new(config()).unwrap()
}

fn ctx(id: u64, flags: u32) -> ConnectionContext {
    ConnectionContext {
        id: ConnectionId(id),
        peer: None,
        role: Role::Server,
        info: ConnectionInfo {
            protocol: Subprotocol::Mining,
            version: 2,
            flags,
            success_flags: 0,
            extensions: Default::default(),
        },
    }
}

fn td(m: TemplateDistributionOwned) -> SiblingMessage {
    SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m))
}

async fn send_template(s: &mut MiningServer, t: NewTemplateOwned) -> Actions {
    s.handle_sibling_message(td(TemplateDistributionOwned::NewTemplate(t)))
        .await
}

async fn send_prev_hash(s: &mut MiningServer, p: SetNewPrevHashOwned) -> Actions {
    s.handle_sibling_message(td(TemplateDistributionOwned::SetNewPrevHash(p)))
        .await
}

/// Template `id` (future) + its tip.
async fn new_block(s: &mut MiningServer, id: u64, tip: [u8; 32], nbits: u32) -> Actions {
    let mut a = send_template(s, test_util::template(id, true, 200, VALUE, vec![])).await;
    a.extend(send_prev_hash(s, test_util::prev_hash(id, tip, nbits)).await);
    a
}

fn open_standard_msg(request_id: u32, nominal: f32) -> OpenStandardMiningChannelOwned {
    OpenStandardMiningChannelOwned {
        request_id,
        user_identity: str0255("tester").unwrap(),
        nominal_hash_rate: nominal,
        max_target: U256Owned::from([0xff; 32]),
    }
}

fn open_extended_msg(request_id: u32, min_extranonce: u16) -> OpenExtendedMiningChannelOwned {
    OpenExtendedMiningChannelOwned {
        request_id,
        user_identity: str0255("tester").unwrap(),
        nominal_hash_rate: 1.0,
        max_target: U256Owned::from([0xff; 32]),
        min_extranonce_size: min_extranonce,
    }
}

/// The mining messages of `actions`, with `None` for replies and `Some(id)` for `SendTo`.
fn mining(actions: &Actions) -> Vec<(Option<ConnectionId>, MiningOwned)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(Sv2Message::Mining(m)) => Some((None, m.clone())),
            Action::SendTo(id, Sv2Message::Mining(m)) => Some((Some(*id), m.clone())),
            _ => None,
        })
        .collect()
}

fn to_sibling(actions: &Actions) -> Vec<TemplateDistributionOwned> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToSibling(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m))) => {
                Some(m.clone())
            }
            _ => None,
        })
        .collect()
}

fn names(actions: &Actions) -> Vec<&'static str> {
    actions.iter().map(action_name).collect()
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Reply(m) | Action::SendTo(_, m) => m.name(),
        Action::ToSibling(SiblingMessage::Sv2(m)) => m.name(),
        Action::ToSibling(_) => "custom",
        Action::Close(_) => "Close",
        Action::Disconnect(..) => "Disconnect",
        _ => "other",
    }
}

fn submit_error_code(actions: &Actions) -> String {
    match mining(actions).as_slice() {
        [(None, MiningOwned::SubmitSharesError(e))] => e.error_code.as_utf8_or_hex(),
        other => panic!("expected one SubmitShares.Error, got {other:?}"),
    }
}

fn submit_success(actions: &Actions) -> SubmitSharesSuccessOwned {
    mining(actions)
        .into_iter()
        .find_map(|(_, m)| match m {
            MiningOwned::SubmitSharesSuccess(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("expected SubmitShares.Success in {:?}", names(actions)))
}

struct StdChannel {
    channel_id: u32,
    target: Target,
    prefix: Vec<u8>,
}

fn std_success(actions: &Actions) -> StdChannel {
    match mining(actions).first() {
        Some((None, MiningOwned::OpenStandardMiningChannelSuccess(s))) => StdChannel {
            channel_id: s.channel_id,
            target: Target::from_le_bytes(s.target.to_array()),
            prefix: s.extranonce_prefix.as_bytes().to_vec(),
        },
        other => panic!("expected OpenStandardMiningChannel.Success, got {other:?}"),
    }
}

struct ExtChannel {
    channel_id: u32,
    target: Target,
    prefix: Vec<u8>,
    extranonce_size: u16,
}

fn ext_success(actions: &Actions) -> ExtChannel {
    match mining(actions).first() {
        Some((None, MiningOwned::OpenExtendedMiningChannelSuccess(s))) => ExtChannel {
            channel_id: s.channel_id,
            target: Target::from_le_bytes(s.target.to_array()),
            prefix: s.extranonce_prefix.as_bytes().to_vec(),
            extranonce_size: s.extranonce_size,
        },
        other => panic!("expected OpenExtendedMiningChannel.Success, got {other:?}"),
    }
}

fn standard_jobs(actions: &Actions) -> Vec<NewMiningJobOwned> {
    mining(actions)
        .into_iter()
        .filter_map(|(_, m)| match m {
            MiningOwned::NewMiningJob(j) => Some(j),
            _ => None,
        })
        .collect()
}

/// Share 1 of extended channel `ch` on `job` (tip [`TIP_A`], extranonce `[1; 16]`) whose header
/// meets the regtest network target: a block.
fn extended_block_share(
    ch: &ExtChannel,
    job: &NewExtendedMiningJobOwned,
) -> SubmitSharesExtendedOwned {
    let net = nbits_to_target(REGTEST_NBITS);
    let en = [1u8; 16];
    let root = test_util::extended_merkle_root(job, &ch.prefix, &en).unwrap();
    let sol = test_util::solve(
        job.version,
        &TIP_A,
        &root,
        TIP_TIME,
        REGTEST_NBITS,
        &ch.target,
        0,
        |h| hash_meets_target(h, &net),
    )
    .unwrap();
    SubmitSharesExtendedOwned {
        channel_id: ch.channel_id,
        sequence_number: 1,
        job_id: job.job_id,
        nonce: sol.nonce,
        ntime: TIP_TIME,
        version: job.version,
        extranonce: B032Owned::try_from(en.to_vec()).unwrap(),
    }
}

fn extended_jobs(actions: &Actions) -> Vec<NewExtendedMiningJobOwned> {
    mining(actions)
        .into_iter()
        .filter_map(|(_, m)| match m {
            MiningOwned::NewExtendedMiningJob(j) => Some(j),
            _ => None,
        })
        .collect()
}

fn prev_hashes(actions: &Actions) -> Vec<SetNewPrevHashOwned_> {
    mining(actions)
        .into_iter()
        .filter_map(|(_, m)| match m {
            MiningOwned::SetNewPrevHash(p) => Some(p),
            _ => None,
        })
        .collect()
}

type SetNewPrevHashOwned_ = tower_stratum_core::stratum_core::mining_sv2::SetNewPrevHashOwned;

/// A standard share for `merkle_root` meeting `target`, optionally required not to solve a
/// block at `nbits`.
fn standard_share(
    channel_id: u32,
    seq: u32,
    job_id: u32,
    merkle_root: [u8; 32],
    tip: [u8; 32],
    nbits: u32,
    target: &Target,
) -> SubmitSharesStandardOwned {
    let sol = test_util::solve(
        0x2000_0000,
        &tip,
        &merkle_root,
        TIP_TIME,
        nbits,
        target,
        0,
        |_| true,
    )
    .expect("solvable");
    SubmitSharesStandardOwned {
        channel_id,
        sequence_number: seq,
        job_id,
        nonce: sol.nonce,
        ntime: TIP_TIME,
        version: 0x2000_0000,
    }
}

#[allow(clippy::too_many_arguments)]
fn extended_share(
    ch: &ExtChannel,
    seq: u32,
    job: &NewExtendedMiningJobOwned,
    extranonce: &[u8],
    tip: [u8; 32],
    nbits: u32,
    start: u32,
) -> SubmitSharesExtendedOwned {
    let root = test_util::extended_merkle_root(job, &ch.prefix, extranonce).expect("coinbase");
    let sol = test_util::solve(
        job.version,
        &tip,
        &root,
        TIP_TIME,
        nbits,
        &ch.target,
        start,
        |_| true,
    )
    .expect("solvable");
    SubmitSharesExtendedOwned {
        channel_id: ch.channel_id,
        sequence_number: seq,
        job_id: job.job_id,
        nonce: sol.nonce,
        ntime: TIP_TIME,
        version: job.version,
        extranonce: B032Owned::try_from(extranonce.to_vec()).unwrap(),
    }
}

#[test]
fn config_errors() {
    assert_eq!(
        MiningServer::new(MiningServerConfig::default()).unwrap_err(),
        ConfigError::MissingCoinbaseOutputScript
    );
    let bad = |f: fn(&mut MiningServerConfig)| {
        let mut c = config();
        f(&mut c);
        MiningServer::new(c).unwrap_err()
    };
    assert_eq!(
        bad(|c| c.share_batch_size = 0),
        ConfigError::ZeroShareBatchSize
    );
    assert!(matches!(
        bad(|c| c.shares_per_minute = 0.0),
        ConfigError::InvalidSharesPerMinute(_)
    ));
    assert!(matches!(
        bad(|c| c.extranonce_len = 33),
        ConfigError::ExtranonceLayout(_)
    ));
    assert!(matches!(
        bad(|c| c.server_id = vec![0; 19]),
        ConfigError::ExtranonceLayout(_)
    ));
    assert!(matches!(
        bad(|c| c.pool_signature = "x".repeat(80)),
        ConfigError::ScriptSigTooLarge(80)
    ));
    assert!(matches!(
        bad(|c| c.min_share_difficulty = Some(-1.0)),
        ConfigError::InvalidMinShareDifficulty(_)
    ));
    assert_eq!(
        bad(|c| c.timer_period = Duration::ZERO),
        ConfigError::ZeroDuration("timer_period")
    );
}

#[tokio::test]
async fn the_timer_is_due_at_once_then_every_timer_period_after_the_last_call() {
    let before = Instant::now();
    let mut s = MiningServer::new(MiningServerConfig {
        timer_period: Duration::from_millis(250),
        ..config()
    })
    .unwrap();
    // Due from creation on, so a runtime calls it as soon as it serves the server.
    let first = s.poll_timeout().unwrap();
    assert!(first >= before && first <= Instant::now(), "{first:?}");
    let t0 = Instant::now() + Duration::from_secs(5);
    s.on_timer(t0).await;
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    // Late (the runtime was busy): the next deadline counts from the call, not the old one.
    let late = t0 + Duration::from_secs(3);
    s.on_timer(late).await;
    assert_eq!(s.poll_timeout(), Some(late + Duration::from_millis(250)));
    // A period too long for an Instant: no more timers, rather than an overflow.
    let mut never = MiningServer::new(MiningServerConfig {
        timer_period: Duration::MAX,
        ..config()
    })
    .unwrap();
    never.on_timer(t0).await;
    assert_eq!(never.poll_timeout(), None);
}

#[tokio::test]
async fn every_timer_reports_stats_then_workers_and_ignores_custom_sibling_messages() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut s = server().with_event_sink(move |e| sink.lock().unwrap().push(e));
    let c = ctx(1, 0);
    let t0 = Instant::now();
    s.on_timer(t0).await;
    {
        let ev = events.lock().unwrap();
        // No worker yet: Stats only.
        assert!(
            matches!(ev.as_slice(), [MiningEvent::Stats(st)] if st.workers == 0),
            "{ev:?}"
        );
    }
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    let share = extended_share(&ch, 1, &job, &[7; 16], TIP_A, HARD_NBITS, 0);
    submit_success(&s.handle_submit_shares_extended(c, share).await);
    // Anything custom on the sibling link is not a timer (there is no tick message).
    assert!(s
        .handle_sibling_message(SiblingMessage::custom(t0 + Duration::from_secs(61)))
        .await
        .is_empty());
    assert_eq!(events.lock().unwrap().len(), 1, "no stats without a timer");
    s.on_timer(t0 + Duration::from_secs(1)).await;
    let ev = events.lock().unwrap();
    match &ev[1..] {
        [MiningEvent::Stats(st), MiningEvent::Workers(w)] => {
            assert_eq!((st.connections, st.channels, st.shares_accepted), (1, 1, 1));
            assert_eq!(st.workers, 1);
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].shares_accepted, 1);
        }
        other => panic!("expected Stats then Workers, got {other:?}"),
    }
}

#[test]
fn setup_flags_follow_version_rolling() {
    let s = server().setup_support().unwrap();
    assert_eq!(
        s.supported_flags,
        REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING
    );
    assert_eq!(s.success_flags, 0);
    let mut c = config();
    c.version_rolling = false;
    let s = MiningServer::new(c).unwrap().setup_support().unwrap();
    assert_eq!(s.supported_flags, REQUIRES_STANDARD_JOBS);
    assert_eq!(s.success_flags, REQUIRES_FIXED_VERSION);
}

#[tokio::test]
async fn standard_jobs_shares_and_error_codes() {
    let mut s = server();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(7, 1.0))
        .await;
    assert_eq!(
        names(&a),
        [
            "OpenStandardMiningChannelSuccess",
            "NewMiningJob",
            "SetNewPrevHashMiningProtocol"
        ]
    );
    let ch = std_success(&a);
    assert_eq!(ch.channel_id, 2, "group channel is 1, channels from 2");
    assert_eq!(ch.prefix.len(), 20);
    let job = &standard_jobs(&a)[0];
    assert!(
        job.min_ntime.clone().into_inner().is_none(),
        "first job is a future job"
    );
    let snph = &prev_hashes(&a)[0];
    assert_eq!((snph.channel_id, snph.job_id), (ch.channel_id, job.job_id));
    assert_eq!(snph.prev_hash.to_array(), TIP_A);
    assert_eq!(snph.min_ntime, TIP_TIME);

    // A valid share.
    let share = standard_share(
        ch.channel_id,
        1,
        job.job_id,
        job.merkle_root.to_array(),
        TIP_A,
        HARD_NBITS,
        &ch.target,
    );
    let a = s.handle_submit_shares_standard(c, share.clone()).await;
    let ok = submit_success(&a);
    assert_eq!(
        (
            ok.channel_id,
            ok.last_sequence_number,
            ok.new_submits_accepted_count
        ),
        (ch.channel_id, 1, 1)
    );
    // The same share again: duplicate.
    let mut dup = share.clone();
    dup.sequence_number = 2;
    let a = s.handle_submit_shares_standard(c, dup).await;
    assert_eq!(submit_error_code(&a), "duplicate-share");
    // Unknown job.
    let mut bad = share.clone();
    bad.job_id = 9999;
    let a = s.handle_submit_shares_standard(c, bad).await;
    assert_eq!(submit_error_code(&a), "invalid-job-id");
    // Unknown channel.
    let mut bad = share.clone();
    bad.channel_id = 77;
    let a = s.handle_submit_shares_standard(c, bad).await;
    assert_eq!(submit_error_code(&a), "invalid-channel-id");
    // ntime before min_ntime.
    let mut bad = share.clone();
    bad.ntime = TIP_TIME - 1;
    let a = s.handle_submit_shares_standard(c, bad).await;
    assert_eq!(submit_error_code(&a), "invalid-share");
    // A non-rollable version bit.
    let mut bad = share.clone();
    bad.version ^= 0x4000_0000;
    let a = s.handle_submit_shares_standard(c, bad).await;
    assert_eq!(submit_error_code(&a), "invalid-non-rollable-version-bit");
    // Too easy: find a nonce above the channel target.
    let root = job.merkle_root.to_array();
    let easy = (0u32..)
        .find(|n| {
            let h = share_math::header_hash(&share_math::header_bytes(
                0x2000_0000,
                &TIP_A,
                &root,
                TIP_TIME,
                HARD_NBITS,
                *n,
            ));
            !hash_meets_target(&h, &ch.target)
        })
        .unwrap();
    let mut bad = share.clone();
    bad.nonce = easy;
    let a = s.handle_submit_shares_standard(c, bad).await;
    assert_eq!(submit_error_code(&a), "difficulty-too-low");

    // New block: the old job is stale.
    let a = new_block(&mut s, 2, TIP_B, HARD_NBITS).await;
    assert_eq!(names(&a), ["NewMiningJob", "SetNewPrevHashMiningProtocol"]);
    let new_job = &standard_jobs(&a)[0];
    assert_ne!(new_job.job_id, job.job_id, "job ids are not reused");
    let mut stale = share.clone();
    stale.sequence_number = 10;
    let a = s.handle_submit_shares_standard(c, stale).await;
    assert_eq!(submit_error_code(&a), "stale-share");
    let st = s.stats();
    assert_eq!((st.shares_accepted, st.shares_rejected), (1, 7));
    assert_eq!((st.connections, st.channels), (1, 1));
}

#[tokio::test]
async fn non_future_template_is_an_active_job() {
    let mut s = server();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let ch = std_success(
        &s.handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
            .await,
    );
    let a = send_template(
        &mut s,
        test_util::template(2, false, 200, VALUE - 1, vec![]),
    )
    .await;
    let job = &standard_jobs(&a)[0];
    assert_eq!(job.min_ntime.clone().into_inner(), Some(TIP_TIME));
    let share = standard_share(
        ch.channel_id,
        1,
        job.job_id,
        job.merkle_root.to_array(),
        TIP_A,
        HARD_NBITS,
        &ch.target,
    );
    submit_success(&s.handle_submit_shares_standard(c, share).await);
}

#[tokio::test]
async fn group_channel_broadcast_for_standard_channels() {
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    // Opened before any template: just the success.
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
        .await;
    assert_eq!(names(&a), ["OpenStandardMiningChannelSuccess"]);
    let ch = std_success(&a);
    let a = new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    assert_eq!(
        names(&a),
        ["NewExtendedMiningJob", "SetNewPrevHashMiningProtocol"]
    );
    let job = &extended_jobs(&a)[0];
    assert_eq!(job.channel_id, 1, "sent on the group channel");
    assert!(job.version_rolling_allowed);
    let snph = &prev_hashes(&a)[0];
    assert_eq!((snph.channel_id, snph.job_id), (1, job.job_id));
    assert!(mining(&a).iter().all(|(to, _)| *to == Some(c.id)));
    // A proxy derives the standard job's merkle root from its extranonce_prefix.
    let root = test_util::extended_merkle_root(job, &ch.prefix, &[]).unwrap();
    let share = standard_share(
        ch.channel_id,
        1,
        job.job_id,
        root,
        TIP_A,
        HARD_NBITS,
        &ch.target,
    );
    submit_success(&s.handle_submit_shares_standard(c, share).await);
}

#[tokio::test]
async fn extended_channel_jobs_and_extranonce_checks() {
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(3, 8))
        .await;
    assert_eq!(
        names(&a),
        [
            "OpenExtendedMiningChannelSuccess",
            "NewExtendedMiningJob",
            "SetNewPrevHashMiningProtocol"
        ]
    );
    let ch = ext_success(&a);
    assert_eq!(ch.prefix.len() + usize::from(ch.extranonce_size), 20);
    assert_eq!(ch.extranonce_size, 16, "the whole rollable space, as SRI");
    let job = &extended_jobs(&a)[0];
    assert_eq!(job.channel_id, ch.channel_id);
    // BIP141 data is stripped from what miners get (spec 5.3.16): the coinbase they build is a
    // legacy-serialized transaction, no marker/flag, no witness.
    let prefix = job.coinbase_tx_prefix.as_bytes();
    assert_ne!((prefix[4], prefix[5]), (0x00, 0x01));
    let mut raw = prefix.to_vec();
    raw.extend(&ch.prefix);
    raw.extend([0u8; 16]);
    raw.extend(job.coinbase_tx_suffix.as_bytes());
    let tx: Transaction = deserialize(&raw).unwrap();
    assert!(tx.input[0].witness.is_empty());
    assert_eq!(serialize(&tx), raw, "no witness bytes anywhere");
    let en = [7u8; 16];
    let share = extended_share(&ch, 1, job, &en, TIP_A, HARD_NBITS, 0);
    submit_success(&s.handle_submit_shares_extended(c, share.clone()).await);
    let mut bad = share.clone();
    bad.extranonce = B032Owned::try_from(vec![7u8; 8]).unwrap();
    let a = s.handle_submit_shares_extended(c, bad).await;
    assert_eq!(submit_error_code(&a), "bad-extranonce-size");
    // A standard share on an extended channel id is an unknown channel.
    let a = s
        .handle_submit_shares_standard(
            c,
            SubmitSharesStandardOwned {
                channel_id: ch.channel_id,
                sequence_number: 9,
                job_id: job.job_id,
                nonce: 0,
                ntime: TIP_TIME,
                version: job.version,
            },
        )
        .await;
    assert_eq!(submit_error_code(&a), "invalid-channel-id");
    // Too large a minimum extranonce.
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(4, 17))
        .await;
    match mining(&a).as_slice() {
        [(None, MiningOwned::OpenMiningChannelError(e))] => {
            assert_eq!(e.request_id, 4);
            assert_eq!(
                e.error_code.as_utf8_or_hex(),
                "min-extranonce-size-too-large"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn extended_channels_refused_with_requires_standard_jobs() {
    let mut s = server();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(5, 0))
        .await;
    match mining(&a).as_slice() {
        [(None, MiningOwned::OpenMiningChannelError(e))] => assert_eq!(
            e.error_code.as_utf8_or_hex(),
            "extended-channels-not-supported-for-standard-jobs"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn extranonce_prefixes_are_unique_across_connections_and_released() {
    let mut s = server();
    let mut prefixes = Vec::new();
    for id in 1..=3u64 {
        let c = ctx(id, 0);
        s.on_connection_added(c).await;
        prefixes.push(
            std_success(
                &s.handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
                    .await,
            )
            .prefix,
        );
        prefixes.push(
            ext_success(
                &s.handle_open_extended_mining_channel(c, open_extended_msg(2, 4))
                    .await,
            )
            .prefix,
        );
    }
    // Compare the allocated part (server id + channel index: the extended prefix length).
    let allocated: Vec<Vec<u8>> = prefixes.iter().map(|p| p[..4].to_vec()).collect();
    for (i, a) in allocated.iter().enumerate() {
        for b in &allocated[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(s.stats().channels, 6);
    s.on_connection_removed(ctx(1, 0), CloseReason::PeerClosed)
        .await;
    assert_eq!(s.stats().channels, 4);
    assert_eq!(
        s.allocator.allocated_count(),
        4,
        "closed channels release their prefix"
    );
    s.handle_close_channel(
        ctx(2, 0),
        CloseChannelOwned {
            channel_id: 2,
            reason_code: str0255("bye").unwrap(),
        },
    )
    .await;
    assert_eq!(s.allocator.allocated_count(), 3);
    // Closing the group channel closes the rest of that connection's channels.
    s.handle_close_channel(
        ctx(3, 0),
        CloseChannelOwned {
            channel_id: 1,
            reason_code: str0255("bye").unwrap(),
        },
    )
    .await;
    assert_eq!(s.allocator.allocated_count(), 1);
}

#[tokio::test]
async fn batched_acknowledgements() {
    let mut cfg = config();
    cfg.share_batch_size = 3;
    let mut s = MiningServer::new(cfg).unwrap();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    let mut acks = Vec::new();
    for seq in 1..=6u32 {
        let share = extended_share(
            &ch,
            seq,
            &job,
            &seq.to_le_bytes().repeat(4),
            TIP_A,
            HARD_NBITS,
            0,
        );
        let a = s.handle_submit_shares_extended(c, share).await;
        if !a.is_empty() {
            acks.push((seq, submit_success(&a)));
        }
    }
    assert_eq!(acks.len(), 2);
    for (seq, ack) in acks {
        assert_eq!(ack.last_sequence_number, seq);
        assert_eq!(ack.new_submits_accepted_count, 3);
        assert_eq!(seq % 3, 0);
    }
}

#[tokio::test]
async fn block_found_submits_solution_and_keeps_the_block() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut s = server().with_event_sink(move |e| sink.lock().unwrap().push(e));
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 5, TIP_A, REGTEST_NBITS).await;
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
        .await;
    let ch = std_success(&a);
    let job = &standard_jobs(&a)[0];
    let net = nbits_to_target(REGTEST_NBITS);
    let sol = test_util::solve(
        0x2000_0000,
        &TIP_A,
        &job.merkle_root.to_array(),
        TIP_TIME,
        REGTEST_NBITS,
        &ch.target,
        0,
        |h| hash_meets_target(h, &net),
    )
    .unwrap();
    let share = SubmitSharesStandardOwned {
        channel_id: ch.channel_id,
        sequence_number: 1,
        job_id: job.job_id,
        nonce: sol.nonce,
        ntime: TIP_TIME,
        version: 0x2000_0000,
    };
    let a = s.handle_submit_shares_standard(c, share).await;
    submit_success(&a);
    let solution = match to_sibling(&a).as_slice() {
        [TemplateDistributionOwned::SubmitSolution(s)] => s.clone(),
        other => panic!("expected only SubmitSolution (empty template), got {other:?}"),
    };
    assert_eq!(solution.template_id, 5);
    assert_eq!(solution.header_nonce, sol.nonce);
    assert_eq!(solution.header_timestamp, TIP_TIME);
    assert_eq!(solution.version, 0x2000_0000);
    let coinbase: Transaction = deserialize(solution.coinbase_tx.as_bytes()).unwrap();
    assert_eq!(
        coinbase.input[0].witness.len(),
        1,
        "coinbase keeps its BIP141 witness"
    );

    let found = &s.found_blocks()[0];
    assert_eq!(found.height, Some(200));
    assert_eq!(found.template_id, 5);
    assert_eq!(found.transaction_count, Some(0));
    assert_eq!(found.hash.to_byte_array(), sol.hash);
    let block: Block = deserialize(found.block.as_ref().unwrap()).unwrap();
    assert_eq!(block.block_hash(), found.hash);
    assert!(block.check_merkle_root());
    assert!(block.check_witness_commitment());
    assert_eq!(block.bip34_block_height().unwrap(), 200);
    assert_eq!(block.txdata[0].output[0].script_pubkey, payout());
    assert_eq!(block.txdata[0].output[0].value, Amount::from_sat(VALUE));
    assert!(block.header.target() == net && block.header.validate_pow(net).is_ok());
    assert_eq!(s.stats().blocks_found, 1);
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [MiningEvent::BlockFound(b)] if b.hash == found.hash
    ));
}

/// A transaction standing in for the template's mempool content.
fn dummy_tx() -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([3; 32]), 0),
            script_sig: ScriptBuf::from_bytes(vec![0x51]),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(1000),
            script_pubkey: payout(),
        }],
    }
}

#[tokio::test]
async fn block_with_transactions_is_completed_from_transaction_data() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut s = server().with_event_sink(move |e| sink.lock().unwrap().push(e));
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    let tx = dummy_tx();
    let txid = tx.compute_txid().to_byte_array();
    send_template(&mut s, test_util::template(9, true, 300, VALUE, vec![txid])).await;
    send_prev_hash(&mut s, test_util::prev_hash(9, TIP_A, REGTEST_NBITS)).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    assert_eq!(job.merkle_path.len(), 1);
    let share = extended_block_share(&ch, &job);
    let a = s.handle_submit_shares_extended(c, share).await;
    let sib = to_sibling(&a);
    assert!(matches!(
        sib[0],
        TemplateDistributionOwned::SubmitSolution(_)
    ));
    assert!(
        matches!(&sib[1], TemplateDistributionOwned::RequestTransactionData(r) if r.template_id == 9)
    );
    assert_eq!(s.found_blocks()[0].block, None);
    assert_eq!(s.found_blocks()[0].height, Some(300));

    s.handle_sibling_message(td(
        TemplateDistributionOwned::RequestTransactionDataSuccess(
            RequestTransactionDataSuccessOwned {
                template_id: 9,
                excess_data: Vec::new().try_into().unwrap(),
                transaction_list: Seq064KOwned::new(vec![serialize(&tx).try_into().unwrap()])
                    .unwrap(),
            },
        ),
    ))
    .await;
    let found = &s.found_blocks()[0];
    assert_eq!(found.transaction_count, Some(1));
    let block: Block = deserialize(found.block.as_ref().unwrap()).unwrap();
    assert_eq!(block.txdata.len(), 2);
    assert!(block.check_merkle_root());
    assert_eq!(block.block_hash(), found.hash);
    let ev = events.lock().unwrap();
    assert!(
        matches!(ev.as_slice(), [MiningEvent::BlockFound(_), MiningEvent::BlockCompleted(b)] if b.block.is_some())
    );
}

#[tokio::test]
async fn transactions_prefetched_with_the_template_complete_a_found_block_at_once() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut s = server().with_event_sink(move |e| sink.lock().unwrap().push(e));
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    let tx = dummy_tx();
    let txid = tx.compute_txid().to_byte_array();
    // A template with transactions: its transactions are asked for at once.
    let a = send_template(&mut s, test_util::template(9, true, 300, VALUE, vec![txid])).await;
    assert!(
        matches!(to_sibling(&a).as_slice(), [TemplateDistributionOwned::RequestTransactionData(r)] if r.template_id == 9)
    );
    // A coinbase-only one: nothing to ask.
    let a = send_template(&mut s, test_util::template(10, true, 300, VALUE, vec![])).await;
    assert!(to_sibling(&a).is_empty());
    s.handle_sibling_message(td(
        TemplateDistributionOwned::RequestTransactionDataSuccess(
            RequestTransactionDataSuccessOwned {
                template_id: 9,
                excess_data: vec![0u8; 32].try_into().unwrap(),
                transaction_list: Seq064KOwned::new(vec![serialize(&tx).try_into().unwrap()])
                    .unwrap(),
            },
        ),
    ))
    .await;
    send_prev_hash(&mut s, test_util::prev_hash(9, TIP_A, REGTEST_NBITS)).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    let share = extended_block_share(&ch, &job);
    let a = s.handle_submit_shares_extended(c, share).await;
    // SubmitSolution only: the transactions are already here.
    assert!(matches!(
        to_sibling(&a).as_slice(),
        [TemplateDistributionOwned::SubmitSolution(_)]
    ));
    let found = &s.found_blocks()[0];
    assert_eq!(found.transaction_count, Some(1));
    let block: Block = deserialize(found.block.as_ref().unwrap()).unwrap();
    assert_eq!(block.txdata.len(), 2);
    assert!(block.check_merkle_root());
    let ev = events.lock().unwrap();
    assert!(
        matches!(ev.as_slice(), [MiningEvent::BlockFound(_), MiningEvent::BlockCompleted(b)] if b.block.is_some())
    );
}

#[tokio::test]
async fn vardiff_lowers_the_target_of_a_silent_channel() {
    let mut s = server();
    let c = ctx(1, 0);
    let t0 = Instant::now();
    s.on_timer(t0).await;
    s.on_connection_added(c).await;
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0e12))
        .await;
    let ch = std_success(&a);
    // Within the period: nothing.
    assert!(s.on_timer(t0 + Duration::from_secs(30)).await.is_empty());
    // One vardiff period later, no shares at all: hashrate / 3, so a 3x easier target.
    let a = s.on_timer(t0 + Duration::from_secs(61)).await;
    match mining(&a).as_slice() {
        [(Some(id), MiningOwned::SetTarget(t))] => {
            assert_eq!(*id, c.id);
            assert_eq!(t.channel_id, ch.channel_id);
            let new = Target::from_le_bytes(t.maximum_target.to_array());
            assert!(new > ch.target);
            let ratio = share_math::target_to_difficulty(&ch.target)
                / share_math::target_to_difficulty(&new);
            assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn update_channel_sets_target_or_errors() {
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    let ch = std_success(
        &s.handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
            .await,
    );
    let a = s
        .handle_update_channel(
            c,
            UpdateChannelOwned {
                channel_id: ch.channel_id,
                nominal_hash_rate: 1.0e9,
                maximum_target: U256Owned::from([0xff; 32]),
            },
        )
        .await;
    match mining(&a).as_slice() {
        [(None, MiningOwned::SetTarget(t))] => {
            assert!(Target::from_le_bytes(t.maximum_target.to_array()) < ch.target)
        }
        other => panic!("{other:?}"),
    }
    let a = s
        .handle_update_channel(
            c,
            UpdateChannelOwned {
                channel_id: 99,
                nominal_hash_rate: 1.0,
                maximum_target: U256Owned::from([0xff; 32]),
            },
        )
        .await;
    match mining(&a).as_slice() {
        [(None, MiningOwned::UpdateChannelError(e))] => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "invalid-channel-id")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn min_share_difficulty_floors_the_target() {
    let mut cfg = config();
    cfg.min_share_difficulty = Some(1.0);
    let mut s = MiningServer::new(cfg).unwrap();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    let ch = std_success(
        &s.handle_open_standard_mining_channel(c, open_standard_msg(1, 0.0))
            .await,
    );
    assert_eq!(ch.target, share_math::DIFF1_TARGET);
}

#[tokio::test]
async fn fixed_version_rejects_rolled_versions() {
    let mut cfg = config();
    cfg.version_rolling = false;
    let mut s = MiningServer::new(cfg).unwrap();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
        .await;
    let ch = std_success(&a);
    let job = &standard_jobs(&a)[0];
    let share = SubmitSharesStandardOwned {
        channel_id: ch.channel_id,
        sequence_number: 1,
        job_id: job.job_id,
        nonce: 0,
        ntime: TIP_TIME,
        version: 0x2000_2000,
    };
    let a = s.handle_submit_shares_standard(c, share).await;
    assert_eq!(submit_error_code(&a), "version-rolling-not-allowed");
}

#[tokio::test]
async fn channel_opened_between_future_template_and_its_prev_hash() {
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    // The next block's future template arrives; its prevhash not yet.
    send_template(&mut s, test_util::template(2, true, 201, VALUE, vec![])).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    // Own future job + tip, then the pending group future job (the group was empty).
    assert_eq!(
        names(&a),
        [
            "OpenExtendedMiningChannelSuccess",
            "NewExtendedMiningJob",
            "SetNewPrevHashMiningProtocol",
            "NewExtendedMiningJob"
        ]
    );
    let ch = ext_success(&a);
    let jobs = extended_jobs(&a);
    let pending_job = &jobs[1];
    assert_eq!(pending_job.channel_id, 1);
    assert!(pending_job.min_ntime.clone().into_inner().is_none());
    assert_ne!(jobs[0].job_id, pending_job.job_id);
    // Its prevhash activates it on the group channel; shares for it are accepted.
    let a = send_prev_hash(&mut s, test_util::prev_hash(2, TIP_B, HARD_NBITS)).await;
    let snph = &prev_hashes(&a)[0];
    assert_eq!((snph.channel_id, snph.job_id), (1, pending_job.job_id));
    let share = extended_share(&ch, 1, pending_job, &[9; 16], TIP_B, HARD_NBITS, 0);
    submit_success(&s.handle_submit_shares_extended(c, share).await);
    // The first job is stale now.
    let share = extended_share(&ch, 2, &jobs[0], &[9; 16], TIP_A, HARD_NBITS, 0);
    assert_eq!(
        submit_error_code(&s.handle_submit_shares_extended(c, share).await),
        "stale-share"
    );
}

#[tokio::test]
async fn hashrate_estimate_from_accepted_shares() {
    let mut s = server();
    let c = ctx(1, 0);
    let t0 = Instant::now();
    s.on_timer(t0).await;
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    for seq in 1..=10u32 {
        let share = extended_share(
            &ch,
            seq,
            &job,
            &seq.to_le_bytes().repeat(4),
            TIP_A,
            HARD_NBITS,
            0,
        );
        submit_success(&s.handle_submit_shares_extended(c, share).await);
    }
    s.on_timer(t0 + Duration::from_secs(10)).await;
    let st = s.stats();
    let per_share =
        share_math::target_to_difficulty(&ch.target) * share_math::HASHES_PER_DIFFICULTY_1;
    let expected = 10.0 * per_share / 10.0;
    assert!(
        (st.hashrate_estimate_hs / expected - 1.0).abs() < 1e-6,
        "{st:?}"
    );
}

#[tokio::test]
async fn worker_hashrate_tracking_by_user_identity_tlv() {
    use tower_stratum_core::extensions::{Tlv, WORKER_HASHRATE_TRACKING};
    use tower_stratum_core::{ExtensionSet, TlvFields};
    // Offered in Extensions Negotiation only when configured.
    assert_eq!(
        server().extension_support().supported.as_slice(),
        [WORKER_HASHRATE_TRACKING]
    );
    let off = MiningServer::new(MiningServerConfig {
        worker_hashrate_tracking: false,
        ..config()
    })
    .unwrap();
    assert!(off.extension_support().is_empty());

    let mut s = server();
    let mut c = ctx(1, 0);
    c.info.extensions = ExtensionSet::from_ids(&[WORKER_HASHRATE_TRACKING]);
    let t0 = Instant::now();
    s.on_timer(t0).await;
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    let share = |seq: u32| {
        extended_share(
            &ch,
            seq,
            &job,
            &seq.to_le_bytes().repeat(4),
            TIP_A,
            HARD_NBITS,
            0,
        )
    };
    // Two workers behind one channel, three and one shares; one share without the field
    // counts for the channel's own user_identity ("tester").
    for (seq, worker) in [(1, "alice"), (2, "bob"), (3, "alice"), (4, "alice")] {
        let tlvs = TlvFields::user_identity(worker);
        submit_success(
            &s.handle_submit_shares_extended_with_tlvs(c, share(seq), tlvs)
                .await,
        );
    }
    submit_success(&s.handle_submit_shares_extended(c, share(5)).await);
    // Over 32 bytes: the share is rejected (spec 3.4.3) and counted nowhere per worker.
    let long =
        TlvFields::from_tlvs(&[Tlv::new(WORKER_HASHRATE_TRACKING, 1, vec![b'x'; 33])]).unwrap();
    let a = s
        .handle_submit_shares_extended_with_tlvs(c, share(6), long)
        .await;
    assert_eq!(submit_error_code(&a), "invalid-user-identity");
    s.on_timer(t0 + Duration::from_secs(10)).await;
    let w = s.worker_stats();
    let counts: Vec<(&str, u64)> = w
        .iter()
        .map(|w| (w.user_identity.as_str(), w.shares_accepted))
        .collect();
    assert_eq!(counts, [("alice", 3), ("bob", 1), ("tester", 1)]);
    let per_share =
        share_math::target_to_difficulty(&ch.target) * share_math::HASHES_PER_DIFFICULTY_1;
    assert!((w[0].hashrate_estimate_hs / (3.0 * per_share / 10.0) - 1.0).abs() < 1e-6);
    let st = s.stats();
    assert_eq!(
        (st.workers, st.shares_accepted, st.shares_rejected),
        (3, 5, 1)
    );
}

#[tokio::test]
async fn coinbase_output_constraints_cover_the_payout() {
    let s = server();
    let c = s.coinbase_output_constraints();
    // 8-byte value + 1-byte script length + 1-byte script.
    assert_eq!(c.coinbase_output_max_additional_size, 10);
}

#[tokio::test]
async fn channels_per_connection_are_capped() {
    let mut cfg = config();
    cfg.max_channels_per_connection = 2;
    let mut s = MiningServer::new(cfg).unwrap();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    std_success(
        &s.handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
            .await,
    );
    ext_success(
        &s.handle_open_extended_mining_channel(c, open_extended_msg(2, 0))
            .await,
    );
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(3, 1.0))
        .await;
    match mining(&a).as_slice() {
        [(None, MiningOwned::OpenMiningChannelError(e))] => {
            assert_eq!(e.request_id, 3);
            assert_eq!(e.error_code.as_utf8_or_hex(), "channel-capacity-exhausted");
        }
        other => panic!("{other:?}"),
    }
    // Another connection is not affected.
    let c2 = ctx(2, 0);
    s.on_connection_added(c2).await;
    std_success(
        &s.handle_open_standard_mining_channel(c2, open_standard_msg(1, 1.0))
            .await,
    );
}

#[tokio::test]
async fn job_ids_are_never_reused_on_a_channel() {
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    // The group channel issues ids before the channel exists.
    for id in 1..=3u64 {
        new_block(&mut s, id, [id as u8; 32], HARD_NBITS).await;
    }
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let mut seen: Vec<(u32, u32)> = extended_jobs(&a)
        .iter()
        .map(|j| (j.channel_id, j.job_id))
        .collect();
    let mut next_id = 10u64;
    for round in 0..10u8 {
        let a = new_block(&mut s, next_id, [0x40 + round; 32], HARD_NBITS).await;
        seen.extend(extended_jobs(&a).iter().map(|j| (j.channel_id, j.job_id)));
        next_id += 1;
        let a = send_template(
            &mut s,
            test_util::template(next_id, false, 200, VALUE - u64::from(round), vec![]),
        )
        .await;
        seen.extend(extended_jobs(&a).iter().map(|j| (j.channel_id, j.job_id)));
        next_id += 1;
    }
    assert_eq!(seen.len(), 21);
    assert!(seen
        .iter()
        .all(|(chan, _)| *chan == ch.channel_id || *chan == 1));
    let mut ids: Vec<u32> = seen.iter().map(|(_, j)| *j).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 21, "a job id was reused: {seen:?}");
}

// ---- Item 6: a channel's target is never harder than the network target. ----

#[tokio::test]
async fn channel_target_is_never_harder_than_the_network_target() {
    let net = nbits_to_target(REGTEST_NBITS);
    // Tip known at open: the Success already carries the network target.
    let mut s = server();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 5, TIP_A, REGTEST_NBITS).await;
    // 1 TH/s at 6 shares/min would be a target far harder than regtest's.
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0e12))
        .await;
    let ch = std_success(&a);
    assert_eq!(
        ch.target, net,
        "standard channel target capped at nBits 0x207fffff"
    );
    let c2 = ctx(2, 0);
    s.on_connection_added(c2).await;
    let mut m = open_extended_msg(2, 0);
    m.nominal_hash_rate = 1.0e12;
    let ch = ext_success(&s.handle_open_extended_mining_channel(c2, m).await);
    assert_eq!(ch.target, net, "extended channel target capped too");

    // Tip unknown at open: the first SetNewPrevHash brings a SetTarget before the jobs.
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    let mut m = open_extended_msg(1, 0);
    m.nominal_hash_rate = 1.0e12;
    let ch = ext_success(&s.handle_open_extended_mining_channel(c, m).await);
    assert!(ch.target < net);
    let a = new_block(&mut s, 7, TIP_A, REGTEST_NBITS).await;
    let set_targets: Vec<Target> = mining(&a)
        .into_iter()
        .filter_map(|(_, m)| match m {
            MiningOwned::SetTarget(t) => Some(Target::from_le_bytes(t.maximum_target.to_array())),
            _ => None,
        })
        .collect();
    assert_eq!(set_targets, vec![net]);

    // UpdateChannel with a huge hashrate: still capped.
    let a = s
        .handle_update_channel(
            c,
            UpdateChannelOwned {
                channel_id: ch.channel_id,
                nominal_hash_rate: 1.0e15,
                maximum_target: U256Owned::from([0xff; 32]),
            },
        )
        .await;
    match mining(&a).as_slice() {
        [(None, MiningOwned::SetTarget(t))] => {
            assert_eq!(Target::from_le_bytes(t.maximum_target.to_array()), net)
        }
        other => panic!("expected SetTarget, got {other:?}"),
    }

    // A client whose max_target is harder than the network target keeps its max_target.
    let mut s = server();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 5, TIP_A, REGTEST_NBITS).await;
    let hard = nbits_to_target(HARD_NBITS);
    let mut m = open_standard_msg(1, 1.0e12);
    m.max_target = U256Owned::from(hard.to_le_bytes());
    let ch = std_success(&s.handle_open_standard_mining_channel(c, m).await);
    assert!(ch.target <= hard && ch.target < net);

    // Cap turned off (a regtest demo): vardiff's target stands.
    let mut s = MiningServer::new(MiningServerConfig {
        cap_target_at_network: false,
        ..config()
    })
    .unwrap();
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 5, TIP_A, REGTEST_NBITS).await;
    let ch = std_success(
        &s.handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0e12))
            .await,
    );
    assert!(ch.target < net);

    // A network target harder than vardiff's: the channel keeps vardiff's.
    let mut s = server();
    let c = ctx(1, 0);
    s.on_connection_added(c).await;
    new_block(&mut s, 5, TIP_A, HARD_NBITS).await;
    let ch = ext_success(
        &s.handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
            .await,
    );
    assert!(ch.target > nbits_to_target(HARD_NBITS));
}

// ---- Issue 15: found blocks reach the keeper first, and are resubmitted until confirmed. ----

/// A recording keeper: every event as a short string.
fn recording_keeper() -> (Arc<Mutex<Vec<String>>>, impl crate::BlockKeeper) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let keeper = move |e: &crate::BlockEvent<'_>| {
        let line = match e {
            crate::BlockEvent::Found(b) => format!("found {}", b.hash),
            crate::BlockEvent::Completed(b) => format!("completed {}", b.hash),
            crate::BlockEvent::Submitted {
                attempt, trigger, ..
            } => format!("submitted {attempt} {}", trigger.as_str()),
            crate::BlockEvent::Confirmed { attempts, .. } => format!("confirmed {attempts}"),
            crate::BlockEvent::Stale { tip_height, .. } => format!("stale {tip_height}"),
            crate::BlockEvent::Abandoned { attempts, .. } => format!("abandoned {attempts}"),
        };
        l.lock().unwrap().push(line);
    };
    (log, keeper)
}

/// Server with a keeper, a standard channel on template 5 (height 200) over TIP_A, ticked at
/// `t0`; returns the server, the context, the channel and its job.
async fn block_server(
    keeper: impl crate::BlockKeeper,
    t0: Instant,
) -> (
    MiningServer,
    ConnectionContext,
    StdChannel,
    NewMiningJobOwned,
) {
    let mut s = server().with_block_keeper(keeper);
    s.on_timer(t0).await;
    let c = ctx(1, REQUIRES_STANDARD_JOBS);
    s.on_connection_added(c).await;
    new_block(&mut s, 5, TIP_A, REGTEST_NBITS).await;
    let a = s
        .handle_open_standard_mining_channel(c, open_standard_msg(1, 1.0))
        .await;
    let ch = std_success(&a);
    let job = standard_jobs(&a)[0].clone();
    (s, c, ch, job)
}

/// Submits a share of `job` that solves the block (nonces from `start`).
async fn solve_block(
    s: &mut MiningServer,
    c: ConnectionContext,
    ch: &StdChannel,
    job: &NewMiningJobOwned,
    seq: u32,
    start: u32,
) -> (Actions, test_util::Solution) {
    let net = nbits_to_target(REGTEST_NBITS);
    let sol = test_util::solve(
        0x2000_0000,
        &TIP_A,
        &job.merkle_root.to_array(),
        TIP_TIME,
        REGTEST_NBITS,
        &ch.target,
        start,
        |h| hash_meets_target(h, &net),
    )
    .unwrap();
    let share = SubmitSharesStandardOwned {
        channel_id: ch.channel_id,
        sequence_number: seq,
        job_id: job.job_id,
        nonce: sol.nonce,
        ntime: TIP_TIME,
        version: 0x2000_0000,
    };
    (s.handle_submit_shares_standard(c, share).await, sol)
}

fn solutions(a: &Actions) -> usize {
    to_sibling(a)
        .iter()
        .filter(|m| matches!(m, TemplateDistributionOwned::SubmitSolution(_)))
        .count()
}

#[tokio::test]
async fn found_block_is_on_disk_before_the_share_is_answered_and_confirmed_by_the_tip() {
    let dir = test_dir("keeper-order");
    let store = Arc::new(Mutex::new(crate::BlockStore::new(&dir, None)));
    let st = store.clone();
    let t0 = Instant::now();
    let (mut s, c, ch, job) = block_server(
        move |e: &crate::BlockEvent<'_>| {
            st.lock()
                .unwrap()
                .record(e, std::time::SystemTime::now())
                .unwrap();
        },
        t0,
    )
    .await;
    let (a, sol) = solve_block(&mut s, c, &ch, &job, 1, 0).await;
    // The handler has returned but none of its actions ran yet: no reply, no SubmitSolution
    // has gone anywhere, and the block is already on disk, whole.
    assert_eq!(solutions(&a), 1);
    submit_success(&a);
    let hash = s.found_blocks()[0].hash;
    let block_path = dir.join(format!("200-{hash}.block"));
    let bytes = std::fs::read(&block_path).unwrap();
    let block: Block = deserialize(&bytes).unwrap();
    assert_eq!(block.block_hash().to_byte_array(), sol.hash);
    assert!(block.check_merkle_root() && block.check_witness_commitment());
    let kept = crate::BlockStore::read(&block_path).unwrap();
    assert_eq!(kept.record.status, crate::BlockStatus::Pending);
    assert_eq!(kept.record.worker, "tester");
    assert_eq!(kept.record.template_id, 5);
    assert_eq!(kept.record.attempts.len(), 1);
    assert_eq!(s.stats().unconfirmed_blocks, 1);

    // The source's tip becomes the block: confirmed, recorded.
    send_template(&mut s, test_util::template(6, true, 201, VALUE, vec![])).await;
    send_prev_hash(&mut s, test_util::prev_hash(6, sol.hash, REGTEST_NBITS)).await;
    let kept = crate::BlockStore::read(&block_path).unwrap();
    assert_eq!(kept.record.status, crate::BlockStatus::Confirmed);
    assert_eq!(s.stats().unconfirmed_blocks, 0);
    // No resubmission after confirmation.
    let a = s.on_timer(t0 + Duration::from_secs(3600)).await;
    assert_eq!(solutions(&a), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn unconfirmed_block_is_resubmitted_on_timers_and_when_the_source_comes_back() {
    let (log, keeper) = recording_keeper();
    let t0 = Instant::now();
    let (mut s, c, ch, job) = block_server(keeper, t0).await;
    let (a, sol) = solve_block(&mut s, c, &ch, &job, 1, 0).await;
    assert_eq!(solutions(&a), 1);
    // Nothing before the resubmit interval (10 s), then a retry.
    assert_eq!(solutions(&s.on_timer(t0 + Duration::from_secs(5)).await), 0);
    let a = s.on_timer(t0 + Duration::from_secs(11)).await;
    match to_sibling(&a).as_slice() {
        [TemplateDistributionOwned::SubmitSolution(r)] => {
            assert_eq!(r.template_id, 5);
            assert_eq!(r.header_nonce, sol.nonce);
        }
        other => panic!("expected a resubmitted SubmitSolution, got {other:?}"),
    }
    // The source reconnects and announces its tip, still the block's parent (below its
    // height): resubmitted at once.
    send_template(&mut s, test_util::template(5, true, 200, VALUE, vec![])).await;
    let a = send_prev_hash(&mut s, test_util::prev_hash(5, TIP_A, REGTEST_NBITS)).await;
    assert_eq!(solutions(&a), 1);
    send_template(&mut s, test_util::template(8, true, 201, VALUE, vec![])).await;
    send_prev_hash(&mut s, test_util::prev_hash(8, sol.hash, REGTEST_NBITS)).await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            format!("found {}", BlockHashHex(sol.hash)),
            "submitted 1 found".to_string(),
            "submitted 2 retry".to_string(),
            "submitted 3 tip-without-block".to_string(),
            "confirmed 3".to_string(),
        ]
    );
}

#[tokio::test]
async fn block_beaten_at_its_height_is_stale_and_a_restarted_source_gets_bounded_retries() {
    // Stale: another block at height 200 becomes the tip.
    let (log, keeper) = recording_keeper();
    let t0 = Instant::now();
    let (mut s, c, ch, job) = block_server(keeper, t0).await;
    solve_block(&mut s, c, &ch, &job, 1, 0).await;
    send_template(&mut s, test_util::template(6, true, 201, VALUE, vec![])).await;
    let a = send_prev_hash(&mut s, test_util::prev_hash(6, TIP_B, REGTEST_NBITS)).await;
    assert_eq!(solutions(&a), 0);
    assert_eq!(log.lock().unwrap().last().unwrap(), "stale 200");
    assert_eq!(
        solutions(&s.on_timer(t0 + Duration::from_secs(3600)).await),
        0
    );

    // A restarted source on a fresh, lower chain never confirms nor stales it: bounded
    // attempts, then abandoned and never sent again.
    let (log, keeper) = recording_keeper();
    let (mut s, c, ch, job) = block_server(keeper, t0).await;
    solve_block(&mut s, c, &ch, &job, 1, 0).await;
    send_template(&mut s, test_util::template(1, true, 1, VALUE, vec![])).await;
    let a = send_prev_hash(&mut s, test_util::prev_hash(1, TIP_B, REGTEST_NBITS)).await;
    assert_eq!(
        solutions(&a),
        1,
        "a lower tip that is not the block: resubmit now"
    );
    let mut sent = 2;
    let mut t = t0;
    for _ in 0..100 {
        t += Duration::from_secs(301);
        sent += solutions(&s.on_timer(t).await);
    }
    let max = config().max_submit_attempts as usize;
    assert_eq!(sent, max);
    assert_eq!(
        log.lock().unwrap().last().unwrap(),
        &format!("abandoned {max}")
    );
    assert_eq!(s.stats().unconfirmed_blocks, 0);
}

#[tokio::test]
async fn solutions_past_max_blocks_per_parent_are_shares_not_more_blocks() {
    use crate::server::MAX_BLOCKS_PER_PARENT;
    let (log, keeper) = recording_keeper();
    let (mut s, c, ch, job) = block_server(keeper, Instant::now()).await;
    let mut nonce = 0;
    // The first MAX_BLOCKS_PER_PARENT solutions on one parent are blocks, each submitted (the
    // source gives no answer: a refused first one must not stop the next).
    for seq in 1..=MAX_BLOCKS_PER_PARENT {
        let (a, sol) = solve_block(&mut s, c, &ch, &job, seq, nonce).await;
        assert_eq!(solutions(&a), 1, "solution {seq} submitted");
        nonce = sol.nonce + 1;
    }
    let (a, _) = solve_block(&mut s, c, &ch, &job, MAX_BLOCKS_PER_PARENT + 1, nonce).await;
    submit_success(&a);
    assert_eq!(solutions(&a), 0);
    let n = MAX_BLOCKS_PER_PARENT as u64;
    assert_eq!(s.stats().blocks_found, n);
    assert_eq!(s.stats().shares_accepted, n + 1);
    assert_eq!(
        log.lock().unwrap().len(),
        2 * MAX_BLOCKS_PER_PARENT as usize,
        "each block found + submitted once"
    );
}

#[tokio::test]
async fn hashrate_estimate_drops_when_the_last_channel_goes() {
    let mut s = server();
    let c = ctx(1, 0);
    let t0 = Instant::now();
    s.on_timer(t0).await;
    s.on_connection_added(c).await;
    new_block(&mut s, 1, TIP_A, HARD_NBITS).await;
    let a = s
        .handle_open_extended_mining_channel(c, open_extended_msg(1, 0))
        .await;
    let ch = ext_success(&a);
    let job = extended_jobs(&a)[0].clone();
    for seq in 1..=5u32 {
        let share = extended_share(
            &ch,
            seq,
            &job,
            &seq.to_le_bytes().repeat(4),
            TIP_A,
            HARD_NBITS,
            0,
        );
        submit_success(&s.handle_submit_shares_extended(c, share).await);
    }
    s.on_timer(t0 + Duration::from_secs(5)).await;
    assert!(s.stats().hashrate_estimate_hs > 0.0);
    s.on_connection_removed(c, CloseReason::Shutdown).await;
    s.on_timer(t0 + Duration::from_secs(6)).await;
    let st = s.stats();
    assert_eq!(st.connections, 0);
    assert_eq!(st.hashrate_estimate_hs, 0.0, "{st:?}");
}

#[test]
fn block_store_prunes_to_its_limit_and_reports_unwritable_dirs() {
    use crate::{BlockEvent, BlockStore, FoundBlock};
    let dir = test_dir("prune");
    let mut store = BlockStore::new(&dir, Some(2));
    let block = |n: u8| FoundBlock {
        hash: tower_stratum_core::stratum_core::bitcoin::BlockHash::from_byte_array([n; 32]),
        height: Some(u64::from(n)),
        template_id: 1,
        connection: ConnectionId(1),
        channel_id: 2,
        user_identity: "w".into(),
        header: [n; 80],
        coinbase_tx: vec![1, 2, 3],
        transaction_count: Some(0),
        block: Some(vec![n; 100]),
    };
    let now = std::time::SystemTime::now();
    // Block 1 stays pending (never pruned); 2, 3 and 4 are confirmed right after.
    for n in 1..=4u8 {
        let b = block(n);
        let p = store.record(&BlockEvent::Found(&b), now).unwrap().unwrap();
        assert_eq!(p, store.block_path(&b));
        if n > 1 {
            store
                .record(
                    &BlockEvent::Confirmed {
                        hash: b.hash,
                        attempts: 1,
                    },
                    now,
                )
                .unwrap();
        }
    }
    let listed = BlockStore::list(&dir).unwrap();
    let heights: Vec<_> = listed.iter().map(|k| k.record.height).collect();
    assert_eq!(heights, [Some(1), Some(4)]);
    assert_eq!(listed[0].record.status, crate::BlockStatus::Pending);
    assert_eq!(listed[1].record.status, crate::BlockStatus::Confirmed);
    assert!(!dir.join(format!("2-{}.block", block(2).hash)).exists());
    assert!(!dir.join(format!("3-{}.json", block(3).hash)).exists());
    assert!(listed.iter().all(|k| k.block_path.is_some()));
    // No temporary files left behind.
    assert!(std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));

    // A directory under a regular file cannot be created (even by root).
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let mut bad = BlockStore::new(file.join("blocks"), None);
    match bad.record(&BlockEvent::Found(&block(5)), now) {
        Err(crate::StoreError::Io { path, .. }) => assert_eq!(path, file.join("blocks")),
        other => panic!("expected an Io error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system temp dir for one test.
fn test_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tower-stratum-mining-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The display hex of a hash in internal byte order.
struct BlockHashHex([u8; 32]);
impl std::fmt::Display for BlockHashHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tower_stratum_core::stratum_core::bitcoin::BlockHash::from_byte_array(self.0).fmt(f)
    }
}
