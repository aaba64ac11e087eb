//! One load-generator connection: TCP connect (from a chosen source address), Noise NX
//! handshake or plaintext, `SetupConnection`, optionally a channel and its first job; then either
//! idle until told to exit, or submitting shares within a window of unacknowledged ones and
//! timing each acknowledgement.
//!
//! A raw `Framed<TcpStream, Sv2Codec>` client (no session, no service): the cheapest way to
//! drive many connections, and exactly the bytes a miner sends.

use crate::job::{Channel, Update};
use crate::msgs::{self, OpenRequest};
use crate::spec::{ConnSpec, ShareSpec};
use crate::worker::{Phase, Stats};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_util::codec::Framed;
use tower_stratum_codec::{connect_noise, AuthorityPublicKey, PlainCodec, Sv2Codec};
use tower_stratum_core::stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tower_stratum_core::Sv2Message;

/// Largest frame payload accepted from the server, bytes (jobs are a few hundred bytes).
const MAX_PAYLOAD: usize = 1 << 20;
/// Initial read buffer per connection, bytes (tokio-util's default is 8 KiB; with 20 000
/// connections per process that would be 320 MiB of mostly untouched buffers).
const READ_BUFFER: usize = 512;

/// A framed connection to the server.
pub(crate) type Link = Framed<TcpStream, Sv2Codec>;

/// Why a connection failed or ended, sorted by stage. [`ConnError::kind`] is the key under
/// which it is counted in the report.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// A deadline passed during the named stage.
    Timeout(&'static str),
    /// TCP connect failed.
    Connect(std::io::Error),
    /// The Noise handshake failed (I/O or certificate).
    Handshake(String),
    /// `SetupConnection.Error` with this error code.
    SetupRefused(String),
    /// `OpenMiningChannel.Error` with this error code.
    OpenRefused(String),
    /// The server closed the connection during the named stage.
    Closed(&'static str),
    /// A read or write failed (reset, decrypt error, oversized frame).
    Io(String),
    /// A frame did not parse as the message its type names.
    Decode(String),
    /// The server's channel-open answer or job is unusable.
    Malformed(&'static str),
    /// The server closed our channel (`CloseChannel`), with its reason code.
    ChannelClosed(String),
    /// The server asked us to reconnect elsewhere (`Reconnect`, Sv1 `client.reconnect`).
    Reconnect,
    /// An Sv1 set-up request (the named method) was answered with an error or `false`.
    Sv1Refused(&'static str, String),
}

impl ConnError {
    /// A short stable key for counting errors of the same kind.
    pub(crate) fn kind(&self) -> String {
        match self {
            ConnError::Timeout(stage) => format!("timeout during {stage}"),
            ConnError::Connect(e) => format!("connect: {}", io_kind(e)),
            ConnError::Handshake(e) => format!("noise handshake: {e}"),
            ConnError::SetupRefused(code) => format!("SetupConnection.Error: {code}"),
            ConnError::OpenRefused(code) => format!("OpenMiningChannel.Error: {code}"),
            ConnError::Closed(stage) => format!("closed by server during {stage}"),
            ConnError::Io(e) => format!("io: {e}"),
            ConnError::Decode(e) => format!("decode: {e}"),
            ConnError::Malformed(what) => format!("malformed: {what}"),
            ConnError::ChannelClosed(reason) => format!("CloseChannel: {reason}"),
            ConnError::Reconnect => "Reconnect received".to_owned(),
            ConnError::Sv1Refused(method, e) => format!("{method} refused: {e}"),
        }
    }
}

fn io_kind(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // EADDRNOTAVAIL: the source address ran out of ephemeral ports
        Some(99) => "address not available (ephemeral ports exhausted: use more --sources)".into(),
        // EMFILE
        Some(24) => "too many open files".into(),
        _ => e.kind().to_string(),
    }
}

/// Time spent in each setup stage of one connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timings {
    /// TCP connect + Noise handshake (or TCP connect alone for plaintext).
    pub(crate) handshake: Duration,
    /// `SetupConnection` -> `.Success`.
    pub(crate) setup: Option<Duration>,
    /// `Open…MiningChannel` -> a job to mine.
    pub(crate) channel: Option<Duration>,
}

/// A connection after setup.
#[derive(Debug)]
pub(crate) struct Established {
    /// The framed stream.
    pub(crate) link: Link,
    /// The open channel, if one was asked for.
    pub(crate) channel: Option<Channel>,
    /// Stage timings.
    pub(crate) timings: Timings,
}

async fn recv(link: &mut Link, stage: &'static str) -> Result<Sv2Message, ConnError> {
    match link.next().await {
        None => Err(ConnError::Closed(stage)),
        Some(Err(e)) => Err(ConnError::Io(e.to_string())),
        Some(Ok(frame)) => Sv2Message::decode(frame).map_err(|e| ConnError::Decode(e.to_string())),
    }
}

async fn send(link: &mut Link, m: Option<Sv2Message>) -> Result<(), ConnError> {
    let frame = m
        .ok_or(ConnError::Malformed("message does not encode"))?
        .encode()
        .map_err(|e| ConnError::Decode(e.to_string()))?;
    link.send(frame)
        .await
        .map_err(|e| ConnError::Io(e.to_string()))
}

pub(crate) async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    // Close with a reset: no TIME_WAIT left behind on our source ports between runs.
    stream.set_zero_linger()?;
    Ok(stream)
}

/// Connects and sets up one connection as `spec` says, all before `deadline`.
///
/// `index` (global connection number) is appended to the channel's `user_identity`.
pub(crate) async fn establish(
    spec: &ConnSpec,
    authority: Option<AuthorityPublicKey>,
    source: Option<IpAddr>,
    index: u64,
    deadline: Instant,
) -> Result<Established, ConnError> {
    let start = Instant::now();
    let mut stream = timeout_at(deadline, tcp_connect(spec.addr, source))
        .await
        .map_err(|_| ConnError::Timeout("TCP connect"))?
        .map_err(ConnError::Connect)?;
    let codec = if spec.plaintext {
        Sv2Codec::Plain(PlainCodec::new(MAX_PAYLOAD))
    } else {
        let c = timeout_at(deadline, connect_noise(&mut stream, authority, MAX_PAYLOAD))
            .await
            .map_err(|_| ConnError::Timeout("noise handshake"))?
            .map_err(|e| ConnError::Handshake(e.to_string()))?;
        Sv2Codec::Noise(Box::new(c))
    };
    let mut link = Framed::with_capacity(stream, codec, READ_BUFFER);
    *link.write_buffer_mut() = bytes::BytesMut::new();
    let mut timings = Timings {
        handshake: start.elapsed(),
        ..Timings::default()
    };
    if !spec.setup {
        return Ok(Established {
            link,
            channel: None,
            timings,
        });
    }

    let t = Instant::now();
    let host = spec.addr.ip().to_string();
    send(
        &mut link,
        msgs::setup_connection(spec.channel, &host, spec.addr.port()),
    )
    .await?;
    let success_flags;
    loop {
        let m = timeout_at(deadline, recv(&mut link, "SetupConnection"))
            .await
            .map_err(|_| ConnError::Timeout("SetupConnection"))??;
        match m {
            Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(s)) => {
                break success_flags = s.flags;
            }
            Sv2Message::Common(CommonMessagesOwned::SetupConnectionError(e)) => {
                return Err(ConnError::SetupRefused(e.error_code.as_utf8_or_hex()))
            }
            _ => {}
        }
    }
    timings.setup = Some(t.elapsed());

    let Some(kind) = spec.channel else {
        return Ok(Established {
            link,
            channel: None,
            timings,
        });
    };
    let t = Instant::now();
    let req = OpenRequest {
        kind,
        user_identity: format!("{}.{index}", spec.user_identity),
        nominal_hash_rate: spec.nominal_hash_rate,
        min_extranonce_size: spec.min_extranonce_size,
    };
    let mut ch = Channel::new(&req, spec.avoid_blocks)
        .ok_or(ConnError::Malformed("user identity over 255 bytes"))?;
    send(&mut link, Some(ch.open(success_flags))).await?;
    while !ch.has_work() {
        let m = timeout_at(deadline, recv(&mut link, "channel open"))
            .await
            .map_err(|_| ConnError::Timeout("channel open (no job)"))??;
        if let Sv2Message::Mining(m) = m {
            match ch.on_message(&m) {
                Update::Closed(reason) => return Err(ConnError::ChannelClosed(reason)),
                Update::Malformed(what) => return Err(ConnError::Malformed(what)),
                Update::Refused(code) => return Err(ConnError::OpenRefused(code)),
                Update::Applied | Update::Ignored => {}
            }
        }
    }
    let channel = Some(ch);
    timings.channel = Some(t.elapsed());
    Ok(Established {
        link,
        channel,
        timings,
    })
}

/// Reads and discards whatever the server sends until the phase is [`Phase::Exit`]. Returns
/// an error if the server closes the connection first.
pub(crate) async fn hold(
    link: &mut Link,
    phase: &mut watch::Receiver<Phase>,
) -> Result<(), ConnError> {
    loop {
        if *phase.borrow_and_update() == Phase::Exit {
            return Ok(());
        }
        tokio::select! {
            r = link.next() => match r {
                None => return Err(ConnError::Closed("idle hold")),
                Some(Err(e)) => return Err(ConnError::Io(e.to_string())),
                Some(Ok(_)) => {}
            },
            r = phase.changed() => if r.is_err() { return Ok(()); },
        }
    }
}

/// Shares submitted and not yet acknowledged: `(sequence_number, sent at)`, oldest first.
type Pending = VecDeque<(u32, Instant)>;

/// Whether sequence number `a` comes at or before `b` (wrapping, spec 5.3.13).
fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < (1 << 31)
}

/// Applies one message during the share phase: acknowledgements, jobs, targets.
fn on_share_phase_message(
    m: Sv2Message,
    ch: &mut Channel,
    pending: &mut Pending,
    stats: &Stats,
) -> Result<(), ConnError> {
    match m {
        Sv2Message::Mining(MiningOwned::SubmitSharesSuccess(s)) if s.channel_id == ch.id() => {
            let now = Instant::now();
            stats
                .server_accepted
                .fetch_add(u64::from(s.new_submits_accepted_count), Relaxed);
            while let Some(&(seq, sent)) = pending.front() {
                if !seq_le(seq, s.last_sequence_number) {
                    break;
                }
                pending.pop_front();
                stats.latency.record(now - sent);
                stats.acked.fetch_add(1, Relaxed);
                stats.accepted.fetch_add(1, Relaxed);
            }
        }
        Sv2Message::Mining(MiningOwned::SubmitSharesError(e)) if e.channel_id == ch.id() => {
            let now = Instant::now();
            if let Some(pos) = pending
                .iter()
                .position(|(seq, _)| *seq == e.sequence_number)
            {
                if let Some((_, sent)) = pending.remove(pos) {
                    stats.latency.record(now - sent);
                }
                stats.acked.fetch_add(1, Relaxed);
                stats.rejected.fetch_add(1, Relaxed);
                stats.count_error(format!("rejected: {}", e.error_code.as_utf8_or_hex()));
            } else {
                stats.count_error("SubmitShares.Error for an unknown sequence number".into());
            }
        }
        Sv2Message::Mining(m) => match ch.on_message(&m) {
            Update::Closed(reason) => return Err(ConnError::ChannelClosed(reason)),
            Update::Malformed(what) => stats.count_error(format!("malformed: {what}")),
            Update::Refused(_) | Update::Applied | Update::Ignored => {}
        },
        Sv2Message::Common(CommonMessagesOwned::Reconnect(_)) => return Err(ConnError::Reconnect),
        _ => {}
    }
    Ok(())
}

fn on_frame(
    r: Option<Result<tower_stratum_core::Frame, tower_stratum_codec::CodecError>>,
    ch: &mut Channel,
    pending: &mut Pending,
    stats: &Stats,
) -> Result<(), ConnError> {
    match r {
        None => Err(ConnError::Closed("share phase")),
        Some(Err(e)) => Err(ConnError::Io(e.to_string())),
        Some(Ok(frame)) => {
            let m = Sv2Message::decode(frame).map_err(|e| ConnError::Decode(e.to_string()))?;
            on_share_phase_message(m, ch, pending, stats)
        }
    }
}

/// Sends shares until the window is full (or, when `limited`, the credits are spent, or
/// there is no job), then flushes.
#[allow(clippy::too_many_arguments)]
async fn fill(
    link: &mut Link,
    ch: &mut Channel,
    spec: &ShareSpec,
    pending: &mut Pending,
    credits: &mut usize,
    limited: bool,
    seq: &mut u32,
    stats: &Stats,
) -> Result<(), ConnError> {
    let in_flight = spec.in_flight.max(1) as usize;
    let mut wrote = false;
    while pending.len() < in_flight && (!limited || *credits > 0) {
        let Some(found) = ch.next_share(spec.max_hashes) else {
            break; // no job (e.g. a new tip without its job yet)
        };
        *seq = seq.wrapping_add(1);
        stats.hashes.fetch_add(u64::from(found.hashes), Relaxed);
        if found.is_block {
            stats.blocks.fetch_add(1, Relaxed);
        }
        if !found.meets_target {
            stats.below_target.fetch_add(1, Relaxed);
        }
        let frame = msgs::submit(&found.share, *seq)
            .ok_or(ConnError::Malformed("extranonce over 32 bytes"))?
            .encode()
            .map_err(|e| ConnError::Decode(e.to_string()))?;
        pending.push_back((*seq, Instant::now()));
        link.feed(frame)
            .await
            .map_err(|e| ConnError::Io(e.to_string()))?;
        stats.sent.fetch_add(1, Relaxed);
        *credits = credits.saturating_sub(1);
        wrote = true;
    }
    if wrote {
        link.flush()
            .await
            .map_err(|e| ConnError::Io(e.to_string()))?;
    }
    Ok(())
}

/// Submits shares on an established connection with a channel: waits for [`Phase::Go`], then
/// keeps up to `spec.in_flight` shares unacknowledged, sending at `spec.rate_per_conn` (first
/// send after `offset`) or as fast as acknowledgements return; at [`Phase::Stop`] waits up to
/// `spec.drain_ms` for the outstanding ones, counts the rest as unacknowledged, and returns.
pub(crate) async fn submit_shares(
    link: &mut Link,
    ch: &mut Channel,
    spec: &ShareSpec,
    offset: Duration,
    phase: &mut watch::Receiver<Phase>,
    stats: &Stats,
) -> Result<(), ConnError> {
    let in_flight = spec.in_flight.max(1) as usize;
    let mut pending: Pending = VecDeque::with_capacity(in_flight);
    // Before `go`: keep applying job updates.
    loop {
        match *phase.borrow_and_update() {
            Phase::Connecting => {}
            Phase::Go => break,
            Phase::Stop | Phase::Exit => return Ok(()),
        }
        tokio::select! {
            r = link.next() => on_frame(r, ch, &mut pending, stats)?,
            r = phase.changed() => if r.is_err() { return Ok(()); },
        }
    }

    let mut ticker = (spec.rate_per_conn > 0.0).then(|| {
        let period = Duration::from_secs_f64(1.0 / spec.rate_per_conn);
        let mut i = tokio::time::interval_at(Instant::now() + offset, period);
        i.set_missed_tick_behavior(MissedTickBehavior::Skip);
        i
    });
    let mut credits: usize = 0;
    let mut seq: u32 = 0;
    let result = loop {
        // Send what the window (and, when rate-limited, the credits) allow.
        let limited = ticker.is_some();
        if let Err(e) = fill(
            link,
            ch,
            spec,
            &mut pending,
            &mut credits,
            limited,
            &mut seq,
            stats,
        )
        .await
        {
            break Err(e);
        }
        tokio::select! {
            biased;
            r = phase.changed() => {
                if r.is_err() || *phase.borrow_and_update() != Phase::Go {
                    break Ok(());
                }
            }
            r = link.next() => {
                if let Err(e) = on_frame(r, ch, &mut pending, stats) {
                    break Err(e);
                }
            }
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if pending.len() + credits >= in_flight {
                    stats.window_full.fetch_add(1, Relaxed);
                } else {
                    credits += 1;
                }
            }
        }
    };
    if result.is_ok() {
        // Drain: wait for the outstanding acknowledgements.
        let deadline = Instant::now() + Duration::from_millis(spec.drain_ms);
        while !pending.is_empty() {
            tokio::select! {
                r = link.next() => {
                    if let Err(e) = on_frame(r, ch, &mut pending, stats) {
                        stats.unacknowledged.fetch_add(pending.len() as u64, Relaxed);
                        return Err(e);
                    }
                }
                _ = sleep_until(deadline) => break,
            }
        }
    }
    stats
        .unacknowledged
        .fetch_add(pending.len() as u64, Relaxed);
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn sequence_numbers_wrap() {
        assert!(seq_le(1, 1));
        assert!(seq_le(1, 2));
        assert!(!seq_le(2, 1));
        assert!(seq_le(u32::MAX, 0));
        assert!(!seq_le(0, u32::MAX));
    }
}
