//! `portcullis serve`: the pipeline over HTTP.

use anyhow::Result;

use super::Exit;
use super::options::ConfigArg;
use super::stores::tokio_runtime;

/// Serve the pipeline over HTTP (JSON), with hot reload, metrics and the outbox
/// dispatcher. SIGHUP reloads; SIGTERM finishes in-flight requests and stops.
#[derive(clap::Args)]
pub struct Serve {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to listen on (port 0: any free port; the first line printed says which).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: std::net::SocketAddr,
}

impl Serve {
    pub fn execute(self) -> Result<Exit> {
        return_large_buffers_to_the_kernel();
        tokio_runtime()?.block_on(portcullis::server::serve(
            &self.config.config,
            self.listen,
            |addr| {
                // The first stdout line says where: with port 0 the caller learns the port.
                println!("listening on {addr}");
                use std::io::Write;
                let _ = std::io::stdout().flush();
            },
        ))?;
        Ok(Exit::Done)
    }
}

/// Large transient buffers (argon2id's 19 MiB per password hash) go straight back to
/// the kernel. By default glibc raises its mmap threshold after the first such free and
/// then keeps them in per-thread arenas, so a busy server's resident memory creeps up
/// with every thread that ever hashed a password.
fn return_large_buffers_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before serving starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
