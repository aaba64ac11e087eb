//! Running real peer processes in tests: locate the pinned binaries installed by
//! `scripts/install-peers`, start them, wait for a log line with a deadline, kill on drop.

use crate::solo::{TempDir, TempFile};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Where `scripts/install-peers` puts the peer binaries:
/// `$TOWER_STRATUM_CACHE/peers/bin`, else `$XDG_CACHE_HOME/tower-stratum/peers/bin`, else
/// `$HOME/.cache/tower-stratum/peers/bin`.
pub fn peers_bin_dir() -> PathBuf {
    if let Ok(c) = std::env::var("TOWER_STRATUM_CACHE") {
        return PathBuf::from(c).join("peers/bin");
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache")
        });
    base.join("tower-stratum/peers/bin")
}

/// Path of a pinned peer binary; panics with the install hint if missing.
pub fn peer_bin(name: &str) -> PathBuf {
    let p = peers_bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run scripts/install-peers first (it installs the pinned SRI peers)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bind :0, read, release). For peers that need a port in a
/// config file; the tiny window until the peer binds is the only race.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running peer process; killed when dropped.
pub struct PeerProcess {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub name: String,
    pub log: Vec<String>,
    /// What lives as long as the process (its config file, its data directory), dropped with
    /// it: see [`PeerProcess::keep`].
    kept: Vec<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for PeerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerProcess({})", self.name)
    }
}

impl PeerProcess {
    /// Starts `bin args…` with stdout and stderr captured line by line (ANSI colours stripped).
    pub fn spawn(bin: &std::path::Path, args: &[&str]) -> Self {
        let child = Command::new(bin)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("PEER_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Self::capture(child, bin, strip_ansi)
    }

    /// Wraps a started `child` (stdout and stderr piped): both are read line by line, each
    /// line passed through `line` (e.g. [`strip_ansi`]), into [`PeerProcess::lines`].
    pub(crate) fn capture(
        mut child: Child,
        bin: &std::path::Path,
        line: fn(&str) -> String,
    ) -> Self {
        let (tx, rx) = mpsc::channel(10_000);
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for r in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let _ = tx.try_send(line(&l));
                }
            });
        }
        Self {
            child,
            lines: rx,
            name: bin.file_name().unwrap().to_string_lossy().into_owned(),
            log: Vec::new(),
            kept: Vec::new(),
        }
    }

    /// Keeps `value` (a [`TempDir`], a [`TempFile`]) until the process is dropped, so the
    /// files it uses are removed with it and never left in the temp dir.
    pub fn keep(&mut self, value: impl std::any::Any + Send) {
        self.kept.push(Box::new(value));
    }

    /// Waits (at most `secs`) for an output line containing `needle`; returns it. Panics with
    /// the captured log on timeout or exit.
    pub async fn wait_for(&mut self, needle: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Ok(None) => panic!(
                    "{} exited before printing {needle:?}; log:\n{}",
                    self.name,
                    self.log.join("\n")
                ),
                Err(_) => panic!(
                    "{} did not print {needle:?} within {secs}s; log:\n{}",
                    self.name,
                    self.log.join("\n")
                ),
            }
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders a config template from `integration-tests/sri-harness/configs/<name>` replacing
/// each `{{KEY}}` and writes it into a fresh temporary directory; the result derefs to the
/// file's path and removes the directory when dropped (hand it to [`PeerProcess::keep`]).
pub fn render_config(name: &str, vars: &[(&str, String)]) -> TempFile {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../integration-tests/sri-harness/configs");
    let mut text = std::fs::read_to_string(root.join(name))
        .unwrap_or_else(|e| panic!("config template {name}: {e}"));
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(
        !text.contains("{{"),
        "unreplaced placeholder in {name}:\n{text}"
    );
    TempFile::new(name, &text)
}

/// Builds (if needed) and locates `target/<profile>/<name>`, the binary `name` of the
/// workspace package `name`, with this test's profile and target directory. Each name is
/// built once per test process (later calls return the cached path); blocking: call it
/// from `spawn_blocking` in async tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BINS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    let cache = BINS.get_or_init(Default::default);
    let mut built = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let p = build_workspace_bin(name);
    built.insert(name.to_string(), p.clone());
    p
}

fn build_workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/<this test>
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", name, "--bin", name, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("cargo build");
    assert!(status.success(), "cargo build -p {name} failed");
    let bin = profile_dir.join(name);
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// The number after `field=` in a status line (`0` if absent): e.g.
/// `status_count(line, "shares accepted")` on a `solo-mining-server` status line.
pub fn status_count(line: &str, field: &str) -> u64 {
    line.split(&format!("{field}="))
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Starts our `solo-mining-server` binary (`bin`) on a free loopback port with a fast share
/// rate (30 shares/min per channel), a 3 s vardiff period, a status line every second and
/// `extra` appended to its TOML config; returns it once listening, with its port.
pub async fn solo_server(bin: &std::path::Path, extra: &str) -> (PeerProcess, u16) {
    solo_server_with(
        bin,
        &format!(
            "shares_per_minute = 30.0\nvardiff_period_secs = 3\nstatus_interval_secs = 1\n{extra}"
        ),
    )
    .await
}

/// Starts our `solo-mining-server` binary (`bin`) on a free loopback port with `config` as the
/// rest of its TOML config (everything but `listen`; `blocks_dir` defaults to a fresh
/// temporary directory); returns it once listening, with its port.
pub async fn solo_server_with(bin: &std::path::Path, config: &str) -> (PeerProcess, u16) {
    let port = free_port();
    // The config and found blocks go to a temporary directory removed with the process, never
    // into the source tree (the server's default `./blocks/` is relative to the test's working
    // directory).
    let dir = TempDir::new("solo");
    let cfg = dir.path().join("server.toml");
    let blocks = if config.contains("blocks_dir") {
        String::new()
    } else {
        let blocks = dir.path().join("blocks");
        format!("blocks_dir = {:?}\n", blocks.display().to_string())
    };
    std::fs::write(
        &cfg,
        format!("listen = \"127.0.0.1:{port}\"\n{blocks}{config}"),
    )
    .unwrap();
    let mut server = PeerProcess::spawn(bin, &["--config", cfg.to_str().unwrap()]);
    server.keep(dir);
    server.wait_for("Sv2 mining server listening", 60).await;
    (server, port)
}

impl PeerProcess {
    /// Waits (at most `secs`) for a `status:` line whose `field=` count is at least `n`;
    /// returns it. Panics with the log on timeout.
    pub async fn wait_status(&mut self, field: &str, n: u64, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .max(1);
            let line = self.wait_for("status:", left).await;
            if status_count(&line, field) >= n {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {field} stayed below {n}: {line}",
                self.name
            );
        }
    }
}
