//! A raw Sv2 peer: frames over any stream, Noise or plaintext, no session logic — for driving
//! a server through exact byte sequences.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;
use tower_stratum_codec::{connect_noise, AuthorityPublicKey, PlainCodec, Sv2Codec};
use tower_stratum_core::frame::Frame;
use tower_stratum_core::Sv2Message;

pub const MAX: usize = 1 << 20;

pub struct RawPeer<IO> {
    pub framed: Framed<IO, Sv2Codec>,
}

impl<IO> std::fmt::Debug for RawPeer<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawPeer")
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> RawPeer<IO> {
    pub fn plaintext(io: IO) -> Self {
        Self {
            framed: Framed::new(io, Sv2Codec::Plain(PlainCodec::new(MAX))),
        }
    }

    pub async fn noise(
        mut io: IO,
        authority: Option<AuthorityPublicKey>,
    ) -> Result<Self, tower_stratum_codec::HandshakeError> {
        let c = connect_noise(&mut io, authority, MAX).await?;
        Ok(Self {
            framed: Framed::new(io, Sv2Codec::Noise(Box::new(c))),
        })
    }

    pub async fn send(&mut self, m: Sv2Message) {
        self.framed.send(m.encode().unwrap()).await.unwrap();
    }

    pub async fn send_frame(&mut self, f: Frame) {
        self.framed.send(f).await.unwrap();
    }

    /// Next message, or `None` when the server closed the connection (EOF or reset).
    pub async fn recv(&mut self) -> Option<Sv2Message> {
        match self.framed.next().await {
            Some(Ok(f)) => Some(Sv2Message::decode(f).unwrap()),
            _ => None,
        }
    }
}
