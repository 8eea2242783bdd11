//! Mutual TLS between the gateway and the services, and between the gateway
//! and the operator console.
//!
//! One certificate authority signs every party's certificate; a party's
//! identity is the DNS name its certificate is issued for (`gateway`,
//! `order`, `product`, `user`, `console`, `operator`). A server presents the
//! certificate of its own name and asks every caller for one of the
//! authority's; the gateway, calling, checks that the server's certificate is
//! issued for the party it meant to reach, whatever address it dialled.
//! Which identities may call what is the server's decision (the runtime's
//! `callers` layer for gRPC, the console's own for HTTPS): the gateway calls
//! the APIs, anyone the authority certified may ask a server's health.
//!
//! gRPC uses tonic's TLS settings ([`TlsFiles::server`], [`TlsFiles::client`]);
//! the console's HTTPS uses rustls directly ([`TlsFiles::https_server`],
//! [`TlsFiles::https_client`]), with ring as tonic does.
//!
//! The files are PEM, named after the identity in one folder
//! (`<identity>.pem`, `<identity>.key`, `ca.pem`): what `cargo xtask up`
//! writes under the stack's state folder, and what a Kubernetes secret of
//! type `kubernetes.io/tls` mounts (`tls.crt`, `tls.key`, `ca.crt`) under other
//! names, which is why each file is configured on its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The gateway's identity: the only caller of the services' APIs.
pub const GATEWAY: &str = "gateway";
/// The identity of operators' tools (`cargo xtask`, probes): may ask health only.
pub const OPERATOR: &str = "operator";
/// The operator console's identity: the server the gateway forwards `/console` to.
pub const CONSOLE: &str = "console";
/// The certificate authority's certificate in a folder of credentials.
pub const CA_FILE: &str = "ca.pem";

/// The three files of one party: whom it trusts, and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The authority's certificate (PEM): what the other side's certificate must chain to.
    pub ca: PathBuf,
    /// This party's certificate (PEM).
    pub cert: PathBuf,
    /// This party's private key (PEM).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Incomplete(String),
    #[error("the TLS file {path} holds no usable {what}: {detail}")]
    Pem { path: PathBuf, what: &'static str, detail: String },
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
    #[error("the authority's certificates: {0}")]
    Verifier(String),
    #[error("{0:?} is not a DNS name a certificate can be issued for")]
    Name(String),
}

impl TlsFiles {
    /// The files of `identity` in `folder`, as `cargo xtask up` writes them.
    pub fn in_folder(folder: &Path, identity: &str) -> TlsFiles {
        TlsFiles {
            ca: folder.join(CA_FILE),
            cert: folder.join(format!("{identity}.pem")),
            key: folder.join(format!("{identity}.key")),
        }
    }

    /// The files given by three optional settings (`what` names them in the
    /// error): all three, or none for plaintext; anything between is a
    /// mistake that would silently fall back to plaintext, so it is an error.
    pub fn from_settings(
        what: &str,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
            _ => Err(TlsError::Incomplete(format!("{what}: give all three of the CA, certificate and key, or none"))),
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
    }

    fn authority(&self) -> Result<Certificate, TlsError> {
        Ok(Certificate::from_pem(Self::read(&self.ca)?))
    }

    fn identity(&self) -> Result<Identity, TlsError> {
        Ok(Identity::from_pem(Self::read(&self.cert)?, Self::read(&self.key)?))
    }

    /// The certificates of a PEM file, in order; at least one.
    fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = |detail: String| TlsError::Pem { path: path.to_owned(), what: "certificate", detail };
        let certificates = CertificateDer::pem_slice_iter(&Self::read(path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(e.to_string()))?;
        if certificates.is_empty() {
            return Err(pem("no CERTIFICATE block".into()));
        }
        Ok(certificates)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&Self::read(&self.key)?).map_err(|e| TlsError::Pem {
            path: self.key.clone(),
            what: "private key",
            detail: e.to_string(),
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for certificate in Self::certificates(&self.ca)? {
            roots.add(certificate).map_err(|e| TlsError::Pem {
                path: self.ca.clone(),
                what: "authority certificate",
                detail: e.to_string(),
            })?;
        }
        Ok(Arc::new(roots))
    }

    /// A server that presents this party's certificate and requires every
    /// client to present one the authority signed: no plaintext, no
    /// anonymous TLS.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new().identity(self.identity()?).client_ca_root(self.authority()?))
    }

    /// A client that presents this party's certificate and accepts only a
    /// server whose certificate the authority issued for `server` (a
    /// service's name), whatever address it connects to.
    pub fn client(&self, server: &str) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new().ca_certificate(self.authority()?).identity(self.identity()?).domain_name(server))
    }

    /// An HTTPS server (HTTP/1.1) that presents this party's certificate and
    /// requires every client to present one the authority signed: a
    /// plaintext or anonymous client fails in the handshake. Which of the
    /// certified identities may do what is the server's to decide
    /// ([`is_issued_for`] on the client's certificate).
    pub fn https_server(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = ring();
        let clients = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
            .with_single_cert(Self::certificates(&self.cert)?, self.private_key()?)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// An HTTPS client that presents this party's certificate and accepts
    /// only a server whose certificate the authority issued for `server` (a
    /// party's name), whatever address it connects to: what tonic's
    /// `domain_name` does for gRPC.
    pub fn https_client(&self, server: &str) -> Result<rustls::ClientConfig, TlsError> {
        let provider = ring();
        let name = ServerName::try_from(server.to_owned()).map_err(|_| TlsError::Name(server.to_owned()))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            // Not a weaker check: the same verification, against the name the server must
            // have instead of the address dialled.
            .with_custom_certificate_verifier(Arc::new(Named { inner: verifier, name }))
            .with_client_auth_cert(Self::certificates(&self.cert)?, self.private_key()?)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// rustls's cryptography from ring, given explicitly: no process-wide default to install.
fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// True when `certificate` (DER, as the handshake verified it) is issued for
/// the identity `name`: the check of who the holder of a verified chain is.
pub fn is_issued_for(certificate: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(certificate), Ok(name)) = (webpki::EndEntityCert::try_from(certificate), ServerName::try_from(name)) else {
        return false;
    };
    certificate.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The authority's verification of a server's certificate, for a fixed name.
#[derive(Debug)]
struct Named {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An authority and a certificate per name, written as `cargo xtask up` writes them.
    fn issue(names: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("saga-proto-tls-{}-{}", std::process::id(), names.join("-")));
        std::fs::create_dir_all(&dir).expect("folder");
        let mut authority = rcgen::CertificateParams::default();
        authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let authority_key = rcgen::KeyPair::generate().expect("key");
        let authority_cert = authority.self_signed(&authority_key).expect("self-signed");
        std::fs::write(dir.join(CA_FILE), authority_cert.pem()).expect("ca");
        let issuer = rcgen::Issuer::new(authority, authority_key);
        for name in names {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec![(*name).to_owned()])
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("signed");
            let files = TlsFiles::in_folder(&dir, name);
            std::fs::write(files.cert, cert.pem()).expect("cert");
            std::fs::write(files.key, key.serialize_pem()).expect("key");
        }
        dir
    }

    /// Runs a handshake in memory; the client's certificate as the server saw it, or why it failed.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<Option<CertificateDer<'static>>, String> {
        let dialled = ServerName::try_from("127.0.0.1").expect("an address");
        let mut client = rustls::ClientConnection::new(Arc::new(client), dialled).map_err(|e| e.to_string())?;
        let mut server = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| e.to_string())?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).map_err(|e| e.to_string())?;
            server.read_tls(&mut wire.as_slice()).map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| format!("server: {e}"))?;
            let mut wire = Vec::new();
            server.write_tls(&mut wire).map_err(|e| e.to_string())?;
            client.read_tls(&mut wire.as_slice()).map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| format!("client: {e}"))?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(server.peer_certificates().and_then(|c| c.first().cloned()).map(|c| c.into_owned()));
            }
        }
        Err("the handshake did not finish".into())
    }

    #[test]
    fn the_console_knows_the_gateway_and_the_gateway_the_console_whatever_address_it_dialled() {
        let dir = issue(&[GATEWAY, CONSOLE, OPERATOR]);
        let server = TlsFiles::in_folder(&dir, CONSOLE).https_server().expect("server");
        let client = TlsFiles::in_folder(&dir, GATEWAY).https_client(CONSOLE).expect("client");
        let seen = handshake(client, server.clone()).expect("handshake").expect("a client certificate");
        assert!(is_issued_for(&seen, GATEWAY));
        assert!(!is_issued_for(&seen, OPERATOR));
        // Certified, but someone else: the handshake passes, the name tells them apart.
        let operator = TlsFiles::in_folder(&dir, OPERATOR).https_client(CONSOLE).expect("client");
        let seen = handshake(operator, server).expect("handshake").expect("a client certificate");
        assert!(is_issued_for(&seen, OPERATOR) && !is_issued_for(&seen, GATEWAY));
        assert!(!is_issued_for(&CertificateDer::from(vec![1, 2, 3]), GATEWAY));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_server_of_another_name_and_a_client_without_a_certificate_fail_the_handshake() {
        let dir = issue(&[GATEWAY, CONSOLE, "order"]);
        let gateway = TlsFiles::in_folder(&dir, GATEWAY);
        let impostor = TlsFiles::in_folder(&dir, "order").https_server().expect("server");
        let error = handshake(gateway.https_client(CONSOLE).expect("client"), impostor).expect_err("refused");
        assert!(error.starts_with("client:"), "{error}");

        let console = TlsFiles::in_folder(&dir, CONSOLE).https_server().expect("server");
        let verifier = WebPkiServerVerifier::builder_with_provider(gateway.roots().expect("roots"), ring())
            .build()
            .expect("verifier");
        let anonymous = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Named {
                inner: verifier,
                name: ServerName::try_from(CONSOLE).expect("name"),
            }))
            .with_no_client_auth();
        let error = handshake(anonymous, console).expect_err("refused");
        assert!(error.starts_with("server:"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unreadable_files_are_errors() {
        let dir = issue(&[CONSOLE]);
        let mut files = TlsFiles::in_folder(&dir, CONSOLE);
        files.key = files.cert.clone();
        assert!(matches!(files.https_server(), Err(TlsError::Pem { what: "private key", .. })));
        files.cert = dir.join("missing.pem");
        assert!(matches!(files.https_server(), Err(TlsError::Read { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }
}
