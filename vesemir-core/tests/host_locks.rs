//! Host locks through the driver, on fakes and virtual time: two deployers sharing one table
//! of locks (`FakeLocks`, as two machines share the hosts), refused or waiting, and every
//! ending giving the locks back.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{fleet, host, server, Fleet};
use vesemir_core::event::{DeploymentOutcome, EventKind, HostOutcome, MemorySink};
use vesemir_core::host_locks::{LockPolicy, WaitNotice};
use vesemir_core::lock::LockHolder;
use vesemir_core::name::HostName;
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{Control, DeploymentReport, DriverConfig, Event, EventSink, PrepareError};

fn holder(deployment: &str, who: &str) -> LockHolder {
    LockHolder {
        deployment: deployment.into(),
        requested_by: who.into(),
        application: "shop".into(),
        environment: "production".into(),
        machine: LockHolder::machine_of("ci-runner-7", 311),
        since_unix: 1_700_000_000,
    }
}

fn config(holder: LockHolder, wait: Duration) -> DriverConfig {
    stale_after(holder, wait, Duration::from_secs(600))
}

fn stale_after(holder: LockHolder, wait: Duration, stale_after: Duration) -> DriverConfig {
    let policy = LockPolicy { holder, stale_after, wait, on_wait: None };
    DriverConfig { locks: Some(policy), ..DriverConfig::default() }
}

/// A request for hosts `hosts` (numbers) of the fleet, deploying `version`.
fn request(hosts: &[usize], version: &str, extra: &str) -> Arc<DeploymentRequest> {
    let listed: Vec<String> = hosts
        .iter()
        .map(|&i| format!("{{ name = \"{}\", address = \"{}\" }}", host(i), Fleet::address(i)))
        .collect();
    let text = format!(
        r#"application = "shop"
environment = "production"
team = "payments"
version = "{version}"
requested_by = "tests"

[targets]
hosts = [{}]

[load_balancer]
backend = "be_web"
instances = [{{ address = "127.0.0.1", port = 9001 }}, {{ address = "127.0.0.1", port = 9002 }}]

[changeset]
steps = [{{ name = "install", run = "install-shop {{version}}", timeout = "10m" }}]
{extra}"#,
        listed.join(", ")
    );
    Arc::new(DeploymentRequest::from_toml(&text, &RequestPolicy::permissive()).expect("request validates"))
}

/// The version each host ends on: its last `install-shop` command.
fn versions(fleet: &Fleet, hosts: &[usize]) -> Vec<String> {
    hosts
        .iter()
        .map(|&i| {
            fleet
                .executor
                .commands(&host(i))
                .iter()
                .rev()
                .find_map(|c| c.script.strip_prefix("install-shop ").map(|v| v.trim_matches('\'').to_owned()))
                .unwrap_or_default()
        })
        .collect()
}

/// Remembers the events and which hosts were locked when `DeploymentFinished` came.
#[derive(Debug, Default)]
struct Watch {
    events: MemorySink,
    locked_at_finish: Mutex<Option<Vec<HostName>>>,
    fleet: Option<Fleet>,
}

impl EventSink for Watch {
    fn emit(&self, event: &Event) {
        if let (EventKind::DeploymentFinished { .. }, Some(fleet)) = (&event.kind, &self.fleet) {
            let locked = fleet.executor.locks().locked().into_iter().collect();
            *self.locked_at_finish.lock().expect("not poisoned") = Some(locked);
        }
        self.events.emit(event);
    }
}

async fn deploy(
    fleet: &Fleet,
    request: Arc<DeploymentRequest>,
    config: &DriverConfig,
    control: &Control,
) -> (DeploymentReport, Watch) {
    let ports = fleet.ports();
    let prepared = vesemir_core::prepare(request, &ports, config).await.expect("prepares");
    let watch = Watch { fleet: Some(fleet.clone()), ..Watch::default() };
    let report = vesemir_core::run(&prepared, &ports, &watch, control, config).await;
    (report, watch)
}

fn assert_numbered(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "events are numbered without gaps");
}

#[tokio::test(start_paused = true)]
async fn the_second_deployer_is_refused_naming_the_first_and_nothing_changes() {
    let fleet = fleet(4);
    let ports = fleet.ports();
    let first = config(holder("41", "alice"), Duration::ZERO);
    let prepared =
        vesemir_core::prepare(request(&[1, 2, 3], "2.0.0", ""), &ports, &first).await.expect("prepares");
    assert_eq!(prepared.locks.as_ref().map(|l| l.held().len()), Some(3));

    tokio::time::advance(Duration::from_secs(252)).await;
    let second = config(holder("42", "bob"), Duration::ZERO);
    let error = vesemir_core::prepare(request(&[2, 3, 4], "3.0.0", ""), &ports, &second)
        .await
        .expect_err("hosts 2 and 3 are locked");
    let PrepareError::Locked(conflicts) = &error else { panic!("not a lock conflict: {error}") };
    assert_eq!(conflicts.hosts().cloned().collect::<Vec<_>>(), vec![host(2), host(3)]);
    assert_eq!(
        error.to_string(),
        "web-02 is locked by deployment 41 of shop/production (alice on ci-runner-7 pid 311), since 4m 12s, last refreshed 4m 12s ago; \
         web-03 is locked by deployment 41 of shop/production (alice on ci-runner-7 pid 311), since 4m 12s, last refreshed 4m 12s ago"
    );
    assert!(!error.is_unreachable());
    assert!(fleet.lb.rotation_log().changes.is_empty(), "nothing changed on the load balancer");
    assert!(fleet.executor.commands(&host(4)).is_empty(), "nothing ran");
    let locks = fleet.executor.locks();
    assert_eq!(locks.holder(&host(4)), None, "the lock the refused deployer took is given back");
    assert_eq!(locks.holder(&host(2)).map(|h| h.deployment), Some("41".into()), "the first's stay");

    let report = vesemir_core::run(&prepared, &ports, &MemorySink::new(), &Control::new(), &first).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
    assert_eq!(versions(&fleet, &[1, 2, 3, 4]), ["2.0.0", "2.0.0", "2.0.0", ""]);
    assert!(locks.locked().is_empty(), "released after success");
}

#[tokio::test(start_paused = true)]
async fn with_a_wait_the_second_runs_after_the_first_and_the_fleet_ends_on_its_version() {
    let fleet = fleet(4);
    fleet.executor.set_latency(Duration::from_secs(20));
    let hosts = [1, 2, 3, 4];
    let first = config(holder("41", "alice"), Duration::ZERO);
    let waits: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = waits.clone();
    let mut second = config(holder("42", "bob"), Duration::from_secs(600));
    if let Some(policy) = &mut second.locks {
        policy.on_wait =
            Some(WaitNotice(Arc::new(move |wait| seen.lock().expect("not poisoned").push(wait.to_string()))));
    }

    let (a, b) = (fleet.clone(), fleet.clone());
    let first_run = tokio::spawn(async move {
        deploy(&a, request(&hosts, "2.0.0", "[strategy]\nconcurrency = 2\n"), &first, &Control::new()).await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second_run =
        tokio::spawn(async move { deploy(&b, request(&hosts, "3.0.0", ""), &second, &Control::new()).await });
    let (first_report, first_watch) = first_run.await.expect("first runs");
    let (second_report, _) = second_run.await.expect("second runs");

    assert_eq!(first_report.outcome, Some(DeploymentOutcome::Succeeded));
    assert_eq!(second_report.outcome, Some(DeploymentOutcome::Succeeded));
    assert_eq!(versions(&fleet, &hosts), ["3.0.0"; 4], "the fleet ends on the second's version");
    for i in hosts {
        let installs: Vec<String> = fleet
            .executor
            .commands(&host(i))
            .into_iter()
            .map(|c| c.script)
            .filter(|s| s.starts_with("install"))
            .collect();
        assert_eq!(
            installs,
            ["install-shop '2.0.0'", "install-shop '3.0.0'"],
            "web-{i:02}: one after the other"
        );
    }
    let waits = waits.lock().expect("not poisoned");
    assert!(!waits.is_empty(), "the second said it waits");
    assert!(
        waits[0].starts_with("waiting for host locks")
            && waits[0].contains("web-01 is locked by deployment 41"),
        "{}",
        waits[0]
    );
    assert_eq!(*first_watch.locked_at_finish.lock().expect("not poisoned"), Some(vec![]));
    assert!(fleet.executor.locks().locked().is_empty());
    assert!(fleet.lb.rotation_log().max_out_of_rotation <= 2, "never both deployers at once");
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_runs_out_fails_naming_the_holder() {
    let fleet = fleet(2);
    let ports = fleet.ports();
    let first = config(holder("41", "alice"), Duration::ZERO);
    let _held = vesemir_core::prepare(request(&[1, 2], "2.0.0", ""), &ports, &first).await.expect("prepares");
    let started = tokio::time::Instant::now();
    let second = config(holder("42", "bob"), Duration::from_secs(30));
    let error =
        vesemir_core::prepare(request(&[2], "3.0.0", ""), &ports, &second).await.expect_err("still locked");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(32), "{waited:?}");
    assert!(error.to_string().contains("web-02 is locked by deployment 41"), "{error}");
    assert!(error.to_string().ends_with("(still, after waiting 30s)"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn locks_are_released_after_success_failure_cancel_and_abort() {
    // Success.
    let fleet = fleet(3);
    let cfg = config(holder("1", "alice"), Duration::ZERO);
    let (report, watch) = deploy(&fleet, request(&[1, 2, 3], "2.0.0", ""), &cfg, &Control::new()).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
    assert_eq!(
        *watch.locked_at_finish.lock().expect("not poisoned"),
        Some(vec![]),
        "released before the end"
    );
    assert_numbered(&watch.events.events());

    // Failure: a failed host stays out of rotation, but its lock is given back.
    let fleet = support::fleet(3);
    fleet.executor.fail_command(&host(1), "install", 3);
    let extra = "[strategy]\nmax_failures = 0\n";
    let (report, watch) = deploy(&fleet, request(&[1, 2, 3], "2.0.0", extra), &cfg, &Control::new()).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Stopped));
    assert_eq!(*watch.locked_at_finish.lock().expect("not poisoned"), Some(vec![]));

    // Cancel before the run starts: every host ends cancelled.
    let fleet = support::fleet(3);
    let control = Control::new();
    control.cancel();
    let (report, watch) = deploy(&fleet, request(&[1, 2, 3], "2.0.0", ""), &cfg, &control).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Cancelled));
    assert_eq!(*watch.locked_at_finish.lock().expect("not poisoned"), Some(vec![]));

    // Abort while a step hangs.
    let fleet = support::fleet(3);
    fleet.executor.hang_command(&host(1), "install");
    let control = Control::new();
    let aborter = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        aborter.abort();
    });
    let (report, watch) = deploy(&fleet, request(&[1, 2, 3], "2.0.0", ""), &cfg, &control).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Cancelled));
    assert_eq!(*watch.locked_at_finish.lock().expect("not poisoned"), Some(vec![]));
    assert!(fleet.executor.locks().locked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stale_lock_is_taken_over_with_a_warning_naming_its_holder() {
    let fleet = fleet(2);
    fleet.executor.locks().hold(&host(2), holder("7", "carol"));
    tokio::time::advance(Duration::from_secs(61)).await;
    let (report, watch) = deploy(
        &fleet,
        request(&[1, 2], "2.0.0", ""),
        &stale_after(holder("8", "dave"), Duration::ZERO, Duration::from_secs(60)),
        &Control::new(),
    )
    .await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
    let events = watch.events.events();
    assert_numbered(&events);
    let warning = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Warning { host: Some(h), message } if *h == host(2) => Some(message.clone()),
            _ => None,
        })
        .expect("a warning about web-02");
    assert!(
        warning.starts_with(
            "took over the stale host lock of deployment 7 of shop/production (carol on ci-runner-7 pid 311)"
        ),
        "{warning}"
    );
    assert!(fleet.executor.locks().locked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_host_unreachable_while_locking_is_reported_unreachable_and_left_alone() {
    let fleet = fleet(3);
    fleet.executor.set_unreachable(&host(2));
    let extra = "[strategy]\nmax_failures = 1\n";
    let cfg = config(holder("1", "alice"), Duration::ZERO);
    let (report, _) = deploy(&fleet, request(&[1, 2, 3], "2.0.0", extra), &cfg, &Control::new()).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::CompletedWithFailures));
    let web2 = &report.hosts[1];
    assert_eq!(web2.outcome, Some(HostOutcome::Unreachable));
    assert!(web2.error.as_deref().unwrap_or_default().contains("taking the host lock failed"), "{web2:?}");
    assert!(fleet.lb.rotation_log().changes.iter().all(|(s, _, _)| *s != server(2)), "web-02 untouched");
    assert_eq!(versions(&fleet, &[1, 2, 3]), ["2.0.0", "", "2.0.0"]);
}

#[tokio::test(start_paused = true)]
async fn a_long_run_refreshes_its_locks_so_they_never_look_stale() {
    let fleet = fleet(2);
    fleet.executor.set_latency(Duration::from_secs(100));
    let ports = fleet.ports();
    let first = stale_after(holder("1", "alice"), Duration::ZERO, Duration::from_secs(60));
    let a = fleet.clone();
    let run =
        tokio::spawn(async move { deploy(&a, request(&[1, 2], "2.0.0", ""), &first, &Control::new()).await });
    // Past `stale_after` (60 s) of the first claim, the second host still waits for its turn.
    tokio::time::sleep(Duration::from_secs(150)).await;
    let second = config(holder("2", "bob"), Duration::ZERO);
    let error =
        vesemir_core::prepare(request(&[2], "3.0.0", ""), &ports, &second).await.expect_err("still held");
    assert!(error.to_string().contains("web-02 is locked by deployment 1"), "{error}");
    let (report, _) = run.await.expect("runs");
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_run_gives_its_locks_back() {
    let fleet = fleet(2);
    fleet.executor.hang_command(&host(1), "install");
    let a = fleet.clone();
    let run = tokio::spawn(async move {
        let cfg = config(holder("1", "alice"), Duration::ZERO);
        deploy(&a, request(&[1, 2], "2.0.0", ""), &cfg, &Control::new()).await
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fleet.executor.locks().locked().len(), 2);
    run.abort();
    assert!(run.await.expect_err("aborted").is_cancelled());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(fleet.executor.locks().locked().is_empty(), "released by the drop");
}

#[tokio::test(start_paused = true)]
async fn without_a_lock_policy_nothing_is_locked() {
    let fleet = fleet(2);
    let (report, _) =
        deploy(&fleet, request(&[1, 2], "2.0.0", ""), &DriverConfig::default(), &Control::new()).await;
    assert_eq!(report.outcome, Some(DeploymentOutcome::Succeeded));
    assert!(fleet.executor.locks().locked().is_empty());
}
