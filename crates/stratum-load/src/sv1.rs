//! One load-generator Sv1 miner's connection: TCP connect (from a chosen source address),
//! `mining.configure` (version rolling), `mining.subscribe`, `mining.suggest_difficulty`,
//! `mining.authorize`, the first job; then either idle until told to exit, or submitting shares
//! within a window of unanswered ones and timing each answer.
//!
//! A raw `Framed<TcpStream, Sv1ClientCodec>` (the project's lenient Sv1 codec and typed
//! messages), no service: the cheapest way to drive many miners, and exactly the lines a miner
//! sends. Request ids: 1 `mining.configure`, 2 `mining.subscribe`, 3 `mining.authorize`,
//! 4 `mining.suggest_difficulty` (its answer is not awaited: SRI's translator never answers
//! it), shares from [`FIRST_SHARE_ID`] on.
//!
//! What is counted: a share is *acknowledged* by any answer to its `mining.submit` (`true`,
//! `false` or an error): that is what the latency measures, whatever the verdict. It is
//! *accepted* when the answer is `true`, *rejected* otherwise (counted by error code and
//! message). Whether a `true` means the upstream accepted the share depends on the proxy (a
//! proxy may answer before the upstream's verdict); the load generator cannot tell.

use crate::conn::{ConnError, Timings};
use crate::spec::{ConnSpec, ShareSpec, Sv1Spec};
use crate::sv1_work::{verdict, Found, Pending, Sv1Miner, Verdict};
use crate::worker::{Phase, Stats};
use futures_util::{SinkExt, StreamExt};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_util::codec::Framed;
use tower_stratum_sv1::{
    Authorize, ClientMessage, ConfigureResult, Id, ParseErrorKind, Response, ServerMessage,
    Subscribe, SubscribeResult, Sv1ClientCodec, Sv1CodecError, Sv1ParseError,
};

/// Longest line accepted from the proxy, bytes (a `mining.notify` is a few hundred bytes to a
/// few KiB).
const MAX_LINE: usize = 64 * 1024;
/// Initial read buffer per connection, bytes (see `conn::READ_BUFFER`).
const READ_BUFFER: usize = 512;
/// Request id of `mining.configure`.
const ID_CONFIGURE: u64 = 1;
/// Request id of `mining.subscribe`.
const ID_SUBSCRIBE: u64 = 2;
/// Request id of `mining.authorize`.
const ID_AUTHORIZE: u64 = 3;
/// Request id of `mining.suggest_difficulty`.
const ID_SUGGEST: u64 = 4;
/// Request id of the first share; each share takes the next.
pub(crate) const FIRST_SHARE_ID: u64 = 100;

/// A framed Sv1 connection to the proxy.
pub(crate) type Sv1Link = Framed<TcpStream, Sv1ClientCodec>;

/// A miner after setup.
#[derive(Debug)]
pub(crate) struct Sv1Established {
    /// The framed stream.
    pub(crate) link: Sv1Link,
    /// The miner (`None` when set-up stopped after TCP connect).
    pub(crate) miner: Option<Sv1Miner>,
    /// Stage timings: `handshake` = TCP connect; `setup` = `mining.configure` to the
    /// `mining.authorize` answer; `channel` = from there to the first job.
    pub(crate) timings: Timings,
    /// Whether `mining.configure` granted version rolling.
    pub(crate) version_rolling: bool,
}

type Item = Option<Result<Result<ServerMessage, Sv1ParseError>, Sv1CodecError>>;

/// A received line as a message; `Ok(None)` for a line that does not parse (counted, not
/// fatal: the lenient codec keeps going).
fn message(
    r: Item,
    stage: &'static str,
    stats: &Stats,
) -> Result<Option<ServerMessage>, ConnError> {
    match r {
        None => Err(ConnError::Closed(stage)),
        Some(Err(e)) => Err(ConnError::Io(e.to_string())),
        Some(Ok(Err(e))) => {
            stats.count_error(unparsable(&e));
            Ok(None)
        }
        Some(Ok(Ok(m))) => Ok(Some(m)),
    }
}

/// The error key of a line that does not parse: the method (if any) and a coarse reason, so
/// the number of distinct keys stays small whatever the proxy sends.
fn unparsable(e: &Sv1ParseError) -> String {
    let why = match &e.kind {
        ParseErrorKind::Json(_) => "not JSON",
        ParseErrorKind::NotAnObject => "not an object",
        ParseErrorKind::InvalidId => "invalid id",
        ParseErrorKind::InvalidMethod => "invalid method",
        ParseErrorKind::NotAMessage => "not a request or response",
        ParseErrorKind::InvalidParams(_) => "invalid params",
        ParseErrorKind::InvalidResult(_) => "invalid result",
        ParseErrorKind::WrongDirection => "client-to-server method",
        _ => "other",
    };
    let method: String = e
        .method
        .as_deref()
        .unwrap_or("-")
        .chars()
        .take(40)
        .collect();
    format!("unparsable line from the proxy: {method}: {why}")
}

async fn send(link: &mut Sv1Link, m: ClientMessage) -> Result<(), ConnError> {
    link.send(m).await.map_err(|e| ConnError::Io(e.to_string()))
}

/// Notifications and server requests that can arrive at any time, applied to the miner (or,
/// before `mining.subscribe` is answered, kept in `early`).
#[derive(Debug, Default)]
struct Early {
    difficulty: Option<f64>,
    notify: Option<tower_stratum_sv1::Notify>,
    version_mask: Option<u32>,
}

/// Applies a notification or answers a server request. Returns `Ok(Some(response))` for a
/// response (the caller matches its id).
async fn on_message(
    link: &mut Sv1Link,
    m: ServerMessage,
    miner: Option<&mut Sv1Miner>,
    early: &mut Early,
) -> Result<Option<Response>, ConnError> {
    match (m, miner) {
        (ServerMessage::Response(r), _) => return Ok(Some(r)),
        (ServerMessage::Notify(n), Some(m)) => m.notify(n),
        (ServerMessage::Notify(n), None) => early.notify = Some(n),
        (ServerMessage::SetDifficulty(d), Some(m)) => m.set_difficulty(d),
        (ServerMessage::SetDifficulty(d), None) => early.difficulty = Some(d),
        (ServerMessage::SetExtranonce(e), Some(m)) => m.set_extranonce(&e),
        (ServerMessage::SetVersionMask(v), Some(m)) => m.set_version_mask(v),
        (ServerMessage::SetVersionMask(v), None) => early.version_mask = Some(v),
        (ServerMessage::Reconnect(_), _) => return Err(ConnError::Reconnect),
        (ServerMessage::GetVersion(id), _) => {
            send(link, Response::ok(id, "stratum-load").into()).await?;
        }
        (ServerMessage::Ping(id), _) => send(link, Response::pong(id).into()).await?,
        _ => {}
    }
    Ok(None)
}

/// Reads until the answer to request `id` arrives (applying what else comes), before
/// `deadline`.
async fn answer(
    link: &mut Sv1Link,
    id: u64,
    stage: &'static str,
    deadline: Instant,
    mut miner: Option<&mut Sv1Miner>,
    early: &mut Early,
    stats: &Stats,
) -> Result<Response, ConnError> {
    loop {
        let r = timeout_at(deadline, link.next())
            .await
            .map_err(|_| ConnError::Timeout(stage))?;
        let Some(m) = message(r, stage, stats)? else {
            continue;
        };
        if let Some(resp) = on_message(link, m, miner.as_deref_mut(), early).await? {
            if resp.id.as_u64() == Some(id) {
                return Ok(resp);
            }
        }
    }
}

/// Connects and sets up one miner as `spec` says, all before `deadline`. `index` (global
/// connection number) is appended to the username.
pub(crate) async fn establish(
    spec: &ConnSpec,
    sv1: &Sv1Spec,
    source: Option<IpAddr>,
    index: u64,
    deadline: Instant,
    stats: &Stats,
) -> Result<Sv1Established, ConnError> {
    let start = Instant::now();
    let stream = timeout_at(deadline, crate::conn::tcp_connect(spec.addr, source))
        .await
        .map_err(|_| ConnError::Timeout("TCP connect"))?
        .map_err(ConnError::Connect)?;
    let mut link = Framed::with_capacity(stream, Sv1ClientCodec::new(MAX_LINE), READ_BUFFER);
    *link.write_buffer_mut() = bytes::BytesMut::new();
    let mut timings = Timings {
        handshake: start.elapsed(),
        ..Timings::default()
    };
    if !spec.setup {
        return Ok(Sv1Established {
            link,
            miner: None,
            timings,
            version_rolling: false,
        });
    }

    let t = Instant::now();
    let mut early = Early::default();
    let mut mask = 0;
    if sv1.version_rolling_mask != 0 {
        let configure = tower_stratum_sv1::Configure::version_rolling(
            sv1.version_rolling_mask,
            Some(sv1.version_rolling_min_bit_count),
        );
        send(
            &mut link,
            ClientMessage::Configure(Id::from(ID_CONFIGURE), configure),
        )
        .await?;
        let r = answer(
            &mut link,
            ID_CONFIGURE,
            "mining.configure",
            deadline,
            None,
            &mut early,
            stats,
        )
        .await?;
        // An error or an unreadable result: no version rolling (not fatal, as for miners).
        mask = ConfigureResult::from_result(&r.result)
            .ok()
            .and_then(|c| c.granted_version_rolling_mask())
            .unwrap_or(0);
        // Never roll bits outside what we asked for.
        mask &= sv1.version_rolling_mask;
    }
    if let Some(m) = early.version_mask.take() {
        if mask != 0 {
            mask = m & sv1.version_rolling_mask;
        }
    }

    let subscribe = Subscribe {
        user_agent: Some(format!("stratum-load/{}", env!("CARGO_PKG_VERSION"))),
        session_id: None,
    };
    send(
        &mut link,
        ClientMessage::Subscribe(Id::from(ID_SUBSCRIBE), subscribe),
    )
    .await?;
    let r = answer(
        &mut link,
        ID_SUBSCRIBE,
        "mining.subscribe",
        deadline,
        None,
        &mut early,
        stats,
    )
    .await?;
    if let Some(e) = &r.error {
        return Err(ConnError::Sv1Refused("mining.subscribe", e.to_string()));
    }
    let sub = SubscribeResult::from_result(&r.result)
        .map_err(|_| ConnError::Malformed("mining.subscribe result"))?;
    let username = format!("{}.{index}", spec.user_identity);
    let mut miner = Sv1Miner::new(
        username.clone(),
        sub.extranonce1,
        sub.extranonce2_size,
        mask,
        spec.avoid_blocks,
    );
    if let Some(d) = early.difficulty.take() {
        miner.set_difficulty(d);
    }
    if let Some(n) = early.notify.take() {
        miner.notify(n);
    }

    if let Some(d) = sv1.suggest_difficulty {
        send(
            &mut link,
            ClientMessage::SuggestDifficulty(Id::from(ID_SUGGEST), d),
        )
        .await?;
    }
    let authorize = Authorize {
        username,
        password: Some(sv1.password.clone()),
    };
    send(
        &mut link,
        ClientMessage::Authorize(Id::from(ID_AUTHORIZE), authorize),
    )
    .await?;
    let r = answer(
        &mut link,
        ID_AUTHORIZE,
        "mining.authorize",
        deadline,
        Some(&mut miner),
        &mut early,
        stats,
    )
    .await?;
    match r.bool_result() {
        Ok(true) => {}
        Ok(false) => return Err(ConnError::Sv1Refused("mining.authorize", "false".into())),
        Err(e) => return Err(ConnError::Sv1Refused("mining.authorize", e.to_string())),
    }
    timings.setup = Some(t.elapsed());

    let t = Instant::now();
    while !miner.has_work() {
        let r = timeout_at(deadline, link.next())
            .await
            .map_err(|_| ConnError::Timeout("first mining.notify"))?;
        if let Some(m) = message(r, "first mining.notify", stats)? {
            on_message(&mut link, m, Some(&mut miner), &mut early).await?;
        }
    }
    timings.channel = Some(t.elapsed());
    Ok(Sv1Established {
        link,
        miner: Some(miner),
        timings,
        version_rolling: mask != 0,
    })
}

/// Reads (answering pings) until the phase is [`Phase::Exit`]. Returns an error if the proxy
/// closes the connection first.
pub(crate) async fn hold(
    link: &mut Sv1Link,
    mut miner: Option<&mut Sv1Miner>,
    phase: &mut watch::Receiver<Phase>,
    stats: &Stats,
) -> Result<(), ConnError> {
    let mut early = Early::default();
    loop {
        if *phase.borrow_and_update() == Phase::Exit {
            return Ok(());
        }
        tokio::select! {
            r = link.next() => {
                if let Some(m) = message(r, "idle hold", stats)? {
                    on_message(link, m, miner.as_deref_mut(), &mut early).await?;
                }
            }
            r = phase.changed() => if r.is_err() { return Ok(()); },
        }
    }
}

/// Counts one answer during the share phase (ignores answers to other requests, such as a
/// late `mining.suggest_difficulty` answer).
fn on_answer(r: &Response, pending: &mut Pending, stats: &Stats) {
    let Some(id) = r.id.as_u64() else {
        stats.count_error("answer with a non-numeric id".into());
        return;
    };
    if id < FIRST_SHARE_ID {
        return;
    }
    let Some(sent) = pending.take(id) else {
        stats.count_error("answer to an unknown or already answered share".into());
        return;
    };
    stats.latency.record(Instant::now() - sent);
    stats.acked.fetch_add(1, Relaxed);
    match verdict(r) {
        Verdict::Accepted => {
            stats.accepted.fetch_add(1, Relaxed);
        }
        Verdict::Rejected(key) => {
            stats.rejected.fetch_add(1, Relaxed);
            stats.count_error(key);
        }
    }
}

async fn on_item(
    link: &mut Sv1Link,
    r: Item,
    miner: &mut Sv1Miner,
    pending: &mut Pending,
    stats: &Stats,
) -> Result<(), ConnError> {
    let mut early = Early::default();
    if let Some(m) = message(r, "share phase", stats)? {
        if let Some(resp) = on_message(link, m, Some(miner), &mut early).await? {
            on_answer(&resp, pending, stats);
        }
    }
    Ok(())
}

/// Sends shares until the window is full (or, when `limited`, the credits are spent, or there
/// is no job), then flushes.
#[allow(clippy::too_many_arguments)]
async fn fill(
    link: &mut Sv1Link,
    miner: &mut Sv1Miner,
    spec: &ShareSpec,
    pending: &mut Pending,
    credits: &mut usize,
    limited: bool,
    next_id: &mut u64,
    stats: &Stats,
) -> Result<(), ConnError> {
    let in_flight = spec.in_flight.max(1) as usize;
    let mut wrote = false;
    while pending.len() < in_flight && (!limited || *credits > 0) {
        let Some(Found {
            submit,
            hashes,
            meets_target,
            is_block,
        }) = miner.next_share(spec.max_hashes)
        else {
            break;
        };
        stats.hashes.fetch_add(u64::from(hashes), Relaxed);
        if is_block {
            stats.blocks.fetch_add(1, Relaxed);
        }
        if !meets_target {
            stats.below_target.fetch_add(1, Relaxed);
        }
        let id = *next_id;
        *next_id += 1;
        pending.push(id, Instant::now());
        link.feed(ClientMessage::Submit(Id::from(id), submit))
            .await
            .map_err(|e| ConnError::Io(e.to_string()))?;
        stats.sent.fetch_add(1, Relaxed);
        *credits = credits.saturating_sub(1);
        wrote = true;
    }
    if wrote {
        SinkExt::<ClientMessage>::flush(link)
            .await
            .map_err(|e| ConnError::Io(e.to_string()))?;
    }
    Ok(())
}

/// Submits shares on a set-up miner: waits for [`Phase::Go`], then keeps up to
/// `spec.in_flight` shares unanswered, sending at `spec.rate_per_conn` (first send after
/// `offset`) or as fast as answers return; at [`Phase::Stop`] waits up to `spec.drain_ms` for
/// the outstanding ones, counts the rest as unacknowledged, and returns.
pub(crate) async fn submit_shares(
    link: &mut Sv1Link,
    miner: &mut Sv1Miner,
    spec: &ShareSpec,
    offset: Duration,
    phase: &mut watch::Receiver<Phase>,
    stats: &Stats,
) -> Result<(), ConnError> {
    let in_flight = spec.in_flight.max(1) as usize;
    let mut pending = Pending::with_capacity(in_flight);
    loop {
        match *phase.borrow_and_update() {
            Phase::Connecting => {}
            Phase::Go => break,
            Phase::Stop | Phase::Exit => return Ok(()),
        }
        tokio::select! {
            r = link.next() => on_item(link, r, miner, &mut pending, stats).await?,
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
    let mut next_id = FIRST_SHARE_ID;
    let result = loop {
        let limited = ticker.is_some();
        if let Err(e) = fill(
            link,
            miner,
            spec,
            &mut pending,
            &mut credits,
            limited,
            &mut next_id,
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
                if let Err(e) = on_item(link, r, miner, &mut pending, stats).await {
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
        let deadline = Instant::now() + Duration::from_millis(spec.drain_ms);
        while !pending.is_empty() {
            tokio::select! {
                r = link.next() => {
                    if let Err(e) = on_item(link, r, miner, &mut pending, stats).await {
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
    fn unparsable_lines_are_counted_under_few_keys() {
        let key = |line: &str| unparsable(&ServerMessage::parse_line(line.as_bytes()).unwrap_err());
        assert_eq!(key("{nope"), "unparsable line from the proxy: -: not JSON");
        assert_eq!(key("{nope, at another column"), key("{nope"));
        assert_eq!(
            key(r#"{"id":null,"method":"mining.notify","params":[1]}"#),
            "unparsable line from the proxy: mining.notify: invalid params"
        );
        assert_eq!(
            key(r#"{"id":1,"method":"mining.submit","params":[]}"#),
            "unparsable line from the proxy: mining.submit: client-to-server method"
        );
    }
}
