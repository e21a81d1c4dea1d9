//! Property tests of the provisioning saga against an independent model: for random failures
//! at every step (whole or partway), cancels at any point (walking forward or unwinding), undos
//! that fail and are retried, host keys that match, differ or are missing from the console,
//! every step done is undone exactly once in reverse order, nothing is undone that was not
//! done, and the machine always ends with one `Finished` event, the last. Then placement and
//! addresses: never over a hypervisor's limit, the lowest free address, reservations that never
//! collide.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vesemir_core::name::EnvironmentName;
use vesemir_core::provision::{
    choose_hypervisor, free_address, Action, ActionResult, AddressRange, Catalog, ChefClientKey, DnsZone,
    Flavor, FlavorName, Guest, HostKeyPolicy, Hypervisor, HypervisorLoad, HypervisorName, MemoryReservations,
    PartsBuilt, Placement, PlacementError, Provision, ProvisionConfig, ProvisionEvent, ProvisionEventKind,
    ProvisionOutcome, ReservationRequest, Reservations, ReserveError, RunListEntry, Size, SshHostKey, Step,
    Verification, VmName, VmRecord,
};
use vesemir_core::PortError;

/// How one forward step ends in a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StepEnd {
    Ok,
    /// Fails having changed nothing.
    Fail,
    /// Fails having maybe changed something (undone too).
    FailPartway,
    /// WaitSsh: the console shows another key. Verify: a check fails. Others: as `Fail`.
    FailByAnswer,
    /// WaitSsh: no key on the console (fails only in strict mode). Others: as `Ok`.
    NoConsoleKey,
}

#[derive(Debug, Clone)]
struct Scenario {
    ends: Vec<StepEnd>,
    /// Cancel just before the result of the action with this index (0-based, undos included).
    cancel_at: Option<usize>,
    /// Failing attempts of each step's undo before one succeeds.
    undo_failures: Vec<u32>,
    undo_attempts: u32,
    strict: bool,
}

fn step_end() -> impl Strategy<Value = StepEnd> {
    prop_oneof![
        12 => Just(StepEnd::Ok),
        1 => Just(StepEnd::Fail),
        1 => Just(StepEnd::FailPartway),
        1 => Just(StepEnd::FailByAnswer),
        1 => Just(StepEnd::NoConsoleKey),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(step_end(), 8),
        prop::option::weighted(0.3, 0usize..16),
        prop::collection::vec(prop_oneof![6 => Just(0u32), 2 => Just(1u32), 1 => 2u32..5], 8),
        1u32..4,
        any::<bool>(),
    )
        .prop_map(|(ends, cancel_at, undo_failures, undo_attempts, strict)| Scenario {
            ends,
            cancel_at,
            undo_failures,
            undo_attempts,
            strict,
        })
}

fn config(strict: bool, undo_attempts: u32) -> ProvisionConfig {
    ProvisionConfig {
        zone: DnsZone::new("lab.test").unwrap(),
        environment: EnvironmentName::new("production").unwrap(),
        run_list: vec![RunListEntry::parse("role[base]").unwrap()],
        host_key: if strict { HostKeyPolicy::Strict } else { HostKeyPolicy::RecordFirst },
        ssh_timeout: Duration::from_secs(60),
        bootstrap_timeout: Duration::from_secs(600),
        undo_attempts,
    }
}

fn flavor() -> Flavor {
    Flavor {
        name: FlavorName::new("small").unwrap(),
        size: Size { cores: 2, memory_mib: 5120, disk_gib: 40 },
    }
}

fn key(n: u8) -> SshHostKey {
    SshHostKey::parse(&format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n:08}")).unwrap()
}

fn placement() -> Placement {
    Placement { hypervisor: HypervisorName::new("hv-1").unwrap(), address: Ipv4Addr::new(10, 9, 0, 5) }
}

fn error() -> PortError {
    PortError::rejected("lab", "injected")
}

/// What the model expects: the undos in order (with attempts), and the outcome.
#[derive(Debug, PartialEq)]
struct Expected {
    undo_attempts: Vec<(Step, u32)>,
    left_behind: Vec<Step>,
    outcome: &'static str,
    failed_step: Option<Step>,
}

/// The model: written from the saga's rules, not from the machine's code.
fn model(s: &Scenario) -> Expected {
    let mut done: Vec<Step> = Vec::new();
    let mut cancelled = false;
    let mut failed_step = None;
    let mut all_passed = true;
    for (i, step) in Step::ALL.into_iter().enumerate() {
        // Forward steps are the first actions: step i is action i.
        if s.cancel_at == Some(i) {
            cancelled = true;
        }
        let undoable = matches!(step, Step::Reserve | Step::Dns | Step::Disk | Step::Domain | Step::Chef);
        let fails = match s.ends[i] {
            StepEnd::Ok => false,
            StepEnd::Fail | StepEnd::FailByAnswer => true,
            StepEnd::FailPartway => {
                if undoable {
                    done.push(step);
                }
                true
            }
            StepEnd::NoConsoleKey => step == Step::WaitSsh && s.strict,
        };
        if fails {
            failed_step = Some(step);
            all_passed = false;
            break;
        }
        if undoable {
            done.push(step);
        }
        if cancelled {
            all_passed = false;
            break;
        }
    }
    let mut undo_attempts = Vec::new();
    let mut left_behind = Vec::new();
    if all_passed {
        done.clear();
    }
    for step in done.into_iter().rev() {
        let failures = s.undo_failures[step as usize];
        let attempts = (failures + 1).min(s.undo_attempts);
        undo_attempts.push((step, attempts));
        if failures >= s.undo_attempts {
            left_behind.push(step);
        }
    }
    // A cancel wins over the failure of the step it found in flight.
    let outcome = if all_passed {
        "ready"
    } else if cancelled {
        "cancelled"
    } else {
        "failed"
    };
    Expected { undo_attempts, left_behind, outcome, failed_step }
}

/// Drives the machine through a scenario; returns the actions asked for and the events.
fn drive(s: &Scenario, mut machine: Provision, start: Instant) -> (Vec<Action>, Vec<ProvisionEvent>) {
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let mut undo_tries: BTreeMap<Step, u32> = BTreeMap::new();
    let mut now = start;
    for _ in 0..200 {
        events.extend(std::iter::from_fn(|| machine.poll_event()));
        let Some(action) = machine.poll_action() else { break };
        now += Duration::from_millis(250);
        let step = action.step();
        let result = if action.is_undo() {
            let tries = undo_tries.entry(step).or_default();
            *tries += 1;
            if *tries <= s.undo_failures[step as usize] {
                ActionResult::failed(error())
            } else {
                ActionResult::Done
            }
        } else {
            answer(&action, s.ends[step as usize])
        };
        if s.cancel_at == Some(actions.len()) {
            machine.handle_cancel(now);
        }
        actions.push(action);
        machine.handle_result(result, now);
    }
    events.extend(std::iter::from_fn(|| machine.poll_event()));
    assert!(machine.is_finished(), "the machine did not end: {events:#?}");
    (actions, events)
}

/// The client key the fake Chef answers: it must never show in an event.
const SECRET: &str = "-----BEGIN RSA PRIVATE KEY-----\nsecret-of-the-node";

fn answer(action: &Action, end: StepEnd) -> ActionResult {
    match (action, end) {
        (_, StepEnd::Fail) => ActionResult::failed(error()),
        (_, StepEnd::FailPartway) => {
            ActionResult::failed_partway(PortError::timeout("injected", Duration::from_secs(1)))
        }
        (Action::WaitForSsh { .. }, StepEnd::FailByAnswer) => {
            ActionResult::SshReady { presented: key(1), console: Some(key(2)) }
        }
        (Action::WaitForSsh { .. }, StepEnd::NoConsoleKey) => {
            ActionResult::SshReady { presented: key(1), console: None }
        }
        (Action::WaitForSsh { .. }, StepEnd::Ok) => {
            ActionResult::SshReady { presented: key(1), console: Some(key(1)) }
        }
        (Action::Verify { .. }, StepEnd::FailByAnswer) => ActionResult::Verified(Verification {
            dns_resolves: true,
            ssh_answers: false,
            in_chef_search: true,
        }),
        (Action::Verify { .. }, _) => ActionResult::Verified(Verification {
            dns_resolves: true,
            ssh_answers: true,
            in_chef_search: true,
        }),
        (_, StepEnd::FailByAnswer) => ActionResult::failed(error()),
        (Action::Reserve { .. }, _) => ActionResult::Reserved(placement()),
        (Action::RegisterChef { .. }, _) => ActionResult::ChefRegistered(ChefClientKey::new(SECRET)),
        (Action::Bootstrap { spec, .. }, _) => {
            assert_eq!(spec.client_key.expose(), SECRET, "the bootstrap gets the key Chef made");
            ActionResult::Done
        }
        _ => ActionResult::Done,
    }
}

fn check_events(events: &[ProvisionEvent]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "events are numbered without gaps");
        let json = serde_json::to_string(event).unwrap();
        let back: ProvisionEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, event, "events round-trip through JSON");
        assert!(!json.contains("secret-of-the-node"), "no event carries the client key: {json}");
        assert!(!format!("{event:?}").contains("secret-of-the-node"), "nor its Debug: {event:?}");
    }
    let finished = events.iter().filter(|e| matches!(e.kind, ProvisionEventKind::Finished { .. })).count();
    assert_eq!(finished, 1, "exactly one Finished event");
    assert!(matches!(events.last().map(|e| &e.kind), Some(ProvisionEventKind::Finished { .. })));
}

fn outcome_of(events: &[ProvisionEvent]) -> ProvisionOutcome {
    match events.last().map(|e| &e.kind) {
        Some(ProvisionEventKind::Finished { outcome }) => outcome.clone(),
        other => panic!("last event {other:?}"),
    }
}

fn undo_attempts(actions: &[Action]) -> Vec<(Step, u32)> {
    let mut list: Vec<(Step, u32)> = Vec::new();
    for action in actions.iter().filter(|a| a.is_undo()) {
        match list.last_mut() {
            Some((step, count)) if *step == action.step() => *count += 1,
            _ => list.push((action.step(), 1)),
        }
    }
    list
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_step_done_is_undone_once_in_reverse(s in scenario()) {
        let start = Instant::now();
        let machine = Provision::create(VmName::new("vm1").unwrap(), flavor(), config(s.strict, s.undo_attempts), start);
        let (actions, events) = drive(&s, machine, start);
        check_events(&events);
        let expected = model(&s);
        prop_assert_eq!(undo_attempts(&actions), expected.undo_attempts.clone());
        // No forward step after the first undo.
        if let Some(first_undo) = actions.iter().position(|a| a.is_undo()) {
            prop_assert!(actions[first_undo..].iter().all(|a| a.is_undo()));
        }
        let outcome = outcome_of(&events);
        prop_assert_eq!(outcome.left_behind(), &expected.left_behind[..]);
        match (&outcome, expected.outcome) {
            (ProvisionOutcome::Ready { record }, "ready") => {
                prop_assert_eq!(&record.host_key, &key(1));
                prop_assert_eq!(record.fqdn.to_string(), "vm1.lab.test");
                prop_assert!(!actions.iter().any(|a| a.is_undo()));
            }
            (ProvisionOutcome::Failed { step, reason, .. }, "failed") => {
                prop_assert_eq!(Some(*step), expected.failed_step);
                prop_assert!(!reason.is_empty());
            }
            (ProvisionOutcome::Cancelled { .. }, "cancelled") => {
                let cancel = events.iter().position(|e| e.kind == ProvisionEventKind::CancelRequested).unwrap();
                let started_after = events[cancel..].iter().any(|e| matches!(e.kind, ProvisionEventKind::StepStarted { .. }));
                prop_assert!(!started_after, "a step started after the cancel");
            }
            (got, want) => prop_assert!(false, "outcome {got:?}, model says {want}"),
        }
    }

    #[test]
    fn destroy_undoes_every_step_in_reverse(failures in prop::collection::vec(0u32..4, 8), attempts in 1u32..4) {
        let record = VmRecord {
            vm: VmName::new("vm1").unwrap(),
            fqdn: "vm1.lab.test".parse().unwrap(),
            flavor: flavor(),
            placement: placement(),
            host_key: key(1),
            environment: EnvironmentName::new("production").unwrap(),
            run_list: vec![],
        };
        let s = Scenario { ends: vec![StepEnd::Ok; 8], cancel_at: None, undo_failures: failures.clone(), undo_attempts: attempts, strict: true };
        let start = Instant::now();
        let (actions, events) = drive(&s, Provision::destroy(record, config(true, attempts), start), start);
        check_events(&events);
        let expected: Vec<(Step, u32)> = [Step::Chef, Step::Domain, Step::Disk, Step::Dns, Step::Reserve]
            .into_iter()
            .map(|step| (step, (failures[step as usize] + 1).min(attempts)))
            .collect();
        prop_assert_eq!(undo_attempts(&actions), expected);
        prop_assert!(actions.iter().all(|a| a.is_undo()));
        let destroyed = matches!(outcome_of(&events), ProvisionOutcome::Destroyed { .. });
        prop_assert!(destroyed, "a destroy ends Destroyed");
    }

    #[test]
    fn destroying_the_parts_of_an_unfinished_create_undoes_exactly_the_steps_that_started(
        started_count in 0usize..=8,
        placed in any::<bool>(),
        failures in prop::collection::vec(0u32..4, 8),
        attempts in 1u32..4,
    ) {
        let started: Vec<Step> = Step::ALL.into_iter().take(started_count).collect();
        let parts = PartsBuilt {
            vm: VmName::new("vm1").unwrap(),
            fqdn: "vm1.lab.test".parse().unwrap(),
            flavor: flavor(),
            placement: placed.then(placement),
            started: started.clone(),
            environment: EnvironmentName::new("production").unwrap(),
            run_list: vec![],
        };
        let s = Scenario { ends: vec![StepEnd::Ok; 8], cancel_at: None, undo_failures: failures.clone(), undo_attempts: attempts, strict: true };
        let start = Instant::now();
        let (actions, events) = drive(&s, Provision::destroy_parts(parts, config(true, attempts), start), start);
        check_events(&events);
        // The model: the started steps that have an undo, last first; disk and domain only
        // where the hypervisor is known.
        let expected: Vec<(Step, u32)> = [Step::Chef, Step::Domain, Step::Disk, Step::Dns, Step::Reserve]
            .into_iter()
            .filter(|step| started.contains(step))
            .filter(|step| placed || !matches!(step, Step::Domain | Step::Disk))
            .map(|step| (step, (failures[step as usize] + 1).min(attempts)))
            .collect();
        prop_assert_eq!(undo_attempts(&actions), expected);
        prop_assert!(actions.iter().all(|a| a.is_undo()));
        let destroyed = matches!(outcome_of(&events), ProvisionOutcome::Destroyed { .. });
        prop_assert!(destroyed, "a destroy ends Destroyed");
    }

    #[test]
    fn a_hypervisor_is_never_filled_over_its_limits(
        hypervisors in prop::collection::vec((1u32..6, 1u32..16, 1u64..8, 1u64..8, prop::collection::vec((1u32..4, 1u64..4, 1u64..4), 0..6)), 0..5),
        want in (1u32..4, 1u64..4, 1u64..4),
    ) {
        let loads: Vec<HypervisorLoad> = hypervisors.iter().enumerate().map(|(i, (max_guests, cores, memory, disk, guests))| HypervisorLoad {
            hypervisor: Hypervisor {
                name: HypervisorName::new(format!("hv-{i}")).unwrap(),
                max_guests: *max_guests,
                capacity: Size { cores: *cores, memory_mib: *memory * 1024, disk_gib: *disk * 10 },
            },
            guests: guests.iter().enumerate().map(|(g, (c, m, d))| Guest { name: format!("g{g}"), size: Size { cores: *c, memory_mib: m * 1024, disk_gib: d * 10 } }).collect(),
        }).collect();
        let size = Size { cores: want.0, memory_mib: want.1 * 1024, disk_gib: want.2 * 10 };
        let fits = |load: &HypervisorLoad| {
            let used = load.guests.iter().fold(Size::default(), |a, g| a.plus(g.size));
            load.guests.len() < load.hypervisor.max_guests as usize
                && used.cores + size.cores <= load.hypervisor.capacity.cores
                && used.memory_mib + size.memory_mib <= load.hypervisor.capacity.memory_mib
                && used.disk_gib + size.disk_gib <= load.hypervisor.capacity.disk_gib
        };
        let free_memory = |load: &HypervisorLoad| load.hypervisor.capacity.memory_mib as i64 - load.guests.iter().map(|g| g.size.memory_mib as i64).sum::<i64>();
        match choose_hypervisor(&loads, size) {
            Ok(name) => {
                let chosen = loads.iter().find(|l| l.hypervisor.name == name).unwrap();
                prop_assert!(fits(chosen));
                let best = loads.iter().filter(|l| fits(l)).map(free_memory).max().unwrap();
                prop_assert_eq!(free_memory(chosen), best);
            }
            Err(PlacementError::NoHypervisors) => prop_assert!(loads.is_empty()),
            Err(PlacementError::Full { .. }) => prop_assert!(!loads.iter().any(fits)),
        }
    }

    #[test]
    fn the_lowest_free_address_is_chosen(first in 0u32..64, len in 1u32..48, taken in prop::collection::btree_set(0u32..128, 0..80)) {
        let base = u32::from(Ipv4Addr::new(10, 20, 0, 0));
        let range = AddressRange::new(Ipv4Addr::from(base + first), Ipv4Addr::from(base + first + len - 1)).unwrap();
        let taken: BTreeSet<Ipv4Addr> = taken.into_iter().map(|n| Ipv4Addr::from(base + n)).collect();
        let expected = (first..first + len).map(|n| Ipv4Addr::from(base + n)).find(|a| !taken.contains(a));
        prop_assert_eq!(free_address(range, &taken), expected);
    }
}

fn catalog(hypervisors: u32, max_guests: u32) -> Catalog {
    let mut catalog = Catalog::default();
    for i in 0..hypervisors {
        let hypervisor = Hypervisor {
            name: HypervisorName::new(format!("hv-{i}")).unwrap(),
            max_guests,
            capacity: Size { cores: 64, memory_mib: 1 << 20, disk_gib: 1 << 20 },
        };
        catalog.hypervisors.insert(hypervisor.name.clone(), hypervisor);
    }
    catalog.flavors.insert(flavor().name.clone(), flavor());
    catalog
}

#[tokio::test]
async fn concurrent_reservations_never_share_an_address_nor_overfill() {
    let reservations = MemoryReservations::new();
    let range = AddressRange::new(Ipv4Addr::new(10, 30, 0, 10), Ipv4Addr::new(10, 30, 0, 40)).unwrap();
    let taken = BTreeSet::from([Ipv4Addr::new(10, 30, 0, 11)]);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let reservations = reservations.clone();
        let request = ReservationRequest {
            vm: VmName::new(format!("vm{i}")).unwrap(),
            size: flavor().size,
            catalog: catalog(2, 5),
            guests: BTreeMap::from([(
                HypervisorName::new("hv-0").unwrap(),
                vec![Guest { name: "old".into(), size: flavor().size }],
            )]),
            range,
            taken: taken.clone(),
        };
        tasks.push(tokio::spawn(async move { reservations.reserve(request).await }));
    }
    let mut granted = Vec::new();
    let mut full = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(reservation) => granted.push(reservation),
            Err(ReserveError::Placement(PlacementError::Full { .. })) => full += 1,
            Err(other) => panic!("{other}"),
        }
    }
    // hv-0 holds one guest already: 4 more there, 5 on hv-1.
    assert_eq!(granted.len(), 9);
    assert_eq!(full, 3);
    let addresses: BTreeSet<_> = granted.iter().map(|r| r.placement.address).collect();
    assert_eq!(addresses.len(), granted.len(), "no address twice");
    assert!(!addresses.contains(&Ipv4Addr::new(10, 30, 0, 11)), "a taken address is skipped");
    let on_hv0 = granted.iter().filter(|r| r.placement.hypervisor.as_str() == "hv-0").count();
    assert_eq!(on_hv0, 4);
    // Released, a reservation's address and slot are free again; releasing twice is no error.
    let vm = granted[0].vm.clone();
    reservations.release(&vm).await.unwrap();
    reservations.release(&vm).await.unwrap();
    assert_eq!(reservations.held().await.unwrap().len(), 8);
}
