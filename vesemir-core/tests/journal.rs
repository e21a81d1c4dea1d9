//! The write-ahead journal over a real rollout on fakes: wherever the process dies, replaying
//! what was written lists every server it changed and did not put back, with its original state.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use proptest::prelude::*;
use support::{fleet, host, server, Fleet, FleetRequests};
use vesemir_core::event::Rotation;
use vesemir_core::journal::{
    replay, JournalEntry, JournalError, JournalHeader, JournalHost, JournalSink, JournalWriter,
    JournaledLoadBalancer, MemoryJournal, Pending, RunId,
};
use vesemir_core::name::ServerName;
use vesemir_core::ports::{AdminState, InstanceState, LoadBalancer, Operational};
use vesemir_core::{Control, DriverConfig};

/// Every server's admin state and absolute weight on each instance.
type Snapshot = BTreeMap<ServerName, Vec<(AdminState, u32)>>;

/// A journal that also snapshots the fake load balancer each time an entry is appended: the
/// backend as it was when the process could have died just before that entry.
#[derive(Debug)]
struct SnapshotJournal {
    fleet: Fleet,
    entries: MemoryJournal,
    snapshots: Mutex<Vec<Snapshot>>,
}

fn snapshot(fleet: &Fleet) -> Snapshot {
    let backend = fleet.lb.backend();
    (1..=fleet.size)
        .map(|i| {
            let states = backend
                .instances
                .iter()
                .filter_map(|instance| fleet.lb.server_on(instance, &server(i)))
                .map(|s| (s.admin, s.effective_weight()))
                .collect();
            (server(i), states)
        })
        .collect()
}

impl JournalWriter for SnapshotJournal {
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner()).push(snapshot(&self.fleet));
        self.entries.append(entry)
    }
}

fn header(fleet: &Fleet) -> JournalHeader {
    JournalHeader {
        run: RunId::new("run-1").expect("run id"),
        application: "shop".parse().expect("name"),
        environment: "production".parse().expect("name"),
        version: "2.0.0".parse().expect("version"),
        backend: fleet.lb.backend(),
        hosts: fleet
            .hosts()
            .into_iter()
            .enumerate()
            .map(|(i, h)| JournalHost { name: h.name, address: h.address, server: server(i + 1) })
            .collect(),
        request: serde_json::Value::Null,
        requested_by: "tests".into(),
        started_at: SystemTime::UNIX_EPOCH,
    }
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Full,
    Weight37,
    Maint,
    Drain,
    Down,
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        4 => Just(Start::Full),
        2 => Just(Start::Weight37),
        1 => Just(Start::Maint),
        1 => Just(Start::Drain),
        1 => Just(Start::Down),
    ]
}

struct Run {
    initial: BTreeMap<ServerName, Vec<InstanceState>>,
    entries: Vec<JournalEntry>,
    snapshots: Vec<Snapshot>,
}

async fn journaled_run(starts: &[Start], failing: &[bool], concurrency: usize) -> Run {
    let mut fleet = fleet(starts.len());
    for (i, start) in starts.iter().enumerate() {
        let (admin, operational, weight) = match start {
            Start::Full => (AdminState::Ready, Operational::Up, 100),
            Start::Weight37 => (AdminState::Ready, Operational::Up, 37),
            Start::Maint => (AdminState::Maint, Operational::Up, 100),
            Start::Drain => (AdminState::Drain, Operational::Up, 100),
            Start::Down => (AdminState::Ready, Operational::Down, 100),
        };
        fleet = fleet.starting(i + 1, None, admin, operational, weight).expect("initial state");
        if failing[i] {
            fleet.executor.fail_command(&host(i + 1), "install-shop", 1);
        }
    }
    let backend = fleet.lb.backend();
    let mut initial = BTreeMap::new();
    for i in 1..=fleet.size {
        initial.insert(server(i), fleet.lb.status(&backend, &server(i)).await.expect("status"));
    }
    // Servers found out of rotation are deployed and put back as found (`include`), so every
    // random starting state reaches the journal; they count against the budget, so the
    // concurrency is raised by as many (the budget rule has its own property tests).
    let already_out = starts.iter().filter(|s| !matches!(s, Start::Full | Start::Weight37)).count();
    let concurrency = concurrency + already_out;
    let request = fleet.request(&format!(
        "\n[load_balancer]\nbackend = \"be_web\"\ninstances = [{{ address = \"127.0.0.1\", port = 9001 }}, {{ address = \"127.0.0.1\", port = 9002 }}]\nservers_not_in_rotation = \"include\"\n\n[strategy]\nconcurrency = {concurrency}\nmax_failures = {}\n",
        starts.len()
    ));
    let journal = Arc::new(SnapshotJournal {
        fleet: fleet.clone(),
        entries: MemoryJournal::new(),
        snapshots: Mutex::new(Vec::new()),
    });
    let header = header(&fleet);
    let mut ports = fleet.ports();
    let lb = JournaledLoadBalancer::start(fleet.lb.clone(), journal.clone(), &header).expect("starts");
    ports.load_balancer = Arc::new(lb);
    let config = DriverConfig::default();
    let prepared = vesemir_core::prepare(Arc::new(request), &ports, &config).await.expect("prepares");
    let sink = JournalSink::new(journal.clone(), &header);
    vesemir_core::run(&prepared, &ports, &sink, &Control::new(), &config).await;
    // One last snapshot: the backend when the run ended.
    journal.snapshots.lock().unwrap_or_else(|e| e.into_inner()).push(snapshot(&fleet));
    let snapshots = journal.snapshots.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Run { initial, entries: journal.entries.entries(), snapshots }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
}

fn as_found(states: &[InstanceState]) -> Vec<(AdminState, u32)> {
    states.iter().map(|s| (s.admin, s.weight)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 128, ..ProptestConfig::default() })]

    /// Cut the journal after any entry: replay lists exactly the servers with an intent and no
    /// `Done` in rotation yet, each with the state it had before the run; and every server whose
    /// state then differs from its original and takes no traffic is among them.
    #[test]
    fn replay_after_any_cut_lists_every_server_changed_and_not_done(
        (starts, failing) in (1usize..6).prop_flat_map(|n| (
            proptest::collection::vec(start(), n),
            proptest::collection::vec(proptest::bool::weighted(0.3), n),
        )),
        concurrency in 1usize..4,
    ) {
        let run = runtime().block_on(journaled_run(&starts, &failing, concurrency));
        prop_assert!(matches!(run.entries.first(), Some(JournalEntry::Started(_))));
        for cut in 0..=run.entries.len() {
            let prefix = &run.entries[..cut];
            let unfinished = replay(prefix.to_vec());
            // The model: a server is open from its first intent until a Done in rotation.
            let mut open = BTreeSet::new();
            for entry in prefix {
                match entry {
                    JournalEntry::Intent(i) => { open.insert(i.server.clone()); }
                    JournalEntry::Done(d) if d.rotation == Rotation::InRotation => { open.remove(&d.server); }
                    _ => {}
                }
            }
            let listed: BTreeSet<ServerName> = unfinished.servers.iter().map(|s| s.server.clone()).collect();
            prop_assert_eq!(&listed, &open, "cut after {} entries", cut);
            for pending in &unfinished.servers {
                prop_assert_eq!(&pending.original, &run.initial[&pending.server], "original of {}", pending.server);
            }
            // Never forget: the backend as it was when this entry was about to be written.
            let backend = &run.snapshots[cut.min(run.snapshots.len() - 1)];
            for (name, now) in backend {
                let original = as_found(&run.initial[name]);
                let out = now.iter().any(|(admin, weight)| *admin != AdminState::Ready || *weight == 0);
                if out && *now != original {
                    prop_assert!(listed.contains(name), "cut {}: {} is {:?} (was {:?}) and not listed", cut, name, now, original);
                }
            }
        }
        // At the end every host ended: only hosts reported out of rotation are left, and every
        // host that failed after its server was changed is among them.
        let end = replay(run.entries.clone());
        prop_assert!(end.finished.is_some());
        for pending in &end.servers {
            prop_assert!(matches!(pending.pending, Pending::LeftOut { .. }), "{:?}", pending);
        }
    }
}

#[test]
fn a_deployment_cut_mid_flight_lists_its_servers_in_flight() {
    let run = runtime().block_on(journaled_run(&[Start::Full, Start::Weight37, Start::Full], &[false; 3], 2));
    // Just after the second server's first intent: both servers of the first batch are in flight.
    let second = run
        .entries
        .iter()
        .position(|e| matches!(e, JournalEntry::Intent(i) if i.server == server(2)))
        .expect("an intent for web-02");
    let unfinished = replay(run.entries[..=second].to_vec());
    let names: Vec<&str> = unfinished.servers.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(names, ["web-01", "web-02"]);
    assert_eq!(unfinished.servers[1].original.iter().map(|s| s.weight).collect::<Vec<_>>(), [37, 37]);
    assert!(unfinished.finished.is_none());
    assert!(replay(run.entries).is_empty(), "a run that succeeded leaves nothing");
}
