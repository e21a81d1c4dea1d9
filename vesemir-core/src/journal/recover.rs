//! Putting back one server a journal left unfinished: health gate first, then its original
//! state on every instance; a server that fails its gate is left exactly as found, with the reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PendingServer;
use crate::error::PortError;
use crate::host::Host;
use crate::name::EnvVarName;
use crate::ports::{
    AdminState, Backend, Executor, InstanceState, LoadBalancer, OutputSink, RemoteCommand, ServerStatus,
    Weight,
};
use crate::request::{DeploymentRequest, Quoting};

/// The health command of a host, rendered from its request, and how long it may keep failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The host it runs on.
    pub host: Host,
    /// The command, rendered like the rollout renders it (variables shell-quoted, the same
    /// environment); its timeout is reset per attempt.
    pub command: RemoteCommand,
    /// How long it may keep failing.
    pub timeout: Duration,
    /// The pause between attempts.
    pub interval: Duration,
}

/// The health check of `host` from `request`'s health gate, if it has a command.
pub fn health_check(request: &DeploymentRequest, host: &Host, output_limit: usize) -> Option<HealthCheck> {
    let health = request.changeset.health.command.as_ref()?;
    let command = RemoteCommand {
        script: request.render(&health.command, Quoting::Shell, host),
        env: vec![
            (EnvVarName::builtin("VESEMIR_APPLICATION"), request.application.to_string()),
            (EnvVarName::builtin("VESEMIR_ENVIRONMENT"), request.environment.to_string()),
            (EnvVarName::builtin("VESEMIR_VERSION"), request.version.to_string()),
            (EnvVarName::builtin("VESEMIR_HOST"), host.name.to_string()),
        ],
        timeout: health.timeout,
        output_limit,
    };
    Some(HealthCheck { host: host.clone(), command, timeout: health.timeout, interval: health.interval })
}

/// Bounds of a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long the load balancers may take to report the server UP at weight 0.
    pub up_timeout: Duration,
    /// Bound on one quick load balancer or SSH call.
    pub call_timeout: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self { up_timeout: Duration::from_secs(30), call_timeout: Duration::from_secs(30) }
    }
}

/// What [`recover_server`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RecoveryOutcome {
    /// It already was in its original state on every instance: nothing was changed.
    AlreadyRestored,
    /// It was put back to its original state on every instance.
    Restored {
        /// Whether it passed the health gate first (it goes back into rotation); `false` when
        /// its original state takes no traffic (maintenance, drain, weight 0, down).
        gated: bool,
    },
    /// It failed its health gate, or a load balancer call failed: it is left out, as found.
    LeftOut {
        /// Why.
        reason: String,
    },
}

/// Puts `pending` back to its original state on every instance of `backend`.
///
/// When it already is in that state nothing changes. When its original state takes no traffic,
/// it is restored at once. Otherwise it must pass the health gate first: `health`'s command
/// (retried until it exits 0 or its time is up) when there is one, then the load balancers'
/// view, the server UP on every instance (when it is not already, it is set ready at weight 0,
/// so the instances check it without sending it traffic). A server that fails the gate is put
/// back as it was found and left out, with the reason.
pub async fn recover_server(
    lb: &dyn LoadBalancer,
    executor: &dyn Executor,
    backend: &Backend,
    pending: &PendingServer,
    health: Option<&HealthCheck>,
    config: &RecoveryConfig,
) -> RecoveryOutcome {
    let server = &pending.server;
    let quick = config.call_timeout;
    let left_out = |reason: String| RecoveryOutcome::LeftOut { reason };
    let found = match bounded(quick, lb.status(backend, server)).await {
        Ok(states) => states,
        Err(e) => return left_out(format!("cannot read its state: {}", e.chain())),
    };
    if same_state(&found, &pending.original) {
        return RecoveryOutcome::AlreadyRestored;
    }
    if !pending.originally_in_rotation() {
        return match bounded(quick, lb.restore(backend, server, &pending.original)).await {
            Ok(()) => RecoveryOutcome::Restored { gated: false },
            Err(e) => left_out(format!("restoring it failed: {}", e.chain())),
        };
    }
    if let Some(health) = health {
        if let Err(reason) = run_health(executor, health, quick).await {
            return left_out(reason);
        }
    }
    if !found.iter().all(|s| s.status == ServerStatus::Up) {
        let gate = async {
            bounded(quick, lb.set_weight(backend, server, Weight::ZERO)).await?;
            bounded(quick, lb.set_state(backend, server, AdminState::Ready)).await?;
            bounded(config.up_timeout + quick, lb.wait_up(backend, server, config.up_timeout)).await
        };
        if let Err(e) = gate.await {
            let put_back = match bounded(quick, lb.restore(backend, server, &found)).await {
                Ok(()) => "it was put back as found".to_owned(),
                Err(back) => {
                    format!("putting it back as found failed too ({}): check it by hand", back.chain())
                }
            };
            return left_out(format!(
                "the load balancers did not report it UP at weight 0: {}; {put_back}",
                e.chain()
            ));
        }
    }
    match bounded(quick, lb.restore(backend, server, &pending.original)).await {
        Ok(()) => RecoveryOutcome::Restored { gated: true },
        Err(e) => left_out(format!("it passed its health gate, but restoring it failed: {}", e.chain())),
    }
}

/// Whether `found` is `original` as far as restoring goes: the same instances, each in the same
/// admin state at the same effective weight.
fn same_state(found: &[InstanceState], original: &[InstanceState]) -> bool {
    found.len() == original.len()
        && original.iter().all(|o| {
            found.iter().any(|f| f.instance == o.instance && f.admin == o.admin && f.weight == o.weight)
        })
}

async fn bounded<T>(
    bound: Duration,
    call: impl std::future::Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(bound, call).await {
        Ok(result) => result,
        Err(_) => Err(PortError::timeout("a recovery call", bound)),
    }
}

/// Runs the health command until it exits 0, for at most its timeout.
async fn run_health(executor: &dyn Executor, health: &HealthCheck, quick: Duration) -> Result<(), String> {
    let host = &health.host;
    if let Err(e) = bounded(quick, executor.connect(host)).await {
        return Err(format!("cannot reach {host} for its health command: {}", e.chain()));
    }
    let deadline = tokio::time::Instant::now() + health.timeout;
    let mut attempts = 0u32;
    let outcome = loop {
        attempts += 1;
        let remaining =
            deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
        let command = RemoteCommand { timeout: remaining, ..health.command.clone() };
        let (output, mut lines) = OutputSink::channel();
        let result = bounded(remaining + quick, executor.run(host, &command, output)).await;
        let last_line = lines.drain().pop().map(|l| format!(" ({})", l.text)).unwrap_or_default();
        let failure = match result {
            Ok(status) if status.success() => break Ok(()),
            Ok(status) => format!("{status}{last_line}"),
            Err(e) => e.chain(),
        };
        let now = tokio::time::Instant::now();
        if now + health.interval >= deadline {
            break Err(format!(
                "its health command failed for {} ({attempts} attempts), last: {failure}",
                humantime::format_duration(health.timeout)
            ));
        }
        tokio::time::sleep(health.interval).await;
    };
    let _ = tokio::time::timeout(quick, executor.close(host)).await;
    outcome
}
