//! The server's write-ahead journal: a store that starts failing mid-rollout stops the
//! deployment (no host starts after it, never `succeeded`, every load balancer change has its
//! journal entry); a restart lists what the journal left out and `POST .../recover` puts it back
//! to its original state.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use vesemir_core::fake::FakeFleet;
use vesemir_core::journal::JournalEntry;
use vesemir_core::name::ServerName;
use vesemir_core::Event;
use vesemir_http::store::{
    DeploymentRecord, Finish, HostRecord, Inserted, Interrupted, ListFilter, NewDeployment, SqliteStore,
    Store, StoreError,
};
use vesemir_http::{FixedPorts, Server};

/// What the fleet had seen when the store first failed.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Hosts that had run at least one command.
    commanded: BTreeSet<String>,
    /// Load balancer changes made so far.
    changes: usize,
}

fn snapshot(fleet: &FakeFleet) -> Snapshot {
    Snapshot {
        commanded: fleet
            .hosts()
            .iter()
            .filter(|h| !fleet.executor.commands(&h.name).is_empty())
            .map(|h| h.name.to_string())
            .collect(),
        changes: fleet.lb.rotation_log().changes.len(),
    }
}

/// A store whose journal appends (or event appends) fail after a number of them succeeded, like
/// a table that can no longer be written; the deployment record's own writes still work, so
/// the test can read how it ended.
#[derive(Debug)]
struct FailingStore {
    inner: SqliteStore,
    journal_left: AtomicI64,
    events_left: AtomicI64,
    fleet: FakeFleet,
    at_failure: Mutex<Option<Snapshot>>,
}

impl FailingStore {
    fn new(inner: SqliteStore, fleet: &FakeFleet, journal_writes: i64, event_writes: i64) -> Self {
        Self {
            inner,
            journal_left: AtomicI64::new(journal_writes),
            events_left: AtomicI64::new(event_writes),
            fleet: fleet.clone(),
            at_failure: Mutex::new(None),
        }
    }

    fn spend(&self, left: &AtomicI64, what: &str) -> Result<(), StoreError> {
        if left.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Ok(());
        }
        self.at_failure.lock().expect("lock").get_or_insert_with(|| snapshot(&self.fleet));
        Err(StoreError::new(what, "disk I/O error (injected)"))
    }

    fn at_failure(&self) -> Snapshot {
        self.at_failure.lock().expect("lock").clone().expect("the store failed")
    }
}

#[async_trait::async_trait]
impl Store for FailingStore {
    async fn insert(&self, d: &NewDeployment) -> Result<Inserted, StoreError> {
        self.inner.insert(d).await
    }
    async fn get(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn by_idempotency_key(&self, who: &str, key: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        self.inner.by_idempotency_key(who, key).await
    }
    async fn hosts(&self, id: i64) -> Result<Vec<HostRecord>, StoreError> {
        self.inner.hosts(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.inner.list(filter).await
    }
    async fn mark_running(&self, id: i64, started_ms: i64) -> Result<(), StoreError> {
        self.inner.mark_running(id, started_ms).await
    }
    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError> {
        self.inner.set_plan(id, hosts).await
    }
    async fn mark_cancel_requested(&self, id: i64) -> Result<(), StoreError> {
        self.inner.mark_cancel_requested(id).await
    }
    async fn append_events(&self, id: i64, events: &[Event], hosts: &[HostRecord]) -> Result<(), StoreError> {
        self.spend(&self.events_left, "appending events")?;
        self.inner.append_events(id, events, hosts).await
    }
    async fn events_after(&self, id: i64, after: u64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.inner.events_after(id, after, limit).await
    }
    async fn finish(&self, id: i64, finish: &Finish) -> Result<(), StoreError> {
        self.inner.finish(id, finish).await
    }
    async fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Interrupted>, StoreError> {
        self.inner.interrupt_unfinished(now_ms).await
    }
    async fn append_journal(&self, id: i64, entry: &JournalEntry) -> Result<(), StoreError> {
        self.spend(&self.journal_left, "appending to the journal")?;
        self.inner.append_journal(id, entry).await
    }
    async fn journal(&self, id: i64) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal(id).await
    }
    async fn set_out_of_rotation(&self, id: i64, hosts: &[String]) -> Result<(), StoreError> {
        self.inner.set_out_of_rotation(id, hosts).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Intents per server in a journal.
fn intents(entries: &[JournalEntry]) -> BTreeMap<ServerName, usize> {
    let mut counts = BTreeMap::new();
    for entry in entries {
        if let JournalEntry::Intent(intent) = entry {
            *counts.entry(intent.server.clone()).or_default() += 1;
        }
    }
    counts
}

/// Every change the fake load balancer saw was journaled first: per server, no more changes
/// than stored intents.
fn assert_every_change_journaled(fleet: &FakeFleet, entries: &[JournalEntry]) {
    let journaled = intents(entries);
    let mut changed: BTreeMap<ServerName, usize> = BTreeMap::new();
    for (server, _, _) in fleet.lb.rotation_log().changes {
        *changed.entry(server).or_default() += 1;
    }
    for (server, count) in &changed {
        let stored = journaled.get(server).copied().unwrap_or(0);
        assert!(*count <= stored, "{server}: {count} load balancer changes, {stored} journaled intents");
    }
}

/// Runs a deployment of 6 hosts, one at a time, over `store`, to its end.
async fn run_over(fleet: &Fleet, store: Arc<FailingStore>, dir: &tempfile::TempDir) -> serde_json::Value {
    let config = config(&dir.path().join("unused.db"));
    let server =
        Server::with_store(&config, Arc::new(FixedPorts(fleet.ports())), store).await.expect("opens");
    let t = TestServer {
        router: server.router(),
        server,
        fleet: fleet.clone(),
        dir: tempfile::tempdir().expect("dir"),
    };
    let id = id_of(&t.post(PAYMENTS, &fleet.body("shop", "production", "payments")).await);
    t.wait_finished(id).await
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_stops_the_rollout_and_no_change_is_made_without_its_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::new(6);
    fleet.executor.set_latency(Duration::from_millis(10));
    let inner = SqliteStore::open(&dir.path().join("v.db")).await.expect("opens");
    // The header and a dozen entries: the failure comes while the first hosts are deployed.
    let store = Arc::new(FailingStore::new(inner.clone(), &fleet, 13, i64::MAX));
    let d = run_over(&fleet, store.clone(), &dir).await;
    let id = d["id"].as_i64().expect("id");

    assert_eq!(d["status"], "stopped", "{d}");
    let error = d["error"].as_str().expect("an error");
    assert!(error.contains("journal could not be written"), "{error}");
    assert!(error.contains("disk I/O error (injected)"), "{error}");
    let at_failure = store.at_failure();
    assert!(
        !at_failure.commanded.is_empty() && at_failure.commanded.len() < 6,
        "mid-rollout: {at_failure:?}"
    );
    let after = snapshot(&fleet);
    assert_eq!(after.commanded, at_failure.commanded, "no host started after the failure");
    assert_eq!(after.changes, at_failure.changes, "no load balancer change after the failure");
    assert!(d["totals"]["cancelled"].as_u64().expect("totals") > 0, "{d}");
    assert_every_change_journaled(&fleet, &inner.journal(id).await.expect("journal"));

    let out: BTreeSet<String> = fleet.lb.out_of_rotation().iter().map(ToString::to_string).collect();
    let listed: BTreeSet<String> = d["out_of_rotation"]
        .as_array()
        .expect("list")
        .iter()
        .map(|h| h.as_str().expect("name").to_owned())
        .collect();
    assert_eq!(listed, out, "the hosts left out are reported: {d}");
}

#[tokio::test]
async fn events_that_cannot_be_stored_after_the_retries_stop_the_rollout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::new(6);
    fleet.executor.set_latency(Duration::from_millis(100));
    let inner = SqliteStore::open(&dir.path().join("v.db")).await.expect("opens");
    let store = Arc::new(FailingStore::new(inner.clone(), &fleet, i64::MAX, 3));
    let d = run_over(&fleet, store.clone(), &dir).await;
    let id = d["id"].as_i64().expect("id");

    assert_eq!(d["status"], "stopped", "{d}");
    let error = d["error"].as_str().expect("an error");
    assert!(error.contains("events could not be stored"), "{error}");
    assert!(d["totals"]["cancelled"].as_u64().expect("totals") > 0, "hosts were not started: {d}");
    let commanded = snapshot(&fleet).commanded;
    assert!(commanded.len() < 6, "{commanded:?}");
    assert_every_change_journaled(&fleet, &inner.journal(id).await.expect("journal"));
}
