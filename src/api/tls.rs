//! HTTPS for `tidewater serve` (`api.tls_cert_file`, `api.tls_key_file`), and the size
//! limits of requests: a listener that completes TLS handshakes on tasks of their own
//! (a slow client holds up nobody) and hands finished connections to axum, and a layer
//! that answers 414 to an over-long query string and 413 to an over-large body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ApiConfig, ConfigError, load_certificates, load_private_key};

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS for the API cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file is missing or does not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate and key do not make a usable TLS configuration.
    #[error("api.tls_cert_file and api.tls_key_file are not a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
    /// The listener's address is unknown.
    #[error("cannot read the API listener's address: {0}")]
    Io(#[from] std::io::Error),
}

/// The TLS acceptor of the API, when `api.tls_cert_file` and `api.tls_key_file` are set.
pub fn acceptor(api: &ApiConfig) -> Result<Option<TlsAcceptor>, TlsSetupError> {
    let (Some(cert), Some(key)) = (&api.tls_cert_file, &api.tls_key_file) else {
        return Ok(None);
    };
    let certs = load_certificates("api.tls_cert_file", cert)?;
    let key = load_private_key("api.tls_key_file", key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A listener whose connections are TLS streams, handshakes done.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Accepts on `tcp`, completing each handshake on a task of its own; stops accepting
    /// when the listener is dropped.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Result<Self, TlsSetupError> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    a = tcp.accept() => a,
                };
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin.
                        tracing::warn!(error = %e, "API: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "API: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "API: TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended: no connection will come again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Adds the API's size limits to `router`: bodies over `api.max_body_bytes` are answered
/// 413, query strings over `api.max_query_bytes` 414.
pub fn with_limits(router: axum::Router, api: &ApiConfig) -> axum::Router {
    let max_query = api.max_query_bytes.get();
    router
        .layer(DefaultBodyLimit::max(api.max_body_bytes.get()))
        .layer(axum::middleware::from_fn(
            move |req: Request<Body>, next: Next| async move {
                let len = req.uri().query().map_or(0, str::len);
                if len > max_query {
                    return too_long(len, max_query);
                }
                next.run(req).await
            },
        ))
}

fn too_long(len: usize, max: usize) -> Response {
    super::ApiError::new(
        StatusCode::URI_TOO_LONG,
        super::ErrorCode::UriTooLong,
        format!("the query string has {len} bytes; at most {max} are accepted"),
    )
    .at("query")
    .into_response()
}
