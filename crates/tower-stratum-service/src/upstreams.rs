//! The policy over a client's ordered list of upstreams for one subprotocol, sans-IO: which
//! upstream the next attempt goes to, when to fail over to the next one, when to probe the
//! primary and fail back to it, how long to wait before the next attempt, when to give up.
//! Time is passed in; the tokio shell (`client.rs`) connects, probes and sleeps.

use crate::config::{Backoff, ClientConfig};
use std::time::{Duration, Instant};
use tower_stratum_core::{ConnectionId, Subprotocol};

/// Why the client moved to the upstream it is on ([`ActiveUpstream::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwitchReason {
    /// The client started: the first upstream of the list (the primary).
    Start,
    /// [`ClientConfig::failover_attempts`] consecutive attempts on the previous upstream
    /// failed; this is the next one in the list (after the last comes the first again).
    FailOver,
    /// The client was on a backup and a probe of the primary connected
    /// ([`ClientConfig::failback_interval`]): the backup connection was closed and this is the
    /// primary again.
    FailBack,
}

impl std::fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchReason::Start => "start",
            SwitchReason::FailOver => "fail-over",
            SwitchReason::FailBack => "fail-back",
        })
    }
}

/// The upstream a client's subprotocol is on: connected to, or trying to connect to
/// ([`crate::ClientHandle::watch_upstream`]).
///
/// A new value is published before every connection attempt, so `connection` is the id the
/// connection of that attempt has; `index`, `address` and `reason` change only at a switch
/// (and `address` at a spec 3.6.5 `Reconnect` redirect). A handler learns which upstream a new
/// connection is on by comparing `connection` with `ConnectionContext::id` in
/// `on_connection_added`: equal means `index` is that connection's upstream; different means a
/// later attempt has already started, so that connection has ended (its
/// `on_connection_removed` follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveUpstream {
    /// The subprotocol.
    pub protocol: Subprotocol,
    /// Position in the configured list ([`ClientConfig::endpoints`]); 0 is the primary.
    pub index: usize,
    /// `host:port` of the attempt: the configured address, or the one a `Reconnect` (spec
    /// 3.6.5) sent the client to.
    pub address: String,
    /// Id of the connection of the latest attempt.
    pub connection: ConnectionId,
    /// Why the client is on this upstream.
    pub reason: SwitchReason,
}

/// What to do after an attempt failed or a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Attempt again on [`Upstreams::current`] after `delay` (before jitter); `switched` when
    /// that is another upstream than the last attempt's.
    Retry {
        delay: Duration,
        switched: Option<SwitchReason>,
    },
    /// Stop: reconnection is disabled, or `max_attempts` is reached. `failures`: consecutive
    /// failed attempts so far.
    GiveUp { failures: u32 },
}

/// The policy's state for one subprotocol's list of `len` upstreams.
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    len: usize,
    failover_attempts: u32,
    failback_interval: Option<Duration>,
    backoff: Option<Backoff>,
    current: usize,
    /// Consecutive failed attempts on `current`.
    here: u32,
    /// Consecutive failed attempts since the last established connection, on any upstream.
    total: u32,
    /// When to probe the primary next (only while on a backup with fail-back enabled).
    probe_at: Option<Instant>,
}

impl Upstreams {
    /// Starts on the primary (index 0) of `len` upstreams (at least 1).
    pub(crate) fn new(len: usize, cfg: &ClientConfig) -> Self {
        Self {
            len: len.max(1),
            failover_attempts: cfg.failover_attempts.max(1),
            failback_interval: cfg.failback_interval,
            backoff: cfg.reconnect,
            current: 0,
            here: 0,
            total: 0,
            probe_at: None,
        }
    }

    /// The upstream of the next attempt.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// Consecutive failed attempts, on any upstream, after which the client gives up: per
    /// full round of the list (see [`Backoff::max_attempts`]).
    fn limit(&self) -> Option<u32> {
        let m = self.backoff?.max_attempts?;
        Some(if self.len == 1 {
            m
        } else {
            m.saturating_mul(self.failover_attempts)
                .saturating_mul(u32::try_from(self.len).unwrap_or(u32::MAX))
        })
    }

    /// An attempt on [`Self::current`] got its connection established.
    pub(crate) fn established(&mut self) {
        self.here = 0;
        self.total = 0;
    }

    /// The upstream sent `Reconnect` (spec 3.6.5): the next attempt goes at once, to the new
    /// address, counted afresh.
    pub(crate) fn redirected(&mut self) {
        self.here = 0;
        self.total = 0;
    }

    /// An established connection ended (not asked by us): reconnect to the same upstream after
    /// the first backoff delay.
    pub(crate) fn ended(&self) -> Next {
        match self.backoff {
            None => Next::GiveUp { failures: 0 },
            Some(b) => Next::Retry {
                delay: b.delay(0),
                switched: None,
            },
        }
    }

    /// An attempt on [`Self::current`] failed before its connection was established (TCP,
    /// handshake or SetupConnection), at `now`.
    pub(crate) fn failed(&mut self, now: Instant) -> Next {
        self.here = self.here.saturating_add(1);
        self.total = self.total.saturating_add(1);
        let Some(backoff) = self.backoff else {
            return Next::GiveUp {
                failures: self.total,
            };
        };
        if self.limit().is_some_and(|l| self.total >= l) {
            return Next::GiveUp {
                failures: self.total,
            };
        }
        let mut switched = None;
        if self.len > 1 && self.here >= self.failover_attempts {
            self.switch_to((self.current + 1) % self.len, now);
            switched = Some(SwitchReason::FailOver);
        }
        Next::Retry {
            delay: backoff.delay(self.total - 1),
            switched,
        }
    }

    /// When to probe the primary: while on a backup with fail-back enabled.
    pub(crate) fn probe_at(&self) -> Option<Instant> {
        self.probe_at
    }

    /// A probe of the primary at `now` connected (`ok`) or not. `true`: fail back (the policy
    /// is now on the primary; close the backup connection and attempt the primary at once).
    /// `false`: the next probe is one interval later.
    pub(crate) fn probe_done(&mut self, ok: bool, now: Instant) -> bool {
        if self.current == 0 {
            self.probe_at = None;
            return false;
        }
        if ok {
            self.switch_to(0, now);
            true
        } else {
            self.probe_at = self.failback_interval.map(|i| now + i);
            false
        }
    }

    fn switch_to(&mut self, index: usize, now: Instant) {
        let was_primary = self.current == 0;
        self.current = index;
        self.here = 0;
        if index == 0 {
            self.probe_at = None;
        } else if was_primary {
            self.probe_at = self.failback_interval.map(|i| now + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg(failover: u32, failback: Option<Duration>, max_attempts: Option<u32>) -> ClientConfig {
        ClientConfig {
            failover_attempts: failover,
            failback_interval: failback,
            reconnect: Some(Backoff {
                initial: S,
                max: 8 * S,
                multiplier: 2.0,
                max_attempts,
            }),
            ..ClientConfig::default()
        }
    }

    fn retry(delay: Duration, switched: Option<SwitchReason>) -> Next {
        Next::Retry { delay, switched }
    }

    #[test]
    fn fails_over_after_n_consecutive_failures_and_wraps_around() {
        let t = Instant::now();
        let mut u = Upstreams::new(3, &cfg(2, None, None));
        assert_eq!(u.current(), 0);
        assert_eq!(u.failed(t), retry(S, None));
        assert_eq!(u.failed(t), retry(2 * S, Some(SwitchReason::FailOver)));
        assert_eq!(u.current(), 1);
        assert_eq!(u.failed(t), retry(4 * S, None));
        assert_eq!(u.failed(t), retry(8 * S, Some(SwitchReason::FailOver)));
        assert_eq!(u.current(), 2);
        assert_eq!(u.failed(t), retry(8 * S, None), "capped at max");
        assert_eq!(u.failed(t), retry(8 * S, Some(SwitchReason::FailOver)));
        assert_eq!(u.current(), 0, "after the last comes the first");
    }

    #[test]
    fn an_established_connection_resets_the_counts() {
        let t = Instant::now();
        let mut u = Upstreams::new(2, &cfg(3, None, None));
        assert_eq!(u.failed(t), retry(S, None));
        assert_eq!(u.failed(t), retry(2 * S, None));
        u.established();
        assert_eq!(u.ended(), retry(S, None), "reconnect after the first delay");
        // Three more failures are needed to fail over, and the backoff starts again.
        assert_eq!(u.failed(t), retry(S, None));
        assert_eq!(u.failed(t), retry(2 * S, None));
        assert_eq!(u.failed(t), retry(4 * S, Some(SwitchReason::FailOver)));
        assert_eq!(u.current(), 1);
    }

    #[test]
    fn a_redirect_resets_the_counts() {
        let t = Instant::now();
        let mut u = Upstreams::new(2, &cfg(2, None, None));
        assert_eq!(u.failed(t), retry(S, None));
        u.redirected();
        assert_eq!(u.failed(t), retry(S, None));
        assert_eq!(u.current(), 0);
    }

    #[test]
    fn a_single_upstream_is_retried_forever() {
        let t = Instant::now();
        let mut u = Upstreams::new(1, &cfg(3, Some(S), None));
        for _ in 0..1000 {
            assert!(matches!(u.failed(t), Next::Retry { switched: None, .. }));
            assert_eq!(u.current(), 0);
            assert_eq!(u.probe_at(), None, "never probes: it is on the primary");
        }
    }

    #[test]
    fn max_attempts_counts_attempts_for_one_upstream_and_rounds_for_a_list() {
        let t = Instant::now();
        let mut one = Upstreams::new(1, &cfg(3, None, Some(2)));
        assert_eq!(one.failed(t), retry(S, None));
        assert_eq!(one.failed(t), Next::GiveUp { failures: 2 });

        // Two upstreams, fail over after 2: a round is 4 attempts; 2 rounds = 8.
        let mut two = Upstreams::new(2, &cfg(2, None, Some(2)));
        for _ in 0..7 {
            assert!(matches!(two.failed(t), Next::Retry { .. }));
        }
        assert_eq!(two.failed(t), Next::GiveUp { failures: 8 });
    }

    #[test]
    fn reconnection_disabled_gives_up_at_once() {
        let t = Instant::now();
        let c = ClientConfig {
            reconnect: None,
            ..cfg(1, None, None)
        };
        let mut u = Upstreams::new(2, &c);
        assert_eq!(u.failed(t), Next::GiveUp { failures: 1 });
        assert_eq!(u.ended(), Next::GiveUp { failures: 0 });
    }

    #[test]
    fn probes_the_primary_while_on_a_backup_and_fails_back_when_it_answers() {
        let t = Instant::now();
        let i = 60 * S;
        let mut u = Upstreams::new(3, &cfg(1, Some(i), None));
        assert_eq!(u.probe_at(), None, "on the primary: no probe");
        assert_eq!(u.failed(t), retry(S, Some(SwitchReason::FailOver)));
        assert_eq!(
            u.probe_at(),
            Some(t + i),
            "one interval after leaving the primary"
        );
        // Moving from one backup to another keeps the schedule.
        assert_eq!(u.failed(t + S), retry(2 * S, Some(SwitchReason::FailOver)));
        assert_eq!(u.current(), 2);
        assert_eq!(u.probe_at(), Some(t + i));
        // A probe that fails: the next one an interval later, still on the backup.
        assert!(!u.probe_done(false, t + i));
        assert_eq!(u.probe_at(), Some(t + 2 * i));
        assert_eq!(u.current(), 2);
        // A probe that connects: back on the primary, no more probes. The primary gets its
        // own `failover_attempts`; the backoff goes on growing (no connection yet).
        assert!(u.probe_done(true, t + 2 * i));
        assert_eq!(u.current(), 0);
        assert_eq!(u.probe_at(), None);
        assert_eq!(
            u.failed(t + 3 * i),
            retry(4 * S, Some(SwitchReason::FailOver))
        );
        assert_eq!(u.current(), 1);
    }

    #[test]
    fn rotation_back_to_the_primary_stops_probing() {
        let t = Instant::now();
        let mut u = Upstreams::new(2, &cfg(1, Some(S), None));
        assert!(matches!(u.failed(t), Next::Retry { .. }));
        assert!(u.probe_at().is_some());
        assert!(matches!(u.failed(t), Next::Retry { .. }));
        assert_eq!(u.current(), 0);
        assert_eq!(u.probe_at(), None);
        assert!(
            !u.probe_done(true, t),
            "a late probe result on the primary is no switch"
        );
    }

    #[test]
    fn fail_back_disabled_never_probes() {
        let t = Instant::now();
        let mut u = Upstreams::new(2, &cfg(1, None, None));
        assert!(matches!(u.failed(t), Next::Retry { .. }));
        assert_eq!(u.current(), 1);
        assert_eq!(u.probe_at(), None);
    }

    #[test]
    fn failover_attempts_of_zero_is_taken_as_one() {
        let t = Instant::now();
        let mut u = Upstreams::new(2, &cfg(0, None, None));
        assert_eq!(u.failed(t), retry(S, Some(SwitchReason::FailOver)));
    }
}
