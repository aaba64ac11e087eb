//! [`Sv1ClientService`]: one Sv1 connection to a server (pool or proxy), as a
//! `tower::Service<ClientMessage>` whose calls resolve to the server's response, plus a
//! bounded stream of the server's notifications.

use super::config::Sv1ClientConfig;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::{CancellationToken, PollSender};
use tower_stratum_sv1::{
    ClientMessage, Id, Response, ServerMessage, Sv1ClientCodec, Sv1CodecError,
};
use tracing::{debug, warn, Instrument};

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sv1ClientError {
    /// No response within [`Sv1ClientConfig::call_timeout`].
    #[error("no response within the call timeout")]
    Timeout,
    /// The connection is closed (the text says why, when known).
    #[error("connection closed: {0}")]
    Closed(String),
}

#[derive(Debug)]
struct Call {
    msg: ClientMessage,
    reply: oneshot::Sender<Result<Response, Sv1ClientError>>,
}

/// A connected Sv1 client: `tower::Service<`[`ClientMessage`]`, Response = `[`Response`]`>`.
///
/// - A request (`mining.subscribe`, `mining.authorize`, `mining.submit`, ...) gets a fresh
///   numeric id (the id in the message is replaced) and resolves to the server's response to
///   that id, or [`Sv1ClientError::Timeout`] after [`Sv1ClientConfig::call_timeout`]
///   (default 30 s), or [`Sv1ClientError::Closed`].
/// - A [`ClientMessage::Response`] (an answer to a server request) is written as is and
///   resolves to itself once queued.
/// - `mining.ping` and `client.get_version` from the server are answered by the client
///   itself (`pong`, [`Sv1ClientConfig::user_agent`]).
/// - Every other server message goes to the [`Sv1Notifications`] stream, which is bounded:
///   when the application does not keep up, the client stops reading from the server (and
///   calls wait) until it does. Nothing is dropped and nothing aborts.
///
/// `poll_ready` reserves room in the bounded queue to the connection task.
#[derive(Debug)]
pub struct Sv1ClientService {
    tx: PollSender<Call>,
    call_timeout: Duration,
}

impl Clone for Sv1ClientService {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            call_timeout: self.call_timeout,
        }
    }
}

/// The server's notifications (`mining.notify`, `mining.set_difficulty`,
/// `mining.set_extranonce`, `client.reconnect`, ...), in order. Bounded: see
/// [`Sv1ClientService`]. Ends when the connection closes.
#[derive(Debug)]
pub struct Sv1Notifications {
    rx: mpsc::Receiver<ServerMessage>,
}

impl Sv1Notifications {
    /// The next notification; `None` once the connection is closed and all were taken.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for Sv1Notifications {
    type Item = ServerMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerMessage>> {
        self.rx.poll_recv(cx)
    }
}

/// Controls a client connection. Dropping it does NOT close the connection.
#[derive(Debug)]
#[must_use = "the connection runs until `shutdown` is called or the server closes it"]
pub struct Sv1ClientHandle {
    cancel: CancellationToken,
    task: JoinHandle<String>,
}

impl Sv1ClientHandle {
    /// Closes the connection; pending calls fail with [`Sv1ClientError::Closed`]. Returns why
    /// the connection ended.
    pub async fn shutdown(self) -> String {
        self.cancel.cancel();
        self.task.await.unwrap_or_else(|e| e.to_string())
    }

    /// Whether the connection has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Sv1ClientService {
    /// Connects to `address` (`host:port`, plain TCP) within
    /// [`Sv1ClientConfig::connect_timeout`].
    ///
    /// # Errors
    /// The connect error, or `TimedOut`.
    pub async fn connect(
        address: &str,
        config: Sv1ClientConfig,
    ) -> std::io::Result<(Self, Sv1Notifications, Sv1ClientHandle)> {
        let stream = tokio::time::timeout(
            config.connect_timeout,
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let _ = stream.set_nodelay(true);
        Ok(Self::new(stream, config))
    }

    /// Connects to `address` with TLS (feature `tls`), verifying the server certificate for
    /// `server_name` against `tls`'s roots, within [`Sv1ClientConfig::connect_timeout`] (TCP
    /// connect and handshake together).
    ///
    /// # Errors
    /// The connect or handshake error, `InvalidInput` for a bad server name, or `TimedOut`.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        address: &str,
        server_name: &str,
        tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
        config: Sv1ClientConfig,
    ) -> std::io::Result<(Self, Sv1Notifications, Sv1ClientHandle)> {
        use tokio_rustls::rustls::pki_types::ServerName;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connect = async {
            let stream = tokio::net::TcpStream::connect(address).await?;
            let _ = stream.set_nodelay(true);
            tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await
        };
        let stream = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(Self::new(stream, config))
    }

    /// Runs a client over any byte stream (TCP, TLS, `tokio::io::duplex`) on the current tokio
    /// runtime.
    pub fn new<IO>(io: IO, config: Sv1ClientConfig) -> (Self, Sv1Notifications, Sv1ClientHandle)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(config.request_queue.max(1));
        let (ntx, nrx) = mpsc::channel(config.notification_queue.max(1));
        let cancel = CancellationToken::new();
        let framed = Framed::new(io, Sv1ClientCodec::new(config.max_line_length));
        let task = tokio::spawn(
            run(framed, rx, ntx, cancel.clone(), config.clone())
                .instrument(tracing::info_span!("sv1_client")),
        );
        (
            Self {
                tx: PollSender::new(tx),
                call_timeout: config.call_timeout,
            },
            Sv1Notifications { rx: nrx },
            Sv1ClientHandle { cancel, task },
        )
    }

    /// Waits for room, sends `msg` and waits for its response: `ready().await?.call(msg)`.
    ///
    /// # Errors
    /// [`Sv1ClientError`].
    pub async fn request(&mut self, msg: ClientMessage) -> Result<Response, Sv1ClientError> {
        std::future::poll_fn(|cx| tower::Service::poll_ready(self, cx)).await?;
        tower::Service::call(self, msg).await
    }
}

impl tower::Service<ClientMessage> for Sv1ClientService {
    type Response = Response;
    type Error = Sv1ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Sv1ClientError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Sv1ClientError>> {
        self.tx
            .poll_reserve(cx)
            .map_err(|_| Sv1ClientError::Closed("client stopped".into()))
    }

    fn call(&mut self, msg: ClientMessage) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send_item(Call { msg, reply });
        let timeout = self.call_timeout;
        Box::pin(async move {
            sent.map_err(|_| Sv1ClientError::Closed("client stopped".into()))?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(Sv1ClientError::Closed("client stopped".into())),
                Err(_) => Err(Sv1ClientError::Timeout),
            }
        })
    }
}

/// `msg` with its request id replaced by `id`; `None` for a response (no id to assign).
fn with_id(msg: ClientMessage, id: Id) -> (ClientMessage, bool) {
    match msg {
        ClientMessage::Subscribe(_, m) => (ClientMessage::Subscribe(id, m), true),
        ClientMessage::Authorize(_, m) => (ClientMessage::Authorize(id, m), true),
        ClientMessage::Submit(_, m) => (ClientMessage::Submit(id, m), true),
        ClientMessage::Configure(_, m) => (ClientMessage::Configure(id, m), true),
        ClientMessage::ExtranonceSubscribe(_) => (ClientMessage::ExtranonceSubscribe(id), true),
        ClientMessage::SuggestDifficulty(_, d) => (ClientMessage::SuggestDifficulty(id, d), true),
        ClientMessage::SuggestTarget(_, t) => (ClientMessage::SuggestTarget(id, t), true),
        ClientMessage::Unknown(mut r) => {
            r.id = id;
            (ClientMessage::Unknown(r), true)
        }
        r @ ClientMessage::Response(_) => (r, false),
    }
}

type Pending = HashMap<u64, oneshot::Sender<Result<Response, Sv1ClientError>>>;

async fn write<IO>(
    framed: &mut Framed<IO, Sv1ClientCodec>,
    msg: ClientMessage,
    timeout: Duration,
) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, framed.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write timed out".into()),
    }
}

async fn run<IO>(
    mut framed: Framed<IO, Sv1ClientCodec>,
    mut calls: mpsc::Receiver<Call>,
    notifications: mpsc::Sender<ServerMessage>,
    cancel: CancellationToken,
    cfg: Sv1ClientConfig,
) -> String
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending: Pending = HashMap::new();
    let mut next_id: u64 = 1;
    let mut calls_open = true;
    let reason = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break "shutdown".to_string(),
            call = calls.recv(), if calls_open => match call {
                Some(Call { msg, reply }) => {
                    let (msg, is_request) = with_id(msg, Id::from(next_id));
                    let echo = match &msg {
                        ClientMessage::Response(r) => Some(r.clone()),
                        _ => None,
                    };
                    if is_request {
                        if pending.len() >= 1024 {
                            pending.retain(|_, tx| !tx.is_closed());
                        }
                        pending.insert(next_id, reply);
                        next_id += 1;
                        if let Err(e) = write(&mut framed, msg, cfg.write_timeout).await {
                            break e;
                        }
                    } else {
                        if let Err(e) = write(&mut framed, msg, cfg.write_timeout).await {
                            let _ = reply.send(Err(Sv1ClientError::Closed(e.clone())));
                            break e;
                        }
                        if let Some(r) = echo {
                            let _ = reply.send(Ok(r));
                        }
                    }
                }
                None => calls_open = false,
            },
            line = framed.next() => match line {
                Some(Ok(Ok(msg))) => {
                    let answer = match msg {
                        ServerMessage::Response(r) => {
                            match r.id.as_u64().and_then(|n| pending.remove(&n)) {
                                Some(tx) => { let _ = tx.send(Ok(r)); }
                                None => debug!(id = %r.id, "response to no pending call"),
                            }
                            None
                        }
                        ServerMessage::Ping(id) => Some(Response::pong(id)),
                        ServerMessage::GetVersion(id) => Some(Response::ok(id, cfg.user_agent.clone())),
                        other => {
                            // Backpressure: wait for room (not reading meanwhile).
                            if notifications.send(other).await.is_err() {
                                debug!("notification dropped: receiver gone");
                            }
                            None
                        }
                    };
                    if let Some(r) = answer {
                        if let Err(e) = write(&mut framed, ClientMessage::Response(r), cfg.write_timeout).await {
                            break e;
                        }
                    }
                }
                Some(Ok(Err(e))) => warn!(error = %e, "unparseable line from the server ignored"),
                Some(Err(Sv1CodecError::LineTooLong { max })) => break format!("line longer than {max} bytes"),
                Some(Err(e)) => break e.to_string(),
                None => break "server closed the connection".to_string(),
            },
        }
    };
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(Sv1ClientError::Closed(reason.clone())));
    }
    debug!(%reason, "sv1 client closed");
    reason
}
