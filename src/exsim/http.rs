//! A minimal HTTP/1.1 layer on a tokio TCP stream: enough for the websocket
//! upgrade, the REST recent-trades endpoints and the control endpoint.
//!
//! [`read_request`] reads the request head (bounded, with a deadline), and
//! the body for a `Content-Length`. The server then either answers the
//! websocket upgrade ([`upgrade_response`], after which the same stream
//! carries websocket frames, bytes already read included) or writes one
//! [`Response`] and closes the connection (`Connection: close`: no
//! keep-alive, no chunked bodies).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::SimError;

/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (control commands are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client must send its request head within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// Query parameters, percent-decoded; the last value of a repeated key wins.
    pub query: BTreeMap<String, String>,
    /// The raw query string (after `?`), for Binance's `streams=a/b`.
    pub raw_query: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Bytes read past the head and body (a client's first websocket frame).
    pub leftover: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// A websocket upgrade request.
    pub fn is_websocket(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// Read one request from `stream`.
///
/// # Errors
/// [`SimError::Http`] for a head that is too long, not HTTP/1.x, or late.
pub async fn read_request(stream: &mut TcpStream) -> Result<Request, SimError> {
    tokio::time::timeout(REQUEST_DEADLINE, read_request_inner(stream))
        .await
        .map_err(|_| SimError::Http("request head not received in time".into()))?
}

async fn read_request_inner(stream: &mut TcpStream) -> Result<Request, SimError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(SimError::Http("request head too long".into()));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| SimError::Http(format!("reading request: {e}")))?;
        if n == 0 {
            return Err(SimError::Http(
                "connection closed before the request head".into(),
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end])
        .map_err(|_| SimError::Http("request head is not UTF-8".into()))?;
    let mut request = parse_head(head)?;
    let mut rest = buffer[head_end + 4..].to_vec();
    let length: usize = match request.header("content-length") {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| SimError::Http(format!("bad Content-Length {text:?}")))?,
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err(SimError::Http(format!(
            "body of {length} bytes is too large"
        )));
    }
    while rest.len() < length {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| SimError::Http(format!("reading body: {e}")))?;
        if n == 0 {
            return Err(SimError::Http("connection closed inside the body".into()));
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    request.leftover = rest.split_off(length);
    request.body = rest;
    Ok(request)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Parse a request head (request line and headers, without the blank line).
///
/// # Errors
/// [`SimError::Http`] for a malformed request line or header.
pub fn parse_head(head: &str) -> Result<Request, SimError> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SimError::Http(format!("bad request line {request_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(SimError::Http(format!("unsupported version {version:?}")));
    }
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| SimError::Http(format!("bad header line {line:?}")))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect();
    Ok(Request {
        method: method.to_string(),
        path: percent_decode(path),
        query,
        raw_query: raw_query.to_string(),
        headers,
        body: Vec::new(),
        leftover: Vec::new(),
    })
}

/// Decode `%XX` escapes and `+` (as a space); bad escapes are kept as written.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `101 Switching Protocols` answer to a websocket upgrade.
///
/// # Errors
/// [`SimError::Http`] when the request lacks `Sec-WebSocket-Key` or asks for
/// a version other than 13.
pub fn upgrade_response(request: &Request) -> Result<String, SimError> {
    let key = request
        .header("sec-websocket-key")
        .ok_or_else(|| SimError::Http("websocket upgrade without Sec-WebSocket-Key".into()))?;
    if request.header("sec-websocket-version") != Some("13") {
        return Err(SimError::Http("websocket version must be 13".into()));
    }
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    ))
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }

    pub fn ndjson(body: String) -> Self {
        Self {
            status: 200,
            content_type: "application/x-ndjson",
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// `{"error":"…"}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": message }).to_string())
    }

    pub fn not_found(path: &str) -> Self {
        Self::error(404, &format!("no route for {path}"))
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Status",
        }
    }

    /// Write the response and shut the write side down.
    ///
    /// # Errors
    /// [`SimError::Io`] when the client is gone.
    pub async fn write_to(&self, stream: &mut TcpStream) -> Result<(), SimError> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        let io = |source| SimError::Io {
            context: "writing an HTTP response".into(),
            source,
        };
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(self.body.as_bytes()).await.map_err(io)?;
        stream.shutdown().await.map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_decoded_query() {
        let request = parse_head(
            "GET /binance/stream?streams=btcusdt@trade/ethusdt@aggTrade&x=a%20b+c HTTP/1.1\r\n\
             Host: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13",
        )
        .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/binance/stream");
        assert_eq!(
            request.param("streams"),
            Some("btcusdt@trade/ethusdt@aggTrade")
        );
        assert_eq!(request.param("x"), Some("a b c"));
        assert!(request.is_websocket());
        let answer = upgrade_response(&request).unwrap();
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        for bad in ["GET /", "GET / SPDY/3", "GET / HTTP/1.1\r\nno colon"] {
            assert!(parse_head(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        for (input, expected) in [
            ("a%2Fb", "a/b"),
            ("100%", "100%"),
            ("%zz", "%zz"),
            ("%4", "%4"),
            ("KRW-BTC", "KRW-BTC"),
        ] {
            assert_eq!(percent_decode(input), expected, "{input}");
        }
    }
}
