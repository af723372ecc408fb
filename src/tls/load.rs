//! From the PEM files and the protocol and cipher options to rustls' configurations, with an
//! error that names the file or the value rustls cannot honour.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Loaded;
use crate::config::{AuthClients, TlsConfig};

/// Every file the configuration reads, CA directory entries included.
fn files(cfg: &TlsConfig) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = [
        &cfg.cert_file,
        &cfg.key_file,
        &cfg.client_cert_file,
        &cfg.client_key_file,
        &cfg.ca_cert_file,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    if let Some(dir) = &cfg.ca_cert_dir {
        out.extend(dir_files(dir)?);
    }
    Ok(out)
}

/// The files of a CA directory, in name order.
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading tls-ca-cert-dir {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// A hash of every file's contents: what changed is reloaded.
pub fn fingerprint(cfg: &TlsConfig) -> Result<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for path in files(cfg)? {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        (path, bytes).hash(&mut h);
    }
    Ok(h.finish())
}

pub fn build(cfg: &TlsConfig) -> Result<Loaded> {
    let fingerprint = fingerprint(cfg)?;
    let provider = Arc::new(provider(cfg)?);
    let versions = versions(cfg.protocols.as_deref())?;
    let roots = Arc::new(roots(cfg)?);
    let pair = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Some((certs(c)?, key(k)?)),
        _ => None,
    };
    let server = |auth: AuthClients| -> Result<Option<Arc<ServerConfig>>> {
        let Some((certs, key)) = &pair else {
            return Ok(None);
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let builder = match auth {
            AuthClients::No => builder.with_no_client_auth(),
            AuthClients::Yes => builder.with_client_cert_verifier(verifier.build()?),
            AuthClients::Optional => {
                builder.with_client_cert_verifier(verifier.allow_unauthenticated().build()?)
            }
        };
        let config = builder
            .with_single_cert(certs.clone(), key.clone_key())
            .context("tls-cert-file and tls-key-file do not make a pair")?;
        Ok(Some(Arc::new(config)))
    };
    let replicas = server(cfg.auth_clients)?;
    let admin = server(AuthClients::No)?;
    let client = if cfg.replication {
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)?
            .with_root_certificates(roots.clone());
        // Redis presents tls-client-cert-file when given, else its server pair.
        let config = match (&cfg.client_cert_file, &cfg.client_key_file, &pair) {
            (Some(c), Some(k), _) => builder
                .with_client_auth_cert(certs(c)?, key(k)?)
                .context("tls-client-cert-file and tls-client-key-file do not make a pair")?,
            (_, _, Some((c, k))) => builder
                .with_client_auth_cert(c.clone(), k.clone_key())
                .context("tls-cert-file and tls-key-file do not make a pair")?,
            _ => builder.with_no_client_auth(),
        };
        Some(Arc::new(config))
    } else {
        None
    };
    Ok(Loaded {
        replicas,
        admin,
        client,
        fingerprint,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading a private key from {}", path.display()))
}

fn roots(cfg: &TlsConfig) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(file) = &cfg.ca_cert_file {
        for cert in certs(file)? {
            roots
                .add(cert)
                .with_context(|| format!("a CA certificate of {}", file.display()))?;
        }
    }
    if let Some(dir) = &cfg.ca_cert_dir {
        let all: Vec<CertificateDer<'static>> = dir_files(dir)?
            .iter()
            .filter_map(|p| certs(p).ok())
            .flatten()
            .collect();
        let (added, _) = roots.add_parsable_certificates(all);
        if added == 0 {
            bail!("no CA certificate in tls-ca-cert-dir {}", dir.display());
        }
    }
    Ok(roots)
}

/// `tls-protocols`, as Redis writes it: "TLSv1.2 TLSv1.3".
fn versions(protocols: Option<&str>) -> Result<Vec<&'static SupportedProtocolVersion>> {
    let Some(list) = protocols else {
        return Ok(rustls::ALL_VERSIONS.to_vec());
    };
    let mut out = Vec::new();
    for p in list.split_whitespace() {
        match p.to_ascii_lowercase().as_str() {
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            "tlsv1" | "tlsv1.1" => bail!(
                "tls-protocols: {p} is not supported (rustls implements only TLSv1.2 and TLSv1.3, the versions still considered safe)"
            ),
            _ => bail!("tls-protocols: unknown protocol {p:?} (use TLSv1.2 and/or TLSv1.3)"),
        }
    }
    if out.is_empty() {
        bail!("tls-protocols names no protocol");
    }
    Ok(out)
}

/// The ring provider with the cipher suites of `tls-ciphersuites` (TLS 1.3, IANA names) and
/// `tls-ciphers` (TLS 1.2, OpenSSL names), when given.
fn provider(cfg: &TlsConfig) -> Result<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let all = provider.cipher_suites.clone();
    let is13 = |s: &rustls::SupportedCipherSuite| s.version() == &rustls::version::TLS13;
    let pick =
        |list: &str, option: &str, tls13: bool| -> Result<Vec<rustls::SupportedCipherSuite>> {
            let mut out = Vec::new();
            for name in list.split(':').map(str::trim).filter(|n| !n.is_empty()) {
                let wanted = rustls_name(name, tls13);
                match all
                    .iter()
                    .find(|s| is13(s) == tls13 && s.suite().as_str() == Some(wanted.as_str()))
                {
                    Some(s) => out.push(*s),
                    None => bail!(
                        "{option}: {name} is not a cipher rustls implements for TLS {}; it has {}",
                        if tls13 { "1.3" } else { "1.2" },
                        suite_names(&all, tls13)
                    ),
                }
            }
            Ok(out)
        };
    let thirteen = match &cfg.ciphersuites {
        Some(list) => pick(list, "tls-ciphersuites", true)?,
        None => all.iter().filter(|s| is13(s)).copied().collect(),
    };
    let twelve = match &cfg.ciphers {
        Some(list) => pick(list, "tls-ciphers", false)?,
        None => all.iter().filter(|s| !is13(s)).copied().collect(),
    };
    provider.cipher_suites = thirteen.into_iter().chain(twelve).collect();
    Ok(provider)
}

/// rustls' name of a suite given as OpenSSL or IANA writes it.
fn rustls_name(name: &str, tls13: bool) -> String {
    let upper = name.to_ascii_uppercase();
    if tls13 {
        // OpenSSL and IANA: TLS_AES_256_GCM_SHA384; rustls: TLS13_AES_256_GCM_SHA384.
        return upper.replacen("TLS_", "TLS13_", 1);
    }
    if upper.starts_with("TLS_") {
        return upper;
    }
    // OpenSSL: ECDHE-RSA-AES256-GCM-SHA384; IANA: TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384.
    let openssl = [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ];
    openssl
        .iter()
        .find(|(o, _)| *o == upper)
        .map_or(upper, |(_, iana)| iana.to_string())
}

fn suite_names(all: &[rustls::SupportedCipherSuite], tls13: bool) -> String {
    let names: Vec<&str> = all
        .iter()
        .filter(|s| (s.version() == &rustls::version::TLS13) == tls13)
        .filter_map(|s| s.suite().as_str())
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_directory_gives_its_certificates_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(
            dir.path().join("ca.pem"),
            params.self_signed(&key).unwrap().pem(),
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
        let cfg = TlsConfig {
            ca_cert_dir: Some(dir.path().into()),
            ..TlsConfig::default()
        };
        assert_eq!(roots(&cfg).unwrap().len(), 1);
        assert_eq!(
            files(&cfg).unwrap().len(),
            2,
            "both files are watched for changes"
        );
        std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
        assert!(
            roots(&cfg)
                .unwrap_err()
                .to_string()
                .contains("no CA certificate")
        );
    }

    #[test]
    fn protocols_and_ciphers_rustls_cannot_honour_are_refused_by_name() {
        assert_eq!(versions(Some("TLSv1.2 TLSv1.3")).unwrap().len(), 2);
        let old = versions(Some("TLSv1.1 TLSv1.2")).unwrap_err().to_string();
        assert!(old.contains("TLSv1.1 is not supported"), "{old}");
        assert!(versions(Some("SSLv3")).is_err());
        let cfg = |suites: Option<&str>, ciphers: Option<&str>| TlsConfig {
            ciphersuites: suites.map(String::from),
            ciphers: ciphers.map(String::from),
            ..TlsConfig::default()
        };
        let p = provider(&cfg(
            Some("TLS_AES_256_GCM_SHA384"),
            Some("ECDHE-RSA-AES256-GCM-SHA384"),
        ))
        .unwrap();
        assert_eq!(p.cipher_suites.len(), 2);
        let e = provider(&cfg(None, Some("DES-CBC3-SHA")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DES-CBC3-SHA is not a cipher rustls implements"),
            "{e}"
        );
    }
}
