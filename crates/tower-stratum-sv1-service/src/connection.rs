//! One Sv1 server connection's task: the thin shell around an [`Sv1ServerSession`].
//!
//! It only moves lines and time: it reads lines into the session, hands delivered messages to
//! the inbound stack, and is the connection's only writer (replies, pushes and broadcasts go
//! through it, each as one whole line, so they never interleave).

use crate::handler::{Sv1Action, Sv1CloseReason, Sv1ConnectionContext, Sv1InboundMessage};
use crate::hub::{ConnHandle, HubInput, Outbound};
use crate::request::Sv1InboundStack;
use crate::session::{Sv1Inbound, Sv1ServerSession};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_stratum_core::ConnectionId;
use tower_stratum_sv1::{ServerMessage, Sv1CodecError, Sv1ServerCodec};
use tracing::{debug, info, Instrument};

pub(crate) struct ConnParams<S> {
    pub(crate) id: ConnectionId,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) session: Sv1ServerSession,
    pub(crate) stack: S,
    pub(crate) hub: mpsc::Sender<HubInput>,
    pub(crate) cancel: CancellationToken,
    pub(crate) max_line_length: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) write_timeout: Duration,
}

/// Read buffer initial capacity: small so idle connections stay cheap.
const READ_BUFFER: usize = 512;

/// Runs the connection to completion; returns why it closed.
pub(crate) async fn run<IO, S>(io: IO, p: ConnParams<S>) -> Sv1CloseReason
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Sv1InboundStack,
{
    let span = tracing::info_span!(
        "sv1_connection",
        id = p.id.0,
        peer = p.peer.map(tracing::field::display)
    );
    run_inner(io, p).instrument(span).await
}

type Conn<IO> = Framed<IO, Sv1ServerCodec>;

async fn run_inner<IO, S>(io: IO, p: ConnParams<S>) -> Sv1CloseReason
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Sv1InboundStack,
{
    let ConnParams {
        id,
        peer,
        mut session,
        mut stack,
        hub,
        cancel,
        max_line_length,
        outbound_queue,
        write_timeout,
    } = p;
    let ctx = Sv1ConnectionContext { id, peer };
    let mut parts = FramedParts::new::<ServerMessage>(io, Sv1ServerCodec::new(max_line_length));
    parts.read_buf = bytes::BytesMut::with_capacity(READ_BUFFER);
    let mut framed = Framed::from_parts(parts);

    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(outbound_queue.max(1));
    let evict = CancellationToken::new();
    let handle = ConnHandle {
        tx: out_tx,
        evict: evict.clone(),
    };
    if hub.send(HubInput::Added { ctx, handle }).await.is_err() {
        return Sv1CloseReason::Shutdown;
    }
    debug!("accepted");
    let w = Writer {
        cancel: &cancel,
        evict: &evict,
        write_timeout,
    };

    let reason = loop {
        let deadline = session.poll_timeout();
        let step: Result<(), Sv1CloseReason> = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Sv1CloseReason::Shutdown),
            _ = evict.cancelled() => Err(Sv1CloseReason::SlowConsumer),
            out = out_rx.recv() => match out {
                Some(first) => {
                    // Batch whatever else is queued into the same write.
                    let mut next = Some(first);
                    let mut r = Ok(());
                    while let Some(o) = next.take() {
                        r = match o {
                            Outbound::Msg(m) => {
                                session.on_send(&m);
                                w.feed(&mut framed, m).await
                            }
                            Outbound::Line(l) => w.feed(&mut framed, l).await,
                            Outbound::Close(reason) => Err(reason),
                        };
                        if r.is_err() {
                            break;
                        }
                        next = out_rx.try_recv().ok();
                    }
                    match r {
                        Ok(()) => w.flush(&mut framed).await,
                        Err(e) => Err(e),
                    }
                }
                // The hub dropped our queue: it stopped.
                None => Err(Sv1CloseReason::Shutdown),
            },
            item = framed.next() => match item {
                Some(Ok(line)) => {
                    let r = match session.on_line(now(), line) {
                        Sv1Inbound::Deliver(message) => {
                            deliver(&mut stack, &mut session, &mut framed, &w, ctx, message).await
                        }
                        Sv1Inbound::Reply(r) => {
                            let m = ServerMessage::Response(r);
                            session.on_send(&m);
                            w.feed(&mut framed, m).await
                        }
                        Sv1Inbound::Ignore => Ok(()),
                        Sv1Inbound::Close(reason) => Err(reason),
                    };
                    match r {
                        Ok(()) => w.flush(&mut framed).await,
                        Err(e) => Err(e),
                    }
                }
                Some(Err(Sv1CodecError::LineTooLong { .. })) => Err(Sv1CloseReason::LineTooLong),
                Some(Err(e)) => Err(Sv1CloseReason::Io(e.to_string())),
                None => Err(Sv1CloseReason::PeerClosed),
            },
            _ = sleep_until(deadline) => match session.handle_timeout(now()) {
                Some(reason) => Err(reason),
                None => Ok(()),
            },
        };
        if let Err(reason) = step {
            break reason;
        }
    };
    // Write what is buffered (e.g. the error before a close), briefly.
    if !matches!(reason, Sv1CloseReason::SlowConsumer) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            SinkExt::<ServerMessage>::close(&mut framed),
        )
        .await;
    }
    let _ = hub
        .send(HubInput::Removed {
            ctx,
            reason: reason.clone(),
        })
        .await;
    info!(%reason, "closed");
    if peer_at_fault(&reason) {
        tower_stratum_service::peer_log::dropped(peer, &reason);
    }
    reason
}

/// Whether a close is the miner's doing (worth a line in the operator's log).
fn peer_at_fault(reason: &Sv1CloseReason) -> bool {
    matches!(
        reason,
        Sv1CloseReason::TimedOut(_)
            | Sv1CloseReason::LineTooLong
            | Sv1CloseReason::InvalidLine(_)
            | Sv1CloseReason::SlowConsumer
    )
}

/// Hands one message to the inbound stack and writes the actions for this connection.
async fn deliver<IO, S>(
    stack: &mut S,
    session: &mut Sv1ServerSession,
    framed: &mut Conn<IO>,
    w: &Writer<'_>,
    ctx: Sv1ConnectionContext,
    message: tower_stratum_sv1::ClientMessage,
) -> Result<(), Sv1CloseReason>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Sv1InboundStack,
{
    let span = tracing::debug_span!(
        "message",
        method = message.method().unwrap_or("response"),
        request_id = %message.id(),
    );
    let r = async {
        match stack.ready().await {
            Ok(svc) => svc.call(Sv1InboundMessage { ctx, message }).await,
            Err(e) => Err(e),
        }
    }
    .instrument(span)
    .await;
    let actions = match r {
        Ok(a) => a,
        Err(e) if e.downcast_ref::<crate::Sv1ServiceError>().is_some() => {
            return Err(Sv1CloseReason::Shutdown)
        }
        Err(e) => {
            tracing::warn!(error = %e, "inbound stack error; message dropped");
            return Ok(());
        }
    };
    for a in actions {
        match a {
            Sv1Action::Send(m) => {
                session.on_send(&m);
                w.feed(framed, m).await?;
            }
            Sv1Action::Close(reason) => return Err(Sv1CloseReason::Closed(reason)),
            _ => {}
        }
    }
    Ok(())
}

/// Bounds writes: they fail with the stop reason if the connection is cancelled or evicted
/// meanwhile, and with `SlowConsumer` after `write_timeout`.
struct Writer<'a> {
    cancel: &'a CancellationToken,
    evict: &'a CancellationToken,
    write_timeout: Duration,
}

impl Writer<'_> {
    async fn guard(
        &self,
        f: impl std::future::Future<Output = Result<(), Sv1CodecError>>,
    ) -> Result<(), Sv1CloseReason> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Sv1CloseReason::Shutdown),
            _ = self.evict.cancelled() => Err(Sv1CloseReason::SlowConsumer),
            r = tokio::time::timeout(self.write_timeout, f) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Sv1CloseReason::Io(e.to_string())),
                Err(_) => Err(Sv1CloseReason::SlowConsumer),
            },
        }
    }

    async fn feed<IO, T>(&self, framed: &mut Conn<IO>, item: T) -> Result<(), Sv1CloseReason>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
        Sv1ServerCodec: tokio_util::codec::Encoder<T, Error = Sv1CodecError>,
    {
        self.guard(framed.feed(item)).await
    }

    async fn flush<IO>(&self, framed: &mut Conn<IO>) -> Result<(), Sv1CloseReason>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.guard(SinkExt::<ServerMessage>::flush(framed)).await
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The monotonic clock fed to sessions (tokio's, so paused-time tests work).
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}
