//! `FaultProxy`: a small HTTP/1.1 server between sidekick and the receiver
//! that decides, request by request, whether to forward, to answer with a
//! status of its own, or to drop the connection.
//!
//! It is written on `std::net` with a thread per connection, and speaks just
//! the HTTP/1.1 that an HTTP client sends a collector: keep-alive, bodies
//! framed by `Content-Length` or `chunked`. Forwarding opens one upstream
//! connection per request (`Connection: close`), which keeps the relay
//! simple; the client side stays keep-alive.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to the upstream and relay its answer.
    Forward,
    /// Answer with this status, headers and body; the upstream never sees
    /// the request.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
    /// Forward to the upstream, then close the connection without relaying
    /// its answer: the upstream has the request, the client does not know.
    /// Kept for [`FaultProxy::lost_replies`].
    ForwardThenDrop,
    /// Wait, then forward (a slow receiver).
    ForwardAfter(Duration),
}

impl Action {
    pub fn status(status: u16) -> Self {
        Self::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn status_with_body(status: u16, body: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// `status` (e.g. 429 or 503) with `Retry-After: secs`.
    pub fn retry_after(status: u16, secs: u64) -> Self {
        Self::Respond {
            status,
            headers: vec![("Retry-After".into(), secs.to_string())],
            body: Vec::new(),
        }
    }
}

/// One request as the proxy received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// 0 for the first request to this path, 1 for the next, ...
    pub nth_for_path: u64,
    pub received_at: Instant,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_logs(&self) -> bool {
        self.path == "/v1/logs"
    }

    /// The body with its `Content-Encoding` (gzip, zstd or none) undone.
    pub fn decoded_body(&self) -> Vec<u8> {
        match self.header("content-encoding") {
            None | Some("identity") => self.body.clone(),
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .expect("a valid gzip body");
                out
            }
            Some("zstd") => zstd::stream::decode_all(&self.body[..]).expect("a valid zstd body"),
            Some(other) => panic!("unexpected Content-Encoding {other}"),
        }
    }
}

/// How the proxy answered, counted by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Forwarded, by the status the upstream answered.
    pub forwarded: BTreeMap<u16, u64>,
    /// Answered by the proxy itself, by status.
    pub responded: BTreeMap<u16, u64>,
    pub dropped: u64,
    /// Forwarding failed (the upstream was unreachable); answered 502.
    pub upstream_errors: u64,
    /// Forwarded, then the connection closed without the answer
    /// ([`Action::ForwardThenDrop`]).
    pub replies_dropped: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.forwarded.values().sum::<u64>()
            + self.responded.values().sum::<u64>()
            + self.dropped
            + self.upstream_errors
            + self.replies_dropped
    }
}

type Plan = dyn Fn(&Request) -> Action + Send + Sync;

struct Shared {
    upstream: SocketAddr,
    plan: Box<Plan>,
    save_limit: usize,
    saved: Mutex<Vec<Request>>,
    lost_replies: Mutex<Vec<Request>>,
    counts: Mutex<Counts>,
    per_path: Mutex<HashMap<String, u64>>,
    stop: AtomicBool,
}

/// The proxy; it stops accepting when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 in front of `upstream` (`http://HOST:PORT`),
    /// asking `plan` what to do with each request, and keeping the first
    /// `save_limit` requests (headers and body) for [`FaultProxy::saved`].
    pub fn start(
        upstream: &str,
        save_limit: usize,
        plan: impl Fn(&Request) -> Action + Send + Sync + 'static,
    ) -> Self {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            plan: Box::new(plan),
            save_limit,
            saved: Mutex::new(Vec::new()),
            lost_replies: Mutex::new(Vec::new()),
            counts: Mutex::new(Counts::default()),
            per_path: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &shared);
                });
            }
        });
        Self { addr, shared }
    }

    /// A proxy that forwards everything.
    pub fn forwarding(upstream: &str, save_limit: usize) -> Self {
        Self::start(upstream, save_limit, |_| Action::Forward)
    }

    /// A proxy that forwards everything to `upstream` except during an
    /// outage ([`Outage::begin`] to [`Outage::end`]), when it closes every
    /// connection without an answer, as a central service that is down.
    pub fn with_outage(upstream: &str) -> (Self, Outage) {
        let outage = Outage::default();
        let down = outage.0.clone();
        let proxy = Self::start(upstream, 0, move |_| {
            if down.load(Ordering::SeqCst) {
                Action::Drop
            } else {
                Action::Forward
            }
        });
        (proxy, outage)
    }

    /// `http://127.0.0.1:PORT`, to configure as sidekick's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> Counts {
        lock(&self.shared.counts).clone()
    }

    /// The requests kept so far (the first `save_limit`).
    pub fn saved(&self) -> Vec<Request> {
        lock(&self.shared.saved).clone()
    }

    /// Every request the upstream accepted (2xx) but whose answer the
    /// proxy dropped ([`Action::ForwardThenDrop`]): the client will send
    /// them again, so the upstream sees their records twice.
    pub fn lost_replies(&self) -> Vec<Request> {
        lock(&self.shared.lost_replies).clone()
    }
}

/// Switches the outage of a proxy made by [`FaultProxy::with_outage`].
#[derive(Debug, Clone, Default)]
pub struct Outage(Arc<AtomicBool>);

impl Outage {
    /// The service goes down: every connection is dropped from now on.
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The service is back: requests are forwarded again.
    pub fn end(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one client connection until it closes or the plan drops it.
fn serve(conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = head.start.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let body = read_body(&mut reader, &head.headers)?;
        let nth_for_path = {
            let mut per_path = lock(&shared.per_path);
            let n = per_path.entry(path.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let req = Request {
            method,
            path,
            headers: head.headers,
            body,
            nth_for_path,
            received_at: Instant::now(),
        };
        let action = (shared.plan)(&req);
        {
            let mut saved = lock(&shared.saved);
            if saved.len() < shared.save_limit {
                saved.push(req.clone());
            }
        }
        match action {
            Action::Drop => {
                lock(&shared.counts).dropped += 1;
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Action::Respond {
                status,
                headers,
                body,
            } => {
                *lock(&shared.counts).responded.entry(status).or_insert(0) += 1;
                write_response(&mut writer, status, &headers, &body)?;
            }
            Action::ForwardThenDrop => {
                match forward(shared.upstream, &req) {
                    Ok((status, _, _)) => {
                        lock(&shared.counts).replies_dropped += 1;
                        if (200..300).contains(&status) {
                            lock(&shared.lost_replies).push(req);
                        }
                    }
                    Err(_) => lock(&shared.counts).upstream_errors += 1,
                }
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Action::ForwardAfter(delay) => {
                std::thread::sleep(delay);
                relay(shared, &req, &mut writer)?;
            }
            Action::Forward => relay(shared, &req, &mut writer)?,
        }
    }
}

/// Forwards `req` and writes the upstream's answer (502 if unreachable).
fn relay(shared: &Shared, req: &Request, writer: &mut TcpStream) -> io::Result<()> {
    match forward(shared.upstream, req) {
        Ok((status, headers, body)) => {
            *lock(&shared.counts).forwarded.entry(status).or_insert(0) += 1;
            write_response(writer, status, &headers, &body)
        }
        Err(e) => {
            lock(&shared.counts).upstream_errors += 1;
            let msg = format!("fault proxy: upstream {}: {e}", shared.upstream);
            write_response(writer, 502, &[], msg.as_bytes())
        }
    }
}

struct Head {
    /// The request line or the status line.
    start: String,
    headers: Vec<(String, String)>,
}

/// Reads a start line and headers; `None` on a clean end of stream.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    // Tolerates empty lines before a request (RFC 9112 §2.2).
    loop {
        start.clear();
        if r.read_line(&mut start)? == 0 {
            return Ok(None);
        }
        if !start.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF in headers",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Some(Head {
        start: start.trim_end().to_owned(),
        headers,
    }))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a body framed by `Content-Length` or `chunked`; none otherwise.
fn read_body(r: &mut impl BufRead, headers: &[(String, String)]) -> io::Result<Vec<u8>> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return read_chunked(r);
    }
    let len: usize = match header(headers, "content-length") {
        Some(v) => v
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?,
        None => 0,
    };
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// Headers a proxy must not relay as they are: it frames bodies itself.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "host",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

fn forward(upstream: SocketAddr, req: &Request) -> io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {upstream}\r\n",
        req.method, req.path
    );
    for (k, v) in req.headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    conn.write_all(head.as_bytes())?;
    conn.write_all(&req.body)?;
    conn.flush()?;
    let mut r = BufReader::new(conn);
    let resp = read_head(&mut r)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream closed without answering",
        )
    })?;
    let status = resp
        .start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let framed = header(&resp.headers, "content-length").is_some()
        || header(&resp.headers, "transfer-encoding").is_some();
    let body = if framed {
        read_body(&mut r, &resp.headers)?
    } else {
        let mut b = Vec::new();
        r.read_to_end(&mut b)?;
        b
    };
    Ok((status, resp.headers, body))
}
