//! Login statistics written behind. An allowed login whose rules asked for nothing to
//! be stored (an already-migrated user: no new user, link, outbox message or metadata)
//! still owes the directory its bookkeeping: the transaction as applied, the user's
//! last login and login count. None of that decides anything about security, and
//! writing it synchronously halves the login rate, so it is buffered and written every
//! `flush_ms` (or when the buffer fills, or when the gateway is dropped) in one
//! transaction. A crash loses at most the last `flush_ms` of it. Everything with
//! effects is written synchronously, in the login's own transaction, as before.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{StateStore, StoreError};

/// One login's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginMark {
    pub transaction_id: String,
    pub user_id: Option<String>,
    pub time_ms: u64,
    /// Where the login came from (keyed digests, when `[recovery]` is set): a
    /// recovery's risk is judged by them. Written behind with the statistics.
    pub sightings: Vec<(&'static str, String)>,
}

/// Marks waiting past this many make the writer flush at once.
const FLUSH_AT: usize = 4096;
/// While the store cannot be written, marks wait up to this many; older ones are
/// dropped (and logged), so a long outage cannot exhaust memory.
const MAX_WAITING: usize = 256 * 1024;

struct Shared {
    state: Arc<dyn StateStore>,
    waiting: Mutex<Buffer>,
    wake: Condvar,
}

#[derive(Default)]
struct Buffer {
    marks: Vec<LoginMark>,
    stop: bool,
}

pub struct LoginStats {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl LoginStats {
    /// Starts the writer thread for `state`, flushing every `flush_ms`.
    pub fn start(state: Arc<dyn StateStore>, flush_ms: u64) -> Self {
        let shared = Arc::new(Shared {
            state,
            waiting: Mutex::new(Buffer::default()),
            wake: Condvar::new(),
        });
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("portcullis-login-stats".into())
            .spawn(move || write_behind(&for_writer, Duration::from_millis(flush_ms.max(1))))
            .ok();
        Self { shared, writer }
    }

    pub fn record(&self, mark: LoginMark) {
        let mut waiting = self.shared.lock();
        waiting.marks.push(mark);
        if waiting.marks.len() >= FLUSH_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Writes what waits now; returns how many logins it counted.
    pub fn flush(&self) -> Result<usize, StoreError> {
        self.shared.flush()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush(&self) -> Result<usize, StoreError> {
        let marks = std::mem::take(&mut self.lock().marks);
        if marks.is_empty() {
            return Ok(0);
        }
        match self.state.record_logins(&marks).and_then(|counted| {
            let seen: Vec<_> = marks
                .iter()
                .filter_map(|m| {
                    let user = m.user_id.as_deref()?;
                    (!m.sightings.is_empty()).then_some((user, m.sightings.as_slice(), m.time_ms))
                })
                .collect();
            // Counted already: a sighting written twice after a failure is harmless.
            super::recovery::record_sightings_batch(self.state.sql(), &seen)?;
            Ok(counted)
        }) {
            Ok(counted) => Ok(counted),
            Err(e) => {
                // Put them back in front of what came meanwhile, for the next flush.
                let mut waiting = self.lock();
                let newer = std::mem::replace(&mut waiting.marks, marks);
                waiting.marks.extend(newer);
                let excess = waiting.marks.len().saturating_sub(MAX_WAITING);
                if excess > 0 {
                    waiting.marks.drain(..excess);
                    tracing::error!(
                        dropped = excess,
                        "login statistics dropped: the store is not writable"
                    );
                }
                Err(e)
            }
        }
    }
}

fn write_behind(shared: &Shared, every: Duration) {
    loop {
        let stop = {
            let waiting = shared.lock();
            let (waiting, _) = shared
                .wake
                .wait_timeout_while(waiting, every, |b| !b.stop && b.marks.len() < FLUSH_AT)
                .unwrap_or_else(|p| p.into_inner());
            waiting.stop
        };
        if let Err(e) = shared.flush() {
            tracing::warn!("writing login statistics failed (retried): {e}");
        }
        if stop {
            return;
        }
    }
}

impl Drop for LoginStats {
    /// The last marks are written before the gateway goes (shutdown, reload).
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Whatever is left (no writer thread could be started, or its last write
        // failed) gets one more try here.
        if let Err(e) = self.shared.flush() {
            tracing::error!("login statistics not written at shutdown: {e}");
        }
    }
}
