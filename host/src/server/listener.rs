//! Accepting connections with bounds a hostile client cannot stretch: a cap on open
//! connections, a deadline for each request's head, an idle timeout between requests,
//! a cap on requests per connection, and a deadline per request (in `router`).
//! `axum::serve` has none of these: 20,000 half-open connections exhausted file
//! descriptors and held 780 MB.
//!
//! A connection is *proven* once one of its requests showed a valid token (see
//! `admission`). Until then it gets a short budget (`header_timeout` between requests
//! and twice that in all), and at the cap the oldest connection that is not proven
//! makes room for a new one; a proven one is never evicted. Clients without a token
//! (health checks, or an attacker) can then not keep a gateway out.
//!
//! The deadlines are kept here rather than by hyper: hyper's header read timeout also
//! runs while a kept connection waits for its next request, which closed idle
//! connections after `header_timeout` instead of `idle_timeout`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

use super::admission::Proven;
use crate::config::ServerSettings;

/// The bounds `serve_connections` enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_requests_per_connection: u64,
}

impl From<&ServerSettings> for ConnectionLimits {
    fn from(s: &ServerSettings) -> Self {
        Self {
            max_connections: s.max_connections,
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            max_requests_per_connection: s.max_requests_per_connection,
        }
    }
}

/// How long a new connection waits for an evicted one to give its slot back.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 37\r\n\r\n{\"error\": \"too many open connections\"}";

/// A time not set (`Activity::head_since_ms`).
const UNSET: u64 = u64::MAX;

/// What one connection is doing, for its watchdog and for eviction at the cap. Times
/// are milliseconds since the connection opened.
struct Activity {
    /// Order of arrival: at the cap, the oldest connection not proven goes first.
    id: u64,
    opened: Instant,
    proven: Proven,
    evict: Notify,
    evicting: AtomicBool,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the last request was answered.
    last_ms: AtomicU64,
    /// When the first byte of a request head arrived on a connection with nothing in
    /// flight; `UNSET` while it waits or serves.
    head_since_ms: AtomicU64,
}

impl Activity {
    fn new(id: u64) -> Self {
        Self {
            id,
            opened: Instant::now(),
            proven: Proven::default(),
            evict: Notify::new(),
            evicting: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(UNSET),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(UNSET - 1)
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Bytes came in: with nothing in flight, a request head has started.
    fn bytes_arrived(&self) {
        if !self.busy() && self.head_since_ms.load(Ordering::SeqCst) == UNSET {
            self.head_since_ms.store(self.now_ms(), Ordering::SeqCst);
        }
    }

    /// What the connection's deadlines say now.
    fn due(&self, limits: &ConnectionLimits) -> Due {
        let now = self.now_ms();
        let header = millis(limits.header_timeout);
        let spoke = self.requests.load(Ordering::SeqCst) > 0;
        let proven = self.proven.get();
        // Without a token, a connection stays briefly, however busy.
        if !proven && now >= header.saturating_mul(2) {
            return if spoke { Due::Close } else { Due::Drop };
        }
        if self.busy() {
            return Due::Keep;
        }
        let head = self.head_since_ms.load(Ordering::SeqCst);
        if !spoke {
            // The first request's head is due `header_timeout` after connecting.
            return if now >= header { Due::Drop } else { Due::Keep };
        }
        if head != UNSET {
            return if now.saturating_sub(head) >= header {
                Due::Drop
            } else {
                Due::Keep
            };
        }
        let idle = if proven {
            limits.idle_timeout
        } else {
            limits.idle_timeout.min(limits.header_timeout)
        };
        if now.saturating_sub(self.last_ms.load(Ordering::SeqCst)) >= millis(idle) {
            Due::Close
        } else {
            Due::Keep
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(UNSET - 1)
}

/// What the watchdog does with a connection.
enum Due {
    Keep,
    /// Finish what is in flight, then close.
    Close,
    /// Close now: nothing is in flight, only a request head that is late.
    Drop,
}

/// The open connections, to choose which one makes room at the cap.
#[derive(Default)]
struct Open(std::sync::Mutex<HashMap<u64, Arc<Activity>>>);

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, activity: Arc<Activity>) {
        self.lock().insert(activity.id, activity);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the connection that least needs its slot to close: never a proven one;
    /// of the others, one with no request in flight before a busy one, oldest first
    /// (a new connection, a gateway's about to show its token, goes last). False when
    /// every open connection is proven.
    fn evict_one(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .filter(|a| !a.proven.get() && !a.evicting.load(Ordering::SeqCst))
            .min_by_key(|a| (a.busy(), a.id));
        match victim {
            Some(victim) => {
                victim.evicting.store(true, Ordering::SeqCst);
                victim.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (up to `drain`).
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Open::default());
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    let trimmer = tokio::spawn(trim_after_bursts(slots.clone(), limits.max_connections));
    let mut accepted_count = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a connection reset before accept: keep
                // serving the connections we have.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        accepted_count += 1;
        let id = accepted_count;
        let router = router.clone();
        let stopped = stopped.clone();
        let (slots, open) = (slots.clone(), open.clone());
        tokio::spawn(async move {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                // Full: a connection without a token makes room, if there is one.
                Err(_) if open.evict_one() => {
                    tokio::time::timeout(EVICTION_WAIT, slots.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                Err(_) => None,
            };
            let Some(slot) = slot else {
                let mut stream = stream;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
                return;
            };
            let _ = stream.set_nodelay(true);
            let activity = Arc::new(Activity::new(id));
            open.insert(activity.clone());
            serve_one(stream, router, limits, stopped, activity).await;
            open.remove(id);
            drop(slot);
        });
    }
    trimmer.abort();
    let _ = stop.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, slots.acquire_many(all)).await;
    Ok(())
}

/// The socket, telling its connection's watchdog when a request head starts to arrive.
struct Watched {
    stream: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
    activity: Arc<Activity>,
) {
    let tracker = activity.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let router = router.clone();
        let activity = tracker.clone();
        async move {
            activity.in_flight.fetch_add(1, Ordering::SeqCst);
            activity.head_since_ms.store(UNSET, Ordering::SeqCst);
            let served = activity.requests.fetch_add(1, Ordering::SeqCst) + 1;
            // The admission layer marks the connection proven through this.
            request.extensions_mut().insert(activity.proven.clone());
            let mut response = router
                .oneshot(request.map(Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            if served >= limits.max_requests_per_connection {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            activity.last_ms.store(activity.now_ms(), Ordering::SeqCst);
            activity.head_since_ms.store(UNSET, Ordering::SeqCst);
            activity.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let io = Watched {
        stream,
        activity: activity.clone(),
    };
    let connection = http1::Builder::new()
        // hyper's would also run between requests (see the module's comment).
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(10));
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = activity.evict.notified() => break,
            _ = stopped.changed(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = tokio::time::sleep(tick) => {
                match activity.due(&limits) {
                    Due::Keep => {}
                    Due::Drop => break,
                    Due::Close if closing.is_none() => {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    Due::Close => {}
                }
                // Asked to close with nothing in flight (a new connection's keep-alive
                // cannot be turned off, a response the client does not read): end it.
                if closing.is_some_and(|at| at.elapsed() >= limits.header_timeout)
                    && !activity.busy()
                {
                    break;
                }
            }
        }
    }
}

/// After a burst of connections (a flood, a traffic spike) the allocator keeps the
/// memory they used; once most of them are gone, hand it back to the system, so
/// memory returns to its baseline instead of staying at the burst's peak.
async fn trim_after_bursts(slots: Arc<Semaphore>, max_connections: usize) {
    let mut peak = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let open = max_connections - slots.available_permits();
        peak = peak.max(open);
        if peak >= 64 && open <= peak / 4 {
            peak = open;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(id: u64, proven: bool, busy: bool, requests: u64) -> Arc<Activity> {
        let activity = Activity::new(id);
        if proven {
            activity.proven.set();
        }
        activity
            .in_flight
            .store(usize::from(busy), Ordering::SeqCst);
        activity.requests.store(requests, Ordering::SeqCst);
        Arc::new(activity)
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_without_a_token_makes_room() {
        let open = Open::default();
        let all = [
            connection(1, true, false, 5),  // a gateway's, idle
            connection(2, false, true, 3),  // a health check in flight
            connection(3, false, false, 9), // kept alive by health checks
            connection(4, false, false, 0), // new, silent
            connection(5, true, true, 1),   // a gateway's, busy
        ];
        for activity in &all {
            open.insert(activity.clone());
        }
        let evicted = |open: &Open| {
            assert!(open.evict_one());
            open.lock()
                .values()
                .find(|a| a.evicting.load(Ordering::SeqCst))
                .map(|a| a.id)
        };
        assert_eq!(evicted(&open), Some(3));
        open.remove(3);
        assert_eq!(evicted(&open), Some(4));
        open.remove(4);
        assert_eq!(evicted(&open), Some(2));
        open.remove(2);
        // Only proven connections are left: none makes room.
        assert!(!open.evict_one());
    }
}
