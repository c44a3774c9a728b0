//! The connection layer: accepts TCP connections and serves HTTP/1.1 on them with hyper, under
//! limits a client cannot stretch.
//!
//! `axum::serve` has no knobs, so this owns what it did plus what a public listener needs:
//! - a cap on open connections: at the cap, accepting pauses (the kernel backlog holds newcomers,
//!   as Go's `LimitListener` does) until a connection closes;
//! - a header-read timeout: from a connection's opening, or the first byte of a later request,
//!   until the request head is complete (slow-header clients are dropped);
//! - a keep-alive idle timeout: a connection with no request in flight and no bytes moving for
//!   this long is closed;
//! - a write-stall timeout (the keep-alive timeout again): a client that stops reading its
//!   response, so that a write waits this long, has its socket dropped;
//! - a maximum request-head size: a larger head is refused by hyper with 431;
//! - graceful shutdown: stop accepting, let in-flight requests finish, close idle connections.
//!
//! Responses hyper writes itself (400 for an unparsable request, 431 for an oversize head) are
//! bare: no JSON envelope, no security headers, since no service code runs for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// The limits of the connection layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most; accepting pauses at the cap.
    pub max_connections: usize,
    /// Time allowed from waiting for a request to having its complete head.
    pub header_read_timeout: Duration,
    /// A connection idle this long between requests is closed.
    pub keep_alive_timeout: Duration,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// How many headers a request may carry at most.
const MAX_HEADERS: usize = 100;
/// hyper's smallest read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, closes idle
/// connections and waits for in-flight requests. The caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_per_connection(&error) {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let router = router.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all connections closed.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// An accept error that concerns one connection only (the peer went away before it was
/// accepted): the next accept can follow at once.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let in_flight = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let guard = InFlight::enter(Arc::clone(&in_flight));
        let router = router.clone();
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // The request stays in flight until its body has been sent (or dropped).
            Ok::<_, Infallible>(response.map(|body| Body::new(GuardedBody { body, guard })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's timer runs from the moment it waits for a head, idle time included: a backstop
        // behind the finer checks below.
        .header_read_timeout(limits.keep_alive_timeout + limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let check = tokio::time::sleep(activity.next_check(&limits));
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                let _ = changed;
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = check => {
                if activity.write_stalled(limits.keep_alive_timeout) {
                    // The client stopped reading: hyper would wait on the write forever.
                    tracing::debug!("response write stalled; connection dropped");
                    return;
                }
                if activity.head_overdue(limits.header_read_timeout) {
                    // A head trickling in: hyper would wait for it to finish, so drop the socket.
                    tracing::debug!("request head not complete in time; connection dropped");
                    return;
                }
                if !closing && activity.is_idle(limits.keep_alive_timeout) {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When a connection last moved bytes, whether a request head is arriving (and since when), and
/// how many requests it has in flight. Times are milliseconds since the connection opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    /// 0: no head arriving; else 1 + when its first byte came.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    /// 0: no write waiting; else 1 + when the current write started waiting.
    write_blocked_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            // A new connection waits for its first head from the start.
            head_since: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            write_blocked_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes came in: when nothing is in flight and no head is arriving, a new head starts.
    fn received(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn sent(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A write could not proceed (the client's window is full).
    fn write_blocked(&self) {
        let now = self.now_ms();
        let _ = self.write_blocked_since.compare_exchange(
            0,
            now + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn write_unblocked(&self) {
        self.write_blocked_since.store(0, Ordering::Relaxed);
    }

    fn write_blocked_for(&self) -> Option<Duration> {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    fn write_stalled(&self, timeout: Duration) -> bool {
        self.write_blocked_for().is_some_and(|age| age >= timeout)
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }

    fn is_idle(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
            && self.idle_for() >= timeout
    }

    fn head_age(&self) -> Option<Duration> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    fn head_overdue(&self, timeout: Duration) -> bool {
        self.head_age().is_some_and(|age| age >= timeout)
    }

    /// How long until one of the limits could be reached (at least a little while).
    fn next_check(&self, limits: &ConnectionLimits) -> Duration {
        // While a request is in flight only a stalled write can end the connection.
        let idle = if self.in_flight.load(Ordering::Relaxed) == 0 {
            limits.keep_alive_timeout.saturating_sub(self.idle_for())
        } else {
            limits.keep_alive_timeout
        };
        let head = self
            .head_age()
            .map_or(idle, |age| limits.header_read_timeout.saturating_sub(age));
        let write = self
            .write_blocked_for()
            .map_or(idle, |age| limits.keep_alive_timeout.saturating_sub(age));
        idle.min(head).min(write).max(Duration::from_millis(50))
    }
}

/// Counts a request as in flight while alive; its head is complete once it exists.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_since.store(0, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.sent();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until the body is sent or dropped.
struct GuardedBody {
    body: Body,
    #[expect(dead_code, reason = "held for its Drop")]
    guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream that records when bytes last moved either way.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    fn record_write(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(result) => {
                self.activity.write_unblocked();
                if matches!(result, Ok(n) if *n > 0) {
                    self.activity.sent();
                }
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record_write(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
