//! The pending-share ledger: shares forwarded upstream as `SubmitSharesExtended` whose Sv1
//! `mining.submit` waits for the upstream's verdict (`SubmitShares.Success` covering its
//! sequence number, or `SubmitShares.Error` naming it), a verdict timeout, and the cap on
//! shares in flight.

use super::{respond, TranslatorCore, NO_VERDICT};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tower_stratum_core::stratum_core::mining_sv2::{
    SubmitSharesErrorOwned, SubmitSharesSuccessOwned,
};
use tower_stratum_core::ConnectionId;
use tower_stratum_sv1::Sv1Actions;
use tower_stratum_sv1::{ErrorCode, Id, Response, Sv1Error};
use tracing::{debug, info};

/// A share forwarded upstream, waiting for its verdict.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PendingShare {
    /// The miner that submitted it.
    pub(super) conn: ConnectionId,
    /// Its `mining.submit` request id, answered with the verdict.
    pub(super) id: Id,
    /// When it was forwarded (monotonic clock).
    pub(super) sent: Instant,
    /// The miner's difficulty it was submitted at (for the accepted-work hashrate).
    pub(super) difficulty: f64,
}

/// Pending shares by (upstream `channel_id`, `sequence_number`).
#[derive(Debug, Default)]
pub(super) struct PendingShares {
    shares: BTreeMap<(u32, u32), PendingShare>,
}

impl PendingShares {
    /// Shares in flight.
    pub(super) fn len(&self) -> usize {
        self.shares.len()
    }

    /// Remembers a share forwarded on `channel_id` as `sequence_number`.
    pub(super) fn insert(&mut self, channel_id: u32, sequence_number: u32, share: PendingShare) {
        self.shares.insert((channel_id, sequence_number), share);
    }

    /// `SubmitShares.Success` for `channel_id` up to `last_sequence_number` (inclusive): the
    /// shares it covers, oldest first, forgotten here.
    pub(super) fn accepted(
        &mut self,
        channel_id: u32,
        last_sequence_number: u32,
    ) -> Vec<(u32, PendingShare)> {
        let keys: Vec<(u32, u32)> = self
            .shares
            .range((channel_id, 0)..=(channel_id, last_sequence_number))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.shares.remove(&k).map(|p| (k.1, p)))
            .collect()
    }

    /// `SubmitShares.Error` for (`channel_id`, `sequence_number`): the share, forgotten here.
    pub(super) fn rejected(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
    ) -> Option<PendingShare> {
        self.shares.remove(&(channel_id, sequence_number))
    }

    /// The shares forwarded at least `timeout` before `now`, forgotten here.
    pub(super) fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<PendingShare> {
        let keys: Vec<(u32, u32)> = self
            .shares
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.shares.remove(&k))
            .collect()
    }

    /// The shares of `channel_id` (closed), forgotten here.
    pub(super) fn take_channel(&mut self, channel_id: u32) -> Vec<PendingShare> {
        let keys: Vec<(u32, u32)> = self
            .shares
            .range((channel_id, 0)..=(channel_id, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.shares.remove(&k))
            .collect()
    }

    /// Every share (the upstream connection is gone), forgotten here.
    pub(super) fn take_all(&mut self) -> Vec<PendingShare> {
        std::mem::take(&mut self.shares).into_values().collect()
    }
}

/// The Sv1 error for an upstream `SubmitShares.Error` code.
pub fn map_upstream_error(code: &str) -> Sv1Error {
    let c = match code {
        "stale-share" | "invalid-job-id" => ErrorCode::JobNotFound,
        "duplicate-share" => ErrorCode::DuplicateShare,
        "difficulty-too-low" => ErrorCode::LowDifficultyShare,
        "invalid-user-identity" | "unknown-user" | "unauthorized" => ErrorCode::UnauthorizedWorker,
        _ => ErrorCode::Other,
    };
    Sv1Error::new(c.code(), format!("{} (upstream: {code})", c.message()))
}

impl TranslatorCore {
    /// `SubmitShares.Success`: every pending share it covers is answered `true`.
    pub(super) fn shares_accepted(
        &mut self,
        m: SubmitSharesSuccessOwned,
        now: Instant,
    ) -> Sv1Actions {
        let shares = self.pending.accepted(m.channel_id, m.last_sequence_number);
        if shares.len() != m.new_submits_accepted_count as usize {
            debug!(
                channel_id = m.channel_id,
                pending = shares.len(),
                accepted = m.new_submits_accepted_count,
                "SubmitShares.Success count differs from the shares it covers"
            );
        }
        let mut out = Sv1Actions::none();
        for (sequence_number, p) in shares {
            self.stats.shares_accepted += 1;
            self.accepted_window.push_back((now, p.difficulty));
            debug!(connection = %p.conn, channel_id = m.channel_id, sequence_number, "share accepted upstream");
            if let Some(a) = respond(p.conn, Response::ok(p.id, true)) {
                out.push(a);
            }
        }
        out
    }

    /// `SubmitShares.Error`: the share it names is answered with the mapped Sv1 error.
    pub(super) fn share_rejected(&mut self, m: SubmitSharesErrorOwned) -> Sv1Actions {
        let code = m.error_code.as_utf8_or_hex();
        let Some(p) = self.pending.rejected(m.channel_id, m.sequence_number) else {
            debug!(
                channel_id = m.channel_id,
                sequence_number = m.sequence_number,
                "error for no pending share"
            );
            return Sv1Actions::none();
        };
        info!(connection = %p.conn, channel_id = m.channel_id, sequence_number = m.sequence_number, error_code = %code, "share rejected upstream");
        self.reject(&format!("upstream:{code}"));
        respond(p.conn, Response::error(p.id, map_upstream_error(&code)))
            .map(Sv1Actions::from)
            .unwrap_or_default()
    }

    /// Answers `shares` with `[20, message]`, counted as rejected for `reason`.
    pub(super) fn answer_unavailable(
        &mut self,
        shares: Vec<PendingShare>,
        reason: &str,
        message: &str,
    ) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        for p in shares {
            self.reject(reason);
            if let Some(a) = respond(p.conn, Response::error(p.id, Sv1Error::new(20, message))) {
                out.push(a);
            }
        }
        out
    }

    /// Shares without a verdict within `submit_timeout`: answered `[20, NO_VERDICT]`.
    pub(super) fn verdict_timeouts(&mut self, now: Instant) -> Sv1Actions {
        let expired = self.pending.expired(now, self.config.submit_timeout);
        self.answer_unavailable(expired, "no-verdict", NO_VERDICT)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn share(n: u64, sent: Instant) -> PendingShare {
        PendingShare {
            conn: ConnectionId(n),
            id: Id::from(n),
            sent,
            difficulty: 1.0,
        }
    }

    #[test]
    fn success_covers_its_channel_up_to_the_last_sequence_number_only() {
        let now = Instant::now();
        let mut p = PendingShares::default();
        for seq in 0..4 {
            p.insert(1, seq, share(u64::from(seq), now));
        }
        p.insert(2, 0, share(9, now));
        let accepted: Vec<u32> = p.accepted(1, 2).into_iter().map(|(s, _)| s).collect();
        assert_eq!(accepted, vec![0, 1, 2]);
        assert_eq!(p.len(), 2, "channel 1 seq 3 and channel 2 seq 0 remain");
        assert!(p.accepted(1, 2).is_empty(), "answered once");
        assert_eq!(p.rejected(2, 0).map(|s| s.conn), Some(ConnectionId(9)));
        assert_eq!(p.rejected(2, 0), None);
    }

    #[test]
    fn shares_expire_after_the_timeout_and_not_before() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut p = PendingShares::default();
        p.insert(1, 0, share(0, t0));
        p.insert(1, 1, share(1, t0 + Duration::from_secs(10)));
        assert!(p.expired(t0 + Duration::from_secs(29), timeout).is_empty());
        let gone = p.expired(t0 + timeout, timeout);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].conn, ConnectionId(0));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_closed_channel_takes_its_shares_and_a_lost_upstream_takes_all() {
        let now = Instant::now();
        let mut p = PendingShares::default();
        p.insert(1, u32::MAX, share(1, now));
        p.insert(2, 5, share(2, now));
        p.insert(3, 0, share(3, now));
        assert_eq!(p.take_channel(1).len(), 1, "up to sequence number u32::MAX");
        assert_eq!(p.len(), 2);
        assert_eq!(p.take_all().len(), 2);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn upstream_error_codes_map_to_the_sv1_codes() {
        assert_eq!(map_upstream_error("stale-share").code, 21);
        assert_eq!(map_upstream_error("invalid-job-id").code, 21);
        assert_eq!(map_upstream_error("duplicate-share").code, 22);
        assert_eq!(map_upstream_error("difficulty-too-low").code, 23);
        assert_eq!(map_upstream_error("unknown-user").code, 24);
        let other = map_upstream_error("weird");
        assert_eq!(other.code, 20);
        assert!(other.message.contains("upstream: weird"));
    }
}
