//! Where the webhook's synchronous work runs: heavy parsing on the worker that hands its other
//! tasks over first (`block_in_place`), file reads on tokio's blocking pool (`spawn_blocking`).
//! Owns no work of its own; must not be bypassed by a file read in an async function.

use std::future::Future;
use std::path::Path;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run synchronous work that may be heavy (parsing, converting or reading a large object) so
/// that it does not stall the other requests of this worker thread (`/healthz` included): on
/// the multi-threaded runtime the worker hands its other tasks over first.
pub(crate) fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// [`off_the_workers`] for a future that is mostly synchronous work (extraction: a Flux
/// object's lookups are the only waits).
pub(crate) async fn off_the_workers_async<F: Future>(f: F) -> F::Output {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => f.await,
    }
}

/// Run blocking work (file reads) on tokio's blocking pool, never on an async worker. A panic
/// in it, which none of it should do, is resumed here.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A file's text, read on the blocking pool.
pub(crate) async fn read_to_string(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    blocking(move || std::fs::read_to_string(path)).await
}
