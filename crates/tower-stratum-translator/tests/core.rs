//! Deterministic tests of the sans-IO `TranslatorCore` on a virtual clock (plain `Instant`s
//! passed in): vardiff, `UpdateChannel` debouncing, keepalive jobs, session resume expiry,
//! per-miner clean-up, the difficulty floor, and the error mapping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tower_stratum_core::stratum_core::binary_sv2::{
    B032Owned, B064KOwned, Seq0255Owned, Sv2OptionOwned, U256Owned,
};
use tower_stratum_core::stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, OpenExtendedMiningChannelSuccessOwned, SetNewPrevHashOwned,
    SetTargetOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{ConnectionId, SiblingMessage, Sv2Message};
use tower_stratum_sv1::work::{difficulty_to_target, evaluate_share};
use tower_stratum_sv1::{
    Authorize, ErrorCode, Id, Notify, ServerMessage, Submit, Subscribe, SubscribeResult,
};
use tower_stratum_sv1::{Sv1Action, Sv1Actions, Sv1ConnectionContext};
use tower_stratum_translator::{
    map_upstream_error, ChannelMode, TranslatorConfig, TranslatorCore, UpstreamEvent,
};

fn ctx(n: u64) -> Sv1ConnectionContext {
    Sv1ConnectionContext {
        id: ConnectionId(n),
        peer: None,
    }
}

/// What went upstream.
fn upstream(a: &Sv1Actions) -> Vec<MiningOwned> {
    a.iter()
        .filter_map(|x| match x {
            Sv1Action::ToSibling(SiblingMessage::Sv2(Sv2Message::Mining(m))) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// What went to connection `n` (direct sends and multicasts).
fn to(a: &Sv1Actions, n: u64) -> Vec<ServerMessage> {
    a.iter()
        .filter_map(|x| match x {
            Sv1Action::SendTo(c, m) if c.0 == n => Some(m.clone()),
            Sv1Action::Multicast(cs, m) if cs.iter().any(|c| c.0 == n) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn request_id(a: &Sv1Actions) -> u32 {
    upstream(a)
        .iter()
        .find_map(|m| match m {
            MiningOwned::OpenExtendedMiningChannel(o) => Some(o.request_id),
            _ => None,
        })
        .expect("an OpenExtendedMiningChannel")
}

fn open_success(request_id: u32, channel_id: u32, target: [u8; 32]) -> MiningOwned {
    MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
        request_id,
        channel_id,
        target: U256Owned::from(target),
        extranonce_size: 8,
        extranonce_prefix: B032Owned::try_from(vec![0xaa, channel_id as u8]).unwrap(),
        group_channel_id: 1,
    })
}

fn job(channel_id: u32, job_id: u32) -> [MiningOwned; 2] {
    [
        MiningOwned::NewExtendedMiningJob(NewExtendedMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![]).unwrap(),
            coinbase_tx_prefix: B064KOwned::try_from(vec![1, 2, 3]).unwrap(),
            coinbase_tx_suffix: B064KOwned::try_from(vec![4, 5]).unwrap(),
        }),
        MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: U256Owned::from([job_id as u8; 32]),
            min_ntime: 1000,
            nbits: 0x1d00_ffff,
        }),
    ]
}

struct Setup {
    core: TranslatorCore,
    t0: Instant,
}

fn connected(cfg: TranslatorConfig) -> (Setup, Sv1Actions) {
    let t0 = Instant::now();
    let mut core = TranslatorCore::new(cfg, t0);
    let a = core.upstream_connected(
        UpstreamEvent::Connected {
            success_flags: 0,
            version_rolling_required: true,
            user_identity: "u".into(),
            index: 0,
            worker_hashrate_tracking: false,
        },
        t0,
    );
    (Setup { core, t0 }, a)
}

/// Aggregated core with an open channel (easy target) and a job; returns it.
fn aggregated(cfg: TranslatorConfig) -> Setup {
    let (mut s, a) = connected(cfg);
    let rid = request_id(&a);
    s.core
        .upstream_message(open_success(rid, 2, [0xff; 32]), s.t0);
    for m in job(2, 1) {
        s.core.upstream_message(m, s.t0);
    }
    s
}

/// A miner through subscribe and authorize; returns (extranonce1, extranonce2_size, job).
fn miner(
    s: &mut Setup,
    n: u64,
    session: Option<String>,
    at: Instant,
) -> (Vec<u8>, usize, Option<Notify>) {
    s.core.connection_added(ctx(n), at);
    let a = s.core.subscribe(
        ctx(n),
        Id::from(1u64),
        Subscribe {
            user_agent: None,
            session_id: session,
        },
        at,
    );
    let sub = to(&a, n)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Response(r) => Some(SubscribeResult::from_result(&r.result).unwrap()),
            _ => None,
        })
        .expect("subscribe answered");
    let a = s.core.authorize(
        ctx(n),
        Id::from(2u64),
        Authorize {
            username: "w".into(),
            password: None,
        },
        at,
    );
    let job = to(&a, n).into_iter().find_map(|m| match m {
        ServerMessage::Notify(n) => Some(n),
        _ => None,
    });
    (sub.extranonce1, sub.extranonce2_size, job)
}

fn valid_share(job: &Notify, extranonce1: &[u8], extranonce2: u32, difficulty: f64) -> Submit {
    let target = difficulty_to_target(difficulty).unwrap();
    let mut s = Submit {
        worker_name: "w".into(),
        job_id: job.job_id.clone(),
        extranonce2: extranonce2.to_le_bytes().to_vec(),
        ntime: job.ntime,
        nonce: 0,
        version_bits: None,
    };
    while !evaluate_share(job, extranonce1, &s, 0).meets(&target) {
        s.nonce += 1;
    }
    s
}

fn set_difficulty(a: &Sv1Actions, n: u64) -> Option<f64> {
    to(a, n).into_iter().find_map(|m| match m {
        ServerMessage::SetDifficulty(d) => Some(d),
        _ => None,
    })
}

#[test]
fn vardiff_raises_a_fast_miners_difficulty_and_update_channel_is_debounced() {
    let cfg = TranslatorConfig {
        nominal_hashrate: 1.0,
        shares_per_minute: 6.0,
        update_channel_interval: Duration::from_secs(60),
        keepalive_interval: None,
        ..TranslatorConfig::default()
    };
    let mut s = aggregated(cfg);
    let t0 = s.t0;
    let (extranonce1, _, job) = miner(&mut s, 1, None, t0);
    let job = job.unwrap();
    // The first tick records the channel's nominal hashrate.
    assert!(upstream(&s.core.tick(t0 + Duration::from_secs(1))).is_empty());
    // 100 shares in 20 s: far above 6/min.
    for i in 0..100u32 {
        let share = valid_share(&job, &extranonce1, i, 1e-8);
        let a = s.core.submit(
            ctx(1),
            Id::from(u64::from(i) + 10),
            share,
            t0 + Duration::from_millis(u64::from(i) * 200),
        );
        assert!(matches!(
            upstream(&a)[0],
            MiningOwned::SubmitSharesExtended(_)
        ));
    }
    let a = s.core.tick(t0 + Duration::from_secs(20));
    let d = set_difficulty(&a, 1).expect("vardiff raised the difficulty");
    assert!(
        d >= 0.99e-7,
        "at least 10x (vardiff's first step for a >1000 % deviation): {d}"
    );
    // The hashrate moved by far more than 20 %, but UpdateChannel waits for its interval.
    assert!(upstream(&a)
        .iter()
        .all(|m| !matches!(m, MiningOwned::UpdateChannel(_))));
    let a = s.core.tick(t0 + Duration::from_secs(62));
    let updates: Vec<_> = upstream(&a)
        .into_iter()
        .filter(|m| matches!(m, MiningOwned::UpdateChannel(_)))
        .collect();
    assert_eq!(updates.len(), 1);
    let a = s.core.tick(t0 + Duration::from_secs(63));
    assert!(upstream(&a)
        .iter()
        .all(|m| !matches!(m, MiningOwned::UpdateChannel(_))));
}

#[test]
fn difficulty_never_goes_below_the_upstream_floor() {
    let mut s = aggregated(TranslatorConfig {
        nominal_hashrate: 1.0,
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    miner(&mut s, 1, None, t0);
    // The upstream asks for difficulty 1 on the channel: the miner follows at once.
    let diff1 = difficulty_to_target(1.0).unwrap().to_le_bytes();
    let a = s.core.upstream_message(
        MiningOwned::SetTarget(SetTargetOwned {
            channel_id: 2,
            maximum_target: U256Owned::from(diff1),
        }),
        t0,
    );
    let d = set_difficulty(&a, 1).unwrap();
    assert!((1.0..1.0 + 1e-6).contains(&d), "{d}");
    // The miner's target is never easier than the channel's.
    assert!(difficulty_to_target(d).unwrap() <= difficulty_to_target(1.0).unwrap());
    // A suggestion below the floor is clamped to it.
    let a = s.core.suggest_difficulty(ctx(1), Id::from(9u64), 0.001, t0);
    assert_eq!(set_difficulty(&a, 1), None, "unchanged: still at the floor");
    let a = s.core.suggest_difficulty(ctx(1), Id::from(10u64), 4.0, t0);
    assert_eq!(set_difficulty(&a, 1), Some(4.0));
}

#[test]
fn power_of_two_difficulties_stay_at_or_above_the_floor() {
    let mut s = aggregated(TranslatorConfig {
        nominal_hashrate: 1.0,
        power_of_two_difficulty: true,
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    miner(&mut s, 1, None, t0);
    let a = s.core.suggest_difficulty(ctx(1), Id::from(3u64), 100.0, t0);
    assert_eq!(set_difficulty(&a, 1), Some(64.0));
    // The upstream floor at 3.5: the miner gets 4 (the power of two at or above it).
    let t = difficulty_to_target(3.5).unwrap().to_le_bytes();
    let a = s.core.upstream_message(
        MiningOwned::SetTarget(SetTargetOwned {
            channel_id: 2,
            maximum_target: U256Owned::from(t),
        }),
        t0,
    );
    // Still 64 (above the floor); a suggestion of 1 now gives 4.
    assert_eq!(set_difficulty(&a, 1), None);
    let a = s.core.suggest_difficulty(ctx(1), Id::from(4u64), 1.0, t0);
    assert_eq!(set_difficulty(&a, 1), Some(4.0));
}

#[test]
fn keepalive_resends_the_current_job_under_a_new_id() {
    let mut s = aggregated(TranslatorConfig {
        keepalive_interval: Some(Duration::from_secs(120)),
        vardiff: false,
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    let (_, _, job) = miner(&mut s, 1, None, t0);
    let job = job.unwrap();
    assert!(to(&s.core.tick(t0 + Duration::from_secs(60)), 1).is_empty());
    let a = s.core.tick(t0 + Duration::from_secs(121));
    let again = to(&a, 1)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Notify(n) => Some(n),
            _ => None,
        })
        .expect("a refreshed job");
    assert_ne!(again.job_id, job.job_id);
    assert!(!again.clean_jobs);
    assert_eq!((again.coinb1, again.prev_hash), (job.coinb1, job.prev_hash));
}

#[test]
fn session_resume_within_grace_only() {
    let mut s = aggregated(TranslatorConfig {
        resume_grace: Duration::from_secs(60),
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    let (extranonce1, _, _) = miner(&mut s, 1, None, t0);
    s.core.connection_removed(ctx(1), t0);
    // Meanwhile another miner never gets the reserved extranonce1.
    let (other, _, _) = miner(&mut s, 2, None, t0);
    assert_ne!(other, extranonce1);
    let extranonce1_hex: String = extranonce1.iter().map(|b| format!("{b:02x}")).collect();
    let (back, _, _) = miner(
        &mut s,
        3,
        Some(extranonce1_hex.clone()),
        t0 + Duration::from_secs(30),
    );
    assert_eq!(back, extranonce1);
    // Gone again, and back after the grace period: a fresh extranonce1 (the reservation
    // expired with the tick, and the slot went back to the free list).
    s.core
        .connection_removed(ctx(3), t0 + Duration::from_secs(31));
    s.core.tick(t0 + Duration::from_secs(100));
    let (x, _, _) = miner(&mut s, 4, None, t0 + Duration::from_secs(100));
    assert_eq!(x, extranonce1, "the expired reservation was released");
    let (late, _, _) = miner(
        &mut s,
        5,
        Some(extranonce1_hex),
        t0 + Duration::from_secs(101),
    );
    assert_ne!(late, extranonce1);
}

#[test]
fn per_miner_leave_closes_the_channel_after_the_grace_and_forgets_its_shares() {
    let (mut s, _) = connected(TranslatorConfig {
        mode: ChannelMode::PerMiner,
        nominal_hashrate: 1.0,
        submit_timeout: Duration::from_secs(5),
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    s.core.connection_added(ctx(1), t0);
    let a = s
        .core
        .subscribe(ctx(1), Id::from(1u64), Subscribe::default(), t0);
    let rid = request_id(&a);
    let a = s
        .core
        .upstream_message(open_success(rid, 7, [0xff; 32]), t0);
    let sub = to(&a, 1)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Response(r) => Some(SubscribeResult::from_result(&r.result).unwrap()),
            _ => None,
        })
        .unwrap();
    // Per-miner: the extranonce1 is the channel's prefix plus zero padding.
    assert_eq!(sub.extranonce1, [0xaa, 7, 0, 0, 0, 0]);
    for m in job(7, 1) {
        s.core.upstream_message(m, t0);
    }
    let a = s.core.authorize(
        ctx(1),
        Id::from(2u64),
        Authorize {
            username: "w".into(),
            password: None,
        },
        t0,
    );
    let job = to(&a, 1)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Notify(n) => Some(n),
            _ => None,
        })
        .unwrap();
    let share = valid_share(&job, &sub.extranonce1, 1, 1e-8);
    assert_eq!(
        upstream(&s.core.submit(ctx(1), Id::from(3u64), share, t0)).len(),
        1
    );
    // The channel is kept for a resume during `resume_grace` (default 60 s), then closed.
    let a = s.core.connection_removed(ctx(1), t0);
    assert!(upstream(&a).is_empty(), "kept open for the grace period");
    let a = s.core.tick(t0 + Duration::from_secs(59));
    assert!(upstream(&a).is_empty(), "still within the grace period");
    let a = s.core.tick(t0 + Duration::from_secs(60));
    assert!(matches!(&upstream(&a)[..], [MiningOwned::CloseChannel(c)] if c.channel_id == 7));
    let st = s.core.stats(t0 + Duration::from_secs(60));
    assert_eq!(st.shares_pending, 0);
    assert_eq!(
        st.rejected_total(),
        0,
        "a departed miner's share is not a rejection"
    );
}

#[test]
fn upstream_error_codes_map_to_sv1_codes() {
    for (code, sv1) in [
        ("stale-share", ErrorCode::JobNotFound),
        ("invalid-job-id", ErrorCode::JobNotFound),
        ("duplicate-share", ErrorCode::DuplicateShare),
        ("difficulty-too-low", ErrorCode::LowDifficultyShare),
        ("unknown-user", ErrorCode::UnauthorizedWorker),
        ("invalid-channel-id", ErrorCode::Other),
        ("bad-extranonce-size", ErrorCode::Other),
    ] {
        let e = map_upstream_error(code);
        assert_eq!(e.kind(), Some(sv1), "{code}");
        assert!(e.message.contains(code));
    }
}

#[test]
fn shares_carry_the_worker_name_only_when_the_upstream_negotiated_it() {
    use tower_stratum_core::extensions::MAX_USER_IDENTITY_LEN;
    // `account.worker`: the worker is 31 ASCII bytes, then a 2-byte character that does not
    // fit the 32-byte field.
    let username = format!("acct.{}ü", "a".repeat(31));
    for negotiated in [true, false] {
        let t0 = Instant::now();
        let mut core = TranslatorCore::new(
            TranslatorConfig {
                nominal_hashrate: 1.0,
                keepalive_interval: None,
                ..TranslatorConfig::default()
            },
            t0,
        );
        let a = core.upstream_connected(
            UpstreamEvent::Connected {
                success_flags: 0,
                version_rolling_required: true,
                user_identity: "account".into(),
                index: 0,
                worker_hashrate_tracking: negotiated,
            },
            t0,
        );
        core.upstream_message(open_success(request_id(&a), 2, [0xff; 32]), t0);
        for m in job(2, 1) {
            core.upstream_message(m, t0);
        }
        assert_eq!(core.stats(t0).worker_hashrate_tracking, negotiated);
        core.connection_added(ctx(1), t0);
        let a = core.subscribe(
            ctx(1),
            Id::from(1u64),
            Subscribe {
                user_agent: None,
                session_id: None,
            },
            t0,
        );
        let extranonce1 = to(&a, 1)
            .into_iter()
            .find_map(|m| match m {
                ServerMessage::Response(r) => {
                    Some(SubscribeResult::from_result(&r.result).unwrap().extranonce1)
                }
                _ => None,
            })
            .unwrap();
        let a = core.authorize(
            ctx(1),
            Id::from(2u64),
            Authorize {
                username: username.clone(),
                password: None,
            },
            t0,
        );
        let job = to(&a, 1)
            .into_iter()
            .find_map(|m| match m {
                ServerMessage::Notify(n) => Some(n),
                _ => None,
            })
            .unwrap();
        let a = core.submit(
            ctx(1),
            Id::from(3u64),
            valid_share(&job, &extranonce1, 0, 1e-8),
            t0,
        );
        let sent: Vec<&Sv2Message> = a
            .iter()
            .filter_map(|x| match x {
                Sv1Action::ToSibling(SiblingMessage::Sv2(m)) => Some(m),
                _ => None,
            })
            .collect();
        let [m] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert!(matches!(
            (*m).clone().without_tlvs(),
            Sv2Message::Mining(MiningOwned::SubmitSharesExtended(_))
        ));
        let name = m.tlvs().map(|t| t.user_identity_value().unwrap().unwrap());
        if negotiated {
            let name = name.expect("the worker name travels with the share");
            assert_eq!(name, "a".repeat(31));
            assert!(name.len() <= MAX_USER_IDENTITY_LEN);
        } else {
            assert_eq!(name, None, "no TLV without the extension");
        }
    }
}

#[test]
fn the_start_difficulty_is_the_first_and_a_suggestion_before_subscribe_wins() {
    let mut s = aggregated(TranslatorConfig {
        start_difficulty: Some(16384.0),
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    s.core.connection_added(ctx(1), t0);
    s.core.subscribe(
        ctx(1),
        Id::from(1u64),
        Subscribe {
            user_agent: None,
            session_id: None,
        },
        t0,
    );
    let auth = Authorize {
        username: "w".into(),
        password: None,
    };
    let a = s.core.authorize(ctx(1), Id::from(2u64), auth.clone(), t0);
    assert_eq!(set_difficulty(&a, 1), Some(16384.0), "the configured start");
    // A miner that suggests a difficulty before subscribing starts there.
    s.core.connection_added(ctx(2), t0);
    let a = s.core.suggest_difficulty(ctx(2), Id::from(1u64), 512.0, t0);
    assert_eq!(set_difficulty(&a, 2), None, "not mining yet");
    s.core.subscribe(
        ctx(2),
        Id::from(2u64),
        Subscribe {
            user_agent: None,
            session_id: None,
        },
        t0,
    );
    let a = s.core.authorize(ctx(2), Id::from(3u64), auth, t0);
    assert_eq!(set_difficulty(&a, 2), Some(512.0), "the miner's suggestion");
    // Without a start difficulty: the one of nominal_hashrate (the library default).
    let mut s = aggregated(TranslatorConfig::default());
    let (_, _, _) = miner(&mut s, 3, None, t0);
    let a = s.core.tick(t0 + Duration::from_secs(1));
    assert_eq!(set_difficulty(&a, 3), None);
    assert!(TranslatorConfig {
        start_difficulty: Some(0.0),
        ..TranslatorConfig::default()
    }
    .validate()
    .is_err());
}

#[test]
fn shares_far_above_target_jump_to_their_hashrate_at_the_next_tick() {
    let cfg = TranslatorConfig {
        nominal_hashrate: 1.0,
        shares_per_minute: 6.0,
        keepalive_interval: None,
        ..TranslatorConfig::default()
    };
    let mut s = aggregated(cfg);
    let t0 = s.t0;
    let (extranonce1, _, job) = miner(&mut s, 1, None, t0);
    let job = job.unwrap();
    // 40 shares at difficulty 1e-8 in 2 s: 20 shares/s, 200x the target of 6 per minute.
    for i in 0..40u32 {
        let share = valid_share(&job, &extranonce1, i, 1e-8);
        s.core.submit(
            ctx(1),
            Id::from(u64::from(i) + 10),
            share,
            t0 + Duration::from_millis(u64::from(i) * 50),
        );
    }
    // Vardiff alone waits for its 15 s window; the fast path jumps at the next tick to the
    // difficulty of the hashrate the shares show: 40 * 1e-8 * 2^32 / 2 s at 6 shares/min,
    // i.e. 40 * 1e-8 * 10 / 2 = 2e-6.
    let a = s.core.tick(t0 + Duration::from_secs(2));
    let d = set_difficulty(&a, 1).expect("jumped at once");
    assert!((d / 2e-6 - 1.0).abs() < 1e-6, "{d}");
    // The window restarted: no second jump without new shares.
    let a = s.core.tick(t0 + Duration::from_secs(3));
    assert_eq!(set_difficulty(&a, 1), None);
    // Shares that only meet the old difficulty (old job) do not count toward another jump.
    for i in 40..80u32 {
        let share = valid_share(&job, &extranonce1, i, 1e-8);
        s.core.submit(
            ctx(1),
            Id::from(u64::from(i) + 10),
            share,
            t0 + Duration::from_millis(3000 + u64::from(i - 40) * 25),
        );
    }
    let a = s.core.tick(t0 + Duration::from_secs(5));
    assert_eq!(
        set_difficulty(&a, 1),
        None,
        "shares below the new difficulty are not evidence of a faster miner"
    );
}

#[test]
fn until_the_first_share_the_difficulty_is_divided_by_16_each_search_period() {
    let mut s = aggregated(TranslatorConfig {
        start_difficulty: Some(4.096e-6),
        first_share_search: Some(Duration::from_secs(5)),
        keepalive_interval: None,
        ..TranslatorConfig::default()
    });
    let t0 = s.t0;
    let (extranonce1, _, job) = miner(&mut s, 1, None, t0);
    let job = job.unwrap();
    let sec = Duration::from_secs(1);
    assert_eq!(set_difficulty(&s.core.tick(t0 + 4 * sec), 1), None);
    let a = s.core.tick(t0 + 5 * sec);
    let d = set_difficulty(&a, 1).unwrap();
    assert!((d / 2.56e-7 - 1.0).abs() < 1e-6, "{d}");
    // With the current job again, so miners that keep a job's difficulty apply it now.
    let again = to(&a, 1)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Notify(n) => Some(n),
            _ => None,
        })
        .expect("the job again");
    assert_ne!(
        again.job_id, job.job_id,
        "a new job id: miners ignore one they have"
    );
    assert!(again.clean_jobs);
    assert_eq!(
        (&again.coinb1, again.prev_hash, again.ntime),
        (&job.coinb1, job.prev_hash, job.ntime),
        "the same work"
    );
    assert_eq!(set_difficulty(&s.core.tick(t0 + 6 * sec), 1), None);
    let a = s.core.tick(t0 + 10 * sec);
    let d = set_difficulty(&a, 1).unwrap();
    assert!((d / 1.6e-8 - 1.0).abs() < 1e-6, "{d}");
    let again = to(&a, 1)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Notify(n) => Some(n),
            _ => None,
        })
        .expect("the job again");
    // A share on the re-sent job: checked against the channel job, forwarded; the search is
    // over.
    let share = valid_share(&again, &extranonce1, 1, d);
    let a = s.core.submit(ctx(1), Id::from(50u64), share, t0 + 11 * sec);
    assert!(matches!(
        upstream(&a)[0],
        MiningOwned::SubmitSharesExtended(_)
    ));
    assert_eq!(set_difficulty(&s.core.tick(t0 + 15 * sec), 1), None);
    assert_eq!(set_difficulty(&s.core.tick(t0 + 20 * sec), 1), None);
    // Off by default (the library): no search.
    let mut s = aggregated(TranslatorConfig {
        start_difficulty: Some(4.096e-6),
        keepalive_interval: None,
        ..TranslatorConfig::default()
    });
    miner(&mut s, 1, None, t0);
    assert_eq!(set_difficulty(&s.core.tick(t0 + 10 * sec), 1), None);
}

#[test]
fn a_clear_excess_below_4x_is_refined_once_there_are_more_shares() {
    let cfg = TranslatorConfig {
        nominal_hashrate: 1.0,
        shares_per_minute: 300.0,
        keepalive_interval: None,
        ..TranslatorConfig::default()
    };
    let mut s = aggregated(cfg);
    let t0 = s.t0;
    let (extranonce1, _, job) = miner(&mut s, 1, None, t0);
    let job = job.unwrap();
    // Target 5/s. 10 shares in 1 s (2x): too few for a 2x excess.
    let mut n = 0u32;
    let mut submit = |s: &mut Setup, at: Duration| {
        n += 1;
        let share = valid_share(&job, &extranonce1, n, 1e-8);
        s.core
            .submit(ctx(1), Id::from(u64::from(n) + 10), share, t0 + at);
    };
    for i in 0..10u64 {
        submit(&mut s, Duration::from_millis(i * 100));
    }
    assert_eq!(
        set_difficulty(&s.core.tick(t0 + Duration::from_secs(1)), 1),
        None
    );
    // 20 in 2 s: still 2x, now with enough shares: refined to the rate they show.
    for i in 10..20u64 {
        submit(&mut s, Duration::from_millis(i * 100));
    }
    let d = set_difficulty(&s.core.tick(t0 + Duration::from_secs(2)), 1).expect("refined");
    assert!((d / 2e-8 - 1.0).abs() < 1e-6, "{d}");
}
