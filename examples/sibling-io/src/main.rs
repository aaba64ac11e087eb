//! A proxy-shaped process: an Sv2 mining server and an Sv2 mining client linked by sibling IO.
//!
//! The client connects upstream to a second, independent server (started here too, so the
//! example runs alone). When the upstream accepts the client, the client's handler tells the
//! server side through the sibling link; the server side answers; when the client stops, the
//! server sees exactly one `handle_sibling_closed`.
//!
//! Run: `cargo run -p sibling-io`.

use std::time::Duration;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum::handler::{Sv2MiningClientHandler, Sv2MiningServerHandler};
use tower_stratum::{
    Action, Actions, ClientConfig, ConnectionContext, Endpoint, Request, ServerConfig,
    ServerTransport, SetupSupport, SiblingMessage, Subprotocol, Sv2ClientService, Sv2ServerService,
};

/// Server side of the proxy: prints sibling events and answers "hello" with "welcome".
struct Downstream {
    log: mpsc::Sender<String>,
}

impl Sv2MiningServerHandler for Downstream {
    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        if let Some(text) = msg.downcast_ref::<String>() {
            let _ = self
                .log
                .send(format!("server got from sibling: {text}"))
                .await;
            if text.starts_with("upstream connected") {
                return Action::ToSibling(SiblingMessage::custom(String::from("welcome"))).into();
            }
        }
        Actions::none()
    }

    async fn handle_sibling_closed(&mut self) -> Actions {
        let _ = self.log.send("server: sibling closed".into()).await;
        Actions::none()
    }
}

/// Client side of the proxy: reports upstream connection events to the server side.
struct Upstream {
    log: mpsc::Sender<String>,
}

impl Sv2MiningClientHandler for Upstream {
    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        let text = format!("upstream connected (version {})", ctx.info.version);
        Action::ToSibling(SiblingMessage::custom(text)).into()
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        if let Some(text) = msg.downcast_ref::<String>() {
            let _ = self
                .log
                .send(format!("client got from sibling: {text}"))
                .await;
        }
        Actions::none()
    }
}

/// The independent upstream pool: accepts mining connections.
struct Pool;
impl Sv2MiningServerHandler for Pool {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: 0,
            success_flags: 0,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();
    let keys = tower_stratum::codec::AuthorityKeypair::generate();

    // The upstream pool.
    let pool_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pool_addr = pool_listener.local_addr()?;
    let (_pool, pool_handle) = Sv2ServerService::builder()
        .config(ServerConfig::with_transport(ServerTransport::noise(
            keys.clone(),
        )))
        .mining(Pool)
        .serve(pool_listener);

    // The proxy: a server and a client linked by sibling IO.
    let (log, mut events) = mpsc::channel(16);
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (mut server, server_handle, sibling) = Sv2ServerService::new_with_sibling_io(
        ServerConfig::default(),
        proxy_listener,
        Downstream { log: log.clone() },
        tower_stratum::handler::NullSv2JobDeclarationServerHandler,
        tower_stratum::handler::NullSv2TemplateDistributionServerHandler,
    );
    let client_config = ClientConfig::default().endpoint(
        Subprotocol::Mining,
        Endpoint::noise(pool_addr.to_string(), keys.public()),
    );
    let (_client, client_handle) = Sv2ClientService::new_from_sibling_io(
        client_config,
        Upstream { log },
        tower_stratum::handler::NullSv2JobDeclarationClientHandler,
        tower_stratum::handler::NullSv2TemplateDistributionClientHandler,
        sibling,
    );

    let deadline = Duration::from_secs(10);
    for _ in 0..2 {
        let line = tokio::time::timeout(deadline, events.recv())
            .await?
            .ok_or("log closed")?;
        println!("{line}");
    }
    // The application can also talk to the sibling through the server's tower::Service.
    server
        .ready()
        .await?
        .call(Request::ToSibling(SiblingMessage::custom(String::from(
            "from the app",
        ))))
        .await?;
    println!(
        "{}",
        tokio::time::timeout(deadline, events.recv())
            .await?
            .ok_or("log closed")?
    );

    client_handle.shutdown().await;
    println!(
        "{}",
        tokio::time::timeout(deadline, events.recv())
            .await?
            .ok_or("log closed")?
    );
    server_handle.shutdown().await;
    pool_handle.shutdown().await;
    Ok(())
}
