//! Where a server's streams come from: TCP, or any `AsyncRead + AsyncWrite` stream.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A source of accepted byte streams. Implemented for [`tokio::net::TcpListener`] and for
/// [`StreamListener`] (in-memory streams such as `tokio::io::duplex`).
pub trait Listener: Send + 'static {
    /// The stream type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next stream and its peer address (`None` if it has none). An `Err` is
    /// logged and accepting goes on (after a short pause, e.g. on file-descriptor exhaustion).
    /// `Ok(None)` means the listener is finished.
    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<Option<(Self::Io, Option<SocketAddr>)>>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Option<(Self::Io, Option<SocketAddr>)>> {
        let (s, addr) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok(Some((s, Some(addr))))
    }
}

/// A listener fed by a channel of streams; finished when every sender is dropped.
#[derive(Debug)]
pub struct StreamListener<Io> {
    rx: mpsc::Receiver<Io>,
}

impl<Io> StreamListener<Io> {
    /// A listener and the sender that feeds it, with room for `capacity` pending streams.
    pub fn new(capacity: usize) -> (mpsc::Sender<Io>, Self) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, Self { rx })
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> Listener for StreamListener<Io> {
    type Io = Io;

    async fn accept(&mut self) -> io::Result<Option<(Io, Option<SocketAddr>)>> {
        Ok(self.rx.recv().await.map(|io| (io, None)))
    }
}
