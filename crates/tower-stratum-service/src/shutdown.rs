//! Waiting for the operator's stop request: Ctrl-C (SIGINT) or, on Unix, SIGTERM.
//!
//! [`Shutdown::listen`] installs the handlers **when it is called**, not when first awaited,
//! so a binary that calls it before announcing itself (a `LISTENING` line, a pid file) cannot
//! be killed by the default disposition of a SIGTERM sent right after that announcement.

use std::io;

/// Installed handlers for the stop signals. Created by [`Shutdown::listen`]; await
/// [`Shutdown::recv`] for the next one.
#[derive(Debug)]
pub struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the SIGINT and SIGTERM handlers now (on non-Unix targets, Ctrl-C is watched
    /// from the first [`recv`](Self::recv)).
    ///
    /// Must be called inside a tokio runtime. Errors: the OS refused to install a handler.
    pub fn listen() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next stop signal and returns its name (`"Ctrl-C"` or `"SIGTERM"`), for
    /// the log line that says why the process stops.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
