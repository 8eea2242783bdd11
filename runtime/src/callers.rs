//! Who may call a service. With mutual TLS the handshake already proved that
//! the caller holds a certificate of the platform's authority; this layer
//! decides what that caller may do by the identity the certificate is issued
//! for: the service's API only for the identities allowed (the gateway), its
//! health for anyone certified (operators' probes), and nothing else. A
//! refused call gets PERMISSION_DENIED and a warning in the log, before any
//! of the service's code runs.
//!
//! Without TLS (a local stack's plaintext on loopback) there is no identity
//! to check and the layer lets everything through; the chassis refuses
//! plaintext anywhere else.

use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// The gRPC health service's path prefix: open to every certified caller.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// The callers a service accepts.
#[derive(Debug, Clone)]
pub enum Callers {
    /// No TLS: nothing to check.
    Anyone,
    /// Mutual TLS: these identities may call the API.
    Certified { api: Arc<[ServerName<'static>]> },
}

impl Callers {
    /// Mutual TLS, with the API open to `identities` (the DNS names of their
    /// certificates). A name that is not a valid DNS name is an error.
    pub fn certified(identities: &[String]) -> Result<Callers, String> {
        let names = identities
            .iter()
            .map(|identity| {
                ServerName::try_from(identity.clone()).map_err(|_| format!("not a valid caller identity: {identity:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Callers::Certified { api: names.into() })
    }

    /// Why the call to `path` by the holder of `chain` (its certificate
    /// first, as the handshake verified it) is refused; `None` when it is allowed.
    fn refusal(&self, path: &str, chain: Option<&[CertificateDer<'static>]>) -> Option<&'static str> {
        let Callers::Certified { api } = self else { return None };
        let Some(certificate) = chain.and_then(|chain| chain.first()) else {
            // The handshake requires a certificate; a connection without one
            // did not come through it.
            return Some("no client certificate");
        };
        if path.starts_with(HEALTH) {
            return None;
        }
        let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else {
            return Some("unreadable client certificate");
        };
        let allowed = api.iter().any(|name| certificate.verify_is_valid_for_subject_name(name).is_ok());
        (!allowed).then_some("the caller's certificate is not issued for an identity allowed to call this API")
    }
}

/// The layer the chassis puts in front of every service's API.
#[derive(Debug, Clone)]
pub struct CallersLayer(pub Callers);

impl<S> Layer<S> for CallersLayer {
    type Service = CheckCallers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckCallers { inner, callers: self.0.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct CheckCallers<S> {
    inner: S,
    callers: Callers,
}

impl<S, B, R> Service<Request<B>> for CheckCallers<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let chain = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs());
        match self.callers.refusal(request.uri().path(), chain.as_deref().map(Vec::as_slice)) {
            None => futures::future::Either::Left(self.inner.call(request)),
            Some(reason) => {
                let peer = request
                    .extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|info| info.get_ref().remote_addr());
                tracing::warn!(path = request.uri().path(), peer = ?peer, reason, "gRPC call refused");
                let status = tonic::Status::permission_denied(format!("refused: {reason}"));
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tls_every_call_passes() {
        assert_eq!(Callers::Anyone.refusal("/saga.user.v1.UserService/CreateUser", None), None);
    }

    #[test]
    fn with_tls_a_call_without_a_certificate_is_refused_even_for_health() {
        let callers = Callers::certified(&["gateway".to_owned()]).expect("valid names");
        assert!(callers.refusal("/grpc.health.v1.Health/Check", None).is_some());
        assert!(callers.refusal("/grpc.health.v1.Health/Check", Some(&[])).is_some());
    }

    /// A certificate issued for `name` by a fresh authority, as DER.
    fn certificate_for(name: &str) -> CertificateDer<'static> {
        let mut authority = rcgen::CertificateParams::default();
        authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let authority_key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::Issuer::new(authority, authority_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.signed_by(&key, &issuer).expect("signed").der().clone()
    }

    #[test]
    fn the_api_answers_only_the_allowed_identity_and_health_any_certified_caller() {
        let callers = Callers::certified(&["gateway".to_owned()]).expect("valid names");
        let (gateway, operator) = ([certificate_for("gateway")], [certificate_for("operator")]);
        let api = "/saga.user.v1.UserService/CreateUser";
        assert_eq!(callers.refusal(api, Some(&gateway)), None);
        assert!(callers.refusal(api, Some(&operator)).is_some());
        assert!(
            callers.refusal("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Some(&operator)).is_some()
        );
        assert_eq!(callers.refusal("/grpc.health.v1.Health/Check", Some(&operator)), None);
        let garbage = [CertificateDer::from(vec![1, 2, 3])];
        assert!(callers.refusal(api, Some(&garbage)).is_some());
    }

    #[test]
    fn an_identity_that_is_no_dns_name_is_refused_at_start() {
        assert!(Callers::certified(&["not a name!".to_owned()]).is_err());
    }
}
