//! The `LoadBalancer` conformance suite: what every implementation (the core's fake, the
//! HAProxy adapter on a real haproxy) must do. Each check leaves the fixture's servers as it
//! found them: ready, up, at full weight.
//!
//! [`run_all`] needs only the port. [`a_failing_server_is_down_and_out_of_rotation`] also needs
//! a way to make a server fail its health checks, which only the caller has (the fake's
//! `set_healthy`, a real server's health endpoint), so it is run on its own.

use std::time::Duration;

use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{
    AdminState, Backend, InstanceState, LbEndpoint, LoadBalancer, Operational, ServerLookup, ServerState,
    ServerStatus, Weight,
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
    /// How long health checks may take to prove a server up after it leaves maintenance (or
    /// down once it fails them).
    pub up_timeout: Duration,
    /// Whether the servers have health checks: then a passing one reads `L7OK`, and a server
    /// that has none reports no check status.
    pub health_checks: bool,
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
    status_reports_admin_operational_check_and_address(lb, fixture).await;
    servers_lists_every_server_as_every_instance_sees_it(lb, fixture).await;
    a_state_set_on_one_box_shows_on_that_box_only(lb, fixture).await;
    restore_puts_back_the_exact_weight_and_state(lb, fixture).await;
    restore_puts_back_a_different_state_on_each_box(lb, fixture).await;
    restore_refuses_bad_requests_before_changing_anything(lb, fixture).await;
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
async fn reset(lb: &dyn LoadBalancer, fixture: &LoadBalancerFixture, server: &ServerName) {
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
    reset(lb, fixture, server).await;
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
    reset(lb, fixture, server).await;
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
    reset(lb, fixture, server).await;
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
    reset(lb, fixture, server).await;
}

fn address_of<'a>(fixture: &'a LoadBalancerFixture, server: &ServerName) -> &'a str {
    fixture.servers.iter().find(|(name, _)| name == server).map(|(_, a)| a.as_str()).unwrap_or_default()
}

/// Checks a server's starting state on one instance: ready, up, passing its checks, at its
/// configured weight, in rotation, at its address.
fn assert_starting_state(fixture: &LoadBalancerFixture, server: &ServerName, state: &InstanceState) {
    assert_eq!(state.admin, AdminState::Ready, "{server}: {state:?}");
    assert_eq!(state.operational, Operational::Up, "{server}: {state:?}");
    let check = if fixture.health_checks { Some("L7OK") } else { None };
    assert_eq!(state.check.as_deref(), check, "{server}: {state:?}");
    assert_eq!(state.address.as_deref(), Some(address_of(fixture, server)), "{server}: {state:?}");
    assert_eq!(state.weight, state.configured_weight, "{server}: {state:?}");
    assert!(state.in_rotation(), "{server}: {state:?}");
}

async fn servers(lb: &dyn LoadBalancer, backend: &Backend) -> Vec<ServerState> {
    lb.servers(backend).await.unwrap_or_else(|e| panic!("servers of {}: {}", backend.name, e.chain()))
}

async fn restore(lb: &dyn LoadBalancer, backend: &Backend, server: &ServerName, to: &[InstanceState]) {
    lb.restore(backend, server, to)
        .await
        .unwrap_or_else(|e| panic!("restore {server} to {to:?}: {}", e.chain()))
}

/// `status` reports the admin state, the operational state, the last check and the address,
/// and they follow drain and maintenance.
pub async fn status_reports_admin_operational_check_and_address(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    for (server, _) in &fixture.servers {
        for state in status(lb, backend, server).await {
            assert_starting_state(fixture, server, &state);
        }
    }
    let server = fixture.first();
    lb.set_state(backend, server, AdminState::Drain).await.unwrap_or_else(|e| panic!("drain: {}", e.chain()));
    assert_all(lb, fixture, server, "drained", |s| {
        s.admin == AdminState::Drain && s.operational == Operational::Up && !s.in_rotation()
    })
    .await;
    lb.set_state(backend, server, AdminState::Maint).await.unwrap_or_else(|e| panic!("maint: {}", e.chain()));
    // HAProxy stops a server in maintenance and pauses its checks.
    assert_all(lb, fixture, server, "in maintenance", |s| {
        s.admin == AdminState::Maint
            && s.operational == Operational::Down
            && s.check.is_none()
            && !s.in_rotation()
    })
    .await;
    lb.set_weight(backend, server, Weight::ZERO).await.unwrap_or_else(|e| panic!("weight 0: {}", e.chain()));
    lb.set_state(backend, server, AdminState::Ready).await.unwrap_or_else(|e| panic!("ready: {}", e.chain()));
    assert_all(lb, fixture, server, "ready at weight 0", |s| {
        s.admin == AdminState::Ready && s.weight == 0 && !s.in_rotation()
    })
    .await;
    reset(lb, fixture, server).await;
}

/// `servers` lists every server of the backend, each with one state per instance in the
/// backend's order; the fixture's servers start in rotation and agree.
pub async fn servers_lists_every_server_as_every_instance_sees_it(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let listed = servers(lb, backend).await;
    for (server, _) in &fixture.servers {
        let seen =
            listed.iter().find(|s| &s.name == server).unwrap_or_else(|| panic!("{server} not in {listed:?}"));
        let instances: Vec<_> = seen.instances.iter().map(|s| s.instance.clone()).collect();
        assert_eq!(instances, backend.instances, "{server} on every instance, in order");
        assert!(seen.missing_on(backend).is_empty());
        for state in &seen.instances {
            assert_starting_state(fixture, server, state);
            assert_eq!(state.status, ServerStatus::Up);
        }
        assert!(seen.in_rotation() && seen.agrees(), "{seen:?}");
        // The same as `status` says.
        assert_eq!(seen.instances, status(lb, backend, server).await);
    }
    assert!(!listed.iter().any(|s| s.name == fixture.unknown_server), "no unknown server");
    let names: Vec<_> = listed.iter().map(|s| &s.name).collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "each server once: {names:?}");

    let other = Backend {
        name: BackendName::new("vesemir_no_such_backend").unwrap_or_else(|e| panic!("{e}")),
        instances: backend.instances.clone(),
    };
    assert_not_found("servers of an unknown backend", lb.servers(&other).await);
    for first in [true, false] {
        let outcome = lb.servers(&fixture.with_unreachable(first)).await;
        assert!(matches!(outcome, Err(ref e) if e.is_unreachable()), "servers: {outcome:?}");
    }
}

/// A server in maintenance on one box only shows `Maint` there and `Ready` on the other: it is
/// not in rotation, and its instances do not agree.
pub async fn a_state_set_on_one_box_shows_on_that_box_only(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let server = fixture.first();
    let before = status(lb, backend, server).await;
    let mut maint_on_second = before[1].clone();
    maint_on_second.admin = AdminState::Maint;
    restore(lb, backend, server, std::slice::from_ref(&maint_on_second)).await;
    let listed = servers(lb, backend).await;
    let seen = listed.iter().find(|s| &s.name == server).unwrap_or_else(|| panic!("{server} not listed"));
    let admins: Vec<AdminState> = seen.instances.iter().map(|s| s.admin).collect();
    let mut expected = vec![AdminState::Ready; backend.instances.len()];
    expected[1] = AdminState::Maint;
    assert_eq!(admins, expected, "{seen:?}");
    assert!(seen.instances[0].in_rotation(), "still in rotation on the first box: {seen:?}");
    assert!(!seen.in_rotation() && !seen.agrees(), "{seen:?}");
    restore(lb, backend, server, &before[1..2]).await;
    reset(lb, fixture, server).await;
}

fn with(state: &InstanceState, admin: AdminState, weight: u32) -> InstanceState {
    InstanceState { admin, weight, ..state.clone() }
}

/// A server at weight 37 and drained, then changed every way, is restored to exactly weight 37
/// and drain on every box.
pub async fn restore_puts_back_the_exact_weight_and_state(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let server = fixture.first();
    let start = status(lb, backend, server).await;
    let odd: Vec<InstanceState> = start.iter().map(|s| with(s, AdminState::Drain, 37)).collect();
    restore(lb, backend, server, &odd).await;
    let recorded = status(lb, backend, server).await;
    for state in &recorded {
        assert_eq!((state.admin, state.weight), (AdminState::Drain, 37), "set up: {state:?}");
    }
    for (state, weight) in [
        (AdminState::Maint, Weight::ZERO),
        (AdminState::Ready, Weight::FULL),
        (AdminState::Ready, Weight::ZERO),
    ] {
        lb.set_state(backend, server, state).await.unwrap_or_else(|e| panic!("{state}: {}", e.chain()));
        lb.set_weight(backend, server, weight).await.unwrap_or_else(|e| panic!("{weight}: {}", e.chain()));
    }
    restore(lb, backend, server, &recorded).await;
    let after = status(lb, backend, server).await;
    for state in &after {
        assert_eq!((state.admin, state.weight), (AdminState::Drain, 37), "restored: {state:?}");
        assert!(!state.in_rotation());
    }
    // Restoring what is already there changes nothing.
    restore(lb, backend, server, &after).await;
    restore(lb, backend, server, &start).await;
    for state in status(lb, backend, server).await {
        assert_eq!((state.admin, state.weight), (AdminState::Ready, state.configured_weight), "{state:?}");
    }
    reset(lb, fixture, server).await;
}

/// A state that differed from box to box is restored box by box: maintenance at weight 5 on
/// the first, drain at weight 37 on the second, and the second box alone when only it is listed.
pub async fn restore_puts_back_a_different_state_on_each_box(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let server = fixture.first();
    let start = status(lb, backend, server).await;
    let mut per_box: Vec<InstanceState> = start.iter().map(|s| with(s, AdminState::Drain, 37)).collect();
    per_box[0] = with(&start[0], AdminState::Maint, 5);
    restore(lb, backend, server, &per_box).await;
    let recorded = status(lb, backend, server).await;
    let seen: Vec<(AdminState, u32)> = recorded.iter().map(|s| (s.admin, s.weight)).collect();
    let expected: Vec<(AdminState, u32)> = per_box.iter().map(|s| (s.admin, s.weight)).collect();
    assert_eq!(seen, expected, "{recorded:?}");

    lb.set_state(backend, server, AdminState::Ready).await.unwrap_or_else(|e| panic!("ready: {}", e.chain()));
    lb.set_weight(backend, server, Weight::FULL).await.unwrap_or_else(|e| panic!("weight: {}", e.chain()));
    // Only the second box is listed: the first stays as it is now.
    restore(lb, backend, server, &recorded[1..2]).await;
    let now = status(lb, backend, server).await;
    assert_eq!((now[0].admin, now[0].weight), (AdminState::Ready, now[0].configured_weight), "{now:?}");
    assert_eq!((now[1].admin, now[1].weight), (AdminState::Drain, 37), "{now:?}");
    restore(lb, backend, server, &recorded).await;
    let again: Vec<(AdminState, u32)> =
        status(lb, backend, server).await.iter().map(|s| (s.admin, s.weight)).collect();
    assert_eq!(again, expected);
    restore(lb, backend, server, &start).await;
    reset(lb, fixture, server).await;
}

/// A weight above 256, an instance that is not the backend's, an instance listed twice, an
/// unknown server or an unreachable instance: refused, and nothing changed anywhere.
pub async fn restore_refuses_bad_requests_before_changing_anything(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
) {
    let backend = &fixture.backend;
    let server = fixture.first();
    let start = status(lb, backend, server).await;
    let drained: Vec<InstanceState> = start.iter().map(|s| with(s, AdminState::Drain, 7)).collect();

    let mut too_heavy = drained.clone();
    too_heavy[1].weight = 257;
    let outcome = lb.restore(backend, server, &too_heavy).await;
    assert!(matches!(outcome, Err(PortError::Rejected { .. })), "weight 257: {outcome:?}");

    let mut foreign = drained.clone();
    foreign[1].instance = fixture.unreachable_instance.clone();
    let outcome = lb.restore(backend, server, &foreign).await;
    assert!(matches!(outcome, Err(PortError::Rejected { .. })), "foreign instance: {outcome:?}");

    let twice = vec![drained[0].clone(), drained[0].clone()];
    let outcome = lb.restore(backend, server, &twice).await;
    assert!(matches!(outcome, Err(PortError::Rejected { .. })), "listed twice: {outcome:?}");

    assert_not_found(
        "restore an unknown server",
        lb.restore(backend, &fixture.unknown_server, &drained).await,
    );

    for first in [true, false] {
        let with_dead = fixture.with_unreachable(first);
        let mut to = drained.clone();
        let dead = with(&drained[0], AdminState::Drain, 7);
        let dead = InstanceState { instance: fixture.unreachable_instance.clone(), ..dead };
        if first {
            to.insert(0, dead);
        } else {
            to.push(dead);
        }
        let outcome = lb.restore(&with_dead, server, &to).await;
        assert!(matches!(outcome, Err(ref e) if e.is_unreachable()), "unreachable: {outcome:?}");
    }
    assert_eq!(status(lb, backend, server).await, start, "nothing changed");
    lb.restore(backend, server, &[]).await.unwrap_or_else(|e| panic!("an empty restore: {}", e.chain()));
}

async fn wait_for(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
    server: &ServerName,
    what: &str,
    done: impl Fn(&[InstanceState]) -> bool,
) -> Vec<InstanceState> {
    let deadline = tokio::time::Instant::now() + fixture.up_timeout;
    loop {
        let states = status(lb, &fixture.backend, server).await;
        if done(&states) {
            return states;
        }
        assert!(tokio::time::Instant::now() < deadline, "{server} never {what}: {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server that fails its health checks (made to by `set_healthy(server, false)`) is down and
/// out of rotation on every instance, with a failed check status, while its admin state stays
/// ready; `servers` says the same. Passing again, it comes back up.
pub async fn a_failing_server_is_down_and_out_of_rotation(
    lb: &dyn LoadBalancer,
    fixture: &LoadBalancerFixture,
    set_healthy: impl Fn(&ServerName, bool),
) {
    let backend = &fixture.backend;
    let server = &fixture.servers[1].0;
    set_healthy(server, false);
    let states = wait_for(lb, fixture, server, "went down", |states| {
        states.iter().all(|s| s.operational == Operational::Down)
    })
    .await;
    for state in &states {
        assert_eq!(state.status, ServerStatus::Down, "{state:?}");
        assert_eq!(state.admin, AdminState::Ready, "{state:?}");
        assert!(!state.in_rotation(), "{state:?}");
        if fixture.health_checks {
            assert!(state.check.as_deref().is_some_and(|c| c != "L7OK"), "a failed check: {state:?}");
        }
    }
    let listed = servers(lb, backend).await;
    let seen = listed.iter().find(|s| &s.name == server).unwrap_or_else(|| panic!("{server} not listed"));
    assert!(!seen.in_rotation() && seen.agrees(), "down everywhere, same admin state and weight: {seen:?}");
    let others =
        listed.iter().filter(|s| fixture.servers.iter().any(|(n, _)| n == &s.name) && &s.name != server);
    for other in others {
        assert!(other.in_rotation(), "{other:?}");
    }
    set_healthy(server, true);
    lb.wait_up(backend, server, fixture.up_timeout)
        .await
        .unwrap_or_else(|e| panic!("{server} did not come back up: {}", e.chain()));
    for state in status(lb, backend, server).await {
        assert_starting_state(fixture, server, &state);
    }
}
