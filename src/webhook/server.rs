//! The webhook's listeners, shaped like kubert's `server.rs`: bind → accept → connection, with
//! every limit a connection can push against, and the drain.
//!
//! - **Connections** are capped ([`Limits::max_connections`] on the TLS listener,
//!   [`METRICS_MAX_CONNECTIONS`] on the metrics one): one over the cap is closed at once (the
//!   metrics listener first writes a `503`), so the kernel backlog cannot fill with
//!   connections that will never be served.
//! - **Time**: the TLS handshake, the headers and the body of each request must arrive within
//!   [`Limits::request_timeout`]. The headers' timer is hyper's (it starts when the connection
//!   is ready for a request, so an idle keep-alive connection is closed after it too); the
//!   body's counts from the request's first byte ([`RequestClock`]): a body not complete by
//!   then is answered `408` and the connection closed.
//! - **Memory**: bodies are read into memory reserved from one process-wide [`BodyBudget`] as
//!   their bytes arrive (64 KiB first, doubling, never past the declared `Content-Length`: a
//!   connection that declares 6 MiB and sends nothing holds 64 KiB); a body that cannot get its
//!   reservation is answered `503` with `Retry-After` and its connection closed. The budget is
//!   given back when the body has been decoded. hyper's own buffer is capped per connection
//!   ([`CONN_BUFFER_BYTES`]).
//! - **accept** failures (out of descriptors: EMFILE, ENFILE) back off, 10 ms doubling to 1 s,
//!   instead of retrying at once.
//!
//! Certificates are swapped through the TLS acceptor's certificate resolver, not here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::WebhookError;

/// Connections the metrics listener serves at once (a scraper or two need one each).
pub(crate) const METRICS_MAX_CONNECTIONS: usize = 16;

/// Default of [`Limits::max_connections`].
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Default of [`Limits::request_timeout`].
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`Limits::body_memory`]: ten of the largest bodies accepted.
pub(crate) const DEFAULT_BODY_MEMORY: usize = 64 << 20;

/// hyper's read and write buffer per connection (headers must fit in it; the body streams
/// through it).
pub(crate) const CONN_BUFFER_BYTES: usize = 64 << 10;

/// Longest pause between two `accept` attempts that failed.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What one client can hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TLS connections served at once; more are closed when accepted.
    pub max_connections: usize,
    /// Handshake, headers, and the whole body of a request must arrive within this.
    pub request_timeout: Duration,
    /// Bytes all unfinished request bodies together may hold.
    pub body_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_memory: DEFAULT_BODY_MEMORY,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The body budget

/// Bytes reserved by all request bodies being read, against one maximum.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    used: AtomicUsize,
    max: usize,
}

impl BodyBudget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserve `bytes`, or None when the budget does not have them.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut r = Reservation {
            budget: self.clone(),
            bytes: 0,
        };
        r.grow_to(bytes).then_some(r)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }
}

/// Bytes held from a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Hold `bytes` in all (more than now), or false (and hold what was held) when the
    /// budget does not have them.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if more == 0 || self.budget.take(more) {
            self.bytes = self.bytes.max(bytes);
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------------------------------------
// When a request started

/// When the first byte of the request being read arrived on a connection.
#[derive(Debug)]
pub(crate) struct RequestClock {
    epoch: Instant,
    /// Nanoseconds after `epoch`, plus one; 0: no byte of the next request seen yet.
    first_byte: AtomicU64,
}

impl RequestClock {
    fn new() -> Arc<Self> {
        Arc::new(RequestClock {
            epoch: Instant::now(),
            first_byte: AtomicU64::new(0),
        })
    }

    fn mark(&self) {
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            let _ =
                self.first_byte
                    .compare_exchange(0, ns + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// When the current request's first byte arrived (now, if not known: a request whose
    /// bytes came with the previous one's).
    pub(crate) fn started(&self) -> Instant {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => Instant::now(),
            n => self.epoch + Duration::from_nanos(n - 1),
        }
    }

    fn request_done(&self) {
        self.first_byte.store(0, Ordering::Relaxed);
    }
}

/// A stream that tells its [`RequestClock`] when bytes arrive.
struct Stamped<IO> {
    inner: IO,
    clock: Arc<RequestClock>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Stamped<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.mark();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Stamped<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// ---------------------------------------------------------------------------------------------
// Answers and reading a body

/// A response body: whole, in memory.
pub(crate) type Body = Full<Bytes>;

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// What a request handler is given about its connection.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    clock: Arc<RequestClock>,
    budget: Arc<BodyBudget>,
    timeout: Duration,
    /// The client certificate the handshake verified (None: none was given).
    peer: Option<Arc<super::client_auth::Peer>>,
}

impl Conn {
    /// The client certificate the handshake verified; None when the client gave none.
    pub(crate) fn peer(&self) -> Option<&super::client_auth::Peer> {
        self.peer.as_deref()
    }
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BodyError {
    /// Larger than the largest body accepted (413).
    #[error("request body larger than {max} bytes")]
    TooLarge { max: usize },
    /// The budget cannot hold it now (503, Retry-After).
    #[error("too many request bodies in flight; try again")]
    NoBudget,
    /// Not complete within the request timeout (408).
    #[error("request body not received within {} s", timeout.as_secs_f64())]
    Timeout { timeout: Duration },
    /// The connection failed while it was read (400).
    #[error("cannot read the request body")]
    Read,
}

/// A body read in full, and the budget it holds until dropped.
#[derive(Debug)]
pub(crate) struct ReadBody {
    /// The bytes.
    pub(crate) bytes: Vec<u8>,
    /// Given back to the budget when dropped.
    pub(crate) reservation: Reservation,
}

impl Conn {
    /// Read `req`'s body, at most `max` bytes, within the request deadline and the budget.
    pub(crate) async fn read_body(
        &self,
        req: Request<Incoming>,
        max: usize,
    ) -> Result<ReadBody, BodyError> {
        let length = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|n| n > max) {
            return Err(BodyError::TooLarge { max });
        }
        // Reserved as the bytes arrive, not as declared: a connection that sends headers only
        // holds no more than the first reservation, however large its Content-Length.
        let initial = length.unwrap_or(0).min(FIRST_RESERVATION);
        let reservation = self.budget.reserve(initial).ok_or(BodyError::NoBudget)?;
        let deadline = self.clock.started() + self.timeout;
        let read = collect(
            req.into_body(),
            max.min(length.unwrap_or(max)),
            initial,
            reservation,
        );
        match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(r) => r,
            Err(_) => Err(BodyError::Timeout {
                timeout: self.timeout,
            }),
        }
    }
}

/// What a body's reservation starts at (it grows, doubling, as bytes arrive).
const FIRST_RESERVATION: usize = 64 << 10;

async fn collect(
    mut body: Incoming,
    max: usize,
    initial: usize,
    mut reservation: Reservation,
) -> Result<ReadBody, BodyError> {
    let mut bytes: Vec<u8> = Vec::with_capacity(initial);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue;
        };
        let needed = bytes.len().saturating_add(data.len());
        if needed > max {
            return Err(BodyError::TooLarge { max });
        }
        if needed > bytes.capacity() {
            let target = needed.max(bytes.capacity().saturating_mul(2)).min(max);
            if !reservation.grow_to(target) {
                return Err(BodyError::NoBudget);
            }
            bytes.reserve_exact(target - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    Ok(ReadBody { bytes, reservation })
}

impl BodyError {
    /// The answer to a request whose body was not read; its connection is closed after it
    /// (the rest of the body is not read).
    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let status = match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::NoBudget => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read => StatusCode::BAD_REQUEST,
        };
        let mut r = Response::new(Full::new(Bytes::from(format!("{self}\n"))));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        if matches!(self, BodyError::NoBudget) {
            h.insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Binding, accepting, draining

/// A listener on `addr` (kubert's `bind`): failing to bind stops the server from starting.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, WebhookError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Listen { addr, source })
}

/// Resolves at SIGTERM or SIGINT. SIGTERM is listened for from this call on (a SIGTERM
/// before the future is first polled is not lost).
pub(crate) fn termination() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        match term.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = t.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Let the connections `graceful` watches finish their in-flight requests (each closes after
/// its answer), for at most `grace`.
pub(crate) async fn drain(graceful: GracefulShutdown, grace: Duration) {
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

/// What to do with a connection over the cap.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// Close it.
    Close,
    /// Write this (a complete HTTP response), then close (after
    /// reading what the client sent for a moment, so that it is not reset before it reads
    /// the answer).
    Answer(&'static [u8]),
}

/// The metrics listener's answer over its cap.
pub(crate) const BUSY_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 0\r\n\r\n";

/// Accept connections until `stop` resolves: each one within the cap of `slots` goes to
/// `serve` with its slot (freed when the connection ends), others are refused. A failed
/// `accept` (out of descriptors) is retried after a pause that doubles, 10 ms to 1 s.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    slots: Arc<Semaphore>,
    refusal: Refusal,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, OwnedSemaphorePermit),
) {
    tokio::pin!(stop);
    let mut backoff = MIN_ACCEPT_BACKOFF;
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = MIN_ACCEPT_BACKOFF;
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => serve(stream, slot),
                    Err(_) => refuse(stream, refusal, &lingering),
                }
            }
            // The peer gave up before we took it: nothing is wrong with the listener.
            Err(e) if is_connection_error(&e) => {}
            Err(_) => {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Refused connections whose request is still read after the answer (at most this many at
/// once, each for at most [`REFUSAL_LINGER`]; beyond, they are just closed).
const MAX_LINGERING: usize = 64;
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

fn refuse(stream: TcpStream, refusal: Refusal, lingering: &Arc<Semaphore>) {
    let Refusal::Answer(bytes) = refusal else {
        return;
    };
    let Ok(slot) = lingering.clone().try_acquire_owned() else {
        return;
    };
    // Closing with the client's request unread would reset the connection, and the client
    // could lose the answer: after the answer and a FIN, read (and drop) what it sends for a
    // moment. (The answer is written here, not with `try_write` at accept: a socket just
    // registered is not yet known to be writable.)
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = stream;
        let mut buf = [0u8; 1024];
        let answer = async {
            stream.write_all(bytes).await?;
            stream.shutdown().await?;
            while stream.read(&mut buf).await? > 0 {}
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
        drop(slot);
    });
}

// ---------------------------------------------------------------------------------------------
// Serving a connection

/// Shared by every connection of a listener.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// The limits.
    pub(crate) limits: Limits,
    /// The bodies' budget.
    pub(crate) budget: Arc<BodyBudget>,
}

impl ConnConfig {
    /// A listener's settings with these limits (and a fresh budget).
    pub(crate) fn new(limits: Limits) -> Self {
        ConnConfig {
            budget: BodyBudget::new(limits.body_memory),
            limits,
        }
    }

    fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.limits.request_timeout)
            .max_buf_size(CONN_BUFFER_BYTES);
        b
    }
}

/// Serve one accepted TLS connection: the handshake within the request timeout, then HTTP/1.1
/// with `handle`, watched by `watcher` for the drain. `slot` is held until it ends.
pub(crate) async fn serve_tls<H, F>(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    acceptor: tokio_rustls::TlsAcceptor,
    config: ConnConfig,
    watcher: hyper_util::server::graceful::Watcher,
    handle: H,
) where
    H: Fn(Request<Incoming>, Conn) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    // Answers go out at once: with Nagle's algorithm, a write that follows another not yet
    // acknowledged (the TLS 1.3 session tickets, then the first answer on a new connection)
    // waited for the client's delayed ACK, up to 40 ms.
    let _ = stream.set_nodelay(true);
    let timeout = config.limits.request_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let clock = RequestClock::new();
    // Only a certificate the verifier accepted gets this far (rustls ends the handshake on
    // any other).
    let peer = tls.get_ref().1.peer_certificates();
    let conn = Conn {
        clock: clock.clone(),
        budget: config.budget.clone(),
        timeout,
        peer: peer.and_then(super::client_auth::Peer::of).map(Arc::new),
    };
    let service = hyper::service::service_fn(move |req| {
        let handle = handle.clone();
        let conn = conn.clone();
        async move {
            let resp = handle(req, conn.clone()).await;
            conn.clock.request_done();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let io = Stamped { inner: tls, clock };
    let served = config
        .http1()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let _ = watcher.watch(served).await;
    drop(slot);
}

/// Serve one accepted plain connection (the metrics listener) with `handle`, which does not
/// read bodies: the headers' timeout and the buffer cap apply.
pub(crate) async fn serve_plain<H, F>(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    config: ConnConfig,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let handle = handle.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req).await) }
    });
    let served = config
        .http1()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = served.await;
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(!a.grow_to(61), "no room left");
        assert_eq!(budget.used(), 100, "a failed growth holds what it held");
        drop(b);
        assert!(a.grow_to(90));
        assert!(a.grow_to(10), "shrinking is not asked for and never fails");
        assert_eq!(budget.used(), 90);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(usize::MAX).is_none());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_clock_counts_from_the_first_byte_of_each_request() {
        let clock = RequestClock::new();
        let before = Instant::now();
        assert!(clock.started() >= before, "unknown: now");
        clock.mark();
        let first = clock.started();
        std::thread::sleep(Duration::from_millis(5));
        clock.mark();
        assert_eq!(clock.started(), first, "later bytes do not move it");
        clock.request_done();
        std::thread::sleep(Duration::from_millis(5));
        clock.mark();
        assert!(clock.started() > first, "the next request starts again");
    }

    #[test]
    fn every_refusal_closes_the_connection() {
        for e in [
            BodyError::TooLarge { max: 1 },
            BodyError::NoBudget,
            BodyError::Timeout {
                timeout: Duration::from_secs(1),
            },
            BodyError::Read,
        ] {
            let r = e.response();
            assert_eq!(r.headers()[hyper::header::CONNECTION], "close", "{e}");
            assert!(r.status().is_client_error() || r.status().is_server_error());
        }
        let busy = BodyError::NoBudget.response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[hyper::header::RETRY_AFTER], "1");
    }
}
