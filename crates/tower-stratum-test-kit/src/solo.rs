//! Helpers for tests of `solo-mining-server` with real processes: a temporary directory
//! removed on drop, a server on port 0 (the port read from its log), our `template-provider`,
//! POSIX signals by pid, and the kept-block path of a `BLOCK FOUND` line.

use crate::process::PeerProcess;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, removed (with its content) on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `<tmp>/tower-stratum-<pid>-<n>-<name>`.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "tower-stratum-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file (a config) in a fresh [`TempDir`] of its own: derefs to its path; removed on drop.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    _dir: TempDir,
}

impl TempFile {
    /// Writes `text` to `<fresh temp dir>/<name>`.
    pub fn new(name: &str, text: &str) -> Self {
        let dir = TempDir::new("file");
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Self { path, _dir: dir }
    }
}

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

/// Starts `solo-mining-server` (`bin`) with `config` (TOML, without `listen`) written into
/// `dir`, listening on `127.0.0.1:0`; returns it once listening, with its address.
pub async fn start_solo(bin: &Path, dir: &Path, config: &str) -> (PeerProcess, SocketAddr) {
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, format!("listen = \"127.0.0.1:0\"\n{config}")).unwrap();
    let mut server = PeerProcess::spawn(bin, &["--config", cfg.to_str().unwrap()]);
    let line = server.wait_for("Sv2 mining server listening", 120).await;
    let addr = line
        .split("listen=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {line:?}"));
    (server, addr)
}

/// Starts our `template-provider` (`bin`) on `127.0.0.1:0` with no simulated blocks; returns
/// it with its address (from its `LISTENING` line).
pub async fn start_template_provider(bin: &Path) -> (PeerProcess, String) {
    let mut tp = PeerProcess::spawn(bin, &["--listen", "127.0.0.1:0", "--interval-secs", "0"]);
    let line = tp.wait_for("LISTENING ", 120).await;
    let addr = line.split_whitespace().last().unwrap().to_string();
    (tp, addr)
}

/// Sends signal `sig` (`STOP`, `CONT`, `TERM`, `KILL`) to `process` with `kill(1)`.
pub fn signal(process: &PeerProcess, sig: &str) {
    let pid = process.child.id().expect("process still running");
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The kept file named by a `BLOCK FOUND ... kept in <path>; ...` line.
pub fn kept_path(block_found_line: &str) -> PathBuf {
    let rest = block_found_line
        .split("kept in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no kept path in {block_found_line:?}"));
    PathBuf::from(rest.split(';').next().unwrap().trim())
}

/// The value after `key=` in a log or status line, up to the next space.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(&format!("{key}="))
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
}

/// Moves every line already captured from `process` into its log, so a later `wait_for`
/// only sees lines printed from now on (up to the reader task's latency).
pub fn drain(process: &mut PeerProcess) {
    while let Ok(l) = process.lines.try_recv() {
        process.log.push(l);
    }
}

/// The first line containing `needle` already captured in `process.log`, else waits for one
/// (at most `secs`). stdout and stderr are read by separate tasks, so a line printed on one
/// just before a line on the other may be captured after it.
pub async fn seen_or_wait(process: &mut PeerProcess, needle: &str, secs: u64) -> String {
    if let Some(l) = process.log.iter().find(|l| l.contains(needle)) {
        return l.clone();
    }
    process.wait_for(needle, secs).await
}
