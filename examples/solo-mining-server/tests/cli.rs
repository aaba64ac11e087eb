//! The command line: `--generate-config` output is a valid config equal to the defaults,
//! `keygen` prints a usable keypair, and bad configs fail with a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use tower_stratum_test_kit::process::PeerProcess;
use tower_stratum_test_kit::solo::TempDir;
use tower_stratum_test_kit::solo::TempFile;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_solo-mining-server"))
}

fn temp(name: &str, text: &str) -> TempFile {
    TempFile::new(name, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_config_runs_and_keygen_keys_are_accepted() {
    let out = Command::new(bin())
        .arg("--generate-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated.contains("listen = \"127.0.0.1:34254\""),
        "{generated}"
    );
    assert!(
        generated.contains("PUBLIC test keys"),
        "the default keys are flagged as public"
    );

    let keys = Command::new(bin()).arg("keygen").output().unwrap();
    assert!(keys.status.success());
    let keys = String::from_utf8(keys.stdout).unwrap();
    assert!(keys
        .lines()
        .any(|l| l.starts_with("authority_public_key = \"")));
    assert!(keys
        .lines()
        .any(|l| l.starts_with("authority_secret_key = \"")));

    // The generated file with the new keys replacing the defaults (TOML: later keys would be
    // duplicates, so filter the old ones out) starts a server on an ephemeral port.
    let mut text: String = generated
        .lines()
        .filter(|l| !l.starts_with("authority_"))
        .map(|l| format!("{l}\n"))
        .collect();
    text = format!("{keys}{text}");
    let cfg = temp("gen.toml", &text);
    let dir = TempDir::new("solo-cli");
    let blocks = dir.path().join("blocks");
    let mut server = PeerProcess::spawn(
        &bin(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--blocks-dir",
            blocks.to_str().unwrap(),
        ],
    );
    let line = server.wait_for("Sv2 mining server listening", 60).await;
    let public = keys.lines().next().unwrap().split('"').nth(1).unwrap();
    assert!(line.contains(public), "{line}");
    assert!(
        !server
            .log
            .iter()
            .any(|l| l.contains("PUBLIC TEST AUTHORITY KEY")),
        "no public-key warning with generated keys"
    );
}

#[test]
fn invalid_configs_fail_with_a_message() {
    for (name, text, needle) in [
        ("unknown.toml", "nonsense = 1\n", "unknown field"),
        (
            "payout.toml",
            "payout = \"not-an-address\"\n",
            "payout address",
        ),
        ("key.toml", "authority_secret_key = \"abc\"\n", "authority"),
    ] {
        let cfg = temp(name, text);
        let out = Command::new(bin())
            .args(["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: a configuration error exits with 2"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{name}: {err}");
    }
}
