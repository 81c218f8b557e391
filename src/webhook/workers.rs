//! Where the webhook's synchronous work runs: heavy parsing on the worker that hands its other
//! tasks over first (`block_in_place`), file reads on tokio's blocking pool (`spawn_blocking`).
//! Owns no work of its own; must not be bypassed by a file read in an async function.

use std::future::Future;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Reviews up to this many bytes are parsed and extracted where they are: handing a worker's
/// tasks over costs more than the work (tens of microseconds, and a thread woken each time),
/// and small reviews are the steady load. Larger ones could stall a worker for milliseconds.
pub(crate) const INLINE_BODY_BYTES: usize = 64 << 10;

/// How heavy one review's synchronous work (decoding, converting, extracting, freeing) is,
/// judged once from its body's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A body of at most [`INLINE_BODY_BYTES`]: done on the worker, as any short computation.
    Light,
    /// A larger body: done after the worker hands its other tasks over.
    Heavy,
}

impl Work {
    /// The weight of the work a body of `len` bytes brings.
    pub(crate) fn of_body(len: usize) -> Self {
        if len <= INLINE_BODY_BYTES {
            Work::Light
        } else {
            Work::Heavy
        }
    }
}

/// Run synchronous work so that, when it is heavy (parsing, converting or freeing a large
/// object), it does not stall the other requests of this worker thread (`/healthz` included):
/// on the multi-threaded runtime the worker hands its other tasks over first.
pub(crate) fn off_the_workers<T>(work: Work, f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) if work == Work::Heavy => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// [`off_the_workers`] for a future that is mostly synchronous work (extraction: a Flux
/// object's lookups are the only waits).
pub(crate) async fn off_the_workers_async<F: Future>(work: Work, f: F) -> F::Output {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread && work == Work::Heavy => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_is_heavy_past_the_inline_size_only() {
        assert_eq!(Work::of_body(2_000), Work::Light);
        assert_eq!(Work::of_body(INLINE_BODY_BYTES), Work::Light);
        assert_eq!(Work::of_body(INLINE_BODY_BYTES + 1), Work::Heavy);
    }
}
