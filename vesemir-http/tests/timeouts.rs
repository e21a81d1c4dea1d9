//! The request timeout bounds API calls but not event streams.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::*;
use vesemir_core::journal::JournalEntry;
use vesemir_core::Event;
use vesemir_http::store::{
    DeploymentRecord, Finish, HostRecord, Inserted, Interrupted, ListFilter, NewDeployment, SqliteStore,
    Store, StoreError,
};
use vesemir_http::{FixedPorts, Server};

/// A store whose host reads hang for a while.
#[derive(Debug)]
struct SlowHosts(SqliteStore);

#[async_trait::async_trait]
impl Store for SlowHosts {
    async fn insert(&self, d: &NewDeployment) -> Result<Inserted, StoreError> {
        self.0.insert(d).await
    }
    async fn get(&self, id: i64) -> Result<Option<DeploymentRecord>, StoreError> {
        self.0.get(id).await
    }
    async fn by_idempotency_key(&self, who: &str, key: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        self.0.by_idempotency_key(who, key).await
    }
    async fn hosts(&self, id: i64) -> Result<Vec<HostRecord>, StoreError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        self.0.hosts(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.0.list(filter).await
    }
    async fn mark_running(&self, id: i64, started_ms: i64) -> Result<(), StoreError> {
        self.0.mark_running(id, started_ms).await
    }
    async fn set_plan(&self, id: i64, hosts: &[HostRecord]) -> Result<(), StoreError> {
        self.0.set_plan(id, hosts).await
    }
    async fn mark_cancel_requested(&self, id: i64) -> Result<(), StoreError> {
        self.0.mark_cancel_requested(id).await
    }
    async fn append_events(&self, id: i64, events: &[Event], hosts: &[HostRecord]) -> Result<(), StoreError> {
        self.0.append_events(id, events, hosts).await
    }
    async fn events_after(&self, id: i64, after: u64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.0.events_after(id, after, limit).await
    }
    async fn finish(&self, id: i64, finish: &Finish) -> Result<(), StoreError> {
        self.0.finish(id, finish).await
    }
    async fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Interrupted>, StoreError> {
        self.0.interrupt_unfinished(now_ms).await
    }
    async fn append_journal(&self, id: i64, entry: &JournalEntry) -> Result<(), StoreError> {
        self.0.append_journal(id, entry).await
    }
    async fn journal(&self, id: i64) -> Result<Vec<JournalEntry>, StoreError> {
        self.0.journal(id).await
    }
    async fn set_out_of_rotation(&self, id: i64, hosts: &[String]) -> Result<(), StoreError> {
        self.0.set_out_of_rotation(id, hosts).await
    }
    async fn set_origin(&self, id: i64, origin: &vesemir_http::store::Origin) -> Result<(), StoreError> {
        self.0.set_origin(id, origin).await
    }
    async fn origin(&self, id: i64) -> Result<Option<vesemir_http::store::Origin>, StoreError> {
        self.0.origin(id).await
    }
    async fn set_error(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.0.set_error(id, error).await
    }
    async fn prune_events(&self, ended_before_ms: i64) -> Result<u64, StoreError> {
        self.0.prune_events(ended_before_ms).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
    fn instance(&self) -> &vesemir_http::InstanceId {
        self.0.instance()
    }
    fn lease(&self) -> Duration {
        self.0.lease()
    }
    async fn renew_leases(&self) -> Result<vesemir_http::store::Renewal, StoreError> {
        self.0.renew_leases().await
    }
    fn release_lease(&self, id: i64) {
        self.0.release_lease(id)
    }
    // Issue 18: CI hooks and promotion.
    async fn record_hook_delivery(
        &self,
        d: &vesemir_http::store::NewHookDelivery,
    ) -> Result<vesemir_http::store::HookRecorded, StoreError> {
        self.0.record_hook_delivery(d).await
    }
    async fn set_hook_delivery(
        &self,
        hook: &str,
        delivery_id: &str,
        state: vesemir_http::store::HookState,
        deployment_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.0.set_hook_delivery(hook, delivery_id, state, deployment_id, error).await
    }
    async fn waiting_hook_deliveries(
        &self,
        hook: &str,
    ) -> Result<Vec<vesemir_http::store::HookDelivery>, StoreError> {
        self.0.waiting_hook_deliveries(hook).await
    }
    async fn set_promoted_from(&self, id: i64, from: i64) -> Result<(), StoreError> {
        self.0.set_promoted_from(id, from).await
    }
    async fn promoted_from(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.0.promoted_from(id).await
    }
    async fn promoted_to(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.0.promoted_to(id).await
    }
    async fn record_notification(
        &self,
        a: &vesemir_http::store::NotificationAttempt,
    ) -> Result<(), StoreError> {
        self.0.record_notification(a).await
    }
    async fn notifications(
        &self,
        id: i64,
    ) -> Result<Vec<vesemir_http::store::NotificationAttempt>, StoreError> {
        self.0.notifications(id).await
    }
}

#[tokio::test]
async fn a_slow_request_times_out_but_an_event_stream_outlives_the_request_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&dir.path().join("v.db"));
    config.limits.request_timeout = Duration::from_millis(300);
    let store = SqliteStore::open(&dir.path().join("v.db")).await.expect("opens");
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(150));
    let server = Server::with_store(&config, Arc::new(FixedPorts(fleet.ports())), Arc::new(SlowHosts(store)))
        .await
        .expect("opens");
    let router = server.router();
    let body = fleet.body("shop", "production", "payments").to_string();
    let accepted = call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &[]).await;
    let id = id_of(&accepted);

    let started = tokio::time::Instant::now();
    let path = format!("/v1/deployments/{id}/events");
    let stream = call(&router, Method::GET, &path, Some(PAYMENTS), None, &[]).await;
    assert!(started.elapsed() > Duration::from_millis(600), "the deployment lasted longer than the timeout");
    let events = parse_sse(&stream.text);
    assert_eq!(events.last().expect("events").event, "deployment_finished", "{}", stream.text);

    let slow = call(&router, Method::GET, &format!("/v1/deployments/{id}"), Some(PAYMENTS), None, &[]).await;
    assert_eq!(slow.status, StatusCode::REQUEST_TIMEOUT);
    assert!(slow.json["detail"].as_str().expect("a JSON error").contains("request_timeout"), "{}", slow.text);
}
