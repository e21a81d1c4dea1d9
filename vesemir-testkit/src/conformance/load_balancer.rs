//! The `LoadBalancer` conformance suite: what every implementation (the core's fake, the
//! HAProxy adapter on a real haproxy) must do. Each check leaves the fixture's servers as it
//! found them: ready, up, at full weight.

use std::time::Duration;

use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{
    AdminState, Backend, InstanceState, LbEndpoint, LoadBalancer, ServerLookup, ServerStatus, Weight,
};
use vesemir_core::PortError;

/// What exists behind the load balancer under test.
#[derive(Debug, Clone)]
pub struct LoadBalancerFixture {
    /// A backend with every instance (at least two, to prove changes reach all of them).
    pub backend: Backend,
    /// At least two servers of the backend, by name and address (each address unique): ready,
    /// up (health checks passed), at full weight, with no sessions, and a configured weight of
    /// at least 2 (so that 50% is visible).
    pub servers: Vec<(ServerName, String)>,
    /// A server name the backend does not have.
    pub unknown_server: ServerName,
    /// An address no server of the backend has.
    pub unknown_address: String,
    /// An instance endpoint nothing answers at.
    pub unreachable_instance: LbEndpoint,
    /// How long health checks may take to prove a server up after it leaves maintenance.
    pub up_timeout: Duration,
}

impl LoadBalancerFixture {
    fn first(&self) -> &ServerName {
        &self.servers[0].0
    }

    fn with_unreachable(&self, first: bool) -> Backend {
        let mut backend = self.backend.clone();
        if first {
            backend.instances.insert(0, self.unreachable_instance.clone());
        } else {
            backend.instances.push(self.unreachable_instance.clone());
        }
        backend
    }
}

/// Runs every check of the suite, one after the other.
pub async fn run_all(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture) {
    assert!(fixture.servers.len() >= 2, "the fixture needs at least two servers");
    assert!(fixture.backend.instances.len() >= 2, "the fixture needs at least two instances");
    status_reports_every_instance_in_order(lb, fixture).await;
    resolves_by_name_and_by_address(lb, fixture).await;
    unknown_backend_server_or_address_is_not_found(lb, fixture).await;
    state_changes_reach_every_instance(lb, fixture).await;
    weights_are_percentages_of_the_configured_weight(lb, fixture).await;
    an_idle_server_drains_at_once(lb, fixture).await;
    an_unreachable_instance_changes_nothing(lb, fixture).await;
    changes_to_one_server_leave_the_others_alone(lb, fixture).await;
}

async fn status(lb: &dyn LoadBalancer, backend: &Backend, server: &ServerName) -> Vec<InstanceState> {
    lb.status(backend, server).await.unwrap_or_else(|e| panic!("status of {server}: {}", e.chain()))
}

async fn assert_all(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
    server: &ServerName,
    what: &str,
    check: impl Fn(&InstanceState) -> bool,
) {
    let states = status(lb, &fixture.backend, server).await;
    assert_eq!(states.len(), fixture.backend.instances.len(), "{what}: one state per instance");
    for state in &states {
        assert!(check(state), "{what}: {server} on {} is {state:?}", state.instance);
    }
}

/// Puts `server` back to ready, full weight, proven up.
async fn restore(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture, server: &ServerName) {
    let backend = &fixture.backend;
    lb.set_weight(backend, server, Weight::FULL)
        .await
        .unwrap_or_else(|e| panic!("restore weight: {}", e.chain()));
    lb.set_state(backend, server, AdminState::Ready)
        .await
        .unwrap_or_else(|e| panic!("restore state: {}", e.chain()));
    lb.wait_up(backend, server, fixture.up_timeout)
        .await
        .unwrap_or_else(|e| panic!("{server} did not come back up: {}", e.chain()));
}

/// `status` answers once per instance, in the backend's order, with the starting state.
pub async fn status_reports_every_instance_in_order(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture) {
    for (server, _) in &fixture.servers {
        let states = status(lb, &fixture.backend, server).await;
        let instances: Vec<_> = states.iter().map(|s| s.instance.clone()).collect();
        assert_eq!(instances, fixture.backend.instances, "status of {server}");
        for state in states {
            assert_eq!(state.status, ServerStatus::Up, "{server} starts up: {state:?}");
            assert_eq!(state.sessions, 0, "{server} starts idle: {state:?}");
            assert!(state.configured_weight >= 2, "the fixture needs configured weights >= 2: {state:?}");
            assert_eq!(state.weight, state.configured_weight, "{server} starts at full weight: {state:?}");
        }
    }
}

/// Every server is found by its name and by its address, with the same answer.
pub async fn resolves_by_name_and_by_address(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture) {
    for (name, address) in &fixture.servers {
        let by_name = lb.resolve(&fixture.backend, &ServerLookup::Name(name.clone())).await;
        assert_eq!(by_name.map_err(|e| e.chain()), Ok(name.clone()), "resolve by name");
        let by_address = lb.resolve(&fixture.backend, &ServerLookup::Address(address.clone())).await;
        assert_eq!(by_address.map_err(|e| e.chain()), Ok(name.clone()), "resolve by address {address}");
    }
}

fn assert_not_found<T: std::fmt::Debug>(what: &str, result: Result<T, PortError>) {
    match result {
        Err(PortError::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// An unknown backend, server or address is `NotFound`, for lookups and for changes alike,
/// and changes nothing.
pub async fn unknown_backend_server_or_address_is_not_found(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let unknown = &fixture.unknown_server;
    assert_not_found("resolve unknown name", lb.resolve(backend, &ServerLookup::Name(unknown.clone())).await);
    assert_not_found(
        "resolve unknown address",
        lb.resolve(backend, &ServerLookup::Address(fixture.unknown_address.clone())).await,
    );
    assert_not_found("drain unknown server", lb.set_state(backend, unknown, AdminState::Drain).await);
    assert_not_found("weigh unknown server", lb.set_weight(backend, unknown, Weight::ZERO).await);
    assert_not_found("shut down unknown server", lb.shutdown_sessions(backend, unknown).await);
    assert_not_found("status of unknown server", lb.status(backend, unknown).await);

    let other = Backend {
        name: BackendName::new("vesemir_no_such_backend").unwrap_or_else(|e| panic!("{e}")),
        instances: backend.instances.clone(),
    };
    let first = fixture.first();
    assert_not_found(
        "resolve in unknown backend",
        lb.resolve(&other, &ServerLookup::Name(first.clone())).await,
    );
    assert_not_found("drain in unknown backend", lb.set_state(&other, first, AdminState::Drain).await);
    assert_not_found("status in unknown backend", lb.status(&other, first).await);

    for (server, _) in &fixture.servers {
        assert_all(lb, fixture, server, "after refused changes", |s| s.status == ServerStatus::Up).await;
    }
}

/// Drain, maintenance and ready show on every instance; a server back from maintenance is
/// proven up by `wait_up`.
pub async fn state_changes_reach_every_instance(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture) {
    let backend = &fixture.backend;
    let server = fixture.first();
    let set = |state| async move {
        lb.set_state(backend, server, state).await.unwrap_or_else(|e| panic!("set {state}: {}", e.chain()))
    };
    set(AdminState::Drain).await;
    assert_all(lb, fixture, server, "after drain", |s| s.status == ServerStatus::Drain).await;
    set(AdminState::Maint).await;
    assert_all(lb, fixture, server, "after maint", |s| s.status == ServerStatus::Maint).await;
    set(AdminState::Ready).await;
    lb.wait_up(backend, server, fixture.up_timeout)
        .await
        .unwrap_or_else(|e| panic!("{server} did not come back up: {}", e.chain()));
    assert_all(lb, fixture, server, "after ready", |s| s.status == ServerStatus::Up).await;
    // Setting the state it already has is fine.
    set(AdminState::Ready).await;
    restore(lb, fixture, server).await;
}

/// Weights are percentages of the configured weight, on every instance.
pub async fn weights_are_percentages_of_the_configured_weight(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let server = fixture.first();
    for percent in [0u8, 50, 100] {
        let weight = Weight::percent(percent).unwrap_or_else(|e| panic!("{e}"));
        lb.set_weight(backend, server, weight)
            .await
            .unwrap_or_else(|e| panic!("set weight {weight}: {}", e.chain()));
        assert_all(lb, fixture, server, &format!("at {weight}"), |s| {
            s.weight == s.configured_weight * u32::from(percent) / 100
        })
        .await;
    }
    restore(lb, fixture, server).await;
}

/// A server without sessions drains at once; ending no sessions is fine.
pub async fn an_idle_server_drains_at_once(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture) {
    let backend = &fixture.backend;
    let server = fixture.first();
    lb.set_state(backend, server, AdminState::Drain).await.unwrap_or_else(|e| panic!("drain: {}", e.chain()));
    let started = tokio::time::Instant::now();
    lb.wait_drained(backend, server, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("idle drain: {}", e.chain()));
    assert!(started.elapsed() < Duration::from_secs(4), "an idle drain took {:?}", started.elapsed());
    lb.shutdown_sessions(backend, server).await.unwrap_or_else(|e| panic!("shutdown: {}", e.chain()));
    assert_all(lb, fixture, server, "after shutdown", |s| s.sessions == 0 && s.status == ServerStatus::Drain)
        .await;
    restore(lb, fixture, server).await;
}

/// When one instance cannot be reached, a change is an `Unreachable` error and no instance is
/// left changed, wherever the unreachable one stands in the list.
pub async fn an_unreachable_instance_changes_nothing(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture) {
    let server = fixture.first();
    for first in [true, false] {
        let backend = fixture.with_unreachable(first);
        let drained = lb.set_state(&backend, server, AdminState::Drain).await;
        assert!(matches!(drained, Err(ref e) if e.is_unreachable()), "drain: {drained:?}");
        let weighed = lb.set_weight(&backend, server, Weight::ZERO).await;
        assert!(matches!(weighed, Err(ref e) if e.is_unreachable()), "weight: {weighed:?}");
        let resolved = lb.resolve(&backend, &ServerLookup::Name(server.clone())).await;
        assert!(matches!(resolved, Err(ref e) if e.is_unreachable()), "resolve: {resolved:?}");
        let shut = lb.shutdown_sessions(&backend, server).await;
        assert!(matches!(shut, Err(ref e) if e.is_unreachable()), "shutdown: {shut:?}");
        let status = lb.status(&backend, server).await;
        assert!(matches!(status, Err(ref e) if e.is_unreachable()), "status: {status:?}");
        assert_all(lb, fixture, server, "after an unreachable instance", |s| {
            s.status == ServerStatus::Up && s.weight == s.configured_weight
        })
        .await;
    }
}

/// Draining one server leaves every other server as it was.
pub async fn changes_to_one_server_leave_the_others_alone(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let server = fixture.first();
    lb.set_state(backend, server, AdminState::Maint).await.unwrap_or_else(|e| panic!("maint: {}", e.chain()));
    lb.set_weight(backend, server, Weight::ZERO).await.unwrap_or_else(|e| panic!("weight: {}", e.chain()));
    for (other, _) in &fixture.servers[1..] {
        assert_all(lb, fixture, other, "a neighbour", |s| {
            s.status == ServerStatus::Up && s.weight == s.configured_weight
        })
        .await;
    }
    restore(lb, fixture, server).await;
}
