//! The adapter against two real haproxy instances fronting small HTTP servers: drain under live
//! traffic, both drain-timeout policies, health-checked UP, weights, typed error replies, an
//! instance that is down, and rollback when one instance refuses.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{backend, dead_endpoint, get, server_name, Lab, BACKEND, STATIC_BACKEND};
use vesemir_core::ports::{AdminState, LoadBalancer, LoadBalancerExt, ServerLookup, ServerStatus, Weight};
use vesemir_core::request::DrainTimeoutPolicy;
use vesemir_core::PortError;
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};

fn lb() -> HaproxyLoadBalancer {
    HaproxyLoadBalancer::new(HaproxyConfig {
        poll_interval: Duration::from_millis(50),
        ..HaproxyConfig::default()
    })
}

/// Sends `count` requests through every instance's frontend and returns the bodies (server
/// names); every request must succeed.
async fn traffic(lab: &Lab, count: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for i in 0..count {
        let frontend = lab.instances[i % lab.instances.len()].frontend();
        let (code, body) = get(frontend, "/", None).await.expect("request through haproxy");
        assert_eq!(code, 200, "request {i} failed: {body}");
        bodies.push(body);
    }
    bodies
}

/// Starts a `/hold` request to `server` through instance `instance` and waits until the
/// server holds it.
async fn hold(
    lab: &Lab,
    instance: usize,
    server: usize,
) -> tokio::task::JoinHandle<std::io::Result<(u16, String)>> {
    let frontend = lab.instances[instance].frontend();
    let target = lab.servers[server].name.clone();
    let before = lab.servers[server].held();
    let request = tokio::spawn(async move { get(frontend, "/hold", Some(&target)).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while lab.servers[server].held() == before {
        assert!(tokio::time::Instant::now() < deadline, "the held request never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_gets_no_new_request_and_its_sessions_are_counted() {
    let lab = Lab::start(3).await;
    let lb = lb();
    let backend = lab.mixed_backend();
    let web0 = lb.resolve(&backend, &ServerLookup::Address(lab.ip(0))).await.expect("resolve");
    assert_eq!(web0, server_name("web0"));

    let held = hold(&lab, 0, 0).await;
    let states = lb.status(&backend, &web0).await.expect("status");
    assert_eq!(
        states.iter().map(|s| s.sessions).collect::<Vec<_>>(),
        vec![1, 0],
        "one session, on instance 0"
    );

    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    let before = lab.servers[0].requests();
    let bodies = traffic(&lab, 40).await;
    assert!(!bodies.iter().any(|b| b == "web0"), "a drained server got new requests: {bodies:?}");
    assert_eq!(lab.servers[0].requests(), before, "no new request reached web0 while draining");
    assert!(bodies.iter().any(|b| b == "web1") && bodies.iter().any(|b| b == "web2"), "{bodies:?}");

    let timeout = lb.wait_drained(&backend, &web0, Duration::from_millis(300)).await;
    match timeout {
        Err(PortError::Timeout { ref operation, .. }) => {
            assert!(operation.contains("1 sessions on unix:"), "{operation}")
        }
        other => panic!("expected a drain timeout while a session is open, got {other:?}"),
    }
    assert_eq!(lb.total_sessions(&backend, &web0).await.expect("sessions"), 1);

    lab.servers[0].release_held();
    let (code, body) = held.await.expect("join").expect("held request");
    assert_eq!((code, body.as_str()), (200, "web0"), "the established session finished normally");
    lb.wait_drained(&backend, &web0, Duration::from_secs(5)).await.expect("drained once the session ended");
    lb.set_state(&backend, &web0, AdminState::Maint).await.expect("maint");
    let bodies = traffic(&lab, 20).await;
    assert!(!bodies.iter().any(|b| b == "web0"), "a server in maintenance got requests: {bodies:?}");

    // Back as the rollout does it: weight 0 while checks run, then ramp to full.
    lb.set_weight(&backend, &web0, Weight::ZERO).await.expect("weight 0");
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect("ready");
    lb.wait_up(&backend, &web0, Duration::from_secs(10)).await.expect("up");
    let bodies = traffic(&lab, 20).await;
    assert!(!bodies.iter().any(|b| b == "web0"), "weight 0 still keeps traffic off: {bodies:?}");
    for percent in [25, 50] {
        lb.set_weight(&backend, &web0, Weight::percent(percent).unwrap()).await.expect("ramp");
        for state in lb.status(&backend, &web0).await.expect("status") {
            assert_eq!(state.weight, 10 * u32::from(percent) / 100, "{state:?}");
        }
    }
    lb.set_weight(&backend, &web0, Weight::FULL).await.expect("full");
    let bodies = traffic(&lab, 30).await;
    assert!(bodies.iter().filter(|b| *b == "web0").count() >= 5, "web0 is back in rotation: {bodies:?}");
}

/// What the rollout does on a drain timeout, driven against the real haproxy.
async fn drain_with_policy(
    lb: &HaproxyLoadBalancer,
    lab: &Lab,
    policy: DrainTimeoutPolicy,
) -> Result<(), PortError> {
    let backend = lab.unix_backend();
    let server = lb.resolve(&backend, &ServerLookup::Name(server_name("web1"))).await?;
    lb.set_state(&backend, &server, AdminState::Drain).await?;
    match lb.wait_drained(&backend, &server, Duration::from_millis(400)).await {
        Err(e) if e.is_timeout() => match policy {
            DrainTimeoutPolicy::Force => {
                lb.shutdown_sessions(&backend, &server).await?;
                lb.set_state(&backend, &server, AdminState::Maint).await
            }
            DrainTimeoutPolicy::Fail => {
                lb.set_state(&backend, &server, AdminState::Ready).await?;
                Err(e)
            }
        },
        Err(e) => Err(e),
        Ok(()) => lb.set_state(&backend, &server, AdminState::Maint).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_drain_timeout_the_force_policy_shuts_sessions_down_and_goes_to_maintenance() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let held = [hold(&lab, 0, 1).await, hold(&lab, 1, 1).await];
    let started = tokio::time::Instant::now();
    drain_with_policy(&lb, &lab, DrainTimeoutPolicy::Force).await.expect("forced drain");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the drain timeout: {:?}",
        started.elapsed()
    );
    for request in held {
        let outcome = request.await.expect("join");
        assert!(!matches!(outcome, Ok((200, _))), "a forced session must be cut, got {outcome:?}");
    }
    let backend = lab.unix_backend();
    for state in lb.status(&backend, &server_name("web1")).await.expect("status") {
        assert_eq!((state.status, state.sessions), (ServerStatus::Maint, 0), "on {}", state.instance);
    }
    lab.servers[1].release_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_drain_timeout_the_fail_policy_puts_the_server_back_untouched() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let held = hold(&lab, 1, 1).await;
    let outcome = drain_with_policy(&lb, &lab, DrainTimeoutPolicy::Fail).await;
    assert!(matches!(outcome, Err(ref e) if e.is_timeout()), "{outcome:?}");
    let backend = lab.unix_backend();
    for state in lb.status(&backend, &server_name("web1")).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Up, "back in rotation on {}", state.instance);
    }
    lab.servers[1].release_held();
    assert_eq!(held.await.expect("join").expect("held request").0, 200, "the session was left alone");
    let bodies = traffic(&lab, 20).await;
    assert!(bodies.iter().any(|b| b == "web1"), "web1 takes traffic again: {bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_up_waits_for_passing_health_checks_not_for_leaving_maintenance() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let backend = lab.tcp_backend();
    let web0 = server_name("web0");
    lb.set_state(&backend, &web0, AdminState::Maint).await.expect("maint");
    lab.servers[0].set_healthy(false);
    lb.set_weight(&backend, &web0, Weight::ZERO).await.expect("weight 0");
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect("ready");
    let started = tokio::time::Instant::now();
    let outcome = lb.wait_up(&backend, &web0, Duration::from_millis(800)).await;
    let elapsed = started.elapsed();
    match outcome {
        Err(PortError::Timeout { ref operation, .. }) => assert!(operation.contains("DOWN"), "{operation}"),
        other => panic!("an unhealthy server must not count as UP: {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(2),
        "bounded: {elapsed:?}"
    );
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Down, "{state:?}");
    }
    lab.servers[0].set_healthy(true);
    lb.wait_up(&backend, &web0, Duration::from_secs(10)).await.expect("up once checks pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_algorithm_refuses_ramp_weights_as_a_typed_error_and_changes_nothing() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let backend = backend(STATIC_BACKEND, lab.instances.iter().map(|i| i.unix_endpoint()).collect());
    let web0 = server_name("web0");
    let refused = lb.set_weight(&backend, &web0, Weight::percent(50).unwrap()).await;
    match refused {
        Err(PortError::Rejected { ref reason, .. }) => {
            assert!(reason.contains("static balance algorithm"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.weight, 10, "{state:?}");
    }
    lb.set_weight(&backend, &web0, Weight::ZERO).await.expect("0% is allowed");
    lb.set_weight(&backend, &web0, Weight::FULL).await.expect("100% is allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_weight_that_rounds_to_zero_is_refused_instead_of_silently_emptying_the_server() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let backend = backend_first(&lab);
    let web0 = server_name("web0");
    // Configured weight 10: 5% of it would be 0.
    match lb.set_weight(&backend, &web0, Weight::percent(5).unwrap()).await {
        Err(PortError::Rejected { ref reason, .. }) => {
            assert!(
                reason.contains("has weight 10 in its configuration, and 5% of it rounds to 0"),
                "{reason}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.weight, 10, "nothing changed: {state:?}");
    }
    lb.set_weight(&backend, &web0, Weight::percent(10).unwrap()).await.expect("10% of 10 is 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_is_down_is_unreachable_and_nothing_changes_elsewhere() {
    let mut lab = Lab::start(2).await;
    let lb = lb();
    let both = lab.mixed_backend();
    let first_only = backend(BACKEND, vec![lab.instances[0].unix_endpoint()]);
    lab.instances[1].stop();
    let web0 = server_name("web0");
    let resolved = lb.resolve(&both, &ServerLookup::Name(web0.clone())).await;
    assert!(matches!(resolved, Err(ref e) if e.is_unreachable()), "{resolved:?}");
    let drained = lb.set_state(&both, &web0, AdminState::Drain).await;
    match drained {
        Err(PortError::Unreachable { ref target, .. }) => assert!(target.contains("127.0.0.1:"), "{target}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let state = &lb.status(&first_only, &web0).await.expect("status")[0];
    assert_eq!((state.status.clone(), state.weight), (ServerStatus::Up, 10), "instance 0 untouched");
    let waited = lb.wait_drained(&both, &web0, Duration::from_secs(1)).await;
    assert!(matches!(waited, Err(ref e) if e.is_unreachable()), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_instance_refuses_the_instances_already_changed_are_put_back() {
    let lab = Lab::start_with(2, vec![("operator.sock".into(), "operator".into())]).await;
    let lb = lb();
    // Instance 1 can be read but not changed: its socket is at level operator.
    let backend = backend(
        BACKEND,
        vec![lab.instances[0].unix_endpoint(), lab.instances[1].extra_endpoint("operator.sock")],
    );
    let web0 = server_name("web0");
    lb.set_weight(&backend, &web0, Weight::percent(50).unwrap())
        .await
        .map(|_| ())
        .expect_err("the operator-level instance refuses");
    let drained = lb.set_state(&backend, &web0, AdminState::Drain).await;
    match drained {
        Err(PortError::Unauthorized { ref reason, .. }) => {
            assert!(reason.contains("level admin"), "{reason}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let admin_only = backend_first(&lab);
    let state = &lb.status(&admin_only, &web0).await.expect("status")[0];
    assert_eq!((state.status.clone(), state.weight), (ServerStatus::Up, 10), "instance 0 was put back");

    // From maintenance, a refused `ready` leaves instance 0 in maintenance, as it was.
    lb.set_state(&admin_only, &web0, AdminState::Maint).await.expect("maint on instance 0");
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect_err("refused");
    assert_eq!(lb.status(&admin_only, &web0).await.expect("status")[0].status, ServerStatus::Maint);
}

fn backend_first(lab: &Lab) -> vesemir_core::ports::Backend {
    backend(BACKEND, vec![lab.instances[0].unix_endpoint()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_backend_and_server_are_clear_errors_naming_the_instance() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let unknown = lb.set_state(&lab.tcp_backend(), &server_name("web9"), AdminState::Drain).await;
    match unknown {
        Err(PortError::NotFound { ref what }) => {
            assert!(
                what.contains("server web9 in backend be_web does not exist on HAProxy 127.0.0.1:"),
                "{what}"
            )
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let no_backend = backend("be_nope", lab.instances.iter().map(|i| i.unix_endpoint()).collect());
    let unknown = lb.resolve(&no_backend, &ServerLookup::Address(lab.ip(0))).await;
    match unknown {
        Err(PortError::NotFound { ref what }) => {
            assert!(what.contains("backend be_nope does not exist"), "{what}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let empty = backend(BACKEND, vec![]);
    let none = lb.set_state(&empty, &server_name("web0"), AdminState::Drain).await;
    assert!(matches!(none, Err(PortError::NotFound { .. })), "{none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_unreachable_within_the_connect_timeout() {
    let lb = lb();
    let started = tokio::time::Instant::now();
    let outcome = lb.status(&backend(BACKEND, vec![dead_endpoint()]), &server_name("web0")).await;
    assert!(matches!(outcome, Err(ref e) if e.is_unreachable()), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_instance_can_be_named_by_dns_name() {
    let lab = Lab::start(2).await;
    let port = match lab.instances[0].tcp_endpoint() {
        vesemir_core::ports::LbEndpoint::Tcp { port, .. } => port,
        other => panic!("not tcp: {other}"),
    };
    let by_name =
        backend(BACKEND, vec![vesemir_core::ports::LbEndpoint::Tcp { address: "localhost".into(), port }]);
    let web1 =
        lb().resolve(&by_name, &ServerLookup::Address(lab.ip(1))).await.expect("resolve over localhost");
    assert_eq!(web1, server_name("web1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_known_by_dns_name_resolves_to_the_server_configured_with_that_name() {
    let lab = Lab::start(1).await;
    let backend = backend(STATIC_BACKEND, lab.instances.iter().map(|i| i.tcp_endpoint()).collect());
    let named =
        lb().resolve(&backend, &ServerLookup::Address("localhost".into())).await.expect("resolve by name");
    assert_eq!(named, server_name("named0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_server_reports_the_maintenance_it_inherits() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let web = lab.unix_backend();
    let tracking = backend(STATIC_BACKEND, lab.instances.iter().map(|i| i.unix_endpoint()).collect());
    let trk0 = server_name("trk0");
    lb.wait_up(&tracking, &trk0, Duration::from_secs(5))
        .await
        .expect("a tracking server is up with its tracked one");
    lb.set_state(&web, &server_name("web0"), AdminState::Maint).await.expect("maint");
    for state in lb.status(&tracking, &trk0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Maint, "MAINT (via ...) is maintenance: {state:?}");
        assert_eq!(state.admin, AdminState::Maint, "the inherited maintenance bit counts: {state:?}");
        assert!(!state.in_rotation(), "{state:?}");
    }
    let servers = lb.servers(&tracking).await.expect("servers");
    let seen = servers.iter().find(|s| s.name == trk0).expect("trk0 listed");
    assert!(seen.instances.iter().all(|s| s.admin == AdminState::Maint), "{seen:?}");
    assert_eq!(seen.instances.len(), 2);
    let outcome = lb.wait_up(&tracking, &trk0, Duration::from_millis(300)).await;
    match outcome {
        Err(PortError::Timeout { ref operation, .. }) => {
            assert!(operation.contains("MAINT (via be_web/web0)"), "{operation}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    lb.set_state(&web, &server_name("web0"), AdminState::Ready).await.expect("ready");
    lb.wait_up(&tracking, &trk0, Duration::from_secs(10)).await.expect("back up with web0");
}

/// Sends `count` requests with `x-target: web0` (the backend's `use-server` rule: a request
/// pinned to web0, as persistence pins one) and answers how many web0 served.
async fn pinned_to_web0(lab: &Lab, count: usize) -> usize {
    let mut served = 0;
    for i in 0..count {
        let frontend = lab.instances[i % lab.instances.len()].frontend();
        let (code, body) = get(frontend, "/", Some("web0")).await.expect("request through haproxy");
        assert_eq!(code, 200, "request {i} failed: {body}");
        served += usize::from(body == "web0");
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_down_a_drained_server_stays_down_until_checks_made_after_pass() {
    // checks_while_out: the server is drained (not in maintenance) during its changeset, so
    // its checks keep running; marked DOWN after the changeset, only new checks bring it back.
    let lab = Lab::start(2).await;
    let lb = lb();
    let backend = lab.mixed_backend();
    let web0 = server_name("web0");
    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    // A drained server still takes pinned requests (persistence, `use-server`): why the
    // option is only for backends without persistence.
    assert_eq!(pinned_to_web0(&lab, 4).await, 4, "a drained, UP server serves requests pinned to it");

    // The changeset: the app is not ready yet when the server is marked DOWN.
    lab.servers[0].set_healthy(false);
    lb.mark_down(&backend, &web0).await.expect("mark down");
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Down, "DOWN at once on every box: {state:?}");
    }
    assert_eq!(pinned_to_web0(&lab, 4).await, 0, "a DOWN server gets no request, pinned or not");

    // The way back of the rollout: weight 0, ready. Leaving drain (unlike leaving maintenance)
    // keeps the health HAProxy's checks gave it: still DOWN, no request.
    lb.set_weight(&backend, &web0, Weight::ZERO).await.expect("weight 0");
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect("ready");
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Down, "ready does not make it UP: {state:?}");
    }
    match lb.wait_up(&backend, &web0, Duration::from_millis(500)).await {
        Err(PortError::Timeout { ref operation, .. }) => assert!(operation.contains("DOWN"), "{operation}"),
        other => panic!("no check passed since the mark: not UP ({other:?})"),
    }
    assert_eq!(pinned_to_web0(&lab, 4).await, 0);

    // The app is ready: the checks (every 100 ms while DOWN here) bring it UP.
    lab.servers[0].set_healthy(true);
    let started = tokio::time::Instant::now();
    lb.wait_up(&backend, &web0, Duration::from_secs(5)).await.expect("UP once new checks pass");
    // rise 2 + fall 2: three passing checks to plain UP, at 100 ms each.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    lb.set_weight(&backend, &web0, Weight::FULL).await.expect("100%");
    assert_eq!(pinned_to_web0(&lab, 4).await, 4);
}

/// Waits until every box reports `web0` with `status` (its checks at work), at most 5 s.
async fn wait_status(lb: &HaproxyLoadBalancer, backend: &vesemir_core::ports::Backend, status: ServerStatus) {
    let web0 = server_name("web0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let states = lb.status(backend, &web0).await.expect("status");
        if states.iter().all(|s| s.status == status) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {status:?} on every box: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_whose_checks_saw_the_restart_is_not_marked_down_again() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let backend = lab.mixed_backend();
    let web0 = server_name("web0");
    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    lb.wait_drained(&backend, &web0, Duration::from_secs(2)).await.expect("drained");
    // The changeset restarts the app: both boxes' checks see it DOWN, then UP again (drained).
    lab.servers[0].set_healthy(false);
    wait_status(&lb, &backend, ServerStatus::Down).await;
    lab.servers[0].set_healthy(true);
    wait_status(&lb, &backend, ServerStatus::Drain).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // to full health: plain UP later

    lb.mark_down(&backend, &web0).await.expect("mark down");
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Drain, "checks after the restart passed: left UP: {state:?}");
    }
    lb.set_weight(&backend, &web0, Weight::ZERO).await.expect("weight 0");
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect("ready");
    let started = tokio::time::Instant::now();
    lb.wait_up(&backend, &web0, Duration::from_secs(5)).await.expect("UP");
    assert!(
        started.elapsed() < Duration::from_millis(90),
        "no new check to wait for: {:?}",
        started.elapsed()
    );

    // The next changeset is too quick for the checks to see: marked DOWN as before. The DOWN
    // seen during the last one counts no more (the drain forgot it).
    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    lb.wait_drained(&backend, &web0, Duration::from_secs(2)).await.expect("drained");
    lb.mark_down(&backend, &web0).await.expect("mark down");
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Down, "marked DOWN on every box: {state:?}");
    }
    // A mark is used once; without wait_drained there is none: marked DOWN again.
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect("ready");
    lb.wait_up(&backend, &web0, Duration::from_secs(5)).await.expect("UP after new checks");
    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    lb.mark_down(&backend, &web0).await.expect("mark down");
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(state.status, ServerStatus::Down, "no mark: marked DOWN: {state:?}");
    }
    lb.set_state(&backend, &web0, AdminState::Ready).await.expect("ready");
    lb.wait_up(&backend, &web0, Duration::from_secs(5)).await.expect("UP after new checks");
    lb.set_weight(&backend, &web0, Weight::FULL).await.expect("100%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_down_a_server_without_checks_is_refused_and_changes_nothing() {
    let lab = Lab::start(2).await;
    let lb = lb();
    let backend = backend(STATIC_BACKEND, lab.instances.iter().map(|i| i.unix_endpoint()).collect());
    let web0 = server_name("web0");
    match lb.mark_down(&backend, &web0).await {
        Err(PortError::Rejected { ref reason, .. }) => {
            assert!(reason.contains("no running health check"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    for state in lb.status(&backend, &web0).await.expect("status") {
        assert_eq!(
            (state.status.clone(), state.check.clone()),
            (ServerStatus::Up, None),
            "untouched: {state:?}"
        );
    }
    // In maintenance the checks are paused: refused too.
    let checked = lab.tcp_backend();
    lb.set_state(&checked, &web0, AdminState::Maint).await.expect("maint");
    assert!(matches!(lb.mark_down(&checked, &web0).await, Err(PortError::Rejected { .. })));
    lb.set_state(&checked, &web0, AdminState::Ready).await.expect("ready");
}
