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

/// Sleeps until the SSH socket is ready for what libssh2 waits for, or a bound passes.
pub(crate) struct SocketWaiter {
    poll: Poll,
    events: Events,
    fd: RawFd,
    session: ssh2::Session,
}

impl SocketWaiter {
    /// Watches `fd`, the socket `session` owns (the waiter holds the session, so the socket
    /// outlives it).
    pub(crate) fn new(fd: RawFd, session: ssh2::Session) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry().register(&mut SourceFd(&fd), Token(0), Interest::READABLE)?;
        Ok(Self { poll, events: Events::with_capacity(4), fd, session })
    }

    /// Sleeps until the socket is ready in the direction libssh2 last blocked on, `deadline`
    /// or 50 ms, whichever comes first.
    ///
    /// mio's readiness is edge-triggered; re-registering before each sleep re-arms it, so data
    /// already waiting in the socket wakes the sleep at once (level-triggered behaviour).
    pub(crate) fn wait(&mut self, deadline: Instant) {
        let interest = match self.session.block_directions() {
            ssh2::BlockDirections::Outbound => Interest::WRITABLE,
            ssh2::BlockDirections::Both => Interest::READABLE | Interest::WRITABLE,
            ssh2::BlockDirections::Inbound | ssh2::BlockDirections::None => Interest::READABLE,
        };
        let left = deadline.saturating_duration_since(Instant::now()).min(MAX_SLEEP);
        // Errors here only end this sleep early (or make it the full 50 ms); callers loop.
        if self.poll.registry().reregister(&mut SourceFd(&self.fd), Token(0), interest).is_err() {
            std::thread::sleep(left.min(Duration::from_millis(5)));
            return;
        }
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
