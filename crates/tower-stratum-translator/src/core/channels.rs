//! Upstream channels and their jobs. Each upstream extended channel's Sv2 job state (future
//! jobs, `SetNewPrevHash` activation, target, extranonce_prefix, version rolling, group
//! channel membership) is a [`MinerChannel`], the rules every downstream of a pool follows
//! (spec 5.3). What the translator adds is the Sv1 side: each job `MinerChannel` makes active
//! becomes a `mining.notify` under a new Sv1 job number, and the numbers issued on the
//! current chain tip are remembered so a `mining.submit` can be checked against its job.

use super::difficulty::{floor_difficulty, NominalHashrate};
use super::{send, to_upstream, TranslatorCore};
use std::collections::VecDeque;
use std::time::Instant;
use tower_stratum_core::session::str0255;
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelSuccessOwned,
    SetExtranoncePrefixOwned, SetGroupChannelOwned, SetNewPrevHashOwned, SetTargetOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::ConnectionId;
use tower_stratum_mining::miner_channel::{
    ChannelMode as Sv2ChannelMode, ChannelRequest, ChannelWork, Ignored, JobMerkle, MinerChannel,
};
use tower_stratum_sv1::{Notify, PrevHash, ServerMessage, Target};
use tower_stratum_sv1::{Sv1Action, Sv1Actions};
use tracing::{debug, info, warn};

/// Sv1 jobs remembered per channel for the current chain tip, newest last (shares for older
/// ones are answered "job not found").
const MAX_SV1_JOBS: usize = 32;

/// A job as miners see it: the `mining.notify` sent under Sv1 job `number`, and the upstream
/// job it came from.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// The Sv1 job number (`notify.job_id` is its lower-case hex).
    pub(super) number: u64,
    /// The upstream `job_id` shares are submitted for.
    pub(super) upstream_job_id: u32,
    /// What the miner got.
    pub(super) notify: Notify,
    /// Whether the upstream job lets the miner roll the BIP320 version bits.
    pub(super) version_rolling_allowed: bool,
}

/// The `mining.notify` for the upstream job `work` (on the current chain tip) under Sv1 job
/// `number`: `coinb1` = `coinbase_tx_prefix`, the `coinbase` prefix without the
/// `extranonce_prefix_len` bytes of the extranonce_prefix the job came under (miners put the
/// channel's extranonce_prefix in their extranonce1); `ntime` = the job's `min_ntime`.
/// `None` for a standard (fixed merkle root) job, which an extended channel never gets.
fn notify(
    work: &ChannelWork,
    extranonce_prefix_len: usize,
    number: u64,
    clean: bool,
) -> Option<Notify> {
    let JobMerkle::Coinbase {
        prefix,
        suffix,
        path,
        ..
    } = &work.merkle
    else {
        return None;
    };
    let coinb1 = prefix.get(..prefix.len().checked_sub(extranonce_prefix_len)?)?;
    Some(Notify {
        job_id: format!("{number:x}"),
        prev_hash: PrevHash::from_header_bytes(work.prev_hash),
        coinb1: coinb1.to_vec(),
        coinb2: suffix.clone(),
        merkle_branch: path.clone(),
        version: work.version,
        nbits: work.nbits,
        ntime: work.min_ntime,
        clean_jobs: clean,
    })
}

/// One upstream extended channel.
#[derive(Debug)]
pub(super) struct UpstreamChannel {
    pub(super) id: u32,
    /// The Sv2 job state.
    sv2: MinerChannel,
    /// extranonce2 size for miners on this channel, bytes.
    pub(super) extranonce2_size: usize,
    /// The lowest miner difficulty on this channel: [`floor_difficulty`] of its target.
    pub(super) floor: f64,
    pub(super) next_sequence_number: u32,
    /// Sv1 jobs issued on the current tip: (Sv1 number, upstream `job_id`), newest last.
    jobs: VecDeque<(u64, u32)>,
    /// Sv1 job numbers below this one are stale.
    pub(super) min_valid_job: u64,
    /// Whether the last job issued let miners roll the version (what they were last told).
    pub(super) version_rolling_allowed: bool,
    /// The `UpdateChannel` debounce.
    pub(super) nominal: NominalHashrate,
    pub(super) last_job_at: Instant,
    /// Per-miner mode: the miner the channel is for (`None` once it left, during the resume
    /// grace); aggregated: `None`.
    pub(super) owner: Option<ConnectionId>,
}

/// What an upstream job message did to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobUpdate {
    /// Nothing to send (a future job stored, or not for this channel).
    None,
    /// A job became active: issue it (`clean`: a new chain tip, earlier jobs are stale).
    Issue {
        /// `clean_jobs`.
        clean: bool,
    },
    /// A new chain tip without its job: every earlier job is stale, nothing to mine.
    Stale,
}

impl UpstreamChannel {
    /// The channel `m` opened (answering our `OpenExtendedMiningChannel`) on a connection set
    /// up with `success_flags`, giving miners `extranonce2_size` bytes; the first Sv1 job on
    /// it will be numbered at least `next_job`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        request: ChannelRequest,
        success_flags: u32,
        m: &OpenExtendedMiningChannelSuccessOwned,
        extranonce2_size: usize,
        version_rolling_allowed: bool,
        owner: Option<ConnectionId>,
        next_job: u64,
        now: Instant,
    ) -> Result<Self, Ignored> {
        let sv2 = MinerChannel::extended_opened(request, success_flags, m)?;
        let mut ch = Self {
            id: m.channel_id,
            sv2,
            extranonce2_size,
            floor: 0.0,
            next_sequence_number: 0,
            jobs: VecDeque::new(),
            min_valid_job: next_job,
            version_rolling_allowed,
            nominal: NominalHashrate::new(now),
            last_job_at: now,
            owner,
        };
        ch.floor = floor_difficulty(&ch.target());
        Ok(ch)
    }

    /// The channel's maximum target (the share target it asks for).
    pub(super) fn target(&self) -> Target {
        Target::from_le_bytes(self.sv2.target().unwrap_or([0xff; 32]))
    }

    /// The channel's current extranonce_prefix.
    pub(super) fn extranonce_prefix(&self) -> &[u8] {
        self.sv2.extranonce_prefix().unwrap_or_default()
    }

    /// Bytes after the prefix: the miners' local bytes, then extranonce2.
    pub(super) fn extranonce_size(&self) -> usize {
        self.sv2.extranonce_size().unwrap_or(0)
    }

    /// The miners' local extranonce bytes (between the prefix and extranonce2).
    pub(super) fn local_len(&self) -> usize {
        self.extranonce_size().saturating_sub(self.extranonce2_size)
    }

    /// Whether a message naming `channel_id` is for this channel (its id or its group's).
    pub(super) fn is_for_channel(&self, channel_id: u32) -> bool {
        self.sv2.is_for_channel(channel_id)
    }

    /// Whether any job was issued on the current tip.
    pub(super) fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Upstream job `upstream_job_id` as Sv1 job `number`, if kept on the current tip.
    fn sv1_job(&self, upstream_job_id: u32, number: u64, clean: bool) -> Option<Job> {
        let work = self.sv2.job(upstream_job_id)?;
        let prefix_len = self.sv2.job_extranonce_prefix(upstream_job_id)?.len();
        Some(Job {
            number,
            upstream_job_id,
            version_rolling_allowed: work.version_mask != 0,
            notify: notify(&work, prefix_len, number, clean)?,
        })
    }

    /// The Sv1 job `number` a share names, if issued on the current tip and still kept.
    pub(super) fn find_job(&self, number: u64) -> Option<Job> {
        let (_, upstream_job_id) = self.jobs.iter().rev().find(|(n, _)| *n == number)?;
        self.sv1_job(*upstream_job_id, number, false)
    }

    /// The last Sv1 job issued (under its own number, `clean_jobs` false).
    pub(super) fn current_job(&self) -> Option<Job> {
        let (number, upstream_job_id) = self.jobs.back()?;
        self.sv1_job(*upstream_job_id, *number, false)
    }

    /// The active upstream job as Sv1 job `number`.
    pub(super) fn active_job(&self, number: u64, clean: bool) -> Option<Job> {
        self.sv1_job(self.sv2.active_job()?, number, clean)
    }

    /// Remembers `job` as issued at `now`; a clean job makes every earlier one stale.
    pub(super) fn record(&mut self, job: &Job, now: Instant) {
        if job.notify.clean_jobs {
            self.jobs.clear();
            self.min_valid_job = job.number;
        }
        self.jobs.push_back((job.number, job.upstream_job_id));
        while self.jobs.len() > MAX_SV1_JOBS {
            self.jobs.pop_front();
        }
        self.last_job_at = now;
    }

    /// Every job issued so far is stale; the next is numbered at least `next_job`.
    pub(super) fn stale(&mut self, next_job: u64) {
        self.jobs.clear();
        self.min_valid_job = next_job;
    }

    /// `NewExtendedMiningJob` at `now` (for this channel or its group): a future job waits
    /// for its `SetNewPrevHash`; a job with `min_ntime` is issued at once on the current tip.
    pub(super) fn new_extended_mining_job(
        &mut self,
        m: &NewExtendedMiningJobOwned,
        now: Instant,
    ) -> JobUpdate {
        if let Err(e) = self.sv2.new_extended_mining_job(m, now) {
            debug!(channel_id = self.id, reason = ?e, "job ignored");
            return JobUpdate::None;
        }
        let immediate = m.min_ntime.clone().into_inner().is_some();
        if !immediate {
            return JobUpdate::None;
        }
        if self.sv2.active_job() == Some(m.job_id) {
            JobUpdate::Issue { clean: false }
        } else {
            debug!(channel_id = self.id, "non-future job before any prev hash");
            JobUpdate::None
        }
    }

    /// `SetNewPrevHash` at `now`: the future job it names becomes active on the new tip (a
    /// clean job); for a job not known, every earlier job is stale.
    pub(super) fn set_new_prev_hash(&mut self, m: &SetNewPrevHashOwned, now: Instant) -> JobUpdate {
        match self.sv2.set_new_prev_hash(m, now) {
            Ok(()) => JobUpdate::Issue { clean: true },
            Err(Ignored::UnknownJob(job_id)) => {
                debug!(
                    channel_id = self.id,
                    job_id, "SetNewPrevHash for an unknown job"
                );
                JobUpdate::Stale
            }
            Err(_) => JobUpdate::None,
        }
    }

    /// `SetTarget`: returns whether it applied (then the floor moved).
    pub(super) fn set_target(&mut self, m: &SetTargetOwned) -> bool {
        if self.sv2.set_target(m).is_err() {
            return false;
        }
        self.floor = floor_difficulty(&self.target());
        true
    }

    /// `SetExtranoncePrefix`: returns whether it applied (it must leave room for the
    /// extranonce the channel granted within 32 bytes).
    pub(super) fn set_extranonce_prefix(&mut self, m: &SetExtranoncePrefixOwned) -> bool {
        match self.sv2.set_extranonce_prefix(m) {
            Ok(()) => true,
            Err(e) => {
                warn!(channel_id = self.id, reason = ?e, "SetExtranoncePrefix ignored");
                false
            }
        }
    }

    /// `SetGroupChannel`: joins the group if the channel is listed.
    pub(super) fn set_group_channel(&mut self, m: &SetGroupChannelOwned) {
        let _ = self.sv2.set_group_channel(m);
    }
}

/// The `ChannelRequest` a channel was opened with (kept by the `MinerChannel`; the translator
/// itself numbers and re-sends open requests).
pub(super) fn channel_request(
    user_identity: &str,
    nominal_hash_rate: f32,
    min_extranonce_size: u16,
) -> Option<ChannelRequest> {
    Some(ChannelRequest {
        mode: Sv2ChannelMode::Extended,
        user_identity: str0255(user_identity)?,
        nominal_hash_rate,
        min_extranonce_size,
    })
}

impl TranslatorCore {
    /// Channels a job or prev hash addressed to `channel_id` applies to: the channel itself,
    /// or every member of the group channel `channel_id`.
    pub(super) fn affected(&self, channel_id: u32) -> Vec<u32> {
        if self.channels.contains_key(&channel_id) {
            return vec![channel_id];
        }
        let mut v: Vec<u32> = self
            .channels
            .values()
            .filter(|c| c.is_for_channel(channel_id))
            .map(|c| c.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Issues `job` on `channel_id` to its ready miners (one multicast, encoded once).
    pub(super) fn issue(&mut self, channel_id: u32, job: Job, now: Instant) -> Sv1Actions {
        let conns = self.ready_miners(channel_id);
        let clean = job.notify.clean_jobs;
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            return Sv1Actions::none();
        };
        let version_rolling_changed = ch.version_rolling_allowed != job.version_rolling_allowed;
        ch.version_rolling_allowed = job.version_rolling_allowed;
        ch.record(&job, now);
        let min_valid = ch.min_valid_job;
        let mut out = Sv1Actions::none();
        if version_rolling_changed {
            // Tell miners holding a mask whether this job lets them roll.
            let allowed = job.version_rolling_allowed;
            for c in &conns {
                if let Some(m) = self.miners.get(c) {
                    if m.version_mask != 0 {
                        out.push(send(
                            *c,
                            ServerMessage::SetVersionMask(if allowed { m.version_mask } else { 0 }),
                        ));
                    }
                }
            }
        }
        for c in &conns {
            self.mark_job_sent(*c, now, clean);
            if let Some(m) = self.miners.get_mut(c) {
                // Every job mined at the old difficulty is stale now.
                if m.prev_target.is_some_and(|(_, below)| below <= min_valid) {
                    m.prev_target = None;
                }
            }
        }
        if !conns.is_empty() {
            out.push(Sv1Action::Multicast(
                conns,
                ServerMessage::Notify(job.notify),
            ));
        }
        out
    }

    /// Issues the active upstream job of `channel_id` under a new Sv1 number.
    fn issue_active(&mut self, channel_id: u32, clean: bool, now: Instant) -> Sv1Actions {
        let number = self.next_job;
        let Some(job) = self
            .channels
            .get(&channel_id)
            .and_then(|ch| ch.active_job(number, clean))
        else {
            return Sv1Actions::none();
        };
        self.next_job += 1;
        self.issue(channel_id, job, now)
    }

    /// Applies a [`JobUpdate`] of `channel_id`.
    fn apply(&mut self, channel_id: u32, update: JobUpdate, now: Instant) -> Sv1Actions {
        match update {
            JobUpdate::None => Sv1Actions::none(),
            JobUpdate::Issue { clean } => self.issue_active(channel_id, clean, now),
            JobUpdate::Stale => {
                let next_job = self.next_job;
                if let Some(ch) = self.channels.get_mut(&channel_id) {
                    ch.stale(next_job);
                }
                Sv1Actions::none()
            }
        }
    }

    /// `OpenExtendedMiningChannel.Success`: the channel opens for the aggregated miners or
    /// the miner it was opened for; closed again if it grants too few extranonce bytes.
    pub(super) fn channel_opened(
        &mut self,
        m: OpenExtendedMiningChannelSuccessOwned,
        now: Instant,
    ) -> Sv1Actions {
        let Some(opening) = self.opening.remove(&m.request_id) else {
            debug!(
                request_id = m.request_id,
                "channel open answer for no request"
            );
            return Sv1Actions::none();
        };
        let prefix_len = m.extranonce_prefix.as_bytes().len();
        let size = usize::from(m.extranonce_size);
        let local = self.local_bytes();
        let extranonce2_size = self.config.extranonce2_size.min(size.saturating_sub(local));
        let close = |reason: &str| {
            str0255(reason).map(|reason_code| {
                to_upstream(MiningOwned::CloseChannel(CloseChannelOwned {
                    channel_id: m.channel_id,
                    reason_code,
                }))
            })
        };
        if extranonce2_size == 0 || prefix_len + size > 32 {
            warn!(
                channel_id = m.channel_id,
                extranonce_size = size,
                "upstream channel unusable: too few extranonce bytes"
            );
            let mut out = Sv1Actions::none();
            if let Some(a) = close("extranonce too small") {
                out.push(a);
            }
            if let super::Opening::Miner(conn) = opening {
                out.push(Sv1Action::Disconnect(
                    conn,
                    "upstream extranonce too small".into(),
                ));
            }
            return out;
        }
        let owner = match opening {
            super::Opening::Miner(c) => {
                if !self.miners.contains_key(&c) {
                    // The miner left while the channel was opening.
                    return close("downstream disconnected")
                        .map(Sv1Actions::from)
                        .unwrap_or_default();
                }
                Some(c)
            }
            super::Opening::Aggregated => None,
        };
        let Some(up) = &self.upstream else {
            return Sv1Actions::none();
        };
        let opened = channel_request(
            &up.user_identity,
            0.0,
            (self.config.extranonce2_size + local) as u16,
        )
        .ok_or(Ignored::Malformed("user_identity"))
        .and_then(|request| {
            UpstreamChannel::open(
                request,
                up.success_flags,
                &m,
                extranonce2_size,
                up.version_rolling,
                owner,
                self.next_job,
                now,
            )
        });
        let ch = match opened {
            Ok(ch) => ch,
            Err(e) => {
                warn!(channel_id = m.channel_id, reason = ?e, "upstream channel unusable");
                return close("unusable channel")
                    .map(Sv1Actions::from)
                    .unwrap_or_default();
            }
        };
        info!(
            channel_id = m.channel_id,
            group_channel_id = m.group_channel_id,
            extranonce_prefix = %super::miners::hex(ch.extranonce_prefix()),
            extranonce_size = size,
            extranonce2_size,
            upstream_difficulty = ch.floor,
            "upstream channel open"
        );
        self.channels.insert(m.channel_id, ch);
        let mut out = Sv1Actions::none();
        match owner {
            Some(conn) => out.extend(self.assign_channel(conn, m.channel_id, now)),
            None => {
                self.aggregated = Some(m.channel_id);
                let conns: Vec<ConnectionId> = self
                    .miners
                    .values()
                    .filter(|x| (x.subscribed || x.subscribe_id.is_some()) && !x.closing)
                    .map(|x| x.ctx.id)
                    .collect();
                for c in conns {
                    out.extend(self.assign_channel(c, m.channel_id, now));
                }
            }
        }
        out
    }

    /// `NewExtendedMiningJob`, for a channel or a group channel.
    pub(super) fn new_job(&mut self, m: NewExtendedMiningJobOwned, now: Instant) -> Sv1Actions {
        let channels = self.affected(m.channel_id);
        if channels.is_empty() {
            debug!(channel_id = m.channel_id, "job for an unknown channel");
            return Sv1Actions::none();
        }
        let mut out = Sv1Actions::none();
        for c in channels {
            let Some(ch) = self.channels.get_mut(&c) else {
                continue;
            };
            let update = ch.new_extended_mining_job(&m, now);
            out.extend(self.apply(c, update, now));
        }
        out
    }

    /// `SetNewPrevHash`, for a channel or a group channel.
    pub(super) fn new_prev_hash(&mut self, m: SetNewPrevHashOwned, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        for c in self.affected(m.channel_id) {
            let Some(ch) = self.channels.get_mut(&c) else {
                continue;
            };
            let update = ch.set_new_prev_hash(&m, now);
            out.extend(self.apply(c, update, now));
        }
        out
    }

    /// `SetTarget`: the channel's floor moves; every miner on it is re-clamped.
    pub(super) fn set_target(&mut self, m: SetTargetOwned, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        for c in self.affected(m.channel_id) {
            let Some(ch) = self.channels.get_mut(&c) else {
                continue;
            };
            if !ch.set_target(&m) {
                continue;
            }
            info!(
                channel_id = c,
                upstream_difficulty = ch.floor,
                "upstream target changed"
            );
            let conns: Vec<(ConnectionId, f64)> = self
                .miners
                .values()
                .filter(|x| x.channel == Some(c))
                .map(|x| {
                    (
                        x.ctx.id,
                        super::difficulty::hashrate_to_difficulty(&self.config, x.hashrate),
                    )
                })
                .collect();
            for (conn, wanted) in conns {
                out.extend(self.set_miner_difficulty(conn, wanted, now));
            }
        }
        out
    }

    /// `SetExtranoncePrefix`: every subscribed miner on the channel gets the new
    /// extranonce1 (`mining.set_extranonce`, or a reconnect).
    pub(super) fn set_extranonce_prefix(
        &mut self,
        m: SetExtranoncePrefixOwned,
        now: Instant,
    ) -> Sv1Actions {
        let Some(ch) = self.channels.get_mut(&m.channel_id) else {
            return Sv1Actions::none();
        };
        if !ch.set_extranonce_prefix(&m) {
            return Sv1Actions::none();
        }
        info!(channel_id = m.channel_id, extranonce_prefix = %super::miners::hex(ch.extranonce_prefix()), "upstream extranonce prefix changed");
        let conns: Vec<ConnectionId> = self
            .miners
            .values()
            .filter(|x| x.channel == Some(m.channel_id) && x.subscribed)
            .map(|x| x.ctx.id)
            .collect();
        let mut out = Sv1Actions::none();
        for c in conns {
            out.extend(self.assign_channel(c, m.channel_id, now));
        }
        out
    }

    /// `SetGroupChannel`: the listed channels join the group.
    pub(super) fn set_group_channel(&mut self, m: SetGroupChannelOwned) -> Sv1Actions {
        for id in m.channel_ids.iter() {
            if let Some(ch) = self.channels.get_mut(id) {
                ch.set_group_channel(&m);
            }
        }
        Sv1Actions::none()
    }

    /// Keepalive: the current job of every channel without a new one for `interval`, again
    /// under a new number.
    pub(super) fn keepalive(&mut self, interval: std::time::Duration, now: Instant) -> Sv1Actions {
        let quiet: Vec<u32> = self
            .channels
            .values()
            .filter(|c| now.saturating_duration_since(c.last_job_at) >= interval && c.has_jobs())
            .map(|c| c.id)
            .collect();
        let mut out = Sv1Actions::none();
        for id in quiet {
            let Some(mut job) = self
                .channels
                .get(&id)
                .and_then(UpstreamChannel::current_job)
            else {
                continue;
            };
            let number = self.next_job;
            self.next_job += 1;
            job.number = number;
            job.notify.job_id = format!("{number:x}");
            job.notify.clean_jobs = false;
            out.extend(self.issue(id, job, now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tower_stratum_core::share_math::difficulty_to_target;
    use tower_stratum_core::stratum_core::binary_sv2::{
        B032Owned, Seq0255Owned, Seq064KOwned, Sv2OptionOwned, U256Owned,
    };

    const PREFIX: [u8; 3] = [0xe0, 0xe1, 0xe2];

    fn open(group: u32, now: Instant) -> UpstreamChannel {
        let success = OpenExtendedMiningChannelSuccessOwned {
            request_id: 7,
            channel_id: 1,
            target: U256Owned::from(difficulty_to_target(256.0).unwrap().to_le_bytes()),
            extranonce_size: 6,
            extranonce_prefix: B032Owned::try_from(PREFIX.to_vec()).unwrap(),
            group_channel_id: group,
        };
        let request = channel_request("acct", 1e9, 6).unwrap();
        UpstreamChannel::open(request, 0, &success, 4, false, None, 100, now).unwrap()
    }

    fn job(channel_id: u32, job_id: u32, min_ntime: Option<u32>) -> NewExtendedMiningJobOwned {
        NewExtendedMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new(min_ntime),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![U256Owned::from([0x4d; 32])]).unwrap(),
            coinbase_tx_prefix: vec![0xc0, 0xc1].try_into().unwrap(),
            coinbase_tx_suffix: vec![0x5f].try_into().unwrap(),
        }
    }

    fn prev_hash(channel_id: u32, job_id: u32) -> SetNewPrevHashOwned {
        SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: U256Owned::from([0x0b; 32]),
            min_ntime: 1_700_000_000,
            nbits: 0x1703_a30c,
        }
    }

    fn issue(ch: &mut UpstreamChannel, number: u64, clean: bool, now: Instant) -> Job {
        let job = ch.active_job(number, clean).unwrap();
        ch.record(&job, now);
        job
    }

    #[test]
    fn the_extranonce_layout_splits_the_granted_bytes_into_local_and_extranonce2() {
        let ch = open(0, Instant::now());
        assert_eq!(ch.extranonce_prefix(), &PREFIX[..]);
        assert_eq!(
            (ch.extranonce_size(), ch.extranonce2_size, ch.local_len()),
            (6, 4, 2)
        );
        assert!((ch.floor - 256.0).abs() < 1e-3, "floor {}", ch.floor);
        assert_eq!(ch.min_valid_job, 100);
    }

    #[test]
    fn a_future_job_is_issued_clean_on_its_set_new_prev_hash_with_coinb1_the_coinbase_prefix() {
        let now = Instant::now();
        let mut ch = open(0, now);
        assert_eq!(
            ch.new_extended_mining_job(&job(1, 5, None), now),
            JobUpdate::None
        );
        assert!(ch.active_job(100, true).is_none(), "a future job waits");
        assert_eq!(
            ch.set_new_prev_hash(&prev_hash(1, 5), now),
            JobUpdate::Issue { clean: true }
        );
        let j = issue(&mut ch, 100, true, now);
        assert_eq!(j.upstream_job_id, 5);
        assert!(j.version_rolling_allowed);
        let n = &j.notify;
        assert_eq!(n.job_id, "64");
        assert_eq!(
            n.coinb1,
            vec![0xc0, 0xc1],
            "the extranonce_prefix goes in extranonce1"
        );
        assert_eq!(n.coinb2, vec![0x5f]);
        assert_eq!(n.merkle_branch, vec![[0x4d; 32]]);
        assert_eq!(
            (n.version, n.nbits, n.ntime),
            (0x2000_0000, 0x1703_a30c, 1_700_000_000)
        );
        assert_eq!(n.prev_hash, PrevHash::from_header_bytes([0x0b; 32]));
        assert!(n.clean_jobs);
    }

    #[test]
    fn a_job_with_min_ntime_is_issued_at_once_on_the_tip_and_not_before_one() {
        let now = Instant::now();
        let mut ch = open(0, now);
        assert_eq!(
            ch.new_extended_mining_job(&job(1, 1, Some(10)), now),
            JobUpdate::None
        );
        ch.new_extended_mining_job(&job(1, 2, None), now);
        ch.set_new_prev_hash(&prev_hash(1, 2), now);
        issue(&mut ch, 100, true, now);
        assert_eq!(
            ch.new_extended_mining_job(&job(1, 3, Some(1_700_000_123)), now),
            JobUpdate::Issue { clean: false }
        );
        let j = issue(&mut ch, 101, false, now);
        assert_eq!((j.upstream_job_id, j.notify.ntime), (3, 1_700_000_123));
        // Both Sv1 jobs of this tip are still checkable, under their own numbers.
        assert_eq!(ch.find_job(100).map(|j| j.upstream_job_id), Some(2));
        assert_eq!(ch.find_job(101).map(|j| j.upstream_job_id), Some(3));
        assert_eq!(ch.current_job().map(|j| j.number), Some(101));
        assert!(ch.find_job(99).is_none());
    }

    #[test]
    fn a_new_tip_makes_earlier_jobs_stale_and_an_unknown_one_leaves_nothing_to_mine() {
        let now = Instant::now();
        let mut ch = open(0, now);
        ch.new_extended_mining_job(&job(1, 1, None), now);
        ch.set_new_prev_hash(&prev_hash(1, 1), now);
        issue(&mut ch, 100, true, now);
        ch.new_extended_mining_job(&job(1, 2, None), now);
        ch.set_new_prev_hash(&prev_hash(1, 2), now);
        issue(&mut ch, 101, true, now);
        assert!(ch.find_job(100).is_none());
        assert_eq!(ch.min_valid_job, 101);
        assert_eq!(
            ch.set_new_prev_hash(&prev_hash(1, 77), now),
            JobUpdate::Stale
        );
        ch.stale(102);
        assert!(!ch.has_jobs());
        assert!(ch.current_job().is_none());
        assert_eq!(ch.min_valid_job, 102);
    }

    #[test]
    fn at_most_max_sv1_jobs_are_remembered_per_tip() {
        let now = Instant::now();
        let mut ch = open(0, now);
        ch.new_extended_mining_job(&job(1, 1, None), now);
        ch.set_new_prev_hash(&prev_hash(1, 1), now);
        for n in 0..(MAX_SV1_JOBS as u64 + 5) {
            issue(&mut ch, 100 + n, n == 0, now);
        }
        assert!(ch.find_job(104).is_none(), "the oldest are forgotten");
        assert!(ch.find_job(105).is_some());
        assert!(ch.find_job(100 + MAX_SV1_JOBS as u64 + 4).is_some());
    }

    #[test]
    fn group_channel_jobs_apply_and_a_later_prefix_keeps_coinb1_the_coinbase_prefix() {
        let now = Instant::now();
        let mut ch = open(50, now);
        assert!(ch.is_for_channel(50) && !ch.is_for_channel(51));
        ch.new_extended_mining_job(&job(50, 1, None), now);
        assert!(ch.set_extranonce_prefix(&SetExtranoncePrefixOwned {
            channel_id: 1,
            extranonce_prefix: B032Owned::try_from(vec![0xaa]).unwrap(),
        }));
        assert_eq!(ch.extranonce_prefix(), &[0xaa]);
        ch.new_extended_mining_job(&job(50, 2, None), now);
        ch.set_new_prev_hash(&prev_hash(50, 1), now);
        assert_eq!(
            issue(&mut ch, 100, true, now).notify.coinb1,
            vec![0xc0, 0xc1]
        );
        // A prefix leaving no room for the granted extranonce is refused.
        assert!(!ch.set_extranonce_prefix(&SetExtranoncePrefixOwned {
            channel_id: 1,
            extranonce_prefix: B032Owned::try_from(vec![0; 27]).unwrap(),
        }));
        ch.set_group_channel(&SetGroupChannelOwned {
            group_channel_id: 60,
            channel_ids: Seq064KOwned::new(vec![1]).unwrap(),
        });
        assert!(ch.is_for_channel(60));
    }

    #[test]
    fn set_target_moves_the_floor() {
        let now = Instant::now();
        let mut ch = open(0, now);
        let before = ch.floor;
        assert!(ch.set_target(&SetTargetOwned {
            channel_id: 1,
            maximum_target: U256Owned::from(difficulty_to_target(4096.0).unwrap().to_le_bytes()),
        }));
        assert!((before - 256.0).abs() < 1e-3, "{before}");
        assert!((ch.floor - 4096.0).abs() < 1e-3, "{}", ch.floor);
        assert!(!ch.set_target(&SetTargetOwned {
            channel_id: 2,
            maximum_target: U256Owned::from([0xff; 32]),
        }));
    }
}
