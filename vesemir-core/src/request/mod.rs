//! The deployment request: what to deploy, where, through which load balancer, how many hosts at
//! a time, and the changeset. Parsed from TOML or JSON ([`spec`]) and validated once into
//! [`DeploymentRequest`], whose names are all validated newtypes.

mod amount;
mod bounds;
mod errors;
pub mod spec;
mod template;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use amount::Amount;
pub use bounds::{check_count, check_duration, MAX_CALL_DURATION, MAX_REQUEST_DURATION};
pub use errors::{FieldError, ValidationErrors};
pub use template::{push_shell_quoted, shell_quote, Quoting, Template, TemplateError};
pub use validate::{
    validate_playbooks, InlineChangesets, Playbooks, RawQueries, RequestPolicy, BUILTIN_VARIABLES,
};

use crate::backoff::Backoff;
use crate::host::Host;
use crate::name::{
    AppName, BackendName, EnvironmentName, PlaybookName, Requester, TeamName, VariableName, Version,
};
use crate::ports::{ExitStatus, LbEndpoint, Selector, Weight};

/// A validated deployment request.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRequest {
    /// The application deployed; with the environment, what one rollout at a time is about.
    pub application: AppName,
    /// The deployment environment, e.g. `production`.
    pub environment: EnvironmentName,
    /// The team that owns the application.
    pub team: TeamName,
    /// The version being deployed.
    pub version: Version,
    /// Who asked: a person or a pipeline, as shown in events and the store.
    pub requested_by: Requester,
    /// Which hosts: found by a selector, or listed.
    pub targets: Targets,
    /// The load balancer in front of them.
    pub load_balancer: LoadBalancerConfig,
    /// How many at a time, and when to stop.
    pub strategy: Strategy,
    /// The playbook the changeset came from, if it came from one.
    pub playbook: Option<PlaybookName>,
    /// What to do on each host.
    pub changeset: Changeset,
    /// Values of the request's own template variables.
    pub variables: BTreeMap<VariableName, String>,
}

/// Which hosts to deploy to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Hosts found by the inventory.
    Search(Selector),
    /// Hosts listed in the request.
    Hosts(Vec<Host>),
}

/// The load balancer in front of the hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancerConfig {
    /// The backend the hosts are servers of.
    pub backend: BackendName,
    /// Where the instances are.
    pub instances: LbInstances,
    /// How a host's server is found.
    pub server: ServerMapping,
    /// How long to wait for sessions to end after drain.
    pub drain_timeout: Duration,
    /// What to do when they do not.
    pub on_drain_timeout: DrainTimeoutPolicy,
    /// What to do with target servers that are not in rotation when the deployment is prepared.
    pub servers_not_in_rotation: NotInRotationPolicy,
    /// Weights to pass through before 100% (percentages of each server's original weight).
    pub ramp: Vec<RampStep>,
}

/// Where the load balancer instances are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbInstances {
    /// Listed in the request.
    Listed(Vec<LbEndpoint>),
    /// Found through the inventory: every host the selector finds, at this port.
    Discover {
        /// Which hosts are load balancers.
        selector: Selector,
        /// The runtime API's TCP port on each.
        port: u16,
    },
}

/// How a host's server is found in the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMapping {
    /// The server's name is this template rendered for the host (`{host}`, `{address}`...).
    Template(Template),
    /// The server whose address is the host's address.
    ByAddress,
}

/// What to do when a drained server still has sessions at the drain timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainTimeoutPolicy {
    /// Put the host back into rotation untouched and report it failed.
    Fail,
    /// End the remaining sessions and go on.
    Force,
}

/// What to do with a target server that is not in rotation when the deployment is prepared
/// (maintenance, drain, down, stopping, weight 0 on some box, or a different admin state or
/// weight on different boxes): someone or something else took it out, and Vesemir must not put
/// it back in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotInRotationPolicy {
    /// Refuse the whole deployment before anything changes, naming each such server and its
    /// state on each box.
    #[default]
    Refuse,
    /// Leave those servers exactly as found (never drained, never connected to) and report
    /// their hosts skipped.
    Skip,
    /// Deploy them too, then return each to the admin state and weight it had on each box.
    Include,
}

/// One step of the weight ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RampStep {
    /// The weight, below 100%.
    pub weight: Weight,
    /// How long to stay at it.
    pub hold: Duration,
}

/// How many hosts at a time, and when to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    /// Hosts out of rotation at once.
    pub concurrency: Amount,
    /// Failures tolerated over the whole fleet; one more and no new host starts.
    pub max_failures: Amount,
    /// A pause after each batch (only with [`Window::Batches`]).
    pub pause_between_batches: Duration,
    /// A first small batch, then a wait.
    pub canary: Option<Canary>,
    /// What the front end does after the deployment stopped on `max_failures`.
    pub on_failure: OnFailure,
    /// How hosts start within `concurrency`: a sliding window or strict batches.
    pub window: Window,
    /// Whether hosts that ended unreachable are tried once more at the end of the rollout
    /// (`strategy.retry_unreachable`): each at most once, within the same concurrency, backend
    /// budget and `max_failures`, and only if the rollout was not stopped or cancelled.
    pub retry_unreachable: bool,
    /// What another server instance does when it takes the deployment over.
    pub on_takeover: OnTakeover,
}

/// What a server instance does with a deployment it takes over from an instance that stopped
/// renewing its lease (servers sharing a database). Either way the hosts that were in flight
/// are checked first: healthy ones go back to their original state, unhealthy ones stay out
/// and are reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnTakeover {
    /// Then deploy the hosts not deployed yet (and those in flight that went back).
    #[default]
    Resume,
    /// Then stop: no other host starts.
    Restore,
}

impl OnTakeover {
    /// The word, as written in requests and in the `handover` event.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTakeover::Resume => "resume",
            OnTakeover::Restore => "restore",
        }
    }
}

/// What the front end that ran a deployment does when it stopped on `max_failures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Nothing: the failure is left for a person (`vesemir retry`, `restore`, `rollback`).
    #[default]
    Stop,
    /// Deploy the previous version (the newest one the history shows succeeded on every host)
    /// to the hosts the deployment changed, as a follow-up deployment linked to it.
    Rollback,
}

/// How hosts start within `concurrency` (after the canary batch, if any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// At most `concurrency` hosts out of rotation at any moment (Kubernetes'
    /// `maxUnavailable`): a host that ends frees its slot at once for the next one.
    #[default]
    Sliding,
    /// Strict batches of `concurrency` hosts: a batch starts once every host of the one
    /// before has ended (and `pause_between_batches` has passed).
    Batches,
}

impl Window {
    /// The request's word for it (`"sliding"`, `"batches"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Sliding => "sliding",
            Window::Batches => "batches",
        }
    }
}

/// The canary batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    /// Hosts in the canary batch.
    pub hosts: u32,
    /// What to wait for after it.
    pub gate: CanaryGate,
}

/// What the rollout waits for after the canary batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryGate {
    /// A fixed time.
    Hold(Duration),
    /// Someone's confirmation.
    Confirm,
}

/// What to do on each host.
#[derive(Debug, Clone, PartialEq)]
pub struct Changeset {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// How the host proves it is healthy.
    pub health: HealthGate,
}

/// One changeset step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its name in progress and logs.
    pub name: String,
    /// What it does.
    pub action: StepAction,
    /// How long it may take.
    pub timeout: Duration,
    /// Whether and how it is tried again after a transient failure.
    pub retries: Option<StepRetries>,
    /// Run while the host is still in rotation, before the drain (the stage steps are the first
    /// of the list).
    pub stage: bool,
}

/// How a step that failed for a passing reason is tried again: at most `count` more times, the
/// first after `delay`, each next after twice the last (at most [`StepRetries::MAX_DELAY`]).
///
/// What counts as passing: the exit codes listed in `exit_codes` (any non-zero code when the
/// list is empty), and a host that could not be reached. A step that timed out, was killed by a
/// signal or was refused otherwise is never retried: it may still be running, or will fail the
/// same way again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRetries {
    /// Tries after the first, at most.
    pub count: u32,
    /// The wait before the first retry.
    pub delay: Duration,
    /// The exit codes that mean "try again" (empty: every non-zero code).
    pub exit_codes: Vec<i32>,
}

impl StepRetries {
    /// The longest wait between two tries, whatever `delay` and `count` give.
    pub const MAX_DELAY: Duration = Duration::from_secs(60);

    /// Whether a run that ended with `status` may be tried again.
    pub fn retries_exit(&self, status: &ExitStatus) -> bool {
        match (status.code, &status.signal) {
            (Some(code), None) if code != 0 => self.exit_codes.is_empty() || self.exit_codes.contains(&code),
            _ => false,
        }
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn delay_before(&self, retry: u32) -> Duration {
        Backoff::new(self.count.saturating_add(1), self.delay, Self::MAX_DELAY.max(self.delay))
            .base_delay(retry)
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    /// Runs a command.
    Run(Template),
    /// Uploads a local file.
    Upload {
        /// The local file.
        source: PathBuf,
        /// Where on the host (a template).
        destination: Template,
        /// Unix mode bits.
        mode: u32,
    },
}

/// How a host proves it is healthy before it takes traffic again.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthGate {
    /// A command on the host, retried until it exits 0 or the time is up.
    pub command: Option<HealthCommand>,
    /// Wait until every load balancer instance reports the server UP, for at most this long.
    pub load_balancer_up: Option<Duration>,
    /// An HTTP check made by Vesemir itself, polled until it passes (after the command).
    pub http: Option<HttpHealth>,
}

/// The health gate's HTTP check, made from the orchestrator through the
/// [`HealthProbe`](crate::ports::HealthProbe) port.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHealth {
    /// The URL template, rendered per host as it is (no shell quoting); the rendered URL must
    /// start with `http://` or `https://`.
    pub url: Template,
    /// The status code that passes.
    pub status: u16,
    /// Text the body must contain, if any.
    pub body_contains: Option<String>,
    /// The pause between two requests.
    pub interval: Duration,
    /// How long it may keep failing, from its first request.
    pub timeout: Duration,
}

/// The health gate's command.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCommand {
    /// The command template, rendered per host with variables shell-quoted.
    pub command: Template,
    /// How long it may keep failing.
    pub timeout: Duration,
    /// The pause between attempts.
    pub interval: Duration,
}

impl DeploymentRequest {
    /// Parses and validates a TOML request.
    pub fn from_toml(text: &str, policy: &RequestPolicy<'_>) -> Result<Self, ValidationErrors> {
        spec::read_toml::<spec::RequestSpec>(text)?.validate(policy)
    }

    /// Parses and validates a JSON request.
    pub fn from_json(text: &str, policy: &RequestPolicy<'_>) -> Result<Self, ValidationErrors> {
        spec::read_json::<spec::RequestSpec>(text)?.validate(policy)
    }

    /// The value of a template variable for `host`: built-ins first, then the request's own.
    pub fn variable<'a>(&'a self, name: &str, host: &'a Host) -> Option<&'a str> {
        Some(match name {
            "application" => self.application.as_str(),
            "environment" => self.environment.as_str(),
            "team" => self.team.as_str(),
            "version" => self.version.as_str(),
            "requested_by" => self.requested_by.as_str(),
            "host" => host.name.as_str(),
            "address" => host.address.as_str(),
            other => {
                return self.variables.iter().find(|(k, _)| k.as_str() == other).map(|(_, v)| v.as_str())
            }
        })
    }

    /// Renders `template` for `host`.
    pub fn render(&self, template: &Template, quoting: Quoting, host: &Host) -> String {
        template.render(quoting, |name| self.variable(name, host))
    }
}
