//! The command line: `--generate-config` prints a config that runs, bad configs fail with a
//! clear error and exit status 2, and the proxy starts listening with its defaults but the
//! ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use tower_stratum_test_kit::process::{free_port, PeerProcess};
use tower_stratum_test_kit::solo::TempFile;
use tower_stratum_test_kit::sv1::Sv1LinePeer;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_translator-proxy"))
}

fn temp(name: &str, text: &str) -> TempFile {
    TempFile::new(name, text)
}

#[test]
fn bad_configs_fail_with_a_message() {
    for (name, text, needle) in [
        ("e2.toml", "extranonce2_size = 9\n", "extranonce2_size"),
        (
            "key.toml",
            "[[upstreams]]\naddress = \"127.0.0.1:1\"\nauthority_public_key = \"bad\"\n",
            "authority_public_key",
        ),
        ("unknown.toml", "no_such_key = true\n", "no_such_key"),
        ("none.toml", "upstreams = []\n", "upstreams"),
        (
            "tls.toml",
            "tls_certificate = \"/nonexistent.pem\"\n",
            "tls_private_key",
        ),
        (
            "tls2.toml",
            "tls_certificate = \"/nonexistent.pem\"\ntls_private_key = \"/nonexistent.key\"\n",
            "tls_certificate",
        ),
    ] {
        let out = Command::new(bin())
            .args(["--config", temp(name, text).to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_config_runs_and_miners_can_connect() {
    let out = Command::new(bin())
        .arg("--generate-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated.contains("listen = \"127.0.0.1:34255\""),
        "{generated}"
    );
    assert!(
        generated.contains("address = \"127.0.0.1:34254\""),
        "{generated}"
    );
    assert!(
        generated.contains("PUBLIC"),
        "the default key is flagged as public"
    );
    // The generated file with only the ports changed (no upstream running: miners wait).
    let port = free_port();
    let text = generated
        .replace("127.0.0.1:34255", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:34254", &format!("127.0.0.1:{}", free_port()));
    let cfg = temp("generated.toml", &text);
    let mut proxy = PeerProcess::spawn(
        &bin(),
        &["--config", cfg.to_str().unwrap(), "--status-interval", "1"],
    );
    proxy.wait_for("Sv1 translator listening", 30).await;
    let mut miner = Sv1LinePeer::connect(("127.0.0.1", port)).await;
    // Before subscribe: the documented answer.
    miner
        .send(r#"{"id":1,"method":"mining.authorize","params":["w","x"]}"#)
        .await;
    let l = miner.recv(10).await.unwrap();
    assert!(l.contains("[25,"), "{l}");
    // Status lines come every second; the first may predate the connection, so wait for the
    // one that counts it (wait_for panics with the log if none does within 10 s).
    let status = proxy.wait_for("connections=1", 10).await;
    assert!(
        status.starts_with("status:") && status.contains("upstream=down"),
        "{status}"
    );
}
