//! [`Sv2ServerService`]: accepts connections, runs one task per connection, dispatches every
//! message to the server handlers.

use crate::config::{ServerConfig, ServerTransport};
use crate::connection::{self, ConnParams, Transport};
use crate::hub::{HandlerSet, Hub, HubInput, ServerHandlers, SiblingEnd};
use crate::inbound::{HandlerService, InboundStack};
use crate::listener::Listener;
use crate::protocol::{Protocol, Sv2};
use crate::request::{Request, RequestSender, Response};
use crate::{HandlerTypes, ServiceError};
use futures_util::FutureExt;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::layer::util::{Identity, Stack};
use tower::Layer;
use tower_stratum_core::handler::{
    NullSv2JobDeclarationServerHandler, NullSv2MiningServerHandler,
    NullSv2TemplateDistributionServerHandler, Sv2JobDeclarationServerHandler,
    Sv2MiningServerHandler, Sv2TemplateDistributionServerHandler,
};
use tower_stratum_core::session::{ProtocolSupport, TransportHandshake};
use tower_stratum_core::{ConnectionId, PerSubprotocol, Session, SetupSupport};
use tracing::{info, warn, Instrument};

/// A running Sv2 server's request interface: a cloneable
/// `tower::Service<`[`Request`]`, Response = `[`Response`]`, Error = `[`ServiceError`]`>`.
///
/// The type parameters name the handlers it serves (Mining, Job Declaration, Template
/// Distribution); each defaults to its Null handler, which refuses that subprotocol at
/// SetupConnection with `unsupported-protocol`.
///
/// ```no_run
/// use tower_stratum_service::{ServerConfig, Sv2ServerService};
/// use tower_stratum_core::handler::Sv2MiningServerHandler;
///
/// struct MyPool;
/// impl Sv2MiningServerHandler for MyPool {}
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (service, handle) = Sv2ServerService::builder()
///     .config(ServerConfig::default())
///     .mining(MyPool)
///     .serve(listener);
/// // ... use `service` (tower::Service<Request>) to push jobs, list clients ...
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sv2ServerService<
    M = NullSv2MiningServerHandler,
    J = NullSv2JobDeclarationServerHandler,
    T = NullSv2TemplateDistributionServerHandler,
> {
    requests: RequestSender,
    _handlers: HandlerTypes<M, J, T>,
}

impl<M, J, T> Clone for Sv2ServerService<M, J, T> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            _handlers: HandlerTypes::default(),
        }
    }
}

impl Sv2ServerService {
    /// A builder with the default [`ServerConfig`] and Null handlers.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            m: NullSv2MiningServerHandler,
            j: NullSv2JobDeclarationServerHandler,
            t: NullSv2TemplateDistributionServerHandler,
            layer: Identity::new(),
            sibling: None,
        }
    }
}

impl<M, J, T> Sv2ServerService<M, J, T>
where
    M: Sv2MiningServerHandler,
    J: Sv2JobDeclarationServerHandler,
    T: Sv2TemplateDistributionServerHandler,
{
    /// Starts a server linked to a sibling client: returns the server, its handle, and the
    /// [`SiblingIo`] that `Sv2ClientService::new_from_sibling_io` consumes. Messages flow both
    /// ways through bounded queues (`config.sibling_queue` each); when either side stops the
    /// other's handlers get `handle_sibling_closed` exactly once.
    pub fn new_with_sibling_io<L: Listener>(
        config: ServerConfig,
        listener: L,
        mining: M,
        job_declaration: J,
        template_distribution: T,
    ) -> (Self, ServerHandle, SiblingIo) {
        let (builder, io) = Sv2ServerService::builder()
            .config(config)
            .mining(mining)
            .job_declaration(job_declaration)
            .template_distribution(template_distribution)
            .with_sibling_io();
        let (svc, handle) = builder.serve(listener);
        (svc, handle, io)
    }
}

impl<M, J, T> tower::Service<Request> for Sv2ServerService<M, J, T> {
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

/// The sibling end handed from a server to a client (see
/// [`Sv2ServerService::new_with_sibling_io`]).
#[derive(Debug)]
pub struct SiblingIo {
    pub(crate) end: SiblingEnd,
}

impl SiblingIo {
    /// Two linked ends with `capacity` messages of room in each direction, for linking any two
    /// services that accept a `SiblingIo` (e.g. an Sv1 server and an Sv2 client in a
    /// translator). What one end sends, the other's handlers receive; when one end's service
    /// stops, the other sees one `handle_sibling_closed`.
    pub fn pair(capacity: usize) -> (SiblingIo, SiblingIo) {
        let cap = capacity.max(1);
        let (a_tx, a_rx) = mpsc::channel(cap);
        let (b_tx, b_rx) = mpsc::channel(cap);
        (
            SiblingIo {
                end: SiblingEnd { tx: a_tx, rx: b_rx },
            },
            SiblingIo {
                end: SiblingEnd { tx: b_tx, rx: a_rx },
            },
        )
    }

    /// Builds an end from raw channels (the inverse of [`SiblingIo::into_channels`]), for
    /// services outside this crate that keep their own hub.
    pub fn from_channels(
        tx: mpsc::Sender<tower_stratum_core::SiblingMessage>,
        rx: mpsc::Receiver<tower_stratum_core::SiblingMessage>,
    ) -> Self {
        SiblingIo {
            end: SiblingEnd { tx, rx },
        }
    }

    /// Takes the raw bounded channels, for a sibling that is not a `Sv2ClientService` (e.g. an
    /// in-process template source): the sender reaches the server's handlers'
    /// `handle_sibling_message`; the receiver yields what they send with `Action::ToSibling`.
    /// Dropping both makes the server see one `handle_sibling_closed`.
    pub fn into_channels(
        self,
    ) -> (
        mpsc::Sender<tower_stratum_core::SiblingMessage>,
        mpsc::Receiver<tower_stratum_core::SiblingMessage>,
    ) {
        (self.end.tx, self.end.rx)
    }
}

/// Builds and starts a [`Sv2ServerService`]. Setters that change a handler or add a layer
/// change the builder's type.
#[derive(Debug)]
pub struct ServerBuilder<
    M = NullSv2MiningServerHandler,
    J = NullSv2JobDeclarationServerHandler,
    T = NullSv2TemplateDistributionServerHandler,
    L = Identity,
> {
    config: ServerConfig,
    m: M,
    j: J,
    t: T,
    layer: L,
    sibling: Option<SiblingEnd>,
}

impl<M, J, T, L> ServerBuilder<M, J, T, L> {
    /// Replaces the configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    handler_setters!(ServerBuilder);

    /// Links this server to a sibling client; returns the [`SiblingIo`] for the client.
    pub fn with_sibling_io(mut self) -> (Self, SiblingIo) {
        let (mine, theirs) = SiblingIo::pair(self.config.sibling_queue);
        self.sibling = Some(mine.end);
        (self, theirs)
    }

    /// Links this server to the service holding the other end of `io` (see
    /// [`SiblingIo::pair`]).
    pub fn sibling_io(mut self, io: SiblingIo) -> Self {
        self.sibling = Some(io.end);
        self
    }
}

fn support(s: Option<SetupSupport>, inactivity: Option<Duration>) -> Option<ProtocolSupport> {
    s.map(|s| ProtocolSupport {
        supported_flags: s.supported_flags,
        success_flags: s.success_flags,
        inactivity_timeout: inactivity,
    })
}

impl<M, J, T, L> ServerBuilder<M, J, T, L>
where
    M: Sv2MiningServerHandler,
    J: Sv2JobDeclarationServerHandler,
    T: Sv2TemplateDistributionServerHandler,
    L: Layer<HandlerService>,
    L::Service: InboundStack,
{
    /// Starts serving `listener` on the current tokio runtime. Each accepted stream gets its own
    /// task, which runs the handshake under `config.session.handshake_timeout`, so a peer that
    /// connects and says nothing never delays another.
    pub fn serve<Lst: Listener>(self, listener: Lst) -> (Sv2ServerService<M, J, T>, ServerHandle) {
        let cfg = self.config;
        let inact = cfg.inactivity_timeout;
        let supports = PerSubprotocol::new(
            support(self.m.setup_support(), inact.mining),
            support(self.j.setup_support(), inact.job_declaration),
            support(self.t.setup_support(), inact.template_distribution),
        );
        let extensions = PerSubprotocol::new(
            self.m.extension_support(),
            self.j.extension_support(),
            self.t.extension_support(),
        );
        let hub = Hub::<Sv2, _>::new(
            ServerHandlers {
                m: self.m,
                j: self.j,
                t: self.t,
            },
            self.sibling,
        );
        let layer = self.layer;
        let transport = match &cfg.transport {
            ServerTransport::Plaintext => Transport::Plain,
            ServerTransport::Noise {
                keypair,
                cert_validity,
            } => Transport::NoiseResponder {
                keypair: keypair.clone(),
                cert_validity: *cert_validity,
            },
        };
        let session_cfg = cfg.session;
        let handshake = match transport {
            Transport::Plain => TransportHandshake::None,
            _ => TransportHandshake::Noise,
        };
        // One budget for every connection of this server.
        let budget = tower_stratum_codec::PartialFrameBudget::new(
            cfg.partial_frame_budget,
            tower_stratum_codec::DEFAULT_PARTIAL_FRAME_ALLOWANCE,
        );
        let connections = move |hub: mpsc::Sender<HubInput<Sv2>>| {
            let stack = layer.layer(HandlerService::new(hub.clone()));
            move |io, id, peer, cancel| {
                let params = ConnParams {
                    id,
                    peer,
                    transport: transport.clone(),
                    session: Session::server(session_cfg, supports, handshake, connection::now())
                        .with_extension_support(extensions),
                    stack: stack.clone(),
                    hub: hub.clone(),
                    cancel,
                    max_payload: cfg.max_payload,
                    budget: budget.clone(),
                    outbound_queue: cfg.outbound_queue,
                    max_in_flight: cfg.max_in_flight,
                    write_timeout: cfg.write_timeout,
                };
                connection::run(io, params).map(drop)
            }
        };
        let (requests, handle) = spawn_server(hub, cfg.handler_queue, listener, connections);
        (
            Sv2ServerService {
                requests,
                _handlers: HandlerTypes::default(),
            },
            handle,
        )
    }
}

/// Starts a server of protocol `P` on the current tokio runtime: the hub task running `hub`
/// (fed by a queue of `handler_queue` inputs, at least 1) and the accept loop, which hands each
/// accepted stream to the connection task built by `connections(hub input sender)`. Returns
/// the sender that application requests use and the handle that stops it all. Every
/// protocol's server is started here, so the life of a server is written once.
pub(crate) fn spawn_server<P, H, Lst, C, F, Fut>(
    hub: Hub<P, H>,
    handler_queue: usize,
    listener: Lst,
    connections: C,
) -> (RequestSender<P>, ServerHandle)
where
    P: Protocol,
    H: HandlerSet<P>,
    Lst: Listener,
    C: FnOnce(mpsc::Sender<HubInput<P>>) -> F,
    F: FnMut(Lst::Io, ConnectionId, Option<std::net::SocketAddr>, CancellationToken) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (hub_tx, hub_rx) = mpsc::channel(handler_queue.max(1));
    let hub_task = tokio::spawn(hub.run(hub_rx).instrument(tracing::info_span!(
        "hub",
        protocol = P::NAME,
        role = "server"
    )));
    let connection = connections(hub_tx.clone());
    let cancel = CancellationToken::new();
    let accept = accept_loop(
        Accepting {
            listener,
            hub_tx: hub_tx.clone(),
            cancel: cancel.clone(),
            hub_task,
        },
        connection,
    );
    let task = tokio::spawn(accept.instrument(tracing::info_span!("server", protocol = P::NAME)));
    (RequestSender::new(hub_tx), ServerHandle { cancel, task })
}

/// What the accept loop of any protocol's server owns.
pub(crate) struct Accepting<P: Protocol, Lst> {
    pub(crate) listener: Lst,
    pub(crate) hub_tx: mpsc::Sender<HubInput<P>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) hub_task: JoinHandle<()>,
}

/// Accepts streams until shutdown, each run by `connection(io, id, peer, cancel)` in its own
/// task; then waits for every connection task, stops the hub and waits for it.
pub(crate) async fn accept_loop<P, Lst, F, Fut>(a: Accepting<P, Lst>, mut connection: F)
where
    P: Protocol,
    Lst: Listener,
    F: FnMut(Lst::Io, ConnectionId, Option<std::net::SocketAddr>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Accepting {
        mut listener,
        hub_tx,
        cancel,
        hub_task,
    } = a;
    let tracker = TaskTracker::new();
    let mut next_id = 1u64;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(Some((io, peer))) => {
                let id = ConnectionId(next_id);
                next_id += 1;
                tracker.spawn(connection(io, id, peer, cancel.child_token()));
            }
            Ok(None) => {
                info!("listener finished");
                cancel.cancelled().await;
                break;
            }
            Err(e) => {
                // E.g. EMFILE: pause instead of spinning on the error.
                warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    let _ = hub_tx.send(HubInput::Stop).await;
    drop(hub_tx);
    let _ = hub_task.await;
    info!(protocol = P::NAME, "server stopped");
}

/// Controls a running server (Sv2 or Sv1). Dropping it does NOT stop the server; call
/// [`ServerHandle::shutdown`].
#[derive(Debug)]
#[must_use = "a server runs until `shutdown` is called"]
pub struct ServerHandle {
    pub(crate) cancel: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

impl ServerHandle {
    /// Graceful shutdown: stop accepting, close every connection (including ones still in
    /// the handshake), call `on_connection_removed` for each established one, stop the
    /// handlers (the sibling, if any, sees it closed). Resolves when all tasks are done.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Whether the server has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}
