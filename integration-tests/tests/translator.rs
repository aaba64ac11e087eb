//! The translator service (`tower-stratum-translator`) end to end over loopback TCP and Noise,
//! against a scripted in-process Sv2 pool (`FakePool`: fixed extranonce prefix, easy share
//! target, a mainnet-hard network target so no share is a block, and a verdict the test
//! chooses), with raw Sv1 miners that send exactly the lines a test wants.
//!
//! Covered: the extranonce layout and `mining.notify` built from Sv2 jobs; truthful results
//! (`true` only after `SubmitShares.Success`; upstream errors mapped to Sv1 codes; no verdict
//! -> 20); the negative Sv1 sessions (each gets its documented answer or a close, and the other
//! miner keeps mining); version rolling granted only with the upstream's permission;
//! per-miner channels (group-channel jobs, `CloseChannel` on leave); upstream failover with
//! `mining.set_extranonce` / `client.reconnect` and fail-back to the primary; session resume
//! (aggregated: the slot; per-miner: the upstream channel, closed when the grace ends);
//! `mining.suggest_difficulty`.
//!
//! Worker-specific hashrate tracking (extension 0x0002) runs against our `MiningServer`
//! instead (over loopback TCP and Noise, the test as its template source): with the extension
//! the server counts accepted shares per Sv1 worker name, without it per channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum_codec::AuthorityKeypair;
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::session::{str0255, REQUIRES_VERSION_ROLLING};
use tower_stratum_core::stratum_core::binary_sv2::{
    B032Owned, B064KOwned, Seq0255Owned, Sv2OptionOwned, U256Owned,
};
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned, SetNewPrevHashOwned, SubmitSharesErrorOwned,
    SubmitSharesExtendedOwned, SubmitSharesSuccessOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{
    Action, Actions, ConnectionContext, SetupSupport, SiblingMessage, Subprotocol, Sv2Message,
};
use tower_stratum_service::{
    Request, ServerConfig, ServerHandle, ServerTransport, Sv2ServerService,
};
use tower_stratum_sv1::work::{difficulty_to_target, evaluate_share};
use tower_stratum_sv1::{Notify, PrevHash, ServerMessage, Submit, SubscribeResult, Sv1Message};
use tower_stratum_test_kit::sv1::Sv1LinePeer;
use tower_stratum_test_kit::within;
use tower_stratum_translator::{
    spawn, ChannelMode, ExtranonceChange, TranslatorConfig, TranslatorHandle,
    TranslatorServiceConfig, UpstreamConfig,
};

// ------------------------------------------------------------------ the fake pool

const GROUP: u32 = 1;
const COINB1: [u8; 5] = [0x01, 0x00, 0x00, 0x00, 0x01];
const COINB2: [u8; 4] = [0xff, 0xff, 0xff, 0xff];
const NBITS: u32 = 0x1d00_ffff;
const NTIME: u32 = 0x6500_0000;
const VERSION: u32 = 0x2000_0000;

#[derive(Debug, Clone)]
enum Verdict {
    Accept,
    Reject(&'static str),
    Silent,
}

#[derive(Debug, Clone)]
enum PoolCmd {
    NewBlock,
    Verdict(Verdict),
}

#[derive(Debug, Clone)]
enum PoolEvent {
    Opened {
        channel_id: u32,
        min_extranonce_size: u16,
    },
    Share(SubmitSharesExtendedOwned),
    Closed(u32),
}

struct FakePool {
    events: mpsc::UnboundedSender<PoolEvent>,
    verdict: Verdict,
    next_channel: u32,
    job_id: u32,
    prev: u8,
    prefix_tag: u8,
    version_rolling_allowed: bool,
}

fn u256(b: u8) -> U256Owned {
    U256Owned::from([b; 32])
}

impl FakePool {
    fn job(&self, channel_id: u32) -> [Sv2Message; 2] {
        [
            Sv2Message::Mining(MiningOwned::NewExtendedMiningJob(
                NewExtendedMiningJobOwned {
                    channel_id,
                    job_id: self.job_id,
                    min_ntime: Sv2OptionOwned::new(None),
                    version: VERSION,
                    version_rolling_allowed: self.version_rolling_allowed,
                    merkle_path: Seq0255Owned::new(vec![u256(0x33)]).unwrap(),
                    coinbase_tx_prefix: B064KOwned::try_from(COINB1.to_vec()).unwrap(),
                    coinbase_tx_suffix: B064KOwned::try_from(COINB2.to_vec()).unwrap(),
                },
            )),
            Sv2Message::Mining(MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
                channel_id,
                job_id: self.job_id,
                prev_hash: u256(self.prev),
                min_ntime: NTIME,
                nbits: NBITS,
            })),
        ]
    }
}

impl Sv2MiningServerHandler for FakePool {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: REQUIRES_VERSION_ROLLING,
            success_flags: 0,
        })
    }

    async fn handle_open_extended_mining_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenExtendedMiningChannelOwned,
    ) -> Actions {
        let channel_id = self.next_channel;
        self.next_channel += 1;
        let _ = self.events.send(PoolEvent::Opened {
            channel_id,
            min_extranonce_size: m.min_extranonce_size,
        });
        let mut a = Actions::reply(Sv2Message::Mining(
            MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
                request_id: m.request_id,
                channel_id,
                target: u256(0xff),
                extranonce_size: m.min_extranonce_size.max(8),
                extranonce_prefix: B032Owned::try_from(vec![self.prefix_tag, channel_id as u8])
                    .unwrap(),
                group_channel_id: GROUP,
            }),
        ));
        for msg in self.job(channel_id) {
            a.push(Action::Reply(msg));
        }
        a
    }

    async fn handle_submit_shares_extended(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesExtendedOwned,
    ) -> Actions {
        let _ = self.events.send(PoolEvent::Share(m.clone()));
        match self.verdict {
            Verdict::Accept => Actions::reply(Sv2Message::Mining(
                MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
                    channel_id: m.channel_id,
                    last_sequence_number: m.sequence_number,
                    new_submits_accepted_count: 1,
                    new_shares_sum: 1,
                }),
            )),
            Verdict::Reject(code) => Actions::reply(Sv2Message::Mining(
                MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
                    channel_id: m.channel_id,
                    sequence_number: m.sequence_number,
                    error_code: str0255(code).unwrap(),
                }),
            )),
            Verdict::Silent => Actions::none(),
        }
    }

    async fn handle_close_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: CloseChannelOwned,
    ) -> Actions {
        let _ = self.events.send(PoolEvent::Closed(m.channel_id));
        Actions::none()
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        match msg.downcast_ref::<PoolCmd>() {
            Some(PoolCmd::NewBlock) => {
                self.job_id += 1;
                self.prev = self.prev.wrapping_add(1);
                let [job, snph] = self.job(GROUP);
                Actions::from(vec![
                    Action::Broadcast(Subprotocol::Mining, job),
                    Action::Broadcast(Subprotocol::Mining, snph),
                ])
            }
            Some(PoolCmd::Verdict(v)) => {
                self.verdict = v.clone();
                Actions::none()
            }
            None => Actions::none(),
        }
    }
}

struct Pool {
    addr: SocketAddr,
    key: AuthorityKeypair,
    service: Sv2ServerService<FakePool>,
    handle: ServerHandle,
    events: mpsc::UnboundedReceiver<PoolEvent>,
}

async fn start_pool(prefix_tag: u8, version_rolling_allowed: bool) -> Pool {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_pool_on(
        listener,
        AuthorityKeypair::generate(),
        prefix_tag,
        version_rolling_allowed,
    )
}

/// A pool serving on `listener` with authority `key` (a restarted pool reuses both).
fn start_pool_on(
    listener: tokio::net::TcpListener,
    key: AuthorityKeypair,
    prefix_tag: u8,
    version_rolling_allowed: bool,
) -> Pool {
    let (tx, events) = mpsc::unbounded_channel();
    let addr = listener.local_addr().unwrap();
    let (service, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(
            key.clone(),
        )))
        .mining(FakePool {
            events: tx,
            verdict: Verdict::Accept,
            next_channel: 2,
            job_id: 1,
            prev: 0x10,
            prefix_tag,
            version_rolling_allowed,
        })
        .serve(listener);
    Pool {
        addr,
        key,
        service,
        handle,
        events,
    }
}

impl Pool {
    async fn cmd(&mut self, c: PoolCmd) {
        self.service
            .ready()
            .await
            .unwrap()
            .call(Request::ToHandlers(SiblingMessage::custom(c)))
            .await
            .unwrap();
    }

    async fn event(&mut self) -> PoolEvent {
        within(10, "a pool event", self.events.recv())
            .await
            .unwrap()
    }

    async fn share(&mut self) -> SubmitSharesExtendedOwned {
        loop {
            if let PoolEvent::Share(s) = self.event().await {
                return s;
            }
        }
    }

    fn upstream(&self) -> UpstreamConfig {
        UpstreamConfig {
            address: self.addr.to_string(),
            authority_key: Some(self.key.public()),
            user_identity: "test-account".into(),
        }
    }
}

// ------------------------------------------------------------------ the translator

fn translator_config(upstreams: Vec<UpstreamConfig>, mode: ChannelMode) -> TranslatorServiceConfig {
    let mut cfg = TranslatorServiceConfig {
        translator: TranslatorConfig {
            mode,
            // Difficulty = min_difficulty (1e-8): about one hash in 42 is a share.
            nominal_hashrate: 1.0,
            keepalive_interval: None,
            ..TranslatorConfig::default()
        },
        upstreams,
        tick_interval: Duration::from_millis(100),
        ..TranslatorServiceConfig::default()
    };
    cfg.client.reconnect = Some(tower_stratum_service::Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Default::default()
    });
    cfg
}

async fn start_translator(cfg: TranslatorServiceConfig) -> (TranslatorHandle, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (spawn(cfg, listener).unwrap(), addr)
}

// ------------------------------------------------------------------ a raw Sv1 miner

struct Miner {
    peer: Sv1LinePeer,
    next_id: u64,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    difficulty: f64,
    jobs: Vec<Notify>,
    mask: u32,
    set_extranonce: Option<(Vec<u8>, usize)>,
    reconnect: bool,
    worker: String,
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

impl Miner {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            peer: Sv1LinePeer::connect(addr).await,
            next_id: 1,
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: 0.0,
            jobs: Vec::new(),
            mask: 0,
            set_extranonce: None,
            reconnect: false,
            worker: "tb1qtest.w1".into(),
        }
    }

    /// Connects, optionally configures version rolling and extranonce subscription,
    /// subscribes, authorizes and waits for the first job.
    async fn ready(addr: SocketAddr, mask: Option<u32>, extranonce_subscribe: bool) -> Self {
        let mut m = Self::connect(addr).await;
        if mask.is_some() || extranonce_subscribe {
            let mut names = vec![];
            let mut params = serde_json::Map::new();
            if let Some(mask) = mask {
                names.push("version-rolling");
                params.insert("version-rolling.mask".into(), format!("{mask:08x}").into());
            }
            if extranonce_subscribe {
                names.push("subscribe-extranonce");
            }
            let r = m
                .request("mining.configure", serde_json::json!([names, params]))
                .await;
            if r["result"]["version-rolling"] == true {
                let s = r["result"]["version-rolling.mask"].as_str().unwrap();
                m.mask = u32::from_str_radix(s, 16).unwrap();
            }
        }
        m.subscribe(None).await;
        m.authorize().await;
        m.wait_job().await;
        m
    }

    async fn subscribe(&mut self, session: Option<&str>) -> Value {
        let params = match session {
            Some(s) => serde_json::json!(["test-miner/1.0", s]),
            None => serde_json::json!(["test-miner/1.0"]),
        };
        let r = self.request("mining.subscribe", params).await;
        let sub = SubscribeResult::from_result(&r["result"]).unwrap();
        self.extranonce1 = sub.extranonce1;
        self.extranonce2_size = sub.extranonce2_size;
        r
    }

    async fn authorize(&mut self) -> Value {
        let w = self.worker.clone();
        let r = self
            .request("mining.authorize", serde_json::json!([w, "x"]))
            .await;
        assert_eq!(r["result"], true, "{r}");
        r
    }

    /// Reads one line and records what it pushes.
    async fn recv(&mut self) -> Option<Value> {
        let line = self.peer.recv(10).await?;
        if let Ok(Sv1Message::Request(_)) = Sv1Message::parse_line(line.as_bytes()) {
            match ServerMessage::parse_line(line.as_bytes()).unwrap() {
                ServerMessage::Notify(n) => {
                    if n.clean_jobs {
                        self.jobs.clear();
                    }
                    if let Some((en1, size)) = self.set_extranonce.take() {
                        self.extranonce1 = en1;
                        self.extranonce2_size = size;
                    }
                    self.jobs.push(n)
                }
                ServerMessage::SetDifficulty(d) => self.difficulty = d,
                ServerMessage::SetExtranonce(e) => {
                    self.set_extranonce = Some((e.extranonce1, e.extranonce2_size))
                }
                ServerMessage::Reconnect(_) => self.reconnect = true,
                _ => {}
            }
        }
        Some(json(&line))
    }

    async fn wait_job(&mut self) {
        while self.jobs.is_empty() {
            self.recv().await.expect("a job");
        }
    }

    /// Waits for a job with `clean_jobs` newer than the current one.
    async fn wait_new_job(&mut self) -> Notify {
        let before = self.jobs.last().map(|j| j.job_id.clone());
        loop {
            let v = self.recv().await.expect("a new job");
            if v["method"] == "mining.notify"
                && Some(v["params"][0].as_str().unwrap().to_string()) != before
            {
                return self.jobs.last().unwrap().clone();
            }
        }
    }

    /// Sends a request and returns its response (pushes in between are recorded).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_line(
            &serde_json::json!({"id": id, "method": method, "params": params}).to_string(),
        )
        .await;
        self.response(id).await
    }

    async fn send_line(&mut self, line: &str) {
        self.peer.send(line).await;
    }

    async fn response(&mut self, id: u64) -> Value {
        loop {
            let v = self.recv().await.expect("a response");
            if v["id"] == id && v.get("method").is_none() {
                return v;
            }
        }
    }

    fn job(&self) -> Notify {
        self.jobs.last().unwrap().clone()
    }

    /// A share for `job` whose hash meets (or, `meets = false`, misses) the difficulty.
    fn share(&self, job: &Notify, meets: bool, version_bits: Option<u32>, en2: u32) -> Submit {
        let target = difficulty_to_target(self.difficulty).unwrap();
        let mut s = Submit {
            worker_name: self.worker.clone(),
            job_id: job.job_id.clone(),
            extranonce2: en2.to_le_bytes()[..self.extranonce2_size.min(4)]
                .iter()
                .copied()
                .chain(std::iter::repeat(0))
                .take(self.extranonce2_size)
                .collect(),
            ntime: job.ntime,
            nonce: 0,
            version_bits,
        };
        loop {
            let w = evaluate_share(job, &self.extranonce1, &s, self.mask);
            if w.meets(&target) == meets {
                return s;
            }
            s.nonce += 1;
        }
    }

    async fn submit(&mut self, s: &Submit) -> Value {
        let id = self.send_submit(s).await;
        self.response(id).await
    }

    /// Sends `mining.submit` for `s` without waiting for the answer; returns its id.
    async fn send_submit(&mut self, s: &Submit) -> u64 {
        let mut params = vec![
            Value::from(s.worker_name.clone()),
            Value::from(s.job_id.clone()),
            Value::from(hex(&s.extranonce2)),
            Value::from(format!("{:08x}", s.ntime)),
            Value::from(format!("{:08x}", s.nonce)),
        ];
        if let Some(v) = s.version_bits {
            params.push(Value::from(format!("{v:08x}")));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.send_line(
            &serde_json::json!({"id": id, "method": "mining.submit", "params": params}).to_string(),
        )
        .await;
        id
    }

    /// Mines and submits a valid share on the current job; returns the response.
    async fn submit_valid(&mut self, en2: u32) -> Value {
        let s = self.share(&self.job(), true, None, en2);
        self.submit(&s).await
    }
}

/// Waits (at most 10 s) for the translator's published stats to satisfy `f`.
async fn stats_until(
    t: &TranslatorHandle,
    f: impl Fn(&tower_stratum_translator::TranslatorStats) -> bool,
) -> tower_stratum_translator::TranslatorStats {
    let mut rx = t.watch_stats();
    let r = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| f(s))).await;
    match r {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("stats never matched; last: {:?}", t.stats()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn code(r: &Value) -> Option<i64> {
    r["error"][0].as_i64()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_extranonce_layout_aggregated() {
    let mut pool = start_pool(0xab, true).await;
    let (t, addr) = start_translator(translator_config(
        vec![pool.upstream()],
        ChannelMode::Aggregated,
    ))
    .await;
    let a = Miner::ready(addr, None, false).await;
    let b = Miner::ready(addr, None, false).await;
    let PoolEvent::Opened {
        channel_id,
        min_extranonce_size,
    } = pool.event().await
    else {
        panic!("no channel opened")
    };
    // extranonce2 (4) + 2 local bytes; the pool grants 8: prefix(2) || local(4: 2 id + 2 zero)
    assert_eq!(min_extranonce_size, 6);
    for m in [&a, &b] {
        assert_eq!(m.extranonce2_size, 4);
        assert_eq!(m.extranonce1.len(), 2 + 4);
        assert_eq!(&m.extranonce1[..2], &[0xab, channel_id as u8]);
    }
    assert_ne!(
        a.extranonce1, b.extranonce1,
        "distinct extranonce1 per miner"
    );
    let n = a.job();
    assert_eq!(n.coinb1, COINB1);
    assert_eq!(n.coinb2, COINB2);
    assert_eq!(n.merkle_branch, vec![[0x33; 32]]);
    assert_eq!(n.prev_hash, PrevHash::from_header_bytes([0x10; 32]));
    assert_eq!(
        (n.version, n.nbits, n.ntime, n.clean_jobs),
        (VERSION, NBITS, NTIME, true)
    );
    stats_until(&t, |s| s.channels == 1 && s.miners == 2).await;
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_true_only_after_the_upstream_accepts_them() {
    let mut pool = start_pool(0xab, true).await;
    let (t, addr) = start_translator(translator_config(
        vec![pool.upstream()],
        ChannelMode::Aggregated,
    ))
    .await;
    let mut m = Miner::ready(addr, Some(0xffff_ffff), false).await;
    assert_eq!(m.mask, 0x1fff_e000, "miner mask AND BIP320");
    // A version-rolled share: the pool gets the rolled version and local || extranonce2.
    let s = m.share(&m.job(), true, Some(0x0000_6000), 7);
    let r = m.submit(&s).await;
    assert_eq!(r["result"], true, "{r}");
    let up = pool.share().await;
    assert_eq!(up.version, VERSION | 0x6000);
    assert_eq!(up.nonce, s.nonce);
    assert_eq!(up.ntime, s.ntime);
    let mut ext = m.extranonce1[2..].to_vec();
    ext.extend_from_slice(&s.extranonce2);
    assert_eq!(up.extranonce.as_bytes(), ext.as_slice());
    // Bits outside the granted mask: refused locally, never forwarded.
    let s = m.share(&m.job(), true, Some(0x0000_0001), 8);
    let r = m.submit(&s).await;
    assert_eq!(code(&r), Some(20), "{r}");
    assert_eq!(r["error"][1], tower_stratum_translator::BAD_VERSION_BITS);
    // A miner sending its whole rolled version (job bits outside the mask unchanged) is fine.
    let s = m.share(&m.job(), true, Some(VERSION | 0x0000_8000), 9);
    assert_eq!(m.submit(&s).await["result"], true);
    assert_eq!(pool.share().await.version, VERSION | 0x8000);
    // The upstream's rejections reach the miner with the mapped Sv1 code.
    for (i, (upstream, sv1)) in [
        ("stale-share", 21),
        ("invalid-job-id", 21),
        ("duplicate-share", 22),
        ("difficulty-too-low", 23),
        ("invalid-channel-id", 20),
    ]
    .into_iter()
    .enumerate()
    {
        pool.cmd(PoolCmd::Verdict(Verdict::Reject(upstream))).await;
        let r = m.submit_valid(100 + i as u32).await;
        assert_eq!(code(&r), Some(sv1), "{upstream}: {r}");
        assert!(r["error"][1].as_str().unwrap().contains(upstream), "{r}");
    }
    let s = stats_until(&t, |s| s.shares_accepted == 2 && s.rejected_total() == 6).await;
    assert_eq!(s.shares_rejected.get("upstream:stale-share"), Some(&1));
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_without_upstream_verdict_is_never_true() {
    let mut pool = start_pool(0xab, true).await;
    let mut cfg = translator_config(vec![pool.upstream()], ChannelMode::Aggregated);
    cfg.translator.submit_timeout = Duration::from_secs(1);
    let (t, addr) = start_translator(cfg).await;
    let mut m = Miner::ready(addr, None, false).await;
    pool.cmd(PoolCmd::Verdict(Verdict::Silent)).await;
    let started = tokio::time::Instant::now();
    let r = m.submit_valid(1).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(code(&r), Some(20), "{r}");
    assert_eq!(r["error"][1], tower_stratum_translator::NO_VERDICT);
    pool.share().await;
    // Shares in flight when the upstream goes away: 20 as well, never true.
    let r = {
        let s = m.share(&m.job(), true, None, 2);
        let id = m.send_submit(&s).await;
        pool.share().await;
        pool.handle.shutdown().await;
        m.response(id).await
    };
    assert_eq!(code(&r), Some(20), "{r}");
    assert_eq!(
        r["error"][1],
        tower_stratum_translator::UPSTREAM_UNAVAILABLE
    );
    let st = stats_until(&t, |s| s.rejected_total() == 2).await;
    assert_eq!(st.shares_accepted, 0);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_beyond_max_pending_are_answered_busy_and_the_upstream_stays() {
    let mut pool = start_pool(0xab, true).await;
    let mut cfg = translator_config(vec![pool.upstream()], ChannelMode::Aggregated);
    cfg.translator.max_pending_shares = 2;
    cfg.translator.submit_timeout = Duration::from_secs(1);
    let (t, addr) = start_translator(cfg).await;
    let mut m = Miner::ready(addr, None, false).await;
    pool.cmd(PoolCmd::Verdict(Verdict::Silent)).await;
    // Two shares forwarded and left without a verdict; the third is answered busy at once.
    let mut ids = vec![];
    for en2 in 1..=2 {
        let s = m.share(&m.job(), true, None, en2);
        ids.push(m.send_submit(&s).await);
        pool.share().await;
    }
    let r = m.submit_valid(3).await;
    assert_eq!(code(&r), Some(20), "{r}");
    assert_eq!(r["error"][1], tower_stratum_translator::UPSTREAM_BUSY);
    let st = stats_until(&t, |s| s.shares_pending == 2).await;
    assert_eq!(st.shares_rejected.get("upstream-busy"), Some(&1), "{st:?}");
    // The two time out (answered 20, "no verdict"); verdicts resume: room again, and the
    // same connection's next share is accepted.
    for id in ids {
        let r = m.response(id).await;
        assert_eq!(r["error"][1], tower_stratum_translator::NO_VERDICT, "{r}");
    }
    pool.cmd(PoolCmd::Verdict(Verdict::Accept)).await;
    let r = m.submit_valid(4).await;
    assert_eq!(r["result"], true, "{r}");
    let st = stats_until(&t, |s| s.upstream_connected && s.shares_accepted >= 1).await;
    assert_eq!(st.upstream_index, Some(0));
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_sessions_get_their_answer_and_other_miners_keep_mining() {
    let mut pool = start_pool(0xab, true).await;
    let (t, addr) = start_translator(translator_config(
        vec![pool.upstream()],
        ChannelMode::Aggregated,
    ))
    .await;
    let mut other = Miner::ready(addr, None, false).await;
    let mut ok = 0u32;
    macro_rules! other_still_mines {
        () => {{
            ok += 1;
            let r = other.submit_valid(1000 + ok).await;
            assert_eq!(r["result"], true, "other miner: {r}");
            pool.share().await;
        }};
    }

    // Handshake order.
    let mut m = Miner::connect(addr).await;
    let submit = serde_json::json!(["tb1qtest.w1", "1", "00000000", "65000000", "00000000"]);
    assert_eq!(
        code(&m.request("mining.submit", submit.clone()).await),
        Some(25)
    );
    assert_eq!(
        code(
            &m.request("mining.authorize", serde_json::json!(["w", "x"]))
                .await
        ),
        Some(25)
    );
    m.subscribe(None).await;
    let r = m.request("mining.subscribe", serde_json::json!([])).await;
    assert_eq!(code(&r), Some(20), "subscribe twice: {r}");
    assert_eq!(
        code(&m.request("mining.submit", submit.clone()).await),
        Some(24)
    );
    other_still_mines!();
    m.authorize().await;
    m.wait_job().await;

    // Unknown job.
    let mut s = m.share(&m.job(), true, None, 1);
    s.job_id = "ffffff".into();
    assert_eq!(code(&m.submit(&s).await), Some(21));
    // Wrong extranonce2 length.
    let mut s = m.share(&m.job(), true, None, 2);
    s.extranonce2.push(0);
    let r = m.submit(&s).await;
    assert_eq!(code(&r), Some(20));
    assert_eq!(r["error"][1], tower_stratum_translator::BAD_EXTRANONCE2);
    // Version bits without (and outside) a granted mask.
    let s = m.share(&m.job(), true, Some(0x0000_6000), 3);
    let r = m.submit(&s).await;
    assert_eq!(code(&r), Some(20));
    assert_eq!(r["error"][1], tower_stratum_translator::BAD_VERSION_BITS);
    // Low difficulty.
    let s = m.share(&m.job(), false, None, 4);
    assert_eq!(code(&m.submit(&s).await), Some(23));
    other_still_mines!();
    // Duplicate: the same valid share twice.
    let s = m.share(&m.job(), true, None, 5);
    assert_eq!(m.submit(&s).await["result"], true);
    pool.share().await;
    assert_eq!(code(&m.submit(&s).await), Some(22));
    // Stale after clean_jobs: a share of the previous job after a new block.
    let old = m.job();
    pool.cmd(PoolCmd::NewBlock).await;
    let new = m.wait_new_job().await;
    assert!(new.clean_jobs);
    assert_ne!(new.job_id, old.job_id);
    let s = m.share(&old, true, None, 6);
    assert_eq!(code(&m.submit(&s).await), Some(21));
    other.wait_new_job().await;
    other_still_mines!();
    // Oversize line and non-JSON line: closed.
    let mut big = Miner::connect(addr).await;
    big.send_line(&"x".repeat(20_000)).await;
    big.peer.expect_closed(5).await;
    let mut junk = Miner::connect(addr).await;
    junk.send_line("{this is not json").await;
    junk.peer.expect_closed(5).await;
    other_still_mines!();
    // Only the valid shares reached the pool.
    let st = stats_until(&t, |s| s.shares_accepted == u64::from(ok) + 1).await;
    for reason in [
        "job-not-found",
        "bad-extranonce2-size",
        "version-bits",
        "low-difficulty",
        "duplicate",
        "stale",
    ] {
        assert_eq!(st.shares_rejected.get(reason), Some(&1), "{reason}: {st:?}");
    }
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_rolling_is_refused_when_the_upstream_forbids_it() {
    let mut pool = start_pool(0xab, false).await;
    let mut cfg = translator_config(vec![pool.upstream()], ChannelMode::Aggregated);
    cfg.translator.require_version_rolling = false;
    let (t, addr) = start_translator(cfg).await;
    // A first miner so the upstream channel and its job (version_rolling_allowed = false)
    // exist before the second one asks.
    let _first = Miner::ready(addr, None, false).await;
    let mut m = Miner::connect(addr).await;
    let r = m
        .request(
            "mining.configure",
            serde_json::json!([["version-rolling"], {"version-rolling.mask": "ffffffff"}]),
        )
        .await;
    assert_ne!(r["result"]["version-rolling"], true, "{r}");
    assert!(r["result"].get("version-rolling.mask").is_none(), "{r}");
    m.subscribe(None).await;
    m.authorize().await;
    m.wait_job().await;
    let s = m.share(&m.job(), true, Some(0x0000_2000), 1);
    assert_eq!(code(&m.submit(&s).await), Some(20));
    // Without rolling the same miner mines fine.
    assert_eq!(m.submit_valid(2).await["result"], true);
    let up = pool.share().await;
    assert_eq!(up.version, VERSION);
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_miner_channels_group_jobs_and_close_channel() {
    let mut pool = start_pool(0xcd, true).await;
    let mut cfg = translator_config(vec![pool.upstream()], ChannelMode::PerMiner);
    // No session resume: a departed miner's channel closes at once.
    cfg.translator.resume_grace = Duration::ZERO;
    let (t, addr) = start_translator(cfg).await;
    let mut a = Miner::ready(addr, None, false).await;
    let mut b = Miner::ready(addr, None, false).await;
    let mut opened = vec![];
    while opened.len() < 2 {
        if let PoolEvent::Opened {
            channel_id,
            min_extranonce_size,
        } = pool.event().await
        {
            assert_eq!(min_extranonce_size, 4);
            opened.push(channel_id);
        }
    }
    // Each miner's extranonce1 is its own channel's prefix (plus zero padding).
    assert_ne!(a.extranonce1, b.extranonce1);
    stats_until(&t, |s| s.channels == 2).await;
    assert_eq!(a.submit_valid(1).await["result"], true);
    let sa = pool.share().await;
    assert_eq!(b.submit_valid(1).await["result"], true);
    let sb = pool.share().await;
    assert_ne!(sa.channel_id, sb.channel_id);
    // A job on the group channel reaches both miners; shares on it are accepted.
    pool.cmd(PoolCmd::NewBlock).await;
    a.wait_new_job().await;
    b.wait_new_job().await;
    assert_eq!(a.submit_valid(2).await["result"], true);
    assert_eq!(pool.share().await.job_id, 2);
    // A miner leaves: its channel is closed upstream.
    drop(b);
    loop {
        if let PoolEvent::Closed(id) = pool.event().await {
            assert_eq!(id, sb.channel_id);
            break;
        }
    }
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_miners_with_set_extranonce_or_reconnect() {
    let mut primary = start_pool(0x01, true).await;
    let mut backup = start_pool(0x02, true).await;
    let mut cfg = translator_config(
        vec![primary.upstream(), backup.upstream()],
        ChannelMode::Aggregated,
    );
    cfg.failover_attempts = 2;
    cfg.failback_interval = None;
    let (t, addr) = start_translator(cfg).await;
    let mut subscribed = Miner::ready(addr, None, true).await;
    let mut plain = Miner::ready(addr, None, false).await;
    assert_eq!(subscribed.submit_valid(1).await["result"], true);
    primary.share().await;
    assert_eq!(subscribed.extranonce1[0], 0x01);
    // The primary goes away: the translator moves to the backup.
    primary.handle.shutdown().await;
    let job = within(20, "the job from the backup", subscribed.wait_new_job()).await;
    assert!(job.clean_jobs);
    assert_eq!(
        subscribed.extranonce1[0], 0x02,
        "set_extranonce applied with the new job"
    );
    assert_eq!(subscribed.submit_valid(2).await["result"], true);
    let s = backup.share().await;
    assert_eq!(s.extranonce.as_bytes()[..4], subscribed.extranonce1[2..6]);
    // The miner that did not subscribe to extranonce is told to reconnect, then closed.
    within(10, "client.reconnect", async {
        while !plain.reconnect {
            plain.recv().await;
        }
    })
    .await;
    plain.peer.expect_closed(5).await;
    stats_until(&t, |s| s.upstream_index == Some(1)).await;
    t.shutdown().await;
    backup.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_to_the_primary_keeps_miners_and_counts_every_share_once() {
    let mut primary = start_pool(0x01, true).await;
    let mut backup = start_pool(0x02, true).await;
    let (primary_addr, primary_key) = (primary.addr, primary.key.clone());
    let mut cfg = translator_config(
        vec![primary.upstream(), backup.upstream()],
        ChannelMode::Aggregated,
    );
    cfg.failover_attempts = 1;
    cfg.failback_interval = Some(Duration::from_millis(200));
    let (t, addr) = start_translator(cfg).await;
    let mut m = Miner::ready(addr, None, true).await;
    assert_eq!(m.submit_valid(1).await["result"], true);
    primary.share().await;
    // The primary dies: the miner stays connected and mines on the backup.
    primary.handle.shutdown().await;
    within(20, "the job from the backup", async {
        while m.extranonce1[0] != 0x02 {
            m.wait_new_job().await;
        }
    })
    .await;
    assert_eq!(m.submit_valid(2).await["result"], true);
    backup.share().await;
    stats_until(&t, |s| s.upstream_index == Some(1)).await;
    // The primary comes back on the same address and key: the translator fails back and the
    // same connection mines on it again.
    let listener = tokio::net::TcpListener::bind(primary_addr).await.unwrap();
    let mut primary = start_pool_on(listener, primary_key, 0x01, true);
    within(20, "the job from the returned primary", async {
        while m.extranonce1[0] != 0x01 {
            m.wait_new_job().await;
        }
    })
    .await;
    assert_eq!(m.submit_valid(3).await["result"], true);
    let s = primary.share().await;
    assert_eq!(s.extranonce.as_bytes()[..4], m.extranonce1[2..6]);
    // Three shares answered true, three counted: none lost or doubled across the switches.
    let st = stats_until(&t, |s| {
        s.upstream_index == Some(0) && s.shares_accepted == 3
    })
    .await;
    assert_eq!(st.rejected_total(), 0, "{st:?}");
    assert_eq!(st.miners, 1);
    t.shutdown().await;
    primary.handle.shutdown().await;
    backup.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_miner_session_resume_keeps_the_upstream_channel() {
    let mut pool = start_pool(0xcd, true).await;
    let mut cfg = translator_config(vec![pool.upstream()], ChannelMode::PerMiner);
    cfg.translator.resume_grace = Duration::from_secs(3);
    let (t, addr) = start_translator(cfg).await;
    let mut m = Miner::ready(addr, None, false).await;
    let PoolEvent::Opened { channel_id, .. } = pool.event().await else {
        panic!("the miner's channel opens first");
    };
    // A difficulty of its own (still easy enough to mine in a test).
    let r = m
        .request("mining.suggest_difficulty", serde_json::json!([1e-6]))
        .await;
    assert_eq!(r["result"], true);
    while m.difficulty != 1e-6 {
        m.recv().await.unwrap();
    }
    let en1 = m.extranonce1.clone();
    // Stats are published at each timer: see this miner counted first, so that the zero
    // below is the count after its departure, not one published before it arrived.
    stats_until(&t, |s| s.connections == 1).await;
    drop(m);
    stats_until(&t, |s| s.connections == 0).await;
    // Back within the grace period with the subscription id: same channel, same extranonce1,
    // same difficulty, and the last job at once.
    let mut again = Miner::connect(addr).await;
    again.subscribe(Some(&hex(&en1))).await;
    assert_eq!(again.extranonce1, en1);
    again.authorize().await;
    again.wait_job().await;
    assert_eq!(again.difficulty, 1e-6, "difficulty kept across the resume");
    // The pool reports a channel open before its answer leaves; none arrived, none was closed.
    assert!(
        pool.events.try_recv().is_err(),
        "the resume neither opened nor closed a channel"
    );
    assert_eq!(again.submit_valid(1).await["result"], true);
    assert_eq!(pool.share().await.channel_id, channel_id);
    // Gone for good: the channel is closed upstream once the grace period ends, and a late
    // resume gets a new channel.
    drop(again);
    let gone = std::time::Instant::now();
    loop {
        if let PoolEvent::Closed(id) = within(10, "CloseChannel", pool.event()).await {
            assert_eq!(id, channel_id);
            // Not before the grace period (counted from after the disconnect) ran out.
            assert!(
                gone.elapsed() >= Duration::from_secs(3),
                "{:?}",
                gone.elapsed()
            );
            break;
        }
    }
    let mut late = Miner::connect(addr).await;
    late.subscribe(Some(&hex(&en1))).await;
    assert_ne!(late.extranonce1, en1);
    let PoolEvent::Opened {
        channel_id: new, ..
    } = pool.event().await
    else {
        panic!("a new channel opens for the late miner");
    };
    assert_ne!(new, channel_id);
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resume_and_suggest_difficulty() {
    let pool = start_pool(0xab, true).await;
    let (t, addr) = start_translator(translator_config(
        vec![pool.upstream()],
        ChannelMode::Aggregated,
    ))
    .await;
    let mut m = Miner::ready(addr, None, false).await;
    let en1 = m.extranonce1.clone();
    // Difficulty suggestions within bounds; never below the channel floor.
    let r = m
        .request("mining.suggest_difficulty", serde_json::json!([0.5]))
        .await;
    assert_eq!(r["result"], true);
    while m.difficulty != 0.5 {
        m.recv().await.unwrap();
    }
    drop(m);
    // Another miner takes a slot meanwhile; the resumed one gets its old extranonce1 back.
    let other = Miner::ready(addr, None, false).await;
    assert_ne!(other.extranonce1, en1);
    let mut again = Miner::connect(addr).await;
    again.subscribe(Some(&hex(&en1))).await;
    assert_eq!(again.extranonce1, en1);
    again.authorize().await;
    again.wait_job().await;
    assert_eq!(again.difficulty, 0.5, "difficulty kept across the resume");
    // An unknown session id gets a fresh extranonce1.
    let mut fresh = Miner::connect(addr).await;
    fresh.subscribe(Some("deadbeef0000")).await;
    assert_ne!(fresh.extranonce1, en1);
    assert_ne!(fresh.extranonce1, other.extranonce1);
    t.shutdown().await;
    pool.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extranonce_change_policy_close() {
    let mut pool = start_pool(0xab, true).await;
    let backup = start_pool(0xac, true).await;
    let mut cfg = translator_config(
        vec![pool.upstream(), backup.upstream()],
        ChannelMode::Aggregated,
    );
    cfg.translator.extranonce_change = ExtranonceChange::Close;
    cfg.failover_attempts = 1;
    cfg.failback_interval = None;
    let (t, addr) = start_translator(cfg).await;
    let mut m = Miner::ready(addr, None, false).await;
    let _ = pool.event().await;
    pool.handle.shutdown().await;
    m.peer.expect_closed(20).await;
    assert!(!m.reconnect, "Close policy sends no client.reconnect");
    t.shutdown().await;
    backup.handle.shutdown().await;
}

// ------------------------------------------------ worker-specific hashrate tracking (0x0002)

/// Our `MiningServer` over loopback TCP and Noise, with the test as its template source (one
/// block at a hard network target, so no share is a block) and its events.
struct SoloServer {
    addr: SocketAddr,
    key: AuthorityKeypair,
    handle: ServerHandle,
    /// Kept: the sibling link stays open (the test is the template source).
    _template_tx: mpsc::Sender<SiblingMessage>,
    _template_rx: mpsc::Receiver<SiblingMessage>,
    events: mpsc::Receiver<tower_stratum_mining::MiningEvent>,
}

async fn start_solo_server(worker_hashrate_tracking: bool) -> SoloServer {
    use tower_stratum_core::handler::{
        NullSv2JobDeclarationServerHandler, NullSv2TemplateDistributionServerHandler,
    };
    use tower_stratum_core::stratum_core::bitcoin::ScriptBuf;
    use tower_stratum_core::stratum_core::parsers_sv2::TemplateDistributionOwned as Td;
    use tower_stratum_mining::test_util::{self, HARD_NBITS};
    use tower_stratum_mining::{MiningServer, MiningServerConfig};
    let key = AuthorityKeypair::generate();
    let (events_tx, events) = mpsc::channel(1024);
    let server = MiningServer::new(MiningServerConfig {
        coinbase_output_script: ScriptBuf::from_bytes(vec![0x51]),
        worker_hashrate_tracking,
        ..MiningServerConfig::default()
    })
    .unwrap()
    .with_event_sink(move |e| {
        let _ = events_tx.try_send(e);
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_svc, handle, sibling) = Sv2ServerService::new_with_sibling_io(
        ServerConfig::with_transport(ServerTransport::noise(key.clone())),
        listener,
        server,
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    );
    let (template_tx, template_rx) = sibling.into_channels();
    for m in [
        Td::NewTemplate(test_util::template(1, true, 200, 50 * 100_000_000, vec![])),
        Td::SetNewPrevHash(test_util::prev_hash(1, [0xaa; 32], HARD_NBITS)),
    ] {
        template_tx
            .send(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(m)))
            .await
            .unwrap();
    }
    let mut solo = SoloServer {
        addr,
        key,
        handle,
        _template_tx: template_tx,
        _template_rx: template_rx,
        events,
    };
    // The server's first timer (due at once) gives the hashrate estimates their time base.
    solo.report_with(0).await;
    solo
}

impl SoloServer {
    fn upstream(&self) -> UpstreamConfig {
        UpstreamConfig {
            address: self.addr.to_string(),
            authority_key: Some(self.key.public()),
            user_identity: "test-account".into(),
        }
    }

    /// Waits for the first report of the server's timer (every second) that counts at least
    /// `shares` accepted shares; returns its per-worker stats (empty when none is tracked).
    /// On each timer the server reports `Stats` then, when `Stats::workers > 0`, `Workers`.
    async fn report_with(&mut self, shares: u64) -> Vec<tower_stratum_mining::WorkerStats> {
        use tower_stratum_mining::MiningEvent;
        loop {
            let stats = loop {
                match within(10, "the timer's stats", self.events.recv()).await {
                    Some(MiningEvent::Stats(s)) => break s,
                    Some(_) => {}
                    None => panic!("mining server stopped"),
                }
            };
            let workers = if stats.workers == 0 {
                Vec::new()
            } else {
                match within(10, "the timer's worker stats", self.events.recv()).await {
                    Some(MiningEvent::Workers(w)) => w,
                    other => panic!("expected the worker stats, got {other:?}"),
                }
            };
            if stats.shares_accepted >= shares {
                return workers;
            }
        }
    }
}

/// A miner that authorizes as `worker` and has its first job.
async fn named_miner(addr: SocketAddr, worker: &str) -> Miner {
    let mut m = Miner::connect(addr).await;
    m.worker = worker.into();
    m.subscribe(None).await;
    m.authorize().await;
    m.wait_job().await;
    m
}

fn worker_counts(w: &[tower_stratum_mining::WorkerStats]) -> Vec<(String, u64)> {
    w.iter()
        .map(|w| (w.user_identity.clone(), w.shares_accepted))
        .collect()
}

/// Two Sv1 workers behind one translator: the server counts each one's accepted shares
/// under its Sv1 worker name (`account.worker`: the worker, cut to 32 bytes), none under the
/// channel's account.
async fn worker_names_reach_the_mining_server(mode: ChannelMode) {
    let mut solo = start_solo_server(true).await;
    let (t, addr) = start_translator(translator_config(vec![solo.upstream()], mode)).await;
    let long = "bob.rig-with-a-name-longer-than-32-bytes";
    let mut alice = named_miner(addr, "alice").await;
    let mut bob = named_miner(addr, long).await;
    stats_until(&t, |s| s.upstream_connected && s.worker_hashrate_tracking).await;
    for en2 in 0..2 {
        let r = alice.submit_valid(en2).await;
        assert_eq!(r["result"], true, "{r}");
    }
    let r = bob.submit_valid(0).await;
    assert_eq!(r["result"], true, "{r}");
    // Every `true` follows the server's SubmitShares.Success, so all three are counted.
    let workers = solo.report_with(3).await;
    assert_eq!(
        worker_counts(&workers),
        [
            ("alice".to_string(), 2),
            ("rig-with-a-name-longer-than-32-bytes"[..32].to_string(), 1)
        ],
        "{workers:?}"
    );
    assert!(
        workers.iter().all(|w| w.hashrate_estimate_hs > 0.0),
        "{workers:?}"
    );
    t.shutdown().await;
    solo.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_names_reach_the_mining_server_aggregated() {
    worker_names_reach_the_mining_server(ChannelMode::Aggregated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_names_reach_the_mining_server_per_miner() {
    worker_names_reach_the_mining_server(ChannelMode::PerMiner).await;
}

/// An upstream without extension 0x0002 refuses it: the translator mines as before, with no
/// TLV, and the server can only count the channel's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extension_upstream_shares_carry_no_worker_name() {
    let mut solo = start_solo_server(false).await;
    let (t, addr) = start_translator(translator_config(
        vec![solo.upstream()],
        ChannelMode::Aggregated,
    ))
    .await;
    let mut alice = named_miner(addr, "alice").await;
    let mut bob = named_miner(addr, "bob").await;
    let s = stats_until(&t, |s| s.upstream_connected).await;
    assert!(!s.worker_hashrate_tracking);
    assert_eq!(alice.submit_valid(0).await["result"], true);
    assert_eq!(bob.submit_valid(0).await["result"], true);
    assert_eq!(alice.submit_valid(1).await["result"], true);
    let workers = solo.report_with(3).await;
    assert_eq!(
        worker_counts(&workers),
        [("test-account".to_string(), 3)],
        "{workers:?}"
    );
    stats_until(&t, |s| s.shares_accepted == 3 && s.rejected_total() == 0).await;
    t.shutdown().await;
    solo.handle.shutdown().await;
}
