//! The store conformance suite: what every [`Store`] must do, run against SQLite (a temp file)
//! and a real PostgreSQL (a cluster this test starts). Each check gets a fresh database and
//! opens as many instances on it as it needs (two stores on one database are two servers).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use vesemir_core::event::{EventKind, HostOutcome, Phase, Rotation, Totals, WaitReason};
use vesemir_core::journal::{Finished, JournalEntry};
use vesemir_core::name::HostName;
use vesemir_core::{Event, HostProgress};
use vesemir_http::store::{
    Finish, HostRecord, Inserted, ListFilter, NewDeployment, Renewal, SignInAttempt, SignInFailures,
    SignInKey, Status, Store, StoreOptions, WebSession,
};
use vesemir_http::Role;
use vesemir_http::{InstanceId, PostgresStore, PostgresUrl, SqliteStore};
use vesemir_testkit::postgres::Postgres;

/// A database the suite can open instances on.
#[async_trait::async_trait(?Send)]
trait Engine {
    /// A fresh, empty database.
    async fn fresh(&self) -> Box<dyn Database>;
}

#[async_trait::async_trait(?Send)]
trait Database {
    /// An instance named `name` with leases of `lease`.
    async fn open(&self, name: &str, lease: Duration) -> Arc<dyn Store>;
    /// Whether a lease of another instance counts as a dead one's (SQLite: one server per file).
    fn single_server(&self) -> bool;
}

struct Sqlite(tempfile::TempDir);

#[async_trait::async_trait(?Send)]
impl Engine for Sqlite {
    async fn fresh(&self) -> Box<dyn Database> {
        let path =
            tempfile::Builder::new().suffix(".db").tempfile_in(self.0.path()).unwrap().into_temp_path();
        let path = path.keep().unwrap();
        Box::new(SqliteFile(path))
    }
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

struct Pg(Postgres);

#[async_trait::async_trait(?Send)]
impl Engine for Pg {
    async fn fresh(&self) -> Box<dyn Database> {
        Box::new(PgDatabase(PostgresUrl::parse(&self.0.database()).unwrap()))
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
const SHORT: Duration = Duration::from_millis(700);

fn new(application: &str, environment: &str, key: Option<&str>) -> NewDeployment {
    NewDeployment {
        application: application.into(),
        environment: environment.into(),
        team: "payments".into(),
        version: "2.0.0".into(),
        requested_by: "payments-ci".into(),
        playbook: Some("web".into()),
        query: "hosts: web-01".into(),
        request: r#"{"application":"shop"}"#.into(),
        idempotency_key: key.map(Into::into),
        body_sha256: "ab".repeat(32),
        created_ms: 1_700_000_000_000,
    }
}

async fn inserted(store: &dyn Store, d: &NewDeployment) -> i64 {
    match store.insert(d).await.unwrap() {
        Inserted::New(id) => id,
        other => panic!("expected a new deployment, got {other:?}"),
    }
}

fn host(name: &str) -> HostName {
    HostName::new(name).unwrap()
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event { seq, elapsed: Duration::from_millis(seq * 10), kind }
}

fn planned(position: i64, name: &str) -> HostRecord {
    HostRecord {
        position,
        address: format!("10.0.0.{position}"),
        server: name.into(),
        state: HostProgress::pending(host(name)),
    }
}

fn finish(status: Status) -> Finish {
    Finish {
        status,
        error: None,
        totals: Some(Totals { succeeded: 2, ..Totals::default() }),
        hosts: Vec::new(),
        out_of_rotation: Vec::new(),
        finished_ms: 1_700_000_100_000,
    }
}

/// Inserting stores every field; reads and lists give them back, newest first, filtered.
async fn deployments_are_stored_read_and_listed(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let first = inserted(&*store, &new("shop", "production", None)).await;
    let second = inserted(&*store, &new("shop", "staging", Some("k1"))).await;
    let third = inserted(&*store, &new("ledger", "production", None)).await;
    assert!(first < second && second < third, "ids increase: {first} {second} {third}");
    let record = store.get(second).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Queued);
    assert_eq!((record.application.as_str(), record.environment.as_str()), ("shop", "staging"));
    assert_eq!(record.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(record.body_sha256, "ab".repeat(32));
    assert_eq!(record.playbook.as_deref(), Some("web"));
    assert_eq!(record.created_ms, 1_700_000_000_000);
    assert_eq!(record.instance.as_deref(), Some(store.instance().as_str()));
    assert!(!record.cancel_requested && record.out_of_rotation.is_empty() && record.totals.is_none());
    assert_eq!(store.get(third + 100).await.unwrap(), None);

    let ids = |records: Vec<vesemir_http::store::DeploymentRecord>| {
        records.iter().map(|d| d.id).collect::<Vec<_>>()
    };
    let all = ListFilter { limit: 10, ..ListFilter::default() };
    assert_eq!(ids(store.list(&all).await.unwrap()), [third, second, first]);
    let shop = ListFilter { application: Some("shop".into()), ..all.clone() };
    assert_eq!(ids(store.list(&shop).await.unwrap()), [second, first]);
    let page = ListFilter { before: Some(third), limit: 1, ..all.clone() };
    assert_eq!(ids(store.list(&page).await.unwrap()), [second]);
    store.mark_running(first, 5).await.unwrap();
    let running = ListFilter { status: Some(Status::Running), ..all.clone() };
    assert_eq!(ids(store.list(&running).await.unwrap()), [first]);
    let staging = ListFilter { environment: Some("staging".into()), team: Some("payments".into()), ..all };
    assert_eq!(ids(store.list(&staging).await.unwrap()), [second]);
}

/// A key used again by the same requester gives the first deployment; another requester's key
/// is another deployment.
async fn idempotency_keys_are_unique_per_requester(db: &dyn Database) {
    let (a, b) = (db.open("a", LONG).await, db.open("b", LONG).await);
    let first = inserted(&*a, &new("shop", "production", Some("key"))).await;
    match b.insert(&new("shop", "production", Some("key"))).await.unwrap() {
        Inserted::Existing(record) => assert_eq!(record.id, first),
        other => panic!("expected the first deployment, got {other:?}"),
    }
    assert_eq!(b.by_idempotency_key("payments-ci", "key").await.unwrap().map(|d| d.id), Some(first));
    let mut other = new("shop", "canary", Some("key"));
    other.requested_by = "search-ci".into();
    inserted(&*b, &other).await;
    assert_eq!(a.by_idempotency_key("payments-ci", "nope").await.unwrap(), None);
}

/// One queued or running deployment per application and environment, whichever instance asks;
/// another environment, or the same once the first ended, is admitted.
async fn one_active_deployment_per_target(db: &dyn Database) {
    let (a, b) = (db.open("a", LONG).await, db.open("b", LONG).await);
    let first = inserted(&*a, &new("shop", "production", None)).await;
    match b.insert(&new("shop", "production", Some("other"))).await.unwrap() {
        Inserted::Conflict(record) => assert_eq!(record.id, first),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(b.by_idempotency_key("payments-ci", "other").await.unwrap(), None, "nothing stored");
    inserted(&*b, &new("shop", "staging", None)).await;
    a.mark_running(first, 1).await.unwrap();
    assert!(matches!(b.insert(&new("shop", "production", None)).await.unwrap(), Inserted::Conflict(_)));
    a.finish(first, &finish(Status::Succeeded)).await.unwrap();
    inserted(&*b, &new("shop", "production", None)).await;
}

/// Fifty admissions of one target at once, spread over three instances: exactly one is admitted.
async fn concurrent_admissions_admit_exactly_one(db: &dyn Database) {
    let stores = [db.open("a", LONG).await, db.open("b", LONG).await, db.open("c", LONG).await];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = stores[i % 3].clone();
            tokio::spawn(async move { store.insert(&new("shop", "production", None)).await.unwrap() })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Inserted::New(id) => admitted.push(id),
            Inserted::Conflict(_) => conflicts += 1,
            Inserted::Existing(record) => panic!("no key was given: {record:?}"),
        }
    }
    assert_eq!((admitted.len(), conflicts), (1, 49), "admitted {admitted:?}");
}

/// A run's writes: running, the plan, events with the hosts they changed, the end.
async fn a_run_is_recorded(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let id = inserted(&*store, &new("shop", "production", None)).await;
    store.mark_running(id, 1_700_000_000_500).await.unwrap();
    store.set_plan(id, &[planned(0, "web-01"), planned(1, "web-02")]).await.unwrap();
    let events: Vec<Event> = (1..=5)
        .map(|seq| event(seq, EventKind::HostPhase { host: host("web-01"), phase: Phase::Draining }))
        .collect();
    let mut draining = planned(0, "web-01");
    draining.state.phase = Phase::Draining;
    draining.state.rotation = Rotation::OutOfRotation;
    draining.state.started = Some(Duration::from_millis(10));
    store.append_events(id, &events[..3], &[draining.clone()]).await.unwrap();
    store.append_events(id, &events[3..], &[]).await.unwrap();
    let seqs = |events: Vec<Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.events_after(id, 0, 100).await.unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(store.events_after(id, 2, 2).await.unwrap()), [3, 4]);
    assert_eq!(store.events_after(id, 1, 1).await.unwrap(), events[1..2]);
    assert_eq!(store.hosts(id).await.unwrap(), [draining, planned(1, "web-02")]);
    store.mark_cancel_requested(id).await.unwrap();

    let mut done = planned(0, "web-01");
    done.state.phase = Phase::Done;
    done.state.outcome = Some(HostOutcome::Succeeded);
    done.state.finished = Some(Duration::from_millis(900));
    let mut end = finish(Status::CompletedWithFailures);
    end.error = Some("one failed".into());
    end.hosts = vec![done.clone()];
    store.finish(id, &end).await.unwrap();
    store.set_out_of_rotation(id, &["web-02".into()]).await.unwrap();
    let record = store.get(id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::CompletedWithFailures);
    assert_eq!(record.error.as_deref(), Some("one failed"));
    assert_eq!(record.totals, end.totals);
    assert_eq!((record.started_ms, record.finished_ms), (Some(1_700_000_000_500), Some(1_700_000_100_000)));
    assert_eq!(record.host_count, Some(2));
    assert_eq!(record.out_of_rotation, ["web-02"]);
    assert!(record.cancel_requested);
    assert_eq!(store.hosts(id).await.unwrap()[0], done);
    store.ping().await.unwrap();
}

/// The journal keeps entries in order; an unfinished deployment no live instance holds is
/// interrupted with the hosts its journal (else its events) leaves out, once, by one instance.
async fn unheld_deployments_are_interrupted_with_the_hosts_left_out(db: &dyn Database) {
    let a = db.open("a", SHORT).await;
    let journaled = inserted(&*a, &new("shop", "production", None)).await;
    let evented = inserted(&*a, &new("shop", "staging", None)).await;
    a.mark_running(journaled, 1).await.unwrap();
    let header = JournalEntry::Finished(Finished::Recovery);
    a.append_journal(journaled, &header).await.unwrap();
    assert_eq!(a.journal(journaled).await.unwrap(), [header]);
    let drained = event(1, EventKind::HostPhase { host: host("web-03"), phase: Phase::Draining });
    a.append_events(evented, &[drained], &[]).await.unwrap();

    assert_eq!(
        a.interrupt_unfinished(2).await.unwrap(),
        [],
        "its own live deployments are never interrupted"
    );
    // `a` dies: it no longer renews, its leases expire.
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    let b = db.open("b", LONG).await;
    let c = db.open("c", LONG).await;
    let (first, second) = tokio::join!(b.interrupt_unfinished(3), c.interrupt_unfinished(3));
    let mut found: Vec<_> = first.unwrap().into_iter().chain(second.unwrap()).collect();
    found.sort_by_key(|d| d.id);
    assert_eq!(found.iter().map(|d| d.id).collect::<Vec<_>>(), [journaled, evented], "each once");
    assert_eq!(found[1].out_of_rotation, ["web-03"], "from its events");
    let record = b.get(journaled).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Interrupted);
    assert_eq!(record.finished_ms, Some(3));
    assert!(record.error.is_some());
    // The recovery of an interrupted deployment writes without a lease.
    b.append_journal(journaled, &JournalEntry::Finished(Finished::Recovery)).await.unwrap();
    b.set_out_of_rotation(journaled, &[]).await.unwrap();
}

/// Fencing: an instance writes only about deployments it holds, or that nobody holds. Once its
/// lease has expired every write is refused, and its renewal reports the lease lost.
async fn writes_are_fenced_by_the_lease(db: &dyn Database) {
    let a = db.open("a", SHORT).await;
    let b = db.open("b", LONG).await;
    let id = inserted(&*a, &new("shop", "production", None)).await;
    let entry = JournalEntry::Finished(Finished::Recovery);
    let lost = |result: Result<(), vesemir_http::StoreError>| match result {
        Err(e) => assert!(e.is_lease_lost(), "refused for the lease: {e}"),
        Ok(()) => panic!("a write without the lease was accepted"),
    };
    lost(b.append_journal(id, &entry).await);
    lost(
        b.append_events(
            id,
            &[event(
                1,
                EventKind::Waiting { reason: WaitReason::Pause { duration: Duration::from_secs(1) } },
            )],
            &[],
        )
        .await,
    );
    lost(b.finish(id, &finish(Status::Succeeded)).await);
    lost(b.mark_running(id, 1).await);
    b.mark_cancel_requested(id).await.unwrap();
    a.append_journal(id, &entry).await.unwrap();

    // Renewed, the lease outlives its first term, and the renewal carries the cancel request.
    for _ in 0..3 {
        tokio::time::sleep(SHORT / 3).await;
        let renewal = a.renew_leases().await.unwrap();
        assert_eq!(renewal, Renewal { held: vec![(id, true)], lost: vec![] });
    }
    a.append_journal(id, &entry).await.unwrap();
    // Not renewed, it expires: every write is refused from then on, and renewing reports it lost.
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    lost(a.append_journal(id, &entry).await);
    lost(
        a.append_events(
            id,
            &[event(
                1,
                EventKind::Waiting { reason: WaitReason::Pause { duration: Duration::from_secs(1) } },
            )],
            &[],
        )
        .await,
    );
    lost(a.set_plan(id, &[planned(0, "web-01")]).await);
    lost(a.finish(id, &finish(Status::Succeeded)).await);
    assert_eq!(a.renew_leases().await.unwrap(), Renewal { held: vec![], lost: vec![id] });
    assert_eq!(a.renew_leases().await.unwrap(), Renewal::default(), "reported once");
    assert_eq!(a.journal(id).await.unwrap().len(), 2);
    assert!(b.events_after(id, 0, 10).await.unwrap().is_empty());
    assert_eq!(b.get(id).await.unwrap().unwrap().status, Status::Queued);
}

/// Another instance's live lease: PostgreSQL leaves it to its holder; SQLite, one server per
/// file, takes it for a dead server's.
async fn another_instances_live_lease(db: &dyn Database) {
    let a = db.open("a", LONG).await;
    let b = db.open("b", LONG).await;
    let id = inserted(&*a, &new("shop", "production", None)).await;
    let interrupted: Vec<i64> = b.interrupt_unfinished(1).await.unwrap().iter().map(|d| d.id).collect();
    if db.single_server() {
        assert_eq!(interrupted, [id]);
    } else {
        assert!(interrupted.is_empty(), "a live instance's deployment was interrupted");
        assert_eq!(a.renew_leases().await.unwrap().held, [(id, false)]);
    }
}

/// Event retention: pruning deletes the events of deployments that ended before the cutoff
/// only; rows, hosts, journals and summaries stay; running deployments are never touched.
async fn events_of_deployments_ended_before_the_cutoff_are_pruned(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let phase = |seq| event(seq, EventKind::HostPhase { host: host("web-01"), phase: Phase::Draining });
    let mut ids = Vec::new();
    for (application, ended_ms) in [("old", Some(1_000)), ("recent", Some(5_000)), ("running", None)] {
        let id = inserted(&*store, &new(application, "production", None)).await;
        store.mark_running(id, 500).await.unwrap();
        store.set_plan(id, &[planned(0, "web-01")]).await.unwrap();
        store.append_events(id, &[phase(1), phase(2)], &[]).await.unwrap();
        if let Some(ended_ms) = ended_ms {
            store.finish(id, &Finish { finished_ms: ended_ms, ..finish(Status::Succeeded) }).await.unwrap();
        }
        ids.push(id);
    }
    assert_eq!(store.prune_events(3_000).await.unwrap(), 2, "the old deployment's two events");
    assert_eq!(store.prune_events(3_000).await.unwrap(), 0, "nothing left to prune");
    let [old, recent, running] = ids[..] else { unreachable!("three ids") };
    assert!(store.events_after(old, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.events_after(recent, 0, 100).await.unwrap().len(), 2);
    assert_eq!(store.events_after(running, 0, 100).await.unwrap().len(), 2);
    let record = store.get(old).await.unwrap().unwrap();
    assert_eq!((record.status, record.totals), (Status::Succeeded, finish(Status::Succeeded).totals));
    assert_eq!(store.hosts(old).await.unwrap().len(), 1, "hosts stay");
    assert_eq!(store.prune_events(i64::MAX).await.unwrap(), 2, "the recent one's; never the running one's");
    assert_eq!(store.events_after(running, 0, 100).await.unwrap().len(), 2);
}

/// Web sessions (issue 17): one instance's session is every instance's; expired and revoked
/// ones are not found; an unknown id is not found; pruning deletes only the dead ones.
async fn web_sessions_are_shared_expire_and_revoke(db: &dyn Database) {
    let a = db.open("a", LONG).await;
    let b = db.open("b", LONG).await;
    let session = |id: &str, expires_ms: i64| WebSession {
        id_sha256: id.repeat(64),
        csrf: "c".repeat(43),
        name: "alice".into(),
        teams: vec!["payments".into(), "search".into()],
        roles: vec![Role::Deploy, Role::Read],
        created_ms: 1_000,
        expires_ms,
    };
    a.create_session(&session("1", 10_000)).await.unwrap();
    a.create_session(&session("2", 10_000)).await.unwrap();
    a.create_session(&session("3", 5_000)).await.unwrap();
    assert_eq!(b.session(&"1".repeat(64), 2_000).await.unwrap(), Some(session("1", 10_000)));
    assert_eq!(b.session(&"4".repeat(64), 2_000).await.unwrap(), None, "unknown id");
    assert_eq!(b.session(&"1".repeat(64), 10_000).await.unwrap(), None, "expired at its end");
    assert!(a.create_session(&session("1", 20_000)).await.is_err(), "an id is never reused");
    b.revoke_session(&"2".repeat(64), 3_000).await.unwrap();
    b.revoke_session(&"2".repeat(64), 3_500).await.unwrap();
    b.revoke_session(&"9".repeat(64), 3_500).await.unwrap();
    assert_eq!(a.session(&"2".repeat(64), 3_001).await.unwrap(), None, "revoked");
    assert!(a.session(&"3".repeat(64), 3_001).await.unwrap().is_some());
    // At 6 000: "3" expired at 5 000 and "2" was revoked at 3 000; "1" lives on.
    assert_eq!(a.prune_sessions(6_000).await.unwrap(), 2);
    assert!(a.session(&"1".repeat(64), 6_000).await.unwrap().is_some());
}

/// Failed sign-ins (issue 17): an attempt is counted under every key at once, unless a key
/// reached its limit within the window asked (from `since`, inclusive); every instance counts
/// together; a forgiven attempt and a user's failures are gone everywhere; pruning deletes
/// only those counted before the cutoff.
async fn failed_sign_ins_are_counted_by_every_instance(db: &dyn Database) {
    let a = db.open("a", LONG).await;
    let b = db.open("b", LONG).await;
    let (alice, bob) = (SignInKey::user("Alice"), SignInKey::user("bob"));
    let here = SignInKey::Address([10, 0, 0, 1].into());
    let counted = |count, oldest_ms| SignInFailures { count, oldest_ms: Some(oldest_ms) };
    let taken = |attempt: SignInAttempt| match attempt {
        SignInAttempt::Taken(rows) => rows,
        other => panic!("expected a counted attempt, got {other:?}"),
    };
    assert_eq!(a.sign_in_failures(&alice, 0).await.unwrap(), SignInFailures::default());
    let limits = |user: &SignInKey| [(user.clone(), 2), (here.clone(), 3)];
    taken(a.take_sign_in_attempt(&limits(&alice), 0, 1_000).await.unwrap());
    taken(b.take_sign_in_attempt(&limits(&SignInKey::user(" alice")), 0, 2_000).await.unwrap());
    // alice is at her limit (2): counted nowhere, and the address keeps its two.
    assert_eq!(
        b.take_sign_in_attempt(&limits(&alice), 0, 2_500).await.unwrap(),
        SignInAttempt::Limited(vec![counted(2, 1_000)])
    );
    // From 1 500 on, only one of hers is in the window: counted.
    let forgiven = taken(a.take_sign_in_attempt(&limits(&alice), 1_500, 2_600).await.unwrap());
    assert_eq!(a.sign_in_failures(&here, 0).await.unwrap(), counted(3, 1_000));
    b.forgive_sign_in_attempt(&forgiven).await.unwrap();
    assert_eq!(a.sign_in_failures(&alice, 0).await.unwrap(), counted(2, 1_000), "forgiven");
    taken(b.take_sign_in_attempt(&limits(&bob), 0, 3_000).await.unwrap());
    // The address is at its limit (3) for everyone now.
    assert_eq!(
        a.take_sign_in_attempt(&limits(&SignInKey::user("carol")), 0, 3_500).await.unwrap(),
        SignInAttempt::Limited(vec![counted(3, 1_000)])
    );
    assert_eq!(a.sign_in_failures(&alice, 1_500).await.unwrap(), counted(1, 2_000));
    assert_eq!(a.sign_in_failures(&alice, 2_000).await.unwrap(), counted(1, 2_000), "inclusive");
    assert_eq!(a.sign_in_failures(&alice, 2_001).await.unwrap(), SignInFailures::default());
    b.clear_sign_in_failures(&alice).await.unwrap();
    assert_eq!(a.sign_in_failures(&alice, 0).await.unwrap(), SignInFailures::default());
    assert_eq!(a.sign_in_failures(&here, 0).await.unwrap(), counted(3, 1_000), "the address's stay");
    // Before 2 500: the address's first two (alice's were forgotten already).
    assert_eq!(a.prune_sign_in_failures(2_500).await.unwrap(), 2);
    assert_eq!(b.sign_in_failures(&here, 0).await.unwrap(), counted(1, 3_000));
    assert_eq!(b.sign_in_failures(&bob, 0).await.unwrap(), counted(1, 3_000));

    // Racing attempts on two instances never pass a limit together.
    let mallory = SignInKey::user("mallory");
    let race = (0..12).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let limits = [(mallory.clone(), 5)];
        async move { store.take_sign_in_attempt(&limits, 0, 10_000).await.unwrap() }
    });
    let attempts = futures_util::future::join_all(race).await;
    let counted_now = attempts.iter().filter(|a| matches!(a, SignInAttempt::Taken(_))).count();
    assert_eq!(counted_now, 5, "{attempts:?}");
    assert_eq!(a.sign_in_failures(&mallory, 0).await.unwrap().count, 5);
}

// ---- Issue 18: CI hooks and promotion ----

fn hook_delivery(id: &str, body: &str) -> vesemir_http::store::NewHookDelivery {
    vesemir_http::store::NewHookDelivery {
        hook: "shop-ci".into(),
        delivery_id: id.into(),
        body_sha256: body.repeat(64 / body.len()),
        version: "2.0.0".into(),
        received_ms: 1_700_000_000_000,
    }
}

async fn hook_deliveries_are_unique_by_id_and_by_body(db: &dyn Database) {
    use vesemir_http::store::{HookRecorded, HookState};
    let a = db.open("a", LONG).await;
    let b = db.open("b", LONG).await;
    assert_eq!(a.record_hook_delivery(&hook_delivery("d-1", "aa")).await.unwrap(), HookRecorded::New);
    // The same id (any body), or the same body (any id), on any instance: the first one.
    for (store, delivery) in [(&b, hook_delivery("d-1", "bb")), (&a, hook_delivery("d-2", "aa"))] {
        match store.record_hook_delivery(&delivery).await.unwrap() {
            HookRecorded::Existing(seen) => {
                assert_eq!((seen.delivery_id.as_str(), seen.state), ("d-1", HookState::Waiting));
                assert_eq!(seen.body_sha256, "aa".repeat(32));
            }
            other => panic!("expected the first delivery, got {other:?}"),
        }
    }
    // Another hook may use the same id.
    let other = vesemir_http::store::NewHookDelivery { hook: "other".into(), ..hook_delivery("d-1", "aa") };
    assert_eq!(b.record_hook_delivery(&other).await.unwrap(), HookRecorded::New);
    assert_eq!(a.record_hook_delivery(&hook_delivery("d-3", "cc")).await.unwrap(), HookRecorded::New);
    let waiting: Vec<String> =
        b.waiting_hook_deliveries("shop-ci").await.unwrap().into_iter().map(|d| d.delivery_id).collect();
    assert_eq!(waiting, ["d-1", "d-3"], "oldest first");
    let id = inserted(&*a, &new("shop", "production", None)).await;
    a.set_hook_delivery("shop-ci", "d-1", HookState::Started, Some(id), None).await.unwrap();
    a.set_hook_delivery("shop-ci", "d-3", HookState::Refused, None, Some("busy")).await.unwrap();
    assert!(b.waiting_hook_deliveries("shop-ci").await.unwrap().is_empty());
    match b.record_hook_delivery(&hook_delivery("d-1", "aa")).await.unwrap() {
        HookRecorded::Existing(seen) => {
            assert_eq!((seen.state, seen.deployment_id, seen.error), (HookState::Started, Some(id), None))
        }
        other => panic!("expected the started delivery, got {other:?}"),
    }
    match b.record_hook_delivery(&hook_delivery("d-3", "cc")).await.unwrap() {
        HookRecorded::Existing(seen) => assert_eq!(seen.error.as_deref(), Some("busy")),
        other => panic!("expected the refused delivery, got {other:?}"),
    }
}

async fn promotions_link_deployments(db: &dyn Database) {
    let store = db.open("a", LONG).await;
    let staging = inserted(&*store, &new("shop", "staging", None)).await;
    let production = inserted(&*store, &new("shop", "production", None)).await;
    assert_eq!(store.promoted_from(production).await.unwrap(), None);
    assert_eq!(store.promoted_to(staging).await.unwrap(), None);
    store.set_promoted_from(production, staging).await.unwrap();
    let other = db.open("b", LONG).await;
    assert_eq!(other.promoted_from(production).await.unwrap(), Some(staging));
    assert_eq!(other.promoted_to(staging).await.unwrap(), Some(production));
    assert!(store.set_promoted_from(production, staging).await.is_err(), "promoted once");
}

async fn notification_attempts_are_logged_in_order(db: &dyn Database) {
    use vesemir_http::store::NotificationAttempt;
    let store = db.open("a", LONG).await;
    let id = inserted(&*store, &new("shop", "production", None)).await;
    let attempt = |n: i64, delivered: bool| NotificationAttempt {
        deployment_id: id,
        target: "chat".into(),
        event: "succeeded".into(),
        attempt: n,
        delivered,
        http_status: delivered.then_some(200),
        error: (!delivered).then(|| "could not connect".to_owned()),
        at_ms: 1_700_000_000_000 + n,
    };
    for (n, delivered) in [(1, false), (2, false), (3, true)] {
        store.record_notification(&attempt(n, delivered)).await.unwrap();
    }
    let other = db.open("b", LONG).await;
    assert_eq!(
        other.notifications(id).await.unwrap(),
        [attempt(1, false), attempt(2, false), attempt(3, true)]
    );
    assert!(other.notifications(id + 1).await.unwrap().is_empty());
}

// ---- Issue 18: package repository sources ----

async fn source_states_are_shared_and_replaced(db: &dyn Database) {
    use vesemir_http::store::SourceState;
    let a = db.open("a", LONG).await;
    let b = db.open("b", LONG).await;
    assert_eq!(a.source_state("lab/shop/production").await.unwrap(), None);
    let first = SourceState {
        unit: "lab/shop/production".into(),
        index_url: "http://127.0.0.1:1/dists/stable/main/binary-amd64/Packages".into(),
        package: "shop".into(),
        seen_version: Some("1:1.0~rc1-1".into()),
        etag: Some("\"abc\"".into()),
        last_modified: Some("Tue, 01 Dec 2026 00:00:00 GMT".into()),
        checked_ms: 1_700_000_000_000,
        error: None,
    };
    a.set_source_state(&first).await.unwrap();
    assert_eq!(b.source_state("lab/shop/production").await.unwrap().as_ref(), Some(&first));
    let second = SourceState {
        seen_version: Some("1.1".into()),
        etag: None,
        error: Some("the index answered 404 Not Found".into()),
        checked_ms: first.checked_ms + 1,
        ..first.clone()
    };
    b.set_source_state(&second).await.unwrap();
    assert_eq!(a.source_state("lab/shop/production").await.unwrap(), Some(second));
    assert_eq!(a.source_state("lab/shop/staging").await.unwrap(), None);
}

async fn promotions_wait_for_a_person_once_and_newer_ones_supersede(db: &dyn Database) {
    use vesemir_http::store::{PromotionStatus, PromotionWait};
    let store = db.open("a", LONG).await;
    let wait = |id: i64| PromotionWait {
        deployment_id: id,
        to_application: "shop".into(),
        to_environment: "production".into(),
        status: PromotionStatus::WaitingConfirmation,
        created_ms: 1_700_000_000_000 + id,
        expires_ms: 1_700_000_100_000,
        decided_by: None,
        decided_ms: None,
    };
    let first = inserted(&*store, &new("shop", "staging", None)).await;
    store.finish(first, &finish(Status::Succeeded)).await.unwrap();
    let elsewhere = inserted(&*store, &new("till", "staging", None)).await;
    store.finish(elsewhere, &finish(Status::Succeeded)).await.unwrap();
    assert_eq!(store.promotion_wait(first).await.unwrap(), None);
    assert!(store.record_promotion_wait(&wait(first)).await.unwrap());
    assert!(store.record_promotion_wait(&wait(elsewhere)).await.unwrap());
    assert!(!store.record_promotion_wait(&wait(first)).await.unwrap(), "recorded once");
    let other = db.open("b", LONG).await;
    assert_eq!(other.promotion_wait(first).await.unwrap(), Some(wait(first)));
    // A newer success of shop/staging waits in its place; till's is another unit's.
    let second = inserted(&*store, &new("shop", "staging", None)).await;
    store.finish(second, &finish(Status::Succeeded)).await.unwrap();
    assert!(other.record_promotion_wait(&wait(second)).await.unwrap());
    let superseded = store.promotion_wait(first).await.unwrap().unwrap();
    assert_eq!(superseded.status, PromotionStatus::Superseded);
    assert_eq!(superseded.decided_ms, Some(wait(second).created_ms));
    let till = store.promotion_wait(elsewhere).await.unwrap().unwrap();
    assert_eq!(till.status, PromotionStatus::WaitingConfirmation);
    assert_eq!(till.status_at(till.expires_ms + 1), PromotionStatus::Expired);
    // One decision wins, on any instance.
    let (w, c) = (PromotionStatus::WaitingConfirmation, PromotionStatus::Confirmed);
    assert!(store.set_promotion_status(second, w, c, Some("alice"), 5).await.unwrap());
    assert!(!other.set_promotion_status(second, w, PromotionStatus::Declined, Some("bob"), 6).await.unwrap());
    assert!(other.set_promotion_status(second, c, PromotionStatus::Started, None, 7).await.unwrap());
    let started = other.promotion_wait(second).await.unwrap().unwrap();
    assert_eq!(
        (started.status, started.decided_by.as_deref(), started.decided_ms),
        (PromotionStatus::Started, Some("alice"), Some(7))
    );
    assert!(!store.set_promotion_status(first, w, c, Some("alice"), 8).await.unwrap(), "superseded");
}

/// Runs every check, each on a fresh database.
async fn run_all(engine: &dyn Engine) {
    deployments_are_stored_read_and_listed(&*engine.fresh().await).await;
    idempotency_keys_are_unique_per_requester(&*engine.fresh().await).await;
    one_active_deployment_per_target(&*engine.fresh().await).await;
    concurrent_admissions_admit_exactly_one(&*engine.fresh().await).await;
    a_run_is_recorded(&*engine.fresh().await).await;
    unheld_deployments_are_interrupted_with_the_hosts_left_out(&*engine.fresh().await).await;
    writes_are_fenced_by_the_lease(&*engine.fresh().await).await;
    another_instances_live_lease(&*engine.fresh().await).await;
    events_of_deployments_ended_before_the_cutoff_are_pruned(&*engine.fresh().await).await;
    web_sessions_are_shared_expire_and_revoke(&*engine.fresh().await).await;
    failed_sign_ins_are_counted_by_every_instance(&*engine.fresh().await).await;
    hook_deliveries_are_unique_by_id_and_by_body(&*engine.fresh().await).await;
    promotions_link_deployments(&*engine.fresh().await).await;
    notification_attempts_are_logged_in_order(&*engine.fresh().await).await;
    source_states_are_shared_and_replaced(&*engine.fresh().await).await;
    promotions_wait_for_a_person_once_and_newer_ones_supersede(&*engine.fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_store_conformance_suite() {
    run_all(&Sqlite(tempfile::tempdir().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    let cluster = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    run_all(&Pg(cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema_and_migrates_once_when_instances_start_together() {
    let cluster = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = PostgresUrl::parse(&cluster.database()).unwrap();
    let open = |name: &'static str| {
        let url = url.clone();
        async move {
            PostgresStore::open(&url, StoreOptions { instance: InstanceId::for_process(name), lease: LONG })
                .await
        }
    };
    let (a, b, c) = tokio::join!(open("a"), open("b"), open("c"));
    for store in [a, b, c] {
        store.expect("every instance opens");
    }
    let pool =
        sqlx::PgPool::connect(&cluster.url(url.to_string().rsplit('/').next().unwrap())).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&pool).await.unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9], "each applied once");
    sqlx::query("INSERT INTO schema_migrations (version, applied_ms) VALUES (99, 0)")
        .execute(&pool)
        .await
        .unwrap();
    let refused = open("d").await.expect_err("a newer schema is refused");
    assert!(refused.to_string().contains("schema version 99"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_stored_events_to_every_instance() {
    let cluster = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let db = PgDatabase(PostgresUrl::parse(&cluster.database()).unwrap());
    let (a, b) = (db.open("a", LONG).await, db.open("b", LONG).await);
    let mut announced = b.event_announcements().expect("PostgreSQL announces events");
    // The listener connects in the background: announce until it hears one.
    let id = inserted(&*a, &new("shop", "production", None)).await;
    let mut seq = 0;
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            seq += 1;
            let kind = EventKind::Waiting { reason: WaitReason::Pause { duration: Duration::from_secs(1) } };
            a.append_events(id, &[event(seq, kind)], &[]).await.unwrap();
            if let Ok(Ok(heard)) = tokio::time::timeout(Duration::from_millis(200), announced.recv()).await {
                return heard;
            }
        }
    })
    .await
    .expect("an announcement within 10 s");
    assert_eq!(heard, id);
    let sqlite = Sqlite(tempfile::tempdir().unwrap()).fresh().await.open("c", LONG).await;
    assert!(sqlite.event_announcements().is_none(), "one server per SQLite file: nothing to announce");
}
