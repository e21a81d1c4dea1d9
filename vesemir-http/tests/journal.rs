//! The server's write-ahead journal: a store that starts failing mid-rollout stops the
//! deployment (no host starts after it, never `succeeded`, every load balancer change has its
//! journal entry); a restart lists what the journal left out and `POST .../recover` puts it back
//! to its original state.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::*;
use vesemir_core::fake::{FakeExecutor, FakeFleet};
use vesemir_core::journal::JournalEntry;
use vesemir_core::name::ServerName;
use vesemir_core::ports::{AdminState, LbEndpoint, Operational};
use vesemir_core::{Event, Ports};
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
    async fn set_origin(&self, id: i64, origin: &vesemir_http::store::Origin) -> Result<(), StoreError> {
        self.inner.set_origin(id, origin).await
    }
    async fn origin(&self, id: i64) -> Result<Option<vesemir_http::store::Origin>, StoreError> {
        self.inner.origin(id).await
    }
    async fn set_error(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.inner.set_error(id, error).await
    }
    async fn prune_events(&self, ended_before_ms: i64) -> Result<u64, StoreError> {
        self.inner.prune_events(ended_before_ms).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn instance(&self) -> &vesemir_http::InstanceId {
        self.inner.instance()
    }
    fn lease(&self) -> Duration {
        self.inner.lease()
    }
    async fn renew_leases(&self) -> Result<vesemir_http::store::Renewal, StoreError> {
        self.inner.renew_leases().await
    }
    fn release_lease(&self, id: i64) {
        self.inner.release_lease(id)
    }
    // Issue 18: CI hooks and promotion.
    async fn record_hook_delivery(
        &self,
        d: &vesemir_http::store::NewHookDelivery,
    ) -> Result<vesemir_http::store::HookRecorded, StoreError> {
        self.inner.record_hook_delivery(d).await
    }
    async fn set_hook_delivery(
        &self,
        hook: &str,
        delivery_id: &str,
        state: vesemir_http::store::HookState,
        deployment_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.set_hook_delivery(hook, delivery_id, state, deployment_id, error).await
    }
    async fn waiting_hook_deliveries(
        &self,
        hook: &str,
    ) -> Result<Vec<vesemir_http::store::HookDelivery>, StoreError> {
        self.inner.waiting_hook_deliveries(hook).await
    }
    async fn set_promoted_from(&self, id: i64, from: i64) -> Result<(), StoreError> {
        self.inner.set_promoted_from(id, from).await
    }
    async fn promoted_from(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.inner.promoted_from(id).await
    }
    async fn promoted_to(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.inner.promoted_to(id).await
    }
    async fn record_notification(
        &self,
        a: &vesemir_http::store::NotificationAttempt,
    ) -> Result<(), StoreError> {
        self.inner.record_notification(a).await
    }
    async fn notifications(
        &self,
        id: i64,
    ) -> Result<Vec<vesemir_http::store::NotificationAttempt>, StoreError> {
        self.inner.notifications(id).await
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

/// Starts a server on `database` in its own runtime, starts a deployment of `body` and stops the
/// server (its runtime dies) once `hosts` hosts are in their steps. Returns the deployment's id.
fn start_and_kill(database: &std::path::Path, fleet: &Fleet, body: serde_json::Value, hosts: usize) -> i64 {
    let (database, fleet) = (database.to_owned(), fleet.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let id = runtime.block_on(async {
            let server = Server::open(&config(&database), Arc::new(FixedPorts(fleet.ports())))
                .await
                .expect("server opens");
            let router = server.router();
            let reply =
                call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body.to_string()), &[])
                    .await;
            let id = id_of(&reply);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let d = call(&router, Method::GET, &format!("/v1/deployments/{id}"), Some(ADMIN), None, &[])
                    .await;
                let in_steps = (0..hosts)
                    .filter(|&i| d.json["hosts"][i]["phase"].as_str().is_some_and(|p| p.starts_with("step")))
                    .count();
                if in_steps == hosts {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "never reached the steps: {}", d.text);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            id
        });
        // The server dies with its runtime, mid-deployment.
        runtime.shutdown_timeout(Duration::from_millis(100));
        id
    })
    .join()
    .expect("first server thread")
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value.as_array().expect("a list").iter().map(|v| v.as_str().expect("a name").to_owned()).collect()
}

#[test]
fn after_a_restart_the_journal_lists_the_drained_servers_and_recover_puts_them_back_at_their_original_weights(
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("vesemir.db");
    let (web1, web2) = (FakeFleet::server(1), FakeFleet::server(2));
    // web-01 runs at an odd weight: recovery must bring it back to 37, not to 100%.
    let fleet = Fleet::from(
        FakeFleet::new(4, vec![LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 }])
            .starting(1, None, AdminState::Ready, Operational::Up, 37)
            .expect("fleet"),
    );
    let original = |server: &ServerName| fleet.lb.server(server).expect("server").effective_weight();
    let (weight1, weight2) = (original(&web1), original(&web2));
    assert_eq!(weight1, 37);
    // Steps take long: the first batch (two hosts) stays drained, in its steps, when the server stops.
    fleet.executor.set_latency(Duration::from_secs(50));
    let mut body = fleet.body("shop", "production", "payments");
    body["strategy"]["concurrency"] = serde_json::json!(2);
    let first = start_and_kill(&database, &fleet, body, 2);
    let drained: BTreeSet<ServerName> = [web1.clone(), web2.clone()].into();
    assert_eq!(fleet.lb.out_of_rotation(), drained, "two hosts were left drained");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        fleet.executor.set_latency(Duration::ZERO);
        // web-02's application does not come back at first: its health gate fails.
        fleet.executor.fail_command(&FakeFleet::host(2), "check-app", 1);
        let server =
            Server::open(&config(&database), Arc::new(FixedPorts(fleet.ports()))).await.expect("reopens");
        let router = server.router();
        let path = format!("/v1/deployments/{first}");
        let d = call(&router, Method::GET, &path, Some(ADMIN), None, &[]).await;
        assert_eq!(d.json["status"], "interrupted", "{}", d.text);
        assert_eq!(names(&d.json["out_of_rotation"]), ["web-01", "web-02"], "from the journal: {}", d.text);

        let recover = format!("{path}/recover");
        let other_team = call(&router, Method::POST, &recover, Some(SEARCH), None, &[]).await;
        assert_eq!(
            other_team.status,
            StatusCode::NOT_FOUND,
            "another team's is not found: {}",
            other_team.text
        );

        let first_try = call(&router, Method::POST, &recover, Some(PAYMENTS), None, &[]).await;
        assert_eq!(first_try.status, StatusCode::OK, "{}", first_try.text);
        let servers = first_try.json["servers"].as_array().expect("servers");
        assert_eq!(servers.len(), 2, "{}", first_try.text);
        let of = |name: &str| servers.iter().find(|s| s["server"] == name).expect("listed").clone();
        assert_eq!(of("web-01")["result"], "restored", "{}", first_try.text);
        assert_eq!(of("web-01")["gated"], true, "{}", first_try.text);
        assert_eq!(of("web-02")["result"], "left_out", "{}", first_try.text);
        let reason = of("web-02")["reason"].as_str().expect("a reason").to_owned();
        assert!(reason.contains("health command failed"), "{reason}");
        assert_eq!(first_try.json["finished"], false);
        assert_eq!(names(&first_try.json["out_of_rotation"]), ["web-02"]);
        assert_eq!(fleet.lb.server(&web1).expect("web-01").effective_weight(), weight1, "back at 37");
        assert_eq!(fleet.lb.out_of_rotation(), [web2.clone()].into(), "web-02 stays out, as found");
        let d = call(&router, Method::GET, &path, Some(ADMIN), None, &[]).await;
        assert_eq!(names(&d.json["out_of_rotation"]), ["web-02"], "{}", d.text);

        // Its application is fixed (a server whose hosts pass their checks): the next recovery
        // puts it back.
        let healthy = Ports { executor: Arc::new(FakeExecutor::new()), ..fleet.ports() };
        let router =
            Server::open(&config(&database), Arc::new(FixedPorts(healthy))).await.expect("opens").router();
        let second_try = call(&router, Method::POST, &recover, Some(PAYMENTS), None, &[]).await;
        assert_eq!(second_try.status, StatusCode::OK, "{}", second_try.text);
        assert_eq!(second_try.json["servers"].as_array().expect("servers").len(), 1, "{}", second_try.text);
        assert_eq!(second_try.json["servers"][0]["result"], "restored", "{}", second_try.text);
        assert_eq!(second_try.json["finished"], true);
        assert!(fleet.lb.out_of_rotation().is_empty());
        assert_eq!(fleet.lb.server(&web1).expect("web-01").effective_weight(), weight1);
        assert_eq!(fleet.lb.server(&web2).expect("web-02").effective_weight(), weight2);
        let d = call(&router, Method::GET, &path, Some(ADMIN), None, &[]).await;
        assert_eq!(names(&d.json["out_of_rotation"]), Vec::<String>::new(), "{}", d.text);

        let nothing_left = call(&router, Method::POST, &recover, Some(ADMIN), None, &[]).await;
        assert_eq!(nothing_left.status, StatusCode::OK, "{}", nothing_left.text);
        assert_eq!(nothing_left.json["servers"], serde_json::json!([]));
        assert_eq!(nothing_left.json["finished"], true);
    });
}
