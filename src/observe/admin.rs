//! The admin HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process runs),
//! `/readyz` (the upstream link is up and a verified snapshot is in service) and `/status`
//! (JSON: what INFO replication says, plus the store and the replicas).
//!
//! HTTP/1.1 is hyper's: keep-alive (Prometheus scrapes over one connection), HEAD, status codes,
//! request headers bounded in size and in time. What a client of this port can cost is bounded
//! too: at most `MAX_CONNECTIONS` at once, each for at most `MAX_CONNECTION_AGE`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RelayView;
use super::facts::Facts;
use super::metrics::Metrics;
use super::status::Status;
use crate::config::Config;
use crate::tls::{Listener, Tls};

/// Most bytes of a request's head (request line and headers): probes send a few hundred.
const MAX_REQUEST: usize = 8 * 1024;
/// Admin connections at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// A client has this long to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, kept alive or not, so none is held forever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
const PLAIN: &str = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn bind(config: &Config) -> Result<Option<TcpListener>> {
    if config.metrics_port == 0 {
        return Ok(None);
    }
    let addr = (config.metrics_bind.as_str(), config.metrics_port);
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "admin server on {}:{} (--metrics-port 0 disables it)",
            addr.0, addr.1
        )
    })?;
    info!("Admin HTTP server on {}:{}", addr.0, addr.1);
    Ok(Some(listener))
}

/// What the admin server answers from.
pub struct Admin {
    pub view: Arc<RelayView>,
    pub metrics: Metrics,
    /// HTTPS with `--metrics-tls yes`.
    pub tls: Option<Arc<Tls>>,
}

pub async fn serve(admin: Arc<Admin>, listener: Option<TcpListener>, shutdown: CancellationToken) {
    let Some(listener) = listener else { return };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            // Out of file descriptors, say: wait instead of spinning on the error.
            Err(e) => {
                warn!("Accepting an admin connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match admin.tls.clone() {
                None => tokio::time::timeout(MAX_CONNECTION_AGE, http(admin, sock)).await,
                Some(tls) => {
                    let https = async {
                        match tls.accept(sock, peer, Listener::Admin).await {
                            Ok(stream) => http(admin, stream).await,
                            Err(e) => {
                                debug!("Admin connection: {e:#}");
                                Ok(())
                            }
                        }
                    };
                    tokio::time::timeout(MAX_CONNECTION_AGE, https).await
                }
            };
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("Admin connection from {peer}: {e}"),
                Err(_) => {
                    debug!("Admin connection from {peer} closed after {MAX_CONNECTION_AGE:?}")
                }
            }
        });
    }
}

/// HTTP/1.1 on one connection, plain or TLS.
async fn http<S>(admin: Arc<Admin>, stream: S) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(answer(&admin, &req)) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// The four endpoints (and the `/live`, `/ready` spellings), for GET and HEAD.
fn answer(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD are served\n".into(),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            PROMETHEUS_TEXT,
            admin.metrics.render(&admin.view),
        ),
        "/status" => {
            let body = serde_json::to_string_pretty(&Status::of(&admin.view)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        "/healthz" | "/live" => respond(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" | "/ready" => match Facts::gather(&admin.view).not_ready() {
            None => respond(StatusCode::OK, PLAIN, "ready\n".into()),
            Some(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics, /status, /healthz or /readyz\n".into(),
        ),
    }
}

fn respond(code: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

/// `replica-relay healthcheck`: GETs a path of the admin server on this host and succeeds on
/// 200, so container images need no curl. Where the admin server listens, and whether it speaks
/// TLS, come from the relay's own configuration, read as the relay reads it (flags,
/// `REPLICA_RELAY_*`, the `--config` file, defaults).
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// What to check: /healthz (the process runs) or /readyz (ready for replicas).
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// The name the admin server's certificate must be valid for, with --metrics-tls.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[command(flatten)]
    relay: Box<crate::config::RelayArgs>,
}

pub fn healthcheck(args: HealthcheckArgs) -> Result<()> {
    use std::io::{Read, Write};
    let config = crate::config::Config::read(*args.relay)?;
    let timeout = Duration::from_secs(3);
    let addr = admin_addr(&config.metrics_bind, config.metrics_port)?;
    let sock = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the admin server on {addr}"))?;
    sock.set_read_timeout(Some(timeout))?;
    let mut stream: Box<dyn ReadWrite> = if config.metrics_tls {
        let ca = config
            .tls_ca_cert_file
            .as_deref()
            .context("--metrics-tls needs --tls-ca-cert-file")?;
        Box::new(crate::tls::probe(sock, ca, &args.server_name)?)
    } else {
        Box::new(sock)
    };
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        args.path
    )?;
    let mut reply = String::new();
    stream.take(MAX_REQUEST as u64).read_to_string(&mut reply)?;
    let status = reply.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        anyhow::bail!("{} answered '{status}'", args.path);
    }
    Ok(())
}

/// A blocking stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// Where the admin server listening on `bind` is reached from this host.
fn admin_addr(bind: &str, port: u16) -> Result<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let ip = match bind.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Ok(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) => ip,
        Err(_) => {
            let mut resolved = (bind, port)
                .to_socket_addrs()
                .with_context(|| format!("resolving --metrics-bind {bind}"))?;
            return resolved
                .next()
                .with_context(|| format!("--metrics-bind {bind} has no address"));
        }
    };
    Ok(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthcheck_reaches_the_bound_address() {
        assert_eq!(
            admin_addr("127.0.0.2", 9).unwrap().to_string(),
            "127.0.0.2:9"
        );
        assert_eq!(admin_addr("0.0.0.0", 9).unwrap().to_string(), "127.0.0.1:9");
        assert_eq!(admin_addr("::", 9).unwrap().to_string(), "[::1]:9");
        assert!(admin_addr("localhost", 9).unwrap().ip().is_loopback());
    }
}
