//! The HTTP/1 server loop (SPEC §7.4, hostile clients): hyper's connection
//! with what `axum::serve` leaves open.
//!
//! - **A slow or missing request head** is cut after
//!   `HTTP_HEADER_READ_TIMEOUT_SECONDS`, counted from when the connection may
//!   send a request (it opened, or its previous answer went out), so an idle
//!   keep-alive connection is closed after it too (hyper's header timer).
//! - **No byte moving** either way for `HTTP_IDLE_TIMEOUT_SECONDS` (a stalled
//!   body, a client that does not read its answers) closes the connection
//!   ([`IdleIo`]).
//! - **A slow body or handler** meets the per-request deadline
//!   (`HTTP_REQUEST_TIMEOUT_SECONDS`, [`super::edge::deadline`]).
//! - **At most `HTTP_MAX_CONNECTIONS`** are open. At the bound a new
//!   connection takes the place of a long-idle one (no request in flight,
//!   picked among a bounded sample, so the work per connection stays
//!   constant under a flood); when the sample finds only busy ones, the
//!   newcomer is answered 503 and closed at once. Idle connections cost an
//!   attacker a socket each but can never keep a client out.
//!
//! Shutdown stops accepting, lets every connection finish the request it is
//! serving (idle ones close at once), then returns.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::settings::Settings;

/// File descriptors kept out of the connection bound: stores, the
/// live-game-api and rating clients, logs.
const RESERVED_FDS: u64 = 512;

/// Slots looked at for one to give up when the bound is reached.
const EVICTION_SAMPLE: usize = 32;

/// Headers one request may carry (hyper answers 431 past it).
const MAX_HEADERS: usize = 100;

/// How the server treats connections; from the settings.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ServerLimits {
    /// From the `HTTP_*` settings, the connection bound kept under the
    /// process's file-descriptor limit `fd_limit` (when known).
    pub fn from_settings(settings: &Settings, fd_limit: Option<u64>) -> Self {
        let wanted = settings.http_max_connections;
        let max_connections = match fd_limit {
            Some(fds) if (wanted as u64).saturating_add(RESERVED_FDS) > fds => {
                let fit = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
                tracing::warn!(
                    wanted,
                    fd_limit = fds,
                    using = fit,
                    "HTTP_MAX_CONNECTIONS does not fit under the file-descriptor limit; lowered"
                );
                fit
            }
            _ => wanted,
        };
        Self {
            header_read_timeout: Duration::from_secs_f64(settings.http_header_read_timeout_seconds),
            idle_timeout: Duration::from_secs_f64(settings.http_idle_timeout_seconds),
            max_connections,
        }
    }
}

/// Raises the process's open-file soft limit to its hard limit and logs
/// both; answers the soft limit in force (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "the open-file limit could not be read");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            tracing::info!(
                soft_before = soft,
                soft = now,
                hard,
                "open-file limit raised to the hard limit"
            );
            Some(now)
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "the open-file limit could not be raised");
            Some(soft)
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let connections = Arc::new(Connections::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS);
    let (stop, stopping) = watch::channel(());
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = connections.admit() else {
            refuse(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleIo::new(stream, limits.idle_timeout));
        let slot = Arc::clone(&admitted.slot);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let busy = Busy::enter(&slot);
            request.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            async move {
                // Busy until the answer's body is sent, not only its head:
                // an event stream is never an idle connection.
                let answer = router.call(request.map(Body::new)).await;
                answer.map(|r| {
                    if r.body().size_hint().exact().is_some() {
                        return r; // sent at once: `busy` ends here
                    }
                    r.map(|body| Body::new(Sending { body, _busy: busy }))
                })
            }
        });
        let connection = http.serve_connection(io, service);
        let mut stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(e) = served {
                            tracing::trace!(error = %e, "connection ended");
                        }
                        break;
                    }
                    () = admitted.slot.evicted.notified() => {
                        if admitted.slot.busy.load(Ordering::Acquire) == 0 {
                            break; // dropped: the socket closes now
                        }
                        // A request arrived meanwhile: it is answered first.
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = stopping.changed(), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(admitted);
            drop(open);
        });
    }
    drop(listener);
    let _ = stop.send(());
    drop(open);
    let _ = all_closed.recv().await;
    Ok(())
}

/// Too many open files, or the like: the connection waiting is not taken
/// this turn; the loop tries again shortly instead of spinning.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    metrics::counter!("matchmaking_http_accept_errors_total").increment(1);
    tracing::error!(error = %error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The answer to a connection past the bound, written if the socket takes
/// it at once; then the socket closes.
fn refuse(stream: &TcpStream) {
    metrics::counter!("matchmaking_http_connections_refused_total").increment(1);
    let request_id = ulid::Ulid::new().to_string();
    let body = format!(
        r#"{{"error":{{"code":"MATCHMAKING_UNAVAILABLE","message":"this node has too many connections open; retry shortly","request_id":"{request_id}"}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// One open connection's state, as the bound sees it.
struct Slot {
    /// Requests being served on it.
    busy: AtomicUsize,
    /// Milliseconds (since the table's start) when it last became idle.
    idle_since: AtomicU64,
    /// Told when the bound gives its place to a newcomer.
    evicted: Notify,
}

/// A request in flight on a connection.
struct Busy {
    slot: Arc<Slot>,
}

impl Busy {
    fn enter(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            slot: Arc::clone(slot),
        }
    }
}

/// An answer's body being sent, with its connection marked busy until
/// it ends (or the connection goes).
struct Sending {
    body: Body,
    _busy: Busy,
}

impl axum::body::HttpBody for Sending {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot
            .idle_since
            .store(EPOCH.elapsed_ms(), Ordering::Release);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds since the process's first connection, for idle ages.
struct Epoch(std::sync::OnceLock<Instant>);

impl Epoch {
    fn elapsed_ms(&self) -> u64 {
        self.0.get_or_init(Instant::now).elapsed().as_millis() as u64
    }
}

static EPOCH: Epoch = Epoch(std::sync::OnceLock::new());

/// The open connections, against the bound.
struct Connections {
    limit: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Arc<Slot>>>,
    free: Vec<usize>,
    open: usize,
}

/// A connection's place in the table; leaving it frees the place.
struct Admitted {
    connections: Arc<Connections>,
    index: usize,
    slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        if table.slots[self.index]
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            table.slots[self.index] = None;
            table.free.push(self.index);
            table.open -= 1;
        }
        metrics::gauge!("matchmaking_http_connections_open").set(table.open as f64);
    }
}

impl Connections {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: a free one, or the place of the
    /// longest idle connection of a sample; `None` when the sample found
    /// every connection busy.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut table = self.lock();
        if table.open >= self.limit {
            let victim = table.idlest_sampled()?;
            if let Some(slot) = table.slots[victim].take() {
                slot.evicted.notify_one();
                table.free.push(victim);
                table.open -= 1;
                metrics::counter!("matchmaking_http_connections_evicted_total").increment(1);
            }
        }
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(EPOCH.elapsed_ms()),
            evicted: Notify::new(),
        });
        let index = match table.free.pop() {
            Some(index) => {
                table.slots[index] = Some(Arc::clone(&slot));
                index
            }
            None => {
                table.slots.push(Some(Arc::clone(&slot)));
                table.slots.len() - 1
            }
        };
        table.open += 1;
        metrics::gauge!("matchmaking_http_connections_open").set(table.open as f64);
        Some(Admitted {
            connections: Arc::clone(self),
            index,
            slot,
        })
    }
}

impl Table {
    /// Of a bounded sample of places (all of them when there are few), the
    /// idle connection that has been idle longest.
    fn idlest_sampled(&self) -> Option<usize> {
        let len = self.slots.len();
        let candidates: Box<dyn Iterator<Item = usize>> = if len <= EVICTION_SAMPLE {
            Box::new(0..len)
        } else {
            Box::new((0..EVICTION_SAMPLE).map(|_| rand::random_range(0..len)))
        };
        candidates
            .filter_map(|i| {
                let slot = self.slots[i].as_ref()?;
                (slot.busy.load(Ordering::Acquire) == 0)
                    .then(|| (slot.idle_since.load(Ordering::Acquire), i))
            })
            .min()
            .map(|(_, i)| i)
    }
}

/// A socket that fails (and so closes its connection) once no byte has
/// moved either way for `timeout`.
pub struct IdleIo<T> {
    io: T,
    timeout: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    pub fn new(io: T, timeout: Duration) -> Self {
        let last = Instant::now();
        Self {
            io,
            timeout,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + timeout)),
        }
    }

    /// Ready with an error once the connection has been idle too long;
    /// otherwise arms the timer for when it would be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.timeout;
            if due <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no byte moved for HTTP_IDLE_TIMEOUT_SECONDS",
                ));
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl<T> IdleIo<T> {
    /// A write's outcome: bytes gone count as activity; a write that
    /// cannot go on arms (or trips) the idle timer.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_gives_the_idlest_place_and_refuses_when_all_are_busy() {
        let connections = Arc::new(Connections::new(2));
        let a = connections.admit().unwrap();
        let b = connections.admit().unwrap();
        // Both busy: a third is refused.
        let busy_a = Busy::enter(&a.slot);
        let busy_b = Busy::enter(&b.slot);
        assert!(connections.admit().is_none());
        // b goes idle: the third takes b's place, and b is told.
        drop(busy_b);
        let c = connections.admit().unwrap();
        assert_eq!(connections.lock().open, 2);
        assert!(
            futures::FutureExt::now_or_never(b.slot.evicted.notified()).is_some(),
            "b was told to close"
        );
        // b leaving frees nothing more: its place is c's now.
        drop(b);
        assert_eq!(connections.lock().open, 2);
        drop(busy_a);
        drop(a);
        drop(c);
        assert_eq!(connections.lock().open, 0);
    }
}
