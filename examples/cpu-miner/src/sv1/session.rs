//! The Sv1 session task: connects, runs the Sv1 handshake, feeds server messages to
//! [`Sv1State`], publishes the work to the hashing threads, submits their shares and counts
//! the answers; reconnects with backoff when the connection is lost. It owns all its state
//! (one task, `&mut self`, no locks); the hashing threads only see the published
//! [`Work`] and send back [`FoundShare`]s.

use super::dump::Tap;
use super::state::{Sv1State, Unsubmittable, MIN_BIT_COUNT, REQUESTED_VERSION_MASK};
use super::Sv1MinerOptions;
use crate::handler::{hex, Stop};
use crate::miner::FoundShare;
use crate::stats::Stats;
use crate::work::Work;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tower::{Service, ServiceExt};
use tower_stratum::sv1::{
    Authorize, ClientMessage, Configure, ConfigureResult, Id, Response, ServerMessage, Subscribe,
    SubscribeResult,
};
use tower_stratum::sv1_service::{
    Sv1ClientConfig, Sv1ClientError, Sv1ClientService, Sv1Notifications,
};
use tracing::{debug, error, info, warn};

/// What the miner calls itself in `mining.subscribe` and answers to `client.get_version`.
pub const USER_AGENT: &str = concat!("cpu-miner/", env!("CARGO_PKG_VERSION"));

/// TCP connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the miner waits for the `mining.configure` answer before mining without version
/// rolling (some servers never answer methods they do not know).
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait honoured from `client.reconnect`.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(600);

/// Submits awaiting their answer; while this many are pending no further share is taken
/// (the hashing threads then wait on the bounded share channel).
const MAX_IN_FLIGHT: usize = 64;

type Answer = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// A call's answer, with what it was for.
enum Answered {
    Submit {
        job_id: String,
        result: Result<Response, Sv1ClientError>,
    },
    ExtranonceSubscribe(Result<Response, Sv1ClientError>),
    SuggestDifficulty(Result<Response, Sv1ClientError>),
}

/// How a connection ended.
enum Ended {
    /// The handle asked to stop (or was dropped).
    Shutdown,
    /// The miner stopped by itself (authorization refused); `Stop` was sent.
    Stopped,
    /// The connection failed or was lost; `authorized` says whether it got as far as mining.
    Lost { reason: String, authorized: bool },
    /// `client.reconnect`: connect to `address` after `wait`.
    Redirect { address: String, wait: Duration },
}

/// What the session loop waits for.
enum Event {
    Shutdown,
    Server(Option<ServerMessage>),
    Share(FoundShare),
    Answer(Answered),
}

/// The session: see the module docs.
pub(super) struct Session {
    pub(super) opts: Sv1MinerOptions,
    pub(super) state: Sv1State,
    pub(super) work: watch::Sender<Option<Arc<Work>>>,
    pub(super) shares: mpsc::Receiver<FoundShare>,
    pub(super) stats: Arc<Stats>,
    pub(super) stop: mpsc::Sender<Stop>,
    /// `host:port` of the current connection (`client.reconnect` may change it).
    pub(super) address: String,
}

fn lost(reason: impl Into<String>, authorized: bool) -> Ended {
    Ended::Lost {
        reason: reason.into(),
        authorized,
    }
}

impl Session {
    /// Runs until `shutdown` fires (or its sender is dropped) or the miner stops by itself.
    pub(super) async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        let mut address = self.opts.address.clone();
        let backoff = self.opts.reconnect;
        // Waits in a row since the last authorized connection (or `client.reconnect`): the
        // next wait is `backoff.delay(waits)`.
        let mut waits: u32 = 0;
        // Connections in a row that failed before being authorized (for `max_attempts`).
        let mut failed: u32 = 0;
        loop {
            let ended = self.connection(&address, &mut shutdown).await;
            // Nothing to mine until the next connection's first job.
            self.state.connected();
            self.publish();
            let wait = match ended {
                Ended::Shutdown | Ended::Stopped => return,
                Ended::Lost { reason, authorized } => {
                    if authorized {
                        waits = 0;
                        failed = 0;
                    } else {
                        failed = failed.saturating_add(1);
                        if backoff.max_attempts.is_some_and(|m| failed >= m) {
                            println!(
                                "connection to {address} failed: {reason}; giving up after {failed} attempts"
                            );
                            return;
                        }
                    }
                    let wait = backoff.delay(waits);
                    waits = waits.saturating_add(1);
                    println!(
                        "connection to {address} {}: {reason}; reconnecting in {:.1} s",
                        if authorized { "lost" } else { "failed" },
                        wait.as_secs_f64()
                    );
                    wait
                }
                Ended::Redirect { address: to, wait } => {
                    // Never a tight loop, whatever the server asks.
                    let wait = wait.max(backoff.initial);
                    println!(
                        "client.reconnect: reconnecting to {to} in {:.1} s",
                        wait.as_secs_f64()
                    );
                    address = to;
                    waits = 0;
                    failed = 0;
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    fn publish(&mut self) {
        if self.state.take_changed() {
            let work = self.state.work().map(Arc::new);
            if let Some(w) = &work {
                info!(
                    job_id = self.state.job_id(w.job_id).unwrap_or_default(),
                    version = format_args!("{:#010x}", w.version),
                    version_mask = format_args!("{:#010x}", w.version_mask),
                    nbits = format_args!("{:#010x}", w.nbits),
                    ntime = w.min_ntime,
                    difficulty = self.state.difficulty(),
                    "mining"
                );
            }
            self.work.send_replace(work);
        }
    }

    /// One connection: connect, handshake, then mine until it ends.
    async fn connection(&mut self, address: &str, shutdown: &mut oneshot::Receiver<()>) -> Ended {
        self.address = address.to_string();
        self.state.connected();
        self.publish();
        let connect =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address));
        let stream = tokio::select! {
            r = connect => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return lost(format!("cannot connect: {e}"), false),
                Err(_) => return lost("connect timed out", false),
            },
            _ = &mut *shutdown => return Ended::Shutdown,
        };
        let _ = stream.set_nodelay(true);
        println!("connected to {address} (Sv1)");
        let config = Sv1ClientConfig {
            user_agent: USER_AGENT.into(),
            ..Sv1ClientConfig::default()
        };
        let (mut client, mut notifications, handle) =
            Sv1ClientService::new(Tap::new(stream, self.opts.dump_protocol), config);
        let mut pending = FuturesUnordered::new();
        let ended = tokio::select! {
            r = self.handshake(&mut client, &mut pending) => match r {
                Ok(()) => self.mine(&mut client, &mut notifications, &mut pending, shutdown).await,
                Err(e) => e,
            },
            _ = &mut *shutdown => Ended::Shutdown,
        };
        drop(pending);
        let why = handle.shutdown().await;
        match ended {
            Ended::Lost { reason, authorized } if reason.is_empty() => lost(why, authorized),
            other => other,
        }
    }

    /// `mining.configure`, `mining.subscribe`, `mining.extranonce.subscribe` and
    /// `mining.suggest_difficulty` (answers awaited in the mining loop), `mining.authorize`. Server notifications wait in the client's
    /// bounded stream meanwhile.
    async fn handshake(
        &mut self,
        client: &mut Sv1ClientService,
        pending: &mut FuturesUnordered<Answer>,
    ) -> Result<(), Ended> {
        let configure = ClientMessage::Configure(
            Id::Null,
            Configure::version_rolling(REQUESTED_VERSION_MASK, Some(MIN_BIT_COUNT)),
        );
        let granted = match tokio::time::timeout(CONFIGURE_TIMEOUT, client.request(configure)).await
        {
            Ok(Ok(r)) => match (&r.error, ConfigureResult::from_result(&r.result)) {
                (None, Ok(c)) => c.granted_version_rolling_mask(),
                (Some(e), _) => {
                    info!(error = %e, "mining.configure refused");
                    None
                }
                (None, Err(e)) => {
                    warn!(error = %e, "mining.configure answer unreadable");
                    None
                }
            },
            Ok(Err(e)) => return Err(lost(format!("mining.configure: {e}"), false)),
            Err(_) => {
                warn!(
                    "no answer to mining.configure within {} s",
                    CONFIGURE_TIMEOUT.as_secs()
                );
                None
            }
        };
        let mask = self.state.configured(granted);
        if mask != 0 {
            println!("version rolling: mask={mask:08x}");
        } else {
            println!("version rolling: not granted; mining without it");
        }

        let subscribe = ClientMessage::Subscribe(
            Id::Null,
            Subscribe {
                user_agent: Some(USER_AGENT.into()),
                session_id: None,
            },
        );
        let r = client
            .request(subscribe)
            .await
            .map_err(|e| lost(format!("mining.subscribe: {e}"), false))?;
        if let Some(e) = &r.error {
            return Err(lost(format!("mining.subscribe refused: {e}"), false));
        }
        let s = SubscribeResult::from_result(&r.result)
            .map_err(|e| lost(format!("mining.subscribe answer: {e}"), false))?;
        if !self
            .state
            .subscribed(s.extranonce1.clone(), s.extranonce2_size)
        {
            return Err(lost(
                format!("extranonce2_size {} too large", s.extranonce2_size),
                false,
            ));
        }
        println!(
            "subscribed: extranonce1={} extranonce2_size={}",
            hex(&s.extranonce1),
            s.extranonce2_size
        );

        // Queued now (in order), answered whenever the server answers (some never do).
        let answer = call(client, ClientMessage::ExtranonceSubscribe(Id::Null))
            .await
            .map_err(|e| lost(format!("mining.extranonce.subscribe: {e}"), false))?;
        pending.push(Box::pin(async move {
            Answered::ExtranonceSubscribe(answer.await)
        }));

        // Before authorizing, so a server that starts mining at authorize starts at it.
        if let Some(d) = self.opts.suggest_difficulty {
            let answer = call(client, ClientMessage::SuggestDifficulty(Id::Null, d))
                .await
                .map_err(|e| lost(format!("mining.suggest_difficulty: {e}"), false))?;
            pending.push(Box::pin(async move {
                Answered::SuggestDifficulty(answer.await)
            }));
            println!("suggested difficulty: {d}");
        }

        let authorize = ClientMessage::Authorize(
            Id::Null,
            Authorize {
                username: self.opts.username.clone(),
                password: Some(self.opts.password.clone()),
            },
        );
        let r = client
            .request(authorize)
            .await
            .map_err(|e| lost(format!("mining.authorize: {e}"), false))?;
        match r.bool_result() {
            Ok(true) => {
                println!("authorized: {}", self.opts.username);
                Ok(())
            }
            verdict => {
                let why = match verdict {
                    Err(e) => e.to_string(),
                    Ok(_) => "false".to_string(),
                };
                println!("authorization refused: {why}");
                let _ = self.stop.try_send(Stop::AuthorizeRefused(why));
                Err(Ended::Stopped)
            }
        }
    }

    /// The mining loop of an authorized connection.
    async fn mine(
        &mut self,
        client: &mut Sv1ClientService,
        notifications: &mut Sv1Notifications,
        pending: &mut FuturesUnordered<Answer>,
        shutdown: &mut oneshot::Receiver<()>,
    ) -> Ended {
        loop {
            let event = tokio::select! {
                _ = &mut *shutdown => Event::Shutdown,
                n = notifications.recv() => Event::Server(n),
                Some(s) = self.shares.recv(), if pending.len() < MAX_IN_FLIGHT => Event::Share(s),
                Some(a) = pending.next(), if !pending.is_empty() => Event::Answer(a),
            };
            match event {
                Event::Shutdown => return Ended::Shutdown,
                Event::Server(None) => {
                    // The connection task has ended, so every call is resolved: count the
                    // answers that arrived before the end. The reason comes from the handle.
                    while let Ok(Some(a)) =
                        tokio::time::timeout(Duration::from_secs(1), pending.next()).await
                    {
                        self.on_answer(a);
                    }
                    return lost("", true);
                }
                Event::Server(Some(m)) => {
                    if let Some(end) = self.on_server_message(m) {
                        return end;
                    }
                }
                Event::Share(s) => {
                    if let Err(e) = self.submit(client, pending, s).await {
                        return lost(format!("mining.submit: {e}"), true);
                    }
                }
                Event::Answer(a) => self.on_answer(a),
            }
        }
    }

    fn on_server_message(&mut self, m: ServerMessage) -> Option<Ended> {
        match m {
            ServerMessage::Notify(n) => {
                debug!(job_id = %n.job_id, clean_jobs = n.clean_jobs, "mining.notify");
                self.state.notify(n, Instant::now());
            }
            ServerMessage::SetDifficulty(d) => {
                if self.state.set_difficulty(d) {
                    println!("difficulty: {d}");
                } else {
                    warn!(
                        difficulty = d,
                        "mining.set_difficulty without a target ignored"
                    );
                }
            }
            ServerMessage::SetExtranonce(e) => {
                let size = e.extranonce2_size;
                let text = hex(&e.extranonce1);
                if self.state.set_extranonce(e.extranonce1, size) {
                    println!("extranonce: extranonce1={text} extranonce2_size={size} (from the next job)");
                } else {
                    warn!(
                        extranonce2_size = size,
                        "mining.set_extranonce with a too large size ignored"
                    );
                }
            }
            ServerMessage::SetVersionMask(mask) => {
                let rolled = self.state.set_version_mask(mask);
                println!("version rolling: mask={rolled:08x} (mining.set_version_mask {mask:08x})");
            }
            ServerMessage::Reconnect(r) => {
                let (host, port) = self
                    .address
                    .rsplit_once(':')
                    .map_or((self.address.as_str(), ""), |(h, p)| (h, p));
                let host = r.host.as_deref().filter(|h| !h.is_empty()).unwrap_or(host);
                let port = r.port.map_or_else(|| port.to_string(), |p| p.to_string());
                let wait = Duration::from_secs(r.wait_secs.unwrap_or(0)).min(MAX_RECONNECT_WAIT);
                return Some(Ended::Redirect {
                    address: format!("{host}:{port}"),
                    wait,
                });
            }
            ServerMessage::ShowMessage(text) => println!("server message: {text}"),
            ServerMessage::Unknown(r) => {
                debug!(method = %r.method, "unknown server method ignored")
            }
            // Answered by the client service itself, or matched to our calls: never here.
            ServerMessage::GetVersion(_) | ServerMessage::Ping(_) | ServerMessage::Response(_) => {}
        }
        self.publish();
        None
    }

    async fn submit(
        &mut self,
        client: &mut Sv1ClientService,
        pending: &mut FuturesUnordered<Answer>,
        share: FoundShare,
    ) -> Result<(), Sv1ClientError> {
        let submit = match self.state.prepare_submit(&share, &self.opts.username) {
            Ok(s) => s,
            Err(Unsubmittable::Mismatch) => {
                error!(
                    ?share,
                    "share does not recompute with the Sv1 share math; not sent"
                );
                return Ok(());
            }
            Err(why) => {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                debug!(?why, "share not sent");
                return Ok(());
            }
        };
        let job_id = submit.job_id.clone();
        let answer = call(client, ClientMessage::Submit(Id::Null, submit)).await?;
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        pending.push(Box::pin(async move {
            Answered::Submit {
                job_id,
                result: answer.await,
            }
        }));
        Ok(())
    }

    fn on_answer(&mut self, a: Answered) {
        match a {
            Answered::Submit {
                job_id,
                result: Ok(r),
            } => match r.bool_result() {
                Ok(true) => {
                    let accepted = self
                        .stats
                        .accepted
                        .fetch_add(1, Ordering::Relaxed)
                        .wrapping_add(1);
                    println!("share accepted: job_id={job_id} (accepted total {accepted})");
                    if self.opts.max_shares.is_some_and(|n| accepted >= n) {
                        let _ = self.stop.try_send(Stop::MaxShares);
                    }
                }
                verdict => {
                    let error = match verdict {
                        Err(e) => e.to_string(),
                        Ok(_) => "false".to_string(),
                    };
                    let rejected = self
                        .stats
                        .rejected
                        .fetch_add(1, Ordering::Relaxed)
                        .wrapping_add(1);
                    println!(
                        "share rejected: job_id={job_id} error={error} (rejected total {rejected})"
                    );
                }
            },
            Answered::Submit {
                job_id,
                result: Err(Sv1ClientError::Timeout),
            } => warn!(%job_id, "no answer to mining.submit within the call timeout; not counted"),
            Answered::Submit {
                job_id,
                result: Err(e),
            } => {
                debug!(%job_id, error = %e, "mining.submit without answer")
            }
            Answered::ExtranonceSubscribe(Ok(r)) => match r.bool_result() {
                Ok(true) => println!("extranonce subscription: accepted"),
                Ok(false) => info!("mining.extranonce.subscribe answered false"),
                Err(e) => info!(error = %e, "mining.extranonce.subscribe refused"),
            },
            Answered::ExtranonceSubscribe(Err(e)) => {
                debug!(error = %e, "mining.extranonce.subscribe without answer")
            }
            Answered::SuggestDifficulty(Ok(r)) => match r.bool_result() {
                Ok(true) => debug!("mining.suggest_difficulty accepted"),
                Ok(false) => info!("mining.suggest_difficulty answered false"),
                Err(e) => info!(error = %e, "mining.suggest_difficulty refused"),
            },
            Answered::SuggestDifficulty(Err(e)) => {
                debug!(error = %e, "mining.suggest_difficulty without answer")
            }
        }
    }
}

/// Waits for room, queues `msg` to the connection at once (so calls go out in order) and
/// returns the future of its answer.
async fn call(
    client: &mut Sv1ClientService,
    msg: ClientMessage,
) -> Result<impl Future<Output = Result<Response, Sv1ClientError>> + Send + 'static, Sv1ClientError>
{
    let ready = client.ready().await?;
    Ok(ready.call(msg))
}
