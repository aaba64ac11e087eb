//! One connection's task: the thin shell around a [`Session`].
//!
//! It only moves bytes and time: it runs the transport handshake, feeds received frames and
//! timer expiries to the session, writes what the session and the handlers want sent, and
//! reports lifecycle events to the hub.

use crate::hub::{ConnHandle, HubInput, Outbound};
use crate::inbound::InboundStack;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_stratum_codec::{
    accept_noise, connect_noise, AuthorityKeypair, AuthorityPublicKey, PlainCodec, Sv2Codec,
};
use tower_stratum_core::{
    Action, CloseReason, ConnectionContext, ConnectionId, Frame, InboundMessage, Session,
    SessionOutput, Sv2Message,
};
use tracing::{debug, info, warn, Instrument};

/// How the byte stream is secured.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    Plain,
    NoiseResponder {
        keypair: AuthorityKeypair,
        cert_validity: Duration,
    },
    NoiseInitiator {
        authority: Option<AuthorityPublicKey>,
    },
}

pub(crate) struct ConnParams<S> {
    pub(crate) id: ConnectionId,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) transport: Transport,
    pub(crate) session: Session,
    pub(crate) stack: S,
    pub(crate) hub: mpsc::Sender<HubInput>,
    pub(crate) cancel: CancellationToken,
    pub(crate) max_payload: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) write_timeout: Duration,
}

/// Read buffer initial capacity. Small so idle connections stay cheap; grows with traffic.
const READ_BUFFER: usize = 512;

/// Runs the connection to completion and returns why it closed.
///
/// Plain functions returning the instrumented future (not `async fn` wrappers), so the task
/// holds one copy of `io` and the parameters, not one per wrapper.
pub(crate) fn run<IO, S>(io: IO, p: ConnParams<S>) -> impl Future<Output = CloseReason> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: InboundStack,
{
    run_reporting(io, p).map(|(reason, _)| reason)
}

/// Like [`run`], also telling whether the connection got established.
pub(crate) fn run_reporting<IO, S>(
    io: IO,
    p: ConnParams<S>,
) -> impl Future<Output = (CloseReason, bool)> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: InboundStack,
{
    let span = tracing::info_span!(
        "connection",
        id = p.id.0,
        peer = ?p.peer,
        role = %p.session.role(),
        protocol = tracing::field::Empty,
    );
    run_inner(io, p).instrument(span)
}

async fn run_inner<IO, S>(mut io: IO, p: ConnParams<S>) -> (CloseReason, bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: InboundStack,
{
    let ConnParams {
        id,
        peer,
        transport,
        mut session,
        mut stack,
        hub,
        cancel,
        max_payload,
        outbound_queue,
        write_timeout,
    } = p;

    // 1. Transport handshake, bounded by the session's handshake timer.
    let codec = match transport {
        Transport::Plain => Sv2Codec::Plain(PlainCodec::new(max_payload)),
        t => {
            let deadline = session.poll_timeout();
            let hs = async {
                match t {
                    Transport::NoiseResponder {
                        keypair,
                        cert_validity,
                    } => accept_noise(&mut io, &keypair, cert_validity, max_payload).await,
                    Transport::NoiseInitiator { authority } => {
                        connect_noise(&mut io, authority, max_payload).await
                    }
                    Transport::Plain => unreachable_plain(),
                }
            };
            tokio::select! {
                r = hs => match r {
                    Ok(c) => Sv2Codec::Noise(Box::new(c)),
                    Err(e) => {
                        let reason = CloseReason::Handshake(e.to_string());
                        debug!(%reason, "handshake failed");
                        return (reason, false);
                    }
                },
                _ = sleep_until(deadline) => {
                    session.handle_timeout(now());
                    return (first_close(&mut session)
                        .unwrap_or(CloseReason::TimedOut(tower_stratum_core::session::Timer::Handshake)), false);
                }
                _ = cancel.cancelled() => return (CloseReason::Shutdown, false),
            }
        }
    };
    session.handshake_complete(now());

    let mut framed = Framed::from_parts(FramedParts::new::<Frame>(io, codec));
    // `from_parts` raises both buffers to 8 KiB; an idle connection needs far less (they grow
    // with traffic). See docs/PERFORMANCE.md, "Idle connections".
    *framed.read_buffer_mut() = bytes::BytesMut::with_capacity(READ_BUFFER);
    *framed.write_buffer_mut() = bytes::BytesMut::new();

    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(outbound_queue.max(1));
    let mut out_tx = Some(out_tx);
    let mut ctx: Option<ConnectionContext> = None;
    let mut closing: Option<CloseReason> = None;
    // Cancelled by the hub when this client's queue overflows (slow-consumer policy).
    let evict = CancellationToken::new();
    let guard = Guard {
        cancel: &cancel,
        evict: &evict,
        write_timeout,
    };

    loop {
        // 2. Perform everything the session produced.
        while let Some(out) = session.poll_output() {
            match out {
                SessionOutput::Transmit(m) => {
                    if let Err(r) = guard.run(feed(&mut framed, m)).await {
                        session.close(r);
                    }
                }
                SessionOutput::Established(info) => {
                    let c = ConnectionContext {
                        id,
                        peer,
                        role: session.role(),
                        info,
                    };
                    tracing::Span::current()
                        .record("protocol", tracing::field::display(info.protocol));
                    info!(version = info.version, flags = info.flags, "established");
                    ctx = Some(c);
                    if let Some(tx) = out_tx.take() {
                        let handle = ConnHandle {
                            tx,
                            cancel: evict.clone(),
                        };
                        if hub.send(HubInput::Added { ctx: c, handle }).await.is_err() {
                            session.close(CloseReason::Shutdown);
                        }
                    }
                }
                SessionOutput::Deliver(message) => {
                    let Some(c) = ctx else { continue };
                    let msg_span = tracing::debug_span!("message", name = message.name());
                    let r = async {
                        match stack.ready().await {
                            Ok(svc) => svc.call(InboundMessage { ctx: c, message }).await,
                            Err(e) => Err(e),
                        }
                    }
                    .instrument(msg_span)
                    .await;
                    match r {
                        Ok(actions) => {
                            for a in actions {
                                match a {
                                    Action::Reply(m) => {
                                        if let Err(r) = guard.run(feed(&mut framed, m)).await {
                                            session.close(r);
                                        }
                                    }
                                    Action::Close(reason) => {
                                        session.close(CloseReason::Closed(reason))
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Err(e) => {
                            if e.downcast_ref::<crate::ServiceError>().is_some() {
                                session.close(CloseReason::Shutdown);
                            } else {
                                warn!(error = %e, "inbound stack error; message dropped");
                            }
                        }
                    }
                }
                SessionOutput::Close(reason) => closing = Some(reason),
            }
        }
        // Write what was fed; a peer that does not read gets `write_timeout`.
        if let Err(r) = guard
            .run(async {
                framed
                    .flush()
                    .await
                    .map_err(|e| CloseReason::Io(e.to_string()))
            })
            .await
        {
            if closing.is_none() {
                closing = Some(r);
            }
        }
        if let Some(reason) = closing.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), framed.close()).await;
            if let Some(c) = ctx {
                let _ = hub
                    .send(HubInput::Removed {
                        ctx: c,
                        reason: reason.clone(),
                    })
                    .await;
            }
            info!(%reason, "closed");
            return (reason, ctx.is_some());
        }

        // 3. Wait for the next input: shutdown, a queued message, a frame, or a timer.
        let deadline = session.poll_timeout();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => session.close(CloseReason::Shutdown),
            _ = evict.cancelled() => session.close(CloseReason::SlowConsumer),
            out = out_rx.recv(), if ctx.is_some() => match out {
                Some(Outbound::Frame(f)) => {
                    let mut next = Some(Outbound::Frame(f));
                    // Batch whatever else is queued into the same write.
                    while let Some(o) = next.take() {
                        match o {
                            Outbound::Frame(f) => {
                                let fed = guard.run(async {
                                    framed.feed(f).await.map_err(|e| CloseReason::Transport(e.to_string()))
                                });
                                if let Err(r) = fed.await {
                                    session.close(r);
                                    break;
                                }
                            }
                            Outbound::Close(r) => { session.close(r); break; }
                        }
                        next = out_rx.try_recv().ok();
                    }
                }
                Some(Outbound::Close(r)) => session.close(r),
                None => session.close(CloseReason::Shutdown),
            },
            frame = framed.next() => match frame {
                Some(Ok(f)) => session.handle_frame(now(), f),
                Some(Err(e)) => session.close(CloseReason::Transport(e.to_string())),
                None => session.close(CloseReason::PeerClosed),
            },
            _ = sleep_until(deadline) => session.handle_timeout(now()),
        }
    }
}

fn unreachable_plain(
) -> Result<tower_stratum_codec::NoiseCodec, tower_stratum_codec::HandshakeError> {
    Err(tower_stratum_codec::HandshakeError::Io(
        std::io::Error::other("plaintext transport has no handshake"),
    ))
}

fn first_close(session: &mut Session) -> Option<CloseReason> {
    while let Some(o) = session.poll_output() {
        if let SessionOutput::Close(r) = o {
            return Some(r);
        }
    }
    None
}

/// Bounds a write: it fails with the stop reason if the connection is cancelled (shutdown) or
/// evicted (slow consumer) meanwhile, and with `SlowConsumer` after `write_timeout`.
struct Guard<'a> {
    cancel: &'a CancellationToken,
    evict: &'a CancellationToken,
    write_timeout: Duration,
}

impl Guard<'_> {
    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, CloseReason>>,
    ) -> Result<T, CloseReason> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(CloseReason::Shutdown),
            _ = self.evict.cancelled() => Err(CloseReason::SlowConsumer),
            r = tokio::time::timeout(self.write_timeout, f) => r.unwrap_or(Err(CloseReason::SlowConsumer)),
        }
    }
}

async fn feed<IO>(framed: &mut Framed<IO, Sv2Codec>, m: Sv2Message) -> Result<(), CloseReason>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = m.name();
    let frame = m.encode().map_err(|e| {
        warn!(message = name, error = %e, "cannot encode");
        CloseReason::Closed(format!("cannot encode {name}: {e}"))
    })?;
    framed
        .feed(frame)
        .await
        .map_err(|e| CloseReason::Transport(e.to_string()))
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The monotonic clock the shell feeds to sessions (tokio's, so paused-time tests work).
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}
