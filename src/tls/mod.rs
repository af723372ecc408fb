//! TLS for every link, configured with redis-server's own option names (`tls-port`,
//! `tls-replication`, `tls-cert-file`, ...): the server side for replicas and clients and for
//! the admin endpoints, the client side towards the master. rustls does the work; this room
//! loads the PEM files into its configurations (`load`), reloads them when they change or on
//! SIGHUP (`watch`), and turns a TCP socket into the `duplex` halves the protocol code runs
//! over, with errors said in an operator's words (`explain`).

mod load;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{MasterAddr, TlsConfig};
use crate::duplex::{self, Reader, Writer};

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are compared with the pair in use.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Which of the relay's servers a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--tls-port`: replicas and clients, verified per `--tls-auth-clients`.
    Replicas,
    /// `--metrics-tls`: scrapers and probes, which present no certificate.
    Admin,
}

/// The configurations in use, swapped whole when the files change.
struct Loaded {
    replicas: Option<Arc<ServerConfig>>,
    admin: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
    /// What the files held when these were made.
    fingerprint: u64,
}

/// The relay's TLS: its configurations and how to reload them.
pub struct Tls {
    config: TlsConfig,
    loaded: RwLock<Arc<Loaded>>,
    /// The files' fingerprint that last failed to load, so a bad pair is said once.
    failed: Mutex<Option<u64>>,
}

impl Tls {
    /// Loads every file TLS needs; `None` when TLS is not configured. Blocking (file reads).
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Tls>>> {
        if !config.enabled() {
            return Ok(None);
        }
        let loaded = load::build(config).context("loading the TLS files")?;
        Ok(Some(Arc::new(Tls {
            config: config.clone(),
            loaded: RwLock::new(Arc::new(loaded)),
            failed: Mutex::new(None),
        })))
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the files again if they changed; a pair that fails keeps the one in use. Blocking.
    pub fn reload(&self) {
        let fingerprint = match load::fingerprint(&self.config) {
            Ok(f) => f,
            Err(e) => return refuse(&e),
        };
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if fingerprint == self.current().fingerprint || *failed == Some(fingerprint) {
            return;
        }
        match load::build(&self.config) {
            Ok(loaded) => {
                *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                *failed = None;
                info!("TLS certificates reloaded: new connections use the new files");
            }
            Err(e) => {
                *failed = Some(fingerprint);
                refuse(&e);
            }
        }
    }

    /// The TLS server side of an accepted connection.
    pub async fn accept(
        &self,
        sock: TcpStream,
        peer: SocketAddr,
        listener: Listener,
    ) -> Result<TlsStream<TcpStream>> {
        let loaded = self.current();
        let config = match listener {
            Listener::Replicas => loaded.replicas.clone(),
            Listener::Admin => loaded.admin.clone(),
        };
        let config = config.context("no TLS server certificate is configured")?;
        let mut first = [0u8; 1];
        // A TLS client opens with a handshake record (22); anything else is plain text.
        let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, sock.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) if first[0] != 22 => {
                return Err(anyhow!(
                    "{peer} sent plain text to the TLS port (a client without TLS, or pointed at the wrong port)"
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow!("{peer}: {e}")),
            Err(_) => return Err(anyhow!("{peer} sent nothing within {HANDSHAKE_TIMEOUT:?}")),
        }
        let accept = TlsAcceptor::from(config).accept(sock);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(anyhow!("TLS handshake with {peer} failed: {}", explain(&e))),
            Err(_) => Err(anyhow!(
                "TLS handshake with {peer} failed: not finished within {HANDSHAKE_TIMEOUT:?}"
            )),
        }
    }

    /// The TLS client side towards `addr`: its certificate must chain to the CA and be valid
    /// for `--tls-server-name`, or else the address's host.
    async fn connect(&self, sock: TcpStream, addr: &MasterAddr) -> Result<(Reader, Writer)> {
        let config = self
            .current()
            .client
            .clone()
            .context("TLS towards the master is not configured (--tls-replication)")?;
        let name = self.config.server_name.as_deref().unwrap_or(&addr.host);
        let server_name = ServerName::try_from(name.to_string())
            .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
        let stream = TlsConnector::from(config)
            .connect(server_name, sock)
            .await
            .map_err(|e| {
                anyhow!(
                    "TLS handshake with {addr} failed: {}",
                    explain_named(&e, name)
                )
            })?;
        let (rd, wr) = tokio::io::split(stream);
        Ok((Box::new(rd), Box::new(wr)))
    }
}

fn refuse(e: &anyhow::Error) {
    error!("Reloading the TLS files failed, keeping the certificates in use: {e:#}");
}

/// How the relay reaches its master: plain TCP, or TLS over it.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<Arc<Tls>>,
}

impl Dialer {
    /// Plain TCP, for the Sentinels and the tools.
    pub fn plain() -> Dialer {
        Dialer { tls: None }
    }

    /// TLS when `--tls-replication yes`.
    pub fn for_master(tls: Option<&Arc<Tls>>, config: &TlsConfig) -> Dialer {
        Dialer {
            tls: tls.filter(|_| config.replication).cloned(),
        }
    }

    pub async fn dial(&self, addr: &MasterAddr, timeout: Duration) -> Result<(Reader, Writer)> {
        let connect = TcpStream::connect((addr.host.as_str(), addr.port));
        let sock = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| anyhow!("Error condition on socket for SYNC: Connection timed out"))?
            .map_err(|e| anyhow!("Error condition on socket for SYNC: {e}"))?;
        match &self.tls {
            None => Ok(duplex::tcp(sock)),
            Some(tls) => {
                let _ = sock.set_nodelay(true);
                tokio::time::timeout(timeout, tls.connect(sock, addr))
                    .await
                    .map_err(|_| anyhow!("TLS handshake with {addr} failed: timed out"))?
            }
        }
    }
}

/// Reloads the TLS files when they change (checked every 2 s: cert-manager rewrites a Secret
/// volume in place) and on SIGHUP, until shutdown.
pub async fn watch(tls: Arc<Tls>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = hangup => info!("SIGHUP: checking the TLS files"),
            _ = shutdown.cancelled() => return,
        }
        let tls = tls.clone();
        let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
    }
}

/// A blocking TLS client over `sock`, checking the server against `ca` and `name`: for
/// `replica-relay healthcheck` against an admin server with `--metrics-tls`.
pub fn probe(
    sock: std::net::TcpStream,
    ca: &std::path::Path,
    name: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let config = TlsConfig {
        ca_cert_file: Some(ca.to_path_buf()),
        replication: true,
        ..TlsConfig::default()
    };
    let client = load::build(&config)?
        .client
        .context("no TLS client configuration")?;
    let server_name = ServerName::try_from(name.to_string())
        .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
    let conn = rustls::ClientConnection::new(client, server_name)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// A handshake error in words an operator can act on.
pub fn explain(e: &std::io::Error) -> String {
    explain_named(e, "")
}

fn explain_named(e: &std::io::Error, name: &str) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection during the handshake (it may not speak TLS, or refused our certificate)".into()
            }
            _ => e.to_string(),
        };
    };
    match tls {
        Error::InvalidCertificate(c) => match c {
            Cert::UnknownIssuer => "unknown CA: the peer's certificate is not signed by a CA of --tls-ca-cert-file/--tls-ca-cert-dir".into(),
            Cert::Expired | Cert::ExpiredContext { .. } => "the peer's certificate has expired".into(),
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => "the peer's certificate is not valid yet".into(),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => format!(
                "name mismatch: the master's certificate is not valid for {name:?} (give the name it carries with --tls-server-name)"
            ),
            Cert::Revoked => "the peer's certificate is revoked".into(),
            other => format!("the peer's certificate is invalid: {other:?}"),
        },
        Error::NoCertificatesPresented => {
            "client certificate missing: the client presented none and --tls-auth-clients is yes".into()
        }
        Error::AlertReceived(Alert::CertificateRequired) => {
            "the master requires a client certificate: give --tls-cert-file/--tls-key-file or --tls-client-cert-file/--tls-client-key-file".into()
        }
        Error::AlertReceived(a @ (Alert::UnknownCA | Alert::BadCertificate | Alert::CertificateExpired | Alert::HandshakeFailure)) => {
            format!("the peer refused the handshake ({a:?}): it does not accept our certificate, or requires one")
        }
        Error::InvalidMessage(_) => "the peer does not speak TLS (plain text on a TLS connection)".into(),
        other => other.to_string(),
    }
}
