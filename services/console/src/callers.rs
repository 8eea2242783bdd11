//! Who may reach the console. The console trusts the gateway to have authenticated an
//! admin and to name them in [`crate::api::ADMIN_HEADER`]; that header is believed only
//! from the gateway, and the gateway proves who it is with its client certificate.
//!
//! With its TLS files the console serves HTTPS with mutual TLS only: the handshake asks
//! every client for a certificate of the platform's authority, so a plaintext or anonymous
//! client, or one certified by anyone else, fails before any request is read. Then the
//! certificate's identity (the DNS name it is issued for) decides: the page, its assets and
//! the API answer only the identities of `ALLOWED_CALLERS` (the gateway); `/healthz`
//! answers anyone certified (the `operator` certificate of `cargo xtask`); anything else is
//! 403 and a warning in the log, before any of the console's code runs.
//!
//! Without TLS files there is no caller to check, so the console never serves its API: it
//! answers `/healthz`, the page and its assets (which hold no data) and refuses the rest
//! with 403, wherever it listens.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use rustls_pki_types::{CertificateDer, ServerName};
use saga_proto::tls::is_issued_for;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The path any certified caller may ask: is the console up.
pub const HEALTH: &str = "/healthz";

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections through their handshake waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Whom the console answers.
#[derive(Debug, Clone)]
pub enum Callers {
    /// No TLS: no caller can be told apart, so the API answers nobody.
    Nobody,
    /// Mutual TLS: these identities may use the console; any certified caller may ask health.
    Certified { allowed: Arc<[String]> },
}

impl Callers {
    /// Mutual TLS, the console open to `identities` (the DNS names of their certificates).
    pub fn certified(identities: &[String]) -> Result<Callers, String> {
        if identities.is_empty() {
            return Err("no caller allowed: name at least the gateway".into());
        }
        for identity in identities {
            ServerName::try_from(identity.as_str())
                .map_err(|_| format!("not a valid caller identity: {identity:?}"))?;
        }
        Ok(Callers::Certified { allowed: identities.into() })
    }

    /// Why a request for `path` from the holder of `certificate` (the first of the chain
    /// the handshake verified) is refused; `None` when it is answered.
    pub fn refusal(&self, path: &str, certificate: Option<&CertificateDer<'_>>) -> Option<&'static str> {
        match self {
            Callers::Nobody => {
                let open = path == HEALTH || path == "/console" || path.starts_with("/console/assets/");
                (!open).then_some(
                    "the console serves its API over mutual TLS only, and has no TLS_CERT, TLS_KEY and \
                     TLS_CLIENT_CA",
                )
            }
            Callers::Certified { allowed } => {
                // The handshake requires a certificate; a connection without one did not
                // come through it.
                let Some(certificate) = certificate else { return Some("no client certificate") };
                if path == HEALTH {
                    return None;
                }
                let known = allowed.iter().any(|identity| is_issued_for(certificate, identity));
                (!known).then_some("the caller's certificate is not issued for an identity allowed to use the console")
            }
        }
    }
}

/// Who is on the other end of a connection: its address, and the certificate it presented
/// in the handshake (none over plaintext).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub certificate: Option<CertificateDer<'static>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        let (_, connection) = stream.io().get_ref();
        let certificate =
            connection.peer_certificates().and_then(|chain| chain.first()).map(|c| c.clone().into_owned());
        Peer { addr: *stream.remote_addr(), certificate }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer { addr: *stream.remote_addr(), certificate: None }
    }
}

#[derive(Debug, serde::Serialize)]
struct Refused {
    code: &'static str,
    message: String,
}

/// The middleware in front of every route: 403 for a caller [`Callers::refusal`] refuses.
pub async fn check(State(callers): State<Callers>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|ConnectInfo(peer)| peer);
    let certificate = peer.and_then(|p| p.certificate.as_ref());
    let path = request.uri().path();
    match callers.refusal(path, certificate) {
        None => next.run(request).await,
        Some(reason) => {
            let peer = peer.map(|p| p.addr.to_string()).unwrap_or_default();
            tracing::warn!(path, peer, reason, "console request refused");
            let body = Refused { code: "forbidden", message: format!("refused: {reason}") };
            (StatusCode::FORBIDDEN, Json(body)).into_response()
        }
    }
}

/// A TCP listener whose connections are handed on once their TLS handshake succeeded.
/// Handshakes run concurrently, each for at most [`HANDSHAKE_TIMEOUT`], so a slow or
/// silent client holds up nobody else.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` (in the current Tokio runtime) with `config`.
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (send, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    // The server is gone: stop accepting.
                    () = send.closed() => return,
                    next = listener.accept() => match next {
                        Ok(next) => next,
                        Err(error) => {
                            accept_failed(error).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, send) = (acceptor.clone(), send.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = send.send((tls, peer)).await;
                        }
                        // Connected and left without a word: a TCP probe, or a port scan.
                        Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                            tracing::debug!(%peer, "connection closed before a TLS handshake");
                        }
                        Ok(Err(error)) => tracing::warn!(%peer, %error, "TLS handshake refused"),
                        Err(_) => tracing::warn!(%peer, "TLS handshake not finished in time"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

/// What `axum::serve` does with a failed accept: a connection's own trouble is its own;
/// anything else (out of file descriptors) is waited out a moment.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task holds the sender until this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate issued for `name` by a fresh authority, as DER.
    fn certificate_for(name: &str) -> CertificateDer<'static> {
        let mut authority = rcgen::CertificateParams::default();
        authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(authority, rcgen::KeyPair::generate().expect("key"));
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.signed_by(&key, &issuer).expect("signed").der().clone()
    }

    #[test]
    fn the_console_answers_the_gateway_and_health_any_certified_caller() {
        let callers = Callers::certified(&["gateway".to_owned()]).expect("valid names");
        let (gateway, operator) = (certificate_for("gateway"), certificate_for("operator"));
        for path in ["/console/api/dlq", "/console/api/dlq/redrive", "/console", "/console/assets/console.js", "/x"] {
            assert_eq!(callers.refusal(path, Some(&gateway)), None, "{path}");
            assert!(callers.refusal(path, Some(&operator)).is_some(), "{path}");
            assert!(callers.refusal(path, None).is_some(), "{path}");
        }
        assert_eq!(callers.refusal(HEALTH, Some(&operator)), None);
        assert!(callers.refusal(HEALTH, None).is_some(), "health too needs a certificate");
        assert!(callers.refusal("/console/api/dlq", Some(&CertificateDer::from(vec![1, 2, 3]))).is_some());
    }

    #[test]
    fn without_tls_the_api_answers_nobody() {
        for path in ["/console/api/dlq", "/console/api/dlq/redrive", "/console/api/overview", "/anything"] {
            assert!(Callers::Nobody.refusal(path, None).is_some(), "{path}");
        }
        for path in [HEALTH, "/console", "/console/assets/console.js"] {
            assert_eq!(Callers::Nobody.refusal(path, None), None, "{path}");
        }
    }

    #[test]
    fn caller_identities_are_dns_names() {
        assert!(Callers::certified(&["not a name!".to_owned()]).is_err());
        assert!(Callers::certified(&[]).is_err());
    }
}
