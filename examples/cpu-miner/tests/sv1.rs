//! The `cpu-miner` binary in Sv1 mode (`stratum+tcp://`) against an in-process Sv1 pool (an
//! `Sv1ServerService` whose handler checks every share with its own code: sha2 for the
//! hashes, the coinbase, merkle root and header assembled here, targets from the difficulty
//! by bit shifting), on 127.0.0.1.
//!
//! The pool scripts one session per scenario:
//! 1. `mining.configure` (version rolling granted as `0x0fffe000`, or refused),
//!    `mining.subscribe` (extranonce1 A, an unusual extranonce2 size),
//!    `mining.extranonce.subscribe`, `mining.authorize`, then `mining.set_difficulty` and
//!    job `a` (`clean_jobs`).
//! 2. After the first valid share on `a`: `mining.set_extranonce` (extranonce1 B, another
//!    size), a 8x harder `mining.set_difficulty`, (optionally) `mining.set_version_mask`
//!    with a mask without bit 13, and job `b` with `clean_jobs`.
//! 3. After a share on `b` from the miner's second unit (rolled version bits, or without
//!    rolling a rolled ntime), the pool closes the
//!    connection (after writing every answer). The miner must reconnect; the pool then
//!    either serves job `c` and waits for a share on it, or refuses `mining.authorize`, after
//!    which the miner exits (code 1) and its summary must count exactly the `true` and error
//!    answers the pool sent on the first connection (one of them a deliberate rejection).
//!
//! A share that fails any check (unknown job, extranonce2 length, version bits outside the
//! mask or present/absent wrongly, ntime out of range, low difficulty, duplicate) fails the
//! test, so a share accepted on `b` proves the new extranonce1/size, difficulty and mask were
//! applied. `clean_jobs`: the miner must switch to `b` at once, and no share of `a` may reach
//! the pool after one of `b` (every share of `a` was found before `b` arrived, and TCP keeps
//! the order); that shares of a cleaned job that were found but not yet sent are dropped is
//! checked deterministically by the state's unit test (`clean_jobs_abandons_earlier_jobs...`),
//! as it depends on timing here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_stratum::sv1::{
    Authorize, Configure, ConfigureResult, ErrorCode, ExtensionResult, Id, Notify, PrevHash,
    Response, ServerMessage, SetExtranonce, Submit, Subscribe, SubscribeResult,
};
use tower_stratum::sv1_service::{
    Sv1Action, Sv1Actions, Sv1CloseReason, Sv1ConnectionContext, Sv1ServerHandle, Sv1ServerHandler,
    Sv1ServerService,
};
use tower_stratum::ConnectionId;
use tower_stratum_test_kit::process::PeerProcess;
use tower_stratum_test_kit::within;

/// What the pool grants when the miner asks for `0x1fffe000`.
const GRANTED_MASK: u32 = 0x0fff_e000;
/// `mining.set_version_mask` of phase 2: bit 13 (the miner's first rolled bit) excluded.
const NARROWED_MASK: u32 = 0x0fff_0000;
const PREV_HASH: [u8; 32] = [0x5a; 32];
const JOB_VERSION: u32 = 0x2000_0000;
const NBITS: u32 = 0x1d00_ffff;
const NTIME: u32 = 1_700_000_000;
/// Phase 1 difficulty 2^-16 (a share per ~2^16 hashes); phase 2 is 8x harder.
const EASY: i32 = -16;
const HARD: i32 = -13;

/// What one connection of the scenario uses.
#[derive(Debug, Clone)]
struct Phase {
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    /// log2 of the difficulty.
    difficulty_log2: i32,
}

#[derive(Debug, Clone)]
struct Scenario {
    grant_version_rolling: bool,
    /// Phase 1 (first connection), phase 2 (after the first share on `a`), and the
    /// connection after the drop.
    first: Phase,
    second: Phase,
    after_reconnect: Phase,
    set_version_mask: bool,
    /// Answer the first share (a valid one) with error 20, to see it counted as rejected.
    reject_first_share: bool,
    /// Which share on `b` makes the pool close the first connection.
    close_after: Rolled,
    /// Refuse `mining.authorize` on the second connection.
    refuse_after_reconnect: bool,
}

/// A share whose header differs from unit 0's by this: proof that the miner's second unit was
/// built right (thread 1 mines it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rolled {
    /// Version bits set (under the narrowed mask).
    Version,
    /// ntime above the job's (no version rolling, no extranonce2).
    Ntime,
}

#[derive(Debug)]
enum Event {
    Accepted {
        connection: u32,
        job: String,
        extranonce2_len: usize,
        version_bits: Option<u32>,
        ntime: u32,
    },
    /// A share on a job that was cleaned: answered with error 21 (not a failure by itself).
    Stale {
        job: String,
        after_b: bool,
    },
    Invalid(String),
    /// The pool closed the first connection after sending these answers on it.
    Closed {
        accepted: u64,
        rejected: u64,
    },
}

#[derive(Debug, Clone)]
struct Job {
    notify: Notify,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    target: [u8; 32],
}

/// Job id, extranonce2, ntime, nonce, version bits: what makes a share a duplicate.
type ShareKey = (String, Vec<u8>, u32, u32, Option<u32>);

#[derive(Debug, Default)]
struct Conn {
    index: u32,
    mask: u32,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    target: [u8; 32],
    extranonce_subscribed: bool,
    jobs: HashMap<String, Job>,
    cleaned: HashSet<String>,
    seen: HashSet<ShareKey>,
    phase2_sent: bool,
    b_accepted: bool,
    /// Answers sent on this connection: `true`, and errors.
    answered_true: u64,
    answered_error: u64,
    closing: bool,
}

struct Pool {
    scenario: Scenario,
    events: mpsc::UnboundedSender<Event>,
    conns: HashMap<ConnectionId, Conn>,
    connections: u32,
}

fn sha256d(b: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(b)).into()
}

/// `0xffff << (208 - log2)`, little-endian: the target of difficulty `2^log2`.
fn target(difficulty_log2: i32) -> [u8; 32] {
    let mut t = [0u8; 32];
    let low = (208 - difficulty_log2) as usize;
    for bit in low..low + 16 {
        t[bit / 8] |= 1 << (bit % 8);
    }
    t
}

fn meets(hash: &[u8; 32], target: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if hash[i] != target[i] {
            return hash[i] < target[i];
        }
    }
    true
}

fn job(id: &str) -> Notify {
    // A coinbase split around the extranonce space; one merkle branch.
    Notify {
        job_id: id.into(),
        prev_hash: PrevHash::from_header_bytes(PREV_HASH),
        coinb1: b"\x01\x00\x00\x00\x01coinbase-prefix-".to_vec(),
        coinb2: b"-coinbase-suffix\xff\xff\xff\xff".to_vec(),
        merkle_branch: vec![[0x33; 32]],
        version: JOB_VERSION,
        nbits: NBITS,
        ntime: NTIME,
        clean_jobs: true,
    }
}

impl Pool {
    fn phase(&self, conn: &Conn) -> Phase {
        if conn.index == 0 {
            self.scenario.first.clone()
        } else {
            self.scenario.after_reconnect.clone()
        }
    }

    fn invalid(&self, why: String) -> Sv1Actions {
        let _ = self.events.send(Event::Invalid(why));
        Sv1Actions::close("invalid share")
    }

    /// Registers job `id` under the connection's current extranonce and target.
    fn new_job(conn: &mut Conn, id: &str) -> Notify {
        let notify = job(id);
        if notify.clean_jobs {
            conn.cleaned.extend(conn.jobs.keys().cloned());
        }
        conn.jobs.insert(
            id.into(),
            Job {
                notify: notify.clone(),
                extranonce1: conn.extranonce1.clone(),
                extranonce2_size: conn.extranonce2_size,
                target: conn.target,
            },
        );
        notify
    }

    /// The pool's own check of a share; `Err` says what is wrong.
    fn check(conn: &Conn, job: &Job, s: &Submit) -> Result<(), String> {
        if s.extranonce2.len() != job.extranonce2_size {
            return Err(format!(
                "extranonce2 {} bytes, job has {}",
                s.extranonce2.len(),
                job.extranonce2_size
            ));
        }
        let version = match (conn.mask, s.version_bits) {
            (0, None) => job.notify.version,
            (0, Some(b)) => return Err(format!("version bits {b:08x} without version rolling")),
            (_, None) => return Err("no version bits although rolling was granted".into()),
            (mask, Some(b)) if b & !mask != 0 => {
                return Err(format!("version bits {b:08x} outside the mask {mask:08x}"))
            }
            (mask, Some(b)) => (job.notify.version & !mask) | b,
        };
        if s.ntime < job.notify.ntime || s.ntime > job.notify.ntime + 600 {
            return Err(format!("ntime {} out of range", s.ntime));
        }
        let mut coinbase = job.notify.coinb1.clone();
        coinbase.extend_from_slice(&job.extranonce1);
        coinbase.extend_from_slice(&s.extranonce2);
        coinbase.extend_from_slice(&job.notify.coinb2);
        let mut root = sha256d(&coinbase);
        for node in &job.notify.merkle_branch {
            let mut pair = root.to_vec();
            pair.extend_from_slice(node);
            root = sha256d(&pair);
        }
        let mut header = Vec::with_capacity(80);
        header.extend_from_slice(&version.to_le_bytes());
        header.extend_from_slice(&PREV_HASH);
        header.extend_from_slice(&root);
        header.extend_from_slice(&s.ntime.to_le_bytes());
        header.extend_from_slice(&job.notify.nbits.to_le_bytes());
        header.extend_from_slice(&s.nonce.to_le_bytes());
        if !meets(&sha256d(&header), &job.target) {
            return Err("low difficulty share".into());
        }
        Ok(())
    }
}

impl Sv1ServerHandler for Pool {
    async fn on_connection_added(&mut self, ctx: Sv1ConnectionContext) -> Sv1Actions {
        let index = self.connections;
        self.connections += 1;
        self.conns.insert(
            ctx.id,
            Conn {
                index,
                ..Conn::default()
            },
        );
        Sv1Actions::none()
    }

    async fn on_connection_removed(
        &mut self,
        ctx: Sv1ConnectionContext,
        _reason: Sv1CloseReason,
    ) -> Sv1Actions {
        self.conns.remove(&ctx.id);
        Sv1Actions::none()
    }

    async fn handle_configure(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Configure,
    ) -> Sv1Actions {
        let conn = self.conns.get_mut(&ctx.id).unwrap();
        let requested = msg.version_rolling.and_then(|v| v.mask).unwrap_or(0);
        let result = if self.scenario.grant_version_rolling {
            conn.mask = requested & GRANTED_MASK;
            ConfigureResult {
                version_rolling: Some(ExtensionResult::Accepted),
                version_rolling_mask: Some(conn.mask),
                ..ConfigureResult::default()
            }
        } else {
            ConfigureResult {
                version_rolling: Some(ExtensionResult::Rejected),
                ..ConfigureResult::default()
            }
        };
        Sv1Actions::reply(Response::ok(id, result.to_value()))
    }

    async fn handle_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Subscribe,
    ) -> Sv1Actions {
        let agent = msg.user_agent.unwrap_or_default();
        if !agent.starts_with("cpu-miner/") {
            return self.invalid(format!("user agent {agent:?}"));
        }
        let conn = self.conns.get(&ctx.id).unwrap();
        let phase = self.phase(conn);
        let conn = self.conns.get_mut(&ctx.id).unwrap();
        conn.extranonce1 = phase.extranonce1.clone();
        conn.extranonce2_size = phase.extranonce2_size;
        let r = SubscribeResult {
            subscriptions: vec![("mining.notify".into(), "1".into())],
            extranonce1: phase.extranonce1,
            extranonce2_size: phase.extranonce2_size,
        };
        Sv1Actions::reply(Response::ok(id, r.to_value()))
    }

    async fn handle_extranonce_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
    ) -> Sv1Actions {
        self.conns.get_mut(&ctx.id).unwrap().extranonce_subscribed = true;
        Sv1Actions::reply(Response::ok(id, true))
    }

    async fn handle_authorize(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Authorize,
    ) -> Sv1Actions {
        if msg.username != "acct.w1" || msg.password.as_deref() != Some("secret") {
            return self.invalid(format!("authorize {msg:?}"));
        }
        let conn = self.conns.get(&ctx.id).unwrap();
        if conn.index > 0 && self.scenario.refuse_after_reconnect {
            return Sv1Actions::reply(Response::ok(id, false));
        }
        let phase = self.phase(conn);
        let conn = self.conns.get_mut(&ctx.id).unwrap();
        conn.target = target(phase.difficulty_log2);
        let job_id = if conn.index == 0 { "a" } else { "c" };
        let notify = Self::new_job(conn, job_id);
        Sv1Actions::reply(Response::ok(id, true))
            .and(Sv1Action::Reply(ServerMessage::SetDifficulty(
                2f64.powi(phase.difficulty_log2),
            )))
            .and(Sv1Action::Reply(notify.into()))
    }

    async fn handle_submit(&mut self, ctx: Sv1ConnectionContext, id: Id, s: Submit) -> Sv1Actions {
        let scenario = self.scenario.clone();
        let conn = self.conns.get_mut(&ctx.id).unwrap();
        if conn.closing {
            // Read before the close took effect; its answer would never be written.
            return Sv1Actions::none();
        }
        if s.worker_name != "acct.w1" {
            return self.invalid(format!("worker {}", s.worker_name));
        }
        if conn.cleaned.contains(&s.job_id) {
            let _ = self.events.send(Event::Stale {
                job: s.job_id.clone(),
                after_b: conn.b_accepted,
            });
            conn.answered_error += 1;
            return Sv1Actions::reply(Response::error(id, ErrorCode::JobNotFound));
        }
        let Some(job) = conn.jobs.get(&s.job_id).cloned() else {
            return self.invalid(format!("unknown job {}", s.job_id));
        };
        if let Err(why) = Pool::check(conn, &job, &s) {
            return self.invalid(format!("job {}: {why}: {s:?}", s.job_id));
        }
        let key = (
            s.job_id.clone(),
            s.extranonce2.clone(),
            s.ntime,
            s.nonce,
            s.version_bits,
        );
        if !conn.seen.insert(key) {
            return self.invalid(format!("duplicate share {s:?}"));
        }
        if scenario.reject_first_share && conn.answered_true + conn.answered_error == 0 {
            conn.answered_error += 1;
            return Sv1Actions::reply(Response::error(
                id,
                tower_stratum::sv1::Sv1Error::new(20, "test rejection"),
            ));
        }
        let _ = self.events.send(Event::Accepted {
            connection: conn.index,
            job: s.job_id.clone(),
            extranonce2_len: s.extranonce2.len(),
            version_bits: s.version_bits,
            ntime: s.ntime,
        });
        conn.answered_true += 1;
        let mut actions = Sv1Actions::reply(Response::ok(id, true));
        if s.job_id == "a" && !conn.phase2_sent {
            conn.phase2_sent = true;
            if !conn.extranonce_subscribed {
                return self.invalid("no mining.extranonce.subscribe".into());
            }
            let second = scenario.second;
            conn.extranonce1 = second.extranonce1.clone();
            conn.extranonce2_size = second.extranonce2_size;
            conn.target = target(second.difficulty_log2);
            actions.push(Sv1Action::Reply(ServerMessage::SetExtranonce(
                SetExtranonce {
                    extranonce1: second.extranonce1,
                    extranonce2_size: second.extranonce2_size,
                },
            )));
            actions.push(Sv1Action::Reply(ServerMessage::SetDifficulty(
                2f64.powi(second.difficulty_log2),
            )));
            if scenario.set_version_mask {
                conn.mask = NARROWED_MASK;
                actions.push(Sv1Action::Reply(ServerMessage::SetVersionMask(
                    NARROWED_MASK,
                )));
            }
            let notify = Self::new_job(conn, "b");
            actions.push(Sv1Action::Reply(notify.into()));
        } else if s.job_id == "b" {
            conn.b_accepted = true;
            let rolled = match scenario.close_after {
                Rolled::Version => s.version_bits.is_some_and(|b| b != 0),
                Rolled::Ntime => s.ntime > NTIME,
            };
            if conn.index == 0 && rolled {
                conn.closing = true;
                let _ = self.events.send(Event::Closed {
                    accepted: conn.answered_true,
                    rejected: conn.answered_error,
                });
                actions.push(Sv1Action::Close("test: connection dropped".into()));
            }
        }
        actions
    }
}

async fn serve(
    scenario: Scenario,
) -> (SocketAddr, mpsc::UnboundedReceiver<Event>, Sv1ServerHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_service, handle) = Sv1ServerService::builder()
        .handler(Pool {
            scenario,
            events: tx,
            conns: HashMap::new(),
            connections: 0,
        })
        .serve(listener);
    (addr, rx, handle)
}

fn miner(addr: SocketAddr, extra: &[&str]) -> PeerProcess {
    let url = format!("stratum+tcp://{addr}");
    let mut args = vec![
        url.as_str(),
        "--user",
        "acct.w1",
        "--password",
        "secret",
        // Two threads: thread 1 mines unit 1, the first rolled version (or extranonce2, or
        // ntime + 1 s without rolling).
        "--threads",
        "2",
        "--dump-protocol",
        "--reconnect-delay",
        "0.2",
        "--exit-after-secs",
        "150",
    ];
    args.extend_from_slice(extra);
    PeerProcess::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_cpu-miner")), &args)
}

/// The JSON of the dump lines sent (`-> `) by the miner so far.
fn sent(miner: &mut PeerProcess) -> Vec<Value> {
    while let Ok(l) = miner.lines.try_recv() {
        miner.log.push(l);
    }
    miner
        .log
        .iter()
        .filter_map(|l| l.strip_prefix("-> "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Accepted shares per job until `done` says enough; panics on an invalid share or a share of
/// `a` after one of `b`.
async fn run(
    events: &mut mpsc::UnboundedReceiver<Event>,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    within(140, "the scenario's shares", async {
        while !done(&seen) {
            let e = events.recv().await.unwrap();
            match &e {
                Event::Invalid(why) => panic!("invalid share: {why}"),
                Event::Stale { job, after_b: true } if job == "a" => {
                    panic!("a share of the cleaned job a after a share of b")
                }
                _ => {}
            }
            seen.push(e);
        }
    })
    .await;
    seen
}

fn accepted<'a>(events: &'a [Event], job_id: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    events
        .iter()
        .filter(move |e| matches!(e, Event::Accepted { job, .. } if job == job_id))
}

fn accepted_fields(e: &Event) -> (u32, usize, Option<u32>) {
    match e {
        Event::Accepted {
            connection,
            extranonce2_len,
            version_bits,
            ..
        } => (*connection, *extranonce2_len, *version_bits),
        other => panic!("not an accepted share: {other:?}"),
    }
}

/// Version rolling granted, then narrowed; extranonce2 3 -> 6 bytes; the connection dropped
/// and a share accepted on the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_set_extranonce_clean_jobs_difficulty_and_version_mask_and_reconnects() {
    let scenario = Scenario {
        grant_version_rolling: true,
        first: Phase {
            extranonce1: vec![0xa1, 0xa2, 0xa3, 0xa4],
            extranonce2_size: 3,
            difficulty_log2: EASY,
        },
        second: Phase {
            extranonce1: vec![0xb1, 0xb2],
            extranonce2_size: 6,
            difficulty_log2: HARD,
        },
        after_reconnect: Phase {
            extranonce1: vec![0xc1, 0xc2, 0xc3],
            extranonce2_size: 5,
            difficulty_log2: EASY,
        },
        set_version_mask: true,
        reject_first_share: false,
        close_after: Rolled::Version,
        refuse_after_reconnect: false,
    };
    let (addr, mut events, handle) = serve(scenario).await;
    let mut m = miner(addr, &[]);
    let seen = run(&mut events, |seen| accepted(seen, "c").next().is_some()).await;
    assert!(accepted(&seen, "a").next().is_some());
    for e in accepted(&seen, "a") {
        let (connection, extranonce2_size, bits) = accepted_fields(e);
        assert_eq!((connection, extranonce2_size), (0, 3));
        assert_eq!(bits.unwrap() & !GRANTED_MASK, 0);
    }
    for e in accepted(&seen, "b") {
        let (_, extranonce2_size, bits) = accepted_fields(e);
        assert_eq!(extranonce2_size, 6);
        assert_eq!(bits.unwrap() & !NARROWED_MASK, 0);
    }
    // The pool closed the connection on a b share with version bits set: rolled under the
    // narrowed mask (bit 16, not 13).
    assert!(accepted(&seen, "b").any(|e| accepted_fields(e).2 == Some(1 << 16)));
    for e in accepted(&seen, "c") {
        let (connection, extranonce2_size, _) = accepted_fields(e);
        assert_eq!((connection, extranonce2_size), (1, 5));
    }
    m.wait_for("share accepted: job_id=c", 30).await;
    // The miner said why it reconnected, and the dump shows the session as on the wire.
    assert!(
        m.log
            .iter()
            .any(|l| l.contains("lost") && l.contains("reconnecting in")),
        "no reconnection line:\n{}",
        m.log.join("\n")
    );
    let sent = sent(&mut m);
    let methods: Vec<&str> = sent.iter().filter_map(|v| v["method"].as_str()).collect();
    assert_eq!(
        &methods[..5],
        [
            "mining.configure",
            "mining.subscribe",
            "mining.extranonce.subscribe",
            "mining.suggest_difficulty",
            "mining.authorize"
        ]
    );
    assert_eq!(sent[0]["params"][1]["version-rolling.mask"], "1fffe000");
    assert!(sent
        .iter()
        .filter(|v| v["method"] == "mining.submit")
        .all(|v| v["params"].as_array().unwrap().len() == 6));
    assert!(m
        .log
        .iter()
        .any(|l| l.starts_with("<- ") && l.contains("mining.set_extranonce")));
    drop(m);
    handle.shutdown().await;
}

/// Version rolling refused: five-param submits; extranonce2 8 -> 0 bytes (the miner then
/// rolls ntime, at most one second per second). One share deliberately rejected; after the
/// drop, authorization refused: the miner exits with code 1 and its counts equal the
/// pool's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_without_version_rolling_when_refused_and_counts_the_answers() {
    let scenario = Scenario {
        grant_version_rolling: false,
        first: Phase {
            extranonce1: vec![0x01, 0x02, 0x03, 0x04],
            extranonce2_size: 8,
            difficulty_log2: EASY,
        },
        second: Phase {
            extranonce1: vec![0x0b; 8],
            extranonce2_size: 0,
            difficulty_log2: HARD,
        },
        after_reconnect: Phase {
            extranonce1: vec![],
            extranonce2_size: 4,
            difficulty_log2: EASY,
        },
        set_version_mask: false,
        reject_first_share: true,
        close_after: Rolled::Ntime,
        refuse_after_reconnect: true,
    };
    let (addr, mut events, handle) = serve(scenario).await;
    let mut m = miner(addr, &[]);
    let seen = run(&mut events, |seen| {
        seen.iter().any(|e| matches!(e, Event::Closed { .. }))
    })
    .await;
    let Some(Event::Closed {
        accepted: pool_true,
        rejected: pool_errors,
    }) = seen.last()
    else {
        panic!("{seen:?}")
    };
    for e in &seen {
        if let Event::Accepted { job, .. } = e {
            let (_, extranonce2_size, bits) = accepted_fields(e);
            assert_eq!(bits, None);
            assert_eq!(extranonce2_size, if job == "a" { 8 } else { 0 });
        }
    }
    assert!(
        accepted(&seen, "b").any(|e| matches!(e, Event::Accepted { ntime, .. } if *ntime > NTIME))
    );
    let status = within(30, "the miner's exit", m.child.wait())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "exit code after the refused authorization (a runtime failure)"
    );
    within(10, "the miner's last output", async {
        while let Some(l) = m.lines.recv().await {
            m.log.push(l);
        }
    })
    .await;
    let log = m.log.join("\n");
    assert!(log.contains("version rolling: not granted"), "{log}");
    assert!(
        log.contains("error=20 test rejection (rejected total 1)"),
        "{log}"
    );
    assert!(log.contains("authorization refused: false"), "{log}");
    let summary = m.log.iter().find(|l| l.starts_with("summary: ")).unwrap();
    assert!(
        summary.contains(&format!("accepted={pool_true} rejected={pool_errors} ")),
        "the miner's counts vs the pool's answers {pool_true}/{pool_errors}: {summary}"
    );
    assert!(sent(&mut m)
        .iter()
        .filter(|v| v["method"] == "mining.submit")
        .all(|v| v["params"].as_array().unwrap().len() == 5));
    handle.shutdown().await;
}

/// `Sv1MinerOptions::reconnect.max_attempts` (tower-stratum's `Backoff`): after that many
/// failed connections in a row the session ends and the miner's stop channel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_when_reconnect_max_attempts_is_set() {
    use cpu_miner::sv1::{Backoff, Sv1MinerOptions, DEFAULT_RECONNECT};
    use std::time::Duration;
    // Refuses connections: a port-0 listener's address, dropped.
    let down = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut running = cpu_miner::sv1::start(Sv1MinerOptions {
        address: down.to_string(),
        username: "w".into(),
        password: "x".into(),
        threads: 1,
        engine: cpu_miner::sha256d::Engine::Portable,
        dump_protocol: false,
        max_shares: None,
        reconnect: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(20),
            max_attempts: Some(3),
            ..DEFAULT_RECONNECT
        },
        suggest_difficulty: None,
    })
    .unwrap();
    let stop = within(20, "the session to give up", running.stop_rx.recv()).await;
    assert!(
        stop.is_none(),
        "no Stop reason, the channel closed: {stop:?}"
    );
    assert_eq!(running.stats.snapshot().accepted, 0);
    running.handle.shutdown().await;
}
