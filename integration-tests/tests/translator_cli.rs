//! The `translator-proxy` binary as a user runs it (its own default log filter, output on
//! pipes), against in-process Sv2 upstreams on loopback:
//!
//! - `--authority-key` and `--user-identity` without `--upstream` apply to the only configured
//!   upstream (a real Noise handshake against a server with another key than the config's,
//!   and the `user_identity` the server receives); with several upstreams they are a usage
//!   error (exit 2).
//! - A rejected certificate is logged once (ERROR, with the reason) while the attempts go on,
//!   and the status line says why the upstream is down; an unresolvable host is logged at WARN.
//! - SIGTERM stops it like Ctrl-C: graceful, a final status line, exit 0. A port clash is one
//!   `error:` line and exit 1. No ANSI colours on a pipe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tower_stratum_codec::{accept_noise, AuthorityKeypair, SRI_TEST_AUTHORITY_PUBLIC_KEY};
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::session::REQUIRES_VERSION_ROLLING;
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, U256Owned};
use tower_stratum_core::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{Actions, ConnectionContext, SetupSupport, Sv2Message};
use tower_stratum_service::{ServerConfig, ServerHandle, ServerTransport, Sv2ServerService};
use tower_stratum_test_kit::process::PeerProcess;
use tower_stratum_test_kit::solo::TempFile;
use tower_stratum_test_kit::tools::has_ansi;
use tower_stratum_test_kit::within;

async fn proxy_bin() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        tower_stratum_test_kit::process::workspace_bin("translator-proxy")
    })
    .await
    .unwrap()
}

fn temp(name: &str, text: &str) -> TempFile {
    TempFile::new(name, text)
}

/// A config with one upstream at `address` pinned to SRI's public test key (what the flags
/// must override).
fn one_upstream_config(address: &str) -> TempFile {
    temp(
        "one.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nstatus_interval_secs = 1\n\n[[upstreams]]\naddress = \"{address}\"\nauthority_public_key = \"{SRI_TEST_AUTHORITY_PUBLIC_KEY}\"\n"
        ),
    )
}

/// Opens every extended channel and reports its `user_identity`.
struct ChannelRecorder {
    identities: mpsc::Sender<String>,
}

impl Sv2MiningServerHandler for ChannelRecorder {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: REQUIRES_VERSION_ROLLING,
            success_flags: 0,
        })
    }

    async fn handle_open_extended_mining_channel(
        &mut self,
        _ctx: ConnectionContext,
        msg: OpenExtendedMiningChannelOwned,
    ) -> Actions {
        let _ = self.identities.try_send(msg.user_identity.as_utf8_or_hex());
        Actions::reply(Sv2Message::Mining(
            MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
                request_id: msg.request_id,
                channel_id: 1,
                target: U256Owned::from([0xffu8; 32]),
                extranonce_size: msg.min_extranonce_size.max(8),
                extranonce_prefix: B032Owned::try_from(vec![1, 2, 3, 4]).unwrap(),
                group_channel_id: 0,
            }),
        ))
    }
}

async fn recording_pool(keys: AuthorityKeypair) -> (String, mpsc::Receiver<String>, ServerHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel(16);
    let (_svc, handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(keys)))
        .mining(ChannelRecorder { identities: tx })
        .serve(listener);
    (address, rx, handle)
}

/// A server that completes the Noise handshake (as responder, with `keys`) with every
/// connection, counts them, and hangs up.
async fn handshake_only_server(keys: AuthorityKeypair) -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let keys = keys.clone();
            tokio::spawn(async move {
                let _ = accept_noise(&mut s, &keys, Duration::from_secs(3600), 1 << 16).await;
            });
        }
    });
    (address, count)
}

async fn wait_count(count: &AtomicU32, n: u32, secs: u64) {
    within(secs, "handshake attempts", async {
        while count.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_key_and_user_identity_apply_to_the_only_upstream() {
    // The pool's real key is not the one in the config file: only the flag can make the
    // handshake succeed.
    let keys = AuthorityKeypair::generate();
    let (address, mut identities, pool) = recording_pool(keys.clone()).await;
    let cfg = one_upstream_config(&address);
    let key = keys.public().to_string();
    let mut proxy = PeerProcess::spawn_as_user(
        &proxy_bin().await,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--authority-key",
            &key,
            "--user-identity",
            "someone",
        ],
    );
    let identity = within(
        30,
        "the channel the translator opens upstream",
        identities.recv(),
    )
    .await
    .unwrap();
    assert_eq!(identity, "someone", "--user-identity applied");
    let line = proxy.wait_for("upstream=connected", 15).await;
    assert!(line.starts_with("status:"), "{line}");
    let log = proxy.drain().join("\n");
    assert!(
        log.contains(&format!("authority_key={key}")),
        "the key in use is logged: {log}"
    );
    assert!(!has_ansi(proxy.drain()), "no colours on a pipe: {log}");
    drop(proxy);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_certificate_is_logged_once_and_shown_in_the_status_line() {
    // The server signs with `server`; the config pins it (so an ignored flag would connect),
    // the flag pins another key: the translator must refuse the certificate.
    let server = AuthorityKeypair::generate();
    let other = AuthorityKeypair::generate();
    let (address, attempts) = handshake_only_server(server.clone()).await;
    let cfg = temp(
        "cert.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nstatus_interval_secs = 1\n\n[[upstreams]]\naddress = \"{address}\"\nauthority_public_key = \"{}\"\n",
            server.public()
        ),
    );
    let mut proxy = PeerProcess::spawn_as_user(
        &proxy_bin().await,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--authority-key",
            &other.public().to_string(),
        ],
    );
    let first = proxy.wait_for("certificate rejected", 30).await;
    assert!(first.contains("ERROR"), "{first}");
    assert!(first.contains(&address), "{first}");
    // Several more attempts (backoff from 250 ms), still one line.
    wait_count(&attempts, 4, 60).await;
    let status = proxy.wait_for("upstream_error=", 10).await;
    assert!(
        status.contains("upstream=down")
            && status.contains("upstream_error=\"handshake failed: responder certificate rejected"),
        "{status}"
    );
    assert_eq!(
        proxy.count_lines(&["certificate rejected", "ERROR"]),
        1,
        "logged once while it keeps failing: {}",
        proxy.log.join("\n")
    );
    assert!(!has_ansi(&proxy.log), "no colours on a pipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_upstream_is_logged_with_the_reason() {
    let mut proxy = PeerProcess::spawn_as_user(
        &proxy_bin().await,
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "no-such-host.invalid:34254",
            "--status-interval",
            "1",
        ],
    );
    let line = proxy.wait_for("cannot reach the upstream", 30).await;
    assert!(
        line.contains("WARN") && line.contains("no-such-host.invalid:34254"),
        "{line}"
    );
    assert!(line.contains("reason=io error"), "{line}");
    let status = proxy.wait_for("upstream_error=", 10).await;
    assert!(status.contains("upstream=down"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flags_with_several_upstreams_and_no_upstream_flag_are_a_usage_error() {
    let cfg = temp(
        "two.toml",
        "[[upstreams]]\naddress = \"127.0.0.1:1\"\n\n[[upstreams]]\naddress = \"127.0.0.1:2\"\n",
    );
    for flag in ["--authority-key", "--user-identity"] {
        let value = if flag == "--authority-key" {
            SRI_TEST_AUTHORITY_PUBLIC_KEY
        } else {
            "someone"
        };
        let out = std::process::Command::new(proxy_bin().await)
            .args(["--config", cfg.to_str().unwrap(), flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--upstream") && err.contains("lists 2"),
            "{flag}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_with_a_final_status_line() {
    let (address, _ids, pool) = recording_pool(AuthorityKeypair::generate()).await;
    let mut proxy = PeerProcess::spawn_as_user(
        &proxy_bin().await,
        &["--listen", "127.0.0.1:0", "--upstream", &address],
    );
    proxy.wait_for("Sv1 translator listening", 30).await;
    proxy.sigterm();
    let status = proxy.wait_exit(30).await;
    let log = proxy.log.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("signal=\"SIGTERM\"") || log.contains("signal=SIGTERM"),
        "{log}"
    );
    assert!(
        proxy
            .log
            .iter()
            .any(|l| l.starts_with("final status: upstream=")),
        "{log}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_clash_is_one_error_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(proxy_bin().await)
        .args(["--listen", &addr])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&addr) && line.contains("in use"), "{line}");
    assert!(!err.contains("Os {"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_is_logged_once_and_its_recovery_too() {
    // A port nobody listens on yet.
    let port = tower_stratum_test_kit::process::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut proxy = PeerProcess::spawn_as_user(
        &proxy_bin().await,
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &address,
            "--status-interval",
            "1",
        ],
    );
    let line = proxy.wait_for("cannot reach the upstream", 30).await;
    assert!(
        line.contains("WARN") && line.contains(&address) && line.contains("reason=io error"),
        "{line}"
    );
    let status = proxy.wait_for("upstream_error=\"io error", 10).await;
    assert!(status.contains("upstream=down"), "{status}");
    // The pool comes up on that port: the translator says so, and the status line no
    // longer gives a reason.
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    let (tx, mut identities) = mpsc::channel(16);
    let keys = AuthorityKeypair::from_secret(
        tower_stratum_codec::SRI_TEST_AUTHORITY_SECRET_KEY
            .parse()
            .unwrap(),
    );
    let (_svc, pool) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(keys)))
        .mining(ChannelRecorder { identities: tx })
        .serve(listener);
    let connected = proxy.wait_for("upstream connected", 60).await;
    assert!(connected.contains("INFO"), "{connected}");
    within(10, "the channel", identities.recv()).await.unwrap();
    let status = proxy.wait_for("upstream=connected", 10).await;
    assert!(!status.contains("upstream_error"), "{status}");
    assert_eq!(
        proxy.count_lines(&["cannot reach the upstream"]),
        1,
        "one line while it was down: {}",
        proxy.log.join("\n")
    );
    drop(proxy);
    pool.shutdown().await;
}
