//! What the rollout asks for ([`Action`]) and what it is told back ([`ActionResult`]).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PortError;
use crate::ports::{AdminState, ExitStatus, InstanceState, ServerState, Weight};

/// A host's position in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

/// Something the rollout wants done. Every action concerns one host; a host has at most one
/// action outstanding, and its result comes back through
/// [`Rollout::handle_result`](super::Rollout::handle_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open the SSH session.
    Connect {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// Which start of the host this is: 1, or 2 when it ended unreachable and is tried
        /// again (`strategy.retry_unreachable`; the driver then claims its host lock again if
        /// the first claim failed).
        attempt: u32,
    },
    /// Set the server's administrative state on every load balancer instance.
    SetState {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// Drain to take it out gently, maint to keep it out, ready to put it back.
        state: AdminState,
    },
    /// Set the server's weight on every instance.
    SetWeight {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// The weight to set: 0 (health checks only), a ramp weight, or 100%.
        weight: Weight,
    },
    /// Wait until the server has no sessions left, for at most `timeout`.
    WaitDrained {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// How long to wait at most; past it the call fails with a timeout.
        timeout: Duration,
    },
    /// End the server's remaining sessions.
    ShutdownSessions {
        /// The host to act on, by its position in the plan.
        host: HostId,
    },
    /// Run changeset step `step` (0-based).
    RunStep {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// The step's index.
        step: usize,
        /// How long the step may run before the executor ends it.
        timeout: Duration,
    },
    /// Run the health check command once.
    RunHealthCheck {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// The attempt, from 1.
        attempt: u32,
        /// How long this attempt may take.
        timeout: Duration,
    },
    /// Make the health gate's HTTP check once, from the orchestrator. Passed is
    /// [`ActionResult::Done`]; not passed is [`ActionResult::Failed`] with the reason.
    ProbeHealth {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// The attempt, from 1.
        attempt: u32,
        /// How long this request may take.
        timeout: Duration,
    },
    /// Mark the server DOWN on every instance while its health checks keep running, so that
    /// only checks made from now on can bring it back UP
    /// ([`RolloutConfig::checks_while_out`](super::RolloutConfig::checks_while_out)).
    MarkDown {
        /// The host to act on, by its position in the plan.
        host: HostId,
    },
    /// Wait until every instance reports the server UP, for at most `timeout`.
    WaitUp {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// How long to wait at most; past it the call fails with a timeout.
        timeout: Duration,
    },
    /// Read every server of the backend (one `servers()` call), to count the servers out of
    /// rotation before taking this host (and any other host waiting to) out. Its result is
    /// [`ActionResult::Backend`].
    ReadBackend {
        /// The host whose take-out waits for the answer, by its position in the plan.
        host: HostId,
    },
    /// Set the server, on each instance listed, to that instance's admin state and absolute
    /// weight (the load balancer's `restore`): its original state, or a ramp step as a
    /// percentage of its original weight.
    Restore {
        /// The host to act on, by its position in the plan.
        host: HostId,
        /// The state per instance (only `instance`, `admin` and `weight` matter).
        to: Vec<InstanceState>,
    },
    /// Close the SSH session. Its result is always [`ActionResult::Done`].
    Close {
        /// The host to act on, by its position in the plan.
        host: HostId,
    },
}

impl Action {
    /// The host the action concerns.
    pub fn host(&self) -> HostId {
        match self {
            Action::Connect { host, .. }
            | Action::SetState { host, .. }
            | Action::SetWeight { host, .. }
            | Action::WaitDrained { host, .. }
            | Action::ShutdownSessions { host }
            | Action::RunStep { host, .. }
            | Action::RunHealthCheck { host, .. }
            | Action::ProbeHealth { host, .. }
            | Action::WaitUp { host, .. }
            | Action::MarkDown { host }
            | Action::ReadBackend { host }
            | Action::Restore { host, .. }
            | Action::Close { host } => *host,
        }
    }
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// It worked (a load balancer change took effect, a wait ended, a session opened).
    Done,
    /// A command ran to its end with this status (0 or not).
    Exited(ExitStatus),
    /// It did not work: the error says why, and its kind whether it was a timeout.
    Failed(HostError),
    /// The backend's servers, as every instance sees them (the answer to
    /// [`Action::ReadBackend`]).
    Backend(Vec<ServerState>),
}

impl From<Result<(), PortError>> for ActionResult {
    fn from(result: Result<(), PortError>) -> Self {
        match result {
            Ok(()) => ActionResult::Done,
            Err(e) => ActionResult::Failed(HostError::from(&e)),
        }
    }
}

impl From<Result<ExitStatus, PortError>> for ActionResult {
    fn from(result: Result<ExitStatus, PortError>) -> Self {
        match result {
            Ok(status) => ActionResult::Exited(status),
            Err(e) => ActionResult::Failed(HostError::from(&e)),
        }
    }
}

/// Why a host's action failed, kept as data the rollout can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The whole message, sources included.
    pub message: String,
}

/// The kind of a [`HostError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Could not be reached.
    Unreachable,
    /// Took too long: for a load balancer change, its effect is unknown.
    Timeout,
    /// The other side refused the request.
    Rejected,
    /// Credentials or host key refused.
    Unauthorized,
    /// Something named does not exist.
    NotFound,
    /// Anything else.
    Other,
}

impl HostError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl From<&PortError> for HostError {
    fn from(error: &PortError) -> Self {
        let kind = match error {
            PortError::Unreachable { .. } => ErrorKind::Unreachable,
            PortError::Timeout { .. } => ErrorKind::Timeout,
            PortError::Rejected { .. } => ErrorKind::Rejected,
            PortError::Unauthorized { .. } => ErrorKind::Unauthorized,
            PortError::NotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Other,
        };
        Self { kind, message: error.chain() }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
