//! `Sv1ServerService` and `Sv1ClientService` on loopback TCP: the Sv1 handshake order, bad
//! input (non-JSON, oversize lines, malformed params), deadlines, pushes and deferred replies,
//! slow consumers, graceful shutdown, and the client's calls, timeouts and bounded
//! notification stream. Each negative case also checks that another miner keeps being served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_stratum::sv1_service::{
    Sv1Action, Sv1Actions, Sv1ClientConfig, Sv1ClientError, Sv1ClientService, Sv1CloseReason,
    Sv1ConnectionContext, Sv1Request, Sv1Response, Sv1ServerConfig, Sv1ServerHandle,
    Sv1ServerHandler, Sv1ServerService, Sv1SessionConfig, Sv1Timer,
};
use tower_stratum_core::{ConnectionId, SiblingMessage};
use tower_stratum_sv1::{
    Authorize, ClientMessage, ErrorCode, Id, Notify, PrevHash, Response, ServerMessage, Submit,
    Subscribe, SubscribeResult,
};
use tower_stratum_test_kit::sv1::Sv1LinePeer;
use tower_stratum_test_kit::within;

/// Events the test handler reports.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Added(ConnectionId),
    Removed(ConnectionId, Sv1CloseReason),
    Submit(ConnectionId, String),
}

/// A deferred reply the application asks the handler to send (through `ToHandlers`).
struct Deferred(ConnectionId, Id);

/// A tiny pool: every miner gets extranonce1 = its connection id; `bad` is refused at
/// authorize; shares for job "1" are accepted, others get 21; `mining.slow` is never
/// answered; after authorize it pushes difficulty and a job.
struct TestPool {
    events: mpsc::UnboundedSender<Event>,
}

fn job(id: &str) -> Notify {
    Notify {
        job_id: id.into(),
        prev_hash: PrevHash::from_header_bytes([7; 32]),
        coinb1: vec![1, 2, 3],
        coinb2: vec![4, 5],
        merkle_branch: vec![[9; 32]],
        version: 0x2000_0000,
        nbits: 0x1d00_ffff,
        ntime: 0x6000_0000,
        clean_jobs: true,
    }
}

impl Sv1ServerHandler for TestPool {
    async fn on_connection_added(&mut self, ctx: Sv1ConnectionContext) -> Sv1Actions {
        let _ = self.events.send(Event::Added(ctx.id));
        Sv1Actions::none()
    }

    async fn on_connection_removed(
        &mut self,
        ctx: Sv1ConnectionContext,
        reason: Sv1CloseReason,
    ) -> Sv1Actions {
        let _ = self.events.send(Event::Removed(ctx.id, reason));
        Sv1Actions::none()
    }

    async fn handle_subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        _msg: Subscribe,
    ) -> Sv1Actions {
        let r = SubscribeResult {
            subscriptions: vec![("mining.notify".into(), ctx.id.0.to_string())],
            extranonce1: ctx.id.0.to_be_bytes().to_vec(),
            extranonce2_size: 4,
        };
        Sv1Actions::reply(Response::ok(id, r.to_value()))
    }

    async fn handle_authorize(
        &mut self,
        _ctx: Sv1ConnectionContext,
        id: Id,
        msg: Authorize,
    ) -> Sv1Actions {
        if msg.username == "bad" {
            return Sv1Actions::reply(Response::error(id, ErrorCode::UnauthorizedWorker));
        }
        Sv1Actions::reply(Response::ok(id, true))
            .and(Sv1Action::Reply(ServerMessage::SetDifficulty(1.0)))
            .and(Sv1Action::Reply(job("1").into()))
    }

    async fn handle_submit(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Submit,
    ) -> Sv1Actions {
        let _ = self.events.send(Event::Submit(ctx.id, msg.job_id.clone()));
        if msg.job_id == "1" {
            Sv1Actions::reply(Response::ok(id, true))
        } else {
            Sv1Actions::reply(Response::error(id, ErrorCode::JobNotFound))
        }
    }

    async fn handle_unknown(
        &mut self,
        ctx: Sv1ConnectionContext,
        request: tower_stratum_sv1::Request,
    ) -> Sv1Actions {
        match request.method.as_str() {
            "mining.slow" => Sv1Actions::none(),
            "test.close" => Sv1Actions::close("asked to"),
            "test.push_other" => {
                // Pushes a line to connection `params[0]`.
                let other = request.params[0].as_u64().unwrap();
                Sv1Actions::reply(Response::ok(request.id, true)).and(Sv1Action::SendTo(
                    ConnectionId(other),
                    ServerMessage::ShowMessage(format!("from {}", ctx.id)),
                ))
            }
            _ => tower_stratum::sv1_service::not_supported(request.id),
        }
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Sv1Actions {
        if let Some(Deferred(conn, id)) = msg.downcast_ref::<Deferred>() {
            return Sv1Action::SendTo(
                *conn,
                ServerMessage::Response(Response::ok(id.clone(), true)),
            )
            .into();
        }
        Sv1Actions::none()
    }
}

struct Server {
    addr: SocketAddr,
    service: Sv1ServerService<TestPool>,
    handle: Sv1ServerHandle,
    events: mpsc::UnboundedReceiver<Event>,
}

async fn start(cfg: Sv1ServerConfig) -> Server {
    let (tx, events) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (service, handle) = Sv1ServerService::builder()
        .config(cfg)
        .handler(TestPool { events: tx })
        .serve(listener);
    Server {
        addr,
        service,
        handle,
        events,
    }
}

impl Server {
    async fn next_event(&mut self) -> Event {
        within(10, "a handler event", self.events.recv())
            .await
            .unwrap()
    }

    async fn removed(&mut self) -> (ConnectionId, Sv1CloseReason) {
        loop {
            if let Event::Removed(id, r) = self.next_event().await {
                return (id, r);
            }
        }
    }
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn error_code(line: &str) -> Option<i64> {
    json(line)["error"][0].as_i64()
}

const SUBSCRIBE: &str = r#"{"id":1,"method":"mining.subscribe","params":["test/1.0"]}"#;
const AUTHORIZE: &str = r#"{"id":2,"method":"mining.authorize","params":["w1","x"]}"#;
const SUBMIT: &str =
    r#"{"id":3,"method":"mining.submit","params":["w1","1","00000000","6000000a","0000abcd"]}"#;

/// A miner through subscribe and authorize (reads the replies and the two pushes).
async fn ready_miner(addr: SocketAddr) -> Sv1LinePeer {
    let mut p = Sv1LinePeer::connect(addr).await;
    p.send(SUBSCRIBE).await;
    let sub = p.recv(5).await.unwrap();
    assert!(json(&sub)["result"].is_array(), "{sub}");
    p.send(AUTHORIZE).await;
    assert_eq!(json(&p.recv(5).await.unwrap())["result"], true);
    assert!(p.recv(5).await.unwrap().contains("mining.set_difficulty"));
    assert!(p.recv(5).await.unwrap().contains("mining.notify"));
    p
}

/// The other miner still gets answers.
async fn still_served(m: &mut Sv1LinePeer) {
    m.send(SUBMIT).await;
    let r = m.recv(5).await.unwrap();
    assert_eq!(json(&r)["result"], true, "{r}");
}

#[tokio::test]
async fn handshake_order_is_enforced_before_the_handler() {
    let mut s = start(Sv1ServerConfig::default()).await;
    let mut other = ready_miner(s.addr).await;
    let mut m = Sv1LinePeer::connect(s.addr).await;
    // Submit and authorize before subscribe: 25.
    m.send(SUBMIT).await;
    assert_eq!(error_code(&m.recv(5).await.unwrap()), Some(25));
    m.send(AUTHORIZE).await;
    assert_eq!(error_code(&m.recv(5).await.unwrap()), Some(25));
    m.send(SUBSCRIBE).await;
    assert!(json(&m.recv(5).await.unwrap())["result"].is_array());
    // Subscribe twice: 20.
    m.send(SUBSCRIBE).await;
    let l = m.recv(5).await.unwrap();
    assert_eq!(error_code(&l), Some(20));
    assert!(l.contains("Already subscribed"), "{l}");
    // Submit before authorize: 24; a refused authorize does not authorize.
    m.send(SUBMIT).await;
    assert_eq!(error_code(&m.recv(5).await.unwrap()), Some(24));
    m.send(r#"{"id":4,"method":"mining.authorize","params":["bad","x"]}"#)
        .await;
    assert_eq!(error_code(&m.recv(5).await.unwrap()), Some(24));
    m.send(&SUBMIT.replace("\"w1\"", "\"bad\"")).await;
    assert_eq!(error_code(&m.recv(5).await.unwrap()), Some(24));
    // After authorize the submit reaches the handler; another worker name is still refused.
    m.send(AUTHORIZE).await;
    assert_eq!(json(&m.recv(5).await.unwrap())["result"], true);
    m.recv_matching("mining.notify", 5).await;
    m.send(SUBMIT).await;
    assert_eq!(json(&m.recv(5).await.unwrap())["result"], true);
    m.send(&SUBMIT.replace("\"w1\",\"1\"", "\"w1\",\"2\""))
        .await;
    assert_eq!(error_code(&m.recv(5).await.unwrap()), Some(21));
    still_served(&mut other).await;
    // Only the three submits that passed the session reached the handler.
    let mut submits = 0;
    while let Ok(e) = s.events.try_recv() {
        if matches!(e, Event::Submit(..)) {
            submits += 1;
        }
    }
    assert_eq!(submits, 3);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_params_get_error_20_with_the_id_echoed() {
    let s = start(Sv1ServerConfig::default()).await;
    let mut m = ready_miner(s.addr).await;
    m.send(r#"{"id":"abc","method":"mining.submit","params":["w1","1","zz",5,"x"]}"#)
        .await;
    let l = m.recv(5).await.unwrap();
    assert_eq!(json(&l)["id"], "abc");
    assert_eq!(error_code(&l), Some(20));
    // Unknown method: the default handler answer.
    m.send(r#"{"id":0,"method":"mining.whatever","params":[]}"#)
        .await;
    let l = m.recv(5).await.unwrap();
    assert_eq!(json(&l)["id"], 0);
    assert_eq!(error_code(&l), Some(20));
    // A notification with bad params is ignored; the connection keeps working.
    m.send(r#"{"id":null,"method":"mining.submit","params":[1]}"#)
        .await;
    still_served(&mut m).await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn non_json_line_closes_only_that_connection() {
    let mut s = start(Sv1ServerConfig::default()).await;
    let mut other = ready_miner(s.addr).await;
    let mut m = ready_miner(s.addr).await;
    m.send("this is not json").await;
    m.expect_closed(5).await;
    let (_, reason) = s.removed().await;
    assert!(
        matches!(reason, Sv1CloseReason::InvalidLine(_)),
        "{reason:?}"
    );
    still_served(&mut other).await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn oversize_line_closes_only_that_connection() {
    tower_stratum_test_kit::logs::capture();
    let logged = tower_stratum_test_kit::logs::count("dropped peer");
    let cfg = Sv1ServerConfig {
        max_line_length: 1024,
        ..Sv1ServerConfig::default()
    };
    let mut s = start(cfg).await;
    let mut other = ready_miner(s.addr).await;
    let mut m = ready_miner(s.addr).await;
    // No newline at all: the server must not buffer it forever.
    m.send_raw(&vec![b'a'; 4096]).await;
    m.expect_closed(5).await;
    let (_, reason) = s.removed().await;
    assert_eq!(reason, Sv1CloseReason::LineTooLong);
    // The operator's log says who was dropped and why (INFO, target tower_stratum::peer).
    tower_stratum_test_kit::logs::wait_for("dropped peer", logged, 5).await;
    assert!(tower_stratum_test_kit::logs::count("reason=line too long") > 0);
    still_served(&mut other).await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn setup_deadline_closes_a_miner_that_never_authorizes() {
    let cfg = Sv1ServerConfig {
        session: Sv1SessionConfig {
            setup_timeout: Some(Duration::from_millis(300)),
            ..Sv1SessionConfig::default()
        },
        ..Sv1ServerConfig::default()
    };
    let mut s = start(cfg).await;
    let mut m = Sv1LinePeer::connect(s.addr).await;
    m.send(SUBSCRIBE).await;
    m.recv(5).await.unwrap();
    m.expect_closed(5).await;
    let (_, reason) = s.removed().await;
    assert_eq!(reason, Sv1CloseReason::TimedOut(Sv1Timer::Setup));
    // A miner that completes the handshake in time stays.
    let mut ok = ready_miner(s.addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_served(&mut ok).await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn inactivity_deadline_closes_a_silent_miner() {
    let cfg = Sv1ServerConfig {
        session: Sv1SessionConfig {
            inactivity_timeout: Some(Duration::from_millis(400)),
            ..Sv1SessionConfig::default()
        },
        ..Sv1ServerConfig::default()
    };
    let mut s = start(cfg).await;
    let mut m = ready_miner(s.addr).await;
    m.expect_closed(5).await;
    let (_, reason) = s.removed().await;
    assert_eq!(reason, Sv1CloseReason::TimedOut(Sv1Timer::Inactivity));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn pushes_to_others_broadcasts_and_deferred_replies() {
    let s = start(Sv1ServerConfig::default()).await;
    let mut a = ready_miner(s.addr).await;
    let mut b = ready_miner(s.addr).await;
    let mut svc = s.service.clone();
    let conns = match svc
        .ready()
        .await
        .unwrap()
        .call(Sv1Request::ListConnections)
        .await
    {
        Ok(Sv1Response::Connections(c)) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(conns.len(), 2);
    let (ida, idb) = (conns[0].id, conns[1].id);
    // A handler action addressed to another connection.
    a.send(&format!(
        r#"{{"id":9,"method":"test.push_other","params":[{}]}}"#,
        idb.0
    ))
    .await;
    assert_eq!(json(&a.recv(5).await.unwrap())["result"], true);
    let l = b.recv(5).await.unwrap();
    assert!(
        l.contains("client.show_message") && l.contains(&format!("from {ida}")),
        "{l}"
    );
    // A broadcast from the application reaches both, encoded once, as whole lines.
    svc.ready()
        .await
        .unwrap()
        .call(Sv1Request::Broadcast(job("2").into()))
        .await
        .unwrap();
    for m in [&mut a, &mut b] {
        let l = m.recv(5).await.unwrap();
        assert_eq!(json(&l)["params"][0], "2", "{l}");
    }
    // A request answered later (deferred) through the hub.
    a.send(r#"{"id":"later","method":"mining.slow","params":[]}"#)
        .await;
    svc.ready()
        .await
        .unwrap()
        .call(Sv1Request::ToHandlers(SiblingMessage::custom(Deferred(
            ida,
            Id::from("later"),
        ))))
        .await
        .unwrap();
    let l = a.recv(5).await.unwrap();
    assert_eq!(json(&l)["id"], "later");
    // A handler close: after the reply queued before it.
    a.send(r#"{"id":10,"method":"test.close","params":[]}"#)
        .await;
    a.expect_closed(5).await;
    still_served(&mut b).await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn a_miner_that_does_not_read_is_evicted_and_others_keep_receiving() {
    let cfg = Sv1ServerConfig {
        outbound_queue: 4,
        write_timeout: Duration::from_millis(500),
        ..Sv1ServerConfig::default()
    };
    tower_stratum_test_kit::logs::capture();
    let full_before = tower_stratum_test_kit::logs::count("outbound queue full");
    let mut s = start(cfg).await;
    let mut reader = ready_miner(s.addr).await;
    let _stuck = ready_miner(s.addr).await; // never reads again
    let mut svc = s.service.clone();
    let big = "x".repeat(60_000);
    let (tx_done, mut done) = mpsc::channel::<()>(1);
    // Keep reading on the healthy miner while broadcasting ~24 MB.
    let reading = tokio::spawn(async move {
        let mut n = 0;
        while n < 400 {
            match reader.recv(20).await {
                Some(l) if l.contains("client.show_message") => n += 1,
                Some(_) => {}
                None => panic!("healthy miner disconnected after {n}"),
            }
        }
        let _ = tx_done.send(()).await;
        reader
    });
    for _ in 0..400 {
        svc.ready()
            .await
            .unwrap()
            .call(Sv1Request::Broadcast(ServerMessage::ShowMessage(
                big.clone(),
            )))
            .await
            .unwrap();
    }
    within(30, "the healthy miner to read every push", done.recv()).await;
    let (_, reason) = s.removed().await;
    assert_eq!(reason, Sv1CloseReason::SlowConsumer);
    // Hundreds of pushes found the stuck miner's queue full or closing: one warning.
    assert_eq!(
        tower_stratum_test_kit::logs::count("outbound queue full") - full_before,
        1
    );
    let mut reader = reading.await.unwrap();
    still_served(&mut reader).await;
    s.handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_removes_every_connection_once() {
    let mut s = start(Sv1ServerConfig::default()).await;
    let mut a = ready_miner(s.addr).await;
    let mut b = Sv1LinePeer::connect(s.addr).await;
    // Both registered.
    let mut added = 0;
    while added < 2 {
        if let Event::Added(_) = s.next_event().await {
            added += 1;
        }
    }
    s.handle.shutdown().await;
    a.expect_closed(5).await;
    b.expect_closed(5).await;
    let mut removed = Vec::new();
    while let Ok(e) = s.events.try_recv() {
        if let Event::Removed(id, r) = e {
            assert_eq!(r, Sv1CloseReason::Shutdown);
            removed.push(id);
        }
    }
    removed.sort();
    removed.dedup();
    assert_eq!(removed.len(), 2);
    let mut svc = s.service.clone();
    assert!(svc.ready().await.is_err());
}

#[tokio::test]
async fn client_calls_notifications_and_timeouts() {
    let s = start(Sv1ServerConfig::default()).await;
    let cfg = Sv1ClientConfig {
        call_timeout: Duration::from_millis(300),
        notification_queue: 2,
        ..Sv1ClientConfig::default()
    };
    let (mut c, mut notes, handle) = Sv1ClientService::connect(&s.addr.to_string(), cfg)
        .await
        .unwrap();
    let r = c
        .request(ClientMessage::Subscribe(Id::Null, Subscribe::default()))
        .await
        .unwrap();
    let sub = SubscribeResult::from_result(&r.result).unwrap();
    assert_eq!(sub.extranonce2_size, 4);
    let r = c
        .request(ClientMessage::Authorize(
            Id::Null,
            Authorize {
                username: "w1".into(),
                password: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.bool_result(), Ok(true));
    assert_eq!(notes.recv().await, Some(ServerMessage::SetDifficulty(1.0)));
    assert!(matches!(notes.recv().await, Some(ServerMessage::Notify(n)) if n.job_id == "1"));
    let share = Submit {
        worker_name: "w1".into(),
        job_id: "2".into(),
        extranonce2: vec![0; 4],
        ntime: 1,
        nonce: 2,
        version_bits: None,
    };
    let r = c
        .request(ClientMessage::Submit(Id::Null, share))
        .await
        .unwrap();
    assert_eq!(
        r.bool_result().unwrap_err().kind(),
        Some(ErrorCode::JobNotFound)
    );
    // A request the server never answers times out; the client keeps working.
    let slow = ClientMessage::Unknown(tower_stratum_sv1::Request {
        id: Id::Null,
        method: "mining.slow".into(),
        params: Value::Array(vec![]),
    });
    assert_eq!(c.request(slow).await, Err(Sv1ClientError::Timeout));
    // The notification stream is bounded (2) but loses nothing: 20 pushes, read later.
    let mut svc = s.service.clone();
    for i in 0..20 {
        svc.ready()
            .await
            .unwrap()
            .call(Sv1Request::Broadcast(job(&i.to_string()).into()))
            .await
            .unwrap();
    }
    for i in 0..20 {
        match within(5, "a notification", notes.recv()).await {
            Some(ServerMessage::Notify(n)) => assert_eq!(n.job_id, i.to_string()),
            other => panic!("{other:?}"),
        }
    }
    // Server shutdown: calls fail with Closed, the stream ends.
    s.handle.shutdown().await;
    assert_eq!(within(5, "end of notifications", notes.recv()).await, None);
    let r = c
        .request(ClientMessage::ExtranonceSubscribe(Id::Null))
        .await;
    assert!(matches!(r, Err(Sv1ClientError::Closed(_))), "{r:?}");
    let _ = handle.shutdown().await;
}

/// Holds the answer to every `mining.submit` until `n` of them are waiting: with fewer than
/// `n` requests of one miner in flight at once, nothing is ever answered.
#[derive(Clone)]
struct HoldSubmits<S> {
    inner: S,
    barrier: std::sync::Arc<tokio::sync::Barrier>,
}

impl<S> Service<tower_stratum::sv1_service::Sv1InboundMessage> for HoldSubmits<S>
where
    S: Service<
        tower_stratum::sv1_service::Sv1InboundMessage,
        Response = Sv1Actions,
        Error = tower::BoxError,
    >,
    S::Future: Send + 'static,
{
    type Response = Sv1Actions;
    type Error = tower::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Sv1Actions, tower::BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, m: tower_stratum::sv1_service::Sv1InboundMessage) -> Self::Future {
        let hold = matches!(m.message, ClientMessage::Submit(..));
        let answer = self.inner.call(m);
        let barrier = self.barrier.clone();
        Box::pin(async move {
            let r = answer.await;
            if hold {
                barrier.wait().await;
            }
            r
        })
    }
}

#[tokio::test]
async fn pipelined_submits_are_in_flight_together_and_answered_in_request_order() {
    const BURST: usize = 8;
    let (tx, _events) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(BURST));
    let cfg = Sv1ServerConfig {
        max_in_flight: BURST,
        ..Sv1ServerConfig::default()
    };
    let (_service, handle) = Sv1ServerService::builder()
        .config(cfg)
        .handler(TestPool { events: tx })
        .layer(tower::layer::layer_fn(move |inner| HoldSubmits {
            inner,
            barrier: barrier.clone(),
        }))
        .serve(listener);
    let mut m = ready_miner(addr).await;
    // One write with BURST submits (ids 100..), every other one for an unknown job (21).
    let mut burst = Vec::new();
    for i in 0..BURST {
        let job = if i % 2 == 0 { "1" } else { "9" };
        burst.extend_from_slice(
            format!(
                r#"{{"id":{},"method":"mining.submit","params":["w1","{job}","00000000","6000000a","0000abcd"]}}"#,
                100 + i
            )
            .as_bytes(),
        );
        burst.push(b'\n');
    }
    m.send_raw(&burst).await;
    for i in 0..BURST {
        let l = m
            .recv(10)
            .await
            .expect("an answer to each pipelined submit");
        let v = json(&l);
        assert_eq!(v["id"], 100 + i as u64, "answers in request order: {l}");
        if i % 2 == 0 {
            assert_eq!(v["result"], true, "{l}");
        } else {
            assert_eq!(error_code(&l), Some(21), "{l}");
        }
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_session_answer_between_pipelined_requests_keeps_its_place() {
    let s = start(Sv1ServerConfig::default()).await;
    let mut m = ready_miner(s.addr).await;
    // submit (handler) / malformed params (the session answers 20) / submit (handler), in
    // one write: the session's answer must not overtake the first submit's.
    let lines = [
        SUBMIT.replace("\"id\":3", "\"id\":31"),
        r#"{"id":32,"method":"mining.submit","params":["w1","1","zz",5,"x"]}"#.to_string(),
        SUBMIT.replace("\"id\":3", "\"id\":33"),
    ];
    m.send_raw(format!("{}\n", lines.join("\n")).as_bytes())
        .await;
    let first = m.recv(5).await.unwrap();
    let second = m.recv(5).await.unwrap();
    let third = m.recv(5).await.unwrap();
    assert_eq!(json(&first)["id"], 31, "{first}");
    assert_eq!(json(&first)["result"], true, "{first}");
    assert_eq!(json(&second)["id"], 32, "{second}");
    assert_eq!(error_code(&second), Some(20), "{second}");
    assert_eq!(json(&third)["id"], 33, "{third}");
    assert_eq!(json(&third)["result"], true, "{third}");
    s.handle.shutdown().await;
}
