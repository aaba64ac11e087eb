//! The `cpu-miner` binary against an in-process Sv2 pool (a `Sv2ServerService` whose handler
//! validates every share independently of the miner's code), over Noise on 127.0.0.1.
//!
//! Each scenario serves job 1, waits for a valid share on it, then changes the work the way a
//! pool does and waits for a valid share on job 2:
//! - standard channel: `SetTarget` + a group-channel `NewExtendedMiningJob` (after
//!   `SetGroupChannel`) + `SetNewPrevHash` on the group channel;
//! - extended channel: `SetExtranoncePrefix` + `NewExtendedMiningJob` + `SetNewPrevHash`.
//!
//! A share that does not meet the target, names an unknown job, or breaks the version rules
//! fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cpu_miner::sha256d::sha256d;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_stratum::codec::{
    AuthorityKeypair, SRI_TEST_AUTHORITY_PUBLIC_KEY, SRI_TEST_AUTHORITY_SECRET_KEY,
};
use tower_stratum::handler::Sv2MiningServerHandler;
use tower_stratum::session::{str0255, REQUIRES_VERSION_ROLLING};
use tower_stratum::stratum_core::binary_sv2::{
    B032Owned, B064KOwned, Seq0255Owned, Seq064KOwned, Sv2OptionOwned, U256Owned,
};
use tower_stratum::stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, NewMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenStandardMiningChannelOwned,
    OpenStandardMiningChannelSuccessOwned, SetExtranoncePrefixOwned, SetGroupChannelOwned,
    SetNewPrevHashOwned, SetTargetOwned, SubmitSharesErrorOwned, SubmitSharesExtendedOwned,
    SubmitSharesStandardOwned, SubmitSharesSuccessOwned,
};
use tower_stratum::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum::{
    Action, Actions, ConnectionContext, ServerConfig, ServerTransport, SetupSupport, Sv2Message,
    Sv2ServerService,
};
use tower_stratum_test_kit::process::PeerProcess;
use tower_stratum_test_kit::within;

const CHANNEL: u32 = 5;
const GROUP: u32 = 100;
const MASK: u32 = 0x1fff_e000;
const JOB_VERSION: u32 = 0x2000_0000;
const NBITS: u32 = 0x1d00_ffff;
const NTIME: u32 = 1_700_000_000;

/// Mainnet genesis coinbase split inside its scriptSig (as in `tests/data/share_vectors.json`):
/// 8 bytes of the text are the extranonce space.
const COINB1: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d010445546865";
const COINB2: &str = "332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// About one share per 2^16 hashes: fast enough for a debug build of the miner.
fn target_bits(zero_bits: u32) -> [u8; 32] {
    let mut t = [0xffu8; 32];
    let full = (zero_bits / 8) as usize;
    for b in t.iter_mut().rev().take(full) {
        *b = 0;
    }
    if !zero_bits.is_multiple_of(8) {
        t[31 - full] = 0xff >> (zero_bits % 8);
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

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Accepted { job_id: u32 },
    Stale { job_id: u32 },
    Invalid(String),
}

/// One job as the pool knows it.
#[derive(Clone)]
enum PoolJob {
    Standard {
        merkle_root: [u8; 32],
    },
    Extended {
        extranonce_prefix: Vec<u8>,
        path: Vec<[u8; 32]>,
    },
}

struct ValidatingPool {
    events: mpsc::UnboundedSender<Event>,
    extended: bool,
    target: [u8; 32],
    prev_hash: [u8; 32],
    /// (job_id, job) for the current tip; shares on other jobs are stale or invalid.
    jobs: Vec<(u32, PoolJob)>,
    stale_jobs: Vec<u32>,
    switched: bool,
}

impl ValidatingPool {
    fn new(events: mpsc::UnboundedSender<Event>, extended: bool) -> Self {
        Self {
            events,
            extended,
            target: target_bits(16),
            prev_hash: [0x11; 32],
            jobs: Vec::new(),
            stale_jobs: Vec::new(),
            switched: false,
        }
    }

    fn merkle_root(job: &PoolJob, miner_extranonce: &[u8]) -> [u8; 32] {
        match job {
            PoolJob::Standard { merkle_root } => *merkle_root,
            PoolJob::Extended {
                extranonce_prefix,
                path,
            } => {
                let mut coinbase = unhex(COINB1);
                coinbase.extend_from_slice(extranonce_prefix);
                coinbase.extend_from_slice(miner_extranonce);
                coinbase.extend_from_slice(&unhex(COINB2));
                let mut root = sha256d(&coinbase); // legacy serialisation: txid
                for node in path {
                    let mut buf = root.to_vec();
                    buf.extend_from_slice(node);
                    root = sha256d(&buf);
                }
                root
            }
        }
    }

    fn ext_job(channel_id: u32, job_id: u32) -> NewExtendedMiningJobOwned {
        NewExtendedMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new(None),
            version: JOB_VERSION,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![U256Owned::from([0x42u8; 32])]).unwrap(),
            coinbase_tx_prefix: B064KOwned::try_from(unhex(COINB1)).unwrap(),
            coinbase_tx_suffix: B064KOwned::try_from(unhex(COINB2)).unwrap(),
        }
    }

    fn snph(&self, channel_id: u32, job_id: u32) -> Action {
        mining(MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: U256Owned::from(self.prev_hash),
            min_ntime: NTIME,
            nbits: NBITS,
        }))
    }

    /// The second work: see the module docs.
    fn switch(&mut self) -> Vec<Action> {
        self.switched = true;
        self.stale_jobs.push(1);
        self.jobs.clear();
        self.prev_hash = [0x22; 32];
        let mut out = Vec::new();
        if self.extended {
            let new_prefix = vec![0xe1, 0xe2, 0xe3, 0xe4];
            out.push(mining(MiningOwned::SetExtranoncePrefix(
                SetExtranoncePrefixOwned {
                    channel_id: CHANNEL,
                    extranonce_prefix: B032Owned::try_from(new_prefix.clone()).unwrap(),
                },
            )));
            out.push(mining(MiningOwned::NewExtendedMiningJob(Self::ext_job(
                CHANNEL, 2,
            ))));
            self.jobs.push((
                2,
                PoolJob::Extended {
                    extranonce_prefix: new_prefix,
                    path: vec![[0x42; 32]],
                },
            ));
            out.push(self.snph(CHANNEL, 2));
        } else {
            self.target = target_bits(15);
            out.push(mining(MiningOwned::SetTarget(SetTargetOwned {
                channel_id: CHANNEL,
                maximum_target: U256Owned::from(self.target),
            })));
            out.push(mining(MiningOwned::SetGroupChannel(SetGroupChannelOwned {
                group_channel_id: GROUP,
                channel_ids: Seq064KOwned::new(vec![CHANNEL]).unwrap(),
            })));
            out.push(mining(MiningOwned::NewExtendedMiningJob(Self::ext_job(
                GROUP, 2,
            ))));
            // The standard channel's extranonce_prefix is the whole extranonce (8 bytes).
            self.jobs.push((
                2,
                PoolJob::Extended {
                    extranonce_prefix: standard_prefix(),
                    path: vec![[0x42; 32]],
                },
            ));
            out.push(self.snph(GROUP, 2));
        }
        out
    }

    fn check(
        &mut self,
        sequence_number: u32,
        job_id: u32,
        nonce: u32,
        ntime: u32,
        version: u32,
        extranonce: &[u8],
    ) -> Actions {
        let reject = |code: &str| {
            Actions::reply(Sv2Message::Mining(MiningOwned::SubmitSharesError(
                SubmitSharesErrorOwned {
                    channel_id: CHANNEL,
                    sequence_number,
                    error_code: str0255(code).unwrap(),
                },
            )))
        };
        let Some((_, job)) = self.jobs.iter().find(|(id, _)| *id == job_id) else {
            if self.stale_jobs.contains(&job_id) {
                let _ = self.events.send(Event::Stale { job_id });
                return reject("stale-share");
            }
            let _ = self
                .events
                .send(Event::Invalid(format!("unknown job {job_id}")));
            return reject("invalid-job-id");
        };
        if version & !MASK != JOB_VERSION & !MASK {
            let _ = self
                .events
                .send(Event::Invalid(format!("version {version:#x}")));
            return reject("invalid-version");
        }
        if ntime != NTIME {
            let _ = self.events.send(Event::Invalid(format!("ntime {ntime}")));
            return reject("invalid-ntime");
        }
        let root = Self::merkle_root(job, extranonce);
        let mut header = Vec::with_capacity(80);
        header.extend_from_slice(&version.to_le_bytes());
        header.extend_from_slice(&self.prev_hash);
        header.extend_from_slice(&root);
        header.extend_from_slice(&ntime.to_le_bytes());
        header.extend_from_slice(&NBITS.to_le_bytes());
        header.extend_from_slice(&nonce.to_le_bytes());
        if !meets(&sha256d(&header), &self.target) {
            let _ = self.events.send(Event::Invalid(format!(
                "job {job_id} nonce {nonce:#x}: hash above target"
            )));
            return reject("difficulty-too-low");
        }
        let _ = self.events.send(Event::Accepted { job_id });
        let mut actions = vec![mining(MiningOwned::SubmitSharesSuccess(
            SubmitSharesSuccessOwned {
                channel_id: CHANNEL,
                last_sequence_number: sequence_number,
                new_submits_accepted_count: 1,
                new_shares_sum: 1,
            },
        ))];
        if !self.switched {
            actions.extend(self.switch());
        }
        Actions::from(actions)
    }
}

fn standard_prefix() -> Vec<u8> {
    vec![0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f, 0x60, 0x61]
}

fn mining(m: MiningOwned) -> Action {
    Action::Reply(Sv2Message::Mining(m))
}

impl Sv2MiningServerHandler for ValidatingPool {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            // Not REQUIRES_STANDARD_JOBS: this pool sends group-channel extended jobs.
            supported_flags: REQUIRES_VERSION_ROLLING,
            success_flags: 0,
        })
    }

    async fn handle_open_standard_mining_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenStandardMiningChannelOwned,
    ) -> Actions {
        self.jobs = vec![(
            1,
            PoolJob::Standard {
                merkle_root: [0x33; 32],
            },
        )];
        Actions::from(vec![
            mining(MiningOwned::OpenStandardMiningChannelSuccess(
                OpenStandardMiningChannelSuccessOwned {
                    request_id: m.request_id,
                    channel_id: CHANNEL,
                    target: U256Owned::from(self.target),
                    extranonce_prefix: B032Owned::try_from(standard_prefix()).unwrap(),
                    group_channel_id: 0,
                },
            )),
            mining(MiningOwned::NewMiningJob(NewMiningJobOwned {
                channel_id: CHANNEL,
                job_id: 1,
                min_ntime: Sv2OptionOwned::new(None),
                version: JOB_VERSION,
                merkle_root: U256Owned::from([0x33u8; 32]),
            })),
            self.snph(CHANNEL, 1),
        ])
    }

    async fn handle_open_extended_mining_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenExtendedMiningChannelOwned,
    ) -> Actions {
        let prefix = vec![0xa1, 0xa2, 0xa3, 0xa4];
        self.jobs = vec![(
            1,
            PoolJob::Extended {
                extranonce_prefix: prefix.clone(),
                path: vec![[0x42; 32]],
            },
        )];
        assert!(m.min_extranonce_size <= 4);
        Actions::from(vec![
            mining(MiningOwned::OpenExtendedMiningChannelSuccess(
                OpenExtendedMiningChannelSuccessOwned {
                    request_id: m.request_id,
                    channel_id: CHANNEL,
                    target: U256Owned::from(self.target),
                    extranonce_size: 4,
                    extranonce_prefix: B032Owned::try_from(prefix).unwrap(),
                    group_channel_id: 0,
                },
            )),
            mining(MiningOwned::NewExtendedMiningJob(Self::ext_job(CHANNEL, 1))),
            self.snph(CHANNEL, 1),
        ])
    }

    async fn handle_submit_shares_standard(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesStandardOwned,
    ) -> Actions {
        if self.extended || m.channel_id != CHANNEL {
            let _ = self
                .events
                .send(Event::Invalid(format!("standard share {m:?}")));
            return Actions::none();
        }
        // Standard channel: the group job's extranonce is the channel's prefix.
        self.check(
            m.sequence_number,
            m.job_id,
            m.nonce,
            m.ntime,
            m.version,
            &[],
        )
    }

    async fn handle_submit_shares_extended(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesExtendedOwned,
    ) -> Actions {
        if !self.extended || m.channel_id != CHANNEL || m.extranonce.as_bytes().len() != 4 {
            let _ = self
                .events
                .send(Event::Invalid(format!("extended share {m:?}")));
            return Actions::none();
        }
        let extranonce = m.extranonce.as_bytes().to_vec();
        self.check(
            m.sequence_number,
            m.job_id,
            m.nonce,
            m.ntime,
            m.version,
            &extranonce,
        )
    }
}

async fn serve(
    extended: bool,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Event>,
    tower_stratum::ServerHandle,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let keys = AuthorityKeypair::from_secret(SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap());
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(keys)))
        .mining(ValidatingPool::new(tx, extended))
        .serve(l);
    (addr, rx, handle)
}

async fn scenario(extended: bool) {
    let (addr, mut events, handle) = serve(extended).await;
    let url = format!("stratum2+tcp://{addr}/{SRI_TEST_AUTHORITY_PUBLIC_KEY}");
    let mut args = vec![
        "--url",
        &url,
        "--threads",
        "1",
        "--nominal-hashrate",
        "1000",
        "--dump-protocol",
        "--exit-after-secs",
        "120",
    ];
    if extended {
        args.extend(["--channel", "extended"]);
    } else {
        // Group-channel extended jobs are only allowed without REQUIRES_STANDARD_JOBS.
        args.extend(["--channel", "standard", "--accept-group-jobs"]);
    }
    let mut miner =
        PeerProcess::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_cpu-miner")), &args);
    let mut accepted = [0u32; 3];
    within(110, "a valid share on job 1 and then on job 2", async {
        while accepted[2] == 0 {
            match events.recv().await.unwrap() {
                Event::Accepted { job_id } => accepted[job_id as usize] += 1,
                Event::Stale { .. } => {}
                Event::Invalid(why) => panic!("invalid share: {why}"),
            }
        }
    })
    .await;
    assert!(accepted[1] >= 1);
    miner.wait_for("<- SubmitSharesSuccess", 30).await;
    miner.wait_for("share accepted", 30).await;
    let kind = if extended {
        "-> SubmitSharesExtended"
    } else {
        "-> SubmitSharesStandard"
    };
    assert!(
        miner.log.iter().any(|l| l.starts_with(kind)),
        "no {kind} line in the dump"
    );
    drop(miner);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_channel_follows_set_target_and_group_channel_jobs() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_channel_follows_a_new_extranonce_prefix_and_tip() {
    scenario(true).await;
}

#[tokio::test]
async fn benchmark_mode_prints_hashrate_and_summary() {
    let mut miner = PeerProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_cpu-miner")),
        &["--benchmark", "--threads", "1", "--exit-after-secs", "6"],
    );
    let line = miner.wait_for("hashrate: ", 30).await;
    let hs: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hs > 0.0, "{line}");
    miner.wait_for("summary: ", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_first_url_down_it_fails_over_and_mines_on_the_second() {
    // The first upstream refuses (a port-0 listener's address, dropped).
    let down = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (addr, mut events, handle) = serve(false).await;
    let first = format!("stratum2+tcp://{down}/{SRI_TEST_AUTHORITY_PUBLIC_KEY}");
    let second = format!("stratum2+tcp://{addr}/{SRI_TEST_AUTHORITY_PUBLIC_KEY}");
    let mut miner = PeerProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_cpu-miner")),
        &[
            "--url",
            &first,
            "--url",
            &second,
            "--failover-attempts",
            "2",
            "--threads",
            "1",
            "--nominal-hashrate",
            "1000",
            "--accept-group-jobs",
            "--exit-after-secs",
            "120",
        ],
    );
    let line = miner.wait_for("switching upstream", 60).await;
    assert!(
        line.contains(&format!("index=1 of=2 address={addr}"))
            && line.contains("failover_attempts=2"),
        "{line}"
    );
    within(100, "a valid share on the second upstream", async {
        loop {
            match events.recv().await.unwrap() {
                Event::Accepted { .. } => return,
                Event::Stale { .. } => {}
                Event::Invalid(why) => panic!("invalid share: {why}"),
            }
        }
    })
    .await;
    miner.wait_for("share accepted", 30).await;
    drop(miner);
    handle.shutdown().await;
}
