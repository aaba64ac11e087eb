//! Difficulty: the bounds a miner's difficulty is clamped to (configured bounds, the miner's
//! own minimum, its channel's upstream floor, powers of two), vardiff with the fast path and
//! the first-share search, `mining.suggest_difficulty`, and the debounced `UpdateChannel`.
//!
//! Units: a difficulty is Bitcoin's share difficulty (difficulty 1 = `2^32` hashes per share
//! on average); a hashrate is hashes per second; a target is the 256-bit share target.

use super::miners::Miner;
use super::{send, to_upstream, TranslatorCore};
use crate::config::TranslatorConfig;
use std::time::{Duration, Instant};
use tower_stratum_core::share_math::{
    difficulty_to_target, target_to_difficulty, HASHES_PER_DIFFICULTY_1,
};
use tower_stratum_core::stratum_core::binary_sv2::U256Owned;
use tower_stratum_core::stratum_core::mining_sv2::UpdateChannelOwned;
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::ConnectionId;
use tower_stratum_sv1::work::floor_power_of_two;
use tower_stratum_sv1::Sv1Actions;
use tower_stratum_sv1::{ServerMessage, Target};
use tracing::debug;

/// Fast convergence: shares meeting a miner's current target needed before its hashrate is
/// estimated from them (8 shares: about 35 % relative error).
const FAST_MIN_SHARES: u32 = 8;
/// Fast convergence: the share rate, as a multiple of `shares_per_minute`, at or above which
/// the translator jumps to the estimate instead of waiting for vardiff's window.
const FAST_FACTOR: f64 = 4.0;
/// Fast convergence: the shortest measuring time.
const FAST_MIN_TIME: Duration = Duration::from_secs(1);
/// Fast convergence, refinement: with at least this many shares (a ~25 % error) a smaller
/// excess, [`FAST_REFINE_FACTOR`], is enough (an estimate taken during a flood can be low).
const FAST_REFINE_SHARES: u32 = 16;
/// Fast convergence, refinement: the share-rate multiple with [`FAST_REFINE_SHARES`].
const FAST_REFINE_FACTOR: f64 = 1.6;
/// First-share search: the divisor of the hashrate (so of the difficulty) at each step.
const SEARCH_STEP: f32 = 16.0;
/// `UpdateChannel` is sent when the hashrate moved by more than this fraction of the last
/// one reported.
const UPDATE_CHANNEL_CHANGE: f32 = 0.2;

/// The lowest difficulty whose target is not easier than `target` (the upstream channel's
/// floor: a share at that difficulty meets the channel's target); `f64::MAX` for a zero
/// target.
pub(super) fn floor_difficulty(target: &Target) -> f64 {
    let mut d = target_to_difficulty(target);
    if !d.is_finite() || d <= 0.0 {
        return f64::MAX;
    }
    let mut eps = 1e-12;
    for _ in 0..40 {
        match difficulty_to_target(d) {
            Some(t) if t <= *target => return d,
            _ => {}
        }
        d *= 1.0 + eps;
        eps *= 4.0;
    }
    d
}

/// Clamps a wanted difficulty to the configured bounds, the miner's minimum and the channel's
/// `floor`; rounds down to a power of two if configured (up, if that falls below the floor).
pub(super) fn clamp_difficulty(
    config: &TranslatorConfig,
    wanted: f64,
    miner_min: Option<f64>,
    floor: f64,
) -> f64 {
    let mut difficulty = wanted.clamp(config.min_difficulty, config.max_difficulty);
    if let Some(min) = miner_min {
        difficulty = difficulty.max(min);
    }
    if config.power_of_two_difficulty {
        difficulty = floor_power_of_two(difficulty);
    }
    if difficulty < floor {
        difficulty = floor;
        if config.power_of_two_difficulty && difficulty >= 1.0 {
            let p = floor_power_of_two(difficulty);
            difficulty = if p < floor { p * 2.0 } else { p };
        }
    }
    difficulty
}

/// The difficulty at which `hashrate` (H/s) finds `shares_per_minute`.
pub(super) fn hashrate_to_difficulty(config: &TranslatorConfig, hashrate: f32) -> f64 {
    f64::from(hashrate) * 60.0 / f64::from(config.shares_per_minute) / HASHES_PER_DIFFICULTY_1
}

/// The hashrate (H/s) that finds `shares_per_minute` at `difficulty`.
pub(super) fn difficulty_to_hashrate(config: &TranslatorConfig, difficulty: f64) -> f32 {
    (difficulty * HASHES_PER_DIFFICULTY_1 * f64::from(config.shares_per_minute) / 60.0) as f32
}

/// Fast convergence: the hashrate (H/s) shown by `shares` shares at `difficulty` since
/// `since`, when they came at least [`FAST_FACTOR`] times faster than `shares_per_minute` (at
/// least [`FAST_MIN_SHARES`] of them, over at least [`FAST_MIN_TIME`]), or
/// [`FAST_REFINE_FACTOR`] times faster with at least [`FAST_REFINE_SHARES`]; `None` otherwise.
pub(super) fn fast_estimate(
    shares: u32,
    difficulty: f64,
    since: Instant,
    now: Instant,
    shares_per_minute: f32,
) -> Option<f32> {
    let elapsed = now.saturating_duration_since(since);
    if shares < FAST_MIN_SHARES || elapsed < FAST_MIN_TIME {
        return None;
    }
    let secs = elapsed.as_secs_f64();
    let ratio = f64::from(shares) * 60.0 / secs / f64::from(shares_per_minute);
    let far = ratio >= FAST_FACTOR;
    let clearly = shares >= FAST_REFINE_SHARES && ratio >= FAST_REFINE_FACTOR;
    if !(far || clearly) {
        return None;
    }
    let hashrate = f64::from(shares) * difficulty * HASHES_PER_DIFFICULTY_1 / secs;
    (hashrate.is_finite() && hashrate > 0.0).then_some(hashrate as f32)
}

/// The hashrate last reported upstream for a channel (`nominal_hash_rate` of the open, then
/// of `UpdateChannel`), and when: the `UpdateChannel` debounce.
#[derive(Debug, Clone, Copy)]
pub(super) struct NominalHashrate {
    /// H/s; 0 until the first observation.
    reported: f32,
    last_update: Instant,
}

impl NominalHashrate {
    /// Nothing reported yet (the first observation is taken as the baseline).
    pub(super) fn new(now: Instant) -> Self {
        Self {
            reported: 0.0,
            last_update: now,
        }
    }

    /// The channel's hashrate is `hashrate` (H/s) at `now`: returns the hashrate to send in
    /// an `UpdateChannel` when it moved by more than 20 % from the last reported one and at
    /// least `interval` passed since then; the first observation only sets the baseline.
    pub(super) fn observe(
        &mut self,
        hashrate: f32,
        now: Instant,
        interval: Duration,
    ) -> Option<f32> {
        if self.reported == 0.0 {
            self.reported = hashrate;
            self.last_update = now;
            return None;
        }
        let moved = (hashrate - self.reported).abs() > UPDATE_CHANNEL_CHANGE * self.reported;
        if moved && now.saturating_duration_since(self.last_update) >= interval && hashrate > 0.0 {
            self.reported = hashrate;
            self.last_update = now;
            return Some(hashrate);
        }
        None
    }
}

/// What a vardiff tick decided for one miner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Retarget {
    /// Leave the difficulty.
    Keep,
    /// Set the difficulty for this hashrate (H/s); with `resend`, re-send the current job so
    /// the miner applies it at once (the first-share search and the fast jump).
    To { hashrate: f32, resend: bool },
}

/// Vardiff for one ready miner at `now`: the first-share search, then the fast jump, then
/// [`ClassicVardiff`](tower_stratum_mining::vardiff::ClassicVardiff). Updates the miner's
/// hashrate estimate and vardiff state; `lowest` is the hashrate of the configured minimum
/// difficulty (the search never goes below it).
pub(super) fn retarget(
    config: &TranslatorConfig,
    m: &mut Miner,
    lowest: f32,
    now: Instant,
) -> Retarget {
    let shares_per_minute = config.shares_per_minute;
    // No share yet, long after the last change: much slower than assumed.
    if let Some(every) = config.first_share_search {
        if !m.shared
            && m.last_job_sent.is_some()
            && now.saturating_duration_since(m.fast_since) >= every
        {
            let hashrate = (m.hashrate / SEARCH_STEP).max(lowest);
            debug!(connection = %m.ctx.id, hashrate, "no share yet: difficulty divided by 16");
            m.hashrate = hashrate;
            m.vardiff.reset(now);
            m.fast_since = now;
            return Retarget::To {
                hashrate,
                resend: true,
            };
        }
    }
    // Far above target: jump to the hashrate the shares show (a lower bound when the share
    // rate is bound by how fast shares get through, one verdict at a time per Sv1
    // connection: then the jumps repeat, each a refinement).
    if let Some(h) = fast_estimate(
        m.fast_shares,
        m.difficulty,
        m.fast_since,
        now,
        shares_per_minute,
    ) {
        debug!(connection = %m.ctx.id, hashrate = h, shares = m.fast_shares, "shares far above target: difficulty from their rate");
        m.hashrate = h;
        m.vardiff.reset(now);
        m.fast_shares = 0;
        m.fast_since = now;
        return Retarget::To {
            hashrate: h,
            resend: true,
        };
    }
    // Compare the realized share rate with what the current target was set for (the
    // difficulty may sit at a bound or the upstream floor).
    let expected =
        (m.difficulty * HASHES_PER_DIFFICULTY_1 * f64::from(shares_per_minute) / 60.0) as f32;
    match m
        .vardiff
        .try_vardiff(now, expected, &m.target, shares_per_minute)
    {
        Some(h) => {
            m.hashrate = h;
            Retarget::To {
                hashrate: h,
                resend: false,
            }
        }
        None => Retarget::Keep,
    }
}

impl TranslatorCore {
    /// Sets a miner's difficulty to `wanted` (clamped); pushes `mining.set_difficulty` if it
    /// changed and the miner is mining. Jobs already sent stay valid at the old target.
    pub(super) fn set_miner_difficulty(
        &mut self,
        conn: ConnectionId,
        wanted: f64,
        now: Instant,
    ) -> Sv1Actions {
        let Some(m) = self.miners.get(&conn) else {
            return Sv1Actions::none();
        };
        let floor = m
            .channel
            .and_then(|c| self.channels.get(&c))
            .map(|c| c.floor)
            .unwrap_or(0.0);
        let difficulty = clamp_difficulty(&self.config, wanted, m.min_difficulty, floor);
        let next_job = self.next_job;
        let Some(m) = self.miners.get_mut(&conn) else {
            return Sv1Actions::none();
        };
        if difficulty == m.difficulty {
            return Sv1Actions::none();
        }
        let Some(target) = difficulty_to_target(difficulty) else {
            return Sv1Actions::none();
        };
        // Jobs sent before the change may still be mined at the old difficulty.
        m.prev_target = Some((m.target, next_job));
        m.difficulty = difficulty;
        m.target = target;
        m.fast_shares = 0;
        m.fast_since = now;
        debug!(connection = %conn, difficulty, "difficulty changed");
        if m.ready() {
            Sv1Actions::from(send(conn, ServerMessage::SetDifficulty(difficulty)))
        } else {
            Sv1Actions::none()
        }
    }

    /// Vardiff for every ready miner (see [`retarget`]).
    pub(super) fn vardiff_tick(&mut self, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let lowest = difficulty_to_hashrate(&self.config, self.config.min_difficulty);
        let mut changes = Vec::new();
        for m in self.miners.values_mut() {
            if !m.ready() {
                continue;
            }
            if let Retarget::To { hashrate, resend } = retarget(&self.config, m, lowest, now) {
                changes.push((m.ctx.id, hashrate, resend));
            }
        }
        for (conn, hashrate, resend) in changes {
            let difficulty = hashrate_to_difficulty(&self.config, hashrate);
            let set = self.set_miner_difficulty(conn, difficulty, now);
            let lowered = !set.is_empty();
            out.extend(set);
            if resend && lowered {
                // Sv1 miners apply a new difficulty from the next job (some mine a job at the
                // harder of the difficulty it came with and the current one): the current job
                // again, under a new id, makes it apply now. Used for the first-share search
                // and the fast jump; a share the miner finds again on the re-sent job is
                // caught as a duplicate (the key is the channel job).
                if let Some(a) = self.resend_current_job(conn, now) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// `UpdateChannel` for every channel whose hashrate (its owner's, or every miner's on the
    /// aggregated channel) moved enough, at most once per `update_channel_interval`.
    pub(super) fn update_channels(&mut self, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let interval = self.config.update_channel_interval;
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        for id in ids {
            let hashrate = match self.channels.get(&id).and_then(|c| c.owner) {
                Some(owner) => self.miners.get(&owner).map(|m| m.hashrate).unwrap_or(0.0),
                None => self.total_hashrate(),
            };
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            if let Some(h) = ch.nominal.observe(hashrate, now, interval) {
                debug!(channel_id = id, hashrate = h, "UpdateChannel");
                out.push(to_upstream(MiningOwned::UpdateChannel(
                    UpdateChannelOwned {
                        channel_id: id,
                        nominal_hash_rate: h,
                        maximum_target: U256Owned::from([0xffu8; 32]),
                    },
                )));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn config() -> TranslatorConfig {
        TranslatorConfig {
            min_difficulty: 0.001,
            max_difficulty: 1e12,
            power_of_two_difficulty: false,
            shares_per_minute: 6.0,
            ..TranslatorConfig::default()
        }
    }

    #[test]
    fn the_floor_is_the_lowest_difficulty_whose_target_meets_the_channel_target() {
        for d in [1.0, 3.5, 1024.0, 123_456.789] {
            let target = difficulty_to_target(d).unwrap();
            let floor = floor_difficulty(&target);
            assert!(
                difficulty_to_target(floor).unwrap() <= target,
                "difficulty {d}"
            );
            assert!(
                (floor - d).abs() / d < 1e-6,
                "difficulty {d}: floor {floor}"
            );
        }
        assert_eq!(floor_difficulty(&Target::from_le_bytes([0; 32])), f64::MAX);
    }

    #[test]
    fn clamping_honours_bounds_miner_minimum_and_floor_in_that_order() {
        let c = config();
        assert_eq!(clamp_difficulty(&c, 1e-9, None, 0.0), 0.001);
        assert_eq!(clamp_difficulty(&c, 1e15, None, 0.0), 1e12);
        assert_eq!(clamp_difficulty(&c, 10.0, Some(50.0), 0.0), 50.0);
        assert_eq!(clamp_difficulty(&c, 10.0, Some(50.0), 200.0), 200.0);
        let p2 = TranslatorConfig {
            power_of_two_difficulty: true,
            ..config()
        };
        assert_eq!(clamp_difficulty(&p2, 100.0, None, 0.0), 64.0);
        // Rounded down below the floor: the next power of two at or above it.
        assert_eq!(clamp_difficulty(&p2, 100.0, None, 70.0), 128.0);
        assert_eq!(clamp_difficulty(&p2, 100.0, None, 64.0), 64.0);
    }

    #[test]
    fn hashrate_and_difficulty_convert_through_shares_per_minute() {
        let c = config();
        // 6 shares a minute at difficulty 1: 2^32 hashes every 10 s.
        let h = difficulty_to_hashrate(&c, 1.0);
        let want = HASHES_PER_DIFFICULTY_1 / 10.0;
        assert!((f64::from(h) - want).abs() / want < 1e-6, "{h}");
        assert!((hashrate_to_difficulty(&c, h) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_fast_estimate_needs_enough_shares_time_and_excess() {
        let t0 = Instant::now();
        let spm = 6.0; // one share per 10 s expected
        let s = Duration::from_secs;
        assert_eq!(fast_estimate(7, 1.0, t0, t0 + s(2), spm), None, "7 shares");
        assert_eq!(
            fast_estimate(8, 1.0, t0, t0 + Duration::from_millis(999), spm),
            None,
            "under 1 s"
        );
        // 8 shares in 20 s = 24/min = 4x: jump; the estimate is shares * diff * 2^32 / s.
        let h = fast_estimate(8, 2.0, t0, t0 + s(20), spm).unwrap();
        let want = 8.0 * 2.0 * HASHES_PER_DIFFICULTY_1 / 20.0;
        assert!((f64::from(h) - want).abs() / want < 1e-6);
        // 12 shares in 60 s = 2x: not far enough with fewer than 16 shares ...
        assert_eq!(fast_estimate(12, 1.0, t0, t0 + s(60), spm), None);
        // ... 16 shares in 99 s (above 1.6x) is, as a refinement; in 101 s (below) not.
        assert!(fast_estimate(16, 1.0, t0, t0 + s(99), spm).is_some());
        assert_eq!(fast_estimate(16, 1.0, t0, t0 + s(101), spm), None);
    }

    #[test]
    fn update_channel_waits_for_a_20_percent_move_and_the_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        let mut n = NominalHashrate::new(t0);
        assert_eq!(
            n.observe(100.0, t0, every),
            None,
            "the first sets the baseline"
        );
        let later = t0 + every;
        assert_eq!(n.observe(119.0, later, every), None, "19 %");
        assert_eq!(n.observe(150.0, t0 + every / 2, every), None, "too soon");
        assert_eq!(n.observe(150.0, later, every), Some(150.0));
        assert_eq!(
            n.observe(300.0, later, every),
            None,
            "debounced from the last update"
        );
        assert_eq!(
            n.observe(0.0, later + every, every),
            None,
            "never 0 upstream"
        );
    }
}
