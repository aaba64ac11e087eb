//! [`Sv1ServerService`]: accepts miners, runs one task per connection, dispatches every line
//! to the [`Sv1ServerHandler`].

use crate::config::Sv1ServerConfig;
use crate::connection::{self, ConnParams};
use crate::handler::{NullSv1ServerHandler, Sv1ServerHandler};
use crate::hub::{Hub, HubInput, Sibling};
use crate::request::{RequestSender, Sv1HandlerService, Sv1InboundStack, Sv1Request, Sv1Response};
use crate::session::Sv1ServerSession;
use crate::Sv1ServiceError;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::layer::util::{Identity, Stack};
use tower::Layer;
use tower_stratum_core::ConnectionId;
use tower_stratum_service::{Listener, SiblingIo};
use tracing::{info, warn, Instrument};

/// A running Sv1 server's request interface: a cloneable
/// `tower::Service<`[`Sv1Request`]`, Response = `[`Sv1Response`]`, Error = `[`Sv1ServiceError`]`>`
/// (push to miners, list them, disconnect, tick the handler, talk to the sibling).
///
/// ```no_run
/// use tower_stratum_sv1_service::{Sv1ServerService, Sv1ServerHandler, Sv1ConnectionContext, Sv1Actions};
/// use tower_stratum_sv1::{Id, Response, Subscribe, SubscribeResult};
///
/// /// Hands every miner the same extranonce1 and nothing to mine.
/// struct Hello;
/// impl Sv1ServerHandler for Hello {
///     async fn handle_subscribe(&mut self, _: Sv1ConnectionContext, id: Id, _: Subscribe) -> Sv1Actions {
///         let r = SubscribeResult { subscriptions: vec![], extranonce1: vec![0; 4], extranonce2_size: 4 };
///         Sv1Actions::reply(Response::ok(id, r.to_value()))
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (_service, handle) = Sv1ServerService::builder().handler(Hello).serve(listener);
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sv1ServerService<H = NullSv1ServerHandler> {
    requests: RequestSender,
    _handler: PhantomData<fn() -> H>,
}

impl<H> Clone for Sv1ServerService<H> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            _handler: PhantomData,
        }
    }
}

impl Sv1ServerService {
    /// A builder with the default [`Sv1ServerConfig`] and the [`NullSv1ServerHandler`].
    pub fn builder() -> Sv1ServerBuilder {
        Sv1ServerBuilder {
            config: Sv1ServerConfig::default(),
            handler: NullSv1ServerHandler,
            layer: Identity::new(),
            sibling: None,
        }
    }
}

impl<H> tower::Service<Sv1Request> for Sv1ServerService<H> {
    type Response = Sv1Response;
    type Error = Sv1ServiceError;
    type Future = Pin<Box<dyn Future<Output = Result<Sv1Response, Sv1ServiceError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Sv1ServiceError>> {
        self.requests.poll_ready(cx)
    }

    fn call(&mut self, req: Sv1Request) -> Self::Future {
        self.requests.call(req)
    }
}

/// Builds and starts an [`Sv1ServerService`]. Setting the handler or adding a layer changes
/// the builder's type.
#[derive(Debug)]
pub struct Sv1ServerBuilder<H = NullSv1ServerHandler, L = Identity> {
    config: Sv1ServerConfig,
    handler: H,
    layer: L,
    sibling: Option<SiblingIo>,
}

impl<H, L> Sv1ServerBuilder<H, L> {
    /// Replaces the configuration.
    pub fn config(mut self, config: Sv1ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the handler.
    pub fn handler<H2>(self, handler: H2) -> Sv1ServerBuilder<H2, L> {
        Sv1ServerBuilder {
            config: self.config,
            handler,
            layer: self.layer,
            sibling: self.sibling,
        }
    }

    /// Wraps the inbound stack (every message a miner sends, on its way to the handler) with
    /// `layer`; the first layer added is the outermost.
    pub fn layer<L2>(self, layer: L2) -> Sv1ServerBuilder<H, Stack<L2, L>> {
        Sv1ServerBuilder {
            config: self.config,
            handler: self.handler,
            layer: Stack::new(layer, self.layer),
            sibling: self.sibling,
        }
    }

    /// Links this server to the service holding the other end of `io`
    /// ([`SiblingIo::pair`]), e.g. an `Sv2ClientService` in a translator.
    pub fn sibling_io(mut self, io: SiblingIo) -> Self {
        self.sibling = Some(io);
        self
    }

    /// Links this server to a new sibling link of `config.sibling_queue` messages per
    /// direction; returns the other end for the sibling service.
    pub fn with_sibling_io(mut self) -> (Self, SiblingIo) {
        let (mine, theirs) = SiblingIo::pair(self.config.sibling_queue);
        self.sibling = Some(mine);
        (self, theirs)
    }
}

impl<H, L> Sv1ServerBuilder<H, L>
where
    H: Sv1ServerHandler,
    L: Layer<Sv1HandlerService>,
    L::Service: Sv1InboundStack,
{
    /// Starts serving `listener` on the current tokio runtime: one task per accepted stream
    /// (TCP, or any `AsyncRead + AsyncWrite` through a [`Listener`]), one hub task owning the
    /// handler. Returns the request interface and the handle that shuts it down.
    pub fn serve<Lst: Listener>(self, listener: Lst) -> (Sv1ServerService<H>, Sv1ServerHandle) {
        let cfg = self.config;
        let (hub_tx, hub_rx) = mpsc::channel(cfg.handler_queue.max(1));
        let sibling = self.sibling.map(|io| {
            let (tx, rx) = io.into_channels();
            Sibling { tx, rx }
        });
        let hub = Hub::new(self.handler, sibling);
        let hub_task = tokio::spawn(
            hub.run(hub_rx)
                .instrument(tracing::info_span!("hub", role = "sv1-server")),
        );
        let stack = self.layer.layer(Sv1HandlerService::new(hub_tx.clone()));
        let cancel = CancellationToken::new();
        let accept = accept_loop(AcceptLoop {
            listener,
            cfg,
            stack,
            hub_tx: hub_tx.clone(),
            cancel: cancel.clone(),
            hub_task,
        });
        let task = tokio::spawn(accept.instrument(tracing::info_span!("sv1_server")));
        (
            Sv1ServerService {
                requests: RequestSender::new(hub_tx),
                _handler: PhantomData,
            },
            Sv1ServerHandle { cancel, task },
        )
    }
}

struct AcceptLoop<Lst, S> {
    listener: Lst,
    cfg: Sv1ServerConfig,
    stack: S,
    hub_tx: mpsc::Sender<HubInput>,
    cancel: CancellationToken,
    hub_task: JoinHandle<()>,
}

async fn accept_loop<Lst: Listener, S: Sv1InboundStack>(a: AcceptLoop<Lst, S>) {
    let AcceptLoop {
        mut listener,
        cfg,
        stack,
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
                let params = ConnParams {
                    id,
                    peer,
                    session: Sv1ServerSession::new(cfg.session, connection::now()),
                    stack: stack.clone(),
                    hub: hub_tx.clone(),
                    cancel: cancel.child_token(),
                    max_line_length: cfg.max_line_length,
                    outbound_queue: cfg.outbound_queue,
                    write_timeout: cfg.write_timeout,
                };
                tracker.spawn(connection::run(io, params));
            }
            Ok(None) => {
                info!("listener finished");
                cancel.cancelled().await;
                break;
            }
            Err(e) => {
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
    info!("sv1 server stopped");
}

/// Controls a running Sv1 server. Dropping it does NOT stop the server; call
/// [`Sv1ServerHandle::shutdown`].
#[derive(Debug)]
#[must_use = "a server runs until `shutdown` is called"]
pub struct Sv1ServerHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Sv1ServerHandle {
    /// Graceful shutdown: stop accepting, close every connection (each gets
    /// `on_connection_removed` with [`Sv1CloseReason::Shutdown`](crate::Sv1CloseReason::Shutdown)),
    /// stop the handler (a linked sibling then sees one `handle_sibling_closed`). Resolves
    /// when every task is done.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }

    /// Whether the server has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}
