//! The HTTP/1.1 client of the AWS benches (`bench sqs`, `bench sns`): one keep-alive connection,
//! one call at a time, each request written with one `write` and each answer read into a buffer
//! the connection keeps.
//!
//! Why not hyper's client: on the project's 2-core machine the tool shares the cores with the
//! server it measures, so what the tool spends per call is taken from the server. hyper's client
//! runs each connection as a task of its own, so every call crossed two task hand-offs and built
//! a header map; this client does the same work in the caller's task (`wharf bench sqs` spends
//! two thirds to three quarters of the CPU per message it did; docs/BENCHMARKS.md). It speaks
//! only what the benches need: POST with a `Content-Length` body, and answers framed by
//! `Content-Length`, chunked encoding or the end of the connection.

use std::io::Write as _;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect and what to put in `Host`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: String,
    pub host: String,
}

/// `http://host[:port][/…]`; the path is ignored (AWS calls go to `/`).
pub fn parse_endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("only http:// endpoints are supported, got {url}");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("no host in {url}");
    }
    let addr = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    Ok(Endpoint { addr, host: authority.to_owned() })
}

/// A response's status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A keep-alive connection that reconnects when the server closes it.
pub struct Connection {
    endpoint: Endpoint,
    stream: Option<TcpStream>,
    /// The request being written (reused between calls).
    request: Vec<u8>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
    /// Connections opened after the first: the server closed the previous one, saying so
    /// (`Connection: close`) or not (found closed when the next call was made).
    pub reconnects: u64,
    connected_before: bool,
}

/// How the body of an answer ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// An answer's head, parsed.
struct Head {
    status: u16,
    len: usize,
    framing: Framing,
    close: bool,
}

/// Headers an answer may have; more is an error (no AWS answer comes close).
const MAX_HEADERS: usize = 64;

impl Connection {
    pub fn new(endpoint: Endpoint) -> Connection {
        Connection {
            endpoint,
            stream: None,
            request: Vec::new(),
            input: Vec::new(),
            reconnects: 0,
            connected_before: false,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// POST `body` to `/` with these headers (plus `Host` and `Content-Length`). If a kept-alive
    /// connection turns out to be closed before any of the answer arrived, the call is made once
    /// more on a new connection.
    pub async fn post(&mut self, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<Answer> {
        self.request.clear();
        self.request.extend_from_slice(b"POST / HTTP/1.1\r\nHost: ");
        self.request.extend_from_slice(self.endpoint.host.as_bytes());
        for (name, value) in headers {
            for part in [b"\r\n", name.as_bytes(), b": ", value.as_bytes()] {
                self.request.extend_from_slice(part);
            }
        }
        // Writing into a Vec cannot fail.
        let _ = write!(self.request, "\r\nContent-Length: {}\r\n\r\n", body.len());
        self.request.extend_from_slice(body);

        for attempt in 0..2 {
            let reused = self.stream.is_some();
            if !reused {
                let stream = TcpStream::connect(&self.endpoint.addr)
                    .await
                    .with_context(|| format!("connect {}", self.endpoint.addr))?;
                // Small request/answer exchanges: never wait for Nagle.
                stream.set_nodelay(true)?;
                self.stream = Some(stream);
                self.input.clear();
                self.reconnects += u64::from(self.connected_before);
                self.connected_before = true;
            }
            match self.exchange().await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    self.stream = None;
                    let stale = e.downcast_ref::<StaleConnection>().is_some();
                    if stale && reused && attempt == 0 {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        bail!("the server closed the connection twice in a row")
    }

    /// Write the request and read its answer on the open connection.
    async fn exchange(&mut self) -> anyhow::Result<Answer> {
        let stream = self.stream.as_mut().context("not connected")?;
        if let Err(e) = stream.write_all(&self.request).await {
            let stale =
                matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset);
            return Err(if stale {
                StaleConnection.into()
            } else {
                anyhow::Error::from(e).context("write request")
            });
        }
        let head = loop {
            if let Some(head) = parse_head(&self.input)? {
                break head;
            }
            match read_more(stream, &mut self.input).await {
                Ok(0) if self.input.is_empty() => return Err(StaleConnection.into()),
                Ok(0) => bail!("the server closed the connection in the middle of an answer's head"),
                Ok(_) => {}
                Err(e) if self.input.is_empty() && is_reset(&e) => return Err(StaleConnection.into()),
                Err(e) => return Err(e),
            }
        };
        let (body, used) = loop {
            let rest = &self.input[head.len..];
            let done = match head.framing {
                Framing::Length(n) => (rest.len() >= n).then(|| (rest[..n].to_vec(), n)),
                Framing::Chunked => dechunk(rest)?,
                Framing::Close => None,
            };
            if let Some(done) = done {
                break done;
            }
            if read_more(stream, &mut self.input).await? == 0 {
                match head.framing {
                    Framing::Close => break (self.input[head.len..].to_vec(), self.input.len() - head.len),
                    _ => bail!("the server closed the connection in the middle of an answer's body"),
                }
            }
        };
        self.input.drain(..head.len + used);
        if head.close || matches!(head.framing, Framing::Close) {
            self.stream = None;
        }
        Ok(Answer { status: head.status, body })
    }
}

/// The connection was closed before the answer began: the server closed a kept-alive
/// connection between calls, which is a reason to reconnect, not a failed call.
#[derive(Debug)]
struct StaleConnection;

impl std::fmt::Display for StaleConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server closed the connection")
    }
}

impl std::error::Error for StaleConnection {}

/// A connection the server reset (rather than closed).
fn is_reset(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
}

async fn read_more(stream: &mut TcpStream, input: &mut Vec<u8>) -> anyhow::Result<usize> {
    input.reserve(64 * 1024);
    stream.read_buf(input).await.context("read answer")
}

/// The head at the start of `input`, or `None` while it is incomplete. Interim (1xx) answers
/// are not expected: no request asks for one.
fn parse_head(input: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(input).context("malformed HTTP answer")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("an answer without a status")?;
    // HTTP/1.0 closes unless asked to keep alive; 1.1 keeps alive unless told it closes.
    let mut close = response.version == Some(0);
    let mut framing = Framing::Close;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(value.parse().context("bad Content-Length")?);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    // Answers that never have a body.
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Some(Head { status, len, framing, close }))
}

/// A complete chunked body at the start of `data`: the body and the bytes it took, or `None`
/// while more is needed.
fn dechunk(data: &[u8]) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    let line_end = |from: usize| data[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p);
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(end) = line_end(pos) else { return Ok(None) };
        let line = std::str::from_utf8(&data[pos..end]).context("bad chunk size line")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        pos = end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = line_end(pos) else { return Ok(None) };
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if data.len() < pos + size + 2 {
            return Ok(None);
        }
        if &data[pos + size..pos + size + 2] != b"\r\n" {
            bail!("a chunk does not end where its size says");
        }
        body.extend_from_slice(&data[pos..pos + size]);
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that reads each request whole and answers it with the next canned answer;
    /// `None` closes the connection instead of answering.
    async fn serve(answers: Vec<Option<&'static [u8]>>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            'connections: loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut input = Vec::new();
                loop {
                    // Read one request: head, then Content-Length bytes.
                    let (head_len, body_len) = loop {
                        let mut headers = [httparse::EMPTY_HEADER; 16];
                        let mut request = httparse::Request::new(&mut headers);
                        if let Ok(httparse::Status::Complete(n)) = request.parse(&input) {
                            let len = request
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap())
                                .unwrap();
                            break (n, len);
                        }
                        if socket.read_buf(&mut input).await.unwrap() == 0 {
                            continue 'connections;
                        }
                    };
                    while input.len() < head_len + body_len {
                        socket.read_buf(&mut input).await.unwrap();
                    }
                    input.drain(..head_len + body_len);
                    match answers.next() {
                        Some(Some(b"RESET")) => {
                            socket.set_zero_linger().unwrap();
                            continue 'connections;
                        }
                        // An HTTP/1.0 answer without a length ends where the connection does.
                        Some(Some(answer)) if answer.starts_with(b"HTTP/1.0") => {
                            socket.write_all(answer).await.unwrap();
                            continue 'connections;
                        }
                        Some(Some(answer)) => socket.write_all(answer).await.unwrap(),
                        Some(None) => continue 'connections,
                        None => return,
                    }
                }
            }
        });
        Endpoint { host: addr.clone(), addr }
    }

    #[tokio::test]
    async fn reads_answers_framed_every_way_and_reconnects_after_a_close() {
        let endpoint = serve(vec![
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            Some(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"),
            // The server drops the kept-alive connection instead of answering: the call is
            // made again on a new one.
            None,
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            // The same when it resets the kept-alive connection.
            Some(b"RESET"),
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\n\r\nok"),
            Some(b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
            Some(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let mut c = Connection::new(endpoint);
        let a = c.post(&[("X-A", "1")], b"{}").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
        let a = c.post(&[], b"x").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (400, &b"abcde"[..]));
        let a = c.post(&[], b"again").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(c.reconnects, 1);
        let a = c.post(&[], b"after a reset").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(c.reconnects, 2);
        // After `Connection: close`, and again after the HTTP/1.0 answer the close ended.
        let a = c.post(&[], b"").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"until the end"[..]));
        let a = c.post(&[], b"").await.unwrap();
        assert_eq!((a.status, a.body.len()), (204, 0));
        assert_eq!(c.reconnects, 4);
    }

    #[test]
    fn chunked_bodies_wait_for_their_end_and_refuse_bad_sizes() {
        assert!(dechunk(b"5\r\nhel").unwrap().is_none());
        assert!(dechunk(b"0\r\n").unwrap().is_none());
        assert_eq!(dechunk(b"0\r\n\r\nrest").unwrap(), Some((Vec::new(), 5)));
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"2\r\nabc\r\n").is_err());
    }

    #[test]
    fn endpoints_need_http_and_a_host() {
        let e = parse_endpoint("http://127.0.0.1:9324").unwrap();
        assert_eq!((e.addr.as_str(), e.host.as_str()), ("127.0.0.1:9324", "127.0.0.1:9324"));
        let e = parse_endpoint("http://localhost/").unwrap();
        assert_eq!((e.addr.as_str(), e.host.as_str()), ("localhost:80", "localhost"));
        assert!(parse_endpoint("https://x").is_err());
        assert!(parse_endpoint("http:///").is_err());
    }
}
