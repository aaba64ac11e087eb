//! Template Distribution: tower-stratum-template's embedded regtest source, its TD server and
//! TD client, in process, over loopback Noise, and against real SRI peers (SRI's scripted
//! Template Provider `sri-harness tp`, `pool_sv2`, `mining_device`; installed by
//! `scripts/install-peers`, see docs/INTEROP.md).
//!
//! Every block a test sees mined is checked with `check::validate_block`, which uses
//! rust-bitcoin only and shares no code with the source that built the block. Every wait has a
//! deadline; no sleeps as synchronisation; ports are 0 except the pool's (it needs one in its
//! config).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum::codec::{
    AuthorityKeypair, AuthorityPublicKey, SRI_TEST_AUTHORITY_PUBLIC_KEY,
    SRI_TEST_AUTHORITY_SECRET_KEY,
};
use tower_stratum::handler::{
    NullSv2JobDeclarationClientHandler, NullSv2JobDeclarationServerHandler,
    NullSv2MiningClientHandler, NullSv2TemplateDistributionServerHandler, Sv2MiningServerHandler,
};
use tower_stratum::stratum_core::bitcoin::{hashes::Hash, BlockHash};
use tower_stratum::stratum_core::parsers_sv2::{CommonMessagesOwned, TemplateDistributionOwned};
use tower_stratum::stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, RequestTransactionDataOwned,
    SetNewPrevHashOwned,
};
use tower_stratum::{
    Action, Actions, ClientConfig, ClientHandle, Endpoint, Request, ServerConfig, ServerHandle,
    ServerTransport, SiblingMessage, StreamListener, Subprotocol, Sv2ClientService, Sv2Message,
    Sv2ServerService,
};
use tower_stratum_template::check::validate_block;
use tower_stratum_template::regtest::{genesis_prev_hash_bytes, op_true_script, REGTEST_NBITS};
use tower_stratum_template::solver::{payout_all, solve};
use tower_stratum_template::{
    spawn_embedded_source_with_events, BlockOrigin, ConnectedBlock, SourceConfig, SourceEvent,
    TemplateDistributionClient, TemplateDistributionServer, TemplateServerConfig,
};
use tower_stratum_test_kit::msg;
use tower_stratum_test_kit::peer::RawPeer;
use tower_stratum_test_kit::process::{free_port, peer_bin, render_config, PeerProcess};
use tower_stratum_test_kit::within;

fn sri_keys() -> AuthorityKeypair {
    AuthorityKeypair::from_secret(SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap())
}

fn sri_public() -> AuthorityPublicKey {
    SRI_TEST_AUTHORITY_PUBLIC_KEY.parse().unwrap()
}

fn td(m: TemplateDistributionOwned) -> Sv2Message {
    Sv2Message::TemplateDistribution(m)
}

/// A stand-in for a mining server that gets its templates through the sibling link: reports
/// every sibling message, and (if `blocks_to_mine > 0`) solves each template activated by a
/// `SetNewPrevHash` with the test solver and sends the `SubmitSolution` back to the sibling.
struct SiblingMiner {
    seen: mpsc::Sender<SiblingMessage>,
    blocks_to_mine: u32,
    templates: HashMap<u64, NewTemplateOwned>,
}

impl SiblingMiner {
    fn new(blocks_to_mine: u32) -> (Self, mpsc::Receiver<SiblingMessage>) {
        let (seen, rx) = mpsc::channel(1000);
        (
            Self {
                seen,
                blocks_to_mine,
                templates: HashMap::new(),
            },
            rx,
        )
    }
}

impl Sv2MiningServerHandler for SiblingMiner {
    async fn handle_sibling_message(&mut self, m: SiblingMessage) -> Actions {
        let _ = self.seen.try_send(m.clone());
        match m {
            SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::NewTemplate(t),
            )) => {
                self.templates.insert(t.template_id, t);
            }
            SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::SetNewPrevHash(p),
            )) if self.blocks_to_mine > 0 => {
                if let Some(t) = self.templates.get(&p.template_id) {
                    self.blocks_to_mine -= 1;
                    let payout = payout_all(t, op_true_script());
                    let solved = solve(t, &p, &[payout], b"sibling").unwrap();
                    return Action::ToSibling(SiblingMessage::Sv2(td(
                        TemplateDistributionOwned::SubmitSolution(solved.submit),
                    )))
                    .into();
                }
            }
            _ => {}
        }
        Actions::none()
    }
}

/// A mining server (no listener clients expected) running `miner`, linked to a sibling.
async fn sibling_server(
    miner: SiblingMiner,
) -> (
    Sv2ServerService<SiblingMiner>,
    ServerHandle,
    tower_stratum::SiblingIo,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sv2ServerService::new_with_sibling_io(
        ServerConfig::with_transport(ServerTransport::noise(AuthorityKeypair::generate())),
        l,
        miner,
        NullSv2JobDeclarationServerHandler,
        NullSv2TemplateDistributionServerHandler,
    )
}

enum Td {
    New(NewTemplateOwned),
    Prev(SetNewPrevHashOwned),
    Other(SiblingMessage),
}

async fn next_td(rx: &mut mpsc::Receiver<SiblingMessage>, what: &str) -> Td {
    match within(30, what, rx.recv())
        .await
        .expect("sibling stub gone")
    {
        SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::NewTemplate(t),
        )) => Td::New(t),
        SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
            TemplateDistributionOwned::SetNewPrevHash(p),
        )) => Td::Prev(p),
        other => Td::Other(other),
    }
}

/// The next `NewTemplate` and the `SetNewPrevHash` activating it, skipping anything else.
async fn next_pair(
    rx: &mut mpsc::Receiver<SiblingMessage>,
    what: &str,
) -> (NewTemplateOwned, SetNewPrevHashOwned) {
    let t = loop {
        if let Td::New(t) = next_td(rx, what).await {
            break t;
        }
    };
    match next_td(rx, what).await {
        Td::Prev(p) => {
            assert_eq!(
                p.template_id, t.template_id,
                "SetNewPrevHash for another template"
            );
            (t, p)
        }
        Td::New(_) => panic!("{what}: two NewTemplate without SetNewPrevHash"),
        Td::Other(o) => panic!("{what}: unexpected {o:?}"),
    }
}

async fn next_block(events: &mut mpsc::Receiver<SourceEvent>, what: &str) -> ConnectedBlock {
    next_block_within(events, 60, what).await
}

async fn next_block_within(
    events: &mut mpsc::Receiver<SourceEvent>,
    secs: u64,
    what: &str,
) -> ConnectedBlock {
    loop {
        match within(secs, what, events.recv())
            .await
            .expect("events closed")
        {
            SourceEvent::Block(b) => return *b,
            SourceEvent::SolutionRejected { template_id, error } => {
                panic!("{what}: solution for template {template_id} rejected: {error}")
            }
            _ => {}
        }
    }
}

fn displayed(u256: &[u8]) -> String {
    BlockHash::from_byte_array(u256.try_into().unwrap()).to_string()
}

// ------------------------------------------------------------------ in process

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_source_and_a_sibling_mining_server_mine_valid_blocks() {
    let (miner, mut seen) = SiblingMiner::new(5);
    let (mut svc, handle, io) = sibling_server(miner).await;
    let (ev_tx, mut events) = mpsc::channel(100);
    let source = spawn_embedded_source_with_events(
        SourceConfig::with_tip_interval(Duration::ZERO),
        io,
        Some(ev_tx),
    );
    let (t, p) = next_pair(&mut seen, "first template").await;
    assert_eq!(t.template_id, 1);
    assert!(t.future_template);
    assert_eq!(t.coinbase_prefix.as_bytes(), &[0x51, 0x00]);
    assert_eq!(p.prev_hash.as_bytes(), &genesis_prev_hash_bytes());
    assert_eq!(p.n_bits, REGTEST_NBITS);

    let mut prev = BlockHash::from_byte_array(genesis_prev_hash_bytes());
    let mut current = t.template_id;
    for height in 1..=5u32 {
        let b = next_block(&mut events, "block from the sibling's solution").await;
        assert_eq!(b.height, height);
        assert!(matches!(b.origin, BlockOrigin::Solution { .. }));
        assert_eq!(b.block.header.prev_blockhash, prev);
        validate_block(&b.block_bytes(), height).unwrap();
        prev = b.hash;
        let (t, p) = next_pair(&mut seen, "template after the block").await;
        assert_eq!(t.template_id, b.next.template_id());
        assert_eq!(p.prev_hash.as_bytes(), &b.hash.to_byte_array());
        current = t.template_id;
    }
    // RequestTransactionData for the current template: answered, no transactions; for the
    // first (now stale) template: stale-template-id.
    for (id, ok) in [(current, true), (1, false)] {
        svc.ready()
            .await
            .unwrap()
            .call(Request::ToSibling(SiblingMessage::Sv2(td(
                TemplateDistributionOwned::RequestTransactionData(RequestTransactionDataOwned {
                    template_id: id,
                }),
            ))))
            .await
            .unwrap();
        match next_td(&mut seen, "RequestTransactionData answer").await {
            Td::Other(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataSuccess(s),
            ))) if ok => {
                assert_eq!(s.template_id, id);
                assert!(s.transaction_list.is_empty());
            }
            Td::Other(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataError(e),
            ))) if !ok => assert_eq!(e.error_code.as_bytes(), b"stale-template-id"),
            _ => panic!("unexpected answer to RequestTransactionData({id})"),
        }
    }
    // The mining server stops: the source sees its sibling link close and ends (no spin).
    handle.shutdown().await;
    within(10, "source task to end", source).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn embedded_source_simulates_other_miners_on_its_interval() {
    let (miner, mut seen) = SiblingMiner::new(0);
    let (_svc, handle, io) = sibling_server(miner).await;
    let (ev_tx, mut events) = mpsc::channel(100);
    let source = spawn_embedded_source_with_events(
        SourceConfig::with_tip_interval(Duration::from_secs(600)),
        io,
        Some(ev_tx),
    );
    let started = tokio::time::Instant::now();
    let (t1, _) = next_pair(&mut seen, "first template").await;
    // Virtual time: the runtime jumps to the 600 s deadline (the wait's own deadline is
    // later, 3600 s, or the paused clock would jump to it first).
    let b = next_block_within(&mut events, 3600, "simulated block").await;
    assert_eq!(b.origin, BlockOrigin::Simulated);
    assert_eq!(b.height, 1);
    assert!(started.elapsed() >= Duration::from_secs(600));
    validate_block(&b.block_bytes(), 1).unwrap();
    let (t2, p2) = next_pair(&mut seen, "template on the simulated block").await;
    assert!(t2.template_id > t1.template_id);
    assert_eq!(p2.prev_hash.as_bytes(), &b.hash.to_byte_array());
    let b2 = next_block_within(&mut events, 3600, "second simulated block").await;
    assert_eq!(b2.height, 2);
    assert!(started.elapsed() >= Duration::from_secs(1200));
    validate_block(&b2.block_bytes(), 2).unwrap();
    handle.shutdown().await;
    within(10, "source task to end", source).await.unwrap();
}

/// The TD server's simulated blocks come from its handler timer: served on paused time, with
/// no ticker task, the templates of a simulated block reach a client exactly one
/// `tip_interval` after the source started, then again one interval later.
#[tokio::test(start_paused = true)]
async fn td_server_simulates_blocks_from_its_handler_timer_on_paused_time() {
    let started = tokio::time::Instant::now();
    let (ev_tx, mut events) = mpsc::channel(100);
    let tp = TemplateDistributionServer::new(TemplateServerConfig {
        source: SourceConfig::with_tip_interval(Duration::from_secs(600)),
        ..TemplateServerConfig::default()
    })
    .unwrap()
    .with_events(ev_tx);
    let (streams, listener) = StreamListener::new(1);
    let (_svc, handle) = tp.serve(
        ServerConfig::with_transport(ServerTransport::Plaintext),
        listener,
    );
    let (client, server) = tokio::io::duplex(64 * 1024);
    streams.send(server).await.unwrap();
    let mut p = RawPeer::plaintext(client);
    p.send(msg::setup_connection(
        Subprotocol::TemplateDistribution,
        2,
        2,
        0,
    ))
    .await;
    match within(5, "SetupConnection.Success", p.recv()).await {
        Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))) => {}
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
    let mut tip = genesis_prev_hash_bytes();
    for (height, at) in [(1u32, 600u64), (2, 1200)] {
        // The current template: on connect, then the one sent with the last simulated block.
        let (t, snph) = td_pair(&mut p, 5).await;
        assert_eq!(snph.prev_hash.as_bytes(), &tip);
        assert_eq!(snph.template_id, t.template_id);
        // The wait's own deadline (3600 s) is later, or the paused clock would jump to it.
        let b = next_block_within(&mut events, 3600, "simulated block").await;
        assert_eq!(b.origin, BlockOrigin::Simulated);
        assert_eq!(b.height, height);
        assert_eq!(started.elapsed(), Duration::from_secs(at));
        validate_block(&b.block_bytes(), height).unwrap();
        tip = b.hash.to_byte_array();
    }
    let (_, snph) = td_pair(&mut p, 5).await;
    assert_eq!(
        snph.prev_hash.as_bytes(),
        &tip,
        "templates on the second block"
    );
    handle.shutdown().await;
}

/// The next `NewTemplate` + `SetNewPrevHash` on a raw TD connection, within `secs`.
async fn td_pair<S>(p: &mut RawPeer<S>, secs: u64) -> (NewTemplateOwned, SetNewPrevHashOwned)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let t = match within(secs, "NewTemplate", p.recv()).await {
        Some(Sv2Message::TemplateDistribution(TemplateDistributionOwned::NewTemplate(t))) => t,
        other => panic!("expected NewTemplate, got {other:?}"),
    };
    match within(5, "SetNewPrevHash", p.recv()).await {
        Some(Sv2Message::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(s))) => {
            (t, s)
        }
        other => panic!("expected SetNewPrevHash, got {other:?}"),
    }
}

// ------------------------------------------------------------------ over loopback Noise

async fn serve_tp(
    config: TemplateServerConfig,
    keys: AuthorityKeypair,
) -> (ServerHandle, SocketAddr, mpsc::Receiver<SourceEvent>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (ev_tx, events) = mpsc::channel(1000);
    let tp = TemplateDistributionServer::new(config)
        .unwrap()
        .with_events(ev_tx);
    let (_svc, handle) = tp.serve(
        ServerConfig::with_transport(ServerTransport::noise(keys)),
        l,
    );
    (handle, addr, events)
}

/// Our TD client linked to a sibling stub, connected to `endpoint`.
fn td_client(
    endpoint: Endpoint,
    io: tower_stratum::SiblingIo,
) -> (
    Sv2ClientService<
        NullSv2MiningClientHandler,
        NullSv2JobDeclarationClientHandler,
        TemplateDistributionClient,
    >,
    ClientHandle,
) {
    Sv2ClientService::new_from_sibling_io(
        ClientConfig::default().endpoint(Subprotocol::TemplateDistribution, endpoint),
        NullSv2MiningClientHandler,
        NullSv2JobDeclarationClientHandler,
        TemplateDistributionClient::default(),
        io,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_server_feeds_our_td_client_over_noise_and_takes_its_solutions() {
    let keys = AuthorityKeypair::generate();
    let (tp_handle, tp_addr, mut events) =
        serve_tp(TemplateServerConfig::default(), keys.clone()).await;

    // A mining-server stand-in that mines 2 blocks, linked to our TD client.
    let (miner, mut seen) = SiblingMiner::new(2);
    let (mut stub, stub_handle, io) = sibling_server(miner).await;
    let (_client, client_handle) =
        td_client(Endpoint::noise(tp_addr.to_string(), keys.public()), io);

    let (t, p) = next_pair(&mut seen, "NewTemplate + SetNewPrevHash over the wire").await;
    assert_eq!(t.template_id, 1);
    assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_000);
    assert_eq!(p.prev_hash.as_bytes(), &genesis_prev_hash_bytes());

    // The stub's SubmitSolution travels: stub -> sibling -> TD client -> TP.
    let b1 = next_block(&mut events, "block 1 at the TP").await;
    assert_eq!(b1.origin, BlockOrigin::Solution { template_id: 1 });
    validate_block(&b1.block_bytes(), 1).unwrap();
    let (t2, p2) = next_pair(&mut seen, "templates on block 1").await;
    assert_eq!(t2.template_id, b1.next.template_id());
    assert_eq!(p2.prev_hash.as_bytes(), &b1.hash.to_byte_array());
    let b2 = next_block(&mut events, "block 2 at the TP").await;
    validate_block(&b2.block_bytes(), 2).unwrap();
    assert_eq!(b2.block.header.prev_blockhash, b1.hash);
    let (t3, _) = next_pair(&mut seen, "templates on block 2").await;

    // RequestTransactionData from the sibling goes upstream; the answer comes back.
    stub.ready()
        .await
        .unwrap()
        .call(Request::ToSibling(SiblingMessage::Sv2(td(
            TemplateDistributionOwned::RequestTransactionData(RequestTransactionDataOwned {
                template_id: t3.template_id,
            }),
        ))))
        .await
        .unwrap();
    loop {
        match next_td(&mut seen, "RequestTransactionData.Success").await {
            Td::Other(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionDataSuccess(s),
            ))) => {
                assert_eq!(s.template_id, t3.template_id);
                assert!(s.transaction_list.is_empty());
                break;
            }
            Td::Other(o) => panic!("unexpected {o:?}"),
            _ => {}
        }
    }

    client_handle.shutdown().await;
    stub_handle.shutdown().await;
    tp_handle.shutdown().await;
}

async fn raw_td_peer(addr: SocketAddr, keys: &AuthorityKeypair) -> RawPeer<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut p = RawPeer::noise(tcp, Some(keys.public())).await.unwrap();
    p.send(msg::setup_connection(
        Subprotocol::TemplateDistribution,
        2,
        2,
        0,
    ))
    .await;
    match within(5, "SetupConnection.Success", p.recv()).await {
        Some(Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))) => {}
        other => panic!("expected SetupConnection.Success, got {other:?}"),
    }
    p
}

async fn recv_td(p: &mut RawPeer<TcpStream>, what: &str) -> TemplateDistributionOwned {
    match within(5, what, p.recv()).await {
        Some(Sv2Message::TemplateDistribution(m)) => m,
        other => panic!("{what}: got {other:?}"),
    }
}

fn constraints(size: u32) -> Sv2Message {
    td(TemplateDistributionOwned::CoinbaseOutputConstraints(
        CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: size,
            coinbase_output_max_additional_sigops: 4,
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn td_server_protocol_details() {
    let keys = AuthorityKeypair::generate();

    // Default: templates right after SetupConnection, not repeated for the constraints.
    let (h, addr, _ev) = serve_tp(TemplateServerConfig::default(), keys.clone()).await;
    let mut p = raw_td_peer(addr, &keys).await;
    let TemplateDistributionOwned::NewTemplate(t) = recv_td(&mut p, "NewTemplate").await else {
        panic!("expected NewTemplate first")
    };
    let TemplateDistributionOwned::SetNewPrevHash(snph) = recv_td(&mut p, "SetNewPrevHash").await
    else {
        panic!("expected SetNewPrevHash")
    };
    assert_eq!(snph.template_id, t.template_id);
    assert_eq!(
        displayed(snph.prev_hash.as_bytes()),
        "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    );
    p.send(constraints(74)).await;
    // RequestTransactionData: known template -> Success (no transactions); unknown -> Error.
    // (The first answer also proves no duplicate template followed the constraints.)
    p.send(td(TemplateDistributionOwned::RequestTransactionData(
        RequestTransactionDataOwned {
            template_id: t.template_id,
        },
    )))
    .await;
    match recv_td(&mut p, "RequestTransactionData.Success").await {
        TemplateDistributionOwned::RequestTransactionDataSuccess(s) => {
            assert_eq!(s.template_id, t.template_id)
        }
        other => panic!("expected RequestTransactionData.Success, got {other:?}"),
    }
    p.send(td(TemplateDistributionOwned::RequestTransactionData(
        RequestTransactionDataOwned { template_id: 999 },
    )))
    .await;
    match recv_td(&mut p, "RequestTransactionData.Error").await {
        TemplateDistributionOwned::RequestTransactionDataError(e) => {
            assert_eq!(e.error_code.as_bytes(), b"template-id-not-found")
        }
        other => panic!("expected RequestTransactionData.Error, got {other:?}"),
    }
    // Constraints no block can honour close the connection.
    let mut q = raw_td_peer(addr, &keys).await;
    let _ = recv_td(&mut q, "NewTemplate").await;
    let _ = recv_td(&mut q, "SetNewPrevHash").await;
    q.send(constraints(2_000_000)).await;
    assert!(within(5, "close", q.recv()).await.is_none());
    h.shutdown().await;

    // Spec-strict: nothing before CoinbaseOutputConstraints.
    let strict = TemplateServerConfig {
        send_on_connect: false,
        ..TemplateServerConfig::default()
    };
    let (h, addr, _ev) = serve_tp(strict, keys.clone()).await;
    let mut p = raw_td_peer(addr, &keys).await;
    // The first message after SetupConnection answers this request: no template came first.
    p.send(td(TemplateDistributionOwned::RequestTransactionData(
        RequestTransactionDataOwned { template_id: 999 },
    )))
    .await;
    assert!(
        matches!(
            recv_td(&mut p, "RequestTransactionData.Error").await,
            TemplateDistributionOwned::RequestTransactionDataError(_)
        ),
        "template before CoinbaseOutputConstraints"
    );
    p.send(constraints(43)).await;
    assert!(matches!(
        recv_td(&mut p, "NewTemplate").await,
        TemplateDistributionOwned::NewTemplate(_)
    ));
    assert!(matches!(
        recv_td(&mut p, "SetNewPrevHash").await,
        TemplateDistributionOwned::SetNewPrevHash(_)
    ));
    h.shutdown().await;
}

// ------------------------------------------------------------------ interop with SRI

/// SRI's scripted Template Provider (`sri-harness tp`, SRI's public test keypair; stdin
/// commands `new-block`, `new-template`).
async fn sri_tp(extra: &[&str]) -> (PeerProcess, String) {
    let mut args = vec!["tp", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut tp = PeerProcess::spawn(&peer_bin("sri-harness"), &args);
    let line = tp.wait_for("LISTENING ", 60).await;
    let addr = line.split_whitespace().last().unwrap().to_string();
    (tp, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_td_client_gets_templates_from_sri_tp_and_submits_solutions() {
    // nBits 0x207fffff so the test solver finds a block in a few hashes.
    let (mut tp, tp_addr) = sri_tp(&["--nbits", "207fffff"]).await;
    let (miner, mut seen) = SiblingMiner::new(1);
    let (_stub, stub_handle, io) = sibling_server(miner).await;
    // The harness TP presents a certificate signed by SRI's test key: authenticate it.
    let (_client, client_handle) = td_client(Endpoint::noise(tp_addr.clone(), sri_public()), io);

    let (t, p) = next_pair(&mut seen, "NewTemplate + SetNewPrevHash from SRI's TP").await;
    assert!(t.future_template);
    assert_eq!(t.coinbase_prefix.as_bytes(), &[0x52, 0x00]);
    assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_000);
    assert_eq!(p.prev_hash.as_bytes(), &[0x11; 32]);
    assert_eq!(p.n_bits, 0x207f_ffff);
    // Our CoinbaseOutputConstraints reached it (it only sends templates after them).
    tp.wait_for("CoinbaseOutputConstraints(coinbase_output_max_additional_size: 43, coinbase_output_max_additional_sigops: 4)", 10).await;
    // The stub solved the template; the SubmitSolution went through our client.
    tp.wait_for(
        &format!(
            "SubmitSolution from client #1 for template {}",
            t.template_id
        ),
        30,
    )
    .await;

    // A new block at the TP reaches the sibling as a new future template + prev hash.
    let stdin = tp.child.stdin.as_mut().unwrap();
    stdin.write_all(b"new-block\n").await.unwrap();
    stdin.flush().await.unwrap();
    let (t2, p2) = next_pair(&mut seen, "templates after new-block").await;
    assert!(t2.template_id > t.template_id);
    assert_eq!(t2.coinbase_prefix.as_bytes(), &[0x53, 0x00]);
    assert_ne!(p2.prev_hash.as_bytes(), p.prev_hash.as_bytes());

    client_handle.shutdown().await;
    stub_handle.shutdown().await;
}

/// Starts SRI's pool against the TP at `tp_addr`; returns it once it accepts miners.
async fn sri_pool(tp_addr: SocketAddr) -> (PeerProcess, SocketAddr) {
    let pool_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = render_config(
        "pool.toml",
        &[
            ("LISTEN_ADDR", pool_addr.to_string()),
            ("TP_ADDR", tp_addr.to_string()),
        ],
    );
    let mut pool = PeerProcess::spawn(&peer_bin("pool_sv2"), &["-c", cfg.to_str().unwrap()]);
    pool.keep(cfg);
    pool.wait_for("Sv2 Template Provider setup done", 60).await;
    pool.wait_for(
        "Required template data received, ready to accept connections",
        60,
    )
    .await;
    (pool, pool_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_pool_runs_on_our_template_provider_and_its_blocks_are_valid() {
    // Our TD server, in process, with SRI's public test keypair (the pool does not check it).
    // Simulated blocks every 10 s: SRI's mining_device fixes each job's ntime at (wall clock +
    // 60 s) when the job arrives. Right after block 1 the median time past is block 1's own
    // time, so if block 1 was found within a second of its job, the next job's ntime equals it,
    // below the new min_ntime: the pool rejects every share of that job. Another tip unsticks
    // the device.
    let config = TemplateServerConfig {
        source: SourceConfig::with_tip_interval(Duration::from_secs(10)),
        ..TemplateServerConfig::default()
    };
    let (tp_handle, tp_addr, mut events) = serve_tp(config, sri_keys()).await;
    let (mut pool, pool_addr) = sri_pool(tp_addr).await;

    // SRI's CPU miner on the pool: on regtest every share is a block, which the pool sends
    // to our TP as SubmitSolution; our TP rebuilds it and it must be valid.
    let mut dev = PeerProcess::spawn(
        &peer_bin("mining_device"),
        &[
            "--address-pool",
            &pool_addr.to_string(),
            "--pubkey-pool",
            SRI_TEST_AUTHORITY_PUBLIC_KEY,
            "--id-device",
            "template-interop",
            "--id-user",
            "template-interop",
            "--cores",
            "1",
        ],
    );
    dev.wait_for("channel opened", 60).await;

    // Every tip (the pool's solutions and simulated ones) must be a valid block on the last.
    let mut prev = BlockHash::from_byte_array(genesis_prev_hash_bytes());
    let mut solutions = Vec::new();
    within(
        120,
        "two blocks mined by SRI's pool + mining_device",
        async {
            while solutions.len() < 2 {
                let b = next_block_within(&mut events, 120, "a block").await;
                validate_block(&b.block_bytes(), b.height).unwrap();
                assert_eq!(
                    b.block.header.prev_blockhash, prev,
                    "block {} not on the tip",
                    b.height
                );
                prev = b.hash;
                if let BlockOrigin::Solution { template_id } = b.origin {
                    // The pool added its payout before our witness commitment.
                    let cb = &b.block.txdata[0];
                    assert!(cb.output.len() >= 2);
                    assert!(cb.output.last().unwrap().script_pubkey.is_op_return());
                    eprintln!(
                        "pool solved template {template_id}: block {} at height {} ({} outputs)",
                        b.hash,
                        b.height,
                        cb.output.len()
                    );
                    solutions.push(b.height);
                }
            }
        },
    )
    .await;
    pool.wait_for("Block Found", 30).await;
    drop(dev);
    drop(pool);
    tp_handle.shutdown().await;
}
