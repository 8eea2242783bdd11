//! Mutual TLS between the gateway and the services.
//!
//! One certificate authority signs every party's certificate; a party's
//! identity is the DNS name its certificate is issued for (`gateway`,
//! `order`, `product`, `user`, `operator`). A service presents the
//! certificate of its own name and asks every caller for one of the
//! authority's; the gateway, calling, checks that the server's certificate is
//! issued for the service it meant to reach, whatever address it dialled.
//! Which identities may call what is the server's decision (the runtime's
//! `callers` layer): the gateway calls the APIs, anyone the authority
//! certified may ask a service's health.
//!
//! The files are PEM, named after the identity in one folder
//! (`<identity>.pem`, `<identity>.key`, `ca.pem`): what `cargo xtask up`
//! writes under the stack's state folder, and what a Kubernetes secret of
//! type `kubernetes.io/tls` mounts (`tls.crt`, `tls.key`, `ca.crt`) under other
//! names, which is why each file is configured on its own.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The gateway's identity: the only caller of the services' APIs.
pub const GATEWAY: &str = "gateway";
/// The identity of operators' tools (`cargo xtask`, probes): may ask health only.
pub const OPERATOR: &str = "operator";
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
}
