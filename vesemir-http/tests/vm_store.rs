//! The server's VM store (issue 19): VM rows, their events and the address and hypervisor
//! reservations, on SQLite (a temp file) and a real PostgreSQL (one cluster for the binary).
//! Every check runs on both engines, each on a fresh database; the concurrency checks run
//! their reservers and inserters at once, on several instances where the engine has them.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use vesemir_core::name::EnvironmentName;
use vesemir_core::provision::{
    AddressRange, Catalog, DnsZone, Flavor, FlavorName, Fqdn, Guest, Hypervisor, HypervisorName, Mode,
    Placement, PlacementError, ProvisionEvent, ProvisionEventKind, ProvisionOutcome, Reservation,
    ReservationRequest, Reservations, ReserveError, RunListEntry, Size, SshHostKey, Step, VmName, VmRecord,
};
use vesemir_http::store::vms::{NewVm, StoreReservations, VmFilter, VmInserted, VmRow, VmStatus, VmUpdate};
use vesemir_http::store::{Store, StoreOptions};
use vesemir_http::{InstanceId, PostgresStore, PostgresUrl, SqliteStore};
use vesemir_testkit::postgres::Postgres;

/// A fresh database the checks open instances on.
#[async_trait::async_trait(?Send)]
trait Database {
    /// An instance named `name` with leases of `lease`.
    async fn open(&self, name: &str, lease: Duration) -> Arc<dyn Store>;
    /// Whether one server owns the database (SQLite): its startup ends every running VM.
    fn single_server(&self) -> bool;
}

struct SqliteFile(std::path::PathBuf);

#[async_trait::async_trait(?Send)]
impl Database for SqliteFile {
    async fn open(&self, name: &str, lease: Duration) -> Arc<dyn Store> {
        let options = StoreOptions { instance: InstanceId::for_process(name), lease };
        Arc::new(SqliteStore::open_with(&self.0, options).await.expect("opens"))
    }

    fn single_server(&self) -> bool {
        true
    }
}

struct PgDatabase(PostgresUrl);

#[async_trait::async_trait(?Send)]
impl Database for PgDatabase {
    async fn open(&self, name: &str, lease: Duration) -> Arc<dyn Store> {
        let options = StoreOptions { instance: InstanceId::for_process(name), lease };
        Arc::new(PostgresStore::open(&self.0, options).await.expect("opens"))
    }

    fn single_server(&self) -> bool {
        false
    }
}

const LONG: Duration = Duration::from_secs(60);

fn vm_name(name: &str) -> VmName {
    VmName::new(name).unwrap()
}

fn new_vm(name: &str, owner: &str) -> NewVm {
    NewVm {
        name: vm_name(name),
        owner: owner.into(),
        team: "platform".into(),
        flavor: FlavorName::new("small").unwrap(),
        requested_by: "ops-ci".into(),
        created_ms: 1_700_000_000_000,
    }
}

async fn inserted(store: &dyn Store, vm: &NewVm, limit: Option<u32>) -> VmRow {
    match store.insert_vm(vm, limit).await.unwrap() {
        VmInserted::Inserted(row) => row,
        other => panic!("expected {} inserted, got {other:?}", vm.name),
    }
}

fn size() -> Size {
    Size { cores: 2, memory_mib: 5120, disk_gib: 40 }
}

fn placement(hypervisor: &str, address: [u8; 4]) -> Placement {
    Placement { hypervisor: HypervisorName::new(hypervisor).unwrap(), address: Ipv4Addr::from(address) }
}

fn record(name: &str) -> VmRecord {
    VmRecord {
        vm: vm_name(name),
        fqdn: Fqdn::new(vm_name(name), DnsZone::new("lab.test").unwrap()),
        flavor: Flavor { name: FlavorName::new("small").unwrap(), size: size() },
        placement: placement("hv-1", [10, 0, 0, 7]),
        host_key: SshHostKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFake").unwrap(),
        environment: EnvironmentName::new("production").unwrap(),
        run_list: vec![
            RunListEntry::parse("role[base]").unwrap(),
            RunListEntry::parse("recipe[web]").unwrap(),
        ],
    }
}

fn update(status: VmStatus) -> VmUpdate {
    VmUpdate { status, placement: None, record: None, outcome: None, finished_ms: None }
}

fn event(seq: u64, kind: ProvisionEventKind) -> ProvisionEvent {
    ProvisionEvent { seq, elapsed: Duration::from_millis(seq * 10), kind }
}

fn step_event(seq: u64) -> ProvisionEvent {
    event(seq, ProvisionEventKind::StepStarted { step: Step::Dns })
}

/// Two hypervisors of `max_guests` each (capacity to spare) and the range 10.0.0.1 up to
/// 10.0.0.`addresses`.
fn request(vm: &str, max_guests: u32, addresses: u8) -> ReservationRequest {
    let capacity = Size { cores: 1000, memory_mib: 1 << 30, disk_gib: 1 << 20 };
    let hypervisors = ["hv-1", "hv-2"]
        .into_iter()
        .map(|name| {
            let name = HypervisorName::new(name).unwrap();
            (name.clone(), Hypervisor { name, max_guests, capacity })
        })
        .collect();
    ReservationRequest {
        vm: vm_name(vm),
        size: size(),
        catalog: Catalog { flavors: BTreeMap::new(), hypervisors },
        guests: BTreeMap::new(),
        range: AddressRange::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, addresses)).unwrap(),
        taken: BTreeSet::new(),
    }
}

async fn every_field_round_trips(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let row = inserted(&*store, &new_vm("web1", "alice"), Some(3)).await;
    assert_eq!(
        row,
        VmRow {
            id: row.id,
            name: vm_name("web1"),
            owner: "alice".into(),
            team: "platform".into(),
            flavor: FlavorName::new("small").unwrap(),
            requested_by: "ops-ci".into(),
            status: VmStatus::Creating,
            created_ms: 1_700_000_000_000,
            finished_ms: None,
            placement: None,
            record: None,
            outcome: None,
            instance: store.instance().as_str().into(),
        }
    );
    assert_eq!(store.vm(&vm_name("web1")).await.unwrap(), Some(row.clone()));
    let outcome = ProvisionOutcome::Ready { record: record("web1") };
    let change = VmUpdate {
        status: VmStatus::Ready,
        placement: Some(placement("hv-1", [10, 0, 0, 7])),
        record: Some(record("web1")),
        outcome: Some(outcome.clone()),
        finished_ms: Some(1_700_000_060_000),
    };
    store.update_vm(row.id, &change).await.unwrap();
    let ready = store.vm(&vm_name("web1")).await.unwrap().unwrap();
    let expected = VmRow {
        status: VmStatus::Ready,
        finished_ms: Some(1_700_000_060_000),
        placement: Some(placement("hv-1", [10, 0, 0, 7])),
        record: Some(record("web1")),
        outcome: Some(outcome),
        ..row.clone()
    };
    assert_eq!(ready, expected);
    let listed = store.list_vms(&VmFilter { limit: 10, ..VmFilter::default() }).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&expected));
    // Another instance reads the same row.
    let other = db.open("b", LONG).await;
    assert_eq!(other.vm(&vm_name("web1")).await.unwrap(), Some(expected));
    assert_eq!(other.vm(&vm_name("nope")).await.unwrap(), None);
}

async fn a_name_is_held_until_its_vm_ends(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let first = inserted(&*store, &new_vm("web1", "alice"), None).await;
    // Held by every status that holds resources.
    for status in [VmStatus::Creating, VmStatus::Ready, VmStatus::Destroying, VmStatus::Interrupted] {
        store.update_vm(first.id, &update(status)).await.unwrap();
        match store.insert_vm(&new_vm("web1", "bob"), None).await.unwrap() {
            VmInserted::NameInUse(existing) => {
                assert_eq!((existing.id, existing.status), (first.id, status));
            }
            other => panic!("{status}: the name is held, got {other:?}"),
        }
    }
    // Freed by every status that ends it; the newest row answers for the name.
    let mut newest = first.id;
    for status in [VmStatus::Failed, VmStatus::Cancelled, VmStatus::Destroyed] {
        store.update_vm(newest, &update(status)).await.unwrap();
        assert_eq!(store.vm(&vm_name("web1")).await.unwrap().unwrap().status, status);
        let again = inserted(&*store, &new_vm("web1", "bob"), None).await;
        assert!(again.id > newest);
        assert_eq!(store.vm(&vm_name("web1")).await.unwrap().unwrap().id, again.id);
        newest = again.id;
    }
    // The row holding the name answers even when an ended one is newer.
    store.update_vm(newest, &update(VmStatus::Failed)).await.unwrap();
    let held = inserted(&*store, &new_vm("web1", "carol"), None).await;
    store.update_vm(held.id, &update(VmStatus::Ready)).await.unwrap();
    let old_failed = first.id;
    store.update_vm(old_failed, &update(VmStatus::Failed)).await.unwrap();
    assert_eq!(store.vm(&vm_name("web1")).await.unwrap().unwrap().id, held.id);
    // The unique index is the last guard: a row cannot be moved back into holding the name.
    assert!(store.update_vm(newest, &update(VmStatus::Ready)).await.is_err(), "two rows would hold web1");
    assert!(store.update_vm(i64::MAX, &update(VmStatus::Ready)).await.is_err(), "no such VM");
}

async fn an_owner_holds_at_most_the_limit(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let a = inserted(&*store, &new_vm("a1", "alice"), Some(2)).await;
    inserted(&*store, &new_vm("a2", "alice"), Some(2)).await;
    assert_eq!(
        store.insert_vm(&new_vm("a3", "alice"), Some(2)).await.unwrap(),
        VmInserted::OwnerAtLimit { held: 2 }
    );
    assert!(store.vm(&vm_name("a3")).await.unwrap().is_none(), "nothing recorded");
    // Another owner, and no limit, are not held back.
    inserted(&*store, &new_vm("b1", "bob"), Some(2)).await;
    inserted(&*store, &new_vm("a3", "alice"), None).await;
    assert_eq!(
        store.insert_vm(&new_vm("a4", "alice"), Some(3)).await.unwrap(),
        VmInserted::OwnerAtLimit { held: 3 }
    );
    // A VM that ended no longer counts.
    store.update_vm(a.id, &update(VmStatus::Destroyed)).await.unwrap();
    inserted(&*store, &new_vm("a4", "alice"), Some(3)).await;
    assert_eq!(
        store.insert_vm(&new_vm("a5", "alice"), Some(0)).await.unwrap(),
        VmInserted::OwnerAtLimit { held: 3 }
    );
}

async fn lists_filter_and_put_the_newest_first(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let mut ids = Vec::new();
    for (name, owner, team) in [
        ("v1", "alice", "platform"),
        ("v2", "bob", "platform"),
        ("v3", "alice", "data"),
        ("v4", "bob", "data"),
    ] {
        let vm = NewVm { team: team.into(), ..new_vm(name, owner) };
        ids.push(inserted(&*store, &vm, None).await.id);
    }
    store.update_vm(ids[1], &update(VmStatus::Ready)).await.unwrap();
    store.update_vm(ids[2], &update(VmStatus::Failed)).await.unwrap();
    let list = |filter: VmFilter| {
        let store = store.clone();
        async move {
            store
                .list_vms(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|vm| vm.name.to_string())
                .collect::<Vec<_>>()
        }
    };
    let all = VmFilter { limit: 100, ..VmFilter::default() };
    assert_eq!(list(all.clone()).await, ["v4", "v3", "v2", "v1"]);
    assert_eq!(list(VmFilter { owner: Some("alice".into()), ..all.clone() }).await, ["v3", "v1"]);
    assert_eq!(list(VmFilter { team: Some("data".into()), ..all.clone() }).await, ["v4", "v3"]);
    assert_eq!(list(VmFilter { status: Some(VmStatus::Creating), ..all.clone() }).await, ["v4", "v1"]);
    let bob_ready = VmFilter { owner: Some("bob".into()), status: Some(VmStatus::Ready), ..all.clone() };
    assert_eq!(list(bob_ready).await, ["v2"]);
    let nobody = VmFilter { owner: Some("alice".into()), team: Some("platform".into()), ..all.clone() };
    assert_eq!(list(nobody).await, ["v1"]);
    assert_eq!(list(VmFilter { limit: 2, ..all.clone() }).await, ["v4", "v3"]);
    assert_eq!(list(VmFilter { limit: 1_000_000, ..all.clone() }).await.len(), 4, "capped, not refused");
    assert!(list(VmFilter { limit: 0, ..all }).await.is_empty());
}

async fn events_are_appended_and_read_in_order(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let one = inserted(&*store, &new_vm("web1", "alice"), None).await.id;
    let two = inserted(&*store, &new_vm("web2", "alice"), None).await.id;
    let started = event(
        1,
        ProvisionEventKind::Started {
            mode: Mode::Create,
            vm: vm_name("web1"),
            fqdn: Fqdn::new(vm_name("web1"), DnsZone::new("lab.test").unwrap()),
            flavor: Flavor { name: FlavorName::new("small").unwrap(), size: size() },
        },
    );
    let placed = event(2, ProvisionEventKind::Placed { placement: placement("hv-2", [10, 0, 0, 9]) });
    let finished = event(
        3,
        ProvisionEventKind::Finished { outcome: ProvisionOutcome::Ready { record: record("web1") } },
    );
    store.append_vm_events(one, &[started.clone(), placed.clone()]).await.unwrap();
    store.append_vm_events(one, std::slice::from_ref(&finished)).await.unwrap();
    store.append_vm_events(one, &[]).await.unwrap();
    store.append_vm_events(two, &[step_event(1)]).await.unwrap();
    assert_eq!(
        store.vm_events_after(one, 0, 100).await.unwrap(),
        [started.clone(), placed.clone(), finished.clone()]
    );
    assert_eq!(store.vm_events_after(one, 1, 1).await.unwrap(), [placed]);
    assert_eq!(store.vm_events_after(one, 3, 100).await.unwrap(), []);
    assert_eq!(store.vm_events_after(two, 0, 100).await.unwrap(), [step_event(1)]);
    // A destroy's events continue the numbering; a seq stored already is refused, batch and all.
    assert!(store.append_vm_events(one, &[step_event(4), step_event(3)]).await.is_err());
    assert_eq!(store.vm_events_after(one, 3, 100).await.unwrap(), [], "nothing of the refused batch");
    store.append_vm_events(one, &[step_event(4)]).await.unwrap();
    // Another instance reads them.
    let other = db.open("b", LONG).await;
    assert_eq!(other.vm_events_after(one, 2, 100).await.unwrap(), [finished, step_event(4)]);
}

async fn an_update_keeps_what_it_does_not_set_and_names_its_instance(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let row = inserted(&*store, &new_vm("web1", "alice"), None).await;
    let placed = VmUpdate { placement: Some(placement("hv-1", [10, 0, 0, 3])), ..update(VmStatus::Creating) };
    store.update_vm(row.id, &placed).await.unwrap();
    let failed = ProvisionOutcome::Failed {
        step: Step::Disk,
        reason: "disk full".into(),
        left_behind: vec![Step::Dns],
    };
    let ended = VmUpdate { outcome: Some(failed.clone()), finished_ms: Some(5), ..update(VmStatus::Failed) };
    store.update_vm(row.id, &ended).await.unwrap();
    let read = store.vm(&vm_name("web1")).await.unwrap().unwrap();
    assert_eq!(read.placement, Some(placement("hv-1", [10, 0, 0, 3])), "kept");
    assert_eq!((read.status, read.outcome, read.finished_ms), (VmStatus::Failed, Some(failed), Some(5)));
    assert_eq!(read.record, None);
    // Another instance's update makes it the holder.
    let other = db.open("b", LONG).await;
    other.update_vm(row.id, &update(VmStatus::Failed)).await.unwrap();
    let read = store.vm(&vm_name("web1")).await.unwrap().unwrap();
    assert_eq!(read.instance, other.instance().as_str());
    assert_eq!(read.finished_ms, Some(5), "kept");
}

async fn unfinished_vms_are_interrupted(db: &dyn Database) {
    let short = Duration::from_millis(1000);
    let old = db.open("a", short).await;
    let creating = inserted(&*old, &new_vm("creating", "alice"), None).await;
    let destroying = inserted(&*old, &new_vm("destroying", "alice"), None).await;
    old.update_vm(destroying.id, &update(VmStatus::Destroying)).await.unwrap();
    let ready = inserted(&*old, &new_vm("ready", "alice"), None).await;
    old.update_vm(ready.id, &update(VmStatus::Ready)).await.unwrap();
    let failed = inserted(&*old, &new_vm("failed", "alice"), None).await;
    old.update_vm(failed.id, &update(VmStatus::Failed)).await.unwrap();
    if !db.single_server() {
        // A live instance's creates and destroys are its own: another instance leaves them, for
        // longer than a lease while it renews.
        let other = db.open("b", LONG).await;
        for _ in 0..5 {
            old.renew_leases().await.unwrap();
            assert_eq!(other.interrupt_unfinished_vms(7).await.unwrap(), [], "renewed: alive");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Its lease runs out when it stops renewing.
        tokio::time::sleep(short).await;
    }
    // SQLite: the next server on the file; PostgreSQL: a live instance, finding `old` dead.
    let next = db.open("b", LONG).await;
    let marked = next.interrupt_unfinished_vms(42).await.unwrap();
    let expected: Vec<VmRow> = [creating, destroying]
        .into_iter()
        .map(|row| VmRow { status: VmStatus::Interrupted, finished_ms: Some(42), ..row })
        .collect();
    assert_eq!(
        marked.iter().map(|vm| (vm.id, vm.status, vm.finished_ms)).collect::<Vec<_>>(),
        expected.iter().map(|vm| (vm.id, vm.status, vm.finished_ms)).collect::<Vec<_>>()
    );
    for row in &expected {
        assert_eq!(next.vm(&row.name).await.unwrap().unwrap().status, VmStatus::Interrupted);
    }
    assert_eq!(next.vm(&vm_name("ready")).await.unwrap().unwrap().status, VmStatus::Ready);
    assert_eq!(next.vm(&vm_name("failed")).await.unwrap().unwrap().status, VmStatus::Failed);
    assert_eq!(next.interrupt_unfinished_vms(43).await.unwrap(), [], "once");
}

async fn reservations_are_taken_given_back_and_listed(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let first = store.reserve_vm(&request("web1", 5, 30)).await.unwrap();
    assert_eq!(first.vm, vm_name("web1"));
    assert_eq!(first.size, size());
    assert_eq!(first.placement.address, Ipv4Addr::new(10, 0, 0, 1), "the lowest free address");
    // Addresses found taken are skipped; the request's guests count on their hypervisors.
    let mut second = request("web2", 5, 30);
    second.taken.insert(Ipv4Addr::new(10, 0, 0, 2));
    let guest = Guest { name: "other".into(), size: size() };
    second.guests.insert(HypervisorName::new(first.placement.hypervisor.as_str()).unwrap(), vec![guest]);
    let second = store.reserve_vm(&second).await.unwrap();
    assert_eq!(second.placement.address, Ipv4Addr::new(10, 0, 0, 3));
    assert_ne!(second.placement.hypervisor, first.placement.hypervisor, "the emptier one");
    let other = db.open("b", LONG).await;
    assert_eq!(other.vm_reservations().await.unwrap(), [first.clone(), second.clone()]);
    match other.reserve_vm(&request("web1", 5, 30)).await {
        Err(ReserveError::AlreadyReserved(vm)) => assert_eq!(vm, vm_name("web1")),
        other => panic!("web1 holds one: {other:?}"),
    }
    other.release_vm(&vm_name("web1")).await.unwrap();
    other.release_vm(&vm_name("web1")).await.unwrap();
    assert_eq!(store.vm_reservations().await.unwrap(), std::slice::from_ref(&second));
    // The address given back is handed out again.
    let third = store.reserve_vm(&request("web3", 5, 30)).await.unwrap();
    assert_eq!(third.placement.address, Ipv4Addr::new(10, 0, 0, 1));
    match store.reserve_vm(&request("web4", 5, 1)).await {
        Err(ReserveError::NoFreeAddress(range)) => assert_eq!(range.last(), Ipv4Addr::new(10, 0, 0, 1)),
        other => panic!("10.0.0.1 is reserved: {other:?}"),
    }
    match store.reserve_vm(&request("web4", 1, 30)).await {
        Err(ReserveError::Placement(PlacementError::Full { count: 2, .. })) => {}
        other => panic!("both hypervisors hold one of one: {other:?}"),
    }
    assert_eq!(store.vm_reservations().await.unwrap().len(), 2, "nothing recorded by the refusals");
    // The core's port over the store.
    let port: Arc<dyn Reservations> = Arc::new(StoreReservations::new(store.clone()));
    let fourth = port.reserve(request("web4", 5, 30)).await.unwrap();
    assert_eq!(fourth.placement.address, Ipv4Addr::new(10, 0, 0, 2));
    assert!(matches!(port.reserve(request("web4", 5, 30)).await, Err(ReserveError::AlreadyReserved(_))));
    let held: Vec<VmName> = port.held().await.unwrap().into_iter().map(|r| r.vm).collect();
    assert_eq!(held, [vm_name("web2"), vm_name("web3"), vm_name("web4")]);
    port.release(&vm_name("web4")).await.unwrap();
    port.release(&vm_name("web4")).await.unwrap();
    assert_eq!(other.vm_reservations().await.unwrap(), [second, third]);
}

/// 40 reservers at once over `instances` instances, for 2 hypervisors of 5 guests and 30
/// addresses: exactly 10 get one, on distinct addresses, at most 5 per hypervisor.
async fn concurrent_reservations_never_share_an_address_or_overfill(db: &dyn Database, instances: usize) {
    let mut stores = Vec::new();
    for i in 0..instances {
        stores.push(db.open(&format!("r{i}"), LONG).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(40));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (store, start) = (stores[i % instances].clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            store.reserve_vm(&request(&format!("vm{i}"), 5, 30)).await
        });
    }
    let mut reserved: Vec<Reservation> = Vec::new();
    let mut full = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(reservation) => reserved.push(reservation),
            Err(ReserveError::Placement(PlacementError::Full { .. })) => full += 1,
            Err(e) => panic!("only the placement may refuse: {e}"),
        }
    }
    assert_eq!((reserved.len(), full), (10, 30));
    let addresses: BTreeSet<Ipv4Addr> = reserved.iter().map(|r| r.placement.address).collect();
    assert_eq!(addresses.len(), 10, "distinct addresses");
    let mut per_hypervisor: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reserved {
        *per_hypervisor.entry(r.placement.hypervisor.to_string()).or_default() += 1;
    }
    assert_eq!(per_hypervisor.values().copied().collect::<Vec<_>>(), [5, 5], "{per_hypervisor:?}");
    let mut held = stores[0].vm_reservations().await.unwrap();
    held.sort_by(|a, b| a.vm.cmp(&b.vm));
    reserved.sort_by(|a, b| a.vm.cmp(&b.vm));
    assert_eq!(held, reserved);
}

/// 20 inserters at once for one owner with a limit of 3, over `instances` instances: exactly
/// 3 are recorded.
async fn concurrent_inserts_stay_within_the_owner_limit(db: &dyn Database, instances: usize) {
    let mut stores = Vec::new();
    for i in 0..instances {
        stores.push(db.open(&format!("i{i}"), LONG).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (store, start) = (stores[i % instances].clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            store.insert_vm(&new_vm(&format!("vm{i}"), "alice"), Some(3)).await
        });
    }
    let (mut recorded, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap().unwrap() {
            VmInserted::Inserted(_) => recorded += 1,
            VmInserted::OwnerAtLimit { held: 3 } => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((recorded, refused), (3, 17));
    let filter = VmFilter { owner: Some("alice".into()), limit: 100, ..VmFilter::default() };
    assert_eq!(stores[0].list_vms(&filter).await.unwrap().len(), 3);
}

/// Ten orders racing to move one ready VM to destroying, over every instance: one moves it.
async fn a_change_from_a_status_is_made_once(db: &dyn Database, instances: usize) {
    let mut stores = Vec::new();
    for i in 0..instances {
        stores.push(db.open(&format!("i{i}"), LONG).await);
    }
    let vm = inserted(&*stores[0], &new_vm("web1", "alice"), None).await;
    stores[0].update_vm(vm.id, &update(VmStatus::Ready)).await.unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (store, start) = (stores[i % instances].clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            store.update_vm_from(vm.id, VmStatus::Ready, &update(VmStatus::Destroying)).await
        });
    }
    let mut moved = 0;
    while let Some(result) = tasks.join_next().await {
        moved += usize::from(result.unwrap().unwrap());
    }
    assert_eq!(moved, 1, "exactly one order moves it");
    assert_eq!(stores[0].vm(&vm_name("web1")).await.unwrap().unwrap().status, VmStatus::Destroying);
    let again = stores[0].update_vm_from(vm.id, VmStatus::Ready, &update(VmStatus::Destroying)).await;
    assert!(!again.unwrap(), "no longer ready");
    assert!(!stores[0].update_vm_from(i64::MAX, VmStatus::Ready, &update(VmStatus::Ready)).await.unwrap());
}

/// Runs every check, each on a fresh database from `fresh`; `instances`: how many instances
/// the concurrency checks spread over.
async fn run_all<D: Database, F: std::future::Future<Output = D>>(fresh: impl Fn() -> F, instances: usize) {
    every_field_round_trips(&fresh().await).await;
    a_name_is_held_until_its_vm_ends(&fresh().await).await;
    an_owner_holds_at_most_the_limit(&fresh().await).await;
    lists_filter_and_put_the_newest_first(&fresh().await).await;
    events_are_appended_and_read_in_order(&fresh().await).await;
    an_update_keeps_what_it_does_not_set_and_names_its_instance(&fresh().await).await;
    unfinished_vms_are_interrupted(&fresh().await).await;
    reservations_are_taken_given_back_and_listed(&fresh().await).await;
    concurrent_reservations_never_share_an_address_or_overfill(&fresh().await, instances).await;
    concurrent_inserts_stay_within_the_owner_limit(&fresh().await, instances).await;
    a_change_from_a_status_is_made_once(&fresh().await, instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_keeps_vms_and_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let fresh = || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("vms-{n}.db"));
        async move { SqliteFile(path) }
    };
    // One server per file: one store, its requests at once.
    run_all(fresh, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_keeps_vms_and_reservations_for_every_instance() {
    let cluster = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let fresh = || {
        let url = PostgresUrl::parse(&cluster.database()).unwrap();
        async move { PgDatabase(url) }
    };
    // Three instances on one database, their requests at once.
    run_all(fresh, 3).await;
    an_earlier_life_s_vms_are_interrupted_at_once(&cluster).await;
}

/// A VM whose holder is this instance's name in another process (an earlier start of this
/// server) is interrupted at once, its lease notwithstanding; another name's, or another store
/// of this process, keep theirs.
async fn an_earlier_life_s_vms_are_interrupted_at_once(cluster: &Postgres) {
    let url = cluster.database();
    let db = PgDatabase(PostgresUrl::parse(&url).unwrap());
    let store = db.open("a", LONG).await;
    let mut ids = Vec::new();
    for name in ["earlier", "other-name", "this-process"] {
        ids.push(inserted(&*store, &new_vm(name, "alice"), None).await.id);
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for (id, instance) in [(ids[0], "a/1-1"), (ids[1], "ab/1-1")] {
        sqlx::query("UPDATE vms SET instance = $1 WHERE id = $2")
            .bind(instance)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    let restarted = db.open("a", LONG).await;
    let marked = restarted.interrupt_unfinished_vms(9).await.unwrap();
    assert_eq!(
        marked.iter().map(|vm| (vm.id, vm.status)).collect::<Vec<_>>(),
        [(ids[0], VmStatus::Interrupted)]
    );
    let creating = VmFilter { status: Some(VmStatus::Creating), limit: 10, ..VmFilter::default() };
    assert_eq!(restarted.list_vms(&creating).await.unwrap().len(), 2);
}
