//! Accepting connections with bounds a hostile client cannot stretch: a cap on open
//! connections (at the cap, the oldest connection that has not sent a request yet
//! makes room; with none, one more is answered 503 and closed), a deadline for a new
//! connection's first request headers, an idle timeout between requests, a cap on
//! requests per connection, and a deadline per request (in `router`). `axum::serve`
//! has none of these: 20,000 half-open connections exhausted file descriptors and
//! held 780 MB.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

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

/// Connections that have not sent a request yet, oldest first: at the cap, the
/// oldest makes room for a new one. A half-open flood then only displaces itself,
/// while a real client's connection sends its request at once and stays.
#[derive(Default)]
struct Unspoken(std::sync::Mutex<std::collections::VecDeque<Arc<Activity>>>);

impl Unspoken {
    /// Adds a new connection; drops the ones that spoke or closed once the queue holds
    /// twice `max_open` entries. At most `max_open` connections are open, so the queue
    /// stays under twice that however many come and go, and pruning is amortized O(1).
    fn push(&self, activity: Arc<Activity>, max_open: usize) {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= 2 * max_open {
            queue.retain(|a| {
                a.requests.load(Ordering::SeqCst) == 0 && !a.closed.load(Ordering::SeqCst)
            });
        }
        queue.push_back(activity);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Tells the oldest silent connection to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(activity) = queue.pop_front() {
            if activity.requests.load(Ordering::SeqCst) == 0
                && !activity.closed.load(Ordering::SeqCst)
            {
                activity.evict.notify_one();
                return true;
            }
        }
        false
    }
}

/// What one connection is doing, for its idle watchdog.
#[derive(Default)]
struct Activity {
    evict: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds since the connection opened, at the last request's start or end.
    last_ms: AtomicU64,
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
    let unspoken = Arc::new(Unspoken::default());
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    let trimmer = tokio::spawn(trim_after_bursts(slots.clone(), limits.max_connections));
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
        let router = router.clone();
        let stopped = stopped.clone();
        let (slots, unspoken) = (slots.clone(), unspoken.clone());
        tokio::spawn(async move {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                // Full: the oldest silent connection makes room, if there is one.
                Err(_) if unspoken.evict_oldest() => {
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
            serve_one(stream, router, limits, stopped, &unspoken).await;
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

async fn serve_one(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
    unspoken: &Unspoken,
) {
    let opened = tokio::time::Instant::now();
    let activity = Arc::new(Activity::default());
    unspoken.push(activity.clone(), limits.max_connections);
    let tracker = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let router = router.clone();
        let activity = tracker.clone();
        async move {
            activity.in_flight.fetch_add(1, Ordering::SeqCst);
            let served = activity.requests.fetch_add(1, Ordering::SeqCst) + 1;
            let mut response = router
                .oneshot(request.map(Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            if served >= limits.max_requests_per_connection {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            activity
                .last_ms
                .store(opened.elapsed().as_millis() as u64, Ordering::SeqCst);
            activity.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let tick = limits.header_timeout.min(limits.idle_timeout) / 4;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = activity.evict.notified() => break,
            _ = stopped.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(tick.max(Duration::from_millis(10))), if !closing => {
                if activity.in_flight.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                // A connection that never sent a request gets the header deadline;
                // between requests, the idle timeout.
                let (since_ms, allowed) = if activity.requests.load(Ordering::SeqCst) == 0 {
                    (0, limits.header_timeout)
                } else {
                    (activity.last_ms.load(Ordering::SeqCst), limits.idle_timeout)
                };
                let idle = opened.elapsed().saturating_sub(Duration::from_millis(since_ms));
                if idle >= allowed {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    activity.closed.store(true, Ordering::SeqCst);
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

    #[test]
    fn the_silent_queue_stays_bounded_as_connections_come_and_go() {
        let unspoken = Unspoken::default();
        let mut silent = std::collections::VecDeque::new();
        for i in 0..10_000 {
            let activity = Arc::new(Activity::default());
            // Most connections speak or close; every tenth stays silent and open, and
            // at most 50 are open at once (the connection cap holds that in serve).
            if i % 10 != 0 {
                activity.closed.store(true, Ordering::SeqCst);
            } else {
                silent.push_back(activity.clone());
                if silent.len() > 50 {
                    let oldest: Arc<Activity> = silent.pop_front().unwrap();
                    oldest.closed.store(true, Ordering::SeqCst);
                }
            }
            unspoken.push(activity, 64);
            assert!(
                unspoken.len() <= 2 * 64,
                "{} entries after {i}",
                unspoken.len()
            );
        }
        // The silent, open ones are still there to be evicted.
        assert!(unspoken.evict_oldest());
    }
}
