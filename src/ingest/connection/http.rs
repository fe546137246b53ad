//! A minimal HTTP/1.1 GET client for the exchanges' recent-trades endpoints.
//!
//! REST backfill makes one small request now and then (and the instrument
//! lists one larger one at start), so this is deliberately
//! tiny and hand-written over [`transport`] (plain TCP on
//! loopback, rustls for `https://`): one request per connection
//! (`Connection: close`), the body framed by `Content-Length`, chunked
//! encoding or the end of the stream, capped at [`MAX_BODY_BYTES`], all
//! within one timeout. No redirects, no compression, no keep-alive: a
//! general-purpose client (reqwest, hyper) would bring a large dependency
//! tree for none of which the backfill has a use.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::transport::{self, Endpoint, TransportError};

/// Largest response accepted (Binance's 1000 trades are about 150 KB).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Errors of one GET.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("GET {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("GET {url}: timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("GET {url}: malformed response: {problem}")]
    Malformed {
        url: String,
        #[source]
        problem: MalformedResponse,
    },
    #[error("GET {url}: response larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { url: String },
}

/// What makes a response not the HTTP/1.x this client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedResponse {
    #[error("headers are not UTF-8")]
    HeadersNotUtf8,
    #[error("not an HTTP/1.x status line: {0:?}")]
    StatusLine(String),
    #[error("no status code in {0:?}")]
    NoStatusCode(String),
    #[error("bad content-length {0:?}")]
    ContentLength(String),
    #[error("content-length over {MAX_BODY_BYTES}")]
    ContentLengthTooLarge,
    #[error("the connection closed before the headers ended")]
    HeadersCutShort,
    #[error("body cut short: {got} of {expected} bytes arrived")]
    BodyCutShort { got: usize, expected: usize },
    #[error("chunk size line not terminated")]
    ChunkSizeLine,
    #[error("chunk size not UTF-8")]
    ChunkSizeNotUtf8,
    #[error("bad chunk size {0:?}")]
    ChunkSize(String),
    #[error("chunk cut short")]
    ChunkCutShort,
    #[error("body over {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
}

impl HttpError {
    /// A bad URL stays bad; the network and the server may recover.
    pub fn is_terminal(&self) -> bool {
        match self {
            HttpError::Transport(e) => e.is_terminal(),
            _ => false,
        }
    }
}

/// A response: status code and body (headers are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET url`, all within `timeout`.
///
/// # Errors
/// A bad URL, a connection or TLS failure, a timeout, or a response that is
/// not HTTP/1.x or larger than [`MAX_BODY_BYTES`]. A non-2xx status is not an
/// error: the caller reads the exchange's error body.
pub async fn get(url: &str, timeout: Duration) -> Result<Response, HttpError> {
    let endpoint = Endpoint::parse(url)?;
    tokio::time::timeout(timeout, get_inner(url, &endpoint, timeout))
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.to_string(),
            after: timeout,
        })?
}

async fn get_inner(
    url: &str,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let io = |source| HttpError::Io {
        url: url.to_string(),
        source,
    };
    let mut stream = transport::connect(endpoint, timeout).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tickfetch/{}\r\nAccept: application/json\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Servers that close without TLS close_notify: what arrived is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_BODY_BYTES + 64 * 1024 {
            return Err(HttpError::TooLarge {
                url: url.to_string(),
            });
        }
        // Stop early once a Content-Length body is complete (some servers
        // keep the socket open despite `Connection: close`).
        if let Ok(Some(done)) = complete_length(&raw) {
            raw.truncate(done);
            break;
        }
    }
    parse_response(&raw).map_err(|problem| HttpError::Malformed {
        url: url.to_string(),
        problem,
    })
}

/// Where the header block ends (just past `\r\n\r\n`).
fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The total length of a response framed by `Content-Length`, when its headers
/// have arrived and the body is complete.
fn complete_length(raw: &[u8]) -> Result<Option<usize>, MalformedResponse> {
    let Some(end) = header_end(raw) else {
        return Ok(None);
    };
    let head = parse_head(&raw[..end])?;
    Ok(match (head.chunked, head.content_length) {
        (false, Some(len)) if raw.len() >= end + len => Some(end + len),
        _ => None,
    })
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, MalformedResponse> {
    let text = std::str::from_utf8(head).map_err(|_| MalformedResponse::HeadersNotUtf8)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(MalformedResponse::StatusLine(status_line.to_string()));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| MalformedResponse::NoStatusCode(status_line.to_string()))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| MalformedResponse::ContentLength(value.to_string()))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if content_length.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(MalformedResponse::ContentLengthTooLarge);
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// Status and body of a complete raw response.
fn parse_response(raw: &[u8]) -> Result<Response, MalformedResponse> {
    let end = header_end(raw).ok_or(MalformedResponse::HeadersCutShort)?;
    let head = parse_head(&raw[..end])?;
    let rest = &raw[end..];
    let body = if head.chunked {
        decode_chunked(rest)?
    } else if let Some(len) = head.content_length {
        if rest.len() < len {
            return Err(MalformedResponse::BodyCutShort {
                got: rest.len(),
                expected: len,
            });
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status: head.status,
        body,
    })
}

/// Decodes a complete chunked body (`size\r\ndata\r\n … 0\r\n\r\n`).
fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, MalformedResponse> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(MalformedResponse::ChunkSizeLine)?;
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| MalformedResponse::ChunkSizeNotUtf8)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| MalformedResponse::ChunkSize(size_text.to_string()))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(MalformedResponse::ChunkCutShort);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(MalformedResponse::BodyTooLarge);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        type Case<'a> = (&'a str, &'a [u8], Result<(u16, &'a [u8]), ()>);
        let cases: [Case; 6] = [
            (
                "content-length",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                Ok((200, b"hello")),
            ),
            (
                "chunked",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
                Ok((200, b"hello")),
            ),
            (
                "until close",
                b"HTTP/1.0 429 Too Many\r\nServer: x\r\n\r\n{\"code\":-1003}",
                Ok((429, b"{\"code\":-1003}")),
            ),
            ("cut short", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", Err(())),
            ("not http", b"SSH-2.0-OpenSSH\r\n\r\n", Err(())),
            ("no headers end", b"HTTP/1.1 200 OK\r\n", Err(())),
        ];
        for (name, raw, expected) in cases {
            let got = parse_response(raw)
                .map(|r| (r.status, r.body))
                .map_err(|_| ());
            let expected = expected.map(|(s, b)| (s, b.to_vec()));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn complete_length_stops_reading_at_the_body_end() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
        assert_eq!(complete_length(raw), Ok(Some(raw.len() - 5)));
        assert_eq!(
            complete_length(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"),
            Ok(None)
        );
    }

    #[tokio::test]
    async fn get_against_a_loopback_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.expect("read");
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")
                .await
                .expect("write");
            request
        });
        let url = format!("http://{addr}/api/v3/trades?symbol=BTCUSDT&limit=5");
        let response = get(&url, Duration::from_secs(5)).await.expect("get");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"[]");
        let request = server.await.expect("server");
        assert!(
            request.starts_with("GET /api/v3/trades?symbol=BTCUSDT&limit=5 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
    }
}
