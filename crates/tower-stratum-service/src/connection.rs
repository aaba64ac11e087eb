//! One connection's task: the thin shell around a [`Session`].
//!
//! It only moves bytes and time: it runs the transport handshake, feeds received frames and
//! timer expiries to the session, writes what the session and the handlers want sent, and
//! reports lifecycle events to the hub.
//!
//! After the handshake the task is an event loop. Each wake-up handles up to [`BATCH`] events
//! that are ready without waiting (frames already received, answers from the inbound stack,
//! messages the hub queued), feeding every reply into the write buffer, then flushes once: when
//! nothing more is ready (so a reply never waits for more input) or when the batch is full
//! (then the task also yields, so a busy connection cannot starve others on its thread).
//!
//! Up to `max_in_flight` delivered messages wait for their answers at once (in an
//! [`InFlight`] queue): a burst of shares reaches the hub together and its replies leave in one
//! write, in arrival order. With that many outstanding, the task reads nothing more from the
//! peer until the oldest is answered.

use crate::hub::{ConnHandle, HubInput, Outbound};
use crate::in_flight::InFlight;
use crate::inbound::{InboundStack, ProtocolStack};
use crate::protocol::{Output, Protocol, Route, Sv2};
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tower_stratum_codec::{
    accept_noise, connect_noise, AuthorityKeypair, AuthorityPublicKey, PartialFrameBudget,
    PlainCodec, Sv2Codec,
};
use tower_stratum_core::session::MaxPayload;
use tower_stratum_core::{CloseReason, ConnectionId, Frame, Session, SessionOutput};
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
    pub(crate) hub: mpsc::Sender<HubInput<Sv2>>,
    pub(crate) cancel: CancellationToken,
    /// Receive limits, applied to the session (which tells the codec's limit per stage).
    pub(crate) max_payload: MaxPayload,
    /// Shared by the connections of one service: bytes held in unfinished frames.
    pub(crate) budget: PartialFrameBudget,
    pub(crate) outbound_queue: usize,
    /// Calls into the inbound stack outstanding at once, at least 1.
    pub(crate) max_in_flight: usize,
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
        peer = %PeerAddr(p.peer),
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
        session,
        stack,
        hub,
        cancel,
        max_payload,
        budget,
        outbound_queue,
        max_in_flight,
        write_timeout,
    } = p;
    let mut session = session.with_max_payload(max_payload);
    // Until SetupConnection is answered only its (small) limit applies.
    let max_payload = session.max_payload();

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
                        let reason = match e {
                            tower_stratum_codec::HandshakeError::CertificateRejected(d) => {
                                CloseReason::CertificateRejected(d)
                            }
                            e => CloseReason::Handshake(e.to_string()),
                        };
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
    let codec = codec.with_budget(budget.charge());

    let mut framed = Framed::from_parts(FramedParts::new::<Frame>(io, codec));
    // `from_parts` raises both buffers to 8 KiB; an idle connection needs far less (they grow
    // with traffic). See docs/PERFORMANCE.md, "Idle connections".
    *framed.read_buffer_mut() = bytes::BytesMut::with_capacity(READ_BUFFER);
    *framed.write_buffer_mut() = bytes::BytesMut::new();

    let shell = Shell::<Sv2, IO, S>::new(
        framed,
        session,
        Links {
            id,
            peer,
            stack,
            hub,
            cancel,
            outbound_queue,
            max_in_flight,
            write_timeout,
        },
    );
    shell.run().await
}

/// What every connection task gets from its service, whatever the protocol.
pub(crate) struct Links<P: Protocol, S> {
    pub(crate) id: ConnectionId,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) stack: S,
    pub(crate) hub: mpsc::Sender<HubInput<P>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) outbound_queue: usize,
    /// Calls into the inbound stack outstanding at once, at least 1.
    pub(crate) max_in_flight: usize,
    pub(crate) write_timeout: Duration,
}

/// Events handled per wake-up before the task flushes and yields: bounds the work one busy
/// connection does before others get the thread, and the replies buffered before a write.
const BATCH: u32 = 32;

/// Bytes in the write buffer above which it is flushed before anything else is handled (the
/// same bound as tokio-util's `Framed`): what one wake-up buffers stays bounded, and a peer that
/// does not read stops the task (and so its reading) at the flush, under `write_timeout`.
const FLUSH_AT: usize = 8 * 1024;

/// An established (or setting up) connection after the transport handshake: the event loop.
pub(crate) struct Shell<P: Protocol, IO, S: ProtocolStack<P>> {
    id: ConnectionId,
    peer: Option<SocketAddr>,
    framed: Framed<IO, P::Codec>,
    session: P::Session,
    stack: S,
    hub: mpsc::Sender<HubInput<P>>,
    /// Handed to the hub (in `Added`) once established.
    out_tx: Option<mpsc::Sender<Outbound<P>>>,
    out_rx: mpsc::Receiver<Outbound<P>>,
    ctx: Option<P::Context>,
    guard: Guard,
    /// Calls into the inbound stack, answered in the order the messages arrived.
    in_flight: InFlight<tracing::instrument::Instrumented<S::Future>>,
    max_in_flight: usize,
    /// A session output that has to wait: a message to deliver while the stack is not ready or
    /// `max_in_flight` calls are outstanding, or a transmit/close that must not overtake the
    /// answers in flight. Nothing more is taken from the session (or read) meanwhile.
    held: Option<Output<P>>,
    closing: Option<P::CloseReason>,
    /// Something was fed to the write buffer since the last flush.
    unflushed: bool,
    /// The codec's current receive limit (the session's, applied after each frame).
    max_payload: Option<usize>,
    /// The session knows that a frame has started to arrive (its frame timer is armed).
    frame_started: bool,
}

/// What woke the connection task.
enum Event<P: Protocol> {
    Stop(P::CloseReason),
    Answer(Option<Result<P::Actions, tower::BoxError>>),
    Ready(Result<(), tower::BoxError>),
    Outbound(Option<Outbound<P>>),
    Frame(Option<Result<P::Frame, P::CodecError>>),
    /// The bytes received so far end inside a frame (reported once per frame).
    FrameStarted,
    Timer,
}

impl<P, IO, S> Shell<P, IO, S>
where
    P: Protocol,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ProtocolStack<P>,
{
    /// A connection's event loop over `framed` (its transport handshake, if any, done).
    pub(crate) fn new(framed: Framed<IO, P::Codec>, session: P::Session, l: Links<P, S>) -> Self {
        let (out_tx, out_rx) = mpsc::channel::<Outbound<P>>(l.outbound_queue.max(1));
        // Cancelled by the hub when this peer's queue overflows (slow-consumer policy). A child
        // of `cancel`, so waiting on it alone also sees shutdown.
        let evict = l.cancel.child_token();
        let max_payload = P::max_payload(&session);
        Shell {
            id: l.id,
            peer: l.peer,
            framed,
            session,
            stack: l.stack,
            hub: l.hub,
            out_tx: Some(out_tx),
            out_rx,
            ctx: None,
            guard: Guard {
                cancel: l.cancel,
                evict,
                write_timeout: l.write_timeout,
            },
            in_flight: InFlight::new(),
            max_in_flight: l.max_in_flight.max(1),
            held: None,
            closing: None,
            unflushed: false,
            max_payload,
            frame_started: false,
        }
    }

    /// Runs the connection to its end: why it closed, and whether it was established.
    pub(crate) async fn run(mut self) -> (P::CloseReason, bool) {
        // One resettable timer for the session's deadlines. It is armed lazily: only moved
        // earlier, else left to fire, after which the session (which ignores an early call)
        // says what is next. So a frame that pushes the inactivity deadline back costs nothing.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<std::time::Instant> = None;
        let mut budget = BATCH;
        loop {
            self.pump().await;
            if self.closing.is_some() {
                break;
            }
            // What is ready without waiting (frames already received, answers, queued
            // messages) is handled before the write buffer is flushed, up to the budget. With
            // nothing to flush, the waiting call below returns at once as well.
            let ready = if budget > 0 && self.unflushed {
                poll_once(self.next_event(false, timer.as_mut(), false))
                    .await
                    .flatten()
            } else {
                None
            };
            let event = match ready {
                Some(e) => e,
                None => {
                    // Nothing more right now (or the batch is full): write, then wait.
                    self.flush().await;
                    if self.closing.is_some() {
                        break;
                    }
                    if budget == 0 {
                        tokio::task::yield_now().await;
                        budget = BATCH;
                    }
                    if let Some(want) = P::poll_timeout(&self.session) {
                        if armed.is_none_or(|a| want < a) {
                            timer.as_mut().reset(Instant::from_std(want));
                            armed = Some(want);
                        }
                    }
                    let mut waited = false;
                    let next = self.next_event(true, timer.as_mut(), armed.is_some());
                    let mut next = std::pin::pin!(next);
                    let event = poll_fn(|cx| {
                        let p = next.as_mut().poll(cx);
                        waited |= p.is_pending();
                        p
                    })
                    .await;
                    // The budget counts the events handled since the task last had to wait.
                    if waited {
                        budget = BATCH;
                    }
                    match event {
                        Some(e) => e,
                        None => continue,
                    }
                }
            };
            budget = budget.saturating_sub(1);
            if matches!(event, Event::Timer) {
                armed = None;
            }
            self.handle(event);
            if self.framed.write_buffer().len() >= FLUSH_AT {
                self.flush().await;
            }
        }
        let reason = self.closing.take().unwrap_or_else(P::shutdown);
        self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.framed.close()).await;
        if let Some(c) = self.ctx {
            if let Ok(permit) = self.hub.reserve().await {
                permit.send(HubInput::Removed {
                    ctx: c,
                    reason: reason.clone(),
                });
            }
        }
        info!(%reason, "closed");
        if P::peer_at_fault(&reason) {
            crate::peer_log::dropped(self.peer, &reason);
        }
        (reason, self.ctx.is_some())
    }

    /// Performs the session's outputs in order until one has to wait (see `held`).
    async fn pump(&mut self) {
        while self.closing.is_none() {
            let Some(out) = self
                .held
                .take()
                .or_else(|| P::poll_output(&mut self.session, self.id, self.peer))
            else {
                return;
            };
            match out {
                Output::Deliver(message) => {
                    let Some(c) = self.ctx else { continue };
                    if self.in_flight.len() >= self.max_in_flight {
                        self.held = Some(Output::Deliver(message));
                        return;
                    }
                    match poll_fn(|cx| Poll::Ready(self.stack.poll_ready(cx))).await {
                        Poll::Pending => {
                            self.held = Some(Output::Deliver(message));
                            return;
                        }
                        Poll::Ready(Ok(())) => {
                            let span = P::message_span(&message);
                            let call = span.in_scope(|| self.stack.call(P::inbound(c, message)));
                            self.in_flight.push_back(call.instrument(span));
                        }
                        Poll::Ready(Err(e)) => self.stack_error(e),
                    }
                }
                out @ (Output::Transmit(_) | Output::Close(_)) if !self.in_flight.is_empty() => {
                    self.held = Some(out);
                    return;
                }
                Output::Transmit(m) => self.write(m),
                Output::Established(c) => {
                    self.ctx = Some(c);
                    if let Some(tx) = self.out_tx.take() {
                        let handle = ConnHandle {
                            tx,
                            cancel: self.guard.evict.clone(),
                        };
                        // `reserve` then a synchronous send: the waiting future does not hold
                        // the message (the task's future stays small).
                        match self.hub.reserve().await {
                            Ok(permit) => permit.send(HubInput::Added { ctx: c, handle }),
                            Err(_) => P::close(&mut self.session, P::shutdown()),
                        }
                    }
                }
                Output::Close(reason) => self.closing = Some(reason),
            }
        }
    }

    /// The next event. `wait = false`: only what is ready now (`None` if nothing is enabled;
    /// pending otherwise), without the stop signals and the timer, which the waiting call checks.
    async fn next_event(
        &mut self,
        wait: bool,
        timer: Pin<&mut tokio::time::Sleep>,
        armed: bool,
    ) -> Option<Event<P>> {
        let answers = !self.in_flight.is_empty();
        let room = self.in_flight.len() < self.max_in_flight;
        let want_ready = room && matches!(self.held, Some(Output::Deliver(_)));
        let can_read = room && self.held.is_none();
        let outbound = self.ctx.is_some();
        let stack = &mut self.stack;
        let framed = &mut self.framed;
        let started = self.frame_started;
        tokio::select! {
            biased;
            _ = self.guard.evict.cancelled(), if wait => Some(Event::Stop(self.guard.stop_reason::<P>())),
            a = self.in_flight.next(), if answers => Some(Event::Answer(a)),
            r = poll_fn(|cx| stack.poll_ready(cx)), if want_ready => Some(Event::Ready(r)),
            o = self.out_rx.recv(), if outbound => Some(Event::Outbound(o)),
            f = poll_fn(|cx| poll_frame::<P, IO>(framed, started, cx)), if can_read => Some(f),
            _ = timer, if wait && armed => Some(Event::Timer),
            else => None,
        }
    }

    /// Handles one event. Replies only go into the write buffer (see [`Shell::write`]).
    fn handle(&mut self, event: Event<P>) {
        match event {
            Event::Stop(r) => self.close_now(r),
            Event::Answer(Some(Ok(actions))) => {
                for r in P::routes(actions) {
                    match r {
                        Route::Reply(m) => self.write(m),
                        Route::Close(reason) => self.close_now(P::closed(reason)),
                        _ => {}
                    }
                }
            }
            Event::Answer(Some(Err(e))) => self.stack_error(e),
            Event::Answer(None) => {}
            // The held message is dispatched by the next `pump`.
            Event::Ready(Ok(())) => {}
            Event::Ready(Err(e)) => {
                self.held = None;
                self.stack_error(e);
            }
            Event::Outbound(Some(Outbound::Msg(m))) => self.write(*m),
            Event::Outbound(Some(Outbound::Wire(w))) => self.write_wire(w),
            Event::Outbound(Some(Outbound::Close(r))) => self.close_now(r),
            Event::Outbound(None) => self.close_now(P::shutdown()),
            Event::Frame(Some(Ok(f))) => {
                let now = now();
                P::handle_frame(&mut self.session, now, f);
                // The next frame's deadline starts now, if its first bytes are already in.
                P::frame_progress(&mut self.session, now, false);
                self.frame_started = partial_frame::<P, IO>(&self.framed);
                P::frame_progress(&mut self.session, now, self.frame_started);
                let limit = P::max_payload(&self.session);
                if limit != self.max_payload {
                    self.max_payload = limit;
                    if let Some(l) = limit {
                        P::set_max_payload(self.framed.codec_mut(), l);
                    }
                }
            }
            Event::Frame(Some(Err(e))) => P::handle_codec_error(&mut self.session, e),
            Event::FrameStarted => {
                self.frame_started = true;
                P::frame_progress(&mut self.session, now(), true);
            }
            Event::Frame(None) => P::peer_closed(&mut self.session),
            Event::Timer => P::handle_timeout(&mut self.session, now()),
        }
    }

    /// Encodes `m` into the write buffer, flushed once per batch, or before more is handled once
    /// it holds [`FLUSH_AT`] bytes. No await here: a write that cannot complete is the flush's.
    fn write(&mut self, m: P::Outgoing) {
        P::on_send(&mut self.session, &m);
        match P::encode(m) {
            Ok(w) => self.write_wire(w),
            Err(e) => {
                warn!(error = %e, "cannot encode");
                self.close_now(P::closed(e));
            }
        }
    }

    fn write_wire(&mut self, w: P::Wire) {
        // `Framed::start_send` only encodes into the write buffer (its `poll_ready` would only
        // flush above tokio-util's 8 KiB boundary, which `run` does itself with `FLUSH_AT`).
        match Pin::new(&mut self.framed).start_send(w) {
            Ok(()) => self.unflushed = true,
            Err(e) => self.close_now(P::io_error(e.to_string())),
        }
    }

    /// Writes what was fed; a peer that does not read gets `write_timeout`.
    async fn flush(&mut self) {
        if !self.unflushed {
            return;
        }
        self.unflushed = false;
        let framed = &mut self.framed;
        let flushed = self
            .guard
            .run::<P, _>(async { framed.flush().await.map_err(|e| P::io_error(e.to_string())) });
        if let Err(r) = flushed.await {
            self.close_now(r);
        }
    }

    /// Closes without waiting for the answers in flight (a handler's `Close`, a failed write,
    /// eviction, shutdown). A close the session already decided keeps its reason.
    fn close_now(&mut self, reason: P::CloseReason) {
        let reason = match self.held.take() {
            Some(Output::Close(first)) => first,
            other => {
                self.held = other;
                reason
            }
        };
        if self.closing.is_none() {
            self.closing = Some(reason);
        }
    }

    fn stack_error(&mut self, e: tower::BoxError) {
        if e.downcast_ref::<crate::ServiceError>().is_some() {
            self.close_now(P::shutdown());
        } else {
            warn!(error = %e, "inbound stack error; message dropped");
        }
    }
}

/// The next frame, or [`Event::FrameStarted`] when reading stops inside a frame the session
/// has not been told about (`started == false`).
fn poll_frame<P: Protocol, IO: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<IO, P::Codec>,
    started: bool,
    cx: &mut std::task::Context<'_>,
) -> Poll<Event<P>> {
    match framed.poll_next_unpin(cx) {
        Poll::Ready(f) => Poll::Ready(Event::Frame(f)),
        Poll::Pending if !started && partial_frame::<P, IO>(framed) => {
            Poll::Ready(Event::FrameStarted)
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Whether the bytes received so far end inside a frame.
fn partial_frame<P: Protocol, IO>(framed: &Framed<IO, P::Codec>) -> bool {
    !framed.read_buffer().is_empty() || P::codec_buffered(framed.codec()) > 0
}

/// A peer address for logs: `127.0.0.1:34254`, or `-` for a stream without one.
pub(crate) struct PeerAddr(pub(crate) Option<SocketAddr>);

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Polls `f` once with the task's own context: `Some(output)` if it is ready now.
async fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    poll_fn(|cx| {
        Poll::Ready(match f.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
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
/// evicted (slow consumer) while it waits, and with `SlowConsumer` after `write_timeout`. A write
/// that completes at once (room in the buffer or the socket) costs no timer and no waiter.
struct Guard {
    cancel: CancellationToken,
    /// A child of `cancel`: cancelled by shutdown too.
    evict: CancellationToken,
    write_timeout: Duration,
}

impl Guard {
    async fn run<P: Protocol, T>(
        &self,
        f: impl Future<Output = Result<T, P::CloseReason>>,
    ) -> Result<T, P::CloseReason> {
        let mut f = std::pin::pin!(f);
        if let Some(r) = poll_once(f.as_mut()).await {
            return r;
        }
        tokio::select! {
            biased;
            _ = self.evict.cancelled() => Err(self.stop_reason::<P>()),
            r = tokio::time::timeout(self.write_timeout, f) => r.unwrap_or_else(|_| Err(P::slow_consumer())),
        }
    }

    /// Why `evict` fired: shutdown (its parent) or the hub's slow-consumer eviction.
    fn stop_reason<P: Protocol>(&self) -> P::CloseReason {
        if self.cancel.is_cancelled() {
            P::shutdown()
        } else {
            P::slow_consumer()
        }
    }
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
