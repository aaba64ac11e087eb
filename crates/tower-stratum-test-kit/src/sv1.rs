//! A raw Sv1 peer for tests: writes and reads whole lines over TCP, so a test can send
//! exactly the bytes a broken or hostile miner would (oversize lines, non-JSON, bad order).

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// One TCP connection speaking newline-delimited lines.
pub struct Sv1LinePeer {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// Every line received so far, for failure messages.
    pub log: Vec<String>,
}

impl std::fmt::Debug for Sv1LinePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sv1LinePeer({} lines received)", self.log.len())
    }
}

impl Sv1LinePeer {
    /// Connects to `addr`.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
            log: Vec::new(),
        }
    }

    /// Writes `line` followed by `\n`.
    pub async fn send(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.push(b'\n');
        self.send_raw(&b).await;
    }

    /// Writes bytes as they are (ignores a connection the server already closed).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.write.write_all(bytes).await;
        let _ = self.write.flush().await;
    }

    /// The next line; `None` at end of stream. Panics after `secs` seconds.
    pub async fn recv(&mut self, secs: u64) -> Option<String> {
        match tokio::time::timeout(Duration::from_secs(secs), self.lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                self.log.push(l.clone());
                Some(l)
            }
            Ok(Ok(None)) | Ok(Err(_)) => None,
            Err(_) => panic!(
                "no line within {secs}s; received so far:\n{}",
                self.log.join("\n")
            ),
        }
    }

    /// Skips lines until one contains `needle`; returns it. Panics on end of stream or after
    /// `secs` seconds.
    pub async fn recv_matching(&mut self, needle: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .max(1);
            match self.recv(left).await {
                Some(l) if l.contains(needle) => return l,
                Some(_) => {}
                None => panic!(
                    "stream ended before a line with {needle:?}; received:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Reads (and keeps in `log`) until end of stream; panics if the server keeps the
    /// connection open for `secs` seconds.
    pub async fn expect_closed(&mut self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => self.log.push(l),
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => panic!(
                    "connection still open after {secs}s; received:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }
}
