//! `sri-harness`: test peers built on SRI's own test kit (`integration_tests_sv2` 0.6.0).
//!
//! * `sri-harness tp` — a scripted Sv2 Template Provider. Noise responder with SRI's public test
//!   authority keypair through `integration_tests_sv2::utils::create_downstream`, the helper SRI's
//!   `MockUpstream` and `Sniffer` use. It answers `SetupConnection` (Template Distribution) with
//!   `SetupConnectionSuccess` and, after each client's `CoinbaseOutputConstraints`, sends a future
//!   `NewTemplate` plus the `SetNewPrevHash` that activates it (the template fields are the test
//!   vector SRI's `jdc_template_tx_data_race` test scripts into its `MockUpstream`). That is what
//!   SRI's `pool_sv2` waits for before it accepts miners.
//! * `sri-harness sniffer` — a Noise man-in-the-middle that logs every Sv2 message in both
//!   directions, using SRI's sniffer forwarding loops (`recv_from_down_send_to_up` /
//!   `recv_from_up_send_to_down`).
//!
//! Both bind `--listen` themselves (port 0 works, no port race), print exactly one line
//! `LISTENING <ip:port>` on stdout once the socket accepts connections, log to stderr, and exit
//! on stdin EOF (unless `--ignore-stdin`), SIGTERM or SIGINT. See docs/INTEROP.md.

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_channel::Sender;
use clap::{Args, Parser, Subcommand};
use integration_tests_sv2::{
    message_aggregator::MessagesAggregator,
    utils::{
        create_downstream, create_upstream, message_from_frame, recv_from_down_send_to_up,
        recv_from_up_send_to_down,
    },
};
use stratum_apps::{
    stratum_core::{
        bitcoin::{CompactTarget, Target},
        codec_sv2::MessageFrame,
        common_messages_sv2::{
            ERROR_CODE_SETUP_CONNECTION_UNSUPPORTED_PROTOCOL, Protocol, SetupConnectionErrorOwned,
            SetupConnectionSuccessOwned,
        },
        parsers_sv2::{
            AnyMessageOwned, CommonMessagesOwned, IsSv2Message, TemplateDistributionOwned,
        },
        template_distribution_sv2::{
            NewTemplateOwned, RequestTransactionDataSuccessOwned, SetNewPrevHashOwned,
        },
    },
    utils::types::OutboundFrame,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(name = "sri-harness", version, about = "SRI-based test peers for tower-stratum interop tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Scripted Sv2 Template Provider (Noise responder, SRI test authority key).
    ///
    /// stdin commands, one per line: `new-block` (future NewTemplate + SetNewPrevHash on a new
    /// prev hash, to every client), `new-template` (non-future NewTemplate on the current tip).
    Tp(TpArgs),
    /// Noise man-in-the-middle logging every Sv2 message (SRI's sniffer loops).
    ///
    /// Presents a certificate signed by SRI's test authority key to downstreams and does not
    /// check the upstream's key.
    Sniffer(SnifferArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Address to listen on; port 0 picks a free port (see the LISTENING line).
    #[arg(long)]
    listen: SocketAddr,
    /// Keep running when stdin reaches EOF (stop with SIGTERM/SIGINT only).
    #[arg(long)]
    ignore_stdin: bool,
}

#[derive(Args, Debug)]
struct TpArgs {
    #[command(flatten)]
    common: Common,
    /// Compact network target (hex) sent in SetNewPrevHash. The default, 1d00ffff (difficulty 1),
    /// keeps CPU miners from finding blocks; 207fffff makes nearly every share a block.
    #[arg(long, default_value = "1d00ffff", value_parser = parse_hex_u32)]
    nbits: u32,
    /// coinbase_tx_value_remaining of every template, in satoshis.
    #[arg(long, default_value_t = 5_000_000_000)]
    coinbase_value: u64,
    /// Also announce a new block (as the `new-block` stdin command) every this many seconds.
    #[arg(long)]
    block_interval_secs: Option<u64>,
}

#[derive(Args, Debug)]
struct SnifferArgs {
    #[command(flatten)]
    common: Common,
    /// The real upstream (Sv2, Noise) to forward to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Name used in the log lines (`🔍 Sv2 Sniffer <name>#<n> | ...`).
    #[arg(long, default_value = "sniffer")]
    name: String,
}

fn parse_hex_u32(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(cli));
    // Connection tasks may still be parked on sockets; do not wait for them.
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let common = match &cli.cmd {
        Cmd::Tp(a) => &a.common,
        Cmd::Sniffer(a) => &a.common,
    };
    let listener = match TcpListener::bind(common.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", common.listen);
            return 1;
        }
    };
    let local = listener.local_addr().expect("local_addr");
    let ignore_stdin = common.ignore_stdin;

    let tp = match &cli.cmd {
        Cmd::Tp(a) => Some(Arc::new(TpState::new(a))),
        Cmd::Sniffer(_) => None,
    };
    let serve = {
        let tp = tp.clone();
        async move {
            match cli.cmd {
                Cmd::Tp(a) => {
                    let tp = tp.expect("tp state");
                    if let Some(secs) = a.block_interval_secs {
                        let tp = tp.clone();
                        tokio::spawn(async move {
                            let mut tick = tokio::time::interval(Duration::from_secs(secs.max(1)));
                            tick.tick().await;
                            loop {
                                tick.tick().await;
                                tp.broadcast_new_block().await;
                            }
                        });
                    }
                    serve_tp(listener, tp).await
                }
                Cmd::Sniffer(a) => serve_sniffer(listener, a.upstream, a.name).await,
            }
        }
    };

    info!("{} listening on {local}", if tp.is_some() { "TP" } else { "Sniffer" });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "LISTENING {local}");
        let _ = out.flush();
    }

    tokio::select! {
        _ = serve => 1,
        why = shutdown(ignore_stdin, tp) => {
            info!("shutting down: {why}");
            0
        }
    }
}

/// Resolves on SIGTERM, SIGINT or stdin EOF; runs TP stdin commands meanwhile.
async fn shutdown(ignore_stdin: bool, tp: Option<Arc<TpState>>) -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let stdin = async move {
        if ignore_stdin {
            return std::future::pending().await;
        }
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    let cmd = line.trim();
                    match (cmd, &tp) {
                        ("", _) => {}
                        ("new-block", Some(tp)) => tp.broadcast_new_block().await,
                        ("new-template", Some(tp)) => tp.broadcast_new_template().await,
                        _ => warn!("unknown stdin command {cmd:?}"),
                    }
                }
                Ok(None) | Err(_) => return "stdin EOF",
            }
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        why = stdin => why,
    }
}

async fn send(tx: &Sender<OutboundFrame>, msg: AnyMessageOwned) -> bool {
    let msg_type = msg.message_type();
    let frame = MessageFrame::from_message(msg, msg_type, 0, false).expect("encodable message");
    tx.send(frame.into()).await.is_ok()
}

// ---------------------------------------------------------------- Template Provider

/// Coinbase outputs of SRI's test template: one zero-value OP_RETURN witness commitment.
const TEMPLATE_COINBASE_OUTPUTS: [u8; 47] = [
    0, 0, 0, 0, 0, 0, 0, 0, 38, 106, 36, 170, 33, 169, 237, 226, 246, 28, 63, 113, 209, 222, 253,
    63, 169, 153, 223, 163, 105, 83, 117, 92, 105, 6, 137, 121, 153, 98, 180, 139, 235, 216, 54,
    151, 78, 140, 249,
];
const TEMPLATE_VERSION: u32 = 0x2000_0000;

struct Tip {
    height: u32,
    prev_hash: [u8; 32],
    header_timestamp: u32,
}

struct TpState {
    nbits: u32,
    coinbase_value: u64,
    next_template_id: AtomicU64,
    next_conn_id: AtomicU64,
    tip: Mutex<Tip>,
    /// Clients that sent CoinbaseOutputConstraints, i.e. want templates.
    clients: Mutex<Vec<(u64, Sender<OutboundFrame>)>>,
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// BIP34 height push as the scriptSig prefix; height 2 gives SRI's test vector `[82, 0]`.
fn coinbase_prefix(height: u32) -> Vec<u8> {
    if (1..=16).contains(&height) {
        return vec![0x50 + height as u8, 0];
    }
    let mut bytes = height.to_le_bytes().to_vec();
    while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 {
        bytes.pop();
    }
    if bytes[bytes.len() - 1] & 0x80 != 0 {
        bytes.push(0);
    }
    let mut out = vec![bytes.len() as u8];
    out.extend(bytes);
    out
}

impl TpState {
    fn new(a: &TpArgs) -> Self {
        TpState {
            nbits: a.nbits,
            coinbase_value: a.coinbase_value,
            next_template_id: AtomicU64::new(1),
            next_conn_id: AtomicU64::new(1),
            tip: Mutex::new(Tip {
                height: 2,
                prev_hash: [0x11; 32],
                // min_ntime: the pool rejects shares with ntime more than 2 h past it, and SRI's
                // mining_device uses its wall clock, so this must be "now", not a fixed vector.
                header_timestamp: now_secs(),
            }),
            clients: Mutex::new(Vec::new()),
        }
    }

    fn new_template(&self, future: bool) -> NewTemplateOwned {
        let template_id = self.next_template_id.fetch_add(1, Ordering::SeqCst);
        let height = self.tip.lock().expect("tip").height;
        NewTemplateOwned {
            template_id,
            future_template: future,
            version: TEMPLATE_VERSION,
            coinbase_tx_version: 2,
            coinbase_prefix: coinbase_prefix(height).try_into().expect("B0255"),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: self.coinbase_value,
            coinbase_tx_outputs_count: 1,
            coinbase_tx_outputs: TEMPLATE_COINBASE_OUTPUTS.to_vec().try_into().expect("B064K"),
            coinbase_tx_locktime: 0,
            merkle_path: vec![].try_into().expect("empty merkle path"),
        }
    }

    fn prev_hash_for(&self, template_id: u64) -> SetNewPrevHashOwned {
        let tip = self.tip.lock().expect("tip");
        let target = Target::from_compact(CompactTarget::from_consensus(self.nbits)).to_le_bytes();
        SetNewPrevHashOwned {
            template_id,
            prev_hash: tip.prev_hash.into(),
            header_timestamp: tip.header_timestamp,
            n_bits: self.nbits,
            target: target.into(),
        }
    }

    /// Future NewTemplate + SetNewPrevHash activating it, on the current tip.
    fn tip_messages(&self) -> [AnyMessageOwned; 2] {
        let template = self.new_template(true);
        let prev_hash = self.prev_hash_for(template.template_id);
        [
            AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(template)),
            AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(
                prev_hash,
            )),
        ]
    }

    async fn broadcast(&self, what: &str, msgs: Vec<AnyMessageOwned>) {
        let clients = self.clients.lock().expect("clients").clone();
        info!("TP: {what} -> {} client(s)", clients.len());
        for (id, tx) in clients {
            for m in &msgs {
                info!("TP: sending to client #{id}: {m}");
                if !send(&tx, m.clone()).await {
                    warn!("TP: client #{id} gone");
                    break;
                }
            }
        }
    }

    async fn broadcast_new_block(&self) {
        {
            let mut tip = self.tip.lock().expect("tip");
            tip.height += 1;
            let height = tip.height;
            tip.prev_hash = [0x11; 32];
            tip.prev_hash[..4].copy_from_slice(&height.to_le_bytes());
            tip.header_timestamp = now_secs().max(tip.header_timestamp + 1);
        }
        let msgs = self.tip_messages().to_vec();
        self.broadcast("new block", msgs).await;
    }

    async fn broadcast_new_template(&self) {
        let template = self.new_template(false);
        let msg =
            AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(template));
        self.broadcast("new template", vec![msg]).await;
    }
}

async fn serve_tp(listener: TcpListener, tp: Arc<TpState>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(tp_connection(tp.clone(), stream, peer));
            }
            Err(e) => {
                error!("TP: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tp_connection(tp: Arc<TpState>, stream: TcpStream, peer: SocketAddr) {
    let id = tp.next_conn_id.fetch_add(1, Ordering::SeqCst);
    info!("TP: client #{id} connected from {peer}");
    let Some((rx, tx)) = create_downstream(stream).await else {
        warn!("TP: client #{id}: Noise handshake failed");
        return;
    };
    info!("TP: client #{id}: Noise handshake done");
    while let Ok(mut frame) = rx.recv().await {
        let (msg_type, msg) = message_from_frame(&mut frame);
        info!("TP: received from client #{id}: {msg_type} {msg}");
        let ok = match msg {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m)) => {
                if m.protocol == Protocol::TemplateDistributionProtocol {
                    let reply = SetupConnectionSuccessOwned {
                        used_version: 2,
                        flags: 0,
                    };
                    info!("TP: sending to client #{id}: SetupConnectionSuccess");
                    send(
                        &tx,
                        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(reply)),
                    )
                    .await
                } else {
                    let reply = SetupConnectionErrorOwned {
                        flags: 0,
                        error_code: ERROR_CODE_SETUP_CONNECTION_UNSUPPORTED_PROTOCOL
                            .to_string()
                            .into_bytes()
                            .try_into()
                            .expect("error code"),
                    };
                    warn!("TP: client #{id} asked for {:?}; sending SetupConnectionError", m.protocol);
                    send(
                        &tx,
                        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(reply)),
                    )
                    .await
                }
            }
            AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::CoinbaseOutputConstraints(_),
            ) => {
                let first = {
                    let mut clients = tp.clients.lock().expect("clients");
                    let first = !clients.iter().any(|(c, _)| *c == id);
                    if first {
                        clients.push((id, tx.clone()));
                    }
                    first
                };
                let mut ok = true;
                if first {
                    for m in tp.tip_messages() {
                        info!("TP: sending to client #{id}: {m}");
                        ok &= send(&tx, m).await;
                    }
                }
                ok
            }
            AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::RequestTransactionData(m),
            ) => {
                // Templates carry no transactions.
                let reply = RequestTransactionDataSuccessOwned {
                    template_id: m.template_id,
                    excess_data: vec![].try_into().expect("B064K"),
                    transaction_list: vec![].try_into().expect("Seq064K"),
                };
                send(
                    &tx,
                    AnyMessageOwned::TemplateDistribution(
                        TemplateDistributionOwned::RequestTransactionDataSuccess(reply),
                    ),
                )
                .await
            }
            AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SubmitSolution(m)) => {
                info!(
                    "TP: SubmitSolution from client #{id} for template {} (block found)",
                    m.template_id
                );
                true
            }
            _ => true,
        };
        if !ok {
            break;
        }
    }
    tp.clients.lock().expect("clients").retain(|(c, _)| *c != id);
    info!("TP: client #{id} disconnected");
}

// ---------------------------------------------------------------- Sniffer

async fn serve_sniffer(listener: TcpListener, upstream: SocketAddr, name: String) {
    let mut n = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                n += 1;
                let ident = format!("{name}#{n}");
                tokio::spawn(sniff_connection(stream, peer, upstream, ident));
            }
            Err(e) => {
                error!("Sniffer: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn sniff_connection(stream: TcpStream, peer: SocketAddr, upstream: SocketAddr, ident: String) {
    info!("Sniffer {ident}: downstream connected from {peer}");
    let Some((down_rx, down_tx)) = create_downstream(stream).await else {
        warn!("Sniffer {ident}: downstream Noise handshake failed");
        return;
    };
    let mut tries = 0;
    let up_stream = loop {
        match TcpStream::connect(upstream).await {
            Ok(s) => break s,
            Err(e) if tries < 5 => {
                tries += 1;
                warn!("Sniffer {ident}: cannot connect to upstream {upstream}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                error!("Sniffer {ident}: giving up on upstream {upstream}: {e}");
                return;
            }
        }
    };
    let Some((up_rx, up_tx)) = create_upstream(up_stream).await else {
        error!("Sniffer {ident}: upstream Noise handshake failed");
        return;
    };
    info!("Sniffer {ident}: connected to upstream {upstream}");
    let extensions = Arc::new(Mutex::new(Vec::new()));
    tokio::select! {
        r = recv_from_down_send_to_up(down_rx, up_tx, MessagesAggregator::new(), vec![], &ident, extensions.clone()) => {
            info!("Sniffer {ident}: closed ({r:?})");
        }
        r = recv_from_up_send_to_down(up_rx, down_tx, MessagesAggregator::new(), vec![], &ident, extensions) => {
            info!("Sniffer {ident}: closed ({r:?})");
        }
    }
}
