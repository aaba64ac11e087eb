//! Running our own binaries as a user would: with their own default log filter and colour
//! choice (no `RUST_LOG`, no `NO_COLOR`), output kept byte for byte (ANSI escapes included, so
//! a test can check there are none), stopped with SIGTERM, exit status read.

use crate::process::PeerProcess;
use std::process::{ExitStatus, Stdio};
use tokio::process::Command;

impl PeerProcess {
    /// Starts `bin args…` with the environment of this test minus `RUST_LOG`, `NO_COLOR` and
    /// `PEER_RUST_LOG` (so the binary's own defaults apply), stdout and stderr captured line by
    /// line as they are (ANSI escapes kept). Killed when dropped.
    pub fn spawn_as_user(bin: &std::path::Path, args: &[&str]) -> Self {
        let child = Command::new(bin)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("PEER_RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // Output kept as it is (no ANSI stripping).
        Self::capture(child, bin, str::to_owned)
    }

    /// Sends SIGTERM to the process (by its PID, with `kill -TERM`).
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("the process is still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits (at most `secs`) for the process to exit, then for the rest of its output (which
    /// goes to [`PeerProcess::log`]); returns the exit status. Panics with the log on timeout.
    pub async fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "{} did not exit within {secs}s; log:\n{}",
                self.name,
                self.log.join("\n")
            ),
        };
        // The readers end at EOF once the process (and its pipes) are gone.
        while let Ok(Some(l)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            self.log.push(l);
        }
        status
    }

    /// Every line received so far (read without waiting), added to [`PeerProcess::log`]; the
    /// whole log.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        &self.log
    }

    /// Lines of the log (after [`drain`](Self::drain)) containing every one of `needles`.
    pub fn count_lines(&mut self, needles: &[&str]) -> usize {
        self.drain()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }
}

/// Whether any captured line holds an ANSI escape (ESC, 0x1b).
pub fn has_ansi(lines: &[String]) -> bool {
    lines.iter().any(|l| l.contains('\u{1b}'))
}
