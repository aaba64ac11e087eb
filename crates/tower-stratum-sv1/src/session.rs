//! The sans-IO state machine of one Sv1 server connection: the order of the Sv1 handshake,
//! parse failures, and the setup and inactivity timers. Time is passed in; nothing here
//! reads a clock, sleeps or does IO.

use crate::handler::{Sv1CloseReason, Sv1Timer};
use crate::{ClientMessage, ErrorCode, Id, Response, ServerMessage, Sv1Error, Sv1ParseError};
use std::time::{Duration, Instant};

/// Deadlines and bounds of an Sv1 server session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sv1SessionConfig {
    /// From accept until `mining.subscribe` was answered with a result and one
    /// `mining.authorize` with `true`; `None` disables. Default 30 s.
    pub setup_timeout: Option<Duration>,
    /// Close a connection that sent no line for this long; `None` disables. Default 900 s.
    pub inactivity_timeout: Option<Duration>,
    /// Most workers one connection may authorize; further `mining.authorize` requests get
    /// error 20. Default 64.
    pub max_workers: usize,
    /// Most `mining.subscribe`/`mining.authorize` requests awaiting the handler's answer at
    /// once; more get error 20. Default 16.
    pub max_pending: usize,
}

impl Default for Sv1SessionConfig {
    fn default() -> Self {
        Self {
            setup_timeout: Some(Duration::from_secs(30)),
            inactivity_timeout: Some(Duration::from_secs(900)),
            max_workers: 64,
            max_pending: 16,
        }
    }
}

/// What to do with one received line.
#[derive(Debug, Clone, PartialEq)]
pub enum Sv1Inbound {
    /// Hand it to the handler.
    Deliver(ClientMessage),
    /// Answer it at once with this response; the handler does not see it.
    Reply(Response),
    /// Nothing: a notification or response that cannot be used.
    Ignore,
    /// Close the connection.
    Close(Sv1CloseReason),
}

/// The message of the error-20 answer to a second `mining.subscribe`.
pub const ALREADY_SUBSCRIBED: &str = "Already subscribed";
/// The message of the error-20 answer when too many requests await the handler.
pub const TOO_MANY_PENDING: &str = "Too many pending requests";
/// The message of the error-20 answer when a connection authorizes too many workers.
pub const TOO_MANY_WORKERS: &str = "Too many workers";

/// One Sv1 server connection's protocol state.
///
/// Rules (each answer goes to the request's id; requests with id `null` are never answered):
///
/// | line | when | outcome |
/// |---|---|---|
/// | not JSON, not an object, unusable id | always | close ([`Sv1CloseReason::InvalidLine`]) |
/// | a request with malformed params | always | `[20, "Other/Unknown", null]` ([`Sv1ParseError::reply`]) |
/// | a malformed response or notification | always | ignored |
/// | `mining.subscribe` | already subscribed (or one pending) | `[20, "Already subscribed", null]` |
/// | `mining.authorize` | before `mining.subscribe` | `[25, "Not subscribed", null]` |
/// | `mining.submit` | before a successful subscribe | `[25, "Not subscribed", null]` |
/// | `mining.submit` | worker not authorized on this connection | `[24, "Unauthorized worker", null]` |
/// | anything else | always | delivered |
///
/// A subscribe counts as successful when the handler's response to it has no error and a
/// non-`null` result; an authorize when its response is `true`. Responses are seen through
/// [`Sv1ServerSession::on_send`], whether immediate or deferred.
///
/// Timers: setup (from creation until subscribed and one worker authorized) and inactivity
/// (since the last line received). [`poll_timeout`](Self::poll_timeout) gives the earliest.
#[derive(Debug, Clone)]
pub struct Sv1ServerSession {
    cfg: Sv1SessionConfig,
    subscribed: bool,
    subscribe_pending: Vec<Id>,
    authorize_pending: Vec<(Id, String)>,
    workers: Vec<String>,
    setup_deadline: Option<Instant>,
    last_received: Instant,
}

impl Sv1ServerSession {
    /// A session for a connection accepted at `now`.
    pub fn new(cfg: Sv1SessionConfig, now: Instant) -> Self {
        Self {
            cfg,
            subscribed: false,
            subscribe_pending: Vec::new(),
            authorize_pending: Vec::new(),
            workers: Vec::new(),
            setup_deadline: cfg.setup_timeout.map(|t| now + t),
            last_received: now,
        }
    }

    /// Whether `mining.subscribe` was answered successfully.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// The workers authorized on this connection, in order.
    pub fn workers(&self) -> &[String] {
        &self.workers
    }

    /// Classifies one decoded line received at `now`.
    pub fn on_line(
        &mut self,
        now: Instant,
        line: Result<ClientMessage, Sv1ParseError>,
    ) -> Sv1Inbound {
        self.last_received = now;
        let msg = match line {
            Ok(m) => m,
            Err(e) => {
                return match (&e.id, &e.method) {
                    (None, _) => Sv1Inbound::Close(Sv1CloseReason::InvalidLine(e.to_string())),
                    _ => match e.reply() {
                        Some(r) => Sv1Inbound::Reply(r),
                        None => Sv1Inbound::Ignore,
                    },
                }
            }
        };
        let refuse = |id: &Id, err: Sv1Error| {
            if id.is_null() {
                Sv1Inbound::Ignore
            } else {
                Sv1Inbound::Reply(Response::error(id.clone(), err))
            }
        };
        match &msg {
            ClientMessage::Subscribe(id, _) => {
                if self.subscribed || !self.subscribe_pending.is_empty() {
                    return refuse(id, Sv1Error::new(20, ALREADY_SUBSCRIBED));
                }
                self.subscribe_pending.push(id.clone());
            }
            ClientMessage::Authorize(id, a) => {
                if !self.subscribed && self.subscribe_pending.is_empty() {
                    return refuse(id, ErrorCode::NotSubscribed.into());
                }
                if self.workers.len() >= self.cfg.max_workers && !self.workers.contains(&a.username)
                {
                    return refuse(id, Sv1Error::new(20, TOO_MANY_WORKERS));
                }
                if self.authorize_pending.len() >= self.cfg.max_pending {
                    return refuse(id, Sv1Error::new(20, TOO_MANY_PENDING));
                }
                self.authorize_pending
                    .push((id.clone(), a.username.clone()));
            }
            ClientMessage::Submit(id, s) => {
                if !self.subscribed {
                    return refuse(id, ErrorCode::NotSubscribed.into());
                }
                if !self.workers.contains(&s.worker_name) {
                    return refuse(id, ErrorCode::UnauthorizedWorker.into());
                }
            }
            _ => {}
        }
        Sv1Inbound::Deliver(msg)
    }

    /// Sees a message about to be written to the peer: answers to pending `mining.subscribe`
    /// and `mining.authorize` requests update the handshake state.
    pub fn on_send(&mut self, msg: &ServerMessage) {
        let ServerMessage::Response(r) = msg else {
            return;
        };
        let success = r.error.is_none() && !r.result.is_null();
        let sub = self.subscribe_pending.iter().position(|i| *i == r.id);
        let auth = self.authorize_pending.iter().position(|(i, _)| *i == r.id);
        // The same id may be pending for both (a peer reusing ids): a subscribe result is
        // an array, an authorize result a boolean.
        let is_subscribe = match (sub, auth) {
            (Some(_), Some(_)) => r.result.is_array() || r.result.is_null(),
            (Some(_), None) => true,
            _ => false,
        };
        if is_subscribe {
            if let Some(i) = sub {
                self.subscribe_pending.remove(i);
            }
            if success {
                self.subscribed = true;
            }
        } else if let Some(i) = auth {
            let (_, user) = self.authorize_pending.remove(i);
            if r.bool_result() == Ok(true) && !self.workers.contains(&user) {
                self.workers.push(user);
            }
        }
        if self.subscribed && !self.workers.is_empty() {
            self.setup_deadline = None;
        }
    }

    /// The earliest deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inactivity = self.cfg.inactivity_timeout.map(|t| self.last_received + t);
        match (self.setup_deadline, inactivity) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer that expired at `now`, if one did: the connection must close.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Sv1CloseReason> {
        if self.setup_deadline.is_some_and(|d| now >= d) {
            return Some(Sv1CloseReason::TimedOut(Sv1Timer::Setup));
        }
        if self
            .cfg
            .inactivity_timeout
            .is_some_and(|t| now >= self.last_received + t)
        {
            return Some(Sv1CloseReason::TimedOut(Sv1Timer::Inactivity));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::SubscribeResult;

    fn line(s: &str) -> Result<ClientMessage, Sv1ParseError> {
        ClientMessage::parse_line(s.as_bytes())
    }

    fn code(i: &Sv1Inbound) -> Option<i64> {
        match i {
            Sv1Inbound::Reply(r) => r.error.as_ref().map(|e| e.code),
            _ => None,
        }
    }

    fn subscribe_ok(s: &mut Sv1ServerSession, id: u64) {
        let r = SubscribeResult {
            subscriptions: vec![],
            extranonce1: vec![1, 2],
            extranonce2_size: 4,
        };
        s.on_send(&ServerMessage::Response(Response::ok(
            id.into(),
            r.to_value(),
        )));
    }

    #[test]
    fn handshake_order_is_enforced() {
        let t0 = Instant::now();
        let mut s = Sv1ServerSession::new(Sv1SessionConfig::default(), t0);
        let submit = r#"{"id":5,"method":"mining.submit","params":["w","1","00000000","504e86ed","b2957c02"]}"#;
        assert_eq!(code(&s.on_line(t0, line(submit))), Some(25));
        let auth = r#"{"id":2,"method":"mining.authorize","params":["w","x"]}"#;
        assert_eq!(code(&s.on_line(t0, line(auth))), Some(25));
        let sub = r#"{"id":1,"method":"mining.subscribe","params":[]}"#;
        assert!(matches!(s.on_line(t0, line(sub)), Sv1Inbound::Deliver(_)));
        // A second subscribe while the first is pending, and after it succeeded.
        assert_eq!(code(&s.on_line(t0, line(sub))), Some(20));
        // Authorize pipelined behind a pending subscribe is delivered.
        assert!(matches!(s.on_line(t0, line(auth)), Sv1Inbound::Deliver(_)));
        subscribe_ok(&mut s, 1);
        assert!(s.is_subscribed());
        assert_eq!(code(&s.on_line(t0, line(sub))), Some(20));
        // Submit before the worker is authorized.
        assert_eq!(code(&s.on_line(t0, line(submit))), Some(24));
        s.on_send(&ServerMessage::Response(Response::ok(2u64.into(), true)));
        assert_eq!(s.workers(), ["w"]);
        assert!(matches!(
            s.on_line(t0, line(submit)),
            Sv1Inbound::Deliver(_)
        ));
        // Another worker name is not authorized.
        let other = submit.replace("\"w\"", "\"v\"");
        assert_eq!(code(&s.on_line(t0, line(&other))), Some(24));
    }

    #[test]
    fn refused_authorize_does_not_authorize() {
        let t0 = Instant::now();
        let mut s = Sv1ServerSession::new(Sv1SessionConfig::default(), t0);
        s.on_line(
            t0,
            line(r#"{"id":1,"method":"mining.subscribe","params":[]}"#),
        );
        subscribe_ok(&mut s, 1);
        s.on_line(
            t0,
            line(r#"{"id":2,"method":"mining.authorize","params":["w"]}"#),
        );
        s.on_send(&ServerMessage::Response(Response::error(
            2u64.into(),
            ErrorCode::UnauthorizedWorker,
        )));
        assert!(s.workers().is_empty());
        assert!(s.poll_timeout().is_some());
    }

    #[test]
    fn parse_failures_map_to_error_20_ignore_or_close() {
        let t0 = Instant::now();
        let mut s = Sv1ServerSession::new(Sv1SessionConfig::default(), t0);
        assert!(matches!(
            s.on_line(t0, line("not json")),
            Sv1Inbound::Close(Sv1CloseReason::InvalidLine(_))
        ));
        assert!(matches!(
            s.on_line(t0, line("[1,2]")),
            Sv1Inbound::Close(Sv1CloseReason::InvalidLine(_))
        ));
        let bad = r#"{"id":"x","method":"mining.submit","params":[1]}"#;
        match s.on_line(t0, line(bad)) {
            Sv1Inbound::Reply(r) => {
                assert_eq!(r.id, Id::from("x"));
                assert_eq!(r.error.unwrap().code, 20);
            }
            other => panic!("{other:?}"),
        }
        let notification = r#"{"id":null,"method":"mining.submit","params":[1]}"#;
        assert_eq!(s.on_line(t0, line(notification)), Sv1Inbound::Ignore);
    }

    #[test]
    fn setup_and_inactivity_timers() {
        let t0 = Instant::now();
        let cfg = Sv1SessionConfig {
            setup_timeout: Some(Duration::from_secs(10)),
            inactivity_timeout: Some(Duration::from_secs(60)),
            ..Sv1SessionConfig::default()
        };
        let mut s = Sv1ServerSession::new(cfg, t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            s.handle_timeout(t0 + Duration::from_secs(10)),
            Some(Sv1CloseReason::TimedOut(Sv1Timer::Setup))
        );
        let mut s = Sv1ServerSession::new(cfg, t0);
        s.on_line(
            t0,
            line(r#"{"id":1,"method":"mining.subscribe","params":[]}"#),
        );
        subscribe_ok(&mut s, 1);
        s.on_line(
            t0,
            line(r#"{"id":2,"method":"mining.authorize","params":["w"]}"#),
        );
        s.on_send(&ServerMessage::Response(Response::ok(2u64.into(), true)));
        let t1 = t0 + Duration::from_secs(5);
        s.on_line(t1, line(r#"{"id":3,"method":"mining.ping2","params":[]}"#));
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(60)));
        assert_eq!(s.handle_timeout(t1 + Duration::from_secs(30)), None);
        assert_eq!(
            s.handle_timeout(t1 + Duration::from_secs(60)),
            Some(Sv1CloseReason::TimedOut(Sv1Timer::Inactivity))
        );
    }
}
