//! Driving non-blocking libssh2 calls: retry on "would block", sleeping on the socket (not
//! spinning) until it is ready, always bounded by a deadline.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// libssh2's `LIBSSH2_ERROR_EAGAIN`: a non-blocking call that would have blocked.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// The longest single sleep on the socket: a missed readiness edge costs at most this much.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Sleeps until the SSH socket is readable or writable, or a bound passes.
pub(crate) struct SocketWaiter {
    poll: Poll,
    events: Events,
}

impl SocketWaiter {
    /// Watches `fd`, the socket libssh2 owns. The waiter must not outlive the session.
    pub(crate) fn new(fd: RawFd) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry().register(&mut SourceFd(&fd), Token(0), Interest::READABLE | Interest::WRITABLE)?;
        Ok(Self { poll, events: Events::with_capacity(4) })
    }

    /// Sleeps until the socket is ready, `deadline` or 50 ms, whichever comes first.
    pub(crate) fn wait(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now()).min(MAX_SLEEP);
        // An error here (EINTR) only ends this sleep early; the caller loops anyway.
        let _ = self.poll.poll(&mut self.events, Some(left));
    }
}

/// Why a retried operation stopped without a result.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The deadline passed.
    Deadline,
    /// The caller was cancelled (its future was dropped).
    Cancelled,
    /// libssh2 failed.
    Failed(ssh2::Error),
}

/// Whether `error` only says that a non-blocking call would have blocked.
pub(crate) fn would_block(error: &ssh2::Error) -> bool {
    error.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

/// Calls `op` until it does not block, sleeping on the socket in between, until `deadline`.
pub(crate) fn retry<T>(
    waiter: &mut SocketWaiter,
    deadline: Instant,
    cancel: &AtomicBool,
    mut op: impl FnMut() -> Result<T, ssh2::Error>,
) -> Result<T, Stop> {
    loop {
        match op() {
            Ok(value) => return Ok(value),
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(Stop::Failed(e)),
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(Stop::Deadline);
        }
        waiter.wait(deadline);
    }
}
