//! A fake [`LoadBalancer`]: one backend on several instances, with servers whose sessions,
//! health and instances can be made to misbehave, and which can start in any state on any
//! instance (maintenance, drain, down, odd weights) as real fleets do. It records how many
//! servers were out of rotation at once, so tests can check the rollout's central invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::lock;
use crate::error::PortError;
use crate::name::{BackendName, ServerName};
use crate::ports::{
    check_restore, AdminState, Backend, InstanceState, LbEndpoint, LoadBalancer, Operational, ServerLookup,
    ServerState, ServerStatus, Weight, MAX_WEIGHT,
};

/// A server of the fake backend, as one instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeServer {
    /// The server's name in the backend (what `set server` commands address).
    pub name: ServerName,
    /// The address the instance sends traffic to, reported as [`InstanceState`]'s address.
    pub address: String,
    /// Ready, drain or maintenance, as changes and `set_initial` left it.
    pub admin: AdminState,
    /// Its weight as a percentage of the configured weight, as `set_weight` last set it (the
    /// nearest percentage when an absolute weight is set, see `absolute_weight`).
    pub weight: Weight,
    /// An absolute effective weight that no percentage of the configured weight gives (set by
    /// `restore` or [`FakeLoadBalancer::set_initial`]); `None`: the weight is `weight` of
    /// `configured_weight`.
    pub absolute_weight: Option<u32>,
    /// The weight the configuration gives the server (percentages are of this).
    pub configured_weight: u32,
    /// Sessions open on the server now; draining waits for 0 (see `set_sessions`).
    pub sessions: u64,
    /// What its health checks make of it (reported as [`Operational::Down`] while in
    /// maintenance, as HAProxy does, and back to this when it leaves).
    pub operational: Operational,
}

impl FakeServer {
    /// A ready, up server at full weight with no sessions.
    pub fn new(name: ServerName, address: impl Into<String>) -> Self {
        Self {
            name,
            address: address.into(),
            admin: AdminState::Ready,
            weight: Weight::FULL,
            absolute_weight: None,
            configured_weight: 100,
            sessions: 0,
            operational: Operational::Up,
        }
    }

    /// The effective weight, absolute.
    pub fn effective_weight(&self) -> u32 {
        self.absolute_weight.unwrap_or(self.configured_weight * u32::from(self.weight.get()) / 100)
    }

    /// Sets an absolute weight, kept as a percentage when one gives it exactly.
    fn set_absolute_weight(&mut self, weight: u32) {
        let configured = self.configured_weight.max(1);
        let percent = weight.saturating_mul(100) / configured;
        let exact =
            percent <= 100 && weight.saturating_mul(100) % configured == 0 && self.configured_weight > 0;
        // `percent.min(100)` is at most 100, so `Weight::percent` accepts it.
        self.weight = Weight::percent(u8::try_from(percent.min(100)).unwrap_or(100)).unwrap_or(Weight::FULL);
        self.absolute_weight = (!exact).then_some(weight);
    }

    /// Sets a percentage of the configured weight.
    fn set_percent_weight(&mut self, weight: Weight) {
        self.weight = weight;
        self.absolute_weight = None;
    }

    fn in_rotation(&self) -> bool {
        self.admin == AdminState::Ready && self.effective_weight() > 0
    }

    /// The operational state an instance reports: stopped while in maintenance.
    fn reported_operational(&self) -> Operational {
        if self.admin == AdminState::Maint {
            Operational::Down
        } else {
            self.operational
        }
    }

    fn status(&self) -> ServerStatus {
        match (self.admin, self.operational) {
            (AdminState::Maint, _) => ServerStatus::Maint,
            (AdminState::Drain, _) => ServerStatus::Drain,
            (AdminState::Ready, Operational::Up | Operational::Starting) => ServerStatus::Up,
            (AdminState::Ready, Operational::Down) => ServerStatus::Down,
            (AdminState::Ready, Operational::Stopping) => ServerStatus::Other("NOLB".into()),
        }
    }

    /// The last check's status as HAProxy words it; none while checks are paused (maintenance).
    fn check(&self) -> Option<String> {
        let word = match (self.admin, self.operational) {
            (AdminState::Maint, _) => return None,
            (_, Operational::Up | Operational::Starting) => "L7OK",
            (_, Operational::Stopping) => "L7OKC",
            (_, Operational::Down) => "L7STS",
        };
        Some(word.into())
    }

    fn instance_state(&self, instance: &LbEndpoint) -> InstanceState {
        InstanceState {
            instance: instance.clone(),
            status: self.status(),
            weight: self.effective_weight(),
            configured_weight: self.configured_weight,
            sessions: self.sessions,
            admin: self.admin,
            operational: self.reported_operational(),
            check: self.check(),
            address: Some(self.address.clone()),
        }
    }
}

/// What the fake saw of servers leaving and entering rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationLog {
    /// The most servers out of rotation at one moment (on any instance).
    pub max_out_of_rotation: usize,
    /// Every change, in order: server, state, weight.
    pub changes: Vec<(ServerName, AdminState, Weight)>,
    /// Each [`mark_down`](LoadBalancer::mark_down), in order, with how many state or weight
    /// changes came before it (its place among [`changes`](Self::changes)).
    pub marked_down: Vec<(ServerName, usize)>,
}

#[derive(Debug, Default)]
struct Faults {
    down: BTreeSet<LbEndpoint>,
    /// Servers whose sessions end only this long after drain (`None`: never, until shutdown).
    drain_delays: BTreeMap<ServerName, Option<Duration>>,
    /// Refuse weights other than 0 and the configured one (HAProxy with a static algorithm).
    refuse_weights: bool,
}

#[derive(Debug)]
struct State {
    backend: BackendName,
    instances: BTreeMap<LbEndpoint, BTreeMap<ServerName, FakeServer>>,
    faults: Faults,
    log: RotationLog,
    initially_out: BTreeSet<ServerName>,
    /// Servers out of rotation on any instance, kept up to date on every change.
    out: BTreeSet<ServerName>,
}

impl State {
    fn compute_out_of_rotation(&self) -> BTreeSet<ServerName> {
        self.instances
            .values()
            .flat_map(|servers| servers.values())
            .filter(|s| !s.in_rotation())
            .map(|s| s.name.clone())
            .collect()
    }

    fn refresh(&mut self, server: &ServerName) {
        let out = self.instances.values().filter_map(|servers| servers.get(server)).any(|s| !s.in_rotation());
        if out {
            self.out.insert(server.clone());
        } else {
            self.out.remove(server);
        }
    }

    /// The instances of `backend` after checking each is known and up.
    fn reachable(&self, backend: &Backend) -> Result<Vec<LbEndpoint>, PortError> {
        if backend.name != self.backend {
            return Err(PortError::not_found(format!("backend {}", backend.name)));
        }
        for instance in &backend.instances {
            if !self.instances.contains_key(instance) || self.faults.down.contains(instance) {
                return Err(PortError::unreachable(
                    format!("load balancer {instance}"),
                    "injected fault: instance down",
                ));
            }
        }
        Ok(backend.instances.clone())
    }

    fn server_mut(
        &mut self,
        instance: &LbEndpoint,
        backend: &Backend,
        server: &ServerName,
    ) -> Result<&mut FakeServer, PortError> {
        self.instances
            .get_mut(instance)
            .and_then(|servers| servers.get_mut(server))
            .ok_or_else(|| PortError::not_found(format!("server {server} in backend {}", backend.name)))
    }

    fn apply(
        &mut self,
        backend: &Backend,
        server: &ServerName,
        change: impl Fn(&mut FakeServer),
    ) -> Result<(), PortError> {
        let instances = self.reachable(backend)?;
        self.apply_on(backend, server, &instances, |_, s| change(s))
    }

    /// Applies `change` to the server on each of `instances` after checking it is on all of
    /// them, then records the change.
    fn apply_on(
        &mut self,
        backend: &Backend,
        server: &ServerName,
        instances: &[LbEndpoint],
        change: impl Fn(&LbEndpoint, &mut FakeServer),
    ) -> Result<(), PortError> {
        for instance in instances {
            self.server_mut(instance, backend, server)?;
        }
        for instance in instances {
            change(instance, self.server_mut(instance, backend, server)?);
        }
        let (admin, weight) = instances
            .first()
            .and_then(|i| self.instances.get(i)?.get(server))
            .map(|s| (s.admin, s.weight))
            .unwrap_or((AdminState::Ready, Weight::FULL));
        self.log.changes.push((server.clone(), admin, weight));
        self.refresh(server);
        let out = if self.initially_out.is_empty() {
            self.out.len()
        } else {
            self.out.difference(&self.initially_out).count()
        };
        self.log.max_out_of_rotation = self.log.max_out_of_rotation.max(out);
        Ok(())
    }

    /// The instances a restore names, after checking each is known and up.
    fn reachable_listed(
        &self,
        backend: &Backend,
        to: &[InstanceState],
    ) -> Result<Vec<LbEndpoint>, PortError> {
        if backend.name != self.backend {
            return Err(PortError::not_found(format!("backend {}", backend.name)));
        }
        to.iter()
            .map(|state| {
                let instance = &state.instance;
                if !self.instances.contains_key(instance) || self.faults.down.contains(instance) {
                    Err(PortError::unreachable(
                        format!("load balancer {instance}"),
                        "injected fault: instance down",
                    ))
                } else {
                    Ok(instance.clone())
                }
            })
            .collect()
    }
}

/// A fake load balancer. Clones share state.
#[derive(Debug, Clone)]
pub struct FakeLoadBalancer {
    state: Arc<Mutex<State>>,
}

impl FakeLoadBalancer {
    /// A backend named `backend` with `servers` on each of `instances`.
    pub fn new(backend: BackendName, instances: Vec<LbEndpoint>, servers: Vec<FakeServer>) -> Self {
        let by_name: BTreeMap<ServerName, FakeServer> =
            servers.into_iter().map(|s| (s.name.clone(), s)).collect();
        let instances: BTreeMap<LbEndpoint, _> =
            instances.into_iter().map(|i| (i, by_name.clone())).collect();
        let mut state = State {
            backend,
            instances,
            faults: Faults::default(),
            log: RotationLog::default(),
            initially_out: BTreeSet::new(),
            out: BTreeSet::new(),
        };
        state.initially_out = state.compute_out_of_rotation();
        state.out = state.initially_out.clone();
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// The backend with every instance, as a request would name it.
    pub fn backend(&self) -> Backend {
        let state = lock(&self.state);
        Backend { name: state.backend.clone(), instances: state.instances.keys().cloned().collect() }
    }

    /// Takes an instance down (`true`) or brings it back (`false`).
    pub fn set_instance_down(&self, instance: &LbEndpoint, down: bool) {
        let mut state = lock(&self.state);
        if down {
            state.faults.down.insert(instance.clone());
        } else {
            state.faults.down.remove(instance);
        }
    }

    /// Gives a server `sessions` open sessions that end `after` a drain starts waiting
    /// (`None`: they never end by themselves, only by shutdown).
    pub fn set_sessions(&self, server: &ServerName, sessions: u64, after: Option<Duration>) {
        let mut state = lock(&self.state);
        for servers in state.instances.values_mut() {
            if let Some(s) = servers.get_mut(server) {
                s.sessions = sessions;
            }
        }
        state.faults.drain_delays.insert(server.clone(), after);
    }

    /// Makes a server's health checks pass ([`Operational::Up`]) or fail
    /// ([`Operational::Down`]) on every instance.
    pub fn set_healthy(&self, server: &ServerName, healthy: bool) {
        let operational = if healthy { Operational::Up } else { Operational::Down };
        self.set_operational(server, None, operational);
    }

    /// Sets what the health checks make of a server, on one instance (`Some`) or on every
    /// instance (`None`), at any time: a server that goes down (or comes up) by itself.
    pub fn set_operational(&self, server: &ServerName, on: Option<&LbEndpoint>, operational: Operational) {
        let mut state = lock(&self.state);
        for (instance, servers) in state.instances.iter_mut() {
            if on.is_some_and(|on| on != instance) {
                continue;
            }
            if let Some(s) = servers.get_mut(server) {
                s.operational = operational;
            }
        }
        state.refresh(server);
    }

    /// Sets the state a server starts in, on one instance (`Some`) or on every instance
    /// (`None`): its admin state, what its checks make of it, and its absolute effective weight
    /// (any value from 0 to [`MAX_WEIGHT`], whatever its configured weight). For building
    /// fleets as they are found in production (a server in maintenance on one box, drained, down,
    /// at an odd weight) before a test runs; it is not recorded as a change, and servers it takes
    /// out of rotation count as out from the start in the [`RotationLog`].
    ///
    /// An unknown server or instance is [`PortError::NotFound`], a weight above [`MAX_WEIGHT`]
    /// is [`PortError::Rejected`]; nothing is changed then.
    pub fn set_initial(
        &self,
        server: &ServerName,
        on: Option<&LbEndpoint>,
        admin: AdminState,
        operational: Operational,
        weight: u32,
    ) -> Result<(), PortError> {
        if weight > MAX_WEIGHT {
            return Err(PortError::rejected(
                "fake load balancer",
                format!("weight {weight} is above {MAX_WEIGHT}"),
            ));
        }
        let mut state = lock(&self.state);
        if let Some(on) = on {
            if !state.instances.contains_key(on) {
                return Err(PortError::not_found(format!("load balancer instance {on}")));
            }
        }
        let targets: Vec<LbEndpoint> =
            state.instances.keys().filter(|i| on.is_none_or(|on| on == *i)).cloned().collect();
        for instance in &targets {
            if !state.instances.get(instance).is_some_and(|servers| servers.contains_key(server)) {
                return Err(PortError::not_found(format!("server {server} on {instance}")));
            }
        }
        for instance in &targets {
            if let Some(s) = state.instances.get_mut(instance).and_then(|servers| servers.get_mut(server)) {
                s.admin = admin;
                s.operational = operational;
                s.set_absolute_weight(weight);
            }
        }
        state.initially_out = state.compute_out_of_rotation();
        state.out = state.initially_out.clone();
        Ok(())
    }

    /// Makes one instance lack a server (a box whose configuration was not updated): lookups
    /// and changes of that server fail there, and [`LoadBalancer::servers`] lists it without
    /// that instance.
    pub fn remove_server_on(&self, instance: &LbEndpoint, server: &ServerName) {
        let mut state = lock(&self.state);
        if let Some(servers) = state.instances.get_mut(instance) {
            servers.remove(server);
        }
        state.refresh(server);
    }

    /// Makes the backend refuse weight changes, like HAProxy with a static algorithm.
    pub fn set_refuse_weights(&self, refuse: bool) {
        lock(&self.state).faults.refuse_weights = refuse;
    }

    /// A server as the first instance sees it.
    pub fn server(&self, server: &ServerName) -> Option<FakeServer> {
        lock(&self.state).instances.values().next().and_then(|servers| servers.get(server).cloned())
    }

    /// A server as `instance` sees it.
    pub fn server_on(&self, instance: &LbEndpoint, server: &ServerName) -> Option<FakeServer> {
        lock(&self.state).instances.get(instance).and_then(|servers| servers.get(server).cloned())
    }

    /// Servers out of rotation on any instance now.
    pub fn out_of_rotation(&self) -> BTreeSet<ServerName> {
        lock(&self.state).out.clone()
    }

    /// What was seen so far.
    pub fn rotation_log(&self) -> RotationLog {
        lock(&self.state).log.clone()
    }
}

#[async_trait]
impl LoadBalancer for FakeLoadBalancer {
    async fn resolve(&self, backend: &Backend, lookup: &ServerLookup) -> Result<ServerName, PortError> {
        let state = lock(&self.state);
        let instances = state.reachable(backend)?;
        let mut found = None;
        for instance in &instances {
            let servers = state.instances.get(instance);
            let hit = servers.and_then(|servers| match lookup {
                ServerLookup::Name(name) => servers.get(name),
                ServerLookup::Address(address) => servers.values().find(|s| &s.address == address),
            });
            match (hit, &found) {
                (None, _) => {
                    return Err(PortError::not_found(format!(
                        "{lookup} in backend {} on {instance}",
                        backend.name
                    )))
                }
                (Some(s), Some(name)) if &s.name != name => {
                    return Err(PortError::rejected(
                        format!("load balancer {instance}"),
                        format!("{lookup} is {} there but {name} elsewhere", s.name),
                    ))
                }
                (Some(s), _) => found = Some(s.name.clone()),
            }
        }
        found.ok_or_else(|| {
            PortError::not_found(format!("{lookup} in backend {} (no instances)", backend.name))
        })
    }

    async fn set_state(
        &self,
        backend: &Backend,
        server: &ServerName,
        state: AdminState,
    ) -> Result<(), PortError> {
        lock(&self.state).apply(backend, server, |s| s.admin = state)
    }

    async fn set_weight(
        &self,
        backend: &Backend,
        server: &ServerName,
        weight: Weight,
    ) -> Result<(), PortError> {
        let mut state = lock(&self.state);
        if state.faults.refuse_weights && weight != Weight::ZERO && weight != Weight::FULL {
            return Err(PortError::rejected(
                "load balancer",
                "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.",
            ));
        }
        if weight != Weight::ZERO && weight != Weight::FULL {
            let instances = state.reachable(backend)?;
            for instance in &instances {
                let configured = state.server_mut(instance, backend, server)?.configured_weight;
                if configured * u32::from(weight.get()) / 100 == 0 {
                    return Err(PortError::rejected(
                        format!("load balancer {instance}"),
                        format!("server {}/{server} has weight {configured} in its configuration, and {weight} of it rounds to 0 (no traffic)", backend.name),
                    ));
                }
            }
        }
        state.apply(backend, server, |s| s.set_percent_weight(weight))
    }

    /// Checks the server is on every reachable instance and records the call: the fake's
    /// checks are what its tests set, so the server is as healthy right after as they say.
    async fn mark_down(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        let mut state = lock(&self.state);
        for instance in state.reachable(backend)? {
            state.server_mut(&instance, backend, server)?;
        }
        let place = state.log.changes.len();
        state.log.marked_down.push((server.clone(), place));
        Ok(())
    }

    async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        lock(&self.state).apply(backend, server, |s| s.sessions = 0)
    }

    async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError> {
        let mut state = lock(&self.state);
        let instances = state.reachable(backend)?;
        instances
            .iter()
            .map(|instance| Ok(state.server_mut(instance, backend, server)?.instance_state(instance)))
            .collect()
    }

    async fn servers(&self, backend: &Backend) -> Result<Vec<ServerState>, PortError> {
        let state = lock(&self.state);
        let mut readings = Vec::new();
        for instance in state.reachable(backend)? {
            for s in state.instances.get(&instance).into_iter().flat_map(BTreeMap::values) {
                readings.push((s.name.clone(), s.instance_state(&instance)));
            }
        }
        Ok(ServerState::gather(readings))
    }

    async fn restore(
        &self,
        backend: &Backend,
        server: &ServerName,
        to: &[InstanceState],
    ) -> Result<(), PortError> {
        check_restore(backend, server, to)?;
        let mut state = lock(&self.state);
        let instances = state.reachable_listed(backend, to)?;
        for wanted in to {
            let configured = state.server_mut(&wanted.instance, backend, server)?.configured_weight;
            if state.faults.refuse_weights && wanted.weight != 0 && wanted.weight != configured {
                return Err(PortError::rejected(
                    format!("load balancer {}", wanted.instance),
                    "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.",
                ));
            }
        }
        if instances.is_empty() {
            return Ok(());
        }
        state.apply_on(backend, server, &instances, |instance, s| {
            if let Some(wanted) = to.iter().find(|w| &w.instance == instance) {
                s.admin = wanted.admin;
                s.set_absolute_weight(wanted.weight);
            }
        })
    }

    async fn wait_drained(
        &self,
        backend: &Backend,
        server: &ServerName,
        timeout: Duration,
    ) -> Result<(), PortError> {
        let sessions: u64 = self.status(backend, server).await?.iter().map(|s| s.sessions).sum();
        if sessions == 0 {
            return Ok(());
        }
        let delay = lock(&self.state).faults.drain_delays.get(server).copied().flatten();
        match delay {
            Some(delay) if delay <= timeout => {
                tokio::time::sleep(delay).await;
                lock(&self.state).apply(backend, server, |s| s.sessions = 0)
            }
            _ => {
                tokio::time::sleep(timeout).await;
                Err(PortError::timeout(
                    format!("drain of {}/{server} ({sessions} sessions left)", backend.name),
                    timeout,
                ))
            }
        }
    }

    // wait_up is the trait's default: it polls `status` until every instance says UP.
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn a() -> LbEndpoint {
        LbEndpoint::Tcp { address: "10.0.0.1".into(), port: 9999 }
    }

    fn b() -> LbEndpoint {
        LbEndpoint::Tcp { address: "10.0.0.2".into(), port: 9999 }
    }

    fn name(n: &str) -> ServerName {
        ServerName::new(n).unwrap()
    }

    fn fake() -> FakeLoadBalancer {
        let servers = ["web1", "web2", "web3"]
            .iter()
            .enumerate()
            .map(|(i, n)| FakeServer::new(name(n), format!("10.0.1.{i}")))
            .collect();
        FakeLoadBalancer::new(BackendName::new("be").unwrap(), vec![a(), b()], servers)
    }

    #[tokio::test]
    async fn fleets_start_in_any_state_per_instance() {
        let lb = fake();
        let backend = lb.backend();
        lb.set_initial(&name("web1"), Some(&b()), AdminState::Maint, Operational::Up, 37).unwrap();
        lb.set_initial(&name("web2"), None, AdminState::Drain, Operational::Up, 256).unwrap();
        lb.set_initial(&name("web3"), None, AdminState::Ready, Operational::Stopping, 7).unwrap();
        let servers = lb.servers(&backend).await.unwrap();
        assert_eq!(servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["web1", "web2", "web3"]);
        let web1 = &servers[0];
        assert_eq!(
            web1.instances.iter().map(|s| s.admin).collect::<Vec<_>>(),
            [AdminState::Ready, AdminState::Maint]
        );
        assert_eq!(web1.instances.iter().map(|s| s.weight).collect::<Vec<_>>(), [100, 37]);
        assert_eq!(web1.instances[1].operational, Operational::Down, "stopped while in maintenance");
        assert_eq!(web1.instances[1].check, None, "checks paused in maintenance");
        assert!(!web1.in_rotation() && !web1.agrees());
        assert!(servers[1].agrees() && !servers[1].in_rotation());
        assert_eq!(servers[1].instances[0].weight, 256);
        assert_eq!(servers[2].instances[0].status, ServerStatus::Other("NOLB".into()));
        assert_eq!(lb.out_of_rotation().len(), 2, "web1 and web2 are out, web3 at weight 7 is not");
        assert!(lb.set_initial(&name("web1"), None, AdminState::Ready, Operational::Up, 257).is_err());
        assert!(lb.set_initial(&name("nope"), None, AdminState::Ready, Operational::Up, 1).is_err());
    }

    #[tokio::test]
    async fn restore_puts_back_each_instance_and_refuses_bad_requests_whole() {
        let lb = fake();
        let backend = lb.backend();
        let web1 = name("web1");
        lb.set_initial(&web1, Some(&a()), AdminState::Drain, Operational::Up, 37).unwrap();
        lb.set_initial(&web1, Some(&b()), AdminState::Maint, Operational::Up, 3).unwrap();
        let before = lb.status(&backend, &web1).await.unwrap();
        lb.set_state(&backend, &web1, AdminState::Ready).await.unwrap();
        lb.set_weight(&backend, &web1, Weight::percent(50).unwrap()).await.unwrap();
        assert!(lb.status(&backend, &web1).await.unwrap().iter().all(|s| s.weight == 50));

        let mut too_heavy = before.clone();
        too_heavy[1].weight = 300;
        assert!(matches!(lb.restore(&backend, &web1, &too_heavy).await, Err(PortError::Rejected { .. })));
        assert!(lb.status(&backend, &web1).await.unwrap().iter().all(|s| s.weight == 50), "nothing changed");

        lb.restore(&backend, &web1, &before).await.unwrap();
        let after = lb.status(&backend, &web1).await.unwrap();
        assert_eq!(after, before);
        // A percentage after an absolute weight is again of the configured weight.
        lb.set_weight(&backend, &web1, Weight::percent(10).unwrap()).await.unwrap();
        assert!(lb.status(&backend, &web1).await.unwrap().iter().all(|s| s.weight == 10));

        lb.set_instance_down(&b(), true);
        assert!(lb.restore(&backend, &web1, &before[..1]).await.is_ok(), "only the listed instance");
        assert!(lb.restore(&backend, &web1, &before).await.unwrap_err().is_unreachable());
        assert_eq!(lb.server_on(&b(), &web1).unwrap().effective_weight(), 10, "b untouched");
    }

    #[tokio::test]
    async fn a_static_algorithm_restores_only_zero_or_the_configured_weight() {
        let lb = fake();
        let backend = lb.backend();
        let web1 = name("web1");
        lb.set_refuse_weights(true);
        let mut to = lb.status(&backend, &web1).await.unwrap();
        lb.restore(&backend, &web1, &to).await.unwrap();
        to[0].weight = 0;
        lb.restore(&backend, &web1, &to).await.unwrap();
        to[0].weight = 37;
        assert!(matches!(lb.restore(&backend, &web1, &to).await, Err(PortError::Rejected { .. })));
    }

    #[tokio::test]
    async fn a_server_one_instance_lacks_is_listed_with_the_others() {
        let lb = fake();
        let backend = lb.backend();
        lb.remove_server_on(&a(), &name("web2"));
        let servers = lb.servers(&backend).await.unwrap();
        let web2 = servers.iter().find(|s| s.name == name("web2")).unwrap();
        assert_eq!(web2.instances.iter().map(|s| &s.instance).collect::<Vec<_>>(), [&b()]);
        assert_eq!(web2.missing_on(&backend), [&a()]);
        assert!(web2.instances[0].in_rotation());
        assert!(matches!(lb.status(&backend, &name("web2")).await, Err(PortError::NotFound { .. })));
    }
}
