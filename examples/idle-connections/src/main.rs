//! Measures what an idle Noise connection costs a [`Sv2ServerService`]: resident memory per
//! connection, and how fast connections are established (Noise NX handshake + SetupConnection).
//!
//! Server and clients run in two processes (each process may be capped at a few thousand open
//! files; the clients must not count against the server's budget nor its memory):
//!
//! ```text
//! idle-connections server  --listen 127.0.0.1:0 [--print-addr]
//! idle-connections client  --addr A --count N --authority-key K
//!                          [--in-flight 200] [--sources S] [--checkpoints n1,n2,..]
//! idle-connections measure --count N [--in-flight 200] [--sources S] [--checkpoint n1]
//! ```
//!
//! - `server`: a Noise `Sv2ServerService` (fresh authority key, default `ServerConfig`) whose
//!   Mining handler accepts SetupConnection and nothing else. With `--print-addr` it prints
//!   `addr <ip:port>` and `authority-key <base58>` on stdout. Runs until stdin is closed, then
//!   shuts down gracefully.
//! - `client`: opens N TCP connections (`--in-flight` handshakes at a time; with `--sources S`
//!   bound round-robin to 127.0.0.1..=127.0.0.S so N may exceed one address's ephemeral
//!   ports), completes the Noise handshake (certificate checked against K) and SetupConnection
//!   (Mining, v2) on each, then holds them until stdin is closed. At each checkpoint (and at N)
//!   it prints `established <k> <seconds spent establishing so far>`; before continuing past a
//!   checkpoint below N it waits for a line on stdin.
//! - `measure`: runs both (this same executable) and reads the server's `VmRSS` from
//!   `/proc/<pid>/status` before any client, at the checkpoint (default N/10) and with all N
//!   connections set up; prints the per-connection cost and handshakes/s.
//!
//! Each mode raises its soft `RLIMIT_NOFILE` to the hard limit first (with `prlimit(1)`: the
//! workspace forbids `unsafe`, so no `setrlimit` call) and fails with a clear message if that
//! is still too low; run under `ulimit -n <N + 100>` otherwise.

use futures_util::{SinkExt, StreamExt};
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tower_stratum::codec::{connect_noise, AuthorityKeypair, AuthorityPublicKey, Sv2Codec};
use tower_stratum::handler::Sv2MiningServerHandler;
use tower_stratum::session::str0255;
use tower_stratum::stratum_core::common_messages_sv2::SetupConnectionOwned;
use tower_stratum::stratum_core::parsers_sv2::CommonMessagesOwned;
use tower_stratum::{ServerConfig, ServerTransport, Subprotocol, Sv2Message, Sv2ServerService};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Largest payload the client accepts (it only ever receives SetupConnection.Success).
const CLIENT_MAX_PAYLOAD: usize = 1 << 16;
/// File descriptors a process needs besides its connections.
const SPARE_FDS: u64 = 64;
/// Ephemeral ports per source address used before spreading over more (Linux default range
/// 32768..=60999 has 28232).
const PORTS_PER_SOURCE: usize = 20_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let r = match args.first().map(String::as_str) {
        Some("server") => server(rest),
        Some("client") => client(rest),
        Some("measure") => measure(rest),
        _ => Err(USAGE.into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle-connections: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  idle-connections server  --listen 127.0.0.1:0 [--print-addr]
  idle-connections client  --addr A --count N --authority-key K [--in-flight 200] [--sources S] [--checkpoints n1,n2,..]
  idle-connections measure --count N [--in-flight 200] [--sources S] [--checkpoint n1]";

// ---------------------------------------------------------------------------------------------
// Arguments

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn parsed<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match opt(args, name) {
        Some(v) => v
            .parse()
            .map_err(|e| format!("{name} {v}: {e}\n{USAGE}").into()),
        None => default.ok_or_else(|| format!("missing {name}\n{USAGE}").into()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

// ---------------------------------------------------------------------------------------------
// Open-file limit

/// `(soft, hard)` "Max open files" of process `pid` (`self` for this one), from
/// `/proc/<pid>/limits`; `u64::MAX` for unlimited.
fn nofile_limit(pid: &str) -> Result<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("no \"Max open files\" in /proc/<pid>/limits")?;
    let mut v = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|x| {
            if x == "unlimited" {
                Ok(u64::MAX)
            } else {
                x.parse::<u64>()
            }
        });
    match (v.next(), v.next()) {
        (Some(Ok(s)), Some(Ok(h))) => Ok((s, h)),
        _ => Err(format!("cannot parse {line:?}").into()),
    }
}

/// Raises this process's soft open-file limit to its hard limit (via `prlimit(1)`) and checks
/// that it allows `need` descriptors.
fn ensure_nofile(need: u64) -> Result<()> {
    let (soft, hard) = nofile_limit("self")?;
    if soft < hard {
        let hard_s = if hard == u64::MAX {
            "unlimited".to_string()
        } else {
            hard.to_string()
        };
        let raised = Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard_s}:{hard_s}"))
            .status();
        if !matches!(raised, Ok(s) if s.success()) {
            eprintln!("idle-connections: could not raise RLIMIT_NOFILE with prlimit(1)");
        }
    }
    let (soft, hard) = nofile_limit("self")?;
    if soft < need {
        return Err(format!(
            "needs {need} open files but RLIMIT_NOFILE is {soft} (hard {hard}); \
             run under `ulimit -n {need}` (or lower --count)"
        )
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server

/// Accepts Mining SetupConnection (the trait's defaults), nothing else.
#[derive(Debug)]
struct IdleMining;

impl Sv2MiningServerHandler for IdleMining {}

fn server(args: &[String]) -> Result<()> {
    let listen: SocketAddr = parsed(
        args,
        "--listen",
        Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    )?;
    let print_addr = args.iter().any(|a| a == "--print-addr");
    if let Err(e) = ensure_nofile(SPARE_FDS) {
        eprintln!("idle-connections server: {e}");
    }
    runtime()?.block_on(async move {
        let keys = AuthorityKeypair::generate();
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (_service, handle) = Sv2ServerService::builder()
            .config(ServerConfig::with_transport(ServerTransport::noise(
                keys.clone(),
            )))
            .mining(IdleMining)
            .serve(listener);
        if print_addr {
            let mut out = std::io::stdout().lock();
            writeln!(out, "addr {addr}")?;
            writeln!(out, "authority-key {}", keys.public())?;
            out.flush()?;
        } else {
            eprintln!("listening on {addr}, authority key {}", keys.public());
        }
        // Serve until stdin is closed.
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while stdin.read(&mut buf).await? > 0 {}
        handle.shutdown().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Client

fn setup_connection() -> Result<Sv2Message> {
    let s = |v: &str| str0255(v).ok_or("string too long");
    Ok(Sv2Message::Common(CommonMessagesOwned::SetupConnection(
        SetupConnectionOwned {
            protocol: Subprotocol::Mining.to_sri(),
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: s("127.0.0.1")?,
            endpoint_port: 0,
            vendor: s("idle-connections")?,
            hardware_version: s("")?,
            firmware: s("")?,
            device_id: s("")?,
        },
    )))
}

/// One connection: TCP, Noise (certificate checked against `authority`), SetupConnection.
/// Returns the bare stream: the codec is not needed to hold an idle connection.
async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    authority: AuthorityPublicKey,
    setup: Sv2Message,
) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let codec = connect_noise(&mut tcp, Some(authority), CLIENT_MAX_PAYLOAD).await?;
    let mut framed = Framed::new(tcp, Sv2Codec::from(codec));
    framed.send(setup.encode()?).await?;
    match framed.next().await {
        Some(Ok(f)) => match Sv2Message::decode(f)? {
            Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_)) => {}
            m => return Err(format!("expected SetupConnection.Success, got {}", m.name()).into()),
        },
        Some(Err(e)) => return Err(e.into()),
        None => return Err("server closed the connection during SetupConnection".into()),
    }
    Ok(framed.into_inner())
}

fn client(args: &[String]) -> Result<()> {
    let addr: SocketAddr = parsed(args, "--addr", None)?;
    let count: usize = parsed(args, "--count", None)?;
    let authority: AuthorityPublicKey = parsed(args, "--authority-key", None)?;
    let in_flight: usize = parsed(args, "--in-flight", Some(200))?;
    let sources: usize = parsed(args, "--sources", Some(count.div_ceil(PORTS_PER_SOURCE)))?;
    let mut checkpoints = match opt(args, "--checkpoints") {
        Some(list) => list
            .split(',')
            .map(|n| n.parse::<usize>())
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    checkpoints.retain(|&c| c > 0 && c < count);
    checkpoints.push(count);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    if !(1..=254).contains(&sources) || in_flight == 0 {
        return Err("--sources must be 1..=254 and --in-flight at least 1".into());
    }
    ensure_nofile(count as u64 + SPARE_FDS)?;
    let setup = setup_connection()?;

    runtime()?.block_on(async move {
        let permits = Arc::new(Semaphore::new(in_flight));
        let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        let mut launched = 0usize;
        let mut busy = Duration::ZERO;
        let mut stdin = BufReader::new(std::io::stdin());
        for (k, &target) in checkpoints.iter().enumerate() {
            let start = Instant::now();
            while launched < target {
                let permit = permits.clone().acquire_owned().await?;
                let source = (sources > 1)
                    .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (launched % sources) as u8)));
                let setup = setup.clone();
                let i = launched;
                tasks.spawn(async move {
                    let r = open(addr, source, authority, setup).await;
                    drop(permit);
                    r.map_err(|e| format!("connection {i}: {e}"))
                });
                launched += 1;
                while let Some(done) = tasks.try_join_next() {
                    conns.push(done??);
                }
            }
            while let Some(done) = tasks.join_next().await {
                conns.push(done??);
            }
            busy += start.elapsed();
            let mut out = std::io::stdout().lock();
            writeln!(out, "established {} {:.3}", conns.len(), busy.as_secs_f64())?;
            out.flush()?;
            drop(out);
            if k + 1 < checkpoints.len() {
                // Wait for the driver to take its reading.
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    return Ok(());
                }
            }
        }
        // Hold every connection until stdin is closed. (Blocking here is fine: this is the
        // `block_on` thread, the runtime's workers are free.)
        std::io::copy(&mut stdin, &mut std::io::sink())?;
        drop(conns);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Driver

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, `VmHWM`, ...).
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Reads `VmRSS` of `pid` every 250 ms until two readings differ by less than 64 KiB (at most
/// 10 s): the last connections' `Added` events and the handshake tasks' frees settle first.
fn settled_rss(pid: u32) -> Result<u64> {
    let mut last = status_kib(pid, "VmRSS")?;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        let now = status_kib(pid, "VmRSS")?;
        if now.abs_diff(last) < 64 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// The next stdout line split at the first space, expecting `key`.
    fn expect(&mut self, key: &str) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("child exited before printing `{key}`").into());
        }
        match line.trim_end().split_once(' ') {
            Some((k, v)) if k == key => Ok(v.to_string()),
            _ => Err(format!("expected `{key} ...` from child, got {line:?}").into()),
        }
    }

    fn send_line(&mut self, s: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("child stdin closed")?;
        writeln!(stdin, "{s}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin (the child's signal to finish) and waits up to `limit` for it to exit.
    fn finish(mut self, limit: Duration) -> Result<()> {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "idle-connections: child {} did not exit, killing it",
            self.child.id()
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn measure(args: &[String]) -> Result<()> {
    let count: usize = parsed(args, "--count", Some(10_000))?;
    let in_flight: usize = parsed(args, "--in-flight", Some(200))?;
    let sources: usize = parsed(args, "--sources", Some(count.div_ceil(PORTS_PER_SOURCE)))?;
    let checkpoint: usize = parsed(args, "--checkpoint", Some(count / 10))?;
    if count == 0 {
        return Err("--count must be at least 1".into());
    }

    let mut server = Proc::spawn(&["server", "--listen", "127.0.0.1:0", "--print-addr"])?;
    let addr = server.expect("addr")?;
    let key = server.expect("authority-key")?;
    let server_pid = server.child.id();
    let (soft, _) = nofile_limit(&server_pid.to_string())?;
    if soft < count as u64 + SPARE_FDS {
        server.finish(Duration::from_secs(5))?;
        return Err(format!(
            "the server may open only {soft} files, {count} connections need {}; \
             run under `ulimit -n {}`",
            count as u64 + SPARE_FDS,
            count as u64 + SPARE_FDS
        )
        .into());
    }
    let base = settled_rss(server_pid)?;
    let base_fds = open_fds(server_pid)?;

    let (count_s, in_flight_s, sources_s) = (
        count.to_string(),
        in_flight.to_string(),
        sources.to_string(),
    );
    let checkpoints_s = checkpoint.to_string();
    let mut client = Proc::spawn(&[
        "client",
        "--addr",
        &addr,
        "--count",
        &count_s,
        "--authority-key",
        &key,
        "--in-flight",
        &in_flight_s,
        "--sources",
        &sources_s,
        "--checkpoints",
        &checkpoints_s,
    ])?;
    let client_pid = client.child.id();

    // (connections, seconds establishing, server RSS KiB, server RssAnon KiB, client RSS KiB)
    let mut readings: Vec<(usize, f64, u64, u64, u64)> = Vec::new();
    loop {
        let v = client.expect("established")?;
        let (n, secs) = v
            .split_once(' ')
            .and_then(|(n, s)| Some((n.parse::<usize>().ok()?, s.parse::<f64>().ok()?)))
            .ok_or_else(|| format!("bad client line `established {v}`"))?;
        let rss = settled_rss(server_pid)?;
        readings.push((
            n,
            secs,
            rss,
            status_kib(server_pid, "RssAnon")?,
            status_kib(client_pid, "VmRSS")?,
        ));
        if n >= count {
            break;
        }
        client.send_line("continue")?;
    }
    let fds = open_fds(server_pid)?;
    let hwm = status_kib(server_pid, "VmHWM")?;

    let &(n, secs, rss, anon, client_rss) = readings.last().ok_or("no reading")?;
    println!("idle Noise connections: {n} ({in_flight} handshakes in flight, {sources} source address(es))");
    println!("server open fds: {base_fds} before, {fds} with the connections");
    println!(
        "server VmRSS baseline:            {base} KiB ({:.1} MiB)",
        mib(base)
    );
    for &(k, _, r, _, _) in &readings[..readings.len() - 1] {
        println!(
            "server VmRSS with {k:>6} conns:    {r} KiB ({:.1} MiB)",
            mib(r)
        );
    }
    println!(
        "server VmRSS with {n:>6} conns:    {rss} KiB ({:.1} MiB), RssAnon {anon} KiB, VmHWM {hwm} KiB",
        mib(rss)
    );
    println!(
        "per connection (after - before) / N: {:.1} KiB",
        (rss as f64 - base as f64) / n as f64
    );
    if let Some(&(k, _, r, _, _)) = readings.iter().rev().nth(1) {
        println!(
            "per connection, marginal {k}..{n}:   {:.1} KiB",
            (rss as f64 - r as f64) / (n - k) as f64
        );
    }
    println!(
        "established {n} in {secs:.2} s: {:.0} handshakes/s (Noise NX + SetupConnection)",
        n as f64 / secs.max(f64::MIN_POSITIVE)
    );
    println!(
        "client VmRSS with {n} conns: {client_rss} KiB ({:.1} KiB per connection)",
        client_rss as f64 / n as f64
    );

    client.finish(Duration::from_secs(30))?;
    server.finish(Duration::from_secs(30))?;
    Ok(())
}
