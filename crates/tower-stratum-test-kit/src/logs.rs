//! Captures this process's tracing output in memory so a test can assert on what the library
//! logged (e.g. why it closed a connection to a real peer whose own logs do not say).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        WRITES.send_modify(|n| *n += 1);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static BUF: OnceLock<Buf> = OnceLock::new();
static WRITES: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(0));

/// Installs (once per test binary) a global subscriber writing INFO and above to memory.
pub fn capture() {
    BUF.get_or_init(|| {
        let buf = Buf::default();
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .try_init();
        buf
    });
}

/// Number of captured lines containing `needle`.
pub fn count(needle: &str) -> usize {
    let Some(b) = BUF.get() else { return 0 };
    let data = b.0.lock().unwrap();
    String::from_utf8_lossy(&data)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits (at most `secs`) until more than `before` captured lines contain `needle`, woken by
/// each log write (no polling). Panics on timeout.
pub async fn wait_for(needle: &str, before: usize, secs: u64) {
    let mut rx = WRITES.subscribe();
    crate::within(secs, needle, async {
        loop {
            if count(needle) > before {
                return;
            }
            let _ = rx.changed().await;
        }
    })
    .await
}
