//! [`Sv2ClientService`]: one upstream connection per subprotocol it uses, with handshake,
//! SetupConnection, dispatch to the client handlers, reconnection with backoff, fail-over along
//! the ordered list of upstreams and fail-back to the primary (the policy, sans-IO, is
//! `upstreams.rs`; the supervisor here drives it).

use crate::config::{ClientConfig, ClientTransport, Endpoint};
use crate::connection::{self, ConnParams, Transport};
use crate::hub::{ClientHandlers, Hub, HubInput, SiblingEnd};
use crate::inbound::{HandlerService, InboundStack};
use crate::protocol::Sv2;
use crate::request::{Request, RequestSender, Response};
use crate::server::SiblingIo;
use crate::upstreams::{ActiveUpstream, Next, SwitchReason, Upstreams};
use crate::{HandlerTypes, ServiceError};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::layer::util::{Identity, Stack};
use tower::Layer;
use tower_stratum_core::handler::{
    NullSv2JobDeclarationClientHandler, NullSv2MiningClientHandler,
    NullSv2TemplateDistributionClientHandler, Sv2JobDeclarationClientHandler,
    Sv2MiningClientHandler, Sv2TemplateDistributionClientHandler,
};
use tower_stratum_core::session::{str0255, TransportHandshake};
use tower_stratum_core::stratum_core::common_messages_sv2::SetupConnectionOwned;
use tower_stratum_core::{
    CloseReason, ConnectionId, ExtensionSet, PerSubprotocol, Session, Subprotocol,
};
use tracing::{debug, error, info, warn, Instrument};

/// A running Sv2 client's request interface: `tower::Service<`[`Request`]`>`. Use
/// [`Request::SendUpstream`]`(protocol, msg)` to send to the upstream of `protocol`.
///
/// Type parameters are the client handlers; a Null handler means that subprotocol is not used
/// (no connection is opened for it).
#[derive(Debug)]
pub struct Sv2ClientService<
    M = NullSv2MiningClientHandler,
    J = NullSv2JobDeclarationClientHandler,
    T = NullSv2TemplateDistributionClientHandler,
> {
    requests: RequestSender,
    _handlers: HandlerTypes<M, J, T>,
}

impl<M, J, T> Clone for Sv2ClientService<M, J, T> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            _handlers: HandlerTypes::default(),
        }
    }
}

impl Sv2ClientService {
    /// A builder with the default [`ClientConfig`] (no endpoints) and Null handlers.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            config: ClientConfig::default(),
            m: NullSv2MiningClientHandler,
            j: NullSv2JobDeclarationClientHandler,
            t: NullSv2TemplateDistributionClientHandler,
            layer: Identity::new(),
            sibling: None,
            upstream: UpstreamWatch::new(),
        }
    }
}

impl<M, J, T> Sv2ClientService<M, J, T>
where
    M: Sv2MiningClientHandler,
    J: Sv2JobDeclarationClientHandler,
    T: Sv2TemplateDistributionClientHandler,
{
    /// Starts a client linked to the server that produced `sibling`
    /// (`Sv2ServerService::new_with_sibling_io`).
    pub fn new_from_sibling_io(
        config: ClientConfig,
        mining: M,
        job_declaration: J,
        template_distribution: T,
        sibling: SiblingIo,
    ) -> (Self, ClientHandle) {
        Sv2ClientService::builder()
            .config(config)
            .mining(mining)
            .job_declaration(job_declaration)
            .template_distribution(template_distribution)
            .sibling_io(sibling)
            .start()
    }
}

impl<M, J, T> tower::Service<Request> for Sv2ClientService<M, J, T> {
    type Response = Response;
    type Error = ServiceError;
    type Future = crate::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServiceError>> {
        self.requests.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.requests.call(req)
    }
}

/// Builds and starts a [`Sv2ClientService`].
#[derive(Debug)]
pub struct ClientBuilder<
    M = NullSv2MiningClientHandler,
    J = NullSv2JobDeclarationClientHandler,
    T = NullSv2TemplateDistributionClientHandler,
    L = Identity,
> {
    config: ClientConfig,
    m: M,
    j: J,
    t: T,
    layer: L,
    sibling: Option<SiblingEnd>,
    upstream: UpstreamWatch,
}

/// The publishers of [`ClientHandle::watch_upstream`], one per subprotocol, created with the
/// builder so that handlers can be given receivers before the client starts.
#[derive(Debug)]
struct UpstreamWatch(PerSubprotocol<Arc<watch::Sender<Option<ActiveUpstream>>>>);

impl UpstreamWatch {
    fn new() -> Self {
        Self(PerSubprotocol::from_fn(|_| {
            Arc::new(watch::channel(None).0)
        }))
    }
}

impl<M, J, T, L> ClientBuilder<M, J, T, L> {
    /// Replaces the configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// The upstream `protocol` is on, as [`ClientHandle::watch_upstream`], available before
    /// [`Self::start`] so that a handler can hold it: in `on_connection_added` it tells which
    /// upstream (index in [`ClientConfig::endpoints`]) the new connection is on, e.g. to open
    /// channels with that upstream's own `user_identity` (see [`ActiveUpstream`]).
    ///
    /// ```
    /// use tokio::sync::watch;
    /// use tower_stratum_core::handler::Sv2MiningClientHandler;
    /// use tower_stratum_core::{Actions, ConnectionContext, Subprotocol};
    /// use tower_stratum_service::{ActiveUpstream, ClientConfig, Endpoint, Sv2ClientService};
    ///
    /// /// A miner with one pool account per upstream.
    /// struct Miner {
    ///     upstream: watch::Receiver<Option<ActiveUpstream>>,
    ///     user_identities: Vec<String>,
    ///     user_identity: Option<String>,
    /// }
    ///
    /// impl Sv2MiningClientHandler for Miner {
    ///     async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
    ///         let upstream = self.upstream.borrow().clone();
    ///         // Published before the attempt started: the same connection id means this
    ///         // connection is on `index`; another id means it has already ended.
    ///         self.user_identity = upstream
    ///             .filter(|u| u.connection == ctx.id)
    ///             .and_then(|u| self.user_identities.get(u.index).cloned());
    ///         Actions::none() // ...or open the channel as `self.user_identity`
    ///     }
    /// }
    ///
    /// # #[allow(dead_code)]
    /// fn start() -> tower_stratum_service::ClientHandle {
    ///     let config = ClientConfig::default().upstreams(
    ///         Subprotocol::Mining,
    ///         vec![
    ///             Endpoint::plaintext("pool-a.example:34254"),
    ///             Endpoint::plaintext("pool-b.example:34254"),
    ///         ],
    ///     );
    ///     let builder = Sv2ClientService::builder().config(config);
    ///     let miner = Miner {
    ///         upstream: builder.watch_upstream(Subprotocol::Mining),
    ///         user_identities: vec!["account-a.worker".into(), "account-b.worker".into()],
    ///         user_identity: None,
    ///     };
    ///     let (_service, handle) = builder.mining(miner).start();
    ///     handle
    /// }
    /// ```
    pub fn watch_upstream(&self, protocol: Subprotocol) -> watch::Receiver<Option<ActiveUpstream>> {
        self.upstream.0[protocol].subscribe()
    }

    handler_setters!(ClientBuilder, upstream);

    /// Links this client to the server that produced `io`.
    pub fn sibling_io(mut self, io: SiblingIo) -> Self {
        self.sibling = Some(io.end);
        self
    }
}

impl<M, J, T, L> ClientBuilder<M, J, T, L>
where
    M: Sv2MiningClientHandler,
    J: Sv2JobDeclarationClientHandler,
    T: Sv2TemplateDistributionClientHandler,
    L: Layer<HandlerService>,
    L::Service: InboundStack,
{
    /// Starts the client on the current tokio runtime: one supervisor task per used
    /// subprotocol with at least one configured upstream.
    pub fn start(self) -> (Sv2ClientService<M, J, T>, ClientHandle) {
        let cfg = self.config;
        let flags = PerSubprotocol::new(
            self.m.setup_connection_flags(),
            self.j.setup_connection_flags(),
            self.t.setup_connection_flags(),
        );
        let extensions = PerSubprotocol::new(
            self.m.requested_extensions(),
            self.j.requested_extensions(),
            self.t.requested_extensions(),
        );
        let (hub_tx, hub_rx) = mpsc::channel(cfg.handler_queue.max(1));
        let hub = Hub::<Sv2, _>::new(
            ClientHandlers {
                m: self.m,
                j: self.j,
                t: self.t,
            },
            self.sibling,
        );
        let hub_task = tokio::spawn(
            hub.run(hub_rx)
                .instrument(tracing::info_span!("hub", role = "client")),
        );
        let stack = self.layer.layer(HandlerService::new(hub_tx.clone()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ids = Arc::new(AtomicU64::new(1));
        // One budget for every connection of this client.
        let budget = tower_stratum_codec::PartialFrameBudget::new(
            cfg.partial_frame_budget,
            tower_stratum_codec::DEFAULT_PARTIAL_FRAME_ALLOWANCE,
        );
        let (failures_tx, failures) = watch::channel(None);
        let failures_tx = Arc::new(failures_tx);
        let upstream = self.upstream.0;
        for p in Subprotocol::ALL {
            let Some(flags) = flags[p] else {
                continue;
            };
            if cfg.endpoints[p].is_empty() {
                continue;
            }
            let sup = Supervisor {
                protocol: p,
                flags,
                extensions: extensions[p],
                endpoints: cfg.endpoints[p].clone(),
                active: upstream[p].clone(),
                cfg: cfg.clone(),
                stack: stack.clone(),
                hub: hub_tx.clone(),
                cancel: cancel.clone(),
                ids: ids.clone(),
                budget: budget.clone(),
                failures: failures_tx.clone(),
            };
            tracker.spawn(
                sup.run()
                    .instrument(tracing::info_span!("upstream", protocol = %p)),
            );
        }
        tracker.close();
        let stop_tx = hub_tx.clone();
        let task = tokio::spawn(async move {
            tracker.wait().await;
            let _ = stop_tx.send(HubInput::Stop).await;
            drop(stop_tx);
            let _ = hub_task.await;
        });
        (
            Sv2ClientService {
                requests: RequestSender::new(hub_tx),
                _handlers: HandlerTypes::default(),
            },
            ClientHandle {
                cancel,
                task,
                failures,
                upstream: PerSubprotocol::from_fn(|p| upstream[p].subscribe()),
            },
        )
    }
}

/// Controls a running client. Dropping it does NOT stop the client.
#[derive(Debug)]
#[must_use = "a client runs until `shutdown` is called"]
pub struct ClientHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    failures: watch::Receiver<Option<CloseReason>>,
    upstream: PerSubprotocol<watch::Receiver<Option<ActiveUpstream>>>,
}

impl ClientHandle {
    /// How the client logs failed attempts to reach an upstream (TCP connect, Noise handshake
    /// and certificate check, SetupConnection): the first failure after start or after an
    /// established connection, and a failure of another kind than the last one logged, at
    /// WARN (ERROR when the upstream's certificate was rejected: wrong authority key, or an
    /// impostor) with the address and the reason; the same failure repeating is logged again
    /// at most once per this interval, with the number of attempts so far (each attempt in
    /// between at DEBUG). 60 s.
    pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

    /// Closes every upstream connection, stops reconnecting and stops the handlers.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Whether the client has stopped (e.g. reconnection disabled and the upstream closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the client stops by itself.
    pub async fn finished(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// The latest failed attempt to reach an upstream, of any subprotocol: why the TCP
    /// connect (`CloseReason::Io`: refused, unreachable, unknown host, timed out), the Noise
    /// handshake (`CloseReason::Handshake`; `CloseReason::CertificateRejected` for a
    /// certificate not signed by the configured authority key) or SetupConnection (`SetupRejected`, `Incompatible`, a
    /// timeout, or the upstream closing first) failed. `None` until the first failure; a
    /// failure stays there after the connection recovers (the handlers'
    /// `on_connection_added` says it did). Each failure is also logged (see
    /// [`Self::FAILURE_LOG_INTERVAL`]).
    pub fn watch_failures(&self) -> watch::Receiver<Option<CloseReason>> {
        self.failures.clone()
    }

    /// The upstream `protocol` is on (see [`ActiveUpstream`]): `None` before the first attempt
    /// and for a subprotocol the client does not connect; then the upstream of the latest
    /// attempt, published before it starts. `index` changes at every switch: fail-over after
    /// [`ClientConfig::failover_attempts`] failures, fail-back to the primary
    /// ([`ClientConfig::failback_interval`]); each switch is also logged at INFO (`index`,
    /// `address`, `reason`). The last value stays after the client stops.
    pub fn watch_upstream(&self, protocol: Subprotocol) -> watch::Receiver<Option<ActiveUpstream>> {
        self.upstream[protocol].clone()
    }
}

/// Whether a handshake failure is the certificate check (codec's `CertificateRejected`).
fn certificate_rejected(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::CertificateRejected(_))
}

/// What a failure is, for "same failure again": the reason's variant (the details, e.g.
/// certificate timestamps, differ from one attempt to the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FailureKind {
    variant: std::mem::Discriminant<CloseReason>,
}

impl FailureKind {
    fn of(reason: &CloseReason) -> Self {
        Self {
            variant: std::mem::discriminant(reason),
        }
    }
}

/// Whether a failed attempt is logged at WARN/ERROR or only at DEBUG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// First of its kind since the last success, or [`ClientHandle::FAILURE_LOG_INTERVAL`] after the last
    /// report: `attempts` consecutive failures so far.
    Loud { attempts: u32 },
    /// Repeated within the interval.
    Quiet { attempts: u32 },
}

/// The rate limiter of failure logs (sans-IO: time passed in).
#[derive(Debug, Default)]
struct FailureLog {
    attempts: u32,
    last: Option<(Instant, FailureKind)>,
}

impl FailureLog {
    fn failed(&mut self, reason: &CloseReason, now: Instant) -> Report {
        self.attempts = self.attempts.saturating_add(1);
        let kind = FailureKind::of(reason);
        let loud = match self.last {
            None => true,
            Some((at, k)) => {
                k != kind || now.saturating_duration_since(at) >= ClientHandle::FAILURE_LOG_INTERVAL
            }
        };
        if loud {
            self.last = Some((now, kind));
            Report::Loud {
                attempts: self.attempts,
            }
        } else {
            Report::Quiet {
                attempts: self.attempts,
            }
        }
    }

    /// A connection got established: the failures before it, if any.
    fn established(&mut self) -> Option<u32> {
        self.last = None;
        let n = std::mem::take(&mut self.attempts);
        (n > 0).then_some(n)
    }
}

struct Supervisor<S> {
    protocol: Subprotocol,
    flags: u32,
    extensions: ExtensionSet,
    /// At least one.
    endpoints: Vec<Endpoint>,
    active: Arc<watch::Sender<Option<ActiveUpstream>>>,
    cfg: ClientConfig,
    stack: S,
    hub: mpsc::Sender<HubInput<Sv2>>,
    cancel: CancellationToken,
    ids: Arc<AtomicU64>,
    budget: tower_stratum_codec::PartialFrameBudget,
    failures: Arc<watch::Sender<Option<CloseReason>>>,
}

/// Full jitter: a uniformly random duration in `[0, d]`.
fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(connection::now().elapsed().as_nanos());
    let r = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(r)
}

/// Resolves when a probe of the primary (`primary`, a TCP connect bounded by `timeout`) has
/// connected and the policy switched to it; until then runs the probes the policy schedules
/// (never, while on the primary or with fail-back disabled). Dropping it mid-probe leaves the
/// probe due, so the next call probes at once.
async fn fail_back(policy: &mut Upstreams, primary: &str, timeout: Duration) {
    loop {
        let Some(at) = policy.probe_at() else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let ok = probe(primary, timeout).await;
        debug!(address = %primary, ok, "probed the primary upstream");
        if policy.probe_done(ok, connection::now()) {
            return;
        }
    }
}

/// Whether a TCP connection to `address` opens within `timeout` (it is closed at once).
async fn probe(address: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .is_ok_and(|r| r.is_ok())
}

fn split_host_port(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (addr.to_string(), 0),
    }
}

impl<S: InboundStack> Supervisor<S> {
    fn setup_message(&self, host: &str, port: u16) -> Option<SetupConnectionOwned> {
        let c = &self.cfg;
        Some(SetupConnectionOwned {
            protocol: self.protocol.to_sri(),
            min_version: c.session.min_version,
            max_version: c.session.max_version,
            flags: self.flags,
            endpoint_host: str0255(host)?,
            endpoint_port: port,
            vendor: str0255(&c.vendor)?,
            hardware_version: str0255(&c.hardware_version)?,
            firmware: str0255(&c.firmware)?,
            device_id: str0255(&c.device_id)?,
        })
    }

    async fn run(mut self) {
        let mut policy = Upstreams::new(self.endpoints.len(), &self.cfg);
        let mut why = SwitchReason::Start;
        let mut address = self.endpoints[0].address.clone();
        let mut log = FailureLog::default();
        // Why the latest attempt failed (for the fail-over line).
        let mut last_failure = None;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let index = policy.current();
            let id = ConnectionId(self.ids.fetch_add(1, Ordering::Relaxed));
            self.active.send_replace(Some(ActiveUpstream {
                protocol: self.protocol,
                index,
                address: address.clone(),
                connection: id,
                reason: why,
            }));
            let outcome = self.attempt(index, &address, id, &mut policy).await;
            let next = match outcome {
                Outcome::Shutdown => return,
                Outcome::FailBack => Next::Retry {
                    delay: Duration::ZERO,
                    switched: Some(SwitchReason::FailBack),
                },
                Outcome::Reconnect { host, port } => {
                    // Spec 3.6.5: same authority key, new (or same) host/port, at once.
                    let (old_host, old_port) = split_host_port(&address);
                    let host = if host.is_empty() { old_host } else { host };
                    let port = if port == 0 { old_port } else { port };
                    address = format!("{host}:{port}");
                    info!(%address, "server asked us to reconnect");
                    policy.redirected();
                    continue;
                }
                Outcome::Closed {
                    established,
                    reason,
                } => {
                    let next = if established {
                        if let Some(n) = log.established() {
                            debug!(%address, failed_attempts = n, "the connection had recovered");
                        }
                        policy.established();
                        policy.ended()
                    } else {
                        self.report_failure(&mut log, &address, &reason);
                        last_failure = Some(reason.clone());
                        policy.failed(connection::now())
                    };
                    match next {
                        Next::GiveUp { failures: 0 } => {
                            info!(%reason, "upstream closed; reconnection disabled");
                        }
                        Next::GiveUp { failures } if self.cfg.reconnect.is_none() => {
                            warn!(%reason, failures, "upstream unreachable; reconnection disabled");
                        }
                        Next::GiveUp { failures } => {
                            warn!(%reason, failures, "upstream unreachable; giving up");
                        }
                        Next::Retry { delay, .. } => {
                            debug!(%reason, delay_ms = delay.as_millis() as u64, "reconnecting after backoff");
                        }
                    }
                    next
                }
            };
            let Next::Retry { delay, switched } = next else {
                return;
            };
            if let Some(switch) = switched {
                why = switch;
                address = self.endpoints[policy.current()].address.clone();
                log = FailureLog::default();
                self.log_switch(
                    index,
                    policy.current(),
                    &address,
                    why,
                    last_failure.as_ref(),
                );
            }
            if delay.is_zero() {
                continue;
            }
            let fail_back = fail_back(
                &mut policy,
                &self.endpoints[0].address,
                self.cfg.connect_timeout,
            );
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(jitter(delay)) => {}
                () = fail_back => {
                    why = SwitchReason::FailBack;
                    address = self.endpoints[0].address.clone();
                    log = FailureLog::default();
                    self.log_switch(index, 0, &address, why, None);
                }
            }
        }
    }

    /// Logs a switch from upstream `from` to `index` at INFO (the start on the primary is no
    /// switch: not logged); `failure`: why the last attempt on `from` failed.
    fn log_switch(
        &self,
        from: usize,
        index: usize,
        address: &str,
        reason: SwitchReason,
        failure: Option<&CloseReason>,
    ) {
        let of = self.endpoints.len();
        match reason {
            SwitchReason::Start => {}
            SwitchReason::FailOver => info!(
                index,
                of,
                %address,
                %reason,
                from,
                failover_attempts = self.cfg.failover_attempts.max(1),
                last_failure = %failure.map(ToString::to_string).unwrap_or_default(),
                "switching upstream: the previous one failed"
            ),
            SwitchReason::FailBack => info!(
                index,
                of,
                %address,
                %reason,
                from,
                "switching upstream: the primary answers again"
            ),
        }
    }

    /// One connection attempt on upstream `index` at `address`, while probing the primary if
    /// the policy says so. A probe that connects closes this connection (as at shutdown) and
    /// yields [`Outcome::FailBack`].
    async fn attempt(
        &mut self,
        index: usize,
        address: &str,
        id: ConnectionId,
        policy: &mut Upstreams,
    ) -> Outcome {
        let stop = self.cancel.child_token();
        let cancel = self.cancel.clone();
        let primary = self.endpoints[0].address.clone();
        let timeout = self.cfg.connect_timeout;
        // `&mut self`, not `&self`, across the awaits: the stack need not be `Sync`.
        let conn = self.connect_once(index, address, id, stop.clone());
        tokio::pin!(conn);
        let fail_back = fail_back(policy, &primary, timeout);
        tokio::select! {
            outcome = &mut conn => return outcome,
            () = fail_back => {}
        }
        debug!(%address, "closing the backup connection to fail back");
        stop.cancel();
        let _ = conn.await;
        if cancel.is_cancelled() {
            Outcome::Shutdown
        } else {
            Outcome::FailBack
        }
    }

    /// Logs a failed attempt (rate-limited, see [`ClientHandle::FAILURE_LOG_INTERVAL`]) and publishes it.
    fn report_failure(&self, log: &mut FailureLog, address: &str, reason: &CloseReason) {
        self.failures.send_replace(Some(reason.clone()));
        match log.failed(reason, Instant::now()) {
            Report::Loud { attempts } if certificate_rejected(reason) => error!(
                %address,
                attempts,
                %reason,
                "upstream certificate rejected: not signed by the configured authority key \
                 (wrong key, or not the server you meant); retrying"
            ),
            Report::Loud { attempts } => warn!(
                %address,
                attempts,
                %reason,
                "cannot reach the upstream; retrying"
            ),
            Report::Quiet { attempts } => {
                debug!(%address, attempts, %reason, "upstream attempt failed again")
            }
        }
    }

    async fn connect_once(
        &mut self,
        index: usize,
        address: &str,
        id: ConnectionId,
        stop: CancellationToken,
    ) -> Outcome {
        let connect = tokio::time::timeout(
            self.cfg.connect_timeout,
            tokio::net::TcpStream::connect(address),
        );
        let stream = tokio::select! {
            _ = stop.cancelled() => return Outcome::Shutdown,
            r = connect => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Outcome::Closed { established: false, reason: CloseReason::Io(e.to_string()) },
                Err(_) => return Outcome::Closed { established: false, reason: CloseReason::Io("connect timed out".into()) },
            },
        };
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let (host, port) = split_host_port(address);
        let Some(setup) = self.setup_message(&host, port) else {
            return Outcome::Shutdown;
        };
        let Some(endpoint) = self.endpoints.get(index) else {
            return Outcome::Shutdown;
        };
        let transport = match &endpoint.transport {
            ClientTransport::Plaintext => Transport::Plain,
            ClientTransport::Noise { authority } => Transport::NoiseInitiator {
                authority: *authority,
            },
        };
        let handshake = match transport {
            Transport::Plain => TransportHandshake::None,
            _ => TransportHandshake::Noise,
        };
        let params = ConnParams {
            id,
            peer,
            transport,
            session: Session::client(
                self.cfg.session,
                setup,
                self.cfg.inactivity_timeout[self.protocol],
                handshake,
                connection::now(),
            )
            .with_extension_request(self.extensions, self.cfg.extensions_timeout),
            stack: self.stack.clone(),
            hub: self.hub.clone(),
            cancel: stop,
            max_payload: self.cfg.max_payload,
            budget: self.budget.clone(),
            outbound_queue: self.cfg.outbound_queue,
            max_in_flight: self.cfg.max_in_flight,
            write_timeout: self.cfg.write_timeout,
        };
        let (reason, was_established) = connection::run_reporting(stream, params).await;
        debug!(%reason, "upstream connection ended");
        match reason {
            CloseReason::Shutdown if self.cancel.is_cancelled() => Outcome::Shutdown,
            CloseReason::Reconnect { host, port } => Outcome::Reconnect { host, port },
            reason => Outcome::Closed {
                established: was_established,
                reason,
            },
        }
    }
}

enum Outcome {
    Shutdown,
    /// A probe of the primary connected; the backup connection was closed.
    FailBack,
    Reconnect {
        host: String,
        port: u16,
    },
    Closed {
        established: bool,
        reason: CloseReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_log_is_loud_once_per_kind_then_once_per_interval() {
        let t0 = Instant::now();
        let refused = CloseReason::Io("connection refused".into());
        let cert = CloseReason::CertificateRejected("certificate version 0, valid_from 1".into());
        let cert2 = CloseReason::CertificateRejected("certificate version 0, valid_from 2".into());
        let mut log = FailureLog::default();
        assert_eq!(log.failed(&refused, t0), Report::Loud { attempts: 1 });
        let s = Duration::from_secs(1);
        assert_eq!(log.failed(&refused, t0 + s), Report::Quiet { attempts: 2 });
        assert_eq!(
            log.failed(&refused, t0 + 59 * s),
            Report::Quiet { attempts: 3 }
        );
        // Another kind of failure: at once.
        assert_eq!(log.failed(&cert, t0 + 59 * s), Report::Loud { attempts: 4 });
        // The same kind with other details: quiet.
        assert_eq!(
            log.failed(&cert2, t0 + 60 * s),
            Report::Quiet { attempts: 5 }
        );
        // The interval after the last loud one: loud again, with the count.
        assert_eq!(
            log.failed(&cert2, t0 + 119 * s),
            Report::Loud { attempts: 6 }
        );
        assert_eq!(log.established(), Some(6));
        assert_eq!(log.established(), None);
        // After a success the next failure is the first again.
        assert_eq!(
            log.failed(&cert, t0 + 120 * s),
            Report::Loud { attempts: 1 }
        );
        assert!(certificate_rejected(&cert));
        assert!(!certificate_rejected(&refused));
        assert!(!certificate_rejected(&CloseReason::Handshake(
            "i/o error".into()
        )));
    }
}
