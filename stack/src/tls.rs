//! The stack's own certificate authority, for mutual TLS between the gateway
//! and the services and the console. `up` issues it once, with a certificate
//! per party (each service, the console, the gateway, and `operator` for the
//! tools that ask health), into
//! `<state>/tls/`: the folder 0700, every file 0600. Certificates are valid
//! for a year and issued again, all of them with a new authority, when one is
//! missing or has less than a month left; a stack running with the old ones
//! keeps them until its processes restart.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use saga_proto::tls::{CA_FILE, CONSOLE, GATEWAY, OPERATOR, TlsFiles};

use super::config::{StackConfig, services};

/// How long the certificates are valid.
const VALID_FOR: Duration = Duration::days(365);
/// How long before they expire `up` issues new ones.
const RENEW_BEFORE: Duration = Duration::days(30);
/// When the current certificates expire (RFC 3339), next to them.
const EXPIRES_FILE: &str = "expires";

/// Every party of the stack's mutual TLS: each service, the console, the gateway, the
/// operator's tools.
pub fn identities() -> Vec<String> {
    let mut names: Vec<String> = services().iter().map(|s| s.name.to_owned()).collect();
    names.extend([CONSOLE.to_owned(), GATEWAY.to_owned(), OPERATOR.to_owned()]);
    names
}

/// The files of `identity` in the stack's folder of credentials.
pub fn files(config: &StackConfig, identity: &str) -> TlsFiles {
    TlsFiles::in_folder(&config.tls_dir(), identity)
}

/// Issues the authority and every party's certificate unless current ones are there.
pub fn ensure(config: &StackConfig) -> anyhow::Result<()> {
    let dir = config.tls_dir();
    if is_current(&dir, Utc::now()) {
        return Ok(());
    }
    issue(&dir, Utc::now()).with_context(|| format!("issuing the gRPC certificates in {}", dir.display()))
}

/// True when every file is there and the certificates do not expire within [`RENEW_BEFORE`] of `now`.
fn is_current(dir: &Path, now: DateTime<Utc>) -> bool {
    let expires = fs::read_to_string(dir.join(EXPIRES_FILE)).ok();
    let Some(expires) = expires.and_then(|e| DateTime::parse_from_rfc3339(e.trim()).ok()) else { return false };
    let present = dir.join(CA_FILE).exists()
        && identities().iter().all(|identity| {
            let files = TlsFiles::in_folder(dir, identity);
            files.cert.exists() && files.key.exists()
        });
    present && expires.with_timezone(&Utc) - now > RENEW_BEFORE
}

fn issue(dir: &Path, now: DateTime<Utc>) -> anyhow::Result<()> {
    let until = now + VALID_FOR;
    let date = |at: DateTime<Utc>| rcgen::date_time_ymd(at.year(), at.month() as u8, at.day() as u8);
    let mut authority = CertificateParams::default();
    authority.distinguished_name = DistinguishedName::new();
    authority.distinguished_name.push(DnType::CommonName, "saga local gRPC authority");
    authority.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    authority.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    authority.not_before = date(now - Duration::days(1));
    authority.not_after = date(until);
    let authority_key = KeyPair::generate()?;
    let authority_cert = authority.self_signed(&authority_key)?;
    let issuer = Issuer::new(authority, authority_key);

    fs::create_dir_all(dir.parent().unwrap_or(dir))?;
    // The new set is written beside the old one and swapped in whole.
    let fresh = dir.with_extension("new");
    if fresh.exists() {
        fs::remove_dir_all(&fresh)?;
    }
    fs::DirBuilder::new().mode(0o700).create(&fresh)?;
    super::write_private(&fresh.join(CA_FILE), &authority_cert.pem())?;
    for identity in identities() {
        let mut party = CertificateParams::new(vec![identity.clone()])?;
        party.distinguished_name = DistinguishedName::new();
        party.distinguished_name.push(DnType::CommonName, identity.as_str());
        party.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // A service and the console are servers to the gateway; every party is a client of
        // some server's health.
        party.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        party.not_before = date(now - Duration::days(1));
        party.not_after = date(until);
        let key = KeyPair::generate()?;
        let cert = party.signed_by(&key, &issuer)?;
        let files = TlsFiles::in_folder(&fresh, &identity);
        super::write_private(&files.cert, &cert.pem())?;
        super::write_private(&files.key, &key.serialize_pem())?;
    }
    super::write_private(&fresh.join(EXPIRES_FILE), &until.to_rfc3339())?;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&fresh, dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn issues_every_party_private_files_once_and_again_near_expiry() {
        let root = std::env::temp_dir().join(format!("saga-tls-{}", uuid::Uuid::new_v4()));
        let dir = root.join("tls");
        let now = Utc::now();
        assert!(!is_current(&dir, now));
        issue(&dir, now).expect("issued");
        assert!(is_current(&dir, now));
        assert_eq!(mode(&dir), 0o700);
        for identity in identities() {
            let files = TlsFiles::in_folder(&dir, &identity);
            assert_eq!((mode(&files.cert), mode(&files.key)), (0o600, 0o600), "{identity}");
        }
        assert_eq!(mode(&dir.join(CA_FILE)), 0o600);
        // Eleven months on, a month is left: issued again, with a new authority.
        let later = now + Duration::days(340);
        assert!(!is_current(&dir, later));
        let before = fs::read(dir.join(CA_FILE)).expect("ca");
        issue(&dir, later).expect("issued again");
        assert_ne!(fs::read(dir.join(CA_FILE)).expect("ca"), before);
        fs::remove_file(TlsFiles::in_folder(&dir, GATEWAY).key).expect("removed");
        assert!(!is_current(&dir, later), "a missing key means issuing again");
        fs::remove_dir_all(root).expect("cleaned up");
    }
}
