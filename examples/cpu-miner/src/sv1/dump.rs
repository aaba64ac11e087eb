//! `--dump-protocol` in Sv1 mode: [`Tap`], a byte-stream wrapper that prints every line as it
//! crosses the socket, `-> ` for sent and `<- ` for received (the same arrows as the Sv2
//! dump), exactly as on the wire (the `\n`/`\r\n` terminator removed, invalid UTF-8 replaced).
//!
//! It sits under [`Sv1ClientService`](tower_stratum::sv1_service::Sv1ClientService), so it
//! shows what the service really wrote and read, request ids included, and also the
//! `mining.ping`/`client.get_version` answers the service sends by itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest partial line kept while waiting for its end, bytes: beyond it the part is printed
/// with `…` and dropped (the codec closes the connection on such lines anyway).
const MAX_PARTIAL: usize = 128 * 1024;

/// A byte stream that prints the lines read and written through it when enabled; a plain
/// pass-through otherwise. Readiness, results and errors are the inner stream's.
#[derive(Debug)]
pub struct Tap<IO> {
    inner: IO,
    enabled: bool,
    read: Vec<u8>,
    written: Vec<u8>,
}

impl<IO> Tap<IO> {
    /// Wraps `inner`; prints only when `enabled`.
    pub fn new(inner: IO, enabled: bool) -> Self {
        Self {
            inner,
            enabled,
            read: Vec::new(),
            written: Vec::new(),
        }
    }
}

/// Appends `bytes` to `pending` and prints each complete line with `prefix`.
fn feed(pending: &mut Vec<u8>, bytes: &[u8], prefix: &str) {
    pending.extend_from_slice(bytes);
    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
        let line = &pending[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            println!("{prefix}{}", String::from_utf8_lossy(line));
        }
        pending.drain(..=end);
    }
    if pending.len() > MAX_PARTIAL {
        println!("{prefix}{}…", String::from_utf8_lossy(pending));
        pending.clear();
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.enabled {
            if let Poll::Ready(Ok(())) = &r {
                let new = &buf.filled()[before..];
                if new.is_empty() && !this.read.is_empty() {
                    // End of stream after a line without terminator.
                    println!("<- {}", String::from_utf8_lossy(&this.read));
                    this.read.clear();
                } else {
                    feed(&mut this.read, new, "<- ");
                }
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if this.enabled {
            if let Poll::Ready(Ok(n)) = &r {
                feed(&mut this.written, &buf[..*n], "-> ");
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_through_unchanged_in_both_directions() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut tap = Tap::new(a, true);
        tap.write_all(b"{\"id\":1}\n{\"id\":").await.unwrap();
        tap.write_all(b"2}\r\n").await.unwrap();
        let mut got = vec![0u8; 19];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"{\"id\":1}\n{\"id\":2}\r\n");
        b.write_all(b"x\ny").await.unwrap();
        drop(b);
        let mut back = Vec::new();
        tap.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"x\ny");
        assert!(tap.written.is_empty() && tap.read.is_empty());
    }
}
