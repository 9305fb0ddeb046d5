//! Raw HTTP/1.1 over TCP, for what a well-behaved client cannot send: bodies shorter than their
//! declared length, chunked bodies past the limit, garbage and oversized heads.
//!
//! The request bytes are written by a separate task while the response is read, so a gateway
//! that answers before reading everything (as it should for an over-long body) is seen answering
//! rather than as a failed write.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From the first byte written to the complete response.
    pub elapsed: Duration,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "raw response (status {}) body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// Why no complete response was read.
#[derive(Debug)]
pub enum NoResponse {
    /// The connection closed (or was reset) first; `partial` is what had arrived.
    Closed {
        partial: Vec<u8>,
        after: Duration,
    },
    TimedOut {
        partial: Vec<u8>,
    },
    Connect(String),
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    format!("{} bytes: {text:?}", bytes.len())
}

impl std::fmt::Display for NoResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoResponse::Closed { partial, after } => write!(
                f,
                "the connection closed after {after:?} without a complete response ({})",
                preview(partial)
            ),
            NoResponse::TimedOut { partial } => {
                write!(f, "no complete response in time ({})", preview(partial))
            }
            NoResponse::Connect(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

/// Writes `pieces` in order (then keeps the connection open unless `half_close`) while reading one
/// response, for at most `timeout`.
pub async fn exchange(
    addr: SocketAddr,
    pieces: Vec<Bytes>,
    half_close: bool,
    timeout: Duration,
) -> Result<RawResponse, NoResponse> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| NoResponse::Connect(format!("connect {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for b in pieces {
            // The gateway may answer and close before taking everything; that is fine.
            if wr.write_all(&b).await.is_err() {
                return wr;
            }
        }
        if half_close {
            let _ = wr.shutdown().await;
        }
        wr
    });

    let deadline = start + timeout;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let result = loop {
        if let Some(resp) = parse_response(&buf, false) {
            break Ok(resp);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, rd.read(&mut chunk)).await {
            Err(_) => break Err(NoResponse::TimedOut { partial: buf }),
            Ok(Ok(0)) | Ok(Err(_)) => {
                break parse_response(&buf, true).ok_or(NoResponse::Closed {
                    partial: buf,
                    after: start.elapsed(),
                })
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    writer.abort();
    result.map(|(status, headers, body)| RawResponse {
        status,
        headers,
        body,
        elapsed: start.elapsed(),
    })
}

type Parsed = (u16, Vec<(String, String)>, Vec<u8>);

/// Parses one complete response from `buf`; `eof` says no more bytes will come (a body without
/// length or chunking then ends here).
fn parse_response(buf: &[u8], eof: bool) -> Option<Parsed> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[head_end + 4..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)?.to_vec()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decode_chunked(rest)?
    } else if (100..200).contains(&status) || status == 204 || status == 304 || eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some((status, headers, body))
}

fn decode_chunked(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return rest.windows(2).any(|w| w == b"\r\n").then_some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// A request head with the given extra header lines.
pub fn head(method: &str, path: &str, authority: &SocketAddr, lines: &[String]) -> String {
    let mut s = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n");
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// A body in HTTP/1.1 chunked encoding, in pieces of `size` bytes, without the final
/// zero-length chunk when `terminate` is false.
pub fn chunked(body: &[u8], size: usize, terminate: bool) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = body
        .chunks(size)
        .map(|c| {
            let mut piece = format!("{:x}\r\n", c.len()).into_bytes();
            piece.extend_from_slice(c);
            piece.extend_from_slice(b"\r\n");
            Bytes::from(piece)
        })
        .collect();
    if terminate {
        out.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    out
}
