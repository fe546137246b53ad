//! Byte streams to an exchange: TCP, with TLS for `wss://` and `https://`.
//!
//! [`Endpoint::parse`] splits a URL into what a socket needs (scheme, host,
//! port, path); [`connect`] dials it and, for the secure schemes, runs a rustls
//! handshake against Mozilla's root certificates (`webpki-roots`, compiled in,
//! so nothing depends on the host's certificate store). The websocket client
//! (`connection`) and the REST client (`http`) both sit on [`Transport`]: plain
//! on loopback for the simulator, TLS for the real exchanges.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// Errors dialling an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bad URL {url:?}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("connecting to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("connecting to {host}:{port}: timed out after {after:?}")]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error("TLS with {host}: {source}")]
    Tls { host: String, source: io::Error },
}

impl TransportError {
    /// A malformed URL never improves; everything else may on a retry.
    pub fn is_terminal(&self) -> bool {
        matches!(self, TransportError::BadUrl { .. })
    }
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether the scheme is `wss` or `https`.
    pub secure: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://`, `wss://`, `http://` or `https://` URLs.
    ///
    /// # Errors
    /// [`TransportError::BadUrl`] for another scheme, no host or a bad port.
    pub fn parse(url: &str) -> Result<Endpoint, TransportError> {
        let bad = |problem: &str| TransportError::BadUrl {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (secure, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => (false, 80),
            "wss" | "https" => (true, 443),
            _ => return Err(bad("the scheme is not ws, wss, http or https")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("credentials in URLs are not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
                (host, port)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            secure,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host` or `host:port` as the `Host` header wants it.
    pub fn host_header(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A connected byte stream, plain or TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Dials `endpoint` within `timeout` (TCP connect and TLS handshake together).
///
/// # Errors
/// [`TransportError::Connect`], [`TransportError::Timeout`] or
/// [`TransportError::Tls`].
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Transport, TransportError> {
    let dial = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| TransportError::Connect {
                host: endpoint.host.clone(),
                port: endpoint.port,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if !endpoint.secure {
            return Ok(Transport::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| {
            TransportError::BadUrl {
                url: endpoint.host.clone(),
                problem: format!("not a TLS server name: {e}"),
            }
        })?;
        let tls = TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|source| TransportError::Tls {
                host: endpoint.host.clone(),
                source,
            })?;
        Ok(Transport::Tls(Box::new(tls)))
    };
    tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| TransportError::Timeout {
            host: endpoint.host.clone(),
            port: endpoint.port,
            after: timeout,
        })?
}

/// One client config for the process: ring crypto, webpki roots, no ALPN
/// (websocket upgrades and our REST calls speak HTTP/1.1).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    builder
                        .with_root_certificates(roots.clone())
                        .with_no_client_auth()
                })
                // The ring provider supports the safe defaults; this cannot fail.
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth()
                });
            Arc::new(config)
        })
        .clone()
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let cases = [
            (
                "binance combined",
                "wss://stream.binance.com:9443/stream",
                Some((true, "stream.binance.com", 9443, "/stream")),
            ),
            (
                "default https port with query",
                "https://api.binance.com/api/v3/trades?symbol=BTCUSDT",
                Some((
                    true,
                    "api.binance.com",
                    443,
                    "/api/v3/trades?symbol=BTCUSDT",
                )),
            ),
            (
                "loopback ws, no path",
                "ws://127.0.0.1:4567",
                Some((false, "127.0.0.1", 4567, "/")),
            ),
            (
                "query without path",
                "http://localhost:80?x=1",
                Some((false, "localhost", 80, "/?x=1")),
            ),
            (
                "ipv6",
                "ws://[::1]:9000/ws",
                Some((false, "::1", 9000, "/ws")),
            ),
            ("other scheme", "ftp://host/", None),
            ("no scheme", "host:80/x", None),
            ("bad port", "ws://host:99999/", None),
            ("no host", "ws://:80/", None),
        ];
        for (name, url, expected) in cases {
            let got = Endpoint::parse(url)
                .ok()
                .map(|e| (e.secure, e.host, e.port, e.path));
            let expected = expected.map(|(s, h, p, path)| (s, h.to_string(), p, path.to_string()));
            assert_eq!(got, expected, "{name}");
        }
        let endpoint = Endpoint::parse("https://api.upbit.com/v1").expect("valid");
        assert_eq!(endpoint.host_header(), "api.upbit.com");
        let endpoint = Endpoint::parse("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(endpoint.host_header(), "127.0.0.1:8080");
    }

    #[test]
    fn tls_config_builds() {
        assert!(tls_config().alpn_protocols.is_empty());
    }
}
