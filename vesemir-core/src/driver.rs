//! The async driver: prepares a deployment (finds hosts and load balancers, resolves servers,
//! plans batches) and runs the [`Rollout`] state machine over the three ports, with bounded
//! concurrency and a timeout on every call. Time comes from tokio's clock, so tests can pause
//! and advance it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::PortError;
use crate::event::EventSink;
use crate::fleet::{check_servers, AddressMismatch, Budget, Checked, NotInRotation, StateRefusal};
use crate::host::Host;
use crate::host_locks::{self, HostLocks, LockConflicts, LockPolicy, RunLocks};
use crate::name::{EnvVarName, ServerName};
use crate::plan::{Plan, PlanError, PlannedHost};
use crate::ports::{
    Backend, Executor, FileUpload, HealthProbe, HttpCheck, Inventory, LbEndpoint, LoadBalancer, OutputSink,
    ProbeOutcome, RemoteCommand, Selector, ServerLookup, ServerState,
};
use crate::report::DeploymentReport;
use crate::request::{DeploymentRequest, LbInstances, Quoting, ServerMapping, StepAction, Targets};
use crate::rollout::{Action, ActionResult, ErrorKind, HostError, HostId, Rollout, RolloutConfig};

/// The three ports a deployment runs over.
#[derive(Debug, Clone)]
pub struct Ports {
    /// Finds hosts and load balancers.
    pub inventory: Arc<dyn Inventory>,
    /// Takes servers out of rotation and puts them back.
    pub load_balancer: Arc<dyn LoadBalancer>,
    /// Runs the changeset.
    pub executor: Arc<dyn Executor>,
}

/// Bounds the driver puts around port calls.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Bound on one quick call: a connect, a load balancer state or weight change, a lookup.
    pub call_timeout: Duration,
    /// Added to the bound of calls that carry their own timeout (waits, steps), so the
    /// adapter's own timeout fires first and says more.
    pub grace: Duration,
    /// Bytes of output streamed per command at most.
    pub output_limit: usize,
    /// Server lookups (and host lock calls) run at once while preparing.
    pub resolve_concurrency: usize,
    /// The host locks to take while preparing, keep while running and give back at the end
    /// (see [`host_locks`]); `None` takes none (tests, embedders with their own guarantee).
    pub locks: Option<LockPolicy>,
    /// Deploy only these hosts of the ones found (a retry of the hosts a deployment left,
    /// a rollback of the hosts it moved); `None` deploys every host found. A host named here
    /// and not found is not an error: it is simply not in the plan.
    pub only_hosts: Option<std::collections::BTreeSet<crate::name::HostName>>,
    /// The orchestrator's own health check port, for requests with `health.http`. A port
    /// rather than a bound, but kept here (not in [`Ports`]) because it is optional and chosen
    /// once per front end; `None` refuses such requests in [`prepare`]
    /// ([`PrepareError::NoHealthProbe`]).
    pub health_probe: Option<Arc<dyn HealthProbe>>,
    /// Open the sessions of the next hosts before their turn (issue 15, connect ahead): when a
    /// host starts, the driver connects the hosts that follow it in the plan's order, at most
    /// the plan's concurrency of them not started yet, so connects (and host key checks)
    /// overlap the hosts in flight. A host's turn then waits for its connect ahead instead of
    /// connecting again: its result, a failure included, is the one the host's connect reports.
    /// Sessions opened ahead for hosts that never start (a stop, a cancel, an abort) are closed
    /// at the end of the run. `false` connects each host at its turn only.
    pub connect_ahead: bool,
    /// Keep the load balancers' health checks running while hosts are out (drain instead of
    /// maintenance during the changeset, the server marked DOWN after it): see
    /// [`RolloutConfig::checks_while_out`]. An operator's setting, for backends without
    /// persistence whose servers check often while DOWN (`downinter`, `fastinter`); `false`
    /// (the default) keeps maintenance during the changeset.
    pub checks_while_out: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(15),
            output_limit: 1 << 20,
            resolve_concurrency: 16,
            locks: None,
            only_hosts: None,
            health_probe: None,
            connect_ahead: true,
            checks_while_out: false,
        }
    }
}

/// A deployment ready to run: its hosts found, servers resolved, batches planned.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The validated request it was prepared from.
    pub request: Arc<DeploymentRequest>,
    /// The backend on every load balancer instance.
    pub backend: Backend,
    /// The hosts with their servers (and their servers' original states), in batches.
    pub plan: Arc<Plan>,
    /// The host locks taken for it, when [`DriverConfig::locks`] asked for them. `run` gives
    /// them back; dropping the last handle without running gives them back too (best effort).
    pub locks: Option<Arc<HostLocks>>,
    /// The out-of-rotation budget on the real backend when it was prepared.
    pub budget: Budget,
    /// Things worth a look that stop nothing (addresses that could not be compared).
    pub warnings: Vec<String>,
}

/// Why a deployment could not be prepared. Nothing was changed on any host or load balancer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The inventory could not find the hosts.
    #[error("finding the hosts ({selector}) failed: {source}")]
    Hosts {
        /// What was searched for.
        selector: String,
        /// Why it failed.
        #[source]
        source: PortError,
    },
    /// The inventory could not find the load balancers.
    #[error("finding the load balancers ({selector}) failed: {source}")]
    LoadBalancers {
        /// What was searched for.
        selector: String,
        /// Why it failed.
        #[source]
        source: PortError,
    },
    /// A host's server name template gave an invalid name.
    #[error("host {host}: the server name template gives {rendered:?}, which is not a valid HAProxy server name: fix load_balancer.server_name")]
    ServerName {
        /// The host the template was rendered for.
        host: String,
        /// What the template gave.
        rendered: String,
    },
    /// A host's server could not be found in the backend.
    #[error("host {host}: {source}")]
    Resolve {
        /// The host whose server was looked up.
        host: String,
        /// Why the lookup failed.
        #[source]
        source: PortError,
    },
    /// The backend's servers could not be read.
    #[error("reading the state of backend {backend} failed: {source}")]
    ReadBackend {
        /// The backend.
        backend: String,
        /// Why it failed.
        #[source]
        source: PortError,
    },
    /// Target servers are not in rotation, and the request says to refuse them.
    #[error("{}", not_in_rotation_message(servers))]
    NotInRotation {
        /// Each such server, with its host and its state on every box.
        servers: Vec<NotInRotation>,
    },
    /// Servers found by name are not their hosts.
    #[error("{}", mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    AddressMismatch {
        /// Each host whose server has another address.
        mismatches: Vec<AddressMismatch>,
    },
    /// The backend already has `concurrency` servers or more out of rotation.
    #[error("{}", budget_message(budget))]
    Budget {
        /// The budget, with the servers already out.
        budget: Budget,
    },
    /// No valid plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Hosts of the plan are locked by other deployments.
    #[error(transparent)]
    Locked(#[from] LockConflicts),
    /// The request has `health.http` and this front end has no HTTP health probe.
    #[error("changeset.health.http: this front end has no HTTP health probe to make the check; use health.command instead")]
    NoHealthProbe,
}

fn not_in_rotation_message(servers: &[NotInRotation]) -> String {
    let lines: Vec<String> = servers.iter().map(|s| format!("  {s}")).collect();
    format!(
        "{} target server(s) not in rotation: someone or something else took them out, and Vesemir does not put them back in:\n{}\nbring them back into rotation first, or set load_balancer.servers_not_in_rotation = \"skip\" (leave them exactly as they are) or \"include\" (deploy them and return each to this state)",
        servers.len(),
        lines.join("\n")
    )
}

fn budget_message(budget: &Budget) -> String {
    let lines: Vec<String> =
        budget.already_out.iter().map(|s| format!("  {}: {}", s.name, s.describe())).collect();
    format!(
        "the backend already has {} server(s) out of rotation and concurrency is {}: taking a host out would leave more than {} out at once:\n{}\nbring some back into rotation, or raise strategy.concurrency",
        budget.already_out.len(),
        budget.concurrency,
        budget.concurrency,
        lines.join("\n")
    )
}

impl PrepareError {
    /// Whether the failure is infrastructure that could not be reached (an inventory or a load
    /// balancer down), rather than a mistake in the request.
    pub fn is_unreachable(&self) -> bool {
        match self {
            PrepareError::Hosts { source, .. }
            | PrepareError::LoadBalancers { source, .. }
            | PrepareError::Resolve { source, .. }
            | PrepareError::ReadBackend { source, .. } => {
                matches!(source, PortError::Unreachable { .. } | PortError::Timeout { .. })
            }
            PrepareError::ServerName { .. }
            | PrepareError::Plan(_)
            | PrepareError::NotInRotation { .. }
            | PrepareError::AddressMismatch { .. }
            | PrepareError::Budget { .. }
            | PrepareError::Locked(_)
            | PrepareError::NoHealthProbe => false,
        }
    }
}

/// What the operator can tell a running deployment. Clones share the same deployment.
#[derive(Debug, Clone)]
pub struct Control {
    sender: Arc<watch::Sender<ControlState>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ControlState {
    cancel: bool,
    abort: bool,
    confirmations: u64,
    paused: bool,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    /// A new control.
    pub fn new() -> Self {
        Self { sender: Arc::new(watch::channel(ControlState::default()).0) }
    }

    /// Cancel: no new host starts; hosts in flight finish.
    pub fn cancel(&self) {
        self.sender.send_modify(|s| s.cancel = true);
    }

    /// Abort: stop at once; hosts in flight are reported as possibly out of rotation.
    pub fn abort(&self) {
        self.sender.send_modify(|s| s.abort = true);
    }

    /// Confirm the canary.
    pub fn confirm(&self) {
        self.sender.send_modify(|s| s.confirmations += 1);
    }

    /// Pause: no new host starts until [`resume`](Self::resume); hosts in flight finish.
    pub fn pause(&self) {
        self.sender.send_if_modified(|s| !std::mem::replace(&mut s.paused, true));
    }

    /// Resume after [`pause`](Self::pause): hosts start again as the gates allow.
    pub fn resume(&self) {
        self.sender.send_if_modified(|s| std::mem::replace(&mut s.paused, false));
    }

    /// Whether cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.sender.borrow().cancel
    }

    /// Whether the deployment is paused (asked to pause and not resumed since).
    pub fn is_paused(&self) -> bool {
        self.sender.borrow().paused
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// `call`, failing with a timeout that names `what` past `bound`: every port call the core makes
/// is bounded this way.
pub(crate) async fn bounded<T>(
    bound: Duration,
    what: impl FnOnce() -> String,
    call: impl std::future::Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(bound, call).await {
        Ok(result) => result,
        Err(_) => Err(PortError::timeout(what(), bound)),
    }
}

/// Finds the hosts and load balancers, resolves every host's server and plans the batches.
/// Changes nothing anywhere.
pub async fn prepare(
    request: Arc<DeploymentRequest>,
    ports: &Ports,
    config: &DriverConfig,
) -> Result<Prepared, PrepareError> {
    if request.changeset.health.http.is_some() && config.health_probe.is_none() {
        return Err(PrepareError::NoHealthProbe);
    }
    let hosts = match &request.targets {
        Targets::Hosts(hosts) => hosts.clone(),
        Targets::Search(selector) => discover(ports, config, selector)
            .await
            .map_err(|source| PrepareError::Hosts { selector: selector.to_string(), source })?,
    };
    let hosts = match &config.only_hosts {
        Some(only) => hosts.into_iter().filter(|h| only.contains(&h.name)).collect(),
        None => hosts,
    };
    let instances = match &request.load_balancer.instances {
        LbInstances::Listed(endpoints) => endpoints.clone(),
        LbInstances::Discover { selector, port } => {
            let boxes = discover(ports, config, selector)
                .await
                .map_err(|source| PrepareError::LoadBalancers { selector: selector.to_string(), source })?;
            boxes.into_iter().map(|b| LbEndpoint::Tcp { address: b.address, port: *port }).collect()
        }
    };
    let backend = Backend { name: request.load_balancer.backend.clone(), instances };
    let planned = resolve_servers(&request, hosts, &backend, ports, config).await?;
    // Before anything reads or changes the load balancer for this deployment: see `host_locks`.
    let locks = match &config.locks {
        Some(policy) => Some(Arc::new(
            host_locks::acquire(
                planned.iter().map(|p| p.host.clone()).collect(),
                &ports.executor,
                policy,
                config.call_timeout,
                config.resolve_concurrency,
            )
            .await?,
        )),
        None => None,
    };
    let checked = async {
        let (checked, servers) = read_real_state(&request, planned, &backend, ports, config).await?;
        let plan = Plan::new(checked.hosts, &request.strategy)?;
        let budget = check_budget(&plan, &servers)?;
        Ok::<_, PrepareError>((plan, budget, checked.warnings))
    }
    .await;
    match checked {
        Ok((plan, budget, warnings)) => {
            Ok(Prepared { request, backend, plan: Arc::new(plan), budget, warnings, locks })
        }
        Err(e) => {
            // Nothing was changed: give the locks back now rather than when the handle drops.
            if let Some(locks) = &locks {
                locks.release_all().await;
            }
            Err(e)
        }
    }
}

/// Reads every server of the backend once and checks the targets against it: their states on
/// every box (kept in the plan, to return to), the request's policy for servers not in rotation,
/// and (servers found by name) that each server has its host's address.
async fn read_real_state(
    request: &DeploymentRequest,
    planned: Vec<PlannedHost>,
    backend: &Backend,
    ports: &Ports,
    config: &DriverConfig,
) -> Result<(Checked, Vec<ServerState>), PrepareError> {
    let what = || format!("listing the servers of backend {}", backend.name);
    let servers = bounded(config.call_timeout, what, ports.load_balancer.servers(backend))
        .await
        .map_err(|source| PrepareError::ReadBackend { backend: backend.name.to_string(), source })?;
    let by_name = matches!(request.load_balancer.server, ServerMapping::Template(_));
    let policy = request.load_balancer.servers_not_in_rotation;
    let checked = check_servers(planned, &servers, policy, by_name).map_err(|refusal| match refusal {
        StateRefusal::NotInRotation(servers) => PrepareError::NotInRotation { servers },
        StateRefusal::AddressMismatch(mismatches) => PrepareError::AddressMismatch { mismatches },
        StateRefusal::Missing { host, server } => PrepareError::Resolve {
            host: host.to_string(),
            source: PortError::not_found(format!(
                "server {server} in the listing of backend {}",
                backend.name
            )),
        },
    })?;
    Ok((checked, servers))
}

/// The budget on the real backend; refused when the servers already out leave no room.
fn check_budget(plan: &Plan, servers: &[ServerState]) -> Result<Budget, PrepareError> {
    let budget = Budget::new(plan.concurrency, servers);
    if budget.allows(plan) {
        Ok(budget)
    } else {
        Err(PrepareError::Budget { budget })
    }
}

/// The hosts the inventory finds for `selector`, within the call timeout.
async fn discover(ports: &Ports, config: &DriverConfig, selector: &Selector) -> Result<Vec<Host>, PortError> {
    let what = || format!("search for {selector}");
    bounded(config.call_timeout, what, ports.inventory.discover(selector)).await
}

/// Each host with its server in `backend`, looked up `resolve_concurrency` at a time.
async fn resolve_servers(
    request: &DeploymentRequest,
    hosts: Vec<Host>,
    backend: &Backend,
    ports: &Ports,
    config: &DriverConfig,
) -> Result<Vec<PlannedHost>, PrepareError> {
    let mut planned = Vec::with_capacity(hosts.len());
    let mut pending: JoinSet<(Host, Result<ServerName, PortError>)> = JoinSet::new();
    let mut hosts = hosts.into_iter();
    loop {
        while pending.len() < config.resolve_concurrency.max(1) {
            let Some(host) = hosts.next() else { break };
            let lookup = match &request.load_balancer.server {
                ServerMapping::ByAddress => ServerLookup::Address(host.address.clone()),
                ServerMapping::Template(template) => {
                    let rendered = request.render(template, Quoting::None, &host);
                    let name = ServerName::new(&rendered)
                        .map_err(|_| PrepareError::ServerName { host: host.name.to_string(), rendered })?;
                    ServerLookup::Name(name)
                }
            };
            let (lb, backend, bound) = (ports.load_balancer.clone(), backend.clone(), config.call_timeout);
            pending.spawn(async move {
                let what = || format!("lookup of {lookup} in backend {}", backend.name);
                let result = bounded(bound, what, lb.resolve(&backend, &lookup)).await;
                (host, result)
            });
        }
        let Some(done) = pending.join_next().await else { break };
        let (host, result) = done.map_err(|e| PrepareError::Resolve {
            host: "(unknown)".into(),
            source: PortError::Adapter { adapter: "load balancer", source: Box::new(e) },
        })?;
        let server =
            result.map_err(|source| PrepareError::Resolve { host: host.name.to_string(), source })?;
        planned.push(PlannedHost::new(host, server));
    }
    Ok(planned)
}

/// Runs a prepared deployment to its end, sending every event to `sink`, and returns the report.
pub async fn run(
    prepared: &Prepared,
    ports: &Ports,
    sink: &dyn EventSink,
    control: &Control,
    config: &DriverConfig,
) -> DeploymentReport {
    let context = Arc::new(ActionContext {
        request: prepared.request.clone(),
        backend: prepared.backend.clone(),
        plan: prepared.plan.clone(),
        ports: ports.clone(),
        config: config.clone(),
        locks: prepared.locks.clone(),
    });
    let mut locks = RunLocks::new(prepared.locks.clone(), prepared.request.strategy.retry_unreachable);
    let mut rollout_config = RolloutConfig::from_request(&prepared.request);
    rollout_config.checks_while_out = config.checks_while_out;
    let mut machine = Rollout::new(prepared.plan.clone(), rollout_config, now());
    let (output, mut output_lines) = OutputSink::channel();
    let mut tasks: JoinSet<(HostId, ActionResult)> = JoinSet::new();
    let mut task_hosts: HashMap<tokio::task::Id, HostId> = HashMap::new();
    let mut control_changes = control.sender.subscribe();
    // A cancel or abort sent before this run started counts too.
    control_changes.mark_changed();
    let mut seen = ControlState::default();
    let ahead = if config.connect_ahead { prepared.plan.concurrency } else { 0 };
    let mut ahead = ConnectAhead::new(ahead);

    loop {
        while let Some(action) = machine.poll_action() {
            let host = action.host();
            let output = matches!(action, Action::RunStep { .. } | Action::RunHealthCheck { .. })
                .then(|| output.tagged(host.0));
            let context = context.clone();
            let handle = match action {
                Action::Connect { .. } => match ahead.claim(host, &context) {
                    Some(early) => tasks.spawn(async move { (host, context.connected(host, early).await) }),
                    None => tasks.spawn(async move { (host, context.perform(action, output).await) }),
                },
                action => tasks.spawn(async move { (host, context.perform(action, output).await) }),
            };
            task_hosts.insert(handle.id(), host);
        }
        while let Some(event) = machine.poll_event() {
            locks.forward(sink, event);
        }
        if machine.is_finished() {
            break;
        }
        let deadline = machine.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            changed = control_changes.changed() => {
                if changed.is_err() {
                    continue;
                }
                let state = *control_changes.borrow_and_update();
                apply_control(&mut machine, &mut tasks, seen, state);
                seen = state;
            }
            Some((tag, line)) = output_lines.recv_tagged() => {
                machine.handle_output(HostId(tag), line, now());
            }
            Some(joined) = tasks.join_next_with_id() => {
                let now = now();
                deliver(&mut machine, &mut task_hosts, joined, now);
                // Take every other result already there before going round again.
                while let Some(joined) = tasks.try_join_next_with_id() {
                    deliver(&mut machine, &mut task_hosts, joined, now);
                }
            }
            () = sleep_until(deadline) => {
                machine.handle_timeout(now());
            }
            task = locks.next() => locks.handle(sink, task),
        }
    }
    locks.finish(sink).await;
    ahead.close_unclaimed(&context).await;
    machine.report()
}

/// A connect started before its host's turn: the port's answer, within the call bound.
type EarlyConnect = tokio::task::JoinHandle<Result<(), PortError>>;

/// Sessions opened ahead of their hosts' turn ([`DriverConfig::connect_ahead`]). Hosts start in
/// the plan's order (the window and the batches both take the next host), so when host `h`
/// starts, the hosts after it are the next ones: up to `bound` of them, not started yet, are
/// connected now. This lives in the driver rather than the core: it changes no decision of the
/// rollout (a host's connect still happens, and fails, at its turn; only its wait is shorter).
struct ConnectAhead {
    /// The most hosts connected ahead and not started yet; 0 turns it off.
    bound: usize,
    /// The first host (in plan order) not connected ahead nor started yet.
    next: usize,
    /// Connects started ahead and not yet claimed by their host's turn.
    open: HashMap<usize, EarlyConnect>,
}

impl ConnectAhead {
    fn new(bound: usize) -> Self {
        Self { bound, next: 0, open: HashMap::new() }
    }

    /// Host `host` starts: its connect made ahead, if there is one; then the next hosts are
    /// connected ahead, up to the bound. A host passed over (one that never starts, such as a
    /// skipped one) has its early session closed.
    fn claim(&mut self, host: HostId, context: &Arc<ActionContext>) -> Option<EarlyConnect> {
        let claimed = self.open.remove(&host.0);
        self.next = self.next.max(host.0 + 1);
        let passed: Vec<usize> = self.open.keys().copied().filter(|&h| h < host.0).collect();
        for h in passed {
            if let Some(early) = self.open.remove(&h) {
                tokio::spawn(close_early(context.clone(), h, early));
            }
        }
        while self.open.len() < self.bound && self.next < context.plan.hosts.len() {
            let h = self.next;
            self.next += 1;
            let target = &context.plan.hosts[h].host;
            // A host whose lock was refused fails at its turn without connecting: not ahead either.
            if context.locks.as_ref().is_some_and(|l| l.refused(&target.name).is_some()) {
                continue;
            }
            let (context, bound) = (context.clone(), context.config.call_timeout);
            self.open.insert(
                h,
                tokio::spawn(async move {
                    let host = &context.plan.hosts[h].host;
                    bounded(bound, || format!("connect to {host}"), context.ports.executor.connect(host))
                        .await
                }),
            );
        }
        claimed
    }

    /// The run is over: connects made ahead for hosts that never started are stopped, and their
    /// sessions closed.
    async fn close_unclaimed(self, context: &Arc<ActionContext>) {
        for (h, early) in self.open {
            close_early(context.clone(), h, early).await;
        }
    }
}

/// Stops a connect made ahead (if still running) and closes the session it may have opened.
async fn close_early(context: Arc<ActionContext>, h: usize, early: EarlyConnect) {
    early.abort();
    let _ = early.await;
    let host = &context.plan.hosts[h].host;
    let _ = tokio::time::timeout(context.config.call_timeout, context.ports.executor.close(host)).await;
}

/// Hands the operator's new orders (what `state` adds to `seen`) to the machine. An abort also
/// drops every running action.
fn apply_control(
    machine: &mut Rollout,
    tasks: &mut JoinSet<(HostId, ActionResult)>,
    seen: ControlState,
    state: ControlState,
) {
    if state.abort && !seen.abort {
        tasks.abort_all();
        machine.handle_abort(now());
    } else if state.cancel && !seen.cancel {
        machine.handle_cancel(now());
    }
    if state.paused && !seen.paused {
        machine.handle_pause(now());
    }
    if state.confirmations > seen.confirmations {
        machine.handle_confirm(now());
    }
    if !state.paused && seen.paused {
        machine.handle_resume(now());
    }
}

type Joined = Result<(tokio::task::Id, (HostId, ActionResult)), tokio::task::JoinError>;

/// Hands a finished action's result to the machine. A panicking adapter fails the host.
fn deliver(
    machine: &mut Rollout,
    task_hosts: &mut HashMap<tokio::task::Id, HostId>,
    joined: Joined,
    now: std::time::Instant,
) {
    match joined {
        Ok((id, (host, result))) => {
            task_hosts.remove(&id);
            machine.handle_result(host, result, now);
        }
        Err(error) => {
            if let Some(host) = task_hosts.remove(&error.id()) {
                if error.is_panic() {
                    let failure = HostError::new(
                        ErrorKind::Other,
                        "the adapter panicked during this call: a bug, please report it",
                    );
                    machine.handle_result(host, ActionResult::Failed(failure), now);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What an action needs to become port calls.
struct ActionContext {
    request: Arc<DeploymentRequest>,
    backend: Backend,
    plan: Arc<Plan>,
    ports: Ports,
    config: DriverConfig,
    locks: Option<Arc<HostLocks>>,
}

impl ActionContext {
    async fn perform(&self, action: Action, output: Option<OutputSink>) -> ActionResult {
        let planned = &self.plan.hosts[action.host().0];
        let (host, server, backend) = (&planned.host, &planned.server, &self.backend);
        let (lb, executor) = (&self.ports.load_balancer, &self.ports.executor);
        let quick = self.config.call_timeout;
        let grace = self.config.grace;
        let on = |what: &str| format!("{what} of {}/{server}", backend.name);
        match action {
            Action::Connect { attempt, .. } => {
                if let Some(locks) = &self.locks {
                    if attempt > 1 {
                        // Tried again: claim the lock once more if the first claim failed.
                        if let Err(error) = locks.reclaim(host).await {
                            return ActionResult::Failed(error);
                        }
                    } else if let Some(error) = locks.refused(&host.name) {
                        return ActionResult::Failed(error);
                    }
                }
                bounded(quick, || format!("connect to {host}"), executor.connect(host)).await.into()
            }
            Action::SetState { state, .. } => {
                bounded(quick, || on(&format!("set state {state}")), lb.set_state(backend, server, state))
                    .await
                    .into()
            }
            Action::SetWeight { weight, .. } => {
                bounded(quick, || on(&format!("set weight {weight}")), lb.set_weight(backend, server, weight))
                    .await
                    .into()
            }
            Action::ShutdownSessions { .. } => {
                bounded(quick, || on("shutdown sessions"), lb.shutdown_sessions(backend, server)).await.into()
            }
            Action::WaitDrained { timeout, .. } => bounded(
                timeout.saturating_add(grace),
                || on("drain"),
                lb.wait_drained(backend, server, timeout),
            )
            .await
            .into(),
            Action::MarkDown { .. } => {
                bounded(quick, || on("mark DOWN"), lb.mark_down(backend, server)).await.into()
            }
            Action::WaitUp { timeout, .. } => bounded(
                timeout.saturating_add(grace),
                || on("wait for UP"),
                lb.wait_up(backend, server, timeout),
            )
            .await
            .into(),
            Action::RunStep { step, timeout, .. } => self.run_step(host, step, timeout, output).await,
            Action::RunHealthCheck { timeout, .. } => {
                let Some(health) = &self.request.changeset.health.command else {
                    return ActionResult::Exited(crate::ports::ExitStatus::code(0));
                };
                let command = self.command(&health.command, host, timeout);
                let what = || format!("health check on {}", host.name);
                let output = output.unwrap_or_else(|| OutputSink::channel().0);
                bounded(timeout.saturating_add(grace), what, executor.run(host, &command, output))
                    .await
                    .into()
            }
            Action::ProbeHealth { timeout, .. } => self.probe_health(host, timeout).await,
            Action::Close { .. } => {
                let _ = tokio::time::timeout(quick, executor.close(host)).await;
                ActionResult::Done
            }
            Action::ReadBackend { .. } => self.read_backend().await,
            Action::Restore { to, .. } => {
                bounded(quick, || on("restore"), lb.restore(backend, server, &to)).await.into()
            }
        }
    }

    /// Host `host`'s turn to connect, its connect already made ahead: the lock check of
    /// [`Action::Connect`], then that connect's answer (a failure exactly as a connect at its
    /// turn would report it).
    async fn connected(self: Arc<Self>, host: HostId, early: EarlyConnect) -> ActionResult {
        let target = &self.plan.hosts[host.0].host;
        if let Some(error) = self.locks.as_ref().and_then(|l| l.refused(&target.name)) {
            close_early(self.clone(), host.0, early).await;
            return ActionResult::Failed(error.clone());
        }
        match early.await {
            Ok(result) => result.into(),
            Err(_) => ActionResult::Failed(HostError::new(
                ErrorKind::Other,
                "the adapter panicked during this call: a bug, please report it",
            )),
        }
    }

    /// One HTTP health check of `host` through the probe port: `Done` when it passed, else
    /// `Failed` with why (a port error keeps its kind: `Rejected` is not retried).
    async fn probe_health(&self, host: &Host, timeout: Duration) -> ActionResult {
        let (Some(http), Some(probe)) = (&self.request.changeset.health.http, &self.config.health_probe)
        else {
            return ActionResult::Failed(HostError::new(
                ErrorKind::Rejected,
                "no HTTP health probe configured",
            ));
        };
        let check = HttpCheck {
            url: self.request.render(&http.url, Quoting::None, host),
            status: http.status,
            body_contains: http.body_contains.clone(),
            timeout,
        };
        let what = || format!("HTTP health check of {}", check.url);
        match bounded(timeout.saturating_add(self.config.grace), what, probe.check(&check)).await {
            Ok(ProbeOutcome::Passed) => ActionResult::Done,
            Ok(ProbeOutcome::NotPassed(why)) => {
                ActionResult::Failed(HostError::new(ErrorKind::Unreachable, why))
            }
            Err(e) => ActionResult::Failed(HostError::from(&e)),
        }
    }

    /// Every server of the backend, for the rollout's budget check before a take-out.
    async fn read_backend(&self) -> ActionResult {
        let backend = &self.backend;
        let what = || format!("listing the servers of backend {}", backend.name);
        match bounded(self.config.call_timeout, what, self.ports.load_balancer.servers(backend)).await {
            Ok(servers) => ActionResult::Backend(servers),
            Err(e) => ActionResult::Failed(HostError::from(&e)),
        }
    }

    /// Runs changeset step `step` on `host`: a command, or an upload.
    async fn run_step(
        &self,
        host: &Host,
        step: usize,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> ActionResult {
        let Some(step) = self.request.changeset.steps.get(step) else {
            return ActionResult::Failed(HostError::new(ErrorKind::Other, format!("no step {step}")));
        };
        let (executor, bound) = (&self.ports.executor, timeout.saturating_add(self.config.grace));
        match &step.action {
            StepAction::Run(template) => {
                let command = self.command(template, host, timeout);
                let what = || format!("step {:?} on {}", step.name, host.name);
                let output = output.unwrap_or_else(|| OutputSink::channel().0);
                bounded(bound, what, executor.run(host, &command, output)).await.into()
            }
            StepAction::Upload { source, destination, mode } => {
                let upload = FileUpload {
                    source: source.clone(),
                    destination: self.request.render(destination, Quoting::None, host),
                    mode: *mode,
                    timeout,
                };
                let what = || format!("upload {:?} to {}", step.name, host.name);
                bounded(bound, what, executor.upload(host, &upload)).await.into()
            }
        }
    }

    fn command(&self, template: &crate::request::Template, host: &Host, timeout: Duration) -> RemoteCommand {
        let request = &self.request;
        RemoteCommand {
            script: request.render(template, Quoting::Shell, host),
            env: vec![
                (EnvVarName::builtin("VESEMIR_APPLICATION"), request.application.to_string()),
                (EnvVarName::builtin("VESEMIR_ENVIRONMENT"), request.environment.to_string()),
                (EnvVarName::builtin("VESEMIR_VERSION"), request.version.to_string()),
                (EnvVarName::builtin("VESEMIR_HOST"), host.name.to_string()),
            ],
            timeout,
            output_limit: self.config.output_limit,
        }
    }
}
