//! `--dump-protocol`: one readable line per Sv2 message, `<-` for received, `->` for sent.
//!
//! Received messages are printed by [`DumpLayer`], a tower layer on the client's inbound stack
//! (every message from the upstream passes through it before the handler sees it); sent
//! messages are printed where the miner sends them ([`outbound`]). `SetupConnection` and its
//! answer are exchanged inside the client service and never pass through either place: the
//! handler prints one `== SetupConnection done ...` line with the negotiated version and flags
//! instead.

use std::task::{Context, Poll};
use tower::{Layer, Service};
use tower_stratum::{InboundMessage, Sv2Message};

/// One line for `msg`: its spec name and fields (SRI's `Display`), newlines removed.
pub fn line(msg: &Sv2Message) -> String {
    msg.to_string().replace(['\n', '\r'], " ")
}

/// Prints `-> <message>` on stdout: call it for every message the miner sends.
pub fn outbound(msg: &Sv2Message) {
    println!("-> {}", line(msg));
}

/// Layer printing `<- <message>` on stdout for every inbound message. Compose it with
/// `tower::util::option_layer` to make it optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpLayer;

impl<S> Layer<S> for DumpLayer {
    type Service = Dump<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dump { inner }
    }
}

/// The service of [`DumpLayer`]: prints, then forwards the message unchanged to `inner`.
/// Readiness, response and errors are `inner`'s.
#[derive(Debug, Clone)]
pub struct Dump<S> {
    inner: S,
}

impl<S: Service<InboundMessage>> Service<InboundMessage> for Dump<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: InboundMessage) -> Self::Future {
        println!("<- {}", line(&req.message));
        self.inner.call(req)
    }
}
