//! Turns a [`RequestSpec`] into a [`DeploymentRequest`], reporting every problem with its field
//! path and what is allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::errors::{Problems, ValidationErrors};
use super::spec::{
    ChangesetSpec, EndpointSpec, HealthSpec, Lenient, LoadBalancerSpec, RampSpec, RequestSpec,
    StepRetriesSpec, StepSpec, StrategySpec,
};
use super::*;
use crate::host::{validate_address, Host};
use crate::name::{ChefTerm, HostName};
use crate::ports::Selector;

/// Variables every template may use, filled in by Vesemir.
pub const BUILTIN_VARIABLES: [&str; 7] =
    ["application", "environment", "team", "version", "requested_by", "host", "address"];

const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Changesets the operator configured, by name.
pub type Playbooks = BTreeMap<PlaybookName, Changeset>;

/// Whether a request may carry its own changeset steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineChangesets {
    /// Yes: the person running the CLI owns the commands.
    Allowed,
    /// No: requests pick a playbook (the HTTP server).
    Refused,
}

/// Whether a request may carry a raw inventory query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawQueries {
    /// Yes.
    Allowed,
    /// No: only tags, roles and recipes, which are escaped.
    Refused,
}

/// What the front end allows a request to do.
#[derive(Debug, Clone, Copy)]
pub struct RequestPolicy<'a> {
    /// The operator's playbooks.
    pub playbooks: &'a Playbooks,
    /// Whether inline changesets are allowed.
    pub inline_changesets: InlineChangesets,
    /// Whether raw queries are allowed.
    pub raw_queries: RawQueries,
}

impl RequestPolicy<'_> {
    /// Everything allowed, with no playbooks: for tests and trusted local use.
    pub fn permissive() -> RequestPolicy<'static> {
        static NO_PLAYBOOKS: Playbooks = BTreeMap::new();
        RequestPolicy {
            playbooks: &NO_PLAYBOOKS,
            inline_changesets: InlineChangesets::Allowed,
            raw_queries: RawQueries::Allowed,
        }
    }
}

/// Validates the operator's playbooks as configured (`[playbooks.NAME]`): each name and each
/// changeset, every problem at once under `playbooks.NAME`. The one playbook check, shared by
/// the CLI's and the server's configurations.
pub fn validate_playbooks<'a>(
    specs: impl IntoIterator<Item = (&'a String, &'a ChangesetSpec)>,
) -> Result<Playbooks, ValidationErrors> {
    let mut p = Problems::default();
    let mut playbooks = Playbooks::new();
    for (name, spec) in specs {
        let field = format!("playbooks.{name}");
        let name = p.check(&field, PlaybookName::new(name));
        match spec.validate() {
            Ok(changeset) => {
                if let Some(name) = name {
                    playbooks.insert(name, changeset);
                }
            }
            Err(errors) => p.extend(errors.within(&field)),
        }
    }
    p.finish(|| Some(playbooks))
}

/// Reads the duration of `field` (`default` when unset): every duration of a request and of a
/// playbook goes through here, so each is at most [`MAX_REQUEST_DURATION`].
fn duration(problems: &mut Problems, field: &str, text: Option<&str>, default: Duration) -> Duration {
    let Some(text) = text else { return default };
    match humantime::parse_duration(text) {
        Ok(d) => match check_duration(field, d, MAX_REQUEST_DURATION) {
            Ok(d) => d,
            Err(problem) => {
                problems.add(problem.field, problem.message);
                default
            }
        },
        Err(_) => {
            problems.add(
                field,
                format!(
                    "{text:?} is not a duration: write a number and a unit, like \"30s\", \"2m\" or \"1h\""
                ),
            );
            default
        }
    }
}

fn terms(problems: &mut Problems, field: &str, values: &[String]) -> Vec<ChefTerm> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| problems.check(&format!("{field}[{i}]"), ChefTerm::new(v)))
        .collect()
}

fn template(problems: &mut Problems, field: &str, text: &str) -> Option<Template> {
    problems.check(field, Template::parse(text))
}

impl Lenient<RequestSpec> {
    /// Validates a request read leniently: its type problems and every other problem at once,
    /// leaving out problems of the stand-ins (they would repeat a type problem).
    pub fn validate(&self, policy: &RequestPolicy<'_>) -> Result<DeploymentRequest, ValidationErrors> {
        let mut p = Problems::default();
        for error in &self.problems {
            p.add(error.field.clone(), error.message.clone());
        }
        match self.value.validate(policy) {
            Ok(request) => p.finish(|| Some(request)),
            Err(errors) => {
                for error in errors.errors().iter().filter(|e| !self.covers(&e.field)) {
                    p.add(error.field.clone(), error.message.clone());
                }
                p.finish(|| None)
            }
        }
    }
}

impl RequestSpec {
    /// Validates the request under `policy`, reporting every problem at once.
    pub fn validate(&self, policy: &RequestPolicy<'_>) -> Result<DeploymentRequest, ValidationErrors> {
        let mut p = Problems::default();
        let application = p.check("application", AppName::new(&self.application));
        let environment = p.check("environment", EnvironmentName::new(&self.environment));
        let team = p.check("team", TeamName::new(&self.team));
        let version = p.check("version", Version::new(&self.version));
        let requested_by = match &self.requested_by {
            Some(who) => p.check("requested_by", Requester::new(who)),
            None => {
                p.add("requested_by", "is missing: say who asks for this deployment");
                None
            }
        };
        let targets = self.targets(&mut p, policy, environment.as_ref());
        let load_balancer = self.load_balancer(&mut p);
        let strategy = validate_strategy(&mut p, &self.strategy);

        let mut variables = BTreeMap::new();
        for (name, value) in &self.variables {
            let field = format!("variables.{name}");
            let Some(name) = p.check(&field, VariableName::new(name)) else { continue };
            if BUILTIN_VARIABLES.contains(&name.as_str()) {
                p.add(&field, format!("{{{name}}} is built in and set by Vesemir: choose another name"));
            } else if value.contains('\0') {
                p.add(&field, "contains a NUL character");
            } else {
                variables.insert(name, value.clone());
            }
        }

        let (playbook, changeset) = self.changeset(&mut p, policy);
        if let Some(changeset) = &changeset {
            let known: BTreeSet<&str> =
                BUILTIN_VARIABLES.iter().copied().chain(variables.keys().map(VariableName::as_str)).collect();
            let source = match &playbook {
                Some(name) => format!("playbook {name}"),
                None => "changeset".to_owned(),
            };
            for (field, template) in
                changeset.templates(&source).into_iter().chain(load_balancer.iter().flat_map(lb_templates))
            {
                for variable in template.variables() {
                    if !known.contains(variable.as_str()) {
                        p.add(
                            field.clone(),
                            format!(
                                "uses {{{variable}}}, which is neither built in ({}) nor set: add it under [variables]",
                                BUILTIN_VARIABLES.join(", ")
                            ),
                        );
                    }
                }
            }
        }

        p.finish(|| {
            Some(DeploymentRequest {
                application: application?,
                environment: environment?,
                team: team?,
                version: version?,
                requested_by: requested_by?,
                targets: targets?,
                load_balancer: load_balancer?,
                strategy: strategy?,
                playbook,
                changeset: changeset?,
                variables,
            })
        })
    }

    fn targets(
        &self,
        p: &mut Problems,
        policy: &RequestPolicy<'_>,
        environment: Option<&EnvironmentName>,
    ) -> Option<Targets> {
        let t = &self.targets;
        let searching =
            !t.tags.is_empty() || !t.roles.is_empty() || !t.recipes.is_empty() || t.query.is_some();
        if let Some(hosts) = &t.hosts {
            if searching || t.chef_environment.is_some() {
                p.add(
                    "targets",
                    "lists hosts and also a search: use either targets.hosts or tags/roles/recipes/query",
                );
                return None;
            }
            if hosts.is_empty() {
                p.add("targets.hosts", "is empty: list at least one host");
                return None;
            }
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                let name = p.check(&format!("targets.hosts[{i}].name"), HostName::new(&h.name));
                let address = p.check(&format!("targets.hosts[{i}].address"), validate_address(&h.address));
                if let (Some(name), Some(())) = (name, address) {
                    if !seen.insert(name.clone()) {
                        p.add(format!("targets.hosts[{i}].name"), format!("{name} is listed twice"));
                    }
                    out.push(Host { name, address: h.address.clone(), attributes: BTreeMap::new() });
                }
            }
            return Some(Targets::Hosts(out));
        }
        if !searching {
            p.add("targets", "names no hosts: give tags, roles, recipes or a query, or list hosts");
            return None;
        }
        if t.query.is_some() && policy.raw_queries == RawQueries::Refused {
            p.add(
                "targets.query",
                "raw queries are not allowed here: select hosts by tags, roles or recipes",
            );
        }
        if let Some(query) = &t.query {
            if query.trim().is_empty() || query.contains(['\n', '\r', '\0']) {
                p.add("targets.query", "must be one non-empty line");
            }
        }
        let chef_environment = match &t.chef_environment {
            Some(env) => p.check("targets.chef_environment", EnvironmentName::new(env)),
            None => environment.cloned(),
        };
        Some(Targets::Search(Selector {
            tags: terms(p, "targets.tags", &t.tags),
            roles: terms(p, "targets.roles", &t.roles),
            recipes: terms(p, "targets.recipes", &t.recipes),
            environment: chef_environment,
            raw_query: t.query.clone(),
        }))
    }

    fn load_balancer(&self, p: &mut Problems) -> Option<LoadBalancerConfig> {
        let lb = &self.load_balancer;
        let backend = p.check("load_balancer.backend", BackendName::new(&lb.backend));
        let instances = lb_instances(p, lb);
        let server = server_mapping(p, lb);
        let drain_timeout =
            duration(p, "load_balancer.drain_timeout", lb.drain_timeout.as_deref(), DEFAULT_DRAIN_TIMEOUT);
        let on_drain_timeout = match lb.on_drain_timeout.as_deref() {
            None | Some("fail") => Some(DrainTimeoutPolicy::Fail),
            Some("force") => Some(DrainTimeoutPolicy::Force),
            Some(other) => {
                p.add(
                    "load_balancer.on_drain_timeout",
                    format!("{other:?} is not known: use \"fail\" or \"force\""),
                );
                None
            }
        };
        let servers_not_in_rotation = match lb.servers_not_in_rotation.as_deref() {
            None | Some("refuse") => Some(NotInRotationPolicy::Refuse),
            Some("skip") => Some(NotInRotationPolicy::Skip),
            Some("include") => Some(NotInRotationPolicy::Include),
            Some(other) => {
                p.add(
                    "load_balancer.servers_not_in_rotation",
                    format!("{other:?} is not known: use \"refuse\", \"skip\" or \"include\""),
                );
                None
            }
        };
        let ramp = ramp(p, &lb.ramp);
        Some(LoadBalancerConfig {
            backend: backend?,
            instances: instances?,
            server: server?,
            drain_timeout,
            on_drain_timeout: on_drain_timeout?,
            servers_not_in_rotation: servers_not_in_rotation?,
            ramp,
        })
    }

    fn changeset(
        &self,
        p: &mut Problems,
        policy: &RequestPolicy<'_>,
    ) -> (Option<PlaybookName>, Option<Changeset>) {
        match (&self.playbook, &self.changeset) {
            (Some(_), Some(_)) => {
                p.add("playbook", "is given with an inline changeset: use one of them");
                (None, None)
            }
            (None, None) => {
                p.add("playbook", "is missing: name a playbook (or give a [changeset] where allowed)");
                (None, None)
            }
            (Some(name), None) => {
                let Some(name) = p.check("playbook", PlaybookName::new(name)) else { return (None, None) };
                match policy.playbooks.get(&name) {
                    Some(changeset) => (Some(name), Some(changeset.clone())),
                    None => {
                        let known: Vec<&str> = policy.playbooks.keys().map(PlaybookName::as_str).collect();
                        let known = if known.is_empty() {
                            "none are configured".to_owned()
                        } else {
                            format!("known: {}", known.join(", "))
                        };
                        p.add("playbook", format!("{name} is not a configured playbook ({known})"));
                        (None, None)
                    }
                }
            }
            (None, Some(spec)) => {
                if policy.inline_changesets == InlineChangesets::Refused {
                    p.add(
                        "changeset",
                        "inline changesets are not allowed here: name a configured playbook instead",
                    );
                    return (None, None);
                }
                match spec.validate() {
                    Ok(changeset) => (None, Some(changeset)),
                    Err(errors) => {
                        p.extend(errors.within("changeset"));
                        (None, None)
                    }
                }
            }
        }
    }
}

/// Where the load balancer instances are: listed, or discovered through the inventory.
fn lb_instances(p: &mut Problems, lb: &LoadBalancerSpec) -> Option<LbInstances> {
    match (&lb.discover, lb.instances.is_empty()) {
        (Some(_), false) => {
            p.add("load_balancer", "has both instances and discover: use one of them");
            None
        }
        (None, true) => {
            p.add(
                "load_balancer.instances",
                "is empty: list the HAProxy runtime API endpoints, or use load_balancer.discover",
            );
            None
        }
        (None, false) => {
            let endpoints: Vec<Option<LbEndpoint>> = lb
                .instances
                .iter()
                .enumerate()
                .map(|(i, e)| endpoint(p, &format!("load_balancer.instances[{i}]"), e))
                .collect();
            endpoints.into_iter().collect::<Option<Vec<_>>>().map(LbInstances::Listed)
        }
        (Some(d), true) => {
            let selector = Selector {
                tags: terms(p, "load_balancer.discover.tags", &d.tags),
                roles: terms(p, "load_balancer.discover.roles", &d.roles),
                recipes: terms(p, "load_balancer.discover.recipes", &d.recipes),
                environment: d.chef_environment.as_ref().and_then(|e| {
                    p.check("load_balancer.discover.chef_environment", EnvironmentName::new(e))
                }),
                raw_query: None,
            };
            if selector.is_empty() {
                p.add(
                    "load_balancer.discover",
                    "names no tags, roles or recipes to find the HAProxy hosts by",
                );
            }
            if d.port == 0 {
                p.add("load_balancer.discover.port", "must be a TCP port from 1 to 65535");
            }
            Some(LbInstances::Discover { selector, port: d.port })
        }
    }
}

/// How a host's server is found: by a name template (`{host}` by default) or by address.
fn server_mapping(p: &mut Problems, lb: &LoadBalancerSpec) -> Option<ServerMapping> {
    match (&lb.server_name, lb.match_servers_by.as_deref()) {
        (Some(_), Some(_)) => {
            p.add("load_balancer", "has both server_name and match_servers_by: use one of them");
            None
        }
        (None, Some("address")) => Some(ServerMapping::ByAddress),
        (None, Some("name")) => Template::parse("{host}").ok().map(ServerMapping::Template),
        (None, Some(other)) => {
            p.add(
                "load_balancer.match_servers_by",
                format!("{other:?} is not known: use \"address\" or \"name\""),
            );
            None
        }
        (Some(text), None) => template(p, "load_balancer.server_name", text).map(ServerMapping::Template),
        (None, None) => Template::parse("{host}").ok().map(ServerMapping::Template),
    }
}

/// The ramp's weights, each from 1% to 99% and above the one before, with their holds.
fn ramp(p: &mut Problems, steps: &[RampSpec]) -> Vec<RampStep> {
    let mut ramp = Vec::new();
    let mut previous = 0;
    for (i, step) in steps.iter().enumerate() {
        let field = format!("load_balancer.ramp[{i}]");
        let percent = match step.weight {
            Amount::Percent(w) if (1..100).contains(&w) => w,
            Amount::Count(w) if (1..100).contains(&w) => w as u8,
            other => {
                p.add(
                    format!("{field}.weight"),
                    format!("{other} is not a weight from 1% to 99% (100% comes last by itself)"),
                );
                continue;
            }
        };
        if percent <= previous {
            p.add(
                format!("{field}.weight"),
                format!("{percent}% must be above the step before ({previous}%): a ramp only goes up"),
            );
        }
        previous = percent;
        let hold = duration(p, &format!("{field}.hold"), step.hold.as_deref(), Duration::ZERO);
        if let Ok(weight) = Weight::percent(percent) {
            ramp.push(RampStep { weight, hold });
        }
    }
    ramp
}

fn endpoint(p: &mut Problems, field: &str, e: &EndpointSpec) -> Option<LbEndpoint> {
    match (&e.address, e.port, &e.socket) {
        (Some(address), Some(port), None) => {
            p.check(&format!("{field}.address"), validate_address(address))?;
            if port == 0 {
                p.add(format!("{field}.port"), "must be a TCP port from 1 to 65535");
                return None;
            }
            Some(LbEndpoint::Tcp { address: address.clone(), port })
        }
        (None, None, Some(socket)) if !socket.is_empty() => {
            Some(LbEndpoint::Unix { socket: PathBuf::from(socket) })
        }
        _ => {
            p.add(field, "must be either { address = \"...\", port = N } or { socket = \"/path\" }");
            None
        }
    }
}

fn lb_templates(lb: &LoadBalancerConfig) -> Vec<(String, &Template)> {
    match &lb.server {
        ServerMapping::Template(t) => vec![("load_balancer.server_name".to_owned(), t)],
        ServerMapping::ByAddress => Vec::new(),
    }
}

fn validate_strategy(p: &mut Problems, s: &StrategySpec) -> Option<Strategy> {
    let concurrency = s.concurrency.unwrap_or(Amount::Count(1));
    match concurrency {
        Amount::Count(0) | Amount::Percent(0) => {
            p.add("strategy.concurrency", "must be at least 1 (or 1%)");
        }
        _ => {}
    }
    let canary = s.canary.as_ref().and_then(|c| {
        if c.hosts == 0 {
            p.add("strategy.canary.hosts", "must be at least 1");
        }
        let gate = match (c.hold.as_deref(), c.confirm) {
            (Some(hold), None | Some(false)) => {
                CanaryGate::Hold(duration(p, "strategy.canary.hold", Some(hold), Duration::ZERO))
            }
            (None, Some(true)) => CanaryGate::Confirm,
            (Some(_), Some(true)) => {
                p.add("strategy.canary", "has both hold and confirm: use one of them");
                return None;
            }
            (None, _) => {
                p.add(
                    "strategy.canary",
                    "needs hold = \"5m\" (wait that long) or confirm = true (wait for a person)",
                );
                return None;
            }
        };
        Some(Canary { hosts: c.hosts, gate })
    });
    let on_failure = match s.on_failure.as_deref() {
        None | Some("stop") => OnFailure::Stop,
        Some("rollback") => OnFailure::Rollback,
        Some(other) => {
            p.add(
                "strategy.on_failure",
                format!("is {other:?}: write \"stop\" (the default) or \"rollback\""),
            );
            OnFailure::Stop
        }
    };
    let on_takeover = match s.on_takeover.as_deref() {
        None | Some("resume") => OnTakeover::Resume,
        Some("restore") => OnTakeover::Restore,
        Some(other) => {
            p.add(
                "strategy.on_takeover",
                format!("is {other:?}: write \"resume\" (the default) or \"restore\""),
            );
            OnTakeover::Resume
        }
    };
    let pause_between_batches =
        duration(p, "strategy.pause_between_batches", s.pause_between_batches.as_deref(), Duration::ZERO);
    let window = match s.window.as_deref() {
        None if pause_between_batches.is_zero() => Window::Sliding,
        None | Some("batches") => Window::Batches,
        Some("sliding") => {
            if !pause_between_batches.is_zero() {
                p.add(
                    "strategy.pause_between_batches",
                    "applies between strict batches: with window = \"sliding\" hosts start as slots free; set window = \"batches\" or remove the pause",
                );
            }
            Window::Sliding
        }
        Some(other) => {
            p.add("strategy.window", format!("is {other:?}: use \"sliding\" or \"batches\""));
            Window::Sliding
        }
    };
    Some(Strategy {
        on_failure,
        on_takeover,
        concurrency,
        max_failures: s.max_failures.unwrap_or(Amount::Count(0)),
        pause_between_batches,
        canary,
        window,
        retry_unreachable: s.retry_unreachable.unwrap_or(false),
    })
}

impl ChangesetSpec {
    /// Validates a changeset on its own (a playbook): templates parse, durations parse, the
    /// health gate has something to check. Variables are checked against a request later.
    pub fn validate(&self) -> Result<Changeset, ValidationErrors> {
        let mut p = Problems::default();
        if self.steps.is_empty() {
            p.add("steps", "is empty: a changeset needs at least one step");
        }
        let mut names = BTreeSet::new();
        let steps: Vec<Option<Step>> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| validate_step(&mut p, &format!("steps[{i}]"), s, &mut names))
            .collect();
        // Stage steps run before the drain: they must be the first of the list, so the order of
        // the list is the order they run in.
        if let Some(first_live) = self.steps.iter().position(|s| s.stage != Some(true)) {
            for (i, s) in self.steps.iter().enumerate().skip(first_live) {
                if s.stage == Some(true) {
                    p.add(
                        format!("steps[{i}].stage"),
                        format!(
                            "comes after steps[{first_live}], which is not a stage step: stage steps run before the drain, so list them first"
                        ),
                    );
                }
            }
        }
        let health = validate_health(&mut p, self.health.as_ref());
        p.finish(|| {
            Some(Changeset { steps: steps.into_iter().collect::<Option<Vec<_>>>()?, health: health? })
        })
    }
}

fn validate_step<'s>(
    p: &mut Problems,
    field: &str,
    s: &'s StepSpec,
    names: &mut BTreeSet<&'s str>,
) -> Option<Step> {
    if s.name.trim().is_empty() || s.name.len() > 64 || s.name.contains(char::is_control) {
        p.add(format!("{field}.name"), "must be 1 to 64 characters on one line");
    } else if !names.insert(&s.name) {
        p.add(
            format!("{field}.name"),
            format!("{:?} is used by another step: step names must differ", s.name),
        );
    }
    let timeout = duration(p, &format!("{field}.timeout"), s.timeout.as_deref(), DEFAULT_STEP_TIMEOUT);
    if timeout.is_zero() {
        p.add(format!("{field}.timeout"), "must be more than 0s");
    }
    let action = match (&s.run, &s.upload, &s.to) {
        (Some(run), None, None) => {
            if s.mode.is_some() {
                p.add(format!("{field}.mode"), "only applies to upload steps");
            }
            StepAction::Run(template(p, &format!("{field}.run"), run)?)
        }
        (None, Some(source), Some(to)) => {
            let mode = match s.mode.as_deref() {
                None => 0o644,
                Some(text) => match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                    Ok(mode) if mode <= 0o7777 => mode,
                    _ => {
                        p.add(
                            format!("{field}.mode"),
                            format!("{text:?} is not an octal file mode like \"0755\""),
                        );
                        0o644
                    }
                },
            };
            StepAction::Upload {
                source: PathBuf::from(source),
                destination: template(p, &format!("{field}.to"), to)?,
                mode,
            }
        }
        (None, Some(_), None) => {
            p.add(format!("{field}.to"), "is missing: say where on the host the upload goes");
            return None;
        }
        _ => {
            p.add(
                field,
                "must have either run = \"command\" or upload = \"local file\" with to = \"remote path\"",
            );
            return None;
        }
    };
    let retries = s.retries.as_ref().map(|r| step_retries(p, &format!("{field}.retries"), r));
    Some(Step { name: s.name.clone(), action, timeout, retries, stage: s.stage.unwrap_or(false) })
}

/// The most retries a step may declare: more would hide a broken step behind a long wait.
const MOST_STEP_RETRIES: u32 = 10;
const DEFAULT_STEP_RETRY_DELAY: Duration = Duration::from_secs(1);

fn step_retries(p: &mut Problems, field: &str, r: &StepRetriesSpec) -> StepRetries {
    if !(1..=MOST_STEP_RETRIES).contains(&r.count) {
        p.add(
            format!("{field}.count"),
            format!("is {}: must be 1 to {MOST_STEP_RETRIES} (leave retries out to never retry)", r.count),
        );
    }
    let delay = duration(p, &format!("{field}.delay"), r.delay.as_deref(), DEFAULT_STEP_RETRY_DELAY);
    if delay > StepRetries::MAX_DELAY {
        p.add(format!("{field}.delay"), "must be at most 1m");
    }
    let mut exit_codes = Vec::new();
    for (i, &code) in r.exit_codes.iter().flatten().enumerate() {
        match i32::try_from(code) {
            Ok(code @ 1..=255) => exit_codes.push(code),
            _ => p.add(
                format!("{field}.exit_codes[{i}]"),
                format!("is {code}: an exit code that means failure is 1 to 255"),
            ),
        }
    }
    if r.exit_codes.as_ref().is_some_and(Vec::is_empty) {
        p.add(
            format!("{field}.exit_codes"),
            "is empty: list the exit codes to retry, or leave it out to retry every non-zero code",
        );
    }
    StepRetries { count: r.count, delay, exit_codes }
}

fn validate_health(p: &mut Problems, h: Option<&HealthSpec>) -> Option<HealthGate> {
    let default = HealthSpec::default();
    let h = h.unwrap_or(&default);
    let command = h.command.as_ref().and_then(|c| {
        let command = template(p, "health.command", c)?;
        let timeout = duration(p, "health.timeout", h.timeout.as_deref(), DEFAULT_HEALTH_TIMEOUT);
        let interval = duration(p, "health.interval", h.interval.as_deref(), DEFAULT_HEALTH_INTERVAL);
        if timeout.is_zero() {
            p.add("health.timeout", "must be more than 0s");
        }
        Some(HealthCommand { command, timeout, interval })
    });
    if h.command.is_none() && (h.timeout.is_some() || h.interval.is_some()) {
        p.add("health", "sets timeout or interval without a command: add health.command");
    }
    let up_timeout = duration(p, "health.up_timeout", h.up_timeout.as_deref(), DEFAULT_UP_TIMEOUT);
    let load_balancer_up = h.load_balancer_up.unwrap_or(true).then_some(up_timeout);
    if command.is_none() && load_balancer_up.is_none() && h.command.is_none() && h.http.is_none() {
        p.add("health", "checks nothing: give health.command or health.http, or leave load_balancer_up on");
    }
    let http = h.http.as_ref().and_then(|spec| validate_http_health(p, spec));
    Some(HealthGate { command, load_balancer_up, http })
}

/// The default pause between two HTTP health requests.
const DEFAULT_HTTP_INTERVAL: Duration = Duration::from_millis(100);

fn validate_http_health(p: &mut Problems, h: &super::spec::HttpHealthSpec) -> Option<HttpHealth> {
    let scheme = h.url.starts_with("http://") || h.url.starts_with("https://");
    if !scheme {
        p.add("health.http.url", format!("{:?} must start with http:// or https://", h.url));
    }
    let url = template(p, "health.http.url", &h.url);
    let status = h.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        p.add("health.http.status", format!("{status} is not an HTTP status: use 100 to 599"));
    }
    if h.body_contains.as_deref().is_some_and(str::is_empty) {
        p.add("health.http.body_contains", "is empty: leave it out to check the status only");
    }
    let interval = duration(p, "health.http.interval", h.interval.as_deref(), DEFAULT_HTTP_INTERVAL);
    if interval < Duration::from_millis(1) {
        p.add("health.http.interval", "must be at least 1ms");
    }
    let timeout = duration(p, "health.http.timeout", h.timeout.as_deref(), DEFAULT_HEALTH_TIMEOUT);
    if timeout.is_zero() {
        p.add("health.http.timeout", "must be more than 0s");
    }
    Some(HttpHealth {
        url: url.filter(|_| scheme)?,
        status,
        body_contains: h.body_contains.clone(),
        interval,
        timeout,
    })
}

impl Changeset {
    /// Every template in the changeset with the field it came from.
    fn templates(&self, source: &str) -> Vec<(String, &Template)> {
        let mut out = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            match &step.action {
                StepAction::Run(t) => out.push((format!("{source}.steps[{i}].run"), t)),
                StepAction::Upload { destination, .. } => {
                    out.push((format!("{source}.steps[{i}].to"), destination))
                }
            }
        }
        if let Some(h) = &self.health.command {
            out.push((format!("{source}.health.command"), &h.command));
        }
        if let Some(h) = &self.health.http {
            out.push((format!("{source}.health.http.url"), &h.url));
        }
        out
    }
}
