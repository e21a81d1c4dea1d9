//! A fake [`LoadBalancer`]: one backend on several instances, with servers whose sessions,
//! health and instances can be made to misbehave. It records how many servers were out of
//! rotation at once, so tests can check the rollout's central invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::lock;
use crate::error::PortError;
use crate::name::{BackendName, ServerName};
use crate::ports::{
    AdminState, Backend, InstanceState, LbEndpoint, LoadBalancer, ServerLookup, ServerStatus, Weight,
};

/// A server of the fake backend, as one instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeServer {
    /// Its name.
    pub name: ServerName,
    /// Its address.
    pub address: String,
    /// Its administrative state.
    pub admin: AdminState,
    /// Its weight as a percentage of the configured weight.
    pub weight: Weight,
    /// Its configured weight.
    pub configured_weight: u32,
    /// Its current sessions.
    pub sessions: u64,
    /// Whether its health checks pass.
    pub healthy: bool,
}

impl FakeServer {
    /// A ready, healthy server at full weight with no sessions.
    pub fn new(name: ServerName, address: impl Into<String>) -> Self {
        Self {
            name,
            address: address.into(),
            admin: AdminState::Ready,
            weight: Weight::FULL,
            configured_weight: 100,
            sessions: 0,
            healthy: true,
        }
    }

    fn in_rotation(&self) -> bool {
        self.admin == AdminState::Ready && self.weight > Weight::ZERO
    }

    fn status(&self) -> ServerStatus {
        match self.admin {
            AdminState::Maint => ServerStatus::Maint,
            AdminState::Drain => ServerStatus::Drain,
            AdminState::Ready if self.healthy => ServerStatus::Up,
            AdminState::Ready => ServerStatus::Down,
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
}

#[derive(Debug, Default)]
struct Faults {
    down: BTreeSet<LbEndpoint>,
    /// Servers whose sessions end only this long after drain (`None`: never, until shutdown).
    drain_delays: BTreeMap<ServerName, Option<Duration>>,
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
        for instance in &instances {
            self.server_mut(instance, backend, server)?;
        }
        for instance in &instances {
            change(self.server_mut(instance, backend, server)?);
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

    /// Makes a server's health checks pass or fail.
    pub fn set_healthy(&self, server: &ServerName, healthy: bool) {
        let mut state = lock(&self.state);
        for servers in state.instances.values_mut() {
            if let Some(s) = servers.get_mut(server) {
                s.healthy = healthy;
            }
        }
        state.refresh(server);
    }

    /// A server as the first instance sees it.
    pub fn server(&self, server: &ServerName) -> Option<FakeServer> {
        lock(&self.state).instances.values().next().and_then(|servers| servers.get(server).cloned())
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
        state.apply(backend, server, |s| s.weight = weight)
    }

    async fn shutdown_sessions(&self, backend: &Backend, server: &ServerName) -> Result<(), PortError> {
        lock(&self.state).apply(backend, server, |s| s.sessions = 0)
    }

    async fn status(&self, backend: &Backend, server: &ServerName) -> Result<Vec<InstanceState>, PortError> {
        let mut state = lock(&self.state);
        let instances = state.reachable(backend)?;
        instances
            .iter()
            .map(|instance| {
                let s = state.server_mut(instance, backend, server)?;
                Ok(InstanceState {
                    instance: instance.clone(),
                    status: s.status(),
                    weight: s.configured_weight * u32::from(s.weight.get()) / 100,
                    configured_weight: s.configured_weight,
                    sessions: s.sessions,
                })
            })
            .collect()
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
