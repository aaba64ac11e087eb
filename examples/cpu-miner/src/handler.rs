//! [`MinerHandler`]: the `Sv2MiningClientHandler` shell around [`MinerState`]. It stamps each
//! message with the time it arrived, feeds it to the state, publishes the resulting work to
//! the hashing threads, counts share results and prints them. It never blocks: hashing runs in
//! the threads of [`crate::miner`].

use crate::dump;
use crate::state::{ChannelMode, Ignored, MinerState};
use crate::stats::Stats;
use crate::work::Work;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tower_stratum::handler::Sv2MiningClientHandler;
use tower_stratum::session::{REQUIRES_STANDARD_JOBS, REQUIRES_VERSION_ROLLING};
use tower_stratum::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned,
    OpenStandardMiningChannelSuccessOwned, SetExtranoncePrefixOwned, SetGroupChannelOwned,
    SetNewPrevHashOwned, SetTargetOwned, SubmitSharesErrorOwned, SubmitSharesSuccessOwned,
    UpdateChannelErrorOwned,
};
use tower_stratum::{Actions, CloseReason, ConnectionContext, Sv2Message};
use tracing::{info, warn};

/// Why the miner should stop, sent by the handler to `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// `--max-shares` shares were accepted.
    MaxShares,
    /// The upstream refused to open our channel (`OpenMiningChannel.Error` error code).
    ChannelRefused(String),
    /// Sv1 mode: the server answered `mining.authorize` with `false` or an error (its text).
    AuthorizeRefused(String),
}

/// Options of the handler that are not protocol state.
#[derive(Debug, Clone)]
pub struct HandlerOptions {
    /// Print every sent message (`--dump-protocol`; received ones are printed by the layer).
    pub dump_protocol: bool,
    /// Standard channels: leave `REQUIRES_STANDARD_JOBS` unset so the upstream may put the
    /// channel in a group channel and send it extended jobs.
    pub accept_group_jobs: bool,
    /// Set `REQUIRES_VERSION_ROLLING` in SetupConnection.
    pub require_version_rolling: bool,
    /// Ask `main` to stop once this many shares were accepted.
    pub max_shares: Option<u64>,
}

/// The Mining Protocol client handler of the CPU miner.
#[derive(Debug)]
pub struct MinerHandler {
    state: MinerState,
    options: HandlerOptions,
    work: watch::Sender<Option<Arc<Work>>>,
    stats: Arc<Stats>,
    stop: mpsc::Sender<Stop>,
}

impl MinerHandler {
    /// A handler publishing work on `work` and counting into `stats`; stop requests go to
    /// `stop` (best effort: `try_send`).
    pub fn new(
        state: MinerState,
        options: HandlerOptions,
        work: watch::Sender<Option<Arc<Work>>>,
        stats: Arc<Stats>,
        stop: mpsc::Sender<Stop>,
    ) -> Self {
        Self {
            state,
            options,
            work,
            stats,
            stop,
        }
    }

    fn publish(&mut self) {
        if self.state.take_changed() {
            let work = self.state.work().map(Arc::new);
            if let Some(w) = &work {
                info!(
                    channel_id = w.channel_id,
                    job_id = w.job_id,
                    version = format_args!("{:#010x}", w.version),
                    nbits = format_args!("{:#010x}", w.nbits),
                    min_ntime = w.min_ntime,
                    "mining"
                );
            }
            self.work.send_replace(work);
        }
    }

    fn outcome(&mut self, what: &'static str, r: Result<(), Ignored>) -> Actions {
        if let Err(e) = r {
            warn!(message = what, reason = ?e, "message ignored");
        }
        self.publish();
        Actions::none()
    }

    fn send(&self, msg: Sv2Message) -> Actions {
        if self.options.dump_protocol {
            dump::outbound(&msg);
        }
        Actions::reply(msg)
    }
}

impl Sv2MiningClientHandler for MinerHandler {
    fn setup_connection_flags(&self) -> Option<u32> {
        let mut flags = 0;
        if self.state.mode() == ChannelMode::Standard && !self.options.accept_group_jobs {
            flags |= REQUIRES_STANDARD_JOBS;
        }
        if self.options.require_version_rolling {
            flags |= REQUIRES_VERSION_ROLLING;
        }
        Some(flags)
    }

    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        info!(
            peer = ctx.peer.map(tracing::field::display),
            version = ctx.info.version,
            flags = ctx.info.success_flags,
            "connected upstream"
        );
        if self.options.dump_protocol {
            // The service runs SetupConnection itself; those two messages never reach the
            // inbound stack, so report the negotiated result.
            println!(
                "== SetupConnection done by the service: protocol={} used_version={} flags={:#x} success_flags={:#x}",
                ctx.protocol(),
                ctx.info.version,
                ctx.info.flags,
                ctx.info.success_flags
            );
        }
        let open = self.state.connected(ctx.info.success_flags);
        if self.state.open_mode() != self.state.mode() {
            println!("upstream requires extended channels: opening an extended channel");
        }
        self.publish();
        self.send(open)
    }

    async fn on_connection_removed(
        &mut self,
        _ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        match reason {
            // Our own shutdown (Ctrl-C, SIGTERM, --max-shares, --exit-after-secs): normal.
            CloseReason::Shutdown => info!("upstream connection closed (shutdown)"),
            _ => warn!(%reason, "upstream connection closed"),
        }
        self.state.disconnected();
        self.publish();
        Actions::none()
    }

    async fn handle_open_standard_mining_channel_success(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenStandardMiningChannelSuccessOwned,
    ) -> Actions {
        let r = self.state.open_standard_success(&m);
        if r.is_ok() {
            println!(
                "channel opened: standard channel_id={} group_channel_id={} extranonce_prefix={}",
                m.channel_id,
                m.group_channel_id,
                hex(m.extranonce_prefix.as_bytes())
            );
        }
        self.outcome("OpenStandardMiningChannel.Success", r)
    }

    async fn handle_open_extended_mining_channel_success(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenExtendedMiningChannelSuccessOwned,
    ) -> Actions {
        let r = self.state.open_extended_success(&m);
        if r.is_ok() {
            println!(
                "channel opened: extended channel_id={} group_channel_id={} extranonce_prefix={} extranonce_size={}",
                m.channel_id,
                m.group_channel_id,
                hex(m.extranonce_prefix.as_bytes()),
                m.extranonce_size
            );
        }
        self.outcome("OpenExtendedMiningChannel.Success", r)
    }

    async fn handle_open_mining_channel_error(
        &mut self,
        _ctx: ConnectionContext,
        m: OpenMiningChannelErrorOwned,
    ) -> Actions {
        let code = m.error_code.as_utf8_or_hex();
        if self.state.open_error(m.request_id) {
            println!("channel refused: {code}");
            let _ = self.stop.try_send(Stop::ChannelRefused(code));
        } else {
            warn!(request_id = m.request_id, %code, "OpenMiningChannel.Error for another request");
        }
        Actions::none()
    }

    async fn handle_update_channel_error(
        &mut self,
        _ctx: ConnectionContext,
        m: UpdateChannelErrorOwned,
    ) -> Actions {
        warn!(channel_id = m.channel_id, code = %m.error_code.as_utf8_or_hex(), "UpdateChannel.Error");
        Actions::none()
    }

    async fn handle_close_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: CloseChannelOwned,
    ) -> Actions {
        match self.state.close_channel(&m) {
            Ok(open) => {
                println!(
                    "channel {} closed by upstream ({}); opening a new one",
                    m.channel_id,
                    m.reason_code.as_utf8_or_hex()
                );
                self.publish();
                self.send(open)
            }
            Err(e) => self.outcome("CloseChannel", Err(e)),
        }
    }

    async fn handle_set_extranonce_prefix(
        &mut self,
        _ctx: ConnectionContext,
        m: SetExtranoncePrefixOwned,
    ) -> Actions {
        let r = self.state.set_extranonce_prefix(&m);
        self.outcome("SetExtranoncePrefix", r)
    }

    async fn handle_submit_shares_success(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesSuccessOwned,
    ) -> Actions {
        if self.state.channel_id() != Some(m.channel_id) {
            return self.outcome(
                "SubmitShares.Success",
                Err(Ignored::OtherChannel(m.channel_id)),
            );
        }
        let count = u64::from(m.new_submits_accepted_count);
        let accepted = self
            .stats
            .accepted
            .fetch_add(count, Ordering::Relaxed)
            .wrapping_add(count);
        println!(
            "share accepted: channel_id={} last_sequence_number={} count={} (accepted total {})",
            m.channel_id, m.last_sequence_number, m.new_submits_accepted_count, accepted
        );
        if self.options.max_shares.is_some_and(|n| accepted >= n) {
            let _ = self.stop.try_send(Stop::MaxShares);
        }
        Actions::none()
    }

    async fn handle_submit_shares_error(
        &mut self,
        _ctx: ConnectionContext,
        m: SubmitSharesErrorOwned,
    ) -> Actions {
        if self.state.channel_id() != Some(m.channel_id) {
            return self.outcome(
                "SubmitShares.Error",
                Err(Ignored::OtherChannel(m.channel_id)),
            );
        }
        let rejected = self
            .stats
            .rejected
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        println!(
            "share rejected: channel_id={} sequence_number={} error={} (rejected total {})",
            m.channel_id,
            m.sequence_number,
            m.error_code.as_utf8_or_hex(),
            rejected
        );
        Actions::none()
    }

    async fn handle_new_mining_job(
        &mut self,
        _ctx: ConnectionContext,
        m: NewMiningJobOwned,
    ) -> Actions {
        let r = self.state.new_mining_job(&m, Instant::now());
        self.outcome("NewMiningJob", r)
    }

    async fn handle_new_extended_mining_job(
        &mut self,
        _ctx: ConnectionContext,
        m: NewExtendedMiningJobOwned,
    ) -> Actions {
        let r = self.state.new_extended_mining_job(&m, Instant::now());
        self.outcome("NewExtendedMiningJob", r)
    }

    async fn handle_set_new_prev_hash(
        &mut self,
        _ctx: ConnectionContext,
        m: SetNewPrevHashOwned,
    ) -> Actions {
        let r = self.state.set_new_prev_hash(&m, Instant::now());
        self.outcome("SetNewPrevHash", r)
    }

    async fn handle_set_target(&mut self, _ctx: ConnectionContext, m: SetTargetOwned) -> Actions {
        let r = self.state.set_target(&m);
        self.outcome("SetTarget", r)
    }

    async fn handle_set_group_channel(
        &mut self,
        _ctx: ConnectionContext,
        m: SetGroupChannelOwned,
    ) -> Actions {
        let r = self.state.set_group_channel(&m);
        self.outcome("SetGroupChannel", r)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
