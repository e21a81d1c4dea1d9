//! The main stories of a rollout, driven end to end through the async driver over the fakes,
//! on tokio's paused clock.

mod support;

use std::time::Duration;

use support::{check, check_with, fleet, host, server, Fleet, FleetRequests};
use vesemir_core::event::{DeploymentOutcome, EventKind, HostOutcome, Phase, Rotation};
use vesemir_core::ports::{AdminState, Weight};
use vesemir_core::render;
use vesemir_core::Control;

#[tokio::test(start_paused = true)]
async fn clean_deploy_updates_every_host_two_at_a_time() {
    let fleet = fleet(5);
    let out = check(&fleet, fleet.request("[strategy]\nconcurrency = 2\nwindow = \"batches\"\n")).await;

    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert_eq!(out.report.totals.succeeded, 5);
    assert!(out.report.hosts.iter().all(|h| h.rotation == Rotation::InRotation));
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 2, "{}", out.log);
    assert!(fleet.lb.out_of_rotation().is_empty());
    assert!(fleet.executor.connected().is_empty(), "every session closed");
    for i in 1..=5 {
        let commands: Vec<String> = fleet.executor.commands(&host(i)).into_iter().map(|c| c.script).collect();
        assert_eq!(commands, ["install-shop '2.0.0'", "check-shop"]);
        let s = fleet.lb.server(&server(i)).expect("server");
        assert_eq!((s.admin, s.weight), (AdminState::Ready, Weight::FULL));
    }
    assert!(out.log.contains("batch 3: web-05"), "{}", out.log);
    assert!(out.log.contains("web-01: step 1 (install)"), "{}", out.log);
    let seqs: Vec<u64> = out.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=out.events.len() as u64).collect::<Vec<_>>(), "events numbered without gaps");
}

/// When each host started and ended, in ms since the deployment started.
fn span(out: &support::Outcome, name: &str) -> (u128, u128) {
    let h = out.host(name);
    let ms = |d: Option<Duration>| d.expect("started and ended").as_millis();
    (ms(h.started), ms(h.finished))
}

#[tokio::test(start_paused = true)]
async fn a_sliding_window_starts_the_next_host_as_soon_as_one_ends() {
    // web-01's install hangs until its 1m timeout; the other slot serves web-02..05 meanwhile.
    let fleet = fleet(5);
    fleet.executor.hang_command(&host(1), "install-shop");
    let out = check(&fleet, fleet.request("[strategy]\nconcurrency = 2\nmax_failures = 1\n")).await;

    assert_eq!(out.report.outcome, Some(DeploymentOutcome::CompletedWithFailures), "{}", out.log);
    assert_eq!(out.report.totals.succeeded, 4, "{}", out.log);
    let (_, web01_end) = span(&out, "web-01");
    for name in ["web-03", "web-04", "web-05"] {
        let (start, end) = span(&out, name);
        assert!(start < web01_end && end < web01_end, "{name} ran in the free slot: {}", out.log);
    }
    // Never more than 2 out, web-01 (failed, out of rotation) included.
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 2, "{}", out.log);
    assert_eq!(fleet.lb.out_of_rotation().len(), 1);

    // The same with strict batches: web-03 waits for web-01's batch to end.
    let fleet = support::fleet(5);
    fleet.executor.hang_command(&host(1), "install-shop");
    let batches = "[strategy]\nconcurrency = 2\nmax_failures = 1\nwindow = \"batches\"\n";
    let out = check(&fleet, fleet.request(batches)).await;
    let (_, web01_end) = span(&out, "web-01");
    let (web03_start, _) = span(&out, "web-03");
    assert!(web03_start >= web01_end, "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn a_sliding_window_keeps_the_canary_gate() {
    let fleet = fleet(6);
    let out =
        check(&fleet, fleet.request("[strategy]\nconcurrency = 3\ncanary = { hosts = 1, hold = \"30s\" }\n"))
            .await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let (_, canary_end) = span(&out, "web-01");
    for name in ["web-02", "web-03", "web-04", "web-05", "web-06"] {
        assert!(span(&out, name).0 >= canary_end + 30_000, "{name} waited for the hold: {}", out.log);
    }
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 3, "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn a_pause_between_batches_needs_strict_batches() {
    let fleet = fleet(2);
    let text = fleet.request_toml("[strategy]\nwindow = \"sliding\"\npause_between_batches = \"5s\"\n");
    let err = vesemir_core::request::DeploymentRequest::from_toml(
        &text,
        &vesemir_core::request::RequestPolicy::permissive(),
    )
    .expect_err("refused");
    assert!(
        err.to_string().contains("strategy.pause_between_batches: applies between strict batches"),
        "{err}"
    );
    let implied = fleet.request("[strategy]\npause_between_batches = \"5s\"\n");
    assert_eq!(implied.strategy.window, vesemir_core::request::Window::Batches);
    assert_eq!(fleet.request("").strategy.window, vesemir_core::request::Window::Sliding);
    let text = fleet.request_toml("[strategy]\nwindow = \"rolling\"\n");
    let err = vesemir_core::request::DeploymentRequest::from_toml(
        &text,
        &vesemir_core::request::RequestPolicy::permissive(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("strategy.window: is \"rolling\""), "{err}");
}

const HTTP_HEALTH: &str = "[changeset]\nsteps = [{ name = \"install\", run = \"install-shop {version}\", timeout = \"1m\" }]\n[changeset.health]\nload_balancer_up = false\nhttp = { url = \"http://{address}:8080/health\", interval = \"20ms\", timeout = \"2s\" }\n";

#[tokio::test(start_paused = true)]
async fn the_http_health_check_is_polled_from_the_orchestrator_until_it_passes() {
    let fleet = fleet(3);
    let probe = vesemir_core::fake::FakeHealthProbe::new();
    let url = |i: usize| format!("http://{}:8080/health", vesemir_core::fake::FakeFleet::address(i));
    probe.fail_first(&url(2), 10);
    probe.fail_first(&url(3), 1000);
    let config = vesemir_core::DriverConfig {
        health_probe: Some(std::sync::Arc::new(probe.clone())),
        ..vesemir_core::DriverConfig::default()
    };
    let request = fleet.request(&format!("[strategy]\nconcurrency = 3\nmax_failures = 1\n{HTTP_HEALTH}"));
    let ports = fleet.ports();
    let prepared =
        vesemir_core::prepare(std::sync::Arc::new(request), &ports, &config).await.expect("prepares");
    let sink = vesemir_core::event::MemorySink::new();
    let report = vesemir_core::run(&prepared, &ports, &sink, &Control::new(), &config).await;

    let outcomes: Vec<_> = report.hosts.iter().map(|h| h.outcome).collect();
    use HostOutcome::*;
    assert_eq!(outcomes, [Some(Succeeded), Some(Succeeded), Some(Failed)]);
    let checks = probe.checks();
    assert_eq!(checks.iter().filter(|c| c.url == url(2)).count(), 11, "10 failed, then passed");
    // 2s at one check every 20ms: about 100 checks, then the host fails, out of rotation.
    let third = checks.iter().filter(|c| c.url == url(3)).count();
    assert!((90..=101).contains(&third), "{third} checks in 2s");
    let failed = &report.hosts[2];
    assert_eq!(failed.rotation, Rotation::OutOfRotation);
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("HTTP health check did not pass within 2s ("), "{error}");
    assert!(error.ends_with("attempts; last: status 503)"), "{error}");
    // One phase event per host for the whole poll, not one per request.
    let phases = sink
        .events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::HostPhase { phase: Phase::HealthCheck { .. }, .. }))
        .count();
    assert_eq!(phases, 3);

    // A front end without a probe refuses such a request before anything changes.
    let request = fleet.request(HTTP_HEALTH);
    let refused =
        vesemir_core::prepare(std::sync::Arc::new(request), &ports, &vesemir_core::DriverConfig::default())
            .await
            .expect_err("no probe");
    assert!(refused
        .to_string()
        .starts_with("changeset.health.http: this front end has no HTTP health probe"));
}

#[tokio::test(start_paused = true)]
async fn http_health_fields_are_checked_by_name() {
    let fleet = fleet(1);
    let bad = "[changeset]\nsteps = [{ name = \"install\", run = \"x\" }]\n[changeset.health]\nhttp = { url = \"ftp://{address}/\", status = 42, interval = \"0s\", timeout = \"soon\", body_contains = \"\" }\n";
    let text = fleet.request_toml(bad);
    let err = vesemir_core::request::DeploymentRequest::from_toml(
        &text,
        &vesemir_core::request::RequestPolicy::permissive(),
    )
    .expect_err("refused")
    .to_string();
    for field in [
        "changeset.health.http.url: \"ftp://{address}/\" must start with http:// or https://",
        "changeset.health.http.status: 42 is not an HTTP status",
        "changeset.health.http.interval: must be at least 1ms",
        "changeset.health.http.timeout: \"soon\" is not a duration",
        "changeset.health.http.body_contains: is empty",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }
}

const STAGED: &str = "[changeset]\nsteps = [{ name = \"download\", run = \"fetch-shop {version}\", timeout = \"1m\", stage = true }, { name = \"switch\", run = \"switch-shop {version}\", timeout = \"1m\" }]\n[changeset.health]\ncommand = \"check-shop\"\n";

#[tokio::test(start_paused = true)]
async fn stage_steps_run_in_rotation_before_the_drain_and_only_the_rest_out_of_it() {
    let fleet = fleet(3);
    // web-02's download fails: it is never taken out.
    fleet.executor.fail_command(&host(2), "fetch-shop", 7);
    let out =
        check(&fleet, fleet.request(&format!("[strategy]\nconcurrency = 1\nmax_failures = 1\n{STAGED}")))
            .await;

    assert_eq!(out.report.outcome, Some(DeploymentOutcome::CompletedWithFailures), "{}", out.log);
    let commands: Vec<String> = fleet.executor.commands(&host(1)).into_iter().map(|c| c.script).collect();
    assert_eq!(commands, ["fetch-shop '2.0.0'", "switch-shop '2.0.0'", "check-shop"]);
    // The download ran before web-01's drain: its phase comes first in the log.
    let download = out.log.find("web-01: step 1 (download)").expect("download phase");
    let drain = out.log.find("web-01: draining").expect("drain phase");
    assert!(download < drain, "{}", out.log);
    let failed = out.host("web-02");
    assert_eq!(failed.phase, Phase::Step { number: 1, name: "download".into() });
    assert_eq!(failed.rotation, Rotation::InRotation, "never taken out");
    assert!(fleet.lb.rotation_log().changes.iter().all(|(s, _, _)| *s != server(2)), "web-02 untouched");
    // Each host's time out of rotation is on its HostFinished event: none for web-02.
    let out_ms: Vec<Option<u64>> = out
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::HostFinished { out_of_rotation_ms, .. } => Some(*out_of_rotation_ms),
            _ => None,
        })
        .collect();
    assert_eq!(out_ms.len(), 3);
    assert_eq!(out_ms.iter().filter(|o| o.is_none()).count(), 1, "{out_ms:?}");
    assert!(out.log.contains("web-01: deployed, in rotation (out of rotation "), "{}", out.log);

    // Stage steps are listed first.
    let late = "[changeset]\nsteps = [{ name = \"switch\", run = \"x\" }, { name = \"download\", run = \"y\", stage = true }]\n";
    let err = vesemir_core::request::DeploymentRequest::from_toml(
        &fleet.request_toml(late),
        &vesemir_core::request::RequestPolicy::permissive(),
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("changeset.steps[1].stage: comes after steps[0], which is not a stage step"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn ramp_holds_each_weight_and_waits_for_up_at_weight_zero() {
    let fleet = fleet(1);
    let extra = "[load_balancer]\nbackend = \"be_web\"\ninstances = [{ address = \"127.0.0.1\", port = 9001 }, { address = \"127.0.0.1\", port = 9002 }]\nramp = [{ weight = \"10%\", hold = \"30s\" }, { weight = \"50%\", hold = \"1m\" }]\n";
    let started = tokio::time::Instant::now();
    let out = check(&fleet, fleet.request(extra)).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert!(started.elapsed() >= Duration::from_secs(90), "holds of 30s and 1m were waited");
    let weights: Vec<(AdminState, Weight)> =
        fleet.lb.rotation_log().changes.into_iter().map(|(_, a, w)| (a, w)).collect();
    let pct = |p| Weight::percent(p).expect("weight");
    assert_eq!(
        weights,
        [
            (AdminState::Drain, Weight::FULL),
            (AdminState::Maint, Weight::FULL),
            (AdminState::Maint, Weight::ZERO),
            (AdminState::Ready, Weight::ZERO),
            (AdminState::Ready, pct(10)),
            (AdminState::Ready, pct(50)),
            (AdminState::Ready, Weight::FULL),
        ]
    );
    assert!(out.log.contains("web-01: holding at 10%"), "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn failures_beyond_max_failures_stop_the_rollout() {
    let fleet = fleet(6);
    fleet.executor.fail_command(&host(2), "install-shop", 3);
    fleet.executor.fail_command(&host(3), "install-shop", 4);
    let out = check(&fleet, fleet.request("[strategy]\nconcurrency = 3\nmax_failures = 1\n")).await;

    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Stopped), "{}", out.log);
    let outcomes: Vec<_> = out.report.hosts.iter().map(|h| h.outcome).collect();
    use HostOutcome::*;
    assert_eq!(
        outcomes,
        [Some(Succeeded), Some(Failed), Some(Failed), Some(Skipped), Some(Skipped), Some(Skipped)]
    );
    let failed = out.host("web-02");
    assert_eq!(failed.phase, Phase::Step { number: 1, name: "install".into() });
    assert_eq!(failed.error.as_deref(), Some("the command ended with exit code 3"));
    assert_eq!(failed.rotation, Rotation::OutOfRotation);
    assert_eq!(failed.last_output[0].text, "injected failure: exit 3");
    assert!(fleet.executor.commands(&host(4)).is_empty(), "no host started after the threshold");
    let summary = render::summary(&out.report);
    assert!(summary.contains("web-02 (127.0.1.2) FAILED during step 1 (install)"), "{summary}");
    assert!(summary.contains("Out of rotation now: web-02 (OUT OF ROTATION), web-03"), "{summary}");
}

#[tokio::test(start_paused = true)]
async fn failed_hosts_keep_their_slot_so_capacity_never_drops_below_the_limit() {
    let fleet = fleet(4);
    fleet.executor.fail_command(&host(1), "install-shop", 1);
    let out = check(&fleet, fleet.request("[strategy]\nconcurrency = 1\nmax_failures = 3\n")).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Stopped), "{}", out.log);
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 1);
    assert!(out.log.contains("uses all of the concurrency (1)"), "{}", out.log);
    assert!(out.log.contains("warning: max_failures (3) is not below concurrency (1)"), "{}", out.log);
    assert_eq!(out.report.totals.skipped, 3);
}

#[tokio::test(start_paused = true)]
async fn unreachable_host_is_reported_and_never_leaves_rotation() {
    let fleet = fleet(3);
    fleet.executor.set_unreachable(&host(2));
    let out = check(&fleet, fleet.request("[strategy]\nmax_failures = 1\n")).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::CompletedWithFailures), "{}", out.log);
    let h = out.host("web-02");
    assert_eq!(h.outcome, Some(HostOutcome::Unreachable));
    assert_eq!(h.phase, Phase::Connecting);
    assert_eq!(h.rotation, Rotation::InRotation);
    assert!(h.error.as_deref().is_some_and(|e| e.contains("connection refused")), "{:?}", h.error);
    assert!(fleet.lb.rotation_log().changes.iter().all(|(s, _, _)| s != &server(2)), "never drained");
    assert_eq!(out.report.totals.succeeded, 2);
}

#[tokio::test(start_paused = true)]
async fn health_gate_that_never_passes_fails_the_host_out_of_rotation() {
    let fleet = fleet(2);
    fleet.executor.fail_command(&host(1), "check-shop", 7);
    let out = check(&fleet, fleet.request("[strategy]\nconcurrency = 2\nmax_failures = 1\n")).await;
    let h = out.host("web-01");
    assert_eq!(h.outcome, Some(HostOutcome::Failed), "{}", out.log);
    assert_eq!(h.rotation, Rotation::OutOfRotation);
    let error = h.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("health check did not pass within 10s (10 attempts; last: exit code 7)"),
        "{error}"
    );
    assert_eq!(fleet.lb.server(&server(1)).map(|s| s.admin), Some(AdminState::Maint));
    assert_eq!(out.host("web-02").outcome, Some(HostOutcome::Succeeded));
}

#[tokio::test(start_paused = true)]
async fn load_balancer_never_reporting_up_unwinds_the_host() {
    let fleet = fleet(1);
    // Its checks start failing once it is out of rotation and its steps run (a server down
    // before the deploy is refused: see `a_server_down_before_the_deploy_is_refused`).
    fleet.executor.set_latency(Duration::from_secs(10));
    let lb = fleet.lb.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        lb.set_healthy(&server(1), false);
    });
    let out = check(&fleet, fleet.request("")).await;
    let h = out.host("web-01");
    assert_eq!(h.outcome, Some(HostOutcome::Failed), "{}", out.log);
    assert_eq!(h.phase, Phase::WaitingForUp);
    assert_eq!(h.rotation, Rotation::OutOfRotation);
    assert_eq!(fleet.lb.server(&server(1)).map(|s| s.admin), Some(AdminState::Maint));
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_with_fail_policy_puts_the_host_back_untouched() {
    let fleet = fleet(2);
    fleet.lb.set_sessions(&server(1), 3, None);
    let out = check(&fleet, fleet.request("[strategy]\nmax_failures = 1\n")).await;
    let h = out.host("web-01");
    assert_eq!(h.outcome, Some(HostOutcome::Failed), "{}", out.log);
    assert_eq!(h.phase, Phase::WaitingForDrain);
    assert_eq!(h.rotation, Rotation::InRotation);
    assert!(h.error.as_deref().is_some_and(|e| e.contains("put back into rotation")), "{:?}", h.error);
    assert!(fleet.executor.commands(&host(1)).is_empty(), "no step ran on it");
    assert_eq!(fleet.lb.server(&server(1)).map(|s| s.admin), Some(AdminState::Ready));
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_with_force_policy_closes_sessions_and_deploys() {
    let fleet = fleet(1);
    fleet.lb.set_sessions(&server(1), 3, None);
    let extra = "[load_balancer]\nbackend = \"be_web\"\ninstances = [{ address = \"127.0.0.1\", port = 9001 }, { address = \"127.0.0.1\", port = 9002 }]\ndrain_timeout = \"5s\"\non_drain_timeout = \"force\"\n";
    let out = check(&fleet, fleet.request(extra)).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert!(out.log.contains("closing the remaining sessions"), "{}", out.log);
    assert_eq!(fleet.lb.server(&server(1)).map(|s| s.sessions), Some(0));
}

#[tokio::test(start_paused = true)]
async fn slow_drain_within_the_timeout_just_waits() {
    let fleet = fleet(1);
    fleet.lb.set_sessions(&server(1), 2, Some(Duration::from_secs(20)));
    let out = check(&fleet, fleet.request("")).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn load_balancer_instance_down_before_the_deploy_fails_the_preparation() {
    let fleet = fleet(2);
    fleet.lb.set_instance_down(&support::instances()[1], true);
    let request = std::sync::Arc::new(fleet.request(""));
    let error = vesemir_core::prepare(request, &fleet.ports(), &Default::default())
        .await
        .expect_err("an instance is down");
    assert!(error.is_unreachable());
    assert!(error.to_string().contains("load balancer 127.0.0.1:9002 is unreachable"), "{error}");
    assert!(fleet.lb.rotation_log().changes.is_empty(), "nothing changed");
}

#[tokio::test(start_paused = true)]
async fn load_balancer_instance_down_mid_deploy_fails_hosts_without_taking_them_out() {
    let fleet = fleet(3);
    let ports = fleet.ports();
    let request = std::sync::Arc::new(fleet.request("[strategy]\nmax_failures = 0\n"));
    let prepared = vesemir_core::prepare(request, &ports, &Default::default()).await.expect("prepares");
    fleet.lb.set_instance_down(&support::instances()[0], true);
    let sink = vesemir_core::event::MemorySink::new();
    let report = vesemir_core::run(&prepared, &ports, &sink, &Control::new(), &Default::default()).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Stopped));
    let first = &report.hosts[0];
    // The backend is read before each take-out: that read fails, so the host is never drained.
    assert_eq!((first.outcome, first.phase.clone()), (Some(HostOutcome::Failed), Phase::CheckingBudget));
    assert_eq!(first.rotation, Rotation::InRotation);
    assert_eq!(report.totals.skipped, 2);
}

#[tokio::test(start_paused = true)]
async fn canary_waits_for_confirmation() {
    let fleet = fleet(4);
    let control = Control::new();
    let confirmer = control.clone();
    let request = fleet.request("[strategy]\nconcurrency = 2\ncanary = { hosts = 1, confirm = true }\n");
    let lb = fleet.lb.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(lb.rotation_log().changes.iter().filter(|(_, a, _)| *a == AdminState::Drain).count(), 1);
        confirmer.confirm();
    });
    let out = check_with(&fleet, request, control).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert!(out.log.contains("batch 1: web-01\n"), "{}", out.log);
    assert!(out.log.contains("canary deployed: waiting for confirmation"), "{}", out.log);
    let batch2 = out.events.iter().find(|e| matches!(&e.kind, EventKind::BatchStarted { batch: 2, .. }));
    assert!(batch2.is_some_and(|e| e.elapsed >= Duration::from_secs(600)), "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn canary_hold_then_the_rest() {
    let fleet = fleet(3);
    let out =
        check(&fleet, fleet.request("[strategy]\nconcurrency = 2\ncanary = { hosts = 1, hold = \"5m\" }\n"))
            .await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert!(out.log.contains("watching it for 5m"), "{}", out.log);
    assert!(out.report.elapsed >= Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn cancel_lets_hosts_in_flight_finish_and_starts_no_more() {
    let fleet = fleet(6);
    fleet.executor.set_latency(Duration::from_secs(10));
    let control = Control::new();
    let canceller = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        canceller.cancel();
    });
    let out = check_with(&fleet, fleet.request("[strategy]\nconcurrency = 2\n"), control).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Cancelled), "{}", out.log);
    assert_eq!(out.report.totals.succeeded, 2, "{}", out.log);
    assert_eq!(out.report.totals.cancelled, 4);
    assert!(out.report.hosts.iter().all(|h| h.rotation == Rotation::InRotation));
    assert!(fleet.executor.commands(&host(3)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn abort_stops_at_once_and_names_hosts_that_may_be_out_of_rotation() {
    let fleet = fleet(4);
    fleet.executor.set_latency(Duration::from_secs(10));
    let control = Control::new();
    let aborter = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        aborter.cancel();
        aborter.abort();
    });
    let out = check_with(&fleet, fleet.request("[strategy]\nconcurrency = 2\n"), control).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Cancelled), "{}", out.log);
    assert!(out.report.elapsed < Duration::from_secs(10), "did not wait for the steps");
    let out_now: Vec<&str> = out.report.out_of_rotation().map(|h| h.name.as_str()).collect();
    assert_eq!(out_now, ["web-01", "web-02"], "{}", out.log);
    assert_eq!(out.report.totals.cancelled, 4);
}

#[tokio::test(start_paused = true)]
async fn hostile_variables_reach_the_command_as_one_quoted_word() {
    let fleet = fleet(1);
    let extra = r#"[changeset]
steps = [{ name = "announce", run = "echo {note}" }]
[changeset.health]
command = "true"
[variables]
note = "$(rm -rf /); `id` 'quoted' \n next"
"#;
    let out = check(&fleet, fleet.request(extra)).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let script = &fleet.executor.commands(&host(1))[0].script;
    assert_eq!(script, "echo '$(rm -rf /); `id` '\\''quoted'\\'' \n next'");
}

fn maint(fleet: Fleet, i: usize) -> Fleet {
    use vesemir_core::ports::Operational;
    fleet.starting(i, None, AdminState::Maint, Operational::Down, 100).expect("starts in maintenance")
}

async fn prepare_error(fleet: &Fleet, extra: &str) -> vesemir_core::PrepareError {
    let request = std::sync::Arc::new(fleet.request(extra));
    vesemir_core::prepare(request, &fleet.ports(), &Default::default()).await.expect_err("refused")
}

#[tokio::test(start_paused = true)]
async fn a_server_in_maintenance_is_refused_by_default_naming_its_state_on_each_box() {
    let fleet = maint(fleet(4), 3);
    let error = prepare_error(&fleet, "[strategy]\nconcurrency = 2\n").await;
    assert!(matches!(error, vesemir_core::PrepareError::NotInRotation { .. }), "{error:?}");
    assert!(!error.is_unreachable());
    let text = error.to_string();
    assert!(
        text.contains("web-03 (host web-03): MAINT down, weight 100/100 on 127.0.0.1:9001; MAINT down, weight 100/100 on 127.0.0.1:9002"),
        "{text}"
    );
    assert!(text.contains("servers_not_in_rotation = \"skip\""), "{text}");
    assert!(fleet.lb.rotation_log().changes.is_empty(), "nothing changed");
}

#[tokio::test(start_paused = true)]
async fn a_server_down_before_the_deploy_is_refused() {
    let fleet = fleet(3);
    fleet.lb.set_healthy(&server(2), false);
    let error = prepare_error(&fleet, "").await;
    assert!(error.to_string().contains("web-02 (host web-02): READY down"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn skip_leaves_the_server_as_found_and_counts_it_against_the_budget() {
    let fleet = maint(fleet(5), 3);
    let extra = "[strategy]\nconcurrency = 2\n[load_balancer]\nbackend = \"be_web\"\ninstances = [{ address = \"127.0.0.1\", port = 9001 }, { address = \"127.0.0.1\", port = 9002 }]\nservers_not_in_rotation = \"skip\"\n";
    let out = check(&fleet, fleet.request(extra)).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let skipped = out.host("web-03");
    assert_eq!(skipped.outcome, Some(HostOutcome::Skipped));
    assert_eq!(skipped.rotation, Rotation::OutOfRotation);
    assert!(
        skipped.error.as_deref().is_some_and(|e| e.contains("MAINT down, weight 100/100")),
        "{:?}",
        skipped.error
    );
    assert!(fleet.lb.rotation_log().changes.iter().all(|(s, _, _)| s != &server(3)), "never touched");
    assert!(fleet.executor.commands(&host(3)).is_empty());
    assert_eq!(fleet.lb.server(&server(3)).map(|s| s.admin), Some(AdminState::Maint));
    assert_eq!(out.report.totals.succeeded, 4);
    // web-03 out all along: with concurrency 2, one host at a time leaves rotation.
    assert_eq!(fleet.lb.rotation_log().max_out_of_rotation, 1, "{}", out.log);
    assert!(out.log.contains("waiting: 2 servers of the backend are out of rotation"), "{}", out.log);
}

#[tokio::test(start_paused = true)]
async fn include_deploys_and_returns_each_server_to_its_own_state_and_weight() {
    use vesemir_core::ports::Operational;
    let instances = support::instances();
    let fleet = fleet(3)
        .starting(2, None, AdminState::Maint, Operational::Up, 37)
        .and_then(|f| f.starting(3, Some(&instances[0]), AdminState::Ready, Operational::Up, 17))
        .and_then(|f| f.starting(3, Some(&instances[1]), AdminState::Drain, Operational::Up, 200))
        .expect("fleet");
    let extra = "[strategy]\nconcurrency = 3\n[load_balancer]\nbackend = \"be_web\"\ninstances = [{ address = \"127.0.0.1\", port = 9001 }, { address = \"127.0.0.1\", port = 9002 }]\nservers_not_in_rotation = \"include\"\nramp = [{ weight = \"50%\", hold = \"10s\" }]\n";
    let out = check(&fleet, fleet.request(extra)).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    for i in 1..=3 {
        assert_eq!(fleet.executor.commands(&host(i)).len(), 2, "web-0{i} deployed");
    }
    let on = |i: usize, b: usize| fleet.lb.server_on(&instances[b], &server(i)).expect("server");
    assert_eq!((on(2, 0).admin, on(2, 0).effective_weight()), (AdminState::Maint, 37));
    assert_eq!((on(2, 1).admin, on(2, 1).effective_weight()), (AdminState::Maint, 37));
    assert_eq!((on(3, 0).admin, on(3, 0).effective_weight()), (AdminState::Ready, 17));
    assert_eq!((on(3, 1).admin, on(3, 1).effective_weight()), (AdminState::Drain, 200));
    assert_eq!((on(1, 0).admin, on(1, 0).effective_weight()), (AdminState::Ready, 100));
    assert_eq!(out.host("web-02").rotation, Rotation::OutOfRotation, "back out, as found");
    // Neither was put into rotation on a box where it was out, not even for a moment.
    for (s, admin, weight) in fleet.lb.rotation_log().changes {
        if s == server(2) {
            assert!(admin != AdminState::Ready || weight == Weight::ZERO, "{admin:?} {weight}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn ramp_steps_are_percentages_of_each_servers_own_weight() {
    use vesemir_core::ports::Operational;
    let fleet = fleet(1).starting(1, None, AdminState::Ready, Operational::Up, 3).expect("fleet");
    let extra = "[load_balancer]\nbackend = \"be_web\"\ninstances = [{ address = \"127.0.0.1\", port = 9001 }, { address = \"127.0.0.1\", port = 9002 }]\nramp = [{ weight = \"10%\", hold = \"1s\" }, { weight = \"50%\", hold = \"1s\" }]\n";
    let lb = fleet.lb.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watcher = seen.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(s) = lb.server(&server(1)) {
                let mut seen = watcher.lock().expect("lock");
                if seen.last() != Some(&(s.admin, s.effective_weight())) {
                    seen.push((s.admin, s.effective_weight()));
                }
            }
        }
    });
    let out = check(&fleet, fleet.request(extra)).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    let seen = seen.lock().expect("lock").clone();
    // 10% of 3 rounds to 0: a step never takes a serving server to no traffic, so it is 1.
    assert!(seen.contains(&(AdminState::Ready, 1)), "{seen:?}");
    assert!(seen.iter().all(|(_, w)| *w <= 3), "{seen:?}");
    let end = fleet.lb.server(&server(1)).expect("server");
    assert_eq!(
        (end.admin, end.effective_weight()),
        (AdminState::Ready, 3),
        "back at its own weight 3, not 100"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backend_already_at_its_budget_is_refused_naming_the_servers_out() {
    let fleet = maint(fleet(4), 4);
    let extra = "[strategy]\nconcurrency = 1\n[targets]\nhosts = [{ name = \"web-01\", address = \"127.0.1.1\" }, { name = \"web-02\", address = \"127.0.1.2\" }]\n";
    let request = only_hosts(&fleet, extra);
    let error = vesemir_core::prepare(std::sync::Arc::new(request), &fleet.ports(), &Default::default())
        .await
        .expect_err("no room");
    let text = error.to_string();
    assert!(matches!(error, vesemir_core::PrepareError::Budget { .. }), "{text}");
    assert!(text.contains("already has 1 server(s) out of rotation and concurrency is 1"), "{text}");
    assert!(text.contains("web-04: MAINT"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_server_going_down_mid_rollout_makes_the_rollout_wait_instead_of_exceeding() {
    let fleet = fleet(4);
    fleet.executor.set_latency(Duration::from_secs(10));
    let lb = fleet.lb.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        lb.set_healthy(&server(4), false);
        tokio::time::sleep(Duration::from_secs(60)).await;
        lb.set_healthy(&server(4), true);
    });
    let extra = "[strategy]\nconcurrency = 1\n[targets]\nhosts = [{ name = \"web-01\", address = \"127.0.1.1\" }, { name = \"web-02\", address = \"127.0.1.2\" }]\n";
    let request = only_hosts(&fleet, extra);
    let out = check(&fleet, request).await;
    assert_eq!(out.report.outcome, Some(DeploymentOutcome::Succeeded), "{}", out.log);
    assert!(
        out.log.contains("waiting: 1 servers of the backend are out of rotation and concurrency is 1"),
        "{}",
        out.log
    );
    let second = out.events.iter().find(|e| {
        matches!(&e.kind, EventKind::HostPhase { host, phase: Phase::Draining } if host.as_str() == "web-02")
    });
    assert!(
        second.is_some_and(|e| e.elapsed >= Duration::from_secs(65)),
        "web-02 waited for web-04: {}",
        out.log
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_found_by_name_with_another_address_is_refused() {
    let fleet = fleet(2);
    let request = fleet.request_toml("").replace("address = \"127.0.1.2\"", "address = \"127.0.9.9\"");
    let request = vesemir_core::request::DeploymentRequest::from_toml(
        &request,
        &vesemir_core::request::RequestPolicy::permissive(),
    )
    .expect("valid");
    let error = vesemir_core::prepare(std::sync::Arc::new(request), &fleet.ports(), &Default::default())
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("host web-02 has address 127.0.9.9, but its server web-02 has address 127.0.1.2 on 127.0.0.1:9001"),
        "{error}"
    );
}

/// A request for the hosts `extra`'s `[targets]` lists (the rest of the fleet's servers stay in
/// the backend, not targeted).
fn only_hosts(fleet: &Fleet, extra: &str) -> vesemir_core::request::DeploymentRequest {
    let all = (1..=fleet.size)
        .map(|i| {
            format!(
                "{{ name = \"{}\", address = \"{}\" }}",
                host(i),
                vesemir_core::fake::FakeFleet::address(i)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let text = fleet.request_toml("").replace(&format!("[targets]\nhosts = [{all}]\n"), "") + extra;
    vesemir_core::request::DeploymentRequest::from_toml(
        &text,
        &vesemir_core::request::RequestPolicy::permissive(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs `request` on `fleet` with the driver's connect ahead on or off.
async fn run_connecting_ahead(
    fleet: &Fleet,
    request: vesemir_core::request::DeploymentRequest,
    connect_ahead: bool,
    control: Control,
) -> vesemir_core::report::DeploymentReport {
    let config = vesemir_core::DriverConfig { connect_ahead, ..vesemir_core::DriverConfig::default() };
    let ports = fleet.ports();
    let prepared =
        vesemir_core::prepare(std::sync::Arc::new(request), &ports, &config).await.expect("prepares");
    let sink = vesemir_core::event::MemorySink::new();
    vesemir_core::run(&prepared, &ports, &sink, &control, &config).await
}

#[tokio::test(start_paused = true)]
async fn connects_ahead_overlap_the_hosts_in_flight_one_session_per_host() {
    // Connects take 1 s, each host's two commands 2 s each: 5 s a host when connects wait for
    // their turn, 4 s once the next host's session is opened while the one before it works.
    let setup = || {
        let fleet = fleet(4);
        fleet.executor.set_connect_latency(Duration::from_secs(1));
        fleet.executor.set_latency(Duration::from_secs(2));
        fleet
    };
    let one_at_a_time = "[strategy]\nconcurrency = 1\n";
    let fleet = setup();
    let at_turn = run_connecting_ahead(&fleet, fleet.request(one_at_a_time), false, Control::new()).await;
    assert_eq!(at_turn.outcome, Some(DeploymentOutcome::Succeeded));
    assert!(at_turn.elapsed >= Duration::from_secs(20), "{:?}", at_turn.elapsed);

    let fleet = setup();
    let ahead = run_connecting_ahead(&fleet, fleet.request(one_at_a_time), true, Control::new()).await;
    assert_eq!(ahead.outcome, Some(DeploymentOutcome::Succeeded));
    assert!(ahead.elapsed <= Duration::from_millis(17_100), "{:?}", ahead.elapsed);
    assert_eq!(fleet.executor.connects(), 4, "one session per host, not one ahead and one at its turn");
    for i in 1..=4 {
        assert_eq!(fleet.executor.connect_times(&host(i)).len(), 1, "web-0{i} connected once");
    }
    assert!(fleet.executor.connected().is_empty(), "every session closed");
}

#[tokio::test(start_paused = true)]
async fn a_connect_ahead_that_fails_is_reported_at_the_hosts_turn_as_unreachable() {
    let fleet = fleet(3);
    fleet.executor.set_connect_latency(Duration::from_millis(500));
    fleet.executor.set_latency(Duration::from_secs(2));
    fleet.executor.set_unreachable(&host(2));
    let request = fleet.request("[strategy]\nconcurrency = 1\nmax_failures = 1\n");
    let report = run_connecting_ahead(&fleet, request, true, Control::new()).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::CompletedWithFailures));
    let web01 = report.hosts.iter().find(|h| h.name.as_str() == "web-01").expect("web-01");
    let web02 = report.hosts.iter().find(|h| h.name.as_str() == "web-02").expect("web-02");
    assert_eq!(web02.outcome, Some(HostOutcome::Unreachable));
    assert_eq!(web02.phase, Phase::Connecting);
    assert_eq!(web02.rotation, Rotation::InRotation);
    assert!(web02.error.as_deref().is_some_and(|e| e.contains("connection refused")), "{:?}", web02.error);
    // Its turn came after web-01 ended (one at a time): the failure found ahead waited for it.
    assert!(web02.started >= web01.finished, "{:?} {:?}", web02.started, web01.finished);
    assert!(fleet.lb.rotation_log().changes.iter().all(|(s, _, _)| s != &server(2)), "never drained");
    assert_eq!(report.totals.succeeded, 2);
}

#[tokio::test(start_paused = true)]
async fn sessions_opened_ahead_are_bounded_and_closed_when_the_rollout_is_cancelled() {
    let fleet = fleet(8);
    fleet.executor.set_connect_latency(Duration::from_millis(100));
    fleet.executor.set_latency(Duration::from_secs(10));
    let control = Control::new();
    let canceller = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        canceller.cancel();
    });
    let report =
        run_connecting_ahead(&fleet, fleet.request("[strategy]\nconcurrency = 2\n"), true, control).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Cancelled));
    assert_eq!(report.totals.succeeded, 2);
    // Two hosts in flight and at most two ahead of them: web-03 and web-04, never started.
    assert_eq!(fleet.executor.connects(), 4);
    assert_eq!(fleet.executor.connect_times(&host(4)).len(), 1);
    assert!(fleet.executor.connect_times(&host(5)).is_empty());
    assert!(fleet.executor.commands(&host(3)).is_empty());
    assert!(fleet.executor.connected().is_empty(), "the sessions opened ahead were closed too");
}

/// Runs `request` on `fleet` with the operator's `checks_while_out` on.
async fn run_checking_while_out(
    fleet: &Fleet,
    request: vesemir_core::request::DeploymentRequest,
) -> vesemir_core::report::DeploymentReport {
    let config =
        vesemir_core::DriverConfig { checks_while_out: true, ..vesemir_core::DriverConfig::default() };
    let ports = fleet.ports();
    let prepared =
        vesemir_core::prepare(std::sync::Arc::new(request), &ports, &config).await.expect("prepares");
    let sink = vesemir_core::event::MemorySink::new();
    vesemir_core::run(&prepared, &ports, &sink, &Control::new(), &config).await
}

#[tokio::test(start_paused = true)]
async fn with_checks_running_while_out_a_host_stays_drained_and_is_marked_down_after_its_changeset() {
    let fleet = fleet(2);
    let report = run_checking_while_out(&fleet, fleet.request("[strategy]\nconcurrency = 1\n")).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
    let log = fleet.lb.rotation_log();
    let of = |i: usize| -> Vec<(AdminState, Weight)> {
        log.changes.iter().filter(|(s, _, _)| *s == server(i)).map(|(_, a, w)| (*a, *w)).collect()
    };
    // No maintenance: drained through the changeset, then weight 0, ready, its weight.
    let expected = [
        (AdminState::Drain, Weight::FULL),
        (AdminState::Drain, Weight::ZERO),
        (AdminState::Ready, Weight::ZERO),
        (AdminState::Ready, Weight::FULL),
    ];
    assert_eq!(of(1), expected);
    assert_eq!(of(2), expected);
    // Marked DOWN once each, after its drain and before its weight 0: after the changeset.
    let marks: Vec<&vesemir_core::name::ServerName> = log.marked_down.iter().map(|(s, _)| s).collect();
    assert_eq!(marks, [&server(1), &server(2)]);
    for (s, place) in &log.marked_down {
        let before: Vec<_> = log.changes[..*place].iter().filter(|(c, _, _)| c == s).collect();
        assert_eq!(before.len(), 1, "{s}: only the drain before the mark: {before:?}");
    }
    for i in 1..=2 {
        let commands: Vec<String> = fleet.executor.commands(&host(i)).into_iter().map(|c| c.script).collect();
        assert_eq!(commands, ["install-shop '2.0.0'", "check-shop"]);
    }
}

#[tokio::test(start_paused = true)]
async fn with_checks_running_while_out_a_failed_changeset_takes_the_drained_host_to_maintenance() {
    let fleet = fleet(2);
    fleet.executor.fail_command(&host(1), "install-shop", 3);
    let report =
        run_checking_while_out(&fleet, fleet.request("[strategy]\nconcurrency = 1\nmax_failures = 1\n"))
            .await;
    // web-01 keeps its slot out of rotation: with concurrency 1 the rollout stops there.
    assert_eq!(report.outcome, Some(DeploymentOutcome::Stopped));
    let web01 = report.hosts.iter().find(|h| h.name.as_str() == "web-01").expect("web-01");
    assert_eq!(web01.outcome, Some(HostOutcome::Failed));
    assert_eq!(web01.rotation, Rotation::OutOfRotation);
    let s = fleet.lb.server(&server(1)).expect("server");
    assert_eq!(s.admin, AdminState::Maint, "a failed host is not left drained (persistent traffic)");
    assert!(fleet.lb.rotation_log().marked_down.iter().all(|(s, _)| *s != server(1)), "never marked");
}

#[tokio::test(start_paused = true)]
async fn checks_while_out_without_a_wait_for_up_keeps_maintenance() {
    let fleet = fleet(1);
    let extra = "[changeset]\nsteps = [{ name = \"install\", run = \"install-shop {version}\", timeout = \"1m\" }]\n[changeset.health]\ncommand = \"check-shop\"\ntimeout = \"10s\"\ninterval = \"1s\"\nload_balancer_up = false\n";
    let report = run_checking_while_out(&fleet, fleet.request(extra)).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
    let log = fleet.lb.rotation_log();
    assert!(log.changes.iter().any(|(_, a, _)| *a == AdminState::Maint), "{:?}", log.changes);
    assert!(log.marked_down.is_empty());
}
