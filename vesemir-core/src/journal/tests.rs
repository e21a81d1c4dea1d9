use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::fake::{FakeExecutor, FakeFleet};
use crate::host::Host;
use crate::ports::{LbEndpoint, LoadBalancer, Operational, ServerStatus};
use crate::request::{DeploymentRequest, RequestPolicy};
use crate::PortError;

fn instances() -> Vec<LbEndpoint> {
    vec![
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 },
        LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9002 },
    ]
}

fn header(fleet: &FakeFleet) -> JournalHeader {
    JournalHeader {
        run: RunId::new("20250101T000000Z-1").unwrap_or_else(|e| panic!("{e}")),
        application: AppName::new("shop").unwrap_or_else(|e| panic!("{e}")),
        environment: EnvironmentName::new("production").unwrap_or_else(|e| panic!("{e}")),
        version: Version::new("2.0.0").unwrap_or_else(|e| panic!("{e}")),
        backend: fleet.lb.backend(),
        hosts: fleet
            .hosts()
            .into_iter()
            .map(|h| JournalHost {
                server: ServerName::new(h.name.as_str()).unwrap_or_else(|e| panic!("{e}")),
                name: h.name,
                address: h.address,
            })
            .collect(),
        request: serde_json::json!({ "application": "shop" }),
        requested_by: "tests".into(),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn state(weight: u32, admin: AdminState) -> InstanceState {
    InstanceState {
        instance: instances()[0].clone(),
        status: ServerStatus::Up,
        weight,
        configured_weight: 100,
        sessions: 0,
        admin,
        operational: Operational::Up,
        check: None,
        address: None,
    }
}

fn intent(i: usize, change: Change, original: Vec<InstanceState>) -> JournalEntry {
    JournalEntry::Intent(Intent { host: FakeFleet::host(i), server: FakeFleet::server(i), change, original })
}

fn done(i: usize, rotation: Rotation) -> JournalEntry {
    JournalEntry::Done(Done {
        host: FakeFleet::host(i),
        server: FakeFleet::server(i),
        outcome: if rotation == Rotation::InRotation { HostOutcome::Succeeded } else { HostOutcome::Failed },
        rotation,
        error: (rotation != Rotation::InRotation).then(|| "step 1 (install) failed: exit code 1".to_owned()),
    })
}

#[test]
fn run_ids_are_safe_file_names() {
    assert!(RunId::new("20250101T101010Z-4242-ab12").is_ok());
    for bad in ["", ".hidden", "../x", "a/b", "a b", &"x".repeat(65)] {
        assert!(RunId::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn entries_are_one_json_object_each_and_read_back() {
    let fleet = FakeFleet::new(2, instances());
    let entries = vec![
        JournalEntry::Started(header(&fleet)),
        intent(1, Change::State { state: AdminState::Drain }, vec![state(37, AdminState::Ready)]),
        intent(
            1,
            Change::Restore { to: vec![state(37, AdminState::Ready)] },
            vec![state(37, AdminState::Ready)],
        ),
        done(1, Rotation::OutOfRotation),
        JournalEntry::Recovered(Recovered { host: FakeFleet::host(1), server: FakeFleet::server(1) }),
        JournalEntry::Finished(Finished::Deployment { outcome: DeploymentOutcome::Stopped }),
        JournalEntry::Finished(Finished::Recovery),
    ];
    for entry in entries {
        let line = serde_json::to_string(&entry).unwrap_or_else(|e| panic!("{e}"));
        assert!(!line.contains('\n'));
        let back: JournalEntry = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(back, entry, "{line}");
    }
    let line = serde_json::to_string(&intent(2, Change::Weight { weight: Weight::ZERO }, vec![]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        line,
        r#"{"entry":"intent","host":"web-02","server":"web-02","change":{"kind":"weight","weight":0},"original":[]}"#
    );
}

#[test]
fn replay_lists_changed_servers_whose_host_did_not_end_in_rotation() {
    let first = vec![state(37, AdminState::Ready)];
    let later = vec![state(0, AdminState::Maint)];
    let entries = vec![
        intent(1, Change::State { state: AdminState::Drain }, first.clone()),
        intent(2, Change::State { state: AdminState::Drain }, first.clone()),
        intent(3, Change::State { state: AdminState::Drain }, first.clone()),
        intent(4, Change::State { state: AdminState::Drain }, first.clone()),
        done(1, Rotation::InRotation),
        done(2, Rotation::OutOfRotation),
        intent(3, Change::State { state: AdminState::Maint }, later.clone()),
        JournalEntry::Recovered(Recovered { host: FakeFleet::host(4), server: FakeFleet::server(4) }),
        done(5, Rotation::OutOfRotation),
    ];
    let unfinished = replay(entries);
    assert_eq!(unfinished.header, None);
    assert_eq!(unfinished.finished, None);
    let servers: Vec<_> = unfinished.servers.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(servers, ["web-02", "web-03"], "web-05 never changed, web-01 back, web-04 recovered");
    let left = &unfinished.servers[0];
    assert!(matches!(
        left.pending,
        Pending::LeftOut { outcome: HostOutcome::Failed, rotation: Rotation::OutOfRotation, .. }
    ));
    let interrupted = &unfinished.servers[1];
    assert_eq!(interrupted.pending, Pending::Interrupted);
    assert_eq!(interrupted.original, first, "the first intent's original is kept");
    assert_eq!(interrupted.last_change, Change::State { state: AdminState::Maint });
    assert!(interrupted.originally_in_rotation());
}

#[test]
fn an_intent_after_a_done_lists_the_server_again() {
    let original = vec![state(100, AdminState::Ready)];
    let entries = vec![
        intent(1, Change::State { state: AdminState::Drain }, original.clone()),
        done(1, Rotation::OutOfRotation),
        intent(1, Change::Restore { to: original.clone() }, original.clone()),
    ];
    let unfinished = replay(entries);
    assert_eq!(unfinished.servers.len(), 1);
    assert_eq!(unfinished.servers[0].pending, Pending::Interrupted);
}

#[tokio::test]
async fn changes_are_journaled_with_the_original_before_they_are_made() {
    let fleet = FakeFleet::new(2, instances())
        .starting(2, None, AdminState::Ready, Operational::Up, 37)
        .unwrap_or_else(|e| panic!("{e}"));
    let original =
        fleet.lb.status(&fleet.lb.backend(), &FakeFleet::server(2)).await.unwrap_or_else(|e| panic!("{e}"));
    let journal = Arc::new(MemoryJournal::new());
    let lb = JournaledLoadBalancer::start(fleet.lb.clone(), journal.clone(), &header(&fleet))
        .unwrap_or_else(|e| panic!("{e}"));
    let backend = fleet.lb.backend();
    let server = FakeFleet::server(2);
    lb.set_state(&backend, &server, AdminState::Drain).await.unwrap_or_else(|e| panic!("{e}"));
    lb.set_state(&backend, &server, AdminState::Maint).await.unwrap_or_else(|e| panic!("{e}"));
    lb.shutdown_sessions(&backend, &server).await.unwrap_or_else(|e| panic!("{e}"));
    lb.set_weight(&backend, &server, Weight::ZERO).await.unwrap_or_else(|e| panic!("{e}"));
    lb.restore(&backend, &server, &original).await.unwrap_or_else(|e| panic!("{e}"));
    // Reads pass through and write nothing.
    lb.status(&backend, &server).await.unwrap_or_else(|e| panic!("{e}"));
    lb.servers(&backend).await.unwrap_or_else(|e| panic!("{e}"));
    let entries = journal.entries();
    assert!(matches!(entries[0], JournalEntry::Started(_)));
    let changes: Vec<Change> = entries[1..]
        .iter()
        .map(|e| match e {
            JournalEntry::Intent(i) => {
                assert_eq!(i.original, original, "every intent carries the state before the first change");
                assert_eq!(i.host, FakeFleet::host(2));
                i.change.clone()
            }
            other => panic!("not an intent: {other:?}"),
        })
        .collect();
    assert_eq!(
        changes,
        [
            Change::State { state: AdminState::Drain },
            Change::State { state: AdminState::Maint },
            Change::ShutdownSessions,
            Change::Weight { weight: Weight::ZERO },
            Change::Restore { to: original.clone() },
        ]
    );
    assert_eq!(fleet.lb.server(&server).map(|s| s.effective_weight()), Some(37));
}

#[tokio::test]
async fn a_change_the_journal_cannot_record_is_not_made() {
    let fleet = FakeFleet::new(2, instances());
    let journal = Arc::new(MemoryJournal::new());
    let lb = JournaledLoadBalancer::start(fleet.lb.clone(), journal.clone(), &header(&fleet))
        .unwrap_or_else(|e| panic!("{e}"));
    let backend = fleet.lb.backend();
    journal.set_failing(true);
    let error =
        lb.set_state(&backend, &FakeFleet::server(1), AdminState::Maint).await.expect_err("journal full");
    assert!(matches!(error, PortError::Adapter { adapter: "journal", .. }), "{error:?}");
    assert!(error.chain().contains("journal could not be written"), "{}", error.chain());
    assert_eq!(fleet.lb.server(&FakeFleet::server(1)).map(|s| s.admin), Some(AdminState::Ready));
    assert!(fleet.lb.out_of_rotation().is_empty());
    // A server outside the plan is refused, unchanged.
    journal.set_failing(false);
    let stranger = ServerName::new("db-01").unwrap_or_else(|e| panic!("{e}"));
    let error = lb.set_state(&backend, &stranger, AdminState::Maint).await.expect_err("not in the plan");
    assert!(matches!(error, PortError::Rejected { .. }), "{error:?}");
    assert_eq!(journal.entries().len(), 1, "only the header");
}

#[tokio::test]
async fn a_failed_first_read_fails_the_change_untouched() {
    let fleet = FakeFleet::new(1, instances());
    let journal = Arc::new(MemoryJournal::new());
    let lb = JournaledLoadBalancer::start(fleet.lb.clone(), journal.clone(), &header(&fleet))
        .unwrap_or_else(|e| panic!("{e}"));
    fleet.lb.set_instance_down(&instances()[1], true);
    assert!(lb.set_state(&fleet.lb.backend(), &FakeFleet::server(1), AdminState::Drain).await.is_err());
    fleet.lb.set_instance_down(&instances()[1], false);
    assert_eq!(journal.entries().len(), 1);
    assert!(fleet.lb.out_of_rotation().is_empty());
}

fn request(fleet: &FakeFleet, health: &str) -> DeploymentRequest {
    let hosts: Vec<String> = (1..=fleet.size)
        .map(|i| format!("{{ name = \"{}\", address = \"{}\" }}", FakeFleet::host(i), FakeFleet::address(i)))
        .collect();
    let text = format!(
        r#"application = "shop"
environment = "production"
team = "payments"
version = "2.0.0"
requested_by = "tests"
[targets]
hosts = [{}]
[load_balancer]
backend = "be_web"
instances = [{{ address = "127.0.0.1", port = 9001 }}, {{ address = "127.0.0.1", port = 9002 }}]
[changeset]
steps = [{{ name = "install", run = "install-shop {{version}}", timeout = "1m" }}]
{health}
"#,
        hosts.join(", ")
    );
    DeploymentRequest::from_toml(&text, &RequestPolicy::permissive())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn pending(original: Vec<InstanceState>, i: usize) -> PendingServer {
    PendingServer {
        host: FakeFleet::host(i),
        server: FakeFleet::server(i),
        original,
        last_change: Change::State { state: AdminState::Maint },
        pending: Pending::Interrupted,
    }
}

fn fleet_host(i: usize) -> Host {
    Host { name: FakeFleet::host(i), address: FakeFleet::address(i), attributes: Default::default() }
}

#[tokio::test(start_paused = true)]
async fn recovery_gates_a_server_then_puts_back_its_own_weight() {
    let fleet = FakeFleet::new(2, instances())
        .starting(1, None, AdminState::Ready, Operational::Up, 37)
        .unwrap_or_else(|e| panic!("{e}"));
    let (lb, backend, server) = (&fleet.lb, fleet.lb.backend(), FakeFleet::server(1));
    let original = lb.status(&backend, &server).await.unwrap_or_else(|e| panic!("{e}"));
    lb.set_state(&backend, &server, AdminState::Maint).await.unwrap_or_else(|e| panic!("{e}"));
    let request = request(
        &fleet,
        "[changeset.health]\ncommand = \"check-shop {host}\"\ntimeout = \"10s\"\ninterval = \"1s\"",
    );
    let health = health_check(&request, &fleet_host(1), 1024).unwrap_or_else(|| panic!("a health command"));
    assert_eq!(
        health.command.script, "check-shop 'web-01'",
        "rendered and shell-quoted like the rollout does"
    );
    let outcome = recover_server(
        lb,
        &fleet.executor,
        &backend,
        &pending(original.clone(), 1),
        Some(&health),
        &RecoveryConfig::default(),
    )
    .await;
    assert_eq!(outcome, RecoveryOutcome::Restored { gated: true });
    assert_eq!(fleet.executor.commands(&FakeFleet::host(1)).len(), 1);
    for instance in instances() {
        let s = lb.server_on(&instance, &server).unwrap_or_else(|| panic!("server"));
        assert_eq!((s.admin, s.effective_weight()), (AdminState::Ready, 37));
    }
    // Run again: nothing left to change.
    let again = recover_server(
        lb,
        &fleet.executor,
        &backend,
        &pending(original, 1),
        Some(&health),
        &RecoveryConfig::default(),
    )
    .await;
    assert_eq!(again, RecoveryOutcome::AlreadyRestored);
}

#[tokio::test(start_paused = true)]
async fn a_server_failing_its_health_command_is_left_out_as_found() {
    let fleet = FakeFleet::new(1, instances());
    let (lb, backend, server) = (&fleet.lb, fleet.lb.backend(), FakeFleet::server(1));
    let original = lb.status(&backend, &server).await.unwrap_or_else(|e| panic!("{e}"));
    lb.set_state(&backend, &server, AdminState::Maint).await.unwrap_or_else(|e| panic!("{e}"));
    fleet.executor.fail_command(&FakeFleet::host(1), "check-shop", 3);
    let request =
        request(&fleet, "[changeset.health]\ncommand = \"check-shop\"\ntimeout = \"5s\"\ninterval = \"1s\"");
    let health = health_check(&request, &fleet_host(1), 1024);
    let outcome = recover_server(
        lb,
        &fleet.executor,
        &backend,
        &pending(original, 1),
        health.as_ref(),
        &RecoveryConfig::default(),
    )
    .await;
    let RecoveryOutcome::LeftOut { reason } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("health command failed") && reason.contains("exit code 3"), "{reason}");
    assert!(fleet.executor.commands(&FakeFleet::host(1)).len() >= 4, "retried until its time is up");
    assert_eq!(lb.server(&server).map(|s| s.admin), Some(AdminState::Maint), "left as found");
}

#[tokio::test(start_paused = true)]
async fn a_server_the_load_balancers_see_down_is_put_back_as_found() {
    let fleet = FakeFleet::new(1, instances());
    let (lb, backend, server) = (&fleet.lb, fleet.lb.backend(), FakeFleet::server(1));
    let original = lb.status(&backend, &server).await.unwrap_or_else(|e| panic!("{e}"));
    lb.set_state(&backend, &server, AdminState::Maint).await.unwrap_or_else(|e| panic!("{e}"));
    lb.set_healthy(&server, false);
    let config = RecoveryConfig { up_timeout: Duration::from_secs(5), ..RecoveryConfig::default() };
    let outcome =
        recover_server(lb, &FakeExecutor::new(), &backend, &pending(original, 1), None, &config).await;
    let RecoveryOutcome::LeftOut { reason } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("did not report it UP") && reason.contains("put back as found"), "{reason}");
    assert_eq!(lb.server(&server).map(|s| s.admin), Some(AdminState::Maint));
}

#[tokio::test(start_paused = true)]
async fn a_server_found_out_of_rotation_goes_back_out_without_a_gate() {
    let fleet = FakeFleet::new(1, instances())
        .starting(1, Some(&instances()[0]), AdminState::Maint, Operational::Up, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    let (lb, backend, server) = (&fleet.lb, fleet.lb.backend(), FakeFleet::server(1));
    let original = lb.status(&backend, &server).await.unwrap_or_else(|e| panic!("{e}"));
    // Maintenance on one box, in rotation on the other: it took traffic, so it is gated.
    assert!(pending(original.clone(), 1).originally_in_rotation());
    let drained: Vec<InstanceState> =
        original.iter().map(|s| InstanceState { admin: AdminState::Drain, ..s.clone() }).collect();
    lb.restore(&backend, &server, &drained).await.unwrap_or_else(|e| panic!("{e}"));
    let fully_out: Vec<InstanceState> =
        original.iter().map(|s| InstanceState { admin: AdminState::Maint, ..s.clone() }).collect();
    lb.set_healthy(&server, false);
    let outcome = recover_server(
        lb,
        &FakeExecutor::new(),
        &backend,
        &pending(fully_out, 1),
        None,
        &RecoveryConfig::default(),
    )
    .await;
    assert_eq!(
        outcome,
        RecoveryOutcome::Restored { gated: false },
        "a server that took no traffic needs no gate"
    );
    assert_eq!(lb.server(&server).map(|s| s.admin), Some(AdminState::Maint));
}
