//! The admin HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process runs),
//! `/readyz` (the upstream link is up and a verified snapshot is in service) and `/status`
//! (JSON: what INFO replication says, plus the store and the replicas).
//!
//! It speaks just enough HTTP/1.1 for probes: one GET per connection, bounded request size,
//! a short deadline, `Connection: close`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::config::Config;
use tokio_util::sync::CancellationToken;

use super::RelayView;
use super::metrics::Metrics;
use super::status::Status;

const MAX_REQUEST: usize = 8 * 1024;
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
}

pub async fn serve(admin: Arc<Admin>, listener: Option<TcpListener>, shutdown: CancellationToken) {
    let Some(listener) = listener else { return };
    loop {
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
        {
            let admin = admin.clone();
            tokio::spawn(async move {
                let r = tokio::time::timeout(Duration::from_secs(5), answer(&admin, sock)).await;
                if !matches!(r, Ok(Ok(()))) {
                    debug!("Admin request from {peer} failed or timed out");
                }
            });
        }
    }
}

async fn answer(admin: &Admin, mut sock: TcpStream) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
        if sock.read_buf(&mut req).await? == 0 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&req[..req.iter().position(|&b| b == b'\r').unwrap_or(0)])
        .into_owned();
    let path = match line.split(' ').collect::<Vec<_>>()[..] {
        ["GET" | "HEAD", path, _] => path.split('?').next().unwrap_or(path).to_string(),
        _ => return respond(&mut sock, 405, PLAIN, "only GET is served\n").await,
    };
    match path.as_str() {
        "/metrics" => {
            let body = admin.metrics.render(&admin.view);
            respond(&mut sock, 200, PROMETHEUS_TEXT, &body).await
        }
        "/status" => {
            let body = serde_json::to_string_pretty(&Status::of(&admin.view)).unwrap_or_default();
            respond(&mut sock, 200, "application/json", &body).await
        }
        "/healthz" | "/live" => respond(&mut sock, 200, PLAIN, "ok\n").await,
        "/readyz" | "/ready" => match admin.view.not_ready() {
            None => respond(&mut sock, 200, PLAIN, "ready\n").await,
            Some(why) => respond(&mut sock, 503, PLAIN, &format!("not ready: {why}\n")).await,
        },
        _ => {
            respond(
                &mut sock,
                404,
                PLAIN,
                "not found; try /metrics, /status, /healthz or /readyz\n",
            )
            .await
        }
    }
}

async fn respond(sock: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

/// `replica-relay healthcheck`: GETs a path of the admin server on this host and succeeds on
/// 200, so container images need no curl.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The admin server's port.
    #[arg(long, env = "REPLICA_RELAY_METRICS_PORT", default_value_t = 9480)]
    metrics_port: u16,
    /// The admin server's address; a wildcard address is reached on loopback.
    #[arg(long, env = "REPLICA_RELAY_METRICS_BIND", default_value = "127.0.0.1")]
    metrics_bind: String,
    /// What to check: /healthz (the process runs) or /readyz (ready for replicas).
    #[arg(long, default_value = "/healthz")]
    path: String,
}

pub fn healthcheck(args: HealthcheckArgs) -> Result<()> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(3);
    let addr = admin_addr(&args.metrics_bind, args.metrics_port)?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the admin server on {addr}"))?;
    sock.set_read_timeout(Some(timeout))?;
    write!(
        sock,
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        args.path
    )?;
    let mut reply = String::new();
    sock.take(MAX_REQUEST as u64).read_to_string(&mut reply)?;
    let status = reply.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        anyhow::bail!("{} answered '{status}'", args.path);
    }
    Ok(())
}

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
