//! The server's stop, in order, so that no server is ever left out of rotation unrecorded:
//!
//! 1. **Admissions close.** Every POST that would start a deployment (create, retry, rollback,
//!    an `on_failure = "rollback"` follow-up) or change the load balancers (recover, restore)
//!    is refused with 503 `application/problem+json` and `Retry-After`
//!    ([`RETRY_AFTER`]); `/readyz` answers 503 so a balancer in front stops sending. The
//!    runner closes admission under its admission lock ([`Runner::close_admissions`]): a POST
//!    racing with the stop is either refused or was admitted before and is in the set the next
//!    step cancels; never admitted and then dropped. The listener stays open meanwhile, so
//!    callers see the 503, follow their deployments' events and can still cancel.
//! 2. **Deployments in flight are cancelled**: queued ones end `cancelled` at once; running ones
//!    start no new host and their hosts in flight finish (the rollout's own cancel). Recoveries
//!    in flight go on. Both are awaited up to `limits.shutdown_grace`.
//! 3. **The rest are aborted** ([`Runner::abort_at_shutdown`]): they stop at once and end
//!    `interrupted`, with `out_of_rotation` naming the servers their journal leaves unfinished
//!    (and any their report says may be out), in the store and in the log, as a deployment
//!    interrupted by a crash is at the next start; `POST .../recover` puts them back. Their
//!    records are awaited up to [`ABORT_WAIT`]; one that did not record its end by then is
//!    marked `interrupted` from the same journal at the next start.
//! 4. Only then does the listener stop (open connections get up to [`HTTP_CLOSE_WAIT`]) and
//!    `serve` return, so `vesemir serve` exits 0.
//!
//! The whole stop lasts at most `shutdown_grace` + [`ABORT_WAIT`] + [`HTTP_CLOSE_WAIT`]: a
//! supervisor's stop timeout must be above that (75 s with the default grace of 60 s).
//!
//! [`Runner::close_admissions`]: crate::runner::Runner::close_admissions
//! [`Runner::abort_at_shutdown`]: crate::runner::Runner::abort_at_shutdown

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::api::App;

/// What a refused POST's `Retry-After` says: the time for this instance to be back (or for a
/// balancer to send the retry to another one).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long deployments aborted past the grace have to record their end.
pub const ABORT_WAIT: Duration = Duration::from_secs(10);

/// How long connections still open (event streams of other instances' deployments, slow
/// clients) have once every deployment has ended.
pub const HTTP_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownOutcome {
    /// Deployments queued or running when admissions closed.
    pub in_flight: usize,
    /// Of those, how many were still running past the grace and were aborted (each ended
    /// `interrupted`, naming the servers that may be out of rotation).
    pub aborted: usize,
    /// Of those, how many had not recorded their end within [`ABORT_WAIT`] (the next start
    /// marks them `interrupted` from their journals).
    pub unrecorded: usize,
    /// Recoveries still running when the stop went on (cut: their deployments keep listing
    /// the servers not yet put back).
    pub recoveries_left: usize,
    /// How long the stop took, up to the listener's close.
    pub took: Duration,
}

/// Steps 1 to 3: closes admissions, cancels and awaits deployments in flight up to the grace,
/// aborts the rest and waits for their records.
pub(crate) async fn drain(app: &App) -> ShutdownOutcome {
    let began = Instant::now();
    let grace = app.limits.shutdown_grace;
    app.runner.close_admissions().await;
    let in_flight = app.runner.active_count();
    info!(
        in_flight,
        grace = %humantime::format_duration(grace),
        "stopping: new deployments and recoveries are refused (503); cancelling the deployments in flight"
    );
    let deadline = tokio::time::Instant::now().checked_add(grace);
    let left = app.runner.cancel_all(grace).await;
    let mut outcome =
        ShutdownOutcome { in_flight, aborted: left, unrecorded: 0, recoveries_left: 0, took: Duration::ZERO };
    if left > 0 {
        warn!(left, "deployments still running past the shutdown grace: aborting them");
        outcome.unrecorded = app.runner.abort_at_shutdown(ABORT_WAIT).await;
        if outcome.unrecorded > 0 {
            error!(
                unrecorded = outcome.unrecorded,
                "aborted deployments did not record their end: the next start marks them interrupted from their journals"
            );
        }
    }
    // Recoveries put servers back: they get what is left of the grace.
    while app.recoveries.running() > 0 && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outcome.recoveries_left = app.recoveries.running();
    if outcome.recoveries_left > 0 {
        warn!(
            recoveries = outcome.recoveries_left,
            "recoveries still running at shutdown: their deployments keep listing the servers not put back"
        );
    }
    outcome.took = began.elapsed();
    info!(
        in_flight = outcome.in_flight,
        aborted = outcome.aborted,
        took_ms = u64::try_from(outcome.took.as_millis()).unwrap_or(u64::MAX),
        "every deployment has ended: closing the listener"
    );
    outcome
}
