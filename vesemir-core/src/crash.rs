//! A deployment run that survives a bug: a panic in the rollout task (the state machine, the
//! driver, an event sink) is caught and answered as a [`Crash`] that says which hosts may have
//! been left out of rotation, folded from the events emitted before it ([`Progress`]). Front
//! ends record it as a failed deployment naming those hosts, never as one still running.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;

use crate::driver::{run, Control, DriverConfig, Ports, Prepared};
use crate::event::{Event, EventSink};
use crate::name::HostName;
use crate::progress::Progress;
use crate::report::DeploymentReport;

/// A rollout task that panicked: why, and what its events said until then.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The panic's message.
    pub message: String,
    /// The deployment as its events told it until the panic.
    pub progress: Progress,
}

impl Crash {
    /// A crash from a caught panic's payload, with the progress known at that moment.
    pub fn from_panic(payload: &(dyn Any + Send), progress: Progress) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Self { message, progress }
    }

    /// The hosts that may be out of rotation: in flight past the drain when it panicked, or
    /// ended out of rotation (or unknown), in plan order.
    pub fn out_of_rotation(&self) -> Vec<HostName> {
        self.progress.out_of_rotation().map(|h| h.name.clone()).collect()
    }
}

/// `internal error: MESSAGE (a bug: please report)`: what a front end records and shows.
impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "internal error: {} (a bug: please report)", self.message)
    }
}

impl std::error::Error for Crash {}

/// Folds every event into a [`Progress`] before passing it on.
struct Folding<'a> {
    inner: &'a dyn EventSink,
    progress: Mutex<Progress>,
}

impl Folding<'_> {
    fn progress(&self) -> Progress {
        // A panic while the lock was held leaves a fold of every event before it: still true.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl EventSink for Folding<'_> {
    fn emit(&self, event: &Event) {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner).apply(event);
        self.inner.emit(event);
    }
}

/// [`run`], with a panic anywhere in the rollout task caught: the report, or the [`Crash`]
/// with the hosts that may be out of rotation. Actions already running are dropped with the
/// rollout (their tasks are aborted).
pub async fn run_catching_panics(
    prepared: &Prepared,
    ports: &Ports,
    sink: &dyn EventSink,
    control: &Control,
    config: &DriverConfig,
) -> Result<DeploymentReport, Crash> {
    let names = prepared.plan.hosts.iter().map(|h| h.host.name.clone());
    let folding = Folding { inner: sink, progress: Mutex::new(Progress::with_hosts(names)) };
    let outcome = {
        let mut rollout = std::pin::pin!(run(prepared, ports, &folding, control, config));
        std::future::poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| rollout.as_mut().poll(cx))) {
            Ok(Poll::Ready(report)) => Poll::Ready(Ok(report)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        })
        .await
    };
    outcome.map_err(|payload| Crash::from_panic(&*payload, folding.progress()))
}
