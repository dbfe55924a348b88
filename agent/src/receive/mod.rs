//! `sidekick receive`: a small OTLP/HTTP receiver that writes what it gets
//! to `logs.ndjson` and `metrics.ndjson`. It is the central service to try
//! sidekick against and the one the tests ship to.
//!
//! `POST /v1/logs` and `POST /v1/metrics` accept OTLP protobuf or OTLP/JSON,
//! uncompressed, gzip or zstd; `GET /healthz` answers `ok`. Each request is
//! decoded and turned into NDJSON (one line per log record or metric data
//! point, see [`ndjson`]) on a blocking thread, then appended to its file.
//!
//! Invariants:
//! - a 200 is sent only after the request's lines are in the file, so a
//!   reader that sees them knows they were acknowledged;
//! - each request's lines go to the file in one write under the file's lock,
//!   so concurrent requests never interleave within a line;
//! - bad input (garbage, truncated protobuf, bad compression, wrong JSON,
//!   oversized bodies) gets a 4xx with a one-line reason and a `warn` log;
//!   it never panics or stops the server;
//! - memory per request is bounded by `max_body_bytes` of body, compressed
//!   or decompressed, plus its decoded form.

mod body;
mod ndjson;
mod sink;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use body::{BodyFormat, Rejection, Signal};
use sink::NdjsonFile;

/// The default of [`ReceiveOptions::max_body_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// How long in-flight requests may take to finish once shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `sidekick receive`.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Directory for `logs.ndjson` and `metrics.ndjson`; created if needed.
    /// Both files are appended to, so a restarted receiver keeps what an
    /// earlier run wrote.
    pub out_dir: PathBuf,
    /// Largest request body accepted, both as sent and after decompression;
    /// larger ones get a 413.
    pub max_body_bytes: usize,
}

impl ReceiveOptions {
    /// Options with the default body limit.
    pub fn new(listen: SocketAddr, out_dir: PathBuf) -> Self {
        Self {
            listen,
            out_dir,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Binds, prints one line to stderr, `sidekick receive: listening on
/// http://IP:PORT` (the real port when 0 was asked), serves until `shutdown`
/// resolves, then lets in-flight requests finish, syncs the files and
/// returns.
pub async fn run(opts: ReceiveOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let receiver = Receiver::bind(opts).await?;
    eprintln!(
        "sidekick receive: listening on http://{}",
        receiver.local_addr()
    );
    receiver.serve(shutdown).await
}

/// A bound receiver, split from [`run`] so that a caller can learn the
/// address before serving.
#[derive(Debug)]
pub struct Receiver {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
}

/// What every request needs.
#[derive(Debug)]
struct State {
    logs: NdjsonFile,
    metrics: NdjsonFile,
    max_body_bytes: usize,
}

impl State {
    fn file(&self, signal: Signal) -> &NdjsonFile {
        match signal {
            Signal::Logs => &self.logs,
            Signal::Metrics => &self.metrics,
        }
    }
}

impl Receiver {
    /// Creates the output directory, opens both files for appending and binds
    /// the listening socket.
    pub async fn bind(opts: ReceiveOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.out_dir).with_context(|| {
            format!("cannot create output directory {}", opts.out_dir.display())
        })?;
        let open = |name: &str| {
            let path = opts.out_dir.join(name);
            NdjsonFile::open(&path).with_context(|| format!("cannot open {}", path.display()))
        };
        let state = Arc::new(State {
            logs: open("logs.ndjson")?,
            metrics: open("metrics.ndjson")?,
            max_body_bytes: opts.max_body_bytes,
        });
        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let local_addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        Ok(Self {
            listener,
            local_addr,
            state,
        })
    }

    /// The address actually bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets requests
    /// in flight finish (up to 10 s), syncs both files and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener, state, ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(stream, peer, Arc::clone(&state), stop_rx.clone()));
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off a
                        // little rather than spin, and keep serving.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    log_connection_task(done);
                }
            }
        }
        drop(listener);
        // Receivers live in the connection tasks; none left is fine.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = connections.join_next().await {
                log_connection_task(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                "connections still open after {DRAIN_TIMEOUT:?}; closing them"
            );
            connections.shutdown().await;
        }
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for file in [&state.logs, &state.metrics] {
                file.sync()
                    .with_context(|| format!("cannot sync {}", file.path().display()))?;
            }
            Ok(())
        })
        .await
        .context("file sync task failed")?
    }
}

fn log_connection_task(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        if error.is_panic() {
            tracing::error!(%error, "a connection task panicked");
        }
    }
}

/// Serves HTTP/1.1 on one connection until the client closes it or shutdown
/// is asked (then the request in flight is finished first).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    // Responses are small and written once; do not let Nagle hold them.
    let _ = stream.set_nodelay(true);
    let service =
        hyper::service::service_fn(move |request| handle(request, Arc::clone(&state), peer));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The guard `wait_for` returns is not `Send`: do not hold it.
        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

type HttpResponse = Response<Full<Bytes>>;

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
) -> Result<HttpResponse, Infallible> {
    let path = request.uri().path().to_owned();
    let signal = match path.as_str() {
        "/v1/logs" => Signal::Logs,
        "/v1/metrics" => Signal::Metrics,
        "/healthz" => {
            return Ok(
                if request.method() == Method::GET || request.method() == Method::HEAD {
                    text_response(StatusCode::OK, "ok\n")
                } else {
                    let rejection =
                        Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "use GET /healthz");
                    refuse(rejection, &path, peer, "GET")
                },
            );
        }
        _ => {
            let rejection = Rejection::new(
                StatusCode::NOT_FOUND,
                format!("no such path {path:?}: use POST /v1/logs or POST /v1/metrics"),
            );
            return Ok(refuse(rejection, &path, peer, ""));
        }
    };
    if request.method() != Method::POST {
        let rejection = Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed: use POST {path}", request.method()),
        );
        return Ok(refuse(rejection, &path, peer, "POST"));
    }
    Ok(match export(signal, request, &state).await {
        Ok((format, records)) => {
            tracing::debug!(%peer, path, records, "export accepted");
            let media_type = format.media_type;
            let mut response =
                Response::new(Full::new(Bytes::from_static(media_type.empty_response())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(media_type.content_type()),
            );
            response
        }
        Err(rejection) => refuse(rejection, &path, peer, ""),
    })
}

/// Reads, decodes and stores one export request; returns its format and how
/// many records it held.
async fn export(
    signal: Signal,
    request: Request<Incoming>,
    state: &Arc<State>,
) -> Result<(BodyFormat, usize), Rejection> {
    let format = BodyFormat::from_headers(request.headers())?;
    let max_bytes = state.max_body_bytes;
    if let Some(len) = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
            return Err(body::too_large(len, max_bytes));
        }
    }
    let body = Limited::new(request.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<LengthLimitError>() {
                body::too_large(format!("more than {max_bytes}"), max_bytes)
            } else {
                Rejection::bad_request(format!("cannot read request body: {error}"))
            }
        })?
        .to_bytes();
    let state = Arc::clone(state);
    let records = tokio::task::spawn_blocking(move || -> Result<usize, Rejection> {
        let decoded = body::decode_to_ndjson(signal, format, &body, max_bytes)?;
        if !decoded.ndjson.is_empty() {
            let file = state.file(signal);
            file.append(&decoded.ndjson).map_err(|error| {
                tracing::error!(path = %file.path().display(), %error, "cannot write received records");
                Rejection::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot write {}: {error}", file.path().display()),
                )
            })?;
        }
        Ok(decoded.records)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "export task failed");
        Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "export task failed")
    })??;
    Ok((format, records))
}

/// Logs a refused request and turns it into its plain-text answer; `allow`
/// fills the `Allow` header of a 405.
fn refuse(rejection: Rejection, path: &str, peer: SocketAddr, allow: &'static str) -> HttpResponse {
    tracing::warn!(
        %peer,
        path,
        status = rejection.status.as_u16(),
        reason = %rejection.reason,
        "request refused"
    );
    let mut response = text_response(rejection.status, &format!("{}\n", rejection.reason));
    if !allow.is_empty() {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}

fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
