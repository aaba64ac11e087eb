//! Optional TLS (feature `tls`, rustls with the `ring` provider) for both Sv1 services.
//!
//! - Server: wrap any [`Listener`] in a [`TlsListener`]. The TLS handshake runs lazily in the
//!   connection's own task on its first read or write (never in the accept loop), so a peer
//!   that connects and stays silent delays nobody, and the session's setup deadline bounds it.
//! - Client: [`Sv1ClientService::connect_tls`](crate::sv1::Sv1ClientService::connect_tls).
//!
//! Certificates and keys come as rustls types ([`rustls::pki_types`]);
//! [`server_config`] builds a server configuration from PEM text.

use crate::Listener;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{server::TlsStream, Accept, TlsAcceptor};

/// The rustls crate in use, to build configurations.
pub use tokio_rustls::rustls;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The certificate chain or the private key is not valid PEM.
    #[error("PEM: {0}")]
    Pem(String),
    /// rustls refused the certificate/key pair.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
/// authentication) from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsConfigError`] on unreadable PEM or a key that does not match.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsConfigError::Pem("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsConfigError::Pem(format!("private key: {e}")))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// A rustls client configuration (ring provider) trusting exactly `roots` (DER certificates:
/// a private CA or a self-signed server certificate).
///
/// # Errors
/// [`TlsConfigError::Rustls`] if a root is unusable.
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A [`Listener`] whose streams are TLS server streams over `L`'s. The handshake happens in
/// the connection task (see the module docs).
pub struct TlsListener<L> {
    inner: L,
    acceptor: TlsAcceptor,
}

impl<L: std::fmt::Debug> std::fmt::Debug for TlsListener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<L> TlsListener<L> {
    /// Serves TLS with `config` on the streams of `inner`.
    pub fn new(inner: L, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            inner,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Io = LazyTlsStream<L::Io>;

    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<Option<(Self::Io, Option<SocketAddr>)>>> + Send {
        let acceptor = self.acceptor.clone();
        let next = self.inner.accept();
        async move {
            Ok(next.await?.map(|(io, peer)| {
                (
                    LazyTlsStream::Accepting(Box::new(acceptor.accept(io))),
                    peer,
                )
            }))
        }
    }
}

/// A TLS server stream that completes its handshake on first use.
pub enum LazyTlsStream<IO> {
    /// Handshake in progress.
    Accepting(Box<Accept<IO>>),
    /// Handshake done.
    Ready(Box<TlsStream<IO>>),
    /// Handshake failed; every operation fails.
    Failed,
}

impl<IO> std::fmt::Debug for LazyTlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LazyTlsStream::Accepting(_) => "LazyTlsStream::Accepting",
            LazyTlsStream::Ready(_) => "LazyTlsStream::Ready",
            LazyTlsStream::Failed => "LazyTlsStream::Failed",
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> LazyTlsStream<IO> {
    /// Drives the handshake; `Ready(Ok(stream))` once established.
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<IO>>> {
        if let LazyTlsStream::Accepting(accept) = self {
            match Pin::new(accept.as_mut()).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(s)) => *self = LazyTlsStream::Ready(Box::new(s)),
                Poll::Ready(Err(e)) => {
                    *self = LazyTlsStream::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match self {
            LazyTlsStream::Ready(s) => Poll::Ready(Ok(s.as_mut())),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "TLS handshake failed",
            ))),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for LazyTlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_stream(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LazyTlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_stream(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Nothing written yet: nothing to flush.
            LazyTlsStream::Accepting(_) | LazyTlsStream::Failed => Poll::Ready(Ok(())),
            LazyTlsStream::Ready(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LazyTlsStream::Accepting(_) | LazyTlsStream::Failed => Poll::Ready(Ok(())),
            LazyTlsStream::Ready(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
