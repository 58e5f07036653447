//! A guest's stdout and stderr: kept up to a capacity, the rest dropped and marked.
//! wasmtime's `MemoryOutputPipe` traps a guest that writes past its capacity, which
//! would turn a chatty rule into a fault (and, failing closed, deny every login).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Default)]
struct Buffer {
    kept: BytesMut,
    dropped: usize,
}

/// Shared by a store's stdout and stderr; cheap to clone.
#[derive(Clone)]
pub(crate) struct BoundedOutput {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl BoundedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buffer: Arc::default(),
        }
    }

    /// What was kept, and how many bytes were dropped after it.
    pub(crate) fn contents(&self) -> (Bytes, usize) {
        let buffer = self.lock();
        (buffer.kept.clone().freeze(), buffer.dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what fits; counts the rest. Never fails, so the guest never traps.
    fn keep(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        let room = self.capacity.saturating_sub(buffer.kept.len());
        let kept = bytes.len().min(room);
        buffer.kept.extend_from_slice(&bytes[..kept]);
        buffer.dropped = buffer.dropped.saturating_add(bytes.len() - kept);
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: what does not fit is dropped, not refused.
        Ok(self.capacity.max(1))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for BoundedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_capacity_and_counts_the_rest() {
        let output = BoundedOutput::new(4);
        let mut stream = output.clone();
        stream.write(Bytes::from_static(b"abc")).unwrap();
        stream.write(Bytes::from_static(b"defgh")).unwrap();
        assert_eq!(output.contents(), (Bytes::from_static(b"abcd"), 4));
        assert!(
            stream.check_write().unwrap() > 0,
            "never closes on the guest"
        );
    }
}
